-- Give back the work of a worker whose heartbeat stopped (Heartbeats.recover). Its
-- reserved messages go back to the front of their queues, as kombu's own restore would
-- put them after the visibility timeout; the locks of the runs it had begun are released,
-- so those messages run them again at once; a begun run whose message is not among them
-- is made due in the in-flight set. Of several schedulers, the first does it all: the
-- worker leaves the worker set in the same script.
--
-- KEYS[1]  the worker set (worker id -> last beat)
-- KEYS[2]  the worker's held hash
-- KEYS[3]  kombu's unacked hash (delivery tag -> [message, exchange, routing key])
-- KEYS[4]  kombu's unacked index (delivery tag -> time reserved)
-- KEYS[5]  in-flight set (member -> deadline)
-- ARGV[1]  worker id
-- ARGV[2]  silence after which a worker is dead (s), checked again here
-- ARGV[3]  lock key prefix (the lock key is derived, not declared: one Redis, no cluster)
-- ARGV[4..] per reserved message read from the unacked hash: its delivery tag, its queue,
--          the unacked entry as read, the message to push back (marked redelivered)
-- Returns  {messages restored, runs released, runs made due}, or {-1, 0, 0} if the
--          worker beat again meanwhile

local workers = KEYS[1]
local held = KEYS[2]
local unacked = KEYS[3]
local unacked_index = KEYS[4]
local inflight = KEYS[5]
local worker_id = ARGV[1]
local dead_after = tonumber(ARGV[2])
local lock_prefix = ARGV[3]
local first_message = 4

local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local beat = redis.call('ZSCORE', workers, worker_id)
if beat and tonumber(beat) >= now - dead_after then return {-1, 0, 0} end

local restored, released, made_due = 0, 0, 0
local back = {}
for i = first_message, #ARGV, 4 do
  local tag, queue, entry, message = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  if redis.call('HGET', unacked, tag) == entry then
    redis.call('ZREM', unacked_index, tag)
    redis.call('HDEL', unacked, tag)
    redis.call('RPUSH', queue, message)  -- BRPOP takes from the right: runs next
    back[tag] = true
    restored = restored + 1
  end
end

local fields = redis.call('HGETALL', held)
for i = 1, #fields, 2 do
  local tag, member = string.match(fields[i], '^(%S+) (deliver:.+)$')
  if tag then
    local lock_key = lock_prefix .. string.sub(member, #'deliver:' + 1)
    if redis.call('GET', lock_key) == fields[i + 1] then
      redis.call('DEL', lock_key)
      released = released + 1
      if not back[tag] then
        redis.call('ZADD', inflight, now, member)
        made_due = made_due + 1
      end
    end
  end
end
redis.call('DEL', held)
redis.call('ZREM', workers, worker_id)
return {restored, released, made_due}
