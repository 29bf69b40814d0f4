-- Take a slot in every sliding window, or say how long to wait (SlidingWindows.acquire,
-- a source's inbound limit).
--
-- KEYS[1..] one ZSET per rate
-- ARGV[1]  member prefix of the slots taken
-- ARGV[2..] per rate: its limit, its window (ms)
-- Returns  0 if a slot was taken in every window, else the ms to wait

--!include lib/clock.lua
--!include lib/windows.lua

local rates = rates_of(KEYS, 1, ARGV, 2)
local member = ARGV[1]

local now = now_ms()
local wait = window_wait(rates, now)
if wait > 0 then return wait end
window_take(rates, member, now)
return 0
