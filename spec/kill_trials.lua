-- The harness of the fault specs (fault_spec, dict_fault_spec), run in a
-- small interpreter of its own: WORKERS processes loop on step(slot, i)
-- while one at a time is SIGKILLed at a random instant and replaced.
local mproc = require "mproc"

local M = {}

-- A survivor that has not moved for STALL seconds after a kill is wedged.
-- Survivors normally move within milliseconds (a wake-up lost with a
-- killed waiter costs one 50 ms slice); the bound is that long so that a
-- 2-core machine running other suites beside this one (CI, parallel
-- lanes) does not read a starved process as a wedged one: a wedge is
-- forever.
local WORKERS, STALL = 3, 5.0

-- Kills `kills` workers, and more while more() says so (at most max_kills
-- in all). Returns the number of kills after which some survivor's counter
-- did not move within STALL seconds, the counters (slot -> steps that
-- returned), and the number of kills made.
function M.run(step, kills, more, max_kills)
  max_kills = max_kills or kills
  local count = mproc.Array("q", WORKERS + max_kills, false)   -- a slot per worker
  local function worker(slot)
    local p = mproc.Process(function()
      local i = 0
      while true do i = i + 1; step(slot, i); count[slot] = i end
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
  local ps, slots, stalls, k = {}, {}, 0, 0
  for i = 1, WORKERS do ps[i], slots[i] = worker(i), i end
  while k < kills or (k < max_kills and more and more()) do
    k = k + 1
    mproc.sleep(math.random() * 0.003)
    local v = math.random(WORKERS)
    ps[v]:kill()
    assert(ps[v]:join(10) == -9)
    slots[v] = WORKERS + k
    ps[v] = worker(slots[v])
    if not all_progress(slots) then stalls = stalls + 1 end
  end
  for _, p in ipairs(ps) do p:kill(); p:join(10) end
  local done = {}
  for s = 1, WORKERS + k do done[s] = count[s] end
  return stalls, done, k
end

return M
