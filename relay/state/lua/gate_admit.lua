-- May this delivery be sent to its target now (TargetGate.admit)? Checks, in order: the
-- pause flag, the platform's throttle, the circuit breaker (one half-open probe at a
-- time), and the rate limits, whose slots it takes if the answer is go.
--
-- KEYS[1]  the target's state (hash: paused, state, open_until, probe, probe_until, ...)
-- KEYS[2]  the target's throttle (until, epoch ms)
-- KEYS[3..] one ZSET per rate
-- ARGV[1]  token (the delivery id): the probe's owner, and the rate slots' member prefix
-- ARGV[2]  probe TTL (ms)
-- ARGV[3]  '1' if the breaker is enabled
-- ARGV[4]  how long a paused target's deliveries wait before looking again (ms)
-- ARGV[5]  how long others wait while a half-open probe runs (ms)
-- ARGV[6..] per rate: its limit, its window (ms)
-- Returns  {reason, wait ms}: {'ok', 0} to go, else 'paused', 'throttled',
--          'circuit_open', 'circuit_probing' or 'rate_limited' and how long to wait

--!include lib/clock.lua
--!include lib/windows.lua

local state_key = KEYS[1]
local throttle_key = KEYS[2]
local rates = rates_of(KEYS, 3, ARGV, 6)
local token = ARGV[1]
local probe_ttl_ms = tonumber(ARGV[2])
local breaker_on = ARGV[3] == '1'
local pause_recheck_ms = ARGV[4]
local probe_busy_wait_ms = ARGV[5]

local now = now_ms()
local s = redis.call('HMGET', state_key, 'paused', 'state', 'open_until', 'probe', 'probe_until')
if s[1] == '1' then return {'paused', pause_recheck_ms} end
local throttled = tonumber(redis.call('GET', throttle_key) or '0')
if throttled > now then return {'throttled', throttled - now} end
local probing = false
if breaker_on and (s[2] == 'open' or s[2] == 'half_open') then
  if s[2] == 'open' and tonumber(s[3] or '0') > now then
    return {'circuit_open', tonumber(s[3]) - now}
  end
  if s[4] and s[4] ~= token and tonumber(s[5] or '0') > now then
    return {'circuit_probing', probe_busy_wait_ms}
  end
  probing = true
end
local wait = window_wait(rates, now)
if wait > 0 then return {'rate_limited', wait} end
window_take(rates, token, now)
if probing then
  redis.call('HSET', state_key, 'state', 'half_open', 'probe', token,
             'probe_until', now + probe_ttl_ms)
end
return {'ok', 0}
