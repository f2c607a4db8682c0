-- Dict and List: mproc's shared containers beside Python's Manager (a
-- server process), in one run. A plain Lua table (not shared) is the floor
-- for set/get.
local mproc = require "mproc"
local core = require "mproc.core"
local common = require "bench.common"

local N = tonumber(os.getenv("N")) or 1000000
local NPY = tonumber(os.getenv("NPY")) or 20000
local NPROC = tonumber(os.getenv("NPROC")) or 10000   -- per process, 4 processes
local NMEM = tonumber(os.getenv("NMEM")) or 1000000

-- report() shows mproc/this; against a server process that ratio is tiny,
-- so say it the other way round too.
local function report(title, rows)
  common.report(title, "us/op", rows)
  print(("  %-30s %12s   Python/mproc = %.0fx"):format("", "", rows[#rows][2] / rows[1][2]))
end

local keys = {}
for i = 1, 1000 do keys[i] = "k" .. (i - 1) end

local function set_get(d, get)
  for i = 1, 1000 do d[keys[i]] = 1 end
  return common.time_per_op(function(n)
    local x
    if get then
      for i = 1, n do x = d[keys[i % 1000 + 1]] end
    else
      for i = 1, n do d[keys[i % 1000 + 1]] = i end
    end
    return x
  end, N)
end

for _, get in ipairs { false, true } do
  local op = get and "d[k]" or "d[k] = v"
  report(("Dict %s, small values, 1 process, %d ops"):format(op, N), {
    { "mproc.Dict", set_get(mproc.Dict(), get) },
    { "Lua table (not shared)", set_get({}, get) },
    { "Python Manager().dict()", common.external(("python3 bench/dict_manager.py %s %d")
      :format(get and "get" or "set", NPY)) },
  })
end

-- Four processes, NPROC each; us per operation over all of them.
local function four(body)
  local ps = {}
  local t0 = mproc.monotonic()
  for w = 1, 4 do ps[w] = mproc.Process(body, { w }):start() end
  for _, p in ipairs(ps) do assert(p:join() == 0) end
  return (mproc.monotonic() - t0) / (4 * NPROC) * 1e6
end

local d = mproc.Dict { n = 0 }
local function plus1(n) return n + 1 end
local incr = four(function() for _ = 1, NPROC do d:update_key("n", plus1) end end)
assert(d.n == 4 * NPROC, "lost increments: " .. d.n)
report(("4 processes x %d increments of one key (count checked)"):format(NPROC), {
  { "mproc d:update_key(k, f)", incr },
  { "Python with lock: d[k] += 1", common.external("python3 bench/dict_manager.py incr " .. NPROC) },
})

local l = mproc.List()
local append = four(function(w) for i = 1, NPROC do l:append(w * 1000000 + i) end end)
local seen, n = {}, 0
for _, v in ipairs(l:totable()) do assert(not seen[v], "twice: " .. v); seen[v], n = true, n + 1 end
assert(n == 4 * NPROC, "lost appends")
report(("List append, 4 processes x %d (every item once, checked)"):format(NPROC), {
  { "mproc l:append(v)", append },
  { "Python Manager().list()", common.external("python3 bench/dict_manager.py append " .. NPROC) },
})

-- Shared memory this process maps (RssShmem), in MiB.
local function shmem_mib()
  local f = assert(io.open("/proc/self/status"))
  local s = f:read("a")
  f:close()
  return tonumber(s:match("RssShmem:%s*(%d+)")) / 1024
end

local big = mproc.Dict()
local before = shmem_mib()
for i = 1, NMEM do big[i] = "v" .. i end
local full, file_full = shmem_mib() - before, core.store_sizes(big) / 2 ^ 20
big:clear()
local cleared, file_cleared = shmem_mib() - before, core.store_sizes(big) / 2 ^ 20
local pyp = assert(io.popen("python3 bench/dict_manager.py memory " .. NMEM))
local pyfull, py = pyp:read("n", "n")
pyp:close()
print(("\nMemory of a Dict of %d entries, then after clear() (MiB)"):format(NMEM))
print(("  %-42s %8.1f -> %6.1f"):format("mproc.Dict, shared memory mapped (RssShmem)", full, cleared))
print(("  %-42s %8.1f -> %6.1f"):format("mproc.Dict, its shared file's data", file_full, file_cleared))
print(("  %-42s %8.1f -> %6.1f"):format("Python Manager().dict(), server VmRSS", pyfull, py))
