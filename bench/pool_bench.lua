-- Pool: apply_async+get round trips, map throughput and imap memory, beside
-- Python's multiprocessing.Pool(2) (fork start) and a C floor
-- (bench/c/pool_floor.c, built by bench/run), in one run.
local mproc = require "mproc"
local common = require "bench.common"

local N_APPLY = tonumber(os.getenv("N_APPLY")) or 20000
local N_MAP = tonumber(os.getenv("N_MAP")) or 200000
local N_IMAP = tonumber(os.getenv("N_IMAP")) or 10000000

local function identity(x) return x end

local function peak_rss_mib()
  local f = assert(io.open("/proc/self/status"))
  local s = f:read("a")
  f:close()
  return tonumber(s:match("VmHWM:%s*(%d+)")) / 1024
end

local pool = mproc.Pool(2)
pool:apply(identity, {0})

local apply = common.time_per_op(function(n)
  for i = 1, n do pool:apply_async(identity, {i}):get() end
end, N_APPLY)
common.report("Pool(2) apply_async+get of identity, " .. N_APPLY .. " times", "us/op", {
  { "mproc", apply },
  { "Python multiprocessing.Pool", common.external("python3 bench/pool_apply.py " .. N_APPLY) },
  { "C futex wake + pipe round trip, no Lua", common.external("build/bench/pool_floor apply " .. N_APPLY .. " one") },
})

local list = {}
for i = 1, N_MAP do list[i] = i end
local best = 0
for _ = 1, 3 do
  local t0 = mproc.monotonic()
  local r = pool:map(identity, list)
  assert(r.n == N_MAP and r[N_MAP] == N_MAP)
  best = math.max(best, N_MAP / (mproc.monotonic() - t0))
end
common.report("Pool(2) map of identity over " .. N_MAP .. " integers", "ops/s", {
  { "mproc", best },
  { "Python multiprocessing.Pool", common.external("python3 bench/pool_map.py " .. N_MAP) },
  { "C+Lua API moving items only, no codec", common.external("build/bench/pool_floor map " .. N_MAP) },
})
list = nil -- luacheck: ignore 311
collectgarbage()

-- imap over a lazy source: peak RSS after a tenth of the items, then at the end
local k, total, at_tenth = 0, 0, nil
local function source()
  if k == N_IMAP then return nil end
  k = k + 1
  return k
end
local t0 = mproc.monotonic()
for _, v in pool:imap(identity, source, 1000) do
  total = total + 1
  if total == N_IMAP // 10 then at_tenth = peak_rss_mib() end
  assert(v == total)
end
local secs = mproc.monotonic() - t0
pool:close()
pool:join()
print(("\nPool(2) imap of identity over %d items from a lazy iterator, chunksize 1000 (%.1f s)")
  :format(N_IMAP, secs))
local mine_end = peak_rss_mib()
print(("  mproc peak RSS after %d items: %.1f MiB; after %d: %.1f MiB")
  :format(N_IMAP // 10, at_tenth, N_IMAP, mine_end))
local py_tenth = common.external("python3 bench/pool_imap.py " .. N_IMAP // 10)
local py_end = common.external("python3 bench/pool_imap.py " .. N_IMAP)
print(("  Python multiprocessing.Pool peak RSS after %d: %.1f MiB (after %d: %.1f MiB)"):format(
  N_IMAP // 10, py_tenth, N_IMAP, py_end))
common.record(("Pool(2) imap over %d items from a lazy iterator, peak RSS"):format(N_IMAP), "MiB", {
  { "mproc", mine_end },
  { "Python multiprocessing.Pool", py_end },
})
