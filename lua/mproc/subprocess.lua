-- mproc.subprocess: Python's subprocess for Lua 5.4.
-- call, check_call, check_output, run, getoutput, getstatusoutput, Popen.
-- Spawning (vfork, no copy of the parent's heap) and communicate (a poll
-- loop moving data at pipe speed) are in src/spawn.c; this file turns
-- Python-shaped arguments into a spec for core.spawn and builds the objects.
local core = require "mproc.core"
local util = require "mproc.util"

local M = { PIPE = core.PIPE, STDOUT = core.STDOUT, DEVNULL = core.DEVNULL }

local SIGTERM, SIGKILL = core.signals.SIGTERM, core.signals.SIGKILL
local ENOENT = core.ENOENT

-- Options Popen takes; run and friends add theirs.
local POPEN_OPTIONS = {
  stdin = true, stdout = true, stderr = true, cwd = true, env = true,
  shell = true, close_fds = true, pass_fds = true, start_new_session = true,
  process_group = true, umask = true, executable = true, preexec_fn = true,
  -- accepted for Python's sake; Lua strings are bytes either way
  text = true, universal_newlines = true, encoding = true, errors = true,
  bufsize = true,
}

local function with(base, extra)
  local t = {}
  for k in pairs(base) do t[k] = true end
  for _, k in ipairs(extra) do t[k] = true end
  return t
end

local RUN_OPTIONS = with(POPEN_OPTIONS, { "input", "capture_output", "timeout", "check" })
local CALL_OPTIONS = with(POPEN_OPTIONS, { "timeout" })
local OUTPUT_OPTIONS = with(POPEN_OPTIONS, { "input", "timeout" })

---------------------------------------------------------------------------
-- Arguments
---------------------------------------------------------------------------

-- f({"ls", "-l"}, {cwd = "/tmp"}), f{"ls", "-l", cwd = "/tmp"}, f("ls"):
-- returns the argument list, the options (the hash parts of both) and the
-- argument the options came in, for messages: 2, or 1 in the one-table form.
-- An integer n (table.pack's) is the list's length, not an option.
local function split_call(fname, a, b, allowed)
  local args, opts = {}, {}
  if type(a) == "string" then
    args = a
  elseif type(a) == "table" then
    for k, v in pairs(a) do
      if math.type(k) == "integer" then args[k] = v
      elseif k == "n" and math.type(v) == "integer" then args.n = v
      else opts[k] = v end
    end
  else
    util.argerror(fname, 1, "string or table expected, got " .. (a == nil and "no value" or type(a)))
  end
  if b ~= nil then
    util.check_type(fname, 2, b, "table")
    for k, v in pairs(b) do opts[k] = v end
  end
  local n = b ~= nil and 2 or 1
  util.check_options(fname, n, opts, allowed)
  return args, opts, n
end

-- Raises for option name of argument n when v is neither nil nor a want:
-- "bad argument #1 to 'run' (cwd: string expected, got number)".
local function check_option(fname, n, name, v, want)
  if v ~= nil and type(v) ~= want and not (want == "function" and util.is_callable(v)) then
    util.argerror(fname, n, ("%s: %s expected, got %s"):format(name, want, type(v)))
  end
  return v
end

-- The length of an argument list: its n, else its largest positive
-- integer key (a nil inside is a hole, not the end: # may stop there).
local function arg_count(args)
  if math.type(args.n) == "integer" then return args.n end
  local n = 0
  for k in pairs(args) do
    if math.type(k) == "integer" and k > n then n = k end
  end
  return n
end

-- A C string ends at its first NUL: a string holding one would reach the
-- child cut short ("a\0b" as "a"), so it is refused, as Python does.
-- what (a format, with its arguments) names the string in the message.
local function check_nul(fname, n, s, what, ...)
  if s:find("\0", 1, true) then util.argerror(fname, n, what:format(...) .. " contains a NUL byte") end
  return s
end

local function check_argv(fname, args)
  local n = arg_count(args)
  if n <= 0 then util.argerror(fname, 1, "empty command") end
  local argv = {}
  for i = 1, n do
    local v = args[i]
    if v == nil then util.argerror(fname, 1, ("argument #%d is nil"):format(i)) end
    if type(v) == "number" then v = tostring(v) end
    if type(v) ~= "string" then
      util.argerror(fname, 1, ("argument #%d is a %s, not a string"):format(i, type(v)))
    end
    argv[i] = check_nul(fname, 1, v, "argument #%d", i)
  end
  return argv
end

-- The argv the child gets: a string is one program, unless shell.
local function make_argv(fname, args, shell)
  if type(args) == "string" then args = { check_nul(fname, 1, args, "the command") } end
  local argv = check_argv(fname, args)
  if shell then table.insert(argv, 1, "-c"); table.insert(argv, 1, "/bin/sh") end
  return argv
end

-- Paths to try for a program, as execvp would, with the child's PATH.
local function candidates(prog, env)
  if prog:find("/", 1, true) then return { prog } end
  local path = (env and env.PATH) or (not env and os.getenv("PATH")) or "/bin:/usr/bin"
  local list = {}
  for dir in (path .. ":"):gmatch("([^:]*):") do
    if dir == "" then dir = "." end
    list[#list + 1] = dir .. "/" .. prog
  end
  return list
end

local function make_env(fname, n, env)
  if env == nil then return nil end
  check_option(fname, n, "env", env, "table")
  local list = {}
  for k, v in pairs(env) do
    if type(k) ~= "string" or (type(v) ~= "string" and type(v) ~= "number") then
      util.argerror(fname, n, "env must map strings to strings")
    end
    check_nul(fname, n, k, "env name %q", k)
    if k:find("=", 1, true) then util.argerror(fname, n, "env name has '=': " .. k) end
    check_nul(fname, n, tostring(v), "env[%q]", k)
    list[#list + 1] = k .. "=" .. v
  end
  return list
end

local STREAM_NAMES = { "stdin", "stdout", "stderr" }

-- PIPE, DEVNULL, STDOUT (stderr only), a Lua file, a descriptor, or nil.
local function stdio_target(fname, n, name, v)
  if v == nil then return nil end
  if io.type(v) == "file" then return core.fileno(v) end
  if math.type(v) == "integer" then
    if v >= 0 or v == M.PIPE or v == M.DEVNULL or (v == M.STDOUT and name == "stderr") then
      return v
    end
  end
  util.argerror(fname, n, ("%s must be PIPE, DEVNULL%s, a file or a descriptor, got %s")
    :format(name, name == "stderr" and ", STDOUT" or "", tostring(v)))
end

local function check_fds(fname, n, fds)
  if fds == nil then return {} end
  check_option(fname, n, "pass_fds", fds, "table")
  for _, fd in ipairs(fds) do
    if math.type(fd) ~= "integer" or fd < 0 then
      util.argerror(fname, n, "pass_fds must list descriptors")
    end
  end
  return fds
end

local function opt_int(fname, n, name, v, min)
  if v == nil then return nil end
  if math.type(v) ~= "integer" or v < min then
    util.argerror(fname, n, ("%s must be an integer >= %d"):format(name, min))
  end
  return v
end

-- The spec core.spawn reads; n is the options' argument.
local function make_spec(fname, args, o, n)
  local argv = make_argv(fname, args, o.shell)
  check_option(fname, n, "cwd", o.cwd, "string")
  check_option(fname, n, "executable", o.executable, "string")
  if o.cwd then check_nul(fname, n, o.cwd, "cwd") end
  if o.executable then check_nul(fname, n, o.executable, "executable") end
  check_option(fname, n, "preexec_fn", o.preexec_fn, "function")
  local env = o.env
  local spec = {
    name = o.executable or argv[1], argv = argv, env = make_env(fname, n, env), cwd = o.cwd,
    close_fds = o.close_fds ~= false, pass_fds = check_fds(fname, n, o.pass_fds),
    start_new_session = o.start_new_session and true or false,
    process_group = opt_int(fname, n, "process_group", o.process_group, 0),
    umask = opt_int(fname, n, "umask", o.umask, 0),
  }
  spec.exe = candidates(spec.name, env)
  for _, name in ipairs(STREAM_NAMES) do spec[name] = stdio_target(fname, n, name, o[name]) end
  return spec
end

---------------------------------------------------------------------------
-- CalledProcessError and CompletedProcess
---------------------------------------------------------------------------

local function show_cmd(cmd)
  if type(cmd) ~= "table" then return tostring(cmd) end
  local parts = {}
  for i, v in ipairs(cmd) do parts[i] = ("%q"):format(v) end
  return "{" .. table.concat(parts, ", ") .. "}"
end

local CalledProcessError = { __name = "mproc.CalledProcessError" }
CalledProcessError.__index = CalledProcessError
M.CalledProcessError = CalledProcessError

function CalledProcessError.__tostring(e)
  if e.returncode < 0 then
    return ("Command '%s' died with signal %d."):format(show_cmd(e.cmd), -e.returncode)
  end
  return ("Command '%s' returned non-zero exit status %d."):format(show_cmd(e.cmd), e.returncode)
end

local function called_process_error(returncode, cmd, stdout, stderr)
  return setmetatable({ returncode = returncode, cmd = cmd, output = stdout,
                        stdout = stdout, stderr = stderr }, CalledProcessError)
end

local CompletedProcess = { __name = "mproc.CompletedProcess" }
CompletedProcess.__index = CompletedProcess
M.CompletedProcess = CompletedProcess

function CompletedProcess.__tostring(c)
  return ("mproc.CompletedProcess (args %s, returncode %s)"):format(show_cmd(c.args), tostring(c.returncode))
end

-- Raises CalledProcessError when the returncode is not 0.
function CompletedProcess:check_returncode()
  util.check_self("check_returncode", self, CompletedProcess)
  if self.returncode ~= 0 then
    error(called_process_error(self.returncode, self.args, self.stdout, self.stderr), 2)
  end
end

---------------------------------------------------------------------------
-- Popen
---------------------------------------------------------------------------

local Popen = { __name = "mproc.Popen" }
local methods = {}
M.Popen = Popen

-- Children whose Popen was collected while they ran: reaped later, as
-- Python's _cleanup does, so they do not stay zombies.
local abandoned = {}

local function cleanup()
  for child in pairs(abandoned) do
    if child:poll() then abandoned[child] = nil end
  end
end

function Popen.__index(self, k)
  if k == "sentinel" then
    local fd = rawget(self, "_child"):fileno()
    return fd >= 0 and fd or nil
  end
  return methods[k]
end

function Popen.__tostring(self)
  return ("mproc.Popen (pid %d, returncode %s)"):format(self.pid, tostring(self.returncode))
end

-- run("ls -l") looks for a program named "ls -l": a string with a space
-- that is not found gets a hint.
local function spawn_failure(args, opts, msg, code, step)
  if step == "exec" and code == ENOENT and type(args) == "string" and not opts.shell
      and not opts.executable and args:find("%s") then
    msg = msg .. " (a string is one program's name unless shell = true; pass arguments in a list)"
  end
  return nil, msg, code
end

-- A spec whose child no Popen took: an error (Ctrl-C: lua.c's hook fires
-- as core.spawn returns, and the child it made is lost with its results)
-- left spawn in between. core.spawn keeps the child in spec.child; it is
-- killed and reaped, as run's child is on Ctrl-C, not left running with no
-- handle to wait for it.
local Unclaimed = {
  __close = function(spec, err)
    local child = spec.child
    if err ~= nil and child then
      child:signal(SIGKILL)
      child:wait()
    end
  end,
}

-- Starts the child; returns the Popen, or nil, message, errno.
local function spawn(fname, args, opts, n)
  local spec <close> = setmetatable(make_spec(fname, args, opts, n), Unclaimed)
  cleanup()
  local child, stdin, stdout, stderr = core.spawn(spec, opts.preexec_fn)
  -- a failure is nil, message, errno, step
  if not child then return spawn_failure(args, opts, stdin, stdout, stderr) end
  local leads = opts.start_new_session or opts.process_group == 0
  local p = setmetatable({
    pid = child:pid(), args = args, returncode = nil,
    stdin = stdin or nil, stdout = stdout or nil, stderr = stderr or nil,
    _child = child, _leader = leads or nil,
  }, Popen)
  spec.child = nil
  return p
end

local function new(_, a, b)
  local args, opts, n = split_call("Popen", a, b, POPEN_OPTIONS)
  return spawn("Popen", args, opts, n)
end
setmetatable(Popen, { __call = new })

-- Once the child is reaped its descriptor goes, so finished Popens hold
-- none even before they are collected; the sentinel becomes false, which
-- mproc.wait takes for "ended already": ready at once.
local function settle(self, code)
  if code and not self.returncode then
    self.returncode = code
    self.sentinel = false
    self._child:close()
  end
  return code
end

-- p:poll() -> returncode, or nil while the child runs
function methods:poll()
  util.check_self("poll", self, Popen)
  return settle(self, self._child:poll())
end

-- p:wait([timeout]) -> returncode, or nil, "timeout"
function methods:wait(timeout)
  util.check_self("wait", self, Popen)
  timeout = util.check_timeout("wait", 1, timeout)
  local code, err = self._child:wait(timeout)
  if code then return settle(self, code) end
  return nil, err
end

local function open_file(f)
  return f ~= nil and io.type(f) == "file"
end

-- What communicate read of a piped stream (nil: not piped).
local function captured(st, name, buf)
  if not st or not st[name] then return nil end
  return st[buf] and st[buf]:text() or ""
end

-- true, stdout, stderr; or false, "timeout"; or false, message, errno
local function communicate(self, input, timeout)
  local st = self._comm
  if not st then
    if input and not open_file(self.stdin) then
      util.misuse("communicate: cannot send input to a child whose stdin is not a pipe"
        .. (self.stdin and " (p.stdin was closed)" or ""))
    end
    st = { stdin = self.stdin, input = input, pos = 0, stdout = self.stdout, stderr = self.stderr }
    self._comm = st
  end
  local deadline = util.deadline(timeout)
  local ok, cerr, code = core.communicate(st, timeout)
  if not ok then return false, cerr, code end
  local rc, werr = self:wait(util.left(deadline))
  if not rc then return false, werr end
  local out, err = captured(st, "stdout", "out"), captured(st, "stderr", "err")
  -- the buffers' memory is mapped, unseen by the collector: free it now
  if st.out then st.out:free() end
  if st.err then st.err:free() end
  return true, out, err
end

-- p:communicate([input], [timeout]) -> stdout, stderr (false for a stream
-- not piped, so a nil first value always means failure), or nil, "timeout"
-- (what was read so far is kept for the next call, which goes on where
-- this one stopped), or nil, message, errno.
function methods:communicate(input, timeout)
  util.check_self("communicate", self, Popen)
  util.check_type("communicate", 1, input, "string", true)
  timeout = util.check_timeout("communicate", 2, timeout)
  local ok, out, err = communicate(self, input, timeout)
  if ok then return out or false, err or false end
  return nil, out, err
end

local function signal(self, fname, sig, group)
  util.check_self(fname, self, Popen)
  if group and not self._leader then
    util.misuse(("%s: cannot %s the group of a child that does not lead one "
      .. "(use start_new_session or process_group = 0)"):format(fname, fname))
  end
  if self.returncode or self:poll() then return true end
  if group then
    local ok, err, code = core.kill(-self.pid, sig)
    if ok or code == 3 then return true end -- ESRCH: the group is gone
    return nil, err, code
  end
  return self._child:signal(sig)
end

-- p:send_signal(sig, [group]); with group, the child's whole process group.
-- sig runs from 0 (kill's "is it there?") to NSIG - 1; checked here, as C
-- would cut a larger integer to an int ((1 << 32) + 9 became SIGKILL).
function methods:send_signal(sig, group)
  util.check_self("send_signal", self, Popen)
  if math.type(sig) ~= "integer" or sig < 0 or sig >= core.NSIG then
    local got = type(sig) == "number" and tostring(sig) or sig == nil and "no value" or type(sig)
    util.argerror("send_signal", 1, ("signal number from 0 to %d expected, got %s"):format(core.NSIG - 1, got))
  end
  return signal(self, "send_signal", sig, group)
end

function methods:terminate(group) return signal(self, "terminate", SIGTERM, group) end
function methods:kill(group) return signal(self, "kill", SIGKILL, group) end

local function close_streams(self)
  for _, name in ipairs(STREAM_NAMES) do
    local f = rawget(self, name)
    if open_file(f) then f:close() end
  end
end

-- How long a child gets to end once Ctrl-C has left its Popen's scope (it
-- may have had the SIGINT too), as Python's __exit__ gives it.
local SIGINT_GRACE = 0.25

-- Leaving the scope of `local p <close> = Popen(...)`: close the pipes,
-- then wait for the child, as Python's __exit__ does. Left by Ctrl-C, a
-- child still there after SIGINT_GRACE is killed (its group when it leads
-- one), as run's is: waiting would take a second Ctrl-C, and not waiting
-- (Python's way) would leave it running, an orphan.
function Popen.__close(self, err)
  close_streams(self)
  if util.is_interrupt(err) and not self:wait(SIGINT_GRACE) then
    if self._leader then self:kill(true) else self:kill() end
  end
  self:wait()
end

-- Never blocks: a child still running is reaped by a later Popen.
function Popen.__gc(self)
  local child = rawget(self, "_child")
  if child and not self.returncode and not child:poll() then abandoned[child] = true end
end

---------------------------------------------------------------------------
-- run, call, check_call, check_output
---------------------------------------------------------------------------

local function partial(p, args, st)
  return setmetatable({ args = args, returncode = p.returncode, stdout = captured(st, "stdout", "out"),
                        stderr = captured(st, "stderr", "err") }, CompletedProcess)
end

-- How long kill_on_timeout goes on reading: enough to take what is in the
-- pipes (EOF comes at once when the child was their only writer), not
-- held up for long by a grandchild that keeps them open.
local DRAIN_AFTER_KILL = 0.1

-- The child timed out: kill it (its group when it leads one), collect what
-- it had already written, close everything.
local function kill_on_timeout(p)
  if p._leader then p:kill(true) else p:kill() end
  p:wait()
  local st = p._comm or { stdout = p.stdout, stderr = p.stderr }
  st.stdin, p._comm = nil, st
  core.communicate(st, DRAIN_AFTER_KILL)
  close_streams(p)
end

local function popen_opts(fname, n, opts)
  if opts.input ~= nil then
    check_option(fname, n, "input", opts.input, "string")
    if opts.stdin ~= nil then util.misuse(fname .. ": stdin and input may not both be used") end
    opts.stdin = M.PIPE
  end
  if opts.capture_output then
    if opts.stdout ~= nil or opts.stderr ~= nil then
      util.misuse(fname .. ": stdout and stderr may not be used with capture_output")
    end
    opts.stdout, opts.stderr = M.PIPE, M.PIPE
  end
  local po = {}
  for k, v in pairs(opts) do if POPEN_OPTIONS[k] then po[k] = v end end
  return po
end

-- The core of run: returns a CompletedProcess, or nil, "timeout", partial,
-- or nil, message, errno. n is the options' argument.
local function run(fname, args, opts, n)
  local timeout = util.check_timeout(fname, n, opts.timeout)
  local p, err, code = spawn(fname, args, popen_opts(fname, n, opts), n)
  if not p then return nil, err, code end
  local done_, ok, out, errout = pcall(communicate, p, opts.input, timeout)
  if not done_ then   -- Ctrl-C (or a failing write): the child goes too, as in Python
    if p._leader then p:kill(true) else p:kill() end
    p:wait()
    close_streams(p)
    error(ok, 0)
  end
  if not ok then
    kill_on_timeout(p)
    if out == "timeout" then return nil, "timeout", partial(p, args, p._comm) end
    return nil, out, errout
  end
  local done = setmetatable({ args = args, returncode = p.returncode, stdout = out,
                              stderr = errout }, CompletedProcess)
  if opts.check and done.returncode ~= 0 then
    error(called_process_error(done.returncode, args, out, errout), 3)
  end
  return done
end

-- run(args, [opts]) -> CompletedProcess, or nil, "timeout", partial, or
-- nil, message, errno; raises CalledProcessError with check = true.
function M.run(a, b)
  local args, opts, n = split_call("run", a, b, RUN_OPTIONS)
  return run("run", args, opts, n)
end

-- call(args, [opts]) -> returncode, or nil, "timeout", or nil, message, errno
function M.call(a, b)
  local args, opts, n = split_call("call", a, b, CALL_OPTIONS)
  local done, err, code = run("call", args, opts, n)
  if not done then return nil, err, err ~= "timeout" and code or nil end
  return done.returncode
end

-- check_call and check_output exist to raise: a program that cannot start
-- raises its message ("cannot run 'x': ..."), a timeout raises one that
-- says so (the child was killed), as Python raises OSError/TimeoutExpired.
local function raise_failure(err, opts)
  if err == "timeout" then
    error(("timeout: the command was killed after %g seconds"):format(opts.timeout), 3)
  end
  error(err, 3)
end

-- check_call(args, [opts]) -> 0; raises CalledProcessError otherwise
function M.check_call(a, b)
  local args, opts, n = split_call("check_call", a, b, CALL_OPTIONS)
  opts.check = true
  local done, err = run("check_call", args, opts, n)
  if not done then raise_failure(err, opts) end
  return 0
end

-- check_output(args, [opts]) -> stdout; raises CalledProcessError
function M.check_output(a, b)
  local args, opts, n = split_call("check_output", a, b, OUTPUT_OPTIONS)
  if opts.stdout ~= nil then util.argerror("check_output", n, "stdout is not allowed: it is captured") end
  opts.stdout, opts.check = M.PIPE, true
  local done, err = run("check_output", args, opts, n)
  if not done then raise_failure(err, opts) end
  return done.stdout
end

-- getstatusoutput(cmd) -> status, output: the shell runs cmd, stderr joins
-- stdout, one trailing newline goes.
function M.getstatusoutput(cmd)
  if type(cmd) ~= "string" and type(cmd) ~= "table" then
    util.argerror("getstatusoutput", 1, "string or table expected, got " .. type(cmd))
  end
  local done, err, code = run("getstatusoutput", cmd,
    { shell = true, stdout = M.PIPE, stderr = M.STDOUT }, 1)
  if not done then return nil, err, code end
  return done.returncode, (done.stdout:gsub("\n$", ""))
end

-- getoutput(cmd) -> output, as getstatusoutput
function M.getoutput(cmd)
  if type(cmd) ~= "string" and type(cmd) ~= "table" then
    util.argerror("getoutput", 1, "string or table expected, got " .. type(cmd))
  end
  local status, out, code = M.getstatusoutput(cmd)
  if status == nil then return nil, out, code end
  return out
end

return M
