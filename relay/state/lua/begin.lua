-- Claim a delivery for one run (Store.begin_many): take its lock with this run's token,
-- bump the attempt counter, and hand back the record and the event in the same trip.
--
-- KEYS[1]  the delivery record (hash)
-- KEYS[2]  the delivery's lock (relay:lock:<delivery id>)
-- KEYS[3]  in-flight set (member -> deadline)
-- KEYS[4]  the schedule (delivery id -> due)
-- KEYS[5]  (optional) the held hash of the worker running it, which notes the run there
-- ARGV[1]  this run's lock token (finish and dead release the lock only if it holds it)
-- ARGV[2]  lock TTL (ms)
-- ARGV[3]  now (epoch s)
-- ARGV[4]  in-flight deadline (epoch s)
-- ARGV[5]  delivery id
-- ARGV[6]  event key prefix (the event key is derived, not declared: one Redis, no cluster)
-- ARGV[7]  (with KEYS[5]) the run's field there: '<message delivery tag> deliver:<id>'
-- Returns  {verdict, attempt, previous status[, record fields, event JSON or '']}: verdict
--          'run' (with the fields), else 'missing', 'delivered', 'dead', 'not_due' or
--          'locked' with attempt 0 and ''

local delivery_key = KEYS[1]
local lock_key = KEYS[2]
local inflight = KEYS[3]
local schedule = KEYS[4]
local held = KEYS[5]
local token = ARGV[1]
local lock_ttl_ms = ARGV[2]
local now = ARGV[3]
local deadline = ARGV[4]
local delivery_id = ARGV[5]
local event_prefix = ARGV[6]
local held_field = ARGV[7]

local status = redis.call('HGET', delivery_key, 'status')
if not status then return {'missing', 0, ''} end
if status == 'delivered' or status == 'dead' then return {status, 0, ''} end
if status == 'scheduled' then
  local next_at = tonumber(redis.call('HGET', delivery_key, 'next_at') or '0')
  if next_at > tonumber(now) + 1 then return {'not_due', 0, ''} end
end
if not redis.call('SET', lock_key, token, 'NX', 'PX', lock_ttl_ms) then
  return {'locked', 0, ''}
end
local fields = redis.call('HGETALL', delivery_key)
local attempts = redis.call('HINCRBY', delivery_key, 'attempts', 1)
redis.call('HSET', delivery_key, 'status', 'running', 'updated_at', now)
redis.call('ZREM', schedule, delivery_id)
redis.call('ZADD', inflight, deadline, 'deliver:' .. delivery_id)
if held then redis.call('HSET', held, held_field, token) end
local event_id = redis.call('HGET', delivery_key, 'event_id')
local data = event_id and redis.call('HGET', event_prefix .. event_id, 'data')
return {'run', attempts, status, fields, data or ''}
