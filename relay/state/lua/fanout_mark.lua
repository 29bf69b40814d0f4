-- Move the fan-out mark forward over the events fanned out since (Lanes.advance_mark, each
-- scheduler tick), so an ordered delivery seldom has to: only once the mark exists, that
-- is once a relay ordered a delivery (lane_admit.lua sets it first).
--
-- KEYS[1]  the fan-out mark (lib/fanout_mark.lua)
-- KEYS[2]  events index (event id -> received at)
-- ARGV[1]  event key prefix (event keys are derived, not declared: one Redis, no cluster)
-- ARGV[2]  how many events to look at, at most
-- Returns  1 if the mark reached the newest event (or there is no mark), else 0

--!include lib/fanout_mark.lua

local mark_key = KEYS[1]
local events = KEYS[2]
local event_prefix = ARGV[1]
local most = tonumber(ARGV[2])

if redis.call('EXISTS', mark_key) == 0 then return 1 end
return mark_advance(mark_key, events, event_prefix, '', '+inf', most) and 1 or 0
