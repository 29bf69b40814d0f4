-- Record each delivery of an event not recorded yet, queue one task message per group of
-- new deliveries, and mark the event routed (Outbox.fan_out). A rerun creates nothing
-- twice and pushes no message for a group with nothing new. A new delivery whose fields
-- name a lane (ordered delivery, lib/lane.lua) joins it at its event's acceptance time, in
-- the same step that marks the event routed: an ordered delivery waits for every earlier
-- event to be routed, so it never goes before one of its group still being fanned out.
-- One that joins after a later delivery of its lane began (a fan-out so late that the lane
-- stopped waiting for it) goes right after that one.
--
-- KEYS[1]  in-flight set (member -> deadline)
-- KEYS[2]  the event's set of delivery ids
-- KEYS[3]  the event record (hash)
-- KEYS[4..] one delivery record per delivery, then one Celery queue per group
-- ARGV[1]  in-flight deadline (epoch s)
-- ARGV[2]  retention (s)
-- ARGV[3]  event id
-- ARGV[4]  the event's new status (routed or unrouted)
-- ARGV[5]  number of deliveries
-- ARGV[6]  number of groups
-- ARGV[7..] per delivery: its id, its group number, n, then n record field args (name,
--          value, ...); then one task message per group
-- Returns  how many deliveries were new

--!include lib/lane.lua

local inflight = KEYS[1]
local event_deliveries = KEYS[2]
local event_key = KEYS[3]
local first_delivery_key = 4
local deadline = ARGV[1]
local retention = ARGV[2]
local event_id = ARGV[3]
local event_status = ARGV[4]
local count = tonumber(ARGV[5])
local groups = tonumber(ARGV[6])
local first_delivery_arg = 7

-- Join `lane` at `score`, or right after its head if that one began and comes later.
local function lane_join(lane, delivery_key, delivery_id, score)
  local prefix = lane_prefix(delivery_key, delivery_id)
  local first = redis.call('ZRANGE', lane, 0, 0, 'WITHSCORES')
  if first[1] and tonumber(score) < tonumber(first[2]) then
    local head = redis.call('HMGET', prefix .. first[1], 'status', 'waiting')
    if head[1] == 'running' or (head[1] == 'scheduled' and head[2] ~= 'ordered') then
      local after = tonumber(first[2])
      score = string.format('%.17g', after + math.max(math.abs(after) * 2 ^ -50, 2 ^ -40))
    end
  end
  redis.call('ZADD', lane, 'NX', score, delivery_id)
  redis.call('EXPIRE', lane, retention)
  if redis.call('ZRANGE', lane, 0, 0)[1] == delivery_id then
    local joined = redis.call('HGET', delivery_key, 'created_at') or '0'
    redis.call('HSET', delivery_key, 'lane_head_at', joined)
  end
end

local created, new_in, a = 0, {}, first_delivery_arg
local accepted_at = redis.call('HGET', event_key, 'received_at')
for k = first_delivery_key, first_delivery_key + count - 1 do
  local id, group, n = ARGV[a], tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  if redis.call('EXISTS', KEYS[k]) == 0 then
    redis.call('HSET', KEYS[k], unpack(ARGV, a + 3, a + 2 + n))
    redis.call('EXPIRE', KEYS[k], retention)
    for f = a + 3, a + 2 + n, 2 do
      if ARGV[f] == 'lane' then
        local at = accepted_at or redis.call('HGET', KEYS[k], 'created_at')
        lane_join(ARGV[f + 1], KEYS[k], id, at)
      end
    end
    redis.call('SADD', event_deliveries, id)
    redis.call('ZADD', inflight, deadline, 'deliver:' .. id)
    new_in[group] = true
    created = created + 1
  end
  a = a + 3 + n
end
local first_queue_key = first_delivery_key + count
for g = 1, groups do
  if new_in[g] then redis.call('LPUSH', KEYS[first_queue_key + g - 1], ARGV[a + g - 1]) end
end
redis.call('EXPIRE', event_deliveries, retention)
if redis.call('EXISTS', event_key) == 1 then
  redis.call('HSET', event_key, 'status', event_status)
  redis.call('EXPIRE', event_key, retention)
end
redis.call('ZREM', inflight, 'fanout:' .. event_id)
return created
