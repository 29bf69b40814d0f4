-- Feed one attempt's outcome to the target's circuit breaker (TargetGate.record). It
-- opens after `failures` consecutive failures, or when the failure rate over the window
-- reaches `rate` with at least `min calls`; each reopening doubles the open span up to
-- the max. A half-open probe's success closes it, its failure reopens it.
--
-- KEYS[1]  the target's state (hash)
-- KEYS[2]  the target's recent calls (ZSET, ok:/fail:<token>:<ms> -> ms)
-- ARGV[1]  '1' if the attempt succeeded
-- ARGV[2]  token (the delivery id)
-- ARGV[3]  consecutive failures that open the breaker
-- ARGV[4]  failure rate (0..1) that opens the breaker
-- ARGV[5]  window of the failure rate (ms)
-- ARGV[6]  calls in the window before the rate counts
-- ARGV[7]  first open span (ms)
-- ARGV[8]  longest open span (ms)
-- ARGV[9]  '1' if this outcome counts for the breaker
-- Returns  the breaker's state after it (closed, open, half_open), 'opened' or
--          'recovered' if this outcome changed it, or 'ignored'

--!include lib/clock.lua

local state_key = KEYS[1]
local calls_key = KEYS[2]
local ok = ARGV[1] == '1'
local token = ARGV[2]
local failures = tonumber(ARGV[3])
local failure_rate = tonumber(ARGV[4])
local window = tonumber(ARGV[5])
local min_calls = tonumber(ARGV[6])
local open_ms = tonumber(ARGV[7])
local max_open_ms = tonumber(ARGV[8])
local counts = ARGV[9] == '1'

local now = now_ms()
redis.call('HINCRBY', state_key, ok and 'successes' or 'failures', 1)
redis.call('HSET', state_key, ok and 'last_success' or 'last_failure', now)
if not counts then return 'ignored' end
redis.call('ZADD', calls_key, now, (ok and 'ok:' or 'fail:') .. token .. ':' .. now)
redis.call('ZREMRANGEBYSCORE', calls_key, '-inf', now - window)
redis.call('PEXPIRE', calls_key, window)
local s = redis.call('HMGET', state_key, 'state', 'probe', 'opened')
local state = s[1] or 'closed'
local function open()
  local opened = tonumber(s[3] or '0') + 1
  local span = math.min(open_ms * 2 ^ (opened - 1), max_open_ms)
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
if consecutive >= failures then return open() end
local calls = redis.call('ZRANGE', calls_key, 0, -1)
if #calls >= min_calls then
  local failed = 0
  for _, call in ipairs(calls) do
    if string.sub(call, 1, 5) == 'fail:' then failed = failed + 1 end
  end
  if failed / #calls >= failure_rate then return open() end
end
return state
