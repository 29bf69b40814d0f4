-- Lanes of ordered delivery (relay.state.lanes): per target and group, a ZSET of its
-- deliveries by the time their event was accepted. The lowest member, the head, alone may
-- be sent. A delivery's hash names its lane's key (field `lane`); `lane_head_at` is when
-- it became the head, `lane_broke` a note of the break in order its sending makes.
-- Included by finish.lua, dead.lua (a head that is done leaves, waking the next) and
-- lane_admit.lua.
--
-- lane_prefix(delivery_key, delivery_id): the prefix of delivery hash keys, from which the
--   other members' keys are derived (one Redis, no cluster)
-- lane_wake(prefix, head, schedule, now, note): `head` became the head now: stamped, and
--   if it waits in the schedule, due now; with `note`, it records the break it makes
-- lane_front(lane, prefix, schedule, now, changed, note): the head after dropping members
--   that are done (delivered, dead, or their record gone: a leave lost with its process);
--   a head that changed here, or `changed` already, is woken with `note`
-- lane_leave(delivery_key, delivery_id, schedule, now, note): the delivery leaves its lane
--   (no-op if it is in none); if it was the head, the new head is woken with `note`, and
--   returned

local function lane_prefix(delivery_key, delivery_id)
  return string.sub(delivery_key, 1, #delivery_key - #delivery_id)
end

local function lane_wake(prefix, head, schedule, now, note)
  local key = prefix .. head
  redis.call('HSET', key, 'lane_head_at', now)
  if note then redis.call('HSET', key, 'lane_broke', note) end
  -- held in its lane (or parked for its target while held): due now; a retry keeps its time
  local state = redis.call('HMGET', key, 'status', 'waiting')
  if state[1] == 'scheduled' and state[2] and state[2] ~= ''
      and redis.call('ZSCORE', schedule, head) then
    redis.call('ZADD', schedule, now, head)
    redis.call('HSET', key, 'next_at', now)
  end
end

local function lane_front(lane, prefix, schedule, now, changed, note)
  for _ = 1, 100 do
    local head = redis.call('ZRANGE', lane, 0, 0)[1]
    if not head then return nil end
    local status = redis.call('HGET', prefix .. head, 'status')
    if status and status ~= 'delivered' and status ~= 'dead' then
      if changed then lane_wake(prefix, head, schedule, now, note) end
      return head
    end
    redis.call('ZREM', lane, head)
    changed = true
  end
  return redis.call('ZRANGE', lane, 0, 0)[1]  -- more done members: the next look goes on
end

local function lane_leave(delivery_key, delivery_id, schedule, now, note)
  local lane = redis.call('HGET', delivery_key, 'lane')
  if not lane then return nil end
  local head = redis.call('ZRANGE', lane, 0, 0)[1]
  if redis.call('ZREM', lane, delivery_id) == 0 or head ~= delivery_id then return nil end
  return lane_front(lane, lane_prefix(delivery_key, delivery_id), schedule, now, true, note)
end
