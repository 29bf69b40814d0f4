-- A refused call for the audit log (AuditLog.record_failure), aggregated per action,
-- address and minute so that a client hammering the API cannot rotate the capped log:
-- the first refusal of a minute is an entry of its own (count 1); the rest only count,
-- and a summary entry with their number is written once that minute is over (by the next
-- refusal from anyone) or when the log is read. Past max_sources addresses in one minute,
-- refusals are counted under the address '*'. With flush_only = 1 the script only writes
-- the pending summaries (of every minute, the current one too) and records nothing.
--
-- KEYS[1]  the audit stream
-- KEYS[2]  the pending set (member "<minute>\n<action>\n<outcome>\n<address>" -> minute)
-- ARGV[1]  prefix of the per-minute hashes ("<prefix><minute>": "<pair>" -> first entry
--          id, "<pair>#" -> refusals not yet written; "<pair>" is action\noutcome\address)
-- ARGV[2]  the stream's cap (approximate MAXLEN)
-- ARGV[3]  max_sources: (action, address) pairs with entries of their own per minute
-- ARGV[4]  life of a minute's hash (s)
-- ARGV[5]  flush_only: '1' to only write pending summaries
-- ARGV[6]  action
-- ARGV[7]  actor (a key id a token claims, or '-')
-- ARGV[8]  target
-- ARGV[9]  outcome
-- ARGV[10] remote address
-- ARGV[11] detail
-- Returns  1 if an entry was written for this refusal, 0 if it was only counted

local stream = KEYS[1]
local pending = KEYS[2]
local bucket_prefix = ARGV[1]
local max_entries = ARGV[2]
local max_sources = tonumber(ARGV[3])
local bucket_ttl = ARGV[4]
local flush_only = ARGV[5] == '1'
local action, actor, target = ARGV[6], ARGV[7], ARGV[8]
local outcome, address, detail = ARGV[9], ARGV[10], ARGV[11]

local FLUSH_BATCH = 200

local t = redis.call('TIME')
local now = string.format('%d.%03d', t[1], math.floor(tonumber(t[2]) / 1000))
local minute = math.floor(tonumber(t[1]) / 60) * 60

local function add(who, what, where, result, from, why, count)
  return redis.call('XADD', stream, 'MAXLEN', '~', max_entries, '*',
    'at', now, 'actor', who, 'action', what, 'target', where, 'outcome', result,
    'remote_addr', from, 'detail', why, 'count', count)
end

-- summaries of the pending counts of minutes up to `upto`
local function flush(upto)
  local members = redis.call('ZRANGEBYSCORE', pending, '-inf', upto, 'LIMIT', 0, FLUSH_BATCH)
  for _, member in ipairs(members) do
    local at, what, result, from = member:match('^(%d+)\n([^\n]*)\n([^\n]*)\n(.*)$')
    if at then
      local bucket = bucket_prefix .. at
      local pair = what .. '\n' .. result .. '\n' .. from
      local n = tonumber(redis.call('HGET', bucket, pair .. '#') or '0')
      if n > 0 then
        local first = redis.call('HGET', bucket, pair) or '?'
        local who = from == '*' and 'addresses past the first ' .. max_sources or from
        add('-', what, '', result, from,
          string.format('%d more like entry %s from %s in the same minute', n, first, who), n)
        redis.call('HSET', bucket, pair .. '#', 0)
      end
    end
    redis.call('ZREM', pending, member)
  end
end

if flush_only then
  flush('+inf')
  return 0
end
flush(minute - 1)

local bucket = bucket_prefix .. minute
local pair = action .. '\n' .. outcome .. '\n' .. address
if redis.call('HEXISTS', bucket, pair) == 0 and redis.call('HLEN', bucket) >= 2 * max_sources then
  address = '*'  -- too many addresses this minute: count the rest together
  pair = action .. '\n' .. outcome .. '\n' .. address
end
if redis.call('HEXISTS', bucket, pair) == 0 then
  local id = add(actor, action, target, outcome, address, detail, 1)
  redis.call('HSET', bucket, pair, id, pair .. '#', 0)
  redis.call('EXPIRE', bucket, bucket_ttl)
  return 1
end
redis.call('HINCRBY', bucket, pair .. '#', 1)
redis.call('ZADD', pending, 'NX', minute, minute .. '\n' .. pair)
return 0
