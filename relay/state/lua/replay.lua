-- Send a dead letter again under the same delivery id (Outbox.replay): the retry policy
-- starts over from here (attempt_base, window_start), the attempt counter does not.
--
-- KEYS[1]  the dead-letter queue (delivery id -> dead at)
-- KEYS[2]  the delivery record (hash)
-- KEYS[3]  in-flight set (member -> deadline)
-- KEYS[4]  the delivery's Celery queue
-- KEYS[5..] keys that get the retention TTL back (the delivery's attempts)
-- ARGV[1]  delivery id
-- ARGV[2]  the delivery task message
-- ARGV[3]  in-flight deadline (epoch s)
-- ARGV[4]  now (epoch s)
-- ARGV[5]  retention (s)
-- Returns  1 if queued, 0 if the delivery is not (any more) a dead letter

local dlq = KEYS[1]
local delivery_key = KEYS[2]
local inflight = KEYS[3]
local queue = KEYS[4]
local first_kept_key = 5
local delivery_id = ARGV[1]
local message = ARGV[2]
local deadline = ARGV[3]
local now = ARGV[4]
local retention = ARGV[5]

if redis.call('ZREM', dlq, delivery_id) == 0 then return 0 end
local spent = redis.call('HGET', delivery_key, 'attempts') or '0'
redis.call('HSET', delivery_key, 'status', 'queued', 'attempt_base', spent, 'window_start', now,
           'replayed_at', now, 'updated_at', now)
redis.call('HDEL', delivery_key, 'dead_at', 'dead_reason')
redis.call('HINCRBY', delivery_key, 'replays', 1)
for i = first_kept_key, #KEYS do redis.call('EXPIRE', KEYS[i], retention) end
redis.call('EXPIRE', delivery_key, retention)
redis.call('ZADD', inflight, deadline, 'deliver:' .. delivery_id)
redis.call('LPUSH', queue, message)
return 1
