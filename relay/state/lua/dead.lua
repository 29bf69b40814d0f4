-- Dead-letter a delivery (Store.finish_dead): keep its record, attempts and event copy
-- until replayed or purged, release the lock if this run still holds it, and count the
-- death (and the last attempt, if there was one) for the target. A dead head of an
-- ordered lane leaves it and wakes the next, which records that it went on without it.
--
-- KEYS[1]  the delivery record (hash)
-- KEYS[2]  the delivery's attempts (list of JSON)
-- KEYS[3]  the dead-letter queue (delivery id -> dead at)
-- KEYS[4]  in-flight set (member -> deadline)
-- KEYS[5]  the schedule (delivery id -> due)
-- KEYS[6]  the delivery's lock
-- KEYS[7]  per-target counters
-- KEYS[8]  this minute's counters
-- ARGV[1]  the last attempt's JSON, or '' if there was none
-- ARGV[2]  now (epoch s)
-- ARGV[3]  delivery id
-- ARGV[4]  the attempt's latency bucket, or '' if there was no attempt
-- ARGV[5]  the attempt's milliseconds
-- ARGV[6]  minute counters' TTL (s)
-- ARGV[7]  this run's lock token (from begin); '' if the caller holds no lock
-- ARGV[8..] the record's fields: name, value, ...
-- Returns  1

--!include lib/count_attempt.lua
--!include lib/lane.lua

local delivery_key = KEYS[1]
local attempts_key = KEYS[2]
local dlq = KEYS[3]
local inflight = KEYS[4]
local schedule = KEYS[5]
local lock_key = KEYS[6]
local target_stats = KEYS[7]
local minute_stats = KEYS[8]
local attempt = ARGV[1]
local now = ARGV[2]
local delivery_id = ARGV[3]
local label = ARGV[4]
local ms = ARGV[5]
local minute_ttl = ARGV[6]
local token = ARGV[7]
local first_field = 8

local target = redis.call('HGET', delivery_key, 'target')
if attempt ~= '' then redis.call('RPUSH', attempts_key, attempt) end
redis.call('HSET', delivery_key, unpack(ARGV, first_field))
redis.call('PERSIST', delivery_key)
redis.call('PERSIST', attempts_key)
redis.call('ZADD', dlq, now, delivery_id)
redis.call('ZREM', inflight, 'deliver:' .. delivery_id)
redis.call('ZREM', schedule, delivery_id)
lane_leave(delivery_key, delivery_id, schedule, now,
           cjson.encode({reason = 'dead_letter', skipped = delivery_id}))
-- another run may hold the lock now (ours expired): leave it to that run
if redis.call('GET', lock_key) == token then redis.call('DEL', lock_key) end
redis.call('HINCRBY', minute_stats, 'dead', 1)
redis.call('EXPIRE', minute_stats, minute_ttl)
if target then
  if label ~= '' then
    count_attempt(target_stats, minute_stats, target, 'dead', label, ms, minute_ttl)
  else
    redis.call('HINCRBY', target_stats, target .. '|outcome|dead', 1)
  end
end
return 1
