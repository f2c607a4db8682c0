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

local floor_out = io.popen("build/bench/fork_lua_floor " .. N):read("a")
local floor_us, floor_p, floor_c = floor_out:match("([%d.]+) ([%d.]+) ([%d.]+)")

common.report("Process start+join, empty target, " .. N .. " times", "us/op", {
  { "mproc", mine },
  { "C fork+_exit+waitpid", common.external("build/bench/fork_floor " .. N) },
  { "same, C holding a Lua state", assert(tonumber(floor_us), floor_out) },
  { "Python multiprocessing", common.external("python3 bench/process.py " .. N) },
})
if p0 then
  print(("  page faults per start+join: mproc parent %.1f, children %.1f;"
    .. " C host with a Lua state parent %s, children %s"):format(
    (p1 - p0) / (RUNS * N), (c1 - c0) / (RUNS * N), floor_p, floor_c))
end
