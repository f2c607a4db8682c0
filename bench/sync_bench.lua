-- Lock: uncontended acquire+release pairs and a contended 2-process counter;
-- mproc, Python's multiprocessing.Lock, and a C floor (a robust shared
-- pthread mutex, as mproc's Lock is), in one run.
local mproc = require "mproc"
local common = require "bench.common"

local N = tonumber(os.getenv("N")) or 1000000
local NC = tonumber(os.getenv("NC")) or 200000
local NPY = math.max(N // 5, 1)

local lock = mproc.Lock()
local uncontended = common.time_per_op(function(n)
  for _ = 1, n do
    lock:acquire()
    lock:release()
  end
end, N)

common.report("Lock acquire+release, uncontended, " .. N .. " pairs", "us/op", {
  { "mproc", uncontended },
  { "C robust pthread_mutex", common.external("build/bench/lock_floor uncontended " .. N) },
  { "C, the same called from Lua", common.external("build/bench/lock_floor lua " .. N) },
  { "Python multiprocessing", common.external("python3 bench/sync_lock.py uncontended " .. NPY) },
})

local function counter(n)
  local l, v = mproc.Lock(), mproc.Value("q", 0, false)
  local function count()
    for _ = 1, n do
      l:acquire()
      v.value = v.value + 1
      l:release()
    end
  end
  local p = mproc.Process(count):start()
  count()
  p:join()
  assert(v.value == 2 * n, "lost increments")
end

local contended = common.time_per_op(function(n) counter(n) end, NC) / 2

common.report("Lock counter, 2 processes x " .. NC .. " increments", "us/increment", {
  { "mproc", contended },
  { "C robust pthread_mutex", common.external("build/bench/lock_floor contended " .. NC) },
  { "Python multiprocessing", common.external("python3 bench/sync_lock.py contended " .. NC // 4) },
})
