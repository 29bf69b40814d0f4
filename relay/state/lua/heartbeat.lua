-- A worker's heartbeat (Heartbeats.beat): its time in the worker set by Redis's clock, the
-- fields of work it finished dropped from its held hash, and the hash's life extended.
--
-- KEYS[1]  the worker set (worker id -> last beat)
-- KEYS[2]  the worker's held hash
-- ARGV[1]  worker id
-- ARGV[2]  1 if this worker beat before (then its absence means it was declared dead)
-- ARGV[3]  life of the held hash (s), renewed by each beat
-- ARGV[4..] held fields of finished work, to drop
-- Returns  1, or 0 if the worker had been declared dead and its work given back meanwhile

local workers = KEYS[1]
local held = KEYS[2]
local worker_id = ARGV[1]
local beat_before = ARGV[2] == '1'
local held_ttl = ARGV[3]
local first_done = 4

local t = redis.call('TIME')
local added = redis.call('ZADD', workers, tonumber(t[1]) + tonumber(t[2]) / 1e6, worker_id)
local chunk = {}
for i = first_done, #ARGV do
  chunk[#chunk + 1] = ARGV[i]
  if #chunk == 500 or i == #ARGV then
    redis.call('HDEL', held, unpack(chunk))
    chunk = {}
  end
end
redis.call('EXPIRE', held, held_ttl)
if added == 1 and beat_before then return 0 end
return 1
