-- Record an accepted event and queue its fan-out, all or nothing (Outbox.accept_event).
-- A resend (same dedupe key) or a reused single-use credential changes nothing but the
-- source's duplicate counter.
--
-- KEYS[1]  dedupe key of this source and message
-- KEYS[2]  the event record (hash)
-- KEYS[3]  the fan-out queue
-- KEYS[4]  in-flight set (member -> deadline)
-- KEYS[5]  events index (event id -> received at)
-- KEYS[6]  the single-use credential's key
-- KEYS[7]  per-source counters (relay.state.stats)
-- KEYS[8]  this minute's counters
-- ARGV[1]  event id
-- ARGV[2]  event JSON
-- ARGV[3]  dedupe TTL (s)
-- ARGV[4]  retention (s)
-- ARGV[5]  the fan-out task message
-- ARGV[6]  in-flight deadline (epoch s)
-- ARGV[7]  now (epoch s)
-- ARGV[8]  '1' if the message has a dedupe key, else '0'
-- ARGV[9]  single-use credential TTL (s), '0' if there is no such credential
-- ARGV[10] the message's dedupe key, else its event id: what the credential is bound to
-- ARGV[11] source id
-- ARGV[12] minute counters' TTL (s)
-- Returns  false (queued), the earlier event's id (a resend), or -1 (credential reused
--          for another message)

local dedupe_key = KEYS[1]
local event_key = KEYS[2]
local fanout_queue = KEYS[3]
local inflight = KEYS[4]
local events_index = KEYS[5]
local single_use_key = KEYS[6]
local source_stats = KEYS[7]
local minute_stats = KEYS[8]
local event_id = ARGV[1]
local event_json = ARGV[2]
local dedupe_ttl = ARGV[3]
local retention = ARGV[4]
local message = ARGV[5]
local deadline = ARGV[6]
local now = ARGV[7]
local dedupe_on = ARGV[8]
local single_use_ttl = ARGV[9]
local message_key = ARGV[10]
local source_id = ARGV[11]
local minute_ttl = ARGV[12]

if single_use_ttl ~= '0' then
  local seen = redis.call('GET', single_use_key)
  if seen and seen ~= message_key then return -1 end
  redis.call('SET', single_use_key, message_key, 'EX', single_use_ttl)
end
if dedupe_on == '1' then
  local existing = redis.call('GET', dedupe_key)
  if existing then
    redis.call('HINCRBY', source_stats, source_id .. '|duplicates', 1)
    return existing
  end
  redis.call('SET', dedupe_key, event_id, 'EX', dedupe_ttl)
end
redis.call('HSET', event_key, 'data', event_json, 'received_at', now, 'status', 'queued')
redis.call('EXPIRE', event_key, retention)
redis.call('ZADD', events_index, now, event_id)
redis.call('ZADD', inflight, deadline, 'fanout:' .. event_id)
redis.call('LPUSH', fanout_queue, message)
redis.call('HINCRBY', source_stats, source_id .. '|accepted', 1)
redis.call('HINCRBY', minute_stats, 'received', 1)
redis.call('EXPIRE', minute_stats, minute_ttl)
return false
