-- Push again a task whose in-flight deadline passed, with a new deadline
-- (Outbox.requeue_inflight); of several watchdogs racing for it, one wins.
--
-- KEYS[1]  in-flight set (member -> deadline)
-- KEYS[2]  the task's Celery queue
-- ARGV[1]  in-flight member (fanout:<event id> or deliver:<delivery id>)
-- ARGV[2]  the task message
-- ARGV[3]  new in-flight deadline (epoch s)
-- ARGV[4]  now (epoch s)
-- Returns  1 if pushed, 0 if the task finished or is not overdue

local inflight = KEYS[1]
local queue = KEYS[2]
local member = ARGV[1]
local message = ARGV[2]
local deadline = ARGV[3]
local now = tonumber(ARGV[4])

local score = redis.call('ZSCORE', inflight, member)
if not score or tonumber(score) > now then return 0 end
redis.call('ZADD', inflight, deadline, member)
redis.call('LPUSH', queue, message)
return 1
