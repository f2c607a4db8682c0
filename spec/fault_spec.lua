-- Fault injection: processes share a lock (or a queue) in a tight loop
-- while others are SIGKILLed at random instants, holding it or waiting
-- for it. Nothing may wedge: after each kill every survivor goes on within
-- a second, and what is shared stays usable and whole. Each run is a
-- small interpreter of its own, where fork is cheap. MPROC_SOAK=n runs n
-- times the kills.
local support = require "support"

local KILLS = 100 * support.SOAK

-- name -> code making `step` (one worker's use of the object) and maybe
-- `q` (a queue to check whole at the end) or `whole` (a check of the
-- object once every worker is gone)
local kinds = {
  Lock = "local l = mproc.Lock(); step = function() l:acquire(); l:release() end",
  RLock = [[local l = mproc.RLock()
    step = function() l:acquire(); l:acquire(); l:release(); l:release() end]],
  ["owned Semaphore"] = [[local s = mproc.Semaphore(1, { owned = true })
    step = function() s:acquire(); s:release() end]],
  -- two units, a holder taking a second one now and then: the units of
  -- every killed holder come back, and no more (it is bounded)
  ["owned BoundedSemaphore(2), nested"] = [[local s = mproc.BoundedSemaphore(2, { owned = true })
    step = function(_, i)
      s:acquire()
      if i % 3 == 0 and s:acquire(false) then s:release() end
      s:release()
    end
    whole = function()
      local a, b, c = s:acquire(false), s:acquire(false), s:acquire(false)
      s:release(); s:release()
      return a and b and not c and not pcall(s.release, s) and s:get_value() == 2
    end]],
  ["Value's lock"] = [[local v = mproc.Value("i", 0)
    step = function() local l = v:get_lock(); l:acquire(); v.value = v.value + 1; l:release() end]],
  ["Condition's lock"] = [[local c = mproc.Condition()
    step = function() c:acquire(); c:notify(); c:release() end]],
  -- every worker bumps a counter, notifies (one or all), then waits until
  -- another has bumped it: killed while it waits, notified or not, while
  -- it takes the lock back, or holding it
  ["Condition wait and notify"] = [[local c = mproc.Condition()
    local n = mproc.Value("q", 0, false)
    step = function(_, i)
      c:acquire()
      n.value = n.value + 1
      local mine = n.value
      if i % 2 == 0 then c:notify() else c:notify_all() end
      c:wait_for(function() return n.value ~= mine end)
      c:release()
    end
    whole = function()
      c:acquire(); c:notify_all()
      local ok = c:wait(0.01) == false and tostring(c) == "mproc.Condition (0 waiting)"
      c:release()
      return ok
    end]],
  ["Event set, wait and clear"] = [[local e = mproc.Event()
    step = function() e:set(); e:wait(); e:clear() end
    whole = function() e:set(); return e:wait(0) and e:is_set() end]],
  -- three parties, three workers: a killed party breaks the round (never
  -- wedges it); whoever sees it broken resets it
  ["Barrier wait and reset"] = [[local b = mproc.Barrier(3)
    step = function()
      if not b:wait() and b.broken then b:reset() end
    end
    whole = function()
      local _, why = b:wait(0.05)   -- dead parties: broken; alone: a timeout, which breaks it
      b:reset()
      return (why == "broken" or why == "timeout") and not b.broken and b.n_waiting == 0
    end]],
  Queue = [[q = mproc.Queue(); local item = string.rep("x", 64 * 1024)
    step = function() q:put(item); q:get(false) end]],
  -- bounded: workers wait on full and on empty
  ["Queue(1): put and get waiting on full and empty"] = [[q = mproc.Queue(1)
    step = function(slot, i) q:put(slot * 1000000 + i, true, 0.2); q:get(true, 0.2) end]],
  SimpleQueue = [[local s = mproc.SimpleQueue()
    step = function(_, i) s:put(i); s:get() end
    whole = function()
      while not s:empty() do s:get() end
      s:put("end")
      return s:get() == "end" and s:empty()
    end]],
  -- a kill between get and task_done leaves its task unfinished for good
  -- (as it would in Python); the count stays whole otherwise
  ["JoinableQueue(2): put, get, task_done"] = [[local j = mproc.JoinableQueue(2)
    step = function(_, i) j:put(i, true, 0.2); if j:get(true, 0.2) then j:task_done() end end
    whole = function()
      while j:get(false) do j:task_done() end
      j:put(1)
      local got = j:get(false)
      j:task_done()
      return got == 1 and j:qsize() == 0
    end]],
}
local TRIALS = [[
  local mproc = require "mproc"
  local step, q, whole
  %s
  local stalls = require("kill_trials").run(step, %d)
  whole = whole == nil or whole()
  if q then   -- what is in it can be taken, and it takes more
    while q:get(false) do end
    whole = whole and q:put(1) and q:get(true, 5) == 1
  end
  print("stalls " .. stalls, "whole " .. tostring(whole))
]]

describe("a shared object under SIGKILL at random instants", function()
  for name, make in pairs(kinds) do
    it("keeps " .. name .. " going: " .. KILLS .. " kills of holders and waiters", function()
      local out = support.run_lua(TRIALS:format(make, KILLS), { env = "timeout 300" })
      assert.are.equal("stalls 0\twhole true\n", out)
    end)
  end
end)
