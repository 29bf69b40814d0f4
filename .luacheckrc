-- luacheck's settings for the Redis scripts; run from the repository root:
--   luacheck relay/state/lua
-- Redis runs scripts on Lua 5.1 with these globals besides the standard library.
std = "lua51"
read_globals = {"redis", "KEYS", "ARGV", "cjson", "cmsgpack", "bit", "struct"}
max_line_length = 100

-- A script pulls shared code in with `--!include lib/<name>.lua` lines, which the loader
-- (relay/state/lua.py) replaces with that file's text. luacheck reads each file alone, so:
-- a library's top-level functions are used by its includers, not unused in it; and a
-- script may call exactly the functions of the libraries it includes, nothing more.
local lfs = require("lfs")
local script_dirs = {"relay/state/lua"}

local function read_lines(path)
  local lines, file = {}, io.open(path)
  if file then
    for line in file:lines() do lines[#lines + 1] = line end
    file:close()
  end
  return lines
end

local function functions_of(path)
  local names = {}
  for _, line in ipairs(read_lines(path)) do
    local name = line:match("^local function ([%w_]+)")
    if name then names[#names + 1] = name end
  end
  return names
end

files = files or {}
for _, dir in ipairs(script_dirs) do
  local lib_dir = dir .. "/lib"
  if lfs.attributes(lib_dir, "mode") == "directory" then
    for name in lfs.dir(lib_dir) do
      if name:match("%.lua$") then
        local unused = {}
        for _, fn in ipairs(functions_of(lib_dir .. "/" .. name)) do
          unused[#unused + 1] = "211/" .. fn  -- used by the scripts that include it
        end
        files[lib_dir .. "/" .. name] = {ignore = unused}
      end
    end
  end
  if lfs.attributes(dir, "mode") == "directory" then
    for name in lfs.dir(dir) do
      if name:match("%.lua$") then
        local provided = {}
        for _, line in ipairs(read_lines(dir .. "/" .. name)) do
          local included = line:match("^%-%-!include%s+(%S+)")
          if included then
            for _, fn in ipairs(functions_of(dir .. "/" .. included)) do
              provided[#provided + 1] = fn
            end
          end
        end
        files[dir .. "/" .. name] = {read_globals = provided}
      end
    end
  end
end
