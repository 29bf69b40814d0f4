-- count_attempt(targets hash, minute hash, target, outcome, bucket label, ms, minute TTL):
-- one attempt's outcome and latency in the counters of relay.state.stats, whose
-- docstring names the fields. Included by finish.lua and dead.lua.

local function count_attempt(stats, minute, t, outcome, label, ms, ttl)
  redis.call('HINCRBY', stats, t .. '|outcome|' .. outcome, 1)
  redis.call('HINCRBY', stats, t .. '|le|' .. label, 1)
  redis.call('HINCRBYFLOAT', stats, t .. '|sum_ms', ms)
  redis.call('HINCRBY', stats, t .. '|count', 1)
  local total = outcome == 'delivered' and 'delivered' or 'failed'
  redis.call('HINCRBY', minute, total, 1)
  redis.call('HINCRBY', minute, t .. '|' .. total, 1)
  redis.call('HINCRBY', minute, t .. '|le|' .. label, 1)
  redis.call('EXPIRE', minute, ttl)
end
