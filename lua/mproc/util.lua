-- mproc.util: argument checks shared by the Lua layer.
-- Misuse raises with a message that names the function and argument,
-- in the words of luaL_argerror: "bad argument #2 to 'join' (...)".
-- Also the helpers the Lua layer would otherwise write twice: token
-- tables for objects that travel through the codec, and deadlines.
local core = require "mproc.core"

local M = {}

-- The error level, seen from the function calling user_level's caller,
-- of the first frame outside mproc's Lua files: the user's line, however
-- deep inside mproc the check ran.
local function user_level()
  local level = 3
  while true do
    local info = debug.getinfo(level, "S")
    if not info then return 1 end
    if not info.source:find("[/\\]mproc[/\\][%w_]+%.lua$") then return level - 1 end
    level = level + 1
  end
end

function M.argerror(fname, n, msg)
  error(("bad argument #%d to '%s' (%s)"):format(n, fname, msg), user_level())
end

-- Raises msg for a misuse, at the user's line.
function M.misuse(msg)
  error(msg, user_level())
end

-- Raises unless self is an object of the class mt, or of the C type named
-- mt (a method called with '.' instead of ':' gets a message naming it).
function M.check_self(fname, self, mt)
  local got = getmetatable(self)
  if type(mt) == "string" and core.istype(self, mt) then return end  -- a C type
  if got ~= mt then
    local name = type(got) == "table" and rawget(got, "__name")
    M.argerror(fname, 1, ("%s expected, got %s"):format(type(mt) == "string" and mt or mt.__name,
      type(name) == "string" and name or type(self)))
  end
end

function M.check_type(fname, n, v, want, optional)
  if v == nil and optional then return v end
  local got = type(v)
  if got ~= want then
    M.argerror(fname, n, ("%s expected, got %s"):format(want, got == "nil" and "no value" or got))
  end
  return v
end

-- An error object as text, as lua.c shows it.
function M.error_text(err)
  if type(err) == "string" then return err end
  local mt = getmetatable(err)
  if mt and mt.__tostring then return tostring(err) end
  return ("(error object is a %s value)"):format(type(err))
end

function M.is_callable(v)
  if type(v) == "function" then return true end
  local mt = getmetatable(v)
  return type(mt) == "table" and mt.__call ~= nil
end

function M.check_callable(fname, n, v, optional)
  if v == nil and optional then return v end
  if not M.is_callable(v) then
    M.argerror(fname, n, "function expected, got " .. type(v))
  end
  return v
end

-- #list of a map's input list. A table with no item 1 but other keys
-- raises: Python's pool.map(f, d) maps a dict's keys, and an empty result
-- would hide the mistake.
function M.input_length(fname, n, list)
  local len = #list
  if len > 0 or getmetatable(list) ~= nil then return len end
  local k = next(list)
  if k ~= nil then
    M.argerror(fname, n, ("a list expected, got a table with no item 1 but key %s (to map over a table's"
      .. " keys or values, make a list of them)"):format(type(k) == "string" and ("'" .. k .. "'") or type(k)))
  end
  return 0
end

-- An option's value: nil, or of type want ("callable": a function or a
-- callable table); the message names the option, as in
-- "bad argument #1 to 'Pool' (initargs: table expected, got number)".
function M.check_option(fname, n, name, v, want)
  if v == nil then return v end
  local ok = want == "callable" and M.is_callable(v) or type(v) == want
  if not ok then
    M.argerror(fname, n, ("%s: %s expected, got %s")
      :format(name, want == "callable" and "function" or want, type(v)))
  end
  return v
end

-- Raises unless lock is an open mproc.Lock or mproc.RLock; for a value of
-- another type the message is expected followed by the value's type.
function M.check_lock(fname, n, lock, expected)
  local mt = getmetatable(lock)
  if type(mt) ~= "table" or (mt.__name ~= "mproc.Lock" and mt.__name ~= "mproc.RLock") then
    M.argerror(fname, n, expected .. type(lock))
  end
  if not pcall(lock.held, lock) then M.argerror(fname, n, "the Lock is closed") end
  return lock
end

-- Whether err is lua.c's Ctrl-C error ("interrupted!", raised by its
-- SIGINT hook with the position where it struck; in a script's main chunk
-- its message handler has added the traceback by the time the <close>
-- variables see it): a scope it leaves should stop what it started
-- rather than wait for it.
function M.is_interrupt(err)
  if type(err) ~= "string" then return false end
  local first = err:match("^[^\n]*")
  return first == "interrupted!" or first:sub(-14) == ": interrupted!"
end

-- A timeout is nil (wait for ever) or a number of seconds >= 0.
function M.check_timeout(fname, n, v)
  if v == nil then return nil end
  if type(v) ~= "number" or v ~= v then
    M.argerror(fname, n, "timeout must be a number of seconds, got " .. type(v))
  end
  return v < 0 and 0 or v
end

-- Raises for keys of opts that are not in allowed (a set).
function M.check_options(fname, n, opts, allowed)
  for k in pairs(opts) do
    if type(k) ~= "number" and not allowed[k] then
      M.argerror(fname, n, ("unknown option '%s'"):format(tostring(k)))
    end
  end
end

-- A deadline on the monotonic clock timeout seconds from now; nil (no
-- deadline) for a nil timeout.
function M.deadline(timeout)
  return timeout and core.monotonic() + timeout
end

-- Seconds left before deadline, never below 0; nil for no deadline.
function M.left(deadline)
  return deadline and math.max(deadline - core.monotonic(), 0)
end

-- Objects of this process by token, for a class's __mproc_recv: an object
-- travels (as a token) to processes that inherited it, which hold the same
-- object. Returns add(obj) -> token, a new token naming obj, and
-- find(kind, token, usable) -> obj, which raises, as if from the
-- __mproc_recv calling it, when token names no live object of this process
-- or usable(obj) is false; kind names the class in the message. Call find
-- as a statement, not in a tail call, so the error's level stays right.
function M.tokens()
  local live = setmetatable({}, { __mode = "v" })
  local serial = 0
  local function add(obj)
    serial = serial + 1
    local token = core.getpid() .. ":" .. serial
    live[token] = obj
    return token
  end
  local function find(kind, token, usable)
    local obj = live[token]
    if obj == nil or not usable(obj) then
      -- codec.c's decode_mproc says the same of an object of an unknown type
      error(("cannot receive %s %q: not inherited by this process (it reaches only "
        .. "processes forked after it was made)"):format(kind, tostring(token)), 3)
    end
    return obj
  end
  return add, find
end

return M
