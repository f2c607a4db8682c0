-- Process start+join of an empty target: mproc, Python (fork), C floor.
-- Also prints the page faults per start+join, in the parent and in the
-- children, beside the C host's: where the time between the two goes
-- (docs/performance.md, "Process").
local mproc = require "mproc"
local common = require "bench.common"

local N = tonumber(os.getenv("N")) or 1000
local RUNS = 3

local function empty() end

-- Minor page faults of this process and of its reaped children so far
-- (fields 10 and 11 of /proc/self/stat); nil without /proc.
local function faults()
  local f = io.open("/proc/self/stat")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  local t = {}
  for w in s:match("%) (.*)"):gmatch("%S+") do t[#t + 1] = w end
  return tonumber(t[8]), tonumber(t[9])
end

local p0, c0 = faults()
local mine = common.time_per_op(function(n)
  for _ = 1, n do
    local p = mproc.Process(empty):start()
    p:join()
    p:close()
  end
end, N, RUNS)
local p1, c1 = faults()

-- The C host with a Lua state: its child _exits at once (the floor the
-- goal is set against), or runs an empty Lua function first, or also keeps
-- a Process child's promises (bench/c/fork_lua_floor.c).
local function lua_floor(mode)
  local out = io.popen("build/bench/fork_lua_floor " .. N .. " " .. mode):read("a")
  local us, p, c = out:match("([%d.]+) ([%d.]+) ([%d.]+)")
  return assert(tonumber(us), out), p, c
end
local floor_us, floor_p, floor_c = lua_floor("")
local lua_us, _, lua_c = lua_floor("lua")
local kept_us, _, kept_c = lua_floor("kept")

common.report("Process start+join, empty target, " .. N .. " times", "us/op", {
  { "mproc", mine },
  { "C fork+_exit+waitpid", common.external("build/bench/fork_floor " .. N) },
  { "same, C holding a Lua state", floor_us },
  { "same, child runs a Lua function", lua_us },
  { "same, and keeps stdio and seed", kept_us },
  { "Python multiprocessing", common.external("python3 bench/process.py " .. N) },
})
if p0 then
  print(("  page faults per start+join: mproc parent %.1f, children %.1f;"
    .. " C host with a Lua state parent %s, children %s (running Lua %s, and keeping %s)"):format(
    (p1 - p0) / (RUNS * N), (c1 - c0) / (RUNS * N), floor_p, floor_c, lua_c, kept_c))
end
