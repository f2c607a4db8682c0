-- mproc.process: Process, current_process, parent_process, active_children.
-- Mirrors multiprocessing.Process with the fork start method: the child is
-- a copy of the parent's Lua state that runs the target and exits; it never
-- returns into the parent's script.
local core = require "mproc.core"
local util = require "mproc.util"

local M = {}

local SIGTERM, SIGKILL = core.signals.SIGTERM, core.signals.SIGKILL

local Process = { __name = "mproc.Process" }
local methods = {}

local counter = 0
local children = {}      -- handle -> Process, started and not known ended
local current            -- the Process this code runs in
local parent             -- in a child: what parent_process() returns, once asked
local parent_pid, parent_name

-- A Process whose handle reports an end leaves the children table.
local function poll(self)
  local h = self._handle
  if not h then return nil end
  local code = h:poll()
  if code then children[h] = nil end
  return code
end

function Process.__index(self, k)
  if k == "exitcode" then return poll(self) end
  if k == "pid" then return self._pid or nil end
  if k == "name" then
    -- made on first use: formatting a number costs a page write after fork
    local name = self._prefix .. self._identity
    rawset(self, "name", name)
    return name
  end
  if k == "sentinel" then
    if self._closed then util.misuse("the process is closed") end
    if not self._handle then return nil end
    -- no descriptor: the child had ended, reaped elsewhere, when started
    local fd = self._handle:fileno()
    return fd >= 0 and fd or false
  end
  return methods[k]
end

local NOARGS = { n = 0 }
local OPTIONS = { target = true, args = true, name = true, daemon = true }

-- mproc.Process{target = f, args = {...}, name = s, daemon = b}
-- mproc.Process(f, {...})
local function new(_, a, b)
  local opts, argn = a, 1
  if type(a) == "table" and getmetatable(a) == nil then
    util.check_options("Process", 1, a, OPTIONS)
    -- Process{f} would run nothing: the options table has only names
    for k in pairs(a) do
      if type(k) == "number" then
        util.argerror("Process", 1, "unnamed value in the options table; " ..
          "pass target = f, or call mproc.Process(f, args)")
      end
    end
  elseif util.is_callable(a) then
    opts, argn = { target = a, args = b }, 2
  else
    util.argerror("Process", 1, "function or options table expected, got " .. type(a))
  end
  util.check_callable("Process", 1, opts.target, true)
  util.check_type("Process", 1, opts.name, "string", true)
  util.check_type("Process", 1, opts.daemon, "boolean", true)
  util.check_type("Process", argn, opts.args, "table", true)
  counter = counter + 1
  -- every field is set here, so start() only overwrites and never grows
  -- the table after the fork (a grown table is a page the parent copies)
  return setmetatable({
    target = opts.target,
    args = opts.args or NOARGS,
    name = opts.name,
    _prefix = current._identity and (current.name .. ":") or "Process-",
    daemon = opts.daemon or false,
    _pid = false,
    _identity = counter,
    _handle = false,
    _closed = false,
  }, Process)
end
setmetatable(Process, { __call = new })

local function check_open(self, fname)
  util.check_self(fname, self, Process)
  if self._closed then util.misuse(("%s: the process is closed"):format(fname)) end
end

local function check_started(self, fname)
  check_open(self, fname)
  if self == current then util.misuse(("%s: a process cannot %s itself"):format(fname, fname)) end
  if not self._handle then util.misuse(("%s: the process was not started"):format(fname)) end
end

local error_text = util.error_text

-- The frames below the target are mproc's own: tracebacks leave them out.
local function child_traceback(e)
  local tb = debug.traceback(error_text(e), 2)
  return tb:match("^(.-)\n[^\n]*mproc[/\\]process%.lua:") or tb
end

-- Runs in the child: becomes current, runs the target, reports an error
-- with its traceback on stderr as Python does; returns the exit code.
-- It allocates as little as it can: every page a child writes is copied.
-- What every forked child of mproc does first (Process children and pool
-- workers): reseed math.random, become current_process(), remember the
-- parent, start with no children of its own.
function M.enter_child(self)
  math.randomseed(core.getpid(), math.floor(core.time() * 1e6))
  parent_pid, parent_name, parent = core.getppid(), current.name, nil
  if next(children) then children = {} end
  counter = 0
  current = self
  self._pid = core.getpid()
  self._handle = false
end

local function child_run(self)
  M.enter_child(self)
  local ok, err = xpcall(self.run, child_traceback, self)
  if ok then return 0 end
  io.stderr:write(("Process %s:\n%s\n"):format(self.name, err))
  return 1
end

-- The child's work; a table made with mproc.Process may replace it.
function methods:run()
  util.check_self("run", self, Process)
  local args = self.args
  if self.target then self.target(table.unpack(args, 1, args.n or #args)) end
end

local function cleanup()
  for _, p in pairs(children) do poll(p) end
end

-- The child of a start() left by an error (Ctrl-C: lua.c's hook fires as
-- core.fork returns, losing its result), which core.fork also left in
-- box.child: terminated and joined, as a Process's <close> scope left by an
-- error does, rather than run on unknown and be waited for at exit.
local Unclaimed = {
  __close = function(box, err)
    local h = box.child
    if err ~= nil and h then
      h:signal(SIGTERM)
      h:wait()
    end
  end,
}

-- Starts the child. Returns the Process, or nil, message, errno.
function methods:start()
  check_open(self, "start")
  if self._handle or self == current then util.misuse("start: cannot start a process twice") end
  cleanup()
  local box <close> = setmetatable({}, Unclaimed)
  local h, err, code = core.fork(self.daemon, box)
  if h == false then core.child_main(child_run, self) end
  if not h then return nil, err, code end
  self._handle = h
  self._pid = h:pid()
  children[h] = self
  box.child = nil
  return self
end

-- Waits for the child; returns its exitcode, or nil, "timeout".
function methods:join(timeout)
  check_started(self, "join")
  timeout = util.check_timeout("join", 1, timeout)
  local code, err = self._handle:wait(timeout)
  if not code then return nil, err end
  children[self._handle] = nil
  return code
end

function methods:is_alive()
  check_open(self, "is_alive")
  if self == current then return true end
  if not self._handle then return false end
  return poll(self) == nil
end

local function signal(self, fname, sig)
  check_started(self, fname)
  return self._handle:signal(sig)
end

function methods:terminate() return signal(self, "terminate", SIGTERM) end
function methods:kill() return signal(self, "kill", SIGKILL) end

-- Releases the sentinel. Raises while the child still runs, as Python does.
function methods:close()
  util.check_self("close", self, Process)
  if self._closed then return end
  if self._handle then
    if poll(self) == nil then
      util.misuse("close: the process is still running; join or terminate it first")
    end
    self._handle:close()
  end
  self._closed = true
end

-- Leaving the scope of a <close> variable: the child is joined and closed;
-- a daemonic child, or any child when the scope is left by an error, is
-- terminated first (the error is not held up waiting for it).
function Process.__close(self, err)
  if self._closed or not self._handle or self == current then return end
  if self.daemon or err ~= nil then self._handle:signal(SIGTERM) end
  self:join()
  self:close()
end

function Process.__tostring(self)
  local state
  if self._closed then state = "closed"
  elseif self == current then state = "current"
  elseif not self._handle then state = "initial"
  else
    local code = poll(self)
    state = code and ("exitcode " .. code) or "started"
  end
  local pid = self.pid and (", pid " .. self.pid) or ""
  return ("mproc.Process (%s%s, %s%s)"):format(self.name, pid, state,
    self.daemon and ", daemon" or "")
end

-- What parent_process() returns in a child: the parent, seen from below.
M.ParentProcess = { __name = "mproc.ParentProcess" }
M.ParentProcess.__index = M.ParentProcess
function M.ParentProcess:is_alive() return core.getppid() == self.pid end
function M.ParentProcess:join(timeout)
  timeout = util.check_timeout("join", 1, timeout)
  local deadline = util.deadline(timeout)
  while self:is_alive() do
    if util.left(deadline) == 0 then return nil, "timeout" end
    core.sleep(0.01)
  end
  return true
end
function M.ParentProcess.__tostring(self)
  return ("mproc.ParentProcess (%s, pid %d)"):format(self.name, self.pid)
end

current = setmetatable({ name = "MainProcess", pid = core.getpid(), daemon = false }, Process)

M.Process = Process
function M.current_process() return current end
function M.parent_process()
  if not parent and parent_pid then
    parent = setmetatable({ name = parent_name, pid = parent_pid }, M.ParentProcess)
  end
  return parent
end

-- The children that still run; the ended ones are reaped on the way.
function M.active_children()
  local list = {}
  for _, p in pairs(children) do
    if poll(p) == nil then list[#list + 1] = p end
  end
  table.sort(list, function(a, b) return a._identity < b._identity end)
  return list
end

return M
