-- Fault injection: processes share a lock (or a queue) in a tight loop
-- while others are SIGKILLed at random instants, holding it or waiting
-- for it. Nothing may wedge: after each kill every survivor goes on within
-- a second, and what is shared stays usable and whole. Each run is a
-- small interpreter of its own, where fork is cheap.
local support = require "support"

local KILLS = 100

-- name -> code making `step` (one worker's use of the object) and maybe
-- `q` (a queue to check whole at the end)
local kinds = {
  Lock = "local l = mproc.Lock(); step = function() l:acquire(); l:release() end",
  RLock = [[local l = mproc.RLock()
    step = function() l:acquire(); l:acquire(); l:release(); l:release() end]],
  ["owned Semaphore"] = [[local s = mproc.Semaphore(1, { owned = true })
    step = function() s:acquire(); s:release() end]],
  ["Value's lock"] = [[local v = mproc.Value("i", 0)
    step = function() local l = v:get_lock(); l:acquire(); v.value = v.value + 1; l:release() end]],
  ["Condition's lock"] = [[local c = mproc.Condition()
    step = function() c:acquire(); c:notify(); c:release() end]],
  Queue = [[q = mproc.Queue(); local item = string.rep("x", 64 * 1024)
    step = function() q:put(item); q:get(false) end]],
}

local TRIALS = [[
  local mproc = require "mproc"
  local step, q
  %s
  local stalls = require("kill_trials").run(step, %d)
  local whole = true
  if q then   -- what is in it can be taken, and it takes more
    while q:get(false) do end
    whole = q:put(1) and q:get(true, 5) == 1
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
