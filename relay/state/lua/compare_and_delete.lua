-- Delete a key only if it still holds the given value: a lock released by its holder
-- only, a cached token forgotten only if no one replaced it (workers' DingTalk app
-- token cache).
--
-- KEYS[1]  the key
-- ARGV[1]  the value it must hold to be deleted
-- Returns  nil

local key = KEYS[1]
local expected = ARGV[1]

if redis.call('GET', key) == expected then redis.call('DEL', key) end
