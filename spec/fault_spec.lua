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
  local WORKERS, KILLS, STALL = 3, %d, 1.0
  local step, q
  %s
  local count = mproc.Array("i", WORKERS + KILLS, false)   -- a slot per worker
  local function worker(slot)
    local p = mproc.Process(function()
      while true do step(); count[slot] = count[slot] + 1 end
    end)
    p.daemon = true
    return p:start()
  end
  -- whether every live worker's counter moves within STALL seconds
  local function all_progress(slots)
    local before = {}
    for i, s in ipairs(slots) do before[i] = count[s] end
    local deadline = mproc.monotonic() + STALL
    repeat
      local moved = true
      for i, s in ipairs(slots) do moved = moved and count[s] ~= before[i] end
      if moved then return true end
      mproc.sleep(0.0005)
    until mproc.monotonic() > deadline
    return false
  end
  local ps, slots, stalls = {}, {}, 0
  for i = 1, WORKERS do ps[i], slots[i] = worker(i), i end
  for k = 1, KILLS do
    mproc.sleep(math.random() * 0.003)
    local v = math.random(WORKERS)
    ps[v]:kill()
    assert(ps[v]:join(10) == -9)
    slots[v] = WORKERS + k
    ps[v] = worker(slots[v])
    if not all_progress(slots) then stalls = stalls + 1 end
  end
  for _, p in ipairs(ps) do p:kill(); p:join(10) end
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
      local out = support.run_lua(TRIALS:format(KILLS, make), { env = "timeout 300" })
      assert.are.equal("stalls 0\twhole true\n", out)
    end)
  end
end)
