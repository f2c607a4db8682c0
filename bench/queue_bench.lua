-- Queue: a child process puts, the parent gets; mproc beside Python's
-- multiprocessing.Queue and a C floor on a pipe, in one run.
local mproc = require "mproc"
local common = require "bench.common"

local N = tonumber(os.getenv("N")) or 100000
local NBIG = tonumber(os.getenv("NBIG")) or 500
local NTAB = tonumber(os.getenv("NTAB")) or 20000
local MiB = 1024 * 1024

local function mixed()
  local t = {}
  for i = 0, 99 do
    local k = i % 5
    t[i + 1] = k == 0 and i or k == 1 and i + 0.5 or k == 2 and ("s" .. i)
      or k == 3 and (i % 2 == 0) or false
  end
  return t
end

-- Seconds for a child to put n items (made by item(i)) and the parent to
-- get them; best of three.
local function transfer(n, item, maxsize)
  local best = math.huge
  for _ = 1, 3 do
    local q = mproc.Queue(maxsize)
    local t0 = mproc.monotonic()
    local p = mproc.Process(function() for i = 1, n do q:put(item(i)) end end):start()
    for _ = 1, n do q:get() end
    best = math.min(best, mproc.monotonic() - t0)
    p:join()
    q:close()
  end
  return best
end

local small = transfer(N, function(i) return i end) / N * 1e6
common.report(("Queue, %d integers from a child"):format(N), "us/op", {
  { "mproc.Queue", small },
  { "C 8-byte write+read on a pipe", common.external("build/bench/queue_floor small " .. N) },
  { "Python multiprocessing.Queue", common.external("python3 bench/queue_mp.py small " .. N) },
})

local bigs = string.rep("x", MiB)
local big = NBIG / transfer(NBIG, function() return bigs end, 16)
common.report(("Queue(16), %d strings of 1 MiB from a child"):format(NBIG), "MiB/s", {
  { "mproc.Queue", big },
  { "C 1 MiB writes on a pipe", common.external("build/bench/queue_floor big " .. NBIG) },
  { "Python multiprocessing.Queue", common.external("python3 bench/queue_mp.py big " .. NBIG) },
})

local bigu = NBIG / transfer(NBIG, function() return bigs end)
common.report(("Queue, %d strings of 1 MiB from a child, unbounded"):format(NBIG), "MiB/s", {
  { "mproc.Queue", bigu },
  { "C 1 MiB writes on a pipe", common.external("build/bench/queue_floor big " .. NBIG) },
  { "Python multiprocessing.Queue", common.external("python3 bench/queue_mp.py bigu " .. NBIG) },
})

local t = mixed()
local tab = transfer(NTAB, function() return t end) / NTAB * 1e6
common.report(("Queue, %d tables of 100 mixed values from a child"):format(NTAB), "us/op", {
  { "mproc.Queue", tab },
  { "Python multiprocessing.Queue", common.external("python3 bench/queue_mp.py table " .. NTAB) },
})
