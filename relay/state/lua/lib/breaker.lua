-- The circuit breaker's state machine (gate_record.lua counts finished attempts,
-- gate_admit.lua the ones that passed the slow-call threshold while still running).
--
-- breaker_policy(failures, failure_rate, window, min_calls, open_ms, max_open_ms): the
--   policy as one table: consecutive failures that open it, failure rate (0..1) that
--   opens it, the rate's window (ms), calls in the window before the rate counts, first
--   open span (ms), longest open span (ms)
-- breaker_count(state_key, calls_key, policy, ok, token, now): feed one counted outcome
--   (calls_key: ZSET ok:/fail:<token>:<ms> -> ms); returns the state after it (closed,
--   open, half_open), or 'opened'/'recovered' if this outcome changed it. It opens after
--   the consecutive failures, or at the failure rate with enough calls; each reopening
--   doubles the open span up to the longest. A half-open probe's success closes it, its
--   failure reopens it.

local function breaker_policy(failures, failure_rate, window, min_calls, open_ms, max_open_ms)
  return {
    failures = failures, failure_rate = failure_rate, window = window,
    min_calls = min_calls, open_ms = open_ms, max_open_ms = max_open_ms,
  }
end

local function breaker_count(state_key, calls_key, policy, ok, token, now)
  redis.call('ZADD', calls_key, now, (ok and 'ok:' or 'fail:') .. token .. ':' .. now)
  redis.call('ZREMRANGEBYSCORE', calls_key, '-inf', now - policy.window)
  redis.call('PEXPIRE', calls_key, policy.window)
  local s = redis.call('HMGET', state_key, 'state', 'probe', 'opened')
  local state = s[1] or 'closed'
  local function open()
    local opened = tonumber(s[3] or '0') + 1
    local span = math.min(policy.open_ms * 2 ^ (opened - 1), policy.max_open_ms)
    redis.call('HSET', state_key, 'state', 'open', 'open_until', now + span, 'opened', opened,
               'opened_at', now)
    redis.call('HDEL', state_key, 'probe', 'probe_until')
    return 'opened'
  end
  if ok then
    redis.call('HSET', state_key, 'consecutive', 0)
    if state == 'half_open' and s[2] == token then
      redis.call('HSET', state_key, 'state', 'closed', 'opened', 0)
      redis.call('HDEL', state_key, 'probe', 'probe_until', 'open_until')
      return 'recovered'
    end
    return state
  end
  local consecutive = redis.call('HINCRBY', state_key, 'consecutive', 1)
  if state == 'half_open' then
    if s[2] == token then return open() end
    return state
  end
  if state == 'open' then return state end
  if consecutive >= policy.failures then return open() end
  local calls = redis.call('ZRANGE', calls_key, 0, -1)
  if #calls >= policy.min_calls then
    local failed = 0
    for _, call in ipairs(calls) do
      if string.sub(call, 1, 5) == 'fail:' then failed = failed + 1 end
    end
    if failed / #calls >= policy.failure_rate then return open() end
  end
  return state
end
