-- Whether a target refuses a delivery now for its pause, its platform throttle, its breaker
-- or its cap on attempts in flight: the gate's checks before its rate limits, shared by the
-- gate itself (gate_admit.lua) and the scheduler's look before it releases a parked
-- delivery (release_due.lua). They only read: the gate's bookkeeping (slow calls, ended
-- leases) stays in gate_admit.lua, so a lease that ended is simply not counted here.
--
-- gate_limits(breaker_on, lease_ms, max_in_flight, pause_wait_ms, probe_wait_ms,
--   full_wait_ms): the target's settings as one table: breaker enabled (boolean), lease of
--   an admitted attempt (ms), cap on attempts in flight (0: none), how long a paused
--   target's deliveries wait, the shortest wait while a half-open probe runs, and the
--   shortest wait while the cap is reached (ms)
-- gate_block(target, limits, token, now, taken): the reason and wait (ms) if the target
--   cannot take `token` now; else nil, 0 and whether `token` would be the half-open probe.
--   target: the target's {state, throttle, running, slow} keys (as gate_admit.lua's);
--   taken: deliveries already let through that will ask first (0 for the gate itself;
--   the scheduler's releases to the target in this tick), counted as holding a slot, and
--   as the probe if the breaker waits for one
-- gate_publish(state_key, limits): keeps the target's settings in its state hash (field
--   `gate`, written only when they change) for gate_published
-- gate_published(state_key, pause_wait_ms, probe_wait_ms, full_wait_ms): the limits the
--   last gate call used, or with no cap and the breaker on if no gate call recorded them

local function gate_limits(breaker_on, lease_ms, max_in_flight, pause_wait_ms, probe_wait_ms,
                           full_wait_ms)
  return {
    breaker_on = breaker_on, lease_ms = lease_ms, max_in_flight = max_in_flight,
    pause_wait_ms = pause_wait_ms, probe_wait_ms = probe_wait_ms, full_wait_ms = full_wait_ms,
  }
end

local function gate_block(target, limits, token, now, taken)
  -- The wait while something runs whose lease ends at `until_ms`: as long as it has run so
  -- far (a hung target's waiters look again less and less often), at least `floor`, at
  -- most until its lease ends.
  local function wait_for_running(until_ms, floor)
    local age = now - (until_ms - limits.lease_ms)
    return math.max(floor, math.min(age, until_ms - now))
  end

  local s = redis.call('HMGET', target.state, 'paused', 'state', 'open_until', 'probe',
                       'probe_until')
  if s[1] == '1' then return 'paused', limits.pause_wait_ms end
  local throttled = tonumber(redis.call('GET', target.throttle) or '0')
  if throttled > now then return 'throttled', throttled - now end
  local probing = false
  if limits.breaker_on and (s[2] == 'open' or s[2] == 'half_open') then
    if s[2] == 'open' and tonumber(s[3] or '0') > now then
      return 'circuit_open', tonumber(s[3]) - now
    end
    local probe_until = tonumber(s[5] or '0')
    if s[4] and s[4] ~= token and probe_until > now then
      -- Until the probe's outcome is known at the latest: it ends, or passes the threshold.
      local probe_slow = redis.call('ZSCORE', target.slow, s[4])
      if probe_slow and probe_slow ~= 'inf' then
        return 'circuit_probing', math.max(limits.probe_wait_ms, tonumber(probe_slow) - now)
      end
      return 'circuit_probing', wait_for_running(probe_until, limits.probe_wait_ms)
    end
    if taken > 0 then return 'circuit_probing', limits.probe_wait_ms end  -- one probe asks
    probing = true
  end
  if limits.max_in_flight > 0 then
    local after = '(' .. now  -- the attempts whose lease has not ended
    local held = redis.call('ZCOUNT', target.running, after, '+inf') + taken
    local own = tonumber(redis.call('ZSCORE', target.running, token) or '0')
    if own > now then held = held - 1 end  -- its own lost run
    if held >= limits.max_in_flight then
      local oldest = redis.call('ZRANGEBYSCORE', target.running, after, '+inf', 'WITHSCORES',
                                'LIMIT', 0, 1)
      if #oldest == 0 then return 'concurrency_limited', limits.full_wait_ms end
      return 'concurrency_limited', wait_for_running(tonumber(oldest[2]), limits.full_wait_ms)
    end
  end
  return nil, 0, probing
end

local function gate_publish(state_key, limits)
  local value = limits.max_in_flight .. ':' .. limits.lease_ms .. ':'
                .. (limits.breaker_on and '1' or '0')
  if redis.call('HGET', state_key, 'gate') ~= value then
    redis.call('HSET', state_key, 'gate', value)
  end
end

local function gate_published(state_key, pause_wait_ms, probe_wait_ms, full_wait_ms)
  local value = redis.call('HGET', state_key, 'gate') or ''
  local cap, lease, breaker = string.match(value, '^(%d+):(%d+):([01])$')
  return gate_limits(breaker ~= '0', tonumber(lease or '0'), tonumber(cap or '0'),
                     pause_wait_ms, probe_wait_ms, full_wait_ms)
end
