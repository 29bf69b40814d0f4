-- wrk script: each thread cycles through its own file of pre-built raw HTTP requests
-- (separated by NUL bytes), counts statuses, and the run ends with one JSON line.
-- Usage: wrk -s bench/wrk_cycle.lua URL -- <file prefix>   (thread N reads <prefix>.N)

local counter = 0
local threads = {}

function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

reqs = {}
n, i, wrapped = 0, 0, 0
c202, c2xx, c4xx, c5xx, cother = 0, 0, 0, 0, 0

function init(args)
  local f = assert(io.open(args[1] .. "." .. tid, "rb"))
  local data = f:read("*a")
  f:close()
  local pos = 1
  while true do
    local s = string.find(data, "\0", pos, true)
    if not s then break end
    n = n + 1
    reqs[n] = string.sub(data, pos, s - 1)
    pos = s + 1
  end
end

function request()
  i = i + 1
  if i > n then
    i = 1
    wrapped = wrapped + 1
  end
  return reqs[i]
end

function response(status, headers, body)
  if status == 202 then
    c202 = c202 + 1
  elseif status >= 200 and status < 300 then
    c2xx = c2xx + 1
  elseif status >= 400 and status < 500 then
    c4xx = c4xx + 1
  elseif status >= 500 then
    c5xx = c5xx + 1
  else
    cother = cother + 1
  end
end

function done(summary, latency, requests)
  local t = {c202 = 0, c2xx = 0, c4xx = 0, c5xx = 0, cother = 0, wrapped = 0}
  for _, thread in ipairs(threads) do
    for k, _ in pairs(t) do
      t[k] = t[k] + (thread:get(k) or 0)
    end
  end
  local e = summary.errors
  io.write(string.format(
    'WRK_RESULT {"requests": %d, "duration_us": %d, "p50_us": %d, "p90_us": %d, '
    .. '"p99_us": %d, "max_us": %d, "s202": %d, "s2xx_other": %d, "s4xx": %d, '
    .. '"s5xx": %d, "s_other": %d, "wrapped": %d, "connect": %d, "read": %d, '
    .. '"write": %d, "timeout": %d, "status_errors": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, t.c202, t.c2xx, t.c4xx, t.c5xx, t.cother,
    t.wrapped, e.connect, e.read, e.write, e.timeout, e.status))
end
