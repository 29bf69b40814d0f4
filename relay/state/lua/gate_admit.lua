-- May this delivery be sent to its target now (TargetGate.admit)? First the bookkeeping
-- of the attempts in flight: each running attempt past the slow-call threshold counts as
-- a breaker failure now (once), and the slot of an attempt whose lease ended (its worker
-- died) is freed. Then it checks, in order: the pause flag, the platform's throttle, the
-- circuit breaker (one half-open probe at a time), the cap on attempts in flight, and
-- the rate limits. If the answer is go, it takes a rate slot in every window and a slot
-- among the attempts in flight, which gate_record.lua gives back. The checks before the
-- rates are lib/gate_block.lua's, which the scheduler runs too before it releases a parked
-- delivery; the settings they need are kept in the state hash for it (field `gate`).
--
-- KEYS[1]  the target's state (hash: paused, state, open_until, probe, probe_until, ...)
-- KEYS[2]  the target's throttle (until, epoch ms)
-- KEYS[3]  the target's recent calls (ZSET, the breaker's window: lib/breaker.lua)
-- KEYS[4]  the target's running attempts (ZSET token -> end of its lease, ms)
-- KEYS[5]  the running attempts' slow-call deadlines (ZSET token -> ms; 'inf' once counted)
-- KEYS[6..] one ZSET per rate
-- ARGV[1]  token (the delivery id): the probe's owner, the running slot's member, and
--          the rate slots' member prefix
-- ARGV[2]  lease of an admitted attempt (ms): how long its probe and slot last at most
-- ARGV[3]  '1' if the breaker is enabled
-- ARGV[4]  how long a paused target's deliveries wait before looking again (ms)
-- ARGV[5]  shortest wait while a half-open probe runs (ms); else until it is slow
-- ARGV[6]  cap on attempts in flight (0: none)
-- ARGV[7]  shortest wait while the cap is reached (ms)
-- ARGV[8]  slow-call threshold (ms; 0: off)
-- ARGV[9]  consecutive failures that open the breaker
-- ARGV[10]  failure rate (0..1) that opens the breaker
-- ARGV[11]  window of the failure rate (ms)
-- ARGV[12]  calls in the window before the rate counts
-- ARGV[13]  first open span (ms)
-- ARGV[14]  longest open span (ms)
-- ARGV[15..] per rate: its limit, its window (ms)
-- Returns  {reason, wait ms}: {'ok', 0} to go, else 'paused', 'throttled',
--          'circuit_open', 'circuit_probing', 'concurrency_limited' or 'rate_limited'
--          and how long to wait

--!include lib/clock.lua
--!include lib/windows.lua
--!include lib/breaker.lua
--!include lib/gate_block.lua

local state_key = KEYS[1]
local throttle_key = KEYS[2]
local calls_key = KEYS[3]
local running_key = KEYS[4]
local slow_key = KEYS[5]
local rates = rates_of(KEYS, 6, ARGV, 15)
local token = ARGV[1]
local lease_ms = tonumber(ARGV[2])
local breaker_on = ARGV[3] == '1'
local pause_recheck_ms = tonumber(ARGV[4])
local probe_busy_wait_ms = tonumber(ARGV[5])
local max_in_flight = tonumber(ARGV[6])
local full_wait_ms = tonumber(ARGV[7])
local slow_ms = tonumber(ARGV[8])
local failures = tonumber(ARGV[9])
local failure_rate = tonumber(ARGV[10])
local window = tonumber(ARGV[11])
local min_calls = tonumber(ARGV[12])
local open_ms = tonumber(ARGV[13])
local max_open_ms = tonumber(ARGV[14])

local policy = breaker_policy(failures, failure_rate, window, min_calls, open_ms, max_open_ms)
local limits = gate_limits(breaker_on, lease_ms, max_in_flight, pause_recheck_ms,
                           probe_busy_wait_ms, full_wait_ms)
local target = {state = state_key, throttle = throttle_key, running = running_key, slow = slow_key}

local now = now_ms()

gate_publish(state_key, limits)  -- for the scheduler's look (release_due.lua)
for _, slow in ipairs(redis.call('ZRANGEBYSCORE', slow_key, '-inf', now)) do
  redis.call('ZADD', slow_key, 'inf', slow)
  redis.call('HINCRBY', state_key, 'slow_calls', 1)
  if breaker_on then breaker_count(state_key, calls_key, policy, false, slow, now) end
end
for _, gone in ipairs(redis.call('ZRANGEBYSCORE', running_key, '-inf', now)) do
  redis.call('ZREM', running_key, gone)
  redis.call('ZREM', slow_key, gone)
end

local reason, blocked_ms, probing = gate_block(target, limits, token, now, 0)
if reason then return {reason, blocked_ms} end
local wait = window_wait(rates, now)
if wait > 0 then return {'rate_limited', wait} end
window_take(rates, token, now)
redis.call('ZADD', running_key, now + lease_ms, token)
redis.call('PEXPIRE', running_key, lease_ms)
if slow_ms > 0 then
  redis.call('ZADD', slow_key, now + slow_ms, token)
  redis.call('PEXPIRE', slow_key, lease_ms)
end
if probing then
  redis.call('HSET', state_key, 'state', 'half_open', 'probe', token,
             'probe_until', now + lease_ms)
end
return {'ok', 0}
