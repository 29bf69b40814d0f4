-- May this claimed delivery of an ordered lane be sent now (Lanes.admit_many)? It may if
-- it is the head of its lane (lib/lane.lua) and every event accepted before its own has
-- been fanned out, so every earlier delivery of its group is in the lane. Otherwise it is
-- held, in this same step: scheduled with `waiting: ordered` until the head's hold would
-- end (or, waiting for a fan-out, shortly), its attempt given back, its lock released. A
-- head that finishes wakes the next at once (finish.lua, dead.lua); the due time only
-- bounds the wait. A head that has kept the next waiting for the hold while retrying
-- leaves the lane (it goes on retrying on its own) and the new head records the break it
-- makes; one parked by its target's gate (paused, throttled, ...) or that never failed
-- stays: every delivery to that target waits alike, so order is kept. A delivery
-- that is in no lane (not ordered when it was fanned out, or out of its lane: replayed,
-- released) may go.
--
-- The fan-out mark only moves forward: past events that are routed, or queued for longer
-- than the hold of the lane that looks (a fan-out lost for that long is not waited for).
--
-- KEYS[1]  the delivery record (hash)
-- KEYS[2]  the delivery's lock
-- KEYS[3]  in-flight set (member -> deadline)
-- KEYS[4]  the schedule (delivery id -> due)
-- KEYS[5]  the fan-out mark (acceptance time up to which every event was fanned out)
-- KEYS[6]  events index (event id -> received at)
-- KEYS[7]  per-target counters (relay.state.stats)
-- ARGV[1]  delivery id
-- ARGV[2]  this run's lock token (from begin)
-- ARGV[3]  now (epoch s)
-- ARGV[4]  the hold (s): how long a head may keep the next of its lane waiting
-- ARGV[5]  the attempt counter to restore if held (the claim bumped it)
-- ARGV[6]  how soon a head that waits for an earlier event's fan-out looks again (s)
-- ARGV[7]  event key prefix (event keys are derived, not declared: one Redis, no cluster)
-- Returns  {'run', the break note (JSON) or '', the next delivery or '', its queue or ''}
--          or {'held', due (epoch s), the delivery it waits for ('' for a fan-out)}

--!include lib/lane.lua
--!include lib/fanout_mark.lua

local delivery_key = KEYS[1]
local lock_key = KEYS[2]
local inflight = KEYS[3]
local schedule = KEYS[4]
local mark_key = KEYS[5]
local events = KEYS[6]
local target_stats = KEYS[7]
local delivery_id = ARGV[1]
local token = ARGV[2]
local now = ARGV[3]
local hold = tonumber(ARGV[4])
local restored_attempts = ARGV[5]
local recheck = tonumber(ARGV[6])
local event_prefix = ARGV[7]

local t = tonumber(now)
local SCAN_MAX = 1000  -- events looked at per call; the scheduler keeps the mark near
local GATED_RECHECK = 60  -- s: how often a lane whose head cannot leave it looks again

-- Whether every event accepted up to `upto` (a score of the events index) was fanned out;
-- events queued for longer than the hold are not waited for.
local function fanned_out_to(upto)
  local mark = redis.call('GET', mark_key)
  if mark and tonumber(mark) >= tonumber(upto) then return true end
  local floor = string.format('%.17g', t - hold)
  return mark_advance(mark_key, events, event_prefix, floor, upto, SCAN_MAX)
end

local function number_of(key, field)
  return tonumber(redis.call('HGET', key, field) or '')
end

local lane = redis.call('HGET', delivery_key, 'lane')
local score = lane and redis.call('ZSCORE', lane, delivery_id)
if not score then return {'run', '', '', ''} end
local prefix = lane_prefix(delivery_key, delivery_id)
local target = redis.call('HGET', delivery_key, 'target') or ''
local head = lane_front(lane, prefix, schedule, now, false, nil)
local due, blocker
if head ~= delivery_id then
  -- The head keeps its next waiting since it became the head, or since the next joined.
  local head_key = prefix .. head
  local since = number_of(head_key, 'lane_head_at') or number_of(head_key, 'created_at') or t
  local next_id = redis.call('ZRANGE', lane, 1, 1)[1]
  local joined = next_id and number_of(prefix .. next_id, 'created_at') or t
  since = math.max(since, joined)
  local state = redis.call('HMGET', head_key, 'status', 'waiting', 'last_error')
  local failing = state[3] and state[3] ~= ''
  local parked = state[1] == 'scheduled' and state[2] and state[2] ~= ''
  if t - since < hold then
    due = since + hold
  elseif failing and not parked then
    redis.call('ZREM', lane, head)
    local note = cjson.encode({reason = 'hold', skipped = head,
                               held_s = math.floor((t - since) * 1000) / 1000})
    head = lane_front(lane, prefix, schedule, now, true, note)
    due = t + hold
  else  -- not failing, or parked by its target's gate like every delivery to it: look again
    due = t + math.min(hold, GATED_RECHECK)
  end
  blocker = head
end
if head == delivery_id then
  if fanned_out_to(score) then
    local note = redis.call('HGET', delivery_key, 'lane_broke') or ''
    if note ~= '' then
      redis.call('HDEL', delivery_key, 'lane_broke')
      local reason = cjson.decode(note).reason or 'unknown'
      redis.call('HINCRBY', target_stats, target .. '|order_break|' .. reason, 1)
    end
    local next_id = redis.call('ZRANGE', lane, 1, 1)[1]
    local queue = next_id and redis.call('HGET', prefix .. next_id, 'queue')
    return {'run', note, next_id or '', queue or ''}
  end
  due, blocker = t + recheck, ''
end
due = string.format('%.6f', due)
redis.call('HSET', delivery_key, 'status', 'scheduled', 'next_at', due, 'waiting', 'ordered',
           'updated_at', now, 'attempts', restored_attempts)
redis.call('ZADD', schedule, due, delivery_id)
redis.call('ZREM', inflight, 'deliver:' .. delivery_id)
if redis.call('GET', lock_key) == token then redis.call('DEL', lock_key) end
redis.call('HINCRBY', target_stats, target .. '|wait|ordered', 1)
return {'held', due, blocker or ''}
