-- Helpers for the specs: running Lua scripts in a fresh interpreter, and
-- counting this process's descriptors and children, for leak checks.
local M = {}

M.LUA = os.getenv("LUA") or "lua5.4"

local function shell_quote(s)
  return "'" .. s:gsub("'", "'\\''") .. "'"
end
M.shell_quote = shell_quote

-- Writes code to a temporary file; returns its path.
function M.script(code)
  local path = os.tmpname()
  local f = assert(io.open(path, "w"))
  f:write(code)
  f:close()
  return path
end

-- A fresh temporary path, with no file there yet.
function M.tmpname()
  local path = os.tmpname()
  os.remove(path)
  return path
end

-- Runs a shell command; returns its output (stdout, and stderr when
-- merge is true) and its exit code.
function M.sh(cmd, merge)
  local p = assert(io.popen(cmd .. (merge and " 2>&1" or "")))
  local out = p:read("a")
  local _, _, code = p:close()
  return out, code
end

-- Runs Lua code (or a script path) in a new interpreter with stdout on a pipe.
function M.run_lua(code, opts)
  opts = opts or {}
  local path = opts.path or M.script(code)
  local out, code_ = M.sh((opts.env and (opts.env .. " ") or "") .. M.LUA .. " " .. shell_quote(path) .. (opts.args or "")
    .. (opts.stderr == false and " 2>/dev/null" or ""), opts.stderr ~= false)
  if not opts.path then os.remove(path) end
  return out, code_
end

-- Runs an example script (as run_lua does) with mproc.sleep `speedup` times
-- faster: the examples sleep random seconds to stand for work.
function M.run_example(path, speedup)
  local init = ("local m = require 'mproc'; local s = m.sleep; m.sleep = function(t) return s(t / %d) end")
    :format(speedup)
  return M.run_lua(nil, { path = path, env = "LUA_INIT_5_4=" .. shell_quote(init) })
end

function M.lines(s)
  local t = {}
  for l in s:gmatch("[^\n]+") do t[#t + 1] = l end
  return t
end

function M.read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

function M.write_file(path, s)
  local f = assert(io.open(path, "wb"))
  f:write(s)
  f:close()
end

local mproc = require "mproc"

-- Open descriptors with what they point at, one "fd -> target" a line.
-- The listing runs under os.execute (no pipe of its own in this process,
-- which waits meanwhile), so the listing sees exactly our descriptors.
function M.fd_listing()
  local out = os.tmpname()
  os.execute(("cd /proc/%d/fd && for f in *; do printf '%%s -> %%s\\n' \"$f\" \"$(readlink $f)\"; done > %s")
    :format(mproc.getpid(), shell_quote(out)))
  local listing = M.read_file(out)
  os.remove(out)
  local lines = M.lines(listing)
  table.sort(lines)
  return table.concat(lines, "\n")
end

function M.fd_count()
  return #M.lines(M.fd_listing())
end

-- Children of this process, zombies included, besides the listing itself.
function M.children()
  local pid = mproc.getpid()
  local s = M.read_file(("/proc/%d/task/%d/children"):format(pid, pid)) or ""
  local t = {}
  for p in s:gmatch("%d+") do t[#t + 1] = tonumber(p) end
  return t
end

function M.pid_exists(pid)
  return M.read_file("/proc/" .. pid .. "/stat") ~= nil
end

-- The state letter of a process ("R", "S", "Z" ...), nil once it is gone.
function M.pid_state(pid)
  local stat = M.read_file("/proc/" .. pid .. "/stat")
  return stat and stat:match(".*%) (%a)")
end

-- Whether pid has ended: gone, or a zombie nobody has reaped yet (an
-- orphan waits for init, which may take its time).
function M.pid_ended(pid)
  local state = M.pid_state(pid)
  return state == nil or state == "Z"
end

-- Starts a process that runs f once pid has slept (state S) for 20 ms on
-- end, as it does in a blocking wait and nowhere else in the scripts that
-- use this (after 2 s, it runs f all the same). Returns the Process.
function M.when_waiting(pid, f)
  return mproc.Process(function()
    local t0, since = mproc.monotonic(), nil
    repeat
      local now = mproc.monotonic()
      if M.pid_state(pid) ~= "S" then since = nil else since = since or now end
      mproc.sleep(0.002)
    until (since and now - since >= 0.02) or now - t0 > 2
    f()
  end):start()
end

-- Ctrl-C for pid once it waits: SIGINT, as lua.c gets it.
function M.interrupt_when_waiting(pid)
  return M.when_waiting(pid, function() require("mproc.core").kill(pid, 2) end)
end

-- Polls pred every 10 ms up to seconds; returns whether it became true.
function M.eventually(pred, seconds)
  local deadline = mproc.monotonic() + (seconds or 5)
  repeat
    if pred() then return true end
    mproc.sleep(0.01)
  until mproc.monotonic() > deadline
  return pred()
end

-- The portable build (make test PORTABLE=1: every non-Linux fallback
-- forced on) lacks what only Linux has; specs of those features say so.
M.PORTABLE = os.getenv("MPROC_PORTABLE") == "1"

-- MPROC_SOAK=n multiplies the trials of the fault specs by n (default 1),
-- for a long soak by hand: MPROC_SOAK=20 make test.
M.SOAK = math.tointeger(tonumber(os.getenv("MPROC_SOAK"))) or 1

-- A cell object (Lock, Value ...) that make() makes in a chunk mapped from
-- now on: the parent goes on carving the chunk that forked workers
-- inherited, so the first objects made after a fork may still be there.
-- The chunk is the token's origin (its third field from the end); sending
-- marks each object for good, so none is recycled and the carving moves on.
function M.fresh_cell(make)
  local function chunk(obj)
    local tok = getmetatable(obj).__mproc_send(obj):match("^[^/]*")
    return tok:match("([^:]+):[^:]+:[^:]+$")
  end
  local obj = make()
  local first = chunk(obj)
  repeat obj = make() until chunk(obj) ~= first
  return obj
end

-- Runs f in a child; returns its exit code, or nil (and kills it) when it
-- does not end in time, so a deadlock fails the spec instead of hanging.
function M.within(seconds, f)
  local p = mproc.Process(f):start()
  local code = p:join(seconds)
  if code == nil then p:kill(); p:join() end
  return code
end

return M
