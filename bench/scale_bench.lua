-- Scale: throughput as workers, producers and consumers are added, beside
-- Python doing the same work (bench/scale.py), so that a collapse under
-- contention (one lock per Queue, compare-and-swap on the Pool's board)
-- shows as a curve even on a machine with few cores.
local mproc = require "mproc"
local common = require "bench.common"

local N_MAP = tonumber(os.getenv("N_SCALE_MAP")) or 200000
local N_Q = tonumber(os.getenv("N_SCALE_Q")) or 96000

local function identity(x) return x end

local list = {}
for i = 1, N_MAP do list[i] = i end

local function pool_rate(workers)
  local pool = mproc.Pool(workers)
  pool:map(identity, { 1, 2, 3 })
  local best = 0
  for _ = 1, 3 do
    local t0 = mproc.monotonic()
    local r = pool:map(identity, list)
    assert(r.n == N_MAP)
    best = math.max(best, N_MAP / (mproc.monotonic() - t0))
  end
  pool:close()
  pool:join()
  return best
end

-- n producers put N_Q/n integers each into one Queue; n consumers get as
-- many each; items/s from the first start to the last join, best of three.
local function queue_rate(n)
  local best = 0
  for _ = 1, 3 do
    local q, per, procs = mproc.Queue(), N_Q // n, {}
    local t0 = mproc.monotonic()
    for _ = 1, n do
      procs[#procs + 1] = mproc.Process(function() for k = 1, per do q:put(k) end end):start()
      procs[#procs + 1] = mproc.Process(function() for _ = 1, per do q:get() end end):start()
    end
    for _, p in ipairs(procs) do p:join() end
    best = math.max(best, per * n / (mproc.monotonic() - t0))
    q:close()
  end
  return best
end

for _, w in ipairs { 1, 2, 4, 8 } do
  common.report(("Scale: Pool(%d) map of identity over %d integers"):format(w, N_MAP), "ops/s", {
    { "mproc", pool_rate(w) },
    { "Python multiprocessing.Pool", common.external(("python3 bench/scale.py pool %d %d"):format(w, N_MAP)) },
  })
end

for _, n in ipairs { 1, 4, 16 } do
  common.report(("Scale: Queue, %d producers and %d consumers, %d integers"):format(n, n, N_Q), "ops/s", {
    { "mproc", queue_rate(n) },
    { "Python multiprocessing.Queue", common.external(("python3 bench/scale.py queue %d %d"):format(n, N_Q)) },
  })
end
