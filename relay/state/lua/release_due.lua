-- Move one due delivery from the durable schedule to its queue (Outbox.release_due,
-- Scheduler.release_due); of several schedulers racing for it, one wins.
--
-- Given its target's keys (the scheduler's call), it first looks whether the target would
-- refuse it now for a pause, a platform throttle, its breaker or its cap on attempts in
-- flight (lib/gate_block.lua, the gate's own checks, with the settings the gate last
-- recorded). If so the delivery stays scheduled, due again when the block may have ended,
-- with no task message and its attempt counter untouched: a parked delivery behind a hung
-- target costs one script call per look, not a message, a claim and a gate call in a
-- worker. The worker's gate stays the authority: a delivery released too early is parked
-- again there.
--
-- KEYS[1]  the schedule (delivery id -> due)
-- KEYS[2]  the delivery's Celery queue
-- KEYS[3]  in-flight set (member -> deadline)
-- KEYS[4]  the delivery record (hash)
-- KEYS[5]  the target's state (hash; this and the next three absent: no look, just move)
-- KEYS[6]  the target's throttle (until, epoch ms)
-- KEYS[7]  the target's running attempts (ZSET token -> end of its lease, ms)
-- KEYS[8]  the running attempts' slow-call deadlines (ZSET token -> ms; 'inf' once counted)
-- ARGV[1]  delivery id
-- ARGV[2]  the delivery task message
-- ARGV[3]  in-flight deadline (epoch s)
-- ARGV[4]  now (epoch s)
-- ARGV[5]  how long a paused target's deliveries wait before looking again (ms)
-- ARGV[6]  shortest wait while a half-open probe runs (ms)
-- ARGV[7]  shortest wait while the cap is reached (ms)
-- ARGV[8]  deliveries to this target already released in this sweep (they take slots first)
-- ARGV[9]  a random fraction (0..1): where in its spread a held delivery's next look falls
-- Returns  1 if queued, 0 if not due, already moved, or the record is gone; if held,
--          {reason, due (epoch s)}

--!include lib/clock.lua
--!include lib/gate_block.lua

local schedule = KEYS[1]
local queue = KEYS[2]
local inflight = KEYS[3]
local delivery_key = KEYS[4]
local state_key = KEYS[5]
local throttle_key = KEYS[6]
local running_key = KEYS[7]
local slow_key = KEYS[8]
local delivery_id = ARGV[1]
local message = ARGV[2]
local deadline = ARGV[3]
local now = tonumber(ARGV[4])
local pause_wait_ms = tonumber(ARGV[5] or '0')
local probe_wait_ms = tonumber(ARGV[6] or '0')
local full_wait_ms = tonumber(ARGV[7] or '0')
local taken = tonumber(ARGV[8] or '0')
local jitter = tonumber(ARGV[9] or '0')

-- Waiters for a sick target wake spread over half their wait again (as workers park them:
-- workers/delivery.py), so a backlog held together does not come back as one burst.
local SPREAD = {circuit_open = true, circuit_probing = true, concurrency_limited = true}

local score = redis.call('ZSCORE', schedule, delivery_id)
if not score or tonumber(score) > now then return 0 end
if redis.call('EXISTS', delivery_key) == 0 then
  redis.call('ZREM', schedule, delivery_id)
  return 0
end
if state_key then
  local target = {state = state_key, throttle = throttle_key, running = running_key,
                  slow = slow_key}
  local limits = gate_published(state_key, pause_wait_ms, probe_wait_ms, full_wait_ms)
  local reason, wait_ms = gate_block(target, limits, delivery_id, now_ms(), taken)
  if reason then
    local spread = SPREAD[reason] and wait_ms * 0.5 or math.min(1000, wait_ms * 0.1)
    local due = now + (wait_ms + spread * jitter) / 1000
    redis.call('ZADD', schedule, due, delivery_id)
    redis.call('HSET', delivery_key, 'next_at', string.format('%.6f', due), 'waiting', reason)
    redis.call('HINCRBY', state_key, 'held', 1)
    return {reason, string.format('%.6f', due)}
  end
end
redis.call('ZREM', schedule, delivery_id)
redis.call('HSET', delivery_key, 'status', 'queued')
redis.call('ZADD', inflight, deadline, 'deliver:' .. delivery_id)
redis.call('LPUSH', queue, message)
return 1
