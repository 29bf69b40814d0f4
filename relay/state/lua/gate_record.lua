-- Feed one finished attempt's outcome to the target's circuit breaker (TargetGate.record)
-- and give back its slot among the attempts in flight. An attempt that passed the
-- slow-call threshold counts as a failure whatever its outcome, once: gate_admit.lua may
-- already have counted it while it ran (see lib/breaker.lua for the state machine).
--
-- KEYS[1]  the target's state (hash)
-- KEYS[2]  the target's recent calls (ZSET, ok:/fail:<token>:<ms> -> ms)
-- KEYS[3]  the target's running attempts (ZSET token -> end of its lease, ms)
-- KEYS[4]  the running attempts' slow-call deadlines (ZSET token -> ms; 'inf' once counted)
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
--!include lib/breaker.lua

local state_key = KEYS[1]
local calls_key = KEYS[2]
local running_key = KEYS[3]
local slow_key = KEYS[4]
local ok = ARGV[1] == '1'
local token = ARGV[2]
local failures = tonumber(ARGV[3])
local failure_rate = tonumber(ARGV[4])
local window = tonumber(ARGV[5])
local min_calls = tonumber(ARGV[6])
local open_ms = tonumber(ARGV[7])
local max_open_ms = tonumber(ARGV[8])
local counts = ARGV[9] == '1'

local policy = breaker_policy(failures, failure_rate, window, min_calls, open_ms, max_open_ms)

local now = now_ms()
redis.call('HINCRBY', state_key, ok and 'successes' or 'failures', 1)
redis.call('HSET', state_key, ok and 'last_success' or 'last_failure', now)
redis.call('ZREM', running_key, token)
local slow_at = redis.call('ZSCORE', slow_key, token)
redis.call('ZREM', slow_key, token)
if slow_at == 'inf' then  -- counted as a slow call while it ran
  return redis.call('HGET', state_key, 'state') or 'closed'
end
if slow_at and tonumber(slow_at) <= now then
  redis.call('HINCRBY', state_key, 'slow_calls', 1)
  return breaker_count(state_key, calls_key, policy, false, token, now)
end
if not counts then return 'ignored' end
return breaker_count(state_key, calls_key, policy, ok, token, now)
