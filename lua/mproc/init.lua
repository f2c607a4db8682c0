-- mproc: Python's multiprocessing and subprocess for Lua 5.4.
-- This file gathers the public API; each concern lives in its own module
-- and is loaded on first use.
local core = require "mproc.core"
local util = require "mproc.util"
local process = require "mproc.process"

local M = { _VERSION = "mproc scm" }

M.Process = process.Process
M.current_process = process.current_process
M.parent_process = process.parent_process
M.active_children = process.active_children

M.getpid = core.getpid
M.getppid = core.getppid
M.cpu_count = core.cpu_count
M.process_cpu_count = core.process_cpu_count -- the CPUs this process may run on
M.sleep = core.sleep
M.time = core.time
M.monotonic = core.monotonic
-- mproc.environ() -> a new table of the environment (Python's os.environ,
-- copied): to change and pass as a subprocess's env.
M.environ = core.environ

-- mproc.signals: signal numbers by name, as this platform defines them
-- (Python's signal.SIGTERM ...), for send_signal; a copy of the core's.
M.signals = {}
for name, n in pairs(core.signals) do M.signals[name] = n end

-- mproc.dumps(v) -> string; mproc.loads(s) -> v | nil, message: the codec
-- Queue and Pipe use (src/codec.c).
M.dumps = core.dumps
M.loads = core.loads

-- mproc.fileno(file) -> the descriptor under a Lua file (a Popen's
-- stdout, say), for an event loop to watch; the file still owns it.
M.fileno = core.fileno

-- mproc.read_nowait(file, [max = 65536]) -> the bytes that can be read now
-- ("" when none yet), nil at end of file, or nil, message, errno: for a
-- loop that watches mproc.fileno(file). It reads the descriptor, not the
-- file's buffer: do not mix it with file:read on the same file.
M.read_nowait = core.read_nowait

-- The descriptor that tells when obj is ready: a number, a Lua file,
-- anything with a sentinel (Process, Popen) or a fileno() method
-- (Connection). false: the object has ended already (a reaped Popen's
-- sentinel is false), so it is ready without a descriptor.
local function descriptor(obj, i)
  local t = type(obj)
  if math.type(obj) == "integer" then return obj end
  if t == "userdata" and io.type(obj) == "file" then return core.fileno(obj) end
  if t == "table" or t == "userdata" then
    local ok, fd = pcall(function()
      if obj.sentinel ~= nil then return obj.sentinel end
      if util.is_callable(obj.fileno) then return obj:fileno() end
    end)
    if ok and (fd == false or math.type(fd) == "integer") and fd ~= -1 then return fd end
    -- none on this system (a Pool result or a Future without epoll, a
    -- Popen without pidfd): asked every POLL_PERIOD instead
    if util.is_callable(obj.ready) or util.is_callable(obj.done) or util.is_callable(obj.poll) then
      return nil
    end
  end
  util.argerror("wait", 1, ("object #%d has no descriptor to wait on (%s)"):format(i, t))
end

local POLL_PERIOD = 0.01

-- Whether an object that has no descriptor is ready.
local function polled_ready(obj)
  if util.is_callable(obj.ready) then return obj:ready() and true or false end
  if util.is_callable(obj.done) then return obj:done() and true or false end
  return obj:poll() ~= nil
end

-- An object's own word on whether it is ready, or nil when its descriptor
-- alone tells: a Pool result's or a Future's descriptor is the pool's, and
-- a Queue's may fire for an item another process took, so those objects
-- say themselves (ready(), a Future's done(), not empty()); a Connection
-- says only when it holds a message its descriptor no longer shows.
local function own_ready(obj)
  if type(obj) ~= "table" and type(obj) ~= "userdata" then return nil end
  local ok, v = pcall(function()
    if util.is_callable(obj.ready) then return obj:ready() and true or false end
    if util.is_callable(obj.done) then return obj:done() and true or false end
    if util.is_callable(obj.empty) then return not obj:empty() end
    -- a Connection holding a message a recv cut short by Ctrl-C kept
    if util.is_callable(obj._held) and obj:_held() then return true end
  end)
  if ok then return v end
end

-- mproc.wait(objects, [timeout]) -> the ready ones among objects, in order;
-- an empty list when the timeout passes first.
function M.wait(objects, timeout)
  util.check_type("wait", 1, objects, "table")
  timeout = util.check_timeout("wait", 2, timeout)
  if rawget(objects, 1) == nil and next(objects) ~= nil then
    -- a set, {[conn] = true, ...} (Python's wait takes any iterable): its
    -- keys, in pairs order
    local list = {}
    for obj in pairs(objects) do list[#list + 1] = obj end
    objects = list
  end
  local fds, at, ended, polled = {}, {}, {}, {}
  for i, obj in ipairs(objects) do
    local fd = descriptor(obj, i)
    if fd then fds[#fds + 1], at[#fds + 1] = fd, i
    elseif fd == false then ended[i] = true
    else polled[i] = true end
  end
  local deadline = util.deadline(timeout)
  while true do
    local own, any = {}, next(ended) ~= nil
    for i, obj in ipairs(objects) do
      if polled[i] then own[i] = polled_ready(obj) else own[i] = own_ready(obj) end
      any = any or own[i] == true
    end
    local left = util.left(deadline)
    local nap = left
    if next(polled) then nap = math.min(left or POLL_PERIOD, POLL_PERIOD) end
    local ready, err, code = core.poll(fds, any and 0 or nap)
    if not ready then return nil, err, code end
    local fired = {}
    for _, k in ipairs(ready) do fired[at[k]] = true end
    local out = {}
    for i, obj in ipairs(objects) do
      local r = ended[i] or own[i]
      if own[i] == nil then r = ended[i] or fired[i]
      elseif own[i] == false and fired[i] then r = own_ready(obj) end
      if r then out[#out + 1] = obj end
    end
    if #out > 0 or left == 0 or (#ready == 0 and not next(polled)) then return out end
  end
end

-- Parts loaded on first use: name -> { module, field } (field nil: the module).
local lazy = {
  subprocess = { "mproc.subprocess" },
  Lock = { "mproc.sync", "Lock" },
  RLock = { "mproc.sync", "RLock" },
  Semaphore = { "mproc.sync", "Semaphore" },
  BoundedSemaphore = { "mproc.sync", "BoundedSemaphore" },
  Event = { "mproc.sync", "Event" },
  Condition = { "mproc.sync", "Condition" },
  Barrier = { "mproc.sync", "Barrier" },
  Value = { "mproc.sharedctypes", "Value" },
  Array = { "mproc.sharedctypes", "Array" },
  Pool = { "mproc.pool", "Pool" },
  futures = { "mproc.futures" },
  Queue = { "mproc.queue", "Queue" },
  SimpleQueue = { "mproc.queue", "SimpleQueue" },
  JoinableQueue = { "mproc.queue", "JoinableQueue" },
  Pipe = { "mproc.connection", "Pipe" },
  Dict = { "mproc.managers", "Dict" },
  List = { "mproc.managers", "List" },
  Namespace = { "mproc.managers", "Namespace" },
  Manager = { "mproc.managers", "Manager" },
}

return setmetatable(M, {
  __index = function(t, k)
    local where = lazy[k]
    if not where then return nil end
    local mod = require(where[1])
    local v = where[2] and mod[where[2]] or mod
    rawset(t, k, v)
    return v
  end,
})
