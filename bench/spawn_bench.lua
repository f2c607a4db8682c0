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

local floor = common.external(("build/bench/spawn_floor %d"):format(N))
common.report("spawn and wait of `true`, " .. N .. " times", "us/op", {
  { "mproc subprocess.call", common.time_per_op(spawn_true, N) },
  { "C posix_spawnp+waitpid", floor },
  { "Python subprocess.call", common.external(("python3 bench/subprocess_spawn.py %d"):format(N)) },
})

-- 1 GiB of distinct strings, so every page is really there.
local heap = {}
for i = 1, HEAP_MIB do heap[i] = string.rep(string.char(i % 256), (1 << 20) - 32) .. i end
collectgarbage()
local heavy = common.time_per_op(spawn_true, N)
common.report(("the same with a %d MiB heap in the parent"):format(HEAP_MIB), "us/op", {
  { "mproc subprocess.call", heavy },
  { "C posix_spawnp+waitpid, no heap", floor },
  { "C posix_spawnp+waitpid, same heap", common.external(("build/bench/spawn_floor %d %d"):format(N, HEAP_MIB)) },
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
  assert(out == data)
  best = math.max(best, MIB / (mproc.monotonic() - t0))
end
common.report(("communicate of %d MiB through cat"):format(MIB), "MiB/s", {
  { "mproc Popen:communicate", best },
  { "Python Popen.communicate", common.external(("python3 bench/subprocess_communicate.py %d"):format(MIB)) },
})
