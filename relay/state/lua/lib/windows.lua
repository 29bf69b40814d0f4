-- Sliding-window rates over ZSETs of timestamps (ms): "at most limit in any window".
--
-- rates_of(keys, first_key, args, first_arg): the rates of keys[first_key..], each
--   reading its limit and window (ms) from the next two args from args[first_arg]
-- window_wait(rates, now): ms until every window has a free slot (0: now); forgets
--   the slots that left their window
-- window_take(rates, member, now): takes a slot in every window; member prefixes it

local function rates_of(keys, first_key, args, first_arg)
  local rates = {}
  for i = first_key, #keys do
    local a = first_arg + 2 * (i - first_key)
    rates[#rates + 1] = {key = keys[i], limit = tonumber(args[a]), window = tonumber(args[a + 1])}
  end
  return rates
end

local function window_wait(rates, now)
  local wait = 0
  for _, rate in ipairs(rates) do
    redis.call('ZREMRANGEBYSCORE', rate.key, '-inf', now - rate.window)
    if redis.call('ZCARD', rate.key) >= rate.limit then
      local oldest = redis.call('ZRANGE', rate.key, 0, 0, 'WITHSCORES')
      local w = tonumber(oldest[2]) + rate.window - now + 1
      if w > wait then wait = w end
    end
  end
  return wait
end

local function window_take(rates, member, now)
  for _, rate in ipairs(rates) do
    redis.call('ZADD', rate.key, now, member .. ':' .. now .. ':' .. math.random(1000000))
    redis.call('PEXPIRE', rate.key, rate.window)
  end
end
