-- now_ms(): Redis's own clock in ms, so workers with skewed clocks share one window.

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
