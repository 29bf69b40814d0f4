-- The workers whose heartbeat stopped (Heartbeats.dead), judged by Redis's clock so the
-- clocks of the worker and scheduler hosts do not matter.
--
-- KEYS[1]  the worker set (worker id -> last beat)
-- ARGV[1]  silence after which a worker is dead (s)
-- ARGV[2]  at most this many
-- Returns  their ids

local workers = KEYS[1]
local dead_after = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])

local t = redis.call('TIME')
local cutoff = tonumber(t[1]) + tonumber(t[2]) / 1e6 - dead_after
return redis.call('ZRANGEBYSCORE', workers, '-inf', '(' .. cutoff, 'LIMIT', 0, limit)
