-- Move one due delivery from the durable schedule to its queue (Outbox.release_due);
-- of several schedulers racing for it, one wins.
--
-- KEYS[1]  the schedule (delivery id -> due)
-- KEYS[2]  the delivery's Celery queue
-- KEYS[3]  in-flight set (member -> deadline)
-- KEYS[4]  the delivery record (hash)
-- ARGV[1]  delivery id
-- ARGV[2]  the delivery task message
-- ARGV[3]  in-flight deadline (epoch s)
-- ARGV[4]  now (epoch s)
-- Returns  1 if queued, 0 if not due, already moved, or the record is gone

local schedule = KEYS[1]
local queue = KEYS[2]
local inflight = KEYS[3]
local delivery_key = KEYS[4]
local delivery_id = ARGV[1]
local message = ARGV[2]
local deadline = ARGV[3]
local now = tonumber(ARGV[4])

local score = redis.call('ZSCORE', schedule, delivery_id)
if not score or tonumber(score) > now then return 0 end
redis.call('ZREM', schedule, delivery_id)
if redis.call('EXISTS', delivery_key) == 0 then return 0 end
redis.call('HSET', delivery_key, 'status', 'queued')
redis.call('ZADD', inflight, deadline, 'deliver:' .. delivery_id)
redis.call('LPUSH', queue, message)
return 1
