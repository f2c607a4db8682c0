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

-- What this process knows of itself, in tables rather than upvalues (one
-- table's fields are one heap page where upvalues are as many objects,
-- spread over the heap): here, what every start writes (the Process this
-- code runs in, the counts), and here.state, what a start only reads (the
-- table of children aside). No field is ever nil (core.fork sets only
-- fields that exist, so that nothing is allocated meanwhile); parent_pid
-- and parent_name are false in the main process.
local function new_state(parent_pid, parent_name)
  return {
    -- the Processes started and not known ended, each at its _slot, false
    -- in a free slot: an array with no nil in it, where setting a slot
    -- writes nothing else (a table's empty slot set writes its header too)
    children = { false, false, false, false },
    parent = false,      -- in a child: what parent_process() returns, once asked
    parent_pid = parent_pid,
    parent_name = parent_name,
    reported = false,    -- the child's failure has been reported (child_error)
    kid = false,         -- the state its children start with (kid_state)
  }
end
local here = {
  current = false,       -- the Process this code runs in
  state = false,         -- new_state(...), below
  counter = 0,           -- the Processes made here so far
  nchildren = 0,         -- how many children (state.children)
  free = 1,              -- no free slot of state.children below this one
}

-- The child of a start() left by an error (Ctrl-C: lua.c's hook fires as
-- core.fork returns, losing its result), which core.fork also left in
-- box.child: terminated and joined, as a Process's <close> scope left by an
-- error does, rather than run on unknown and be waited for at exit. Its
-- fields are false, never nil, when empty (as here's).
local Unclaimed = {
  __close = function(box, err)
    local h = box.child
    box.child, box.current = false, false
    if err ~= nil and h then
      h:signal(SIGTERM)
      h:wait()
    end
  end,
}

-- A box holds, beside the child, the child's view of here: the Process it
-- is, its state, no children. core.fork sets them in here just before
-- forking and puts the parent's back, so the child writes nothing to
-- become itself.
local VIEW = { "current", "state", "counter", "nchildren", "free" }
local function new_box()
  return setmetatable({ child = false, here = here, view = VIEW, current = false,
    state = false, counter = 0, nchildren = 0, free = 1 }, Unclaimed)
end
-- One box for every start (a table made per start is heap written after
-- the fork, pages the parent copies while the child lives), made right
-- after here, with as many fields: both written by every start, their
-- fields, allocated one after the other in one size, most likely share a
-- page.
local start_box = new_box()
here.state = new_state(false, false)

-- The state a child of this process starts with: no children, its parent
-- this process. Made once and shared by all (the parent never changes it;
-- a child changes its own copy), so that a start writes no new state.
local function kid_state(cur, st)
  local kid, pid, name = st.kid, cur.pid, cur.name
  if not kid or kid.parent_pid ~= pid or kid.parent_name ~= name then
    kid = new_state(pid, name)
    st.kid = kid
  end
  return kid
end

-- What a pool worker does first (core.fork has reseeded math.random):
-- become current_process(), remember the parent, start with no children of
-- its own. A Process child is forked with all of it in place (start).
function M.enter_child(self)
  here.state = new_state(core.getppid(), here.current.name)
  here.counter, here.nchildren, here.free = 0, 0, 1
  here.current = self
end

-- Records a started Process among the children, in the first free slot.
local function add_child(p)
  local children, i = here.state.children, here.free
  while children[i] do i = i + 1 end
  children[i] = p
  p._slot = i
  here.free, here.nchildren = i + 1, here.nchildren + 1
end

-- Forgets a child known ended; nothing if it is not one of ours (a Process
-- of the parent's, seen from a child, keeps the parent's slot).
local function drop_child(p)
  local i, children = p._slot, here.state.children
  if i and children[i] == p then
    children[i] = false
    here.nchildren = here.nchildren - 1
    if i < here.free then here.free = i end
  end
end

-- A Process whose handle reports an end leaves the children.
local function poll(self)
  local h = self._handle
  if not h then return nil end
  local code = h:poll()
  if code then drop_child(self) end
  return code
end

function Process.__index(self, k)
  if k == "exitcode" then return poll(self) end
  if k == "pid" then
    -- a child does not write its own pid into itself: one page less to copy
    return self._pid or (self == here.current and core.getpid()) or nil
  end
  if k == "name" then
    -- made on first use: formatting a number costs a page write after fork
    local name = (self._prefix or "Process-") .. self._identity
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

-- A new Process. Every field start() writes is set here, so the table
-- never grows after the fork (a grown table is a page the parent copies);
-- the fields that are mostly nil are left out of the constructor, which
-- then makes the table half the size (fewer heap pages written per start).
local function make(target, args, name, daemon)
  here.counter = here.counter + 1
  local self = {
    target = target,
    args = args or NOARGS,
    daemon = daemon or false,
    _pid = false,
    _identity = here.counter,
    _handle = false,
    _closed = false,
    _slot = false,
  }
  if name then self.name = name end
  -- a process started in a child is named after it: "Process-1:2"
  if here.current._identity then self._prefix = here.current.name .. ":" end
  return self
end

-- mproc.Process{target = f, args = {...}, name = s, daemon = b}
local function new_from_options(opts)
  util.check_options("Process", 1, opts, OPTIONS)
  -- Process{f} would run nothing: the options table has only names
  for k in pairs(opts) do
    if type(k) == "number" then
      util.argerror("Process", 1, "unnamed value in the options table; " ..
        "pass target = f, or call mproc.Process(f, args)")
    end
  end
  -- named, as subprocess's options are: Python's args=(x) (no comma) is
  -- a port's args = x
  util.check_option("Process", 1, "target", opts.target, "callable")
  util.check_option("Process", 1, "name", opts.name, "string")
  util.check_option("Process", 1, "daemon", opts.daemon, "boolean")
  util.check_option("Process", 1, "args", opts.args, "table")
  return setmetatable(make(opts.target, opts.args, opts.name, opts.daemon), Process)
end

-- mproc.Process(f, {...}); no options table is made for it. The usual
-- case calls nothing but make and setmetatable, from here (see check_open).
local function new(_, a, b)
  local ta = type(a)
  if ta == "table" and getmetatable(a) == nil then return new_from_options(a) end
  if ta ~= "function" and not util.is_callable(a) then
    util.argerror("Process", 1, "function or options table expected, got " .. ta)
  end
  if b ~= nil and type(b) ~= "table" then util.check_type("Process", 2, b, "table", true) end
  return setmetatable(make(a, b), Process)
end
setmetatable(Process, { __call = new })

-- The checks of a method's self. The methods a start+join calls (new,
-- start, join, close) test the usual case themselves and call these only
-- to raise: their calls then nest one level below the method, no deeper,
-- and every level deeper is a CallInfo, a heap page the parent writes again
-- after each fork.
local function check_open(self, fname)
  if getmetatable(self) ~= Process then util.check_self(fname, self, Process) end
  if self._closed then util.misuse(("%s: the process is closed"):format(fname)) end
end

local function check_started(self, fname)
  if getmetatable(self) ~= Process then util.check_self(fname, self, Process) end
  if self._closed then util.misuse(("%s: the process is closed"):format(fname)) end
  if self == here.current then util.misuse(("%s: a process cannot %s itself"):format(fname, fname)) end
  if not self._handle then util.misuse(("%s: the process was not started"):format(fname)) end
end

local error_text = util.error_text

-- The child's message handler (core.child_main's): reports the error with
-- its traceback on stderr, as Python does; the exit code is 1. The frames
-- below the target are mproc's own (core.fork, which calls it, and what
-- called core.fork): the traceback leaves them out. It runs
-- again for each error a to-be-closed variable raises while the first
-- unwinds: those follow the first report, under its one heading.
local function child_error(e)
  local tb = debug.traceback(error_text(e), 2)
  -- cut at whichever comes first: a body of process.lua (run_uncallable)
  -- may run between the target and core.fork
  local a = tb:find("\n[^\n]*'mproc%.core%.fork'")
  local b = tb:find("\n[^\n]*mproc[/\\]process%.lua:")
  local cut = (a and b) and math.min(a, b) or a or b
  if cut then tb = tb:sub(1, cut - 1) end
  if here.state.reported then
    io.stderr:write(("While unwinding, another error:\n%s\n"):format(tb))
  else
    here.state.reported = true
    io.stderr:write(("Process %s:\n%s\n"):format(here.current.name, tb))
  end
  return 1
end

-- The child's work: what core.fork calls next, under child_error, and its
-- arguments (the child exits 0 when it returns).
-- start() chooses it in the parent: child_run names the target (core.fork
-- calls it at the level this function ran at, the child's only one; rawget
-- of a missing key, in the child, would read Lua's constant absent key, a
-- page of read-only data no other step of a child touches); run_method a
-- run that replaced the method, or the method itself for a process with no
-- target.
local function child_run(self)
  local args = self.args
  if args.n == 0 then return self.target end
  return self.target, table.unpack(args, 1, args.n or #args)
end

local function run_method(self)
  return self.run, self
end

-- A run or target that is not callable, yet set (after Process() checked
-- it): called here, as run() would, so that the child reports Lua's error
-- and exits 1; returned to core.fork, a number would be taken for the exit
-- code, and a run of false would be called rather than ignored.
local function run_uncallable(self)
  local run = rawget(self, "run") or methods.run
  run(self)
end

-- What the child of start() runs first (see child_run): chosen in the
-- parent, where a check costs the child nothing.
local function body_of(self)
  local run, target = rawget(self, "run"), self.target
  if run ~= nil and run ~= methods.run or not target then
    if run == nil or type(run) == "function" or (run and util.is_callable(run)) then return run_method end
    return run_uncallable
  end
  if type(target) == "function" or util.is_callable(target) then return child_run end
  return run_uncallable
end

-- The child's work; a table made with mproc.Process may replace it.
function methods:run()
  util.check_self("run", self, Process)
  local args = self.args
  if self.target then self.target(table.unpack(args, 1, args.n or #args)) end
end

local function cleanup()
  local children = here.state.children
  for i = 1, #children do
    if children[i] then poll(children[i]) end
  end
end

-- Starts the child. Returns the Process, or nil, message, errno.
function methods:start()
  if getmetatable(self) ~= Process or self._closed or self._handle or self == here.current then
    check_open(self, "start")
    util.misuse("start: cannot start a process twice")
  end
  if here.nchildren > 0 then cleanup() end
  -- a child does not write its own pid on starting (current_process() finds
  -- it), but its children see it as any Process: it is written before the
  -- first fork of one, in a child that starts children
  local cur = here.current
  if rawget(cur, "_pid") == false then cur._pid = core.getpid() end
  -- a start nested in another's (a __gc's, at core.fork's allocation) takes a
  -- box of its own: closing the shared one would forget the outer start's
  -- child, or the Process its child is to be (box.current, set below)
  local box <close> = start_box.child == false and start_box.current == false and start_box
    or new_box()
  box.current, box.state = self, kid_state(cur, here.state)
  -- the usual case tested here: body_of's calls would nest a level deeper
  local run = rawget(self, "run")
  local body = child_run
  if run ~= nil and run ~= methods.run or type(self.target) ~= "function" then body = body_of(self) end
  -- the child runs body(self), then what it returns, from within core.fork,
  -- under child_error; it never returns here
  local h, pid, err = core.fork(self.daemon, box, body, child_error, self)
  if not h then return nil, pid, err end   -- message, errno
  self._handle = h
  self._pid = pid
  add_child(self)
  return self
end

-- Waits for the child; returns its exitcode, or nil, "timeout".
function methods:join(timeout)
  if getmetatable(self) ~= Process then check_started(self, "join") end
  local h = self._handle
  if not h or self._closed or self == here.current then check_started(self, "join") end
  if timeout ~= nil then timeout = util.check_timeout("join", 1, timeout) end
  local code, err = h:wait(timeout)
  if not code then return nil, err end
  drop_child(self)
  return code
end

function methods:is_alive()
  check_open(self, "is_alive")
  if self == here.current then return true end
  if not self._handle then return false end
  return poll(self) == nil
end

local function signal(self, fname, sig)
  check_started(self, fname)
  return self._handle:signal(sig)
end

function methods:terminate() return signal(self, "terminate", SIGTERM) end
function methods:kill() return signal(self, "kill", SIGKILL) end

-- send_signal(sig): Python's os.kill(p.pid, sig), which Lua lacks, through
-- the handle (a pidfd), so a pid reused by now is never signalled.
function methods:send_signal(sig)
  if math.type(sig) ~= "integer" or sig < 0 or sig >= core.NSIG then
    util.check_self("send_signal", self, Process)
    local got = type(sig) == "number" and tostring(sig) or sig == nil and "no value" or type(sig)
    util.argerror("send_signal", 1, ("signal number from 0 to %d expected, got %s"):format(core.NSIG - 1, got))
  end
  return signal(self, "send_signal", sig)
end

-- Releases the sentinel. Raises while the child still runs, as Python does.
function methods:close()
  if getmetatable(self) ~= Process then util.check_self("close", self, Process) end
  if self._closed then return end
  local h = self._handle
  if h then
    -- poll(self) written out: one call level less (see check_open)
    if h:poll() == nil then
      util.misuse("close: the process is still running; join or terminate it first")
    end
    drop_child(self)
    h:close()
  end
  self._closed = true
end

-- Leaving the scope of a <close> variable: the child is joined and closed;
-- a daemonic child, or any child when the scope is left by an error, is
-- terminated first (the error is not held up waiting for it).
function Process.__close(self, err)
  if self._closed or not self._handle or self == here.current then return end
  if self.daemon or err ~= nil then self._handle:signal(SIGTERM) end
  self:join()
  self:close()
end

function Process.__tostring(self)
  local state
  if self._closed then state = "closed"
  elseif self == here.current then state = "current"
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

-- _identity false, not absent: make() asks it of the current process, and
-- an absent field would call Process.__index, a call level deeper (a
-- CallInfo page more for each start to write)
here.current = setmetatable({ name = "MainProcess", pid = core.getpid(), daemon = false,
  _identity = false }, Process)

M.Process = Process
function M.current_process() return here.current end
function M.parent_process()
  local st = here.state
  if not st.parent and st.parent_pid then
    st.parent = setmetatable({ name = st.parent_name, pid = st.parent_pid }, M.ParentProcess)
  end
  return st.parent or nil
end

-- The children that still run; the ended ones are reaped on the way.
function M.active_children()
  local list, children = {}, here.state.children
  for i = 1, #children do
    local p = children[i]
    if p and poll(p) == nil then list[#list + 1] = p end
  end
  table.sort(list, function(a, b) return a._identity < b._identity end)
  return list
end

return M
