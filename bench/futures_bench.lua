-- mproc.futures: submit+result round trips, and as_completed over many
-- futures, beside Python's concurrent.futures.ProcessPoolExecutor(2)
-- (fork start) and, as the floor, mproc.Pool's apply_async+get on which
-- the executor is built.
local mproc = require "mproc"
local futures = require "mproc.futures"
local common = require "bench.common"

local N_SUBMIT = tonumber(os.getenv("N_SUBMIT")) or 20000
local N_COMPLETED = tonumber(os.getenv("N_COMPLETED")) or 10000

local function identity(x) return x end

local ex <close> = futures.ProcessPoolExecutor(2)
ex:submit(identity, 0):result()
local pool <close> = mproc.Pool(2)
pool:apply(identity, {0})

local submit = common.time_per_op(function(n)
  for i = 1, n do ex:submit(identity, i):result() end
end, N_SUBMIT)
common.report("ProcessPoolExecutor(2) submit+result of identity, " .. N_SUBMIT .. " times", "us/op", {
  { "mproc.futures", submit },
  { "Python ProcessPoolExecutor", common.external("python3 bench/futures_submit.py " .. N_SUBMIT) },
  { "floor: mproc Pool apply_async+get", common.time_per_op(function(n)
      for i = 1, n do pool:apply_async(identity, {i}):get() end
    end, N_SUBMIT) },
})

local completed = common.time_per_op(function(n)
  local fs = {}
  for i = 1, n do fs[i] = ex:submit(identity, i) end
  local total = 0
  for f in futures.as_completed(fs) do total = total + f:result() end
  assert(total == n * (n + 1) // 2)
end, N_COMPLETED)
common.report("ProcessPoolExecutor(2) as_completed over " .. N_COMPLETED .. " futures of identity (submit included)",
  "us/op", {
  { "mproc.futures", completed },
  { "Python ProcessPoolExecutor", common.external("python3 bench/futures_as_completed.py " .. N_COMPLETED) },
  { "floor: mproc Pool apply_async, then get each", common.time_per_op(function(n)
      local rs = {}
      for i = 1, n do rs[i] = pool:apply_async(identity, {i}) end
      for i = 1, n do rs[i]:get() end
    end, N_COMPLETED) },
})
