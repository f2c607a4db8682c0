-- subprocess: spawn-and-wait of `true` (mproc, C posix_spawnp floor,
-- Python), with and without a 1 GiB Lua heap; communicate of 64 MiB
-- through cat (mproc, Python).
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

local data = string.rep("0123456789abcdef", MIB << 16)
local best = 0
for _ = 1, 3 do
  local t0 = mproc.monotonic()
  local p = subprocess.Popen({ "cat" }, { stdin = subprocess.PIPE, stdout = subprocess.PIPE })
  local out = p:communicate(data)
  best = math.max(best, MIB / (mproc.monotonic() - t0))
  assert(out == data)
end
common.report(("communicate of %d MiB through cat"):format(MIB), "MiB/s", {
  { "mproc Popen:communicate", best },
  { "Python Popen.communicate", common.external(("python3 bench/subprocess_communicate.py %d"):format(MIB)) },
})
