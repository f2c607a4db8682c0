-- Process start+join of an empty target: mproc, Python (fork), C floor.
local mproc = require "mproc"
local common = require "bench.common"

local N = tonumber(os.getenv("N")) or 1000

local function empty() end

local mine = common.time_per_op(function(n)
  for _ = 1, n do
    local p = mproc.Process(empty):start()
    p:join()
    p:close()
  end
end, N)

common.report("Process start+join, empty target, " .. N .. " times", "us/op", {
  { "mproc", mine },
  { "C fork+_exit+waitpid", common.external("build/bench/fork_floor " .. N) },
  { "same, C holding a Lua state", common.external("build/bench/fork_lua_floor " .. N) },
  { "Python multiprocessing", common.external("python3 bench/process.py " .. N) },
})
