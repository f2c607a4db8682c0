-- subprocess: spawn-and-wait of `true` (mproc, C posix_spawnp floor,
-- Python), with and without a 1 GiB Lua heap; communicate of 64 MiB
-- through cat, first call of a fresh process (mproc, a C floor, Python).
local mproc = require "mproc"
local common = require "bench.common"
local subprocess = mproc.subprocess

local N = tonumber(os.getenv("N")) or 500
local HEAP_MIB = tonumber(os.getenv("HEAP_MIB")) or 1024
local MIB = 64

local function spawn_true(n)
  for _ = 1, n do assert(subprocess.call{ "true" } == 0) end
end

-- The machine is shared: mproc and the floor take turns, best of each.
local mine, floor = math.huge, math.huge
for _ = 1, 3 do
  mine = math.min(mine, common.time_per_op(spawn_true, N))
  floor = math.min(floor, (common.external(("build/bench/spawn_floor %d"):format(N))))
end
common.report("spawn and wait of `true`, " .. N .. " times", "us/op", {
  { "mproc subprocess.call", mine },
  { "C posix_spawnp+waitpid", floor },
  { "Python subprocess.call", common.external(("python3 bench/subprocess_spawn.py %d"):format(N)) },
})

-- 1 GiB of distinct strings, so every page is really there.
local heap = {}
for i = 1, HEAP_MIB do heap[i] = string.rep(string.char(i % 256), (1 << 20) - 32) .. i end
collectgarbage()
assert(#heap == HEAP_MIB)
local heavy, heavy_floor = math.huge, math.huge
for _ = 1, 3 do
  heavy = math.min(heavy, common.time_per_op(spawn_true, N))
  heavy_floor = math.min(heavy_floor, (common.external(("build/bench/spawn_floor %d %d"):format(N, HEAP_MIB))))
end
common.report(("the same with a %d MiB heap in the parent"):format(HEAP_MIB), "us/op", {
  { "mproc subprocess.call", heavy },
  { "C posix_spawnp+waitpid, no heap", floor },
  { "C posix_spawnp+waitpid, same heap", heavy_floor },
  { "Python subprocess.call, same heap",
    common.external(("python3 bench/subprocess_spawn.py %d %d"):format(N // 5, HEAP_MIB)) },
})
heap = nil -- luacheck: ignore
collectgarbage()

-- Each run is the first communicate of a fresh process (its buffers and
-- the result's pages are all new), on every side; best of three.
local lua = arg[-1] or "lua5.4"
local mine_c, py_c = 0, 0
for _ = 1, 3 do
  mine_c = math.max(mine_c, (common.external(("%s bench/communicate_once.lua %d"):format(lua, MIB))))
  py_c = math.max(py_c, (common.external(("python3 bench/subprocess_communicate.py %d once"):format(MIB))))
end
common.report(("communicate of %d MiB through cat, first call in a fresh process"):format(MIB), "MiB/s", {
  { "mproc Popen:communicate", mine_c },
  { "C poll loop, buffers touched beforehand", common.external(("build/bench/communicate_floor %d"):format(MIB)) },
  { "the same into new memory, then one copy (a Lua string's)",
    common.external(("build/bench/communicate_floor %d fresh"):format(MIB)) },
  { "Python Popen.communicate", py_c },
})
