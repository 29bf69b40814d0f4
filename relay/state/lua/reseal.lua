-- Replace values of one hash or list only where they still hold what was read
-- (relay keys rotate-data, relay.state.reseal): a value a worker or the intake wrote
-- meanwhile is newer than the one re-sealed, so it is left alone. TTLs are kept.
--
-- KEYS[1]  a hash (an event or delivery record) or a list (a delivery's attempts)
-- ARGV[1]  'hash' or 'list'
-- ARGV[2..] triples: field name (hash) or 0-based index (list), the value read, the new value
-- Returns  per triple, 1 if replaced, 0 if the value had changed (or is gone)

local key = KEYS[1]
local kind = ARGV[1]
local first_triple = 2

local replaced = {}
for i = first_triple, #ARGV, 3 do
  local where, read, new = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local now
  if kind == 'hash' then
    now = redis.call('HGET', key, where)
  else
    now = redis.call('LINDEX', key, where)
  end
  if now == read then
    if kind == 'hash' then
      redis.call('HSET', key, where, new)
    else
      redis.call('LSET', key, where, new)
    end
    replaced[#replaced + 1] = 1
  else
    replaced[#replaced + 1] = 0
  end
end
return replaced
