-- mproc.sync: Lock, RLock, Semaphore, BoundedSemaphore, Event, Condition
-- and Barrier, as in Python's multiprocessing, in shared memory made
-- before fork (src/sync.c). This layer adds argument defaults, the guard
-- idiom, Condition.wait_for and the Barrier's action.
local core = require "mproc.core"
local util = require "mproc.util"

local M = {}

-- The guard idiom:
--   do
--     local _ <close> = lock:guard()
--     ... -- released when the block ends, by error or return too
--   end
-- guard([timeout]) acquires, then returns a guard whose __close releases
-- (and "owner died" as a second value when the previous holder died), or
-- nil, "timeout". One guard per object is made and reused.
local Guard = { __name = "mproc.Guard" }
Guard.__index = Guard
function Guard:__close() self.obj:release() end
function Guard:__tostring() return "mproc.Guard (" .. tostring(self.obj) .. ")" end

local guards = setmetatable({}, { __mode = "k" })

local function guard(self, timeout)
  timeout = util.check_timeout("guard", 1, timeout)
  local ok, died = self:acquire(true, timeout)
  if not ok then return nil, "timeout" end
  local g = guards[self]
  if not g then
    g = setmetatable({ obj = self }, Guard)
    guards[self] = g
  end
  return g, died
end

for _, name in ipairs { "mproc.Lock", "mproc.RLock", "mproc.Semaphore", "mproc.Condition" } do
  core.interpose(name, "guard", function(self, timeout)
    util.check_self("guard", self, name)
    return guard(self, timeout)
  end)
end

-- Condition --------------------------------------------------------------

local COND = "mproc.Condition"
local cond = {}

function cond:acquire(block, timeout)
  util.check_self("acquire", self, COND)
  return self:get_lock():acquire(block, timeout)
end

function cond:release()
  util.check_self("release", self, COND)
  return self:get_lock():release()
end

-- wait_for(predicate, [timeout]) -> the predicate's last result
function cond:wait_for(predicate, timeout)
  util.check_self("wait_for", self, COND)
  util.check_callable("wait_for", 1, predicate)
  timeout = util.check_timeout("wait_for", 2, timeout)
  local deadline = util.deadline(timeout)
  local result = predicate()
  while not result do
    local left = util.left(deadline)
    if left == 0 then break end
    self:wait(left)
    result = predicate()
  end
  return result
end

for name, f in pairs(cond) do core.interpose(COND, name, f) end

-- Barrier ----------------------------------------------------------------

local BARRIER = "mproc.Barrier"

-- wait([timeout]) -> the arrival index (0 .. parties-1), or nil, "broken"
-- (aborted, reset, a party timed out or died), or nil, "timeout" (which
-- breaks the barrier for the others). The last party runs the action
-- first; an error in it breaks the barrier and is raised again.
local function barrier_wait(self, timeout)
  util.check_self("wait", self, BARRIER)
  timeout = util.check_timeout("wait", 1, timeout)
  local index, last = core.barrier_arrive(self, timeout)
  if index == nil then return nil, last end
  if last then
    local action, ok, err = core.barrier_action(self), true, nil
    if action then ok, err = pcall(action) end
    local released = core.barrier_release(self, ok)
    if not ok then error(err, 0) end
    if not released then return nil, "broken" end
  end
  return index
end
core.interpose(BARRIER, "wait", barrier_wait)

-- Constructors -----------------------------------------------------------

function M.Lock() return core.Lock() end
function M.RLock() return core.RLock() end

local SEM_OPTIONS = { owned = true }
-- Limits from sync.c: checked here, once, at the user's line.
local MAX_VALUE = core.SEM_MAX_VALUE             -- 2^31-1
local MAX_HOLDERS = core.SEM_MAX_HOLDERS         -- processes holding units of an owned Semaphore at once
local MAX_PARTIES = core.BARRIER_MAX_PARTIES

local function semaphore(fname, value, opts, bounded)
  if value == nil then value = 1 end
  if math.type(value) ~= "integer" or value < 0 or value > MAX_VALUE then
    util.argerror(fname, 1, "value must be an integer in 0..2^31-1, got " .. tostring(value))
  end
  util.check_type(fname, 2, opts, "table", true)
  if opts then util.check_options(fname, 2, opts, SEM_OPTIONS) end
  -- An owned Semaphore's value never exceeds its initial one (only holders
  -- release), so that many holders at once is all there can be.
  local owned = opts and opts.owned or false
  return core.Semaphore(value, bounded and value or -1, owned,
    owned and math.max(1, math.min(value, MAX_HOLDERS)) or nil)
end

-- Semaphore([value = 1], [{owned = true}])
function M.Semaphore(value, opts) return semaphore("Semaphore", value, opts, false) end
function M.BoundedSemaphore(value, opts) return semaphore("BoundedSemaphore", value, opts, true) end

function M.Event() return core.Event() end

-- Condition([lock]): lock is an mproc.Lock or mproc.RLock (default: a new RLock)
function M.Condition(lock)
  if lock == nil then lock = core.RLock() end
  util.check_lock("Condition", 1, lock, "mproc.Lock or mproc.RLock expected, got ")
  return core.Condition(lock)
end

-- Barrier(parties, [action], [timeout])
function M.Barrier(parties, action, timeout)
  if math.type(parties) ~= "integer" or parties < 1 or parties > MAX_PARTIES then
    util.argerror("Barrier", 1, ("parties must be an integer in 1..%d, got %s"):format(MAX_PARTIES, tostring(parties)))
  end
  util.check_callable("Barrier", 2, action, true)
  timeout = util.check_timeout("Barrier", 3, timeout)
  return core.Barrier(parties, action, timeout)
end

return M
