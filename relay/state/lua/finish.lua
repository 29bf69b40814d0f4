-- End a run that delivered, will retry, or waits (Store.finish_delivered, finish_retry,
-- park): record the attempt and fields, leave the in-flight set, maybe schedule, release
-- the lock if this run still holds it, and count the outcome (relay.state.stats). A
-- delivered head of an ordered lane leaves it and wakes the next (lib/lane.lua) in this
-- same step, so no crash leaves a lane waiting for a delivery that is done.
--
-- KEYS[1]  the delivery record (hash)
-- KEYS[2]  the delivery's attempts (list of JSON)
-- KEYS[3]  in-flight set (member -> deadline)
-- KEYS[4]  the delivery's lock
-- KEYS[5]  the schedule (delivery id -> due)
-- KEYS[6]  per-target counters
-- KEYS[7]  this minute's counters
-- ARGV[1]  the attempt's JSON, or '' (a wait spends no attempt)
-- ARGV[2]  retention (s)
-- ARGV[3]  delivery id
-- ARGV[4]  when to run next (epoch s), or '' if not scheduled
-- ARGV[5]  what to count for the target: delivered, retry, wait, or ''
-- ARGV[6]  the attempt's latency bucket (or, for a wait, its reason)
-- ARGV[7]  the attempt's milliseconds
-- ARGV[8]  minute counters' TTL (s)
-- ARGV[9]  this run's lock token (from begin); '' if the caller holds no lock
-- ARGV[10..] the record's fields: name, value, ...
-- Returns  1

--!include lib/count_attempt.lua
--!include lib/lane.lua

local delivery_key = KEYS[1]
local attempts_key = KEYS[2]
local inflight = KEYS[3]
local lock_key = KEYS[4]
local schedule = KEYS[5]
local target_stats = KEYS[6]
local minute_stats = KEYS[7]
local attempt = ARGV[1]
local retention = ARGV[2]
local delivery_id = ARGV[3]
local due = ARGV[4]
local count = ARGV[5]
local label = ARGV[6]
local ms = ARGV[7]
local minute_ttl = ARGV[8]
local token = ARGV[9]
local first_field = 10

local target = redis.call('HGET', delivery_key, 'target')
if attempt ~= '' then
  redis.call('RPUSH', attempts_key, attempt)
  redis.call('EXPIRE', attempts_key, retention)
end
redis.call('HSET', delivery_key, unpack(ARGV, first_field))
if due ~= '' then
  redis.call('ZADD', schedule, due, delivery_id)
else  -- delivered: the next of its lane may go (its record's clock, as the record's times)
  lane_leave(delivery_key, delivery_id, schedule,
             redis.call('HGET', delivery_key, 'updated_at') or '0', nil)
end
redis.call('ZREM', inflight, 'deliver:' .. delivery_id)
-- another run may hold the lock now (ours expired): leave it to that run
if redis.call('GET', lock_key) == token then redis.call('DEL', lock_key) end
if target and count == 'wait' then
  redis.call('HINCRBY', target_stats, target .. '|wait|' .. label, 1)
elseif target and count ~= '' then
  count_attempt(target_stats, minute_stats, target, count, label, ms, minute_ttl)
end
return 1
