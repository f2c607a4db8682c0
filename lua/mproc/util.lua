-- mproc.util: argument checks shared by the Lua layer.
-- Misuse raises with a message that names the function and argument,
-- in the words of luaL_argerror: "bad argument #2 to 'join' (...)".
local M = {}

function M.argerror(fname, n, msg, level)
  error(("bad argument #%d to '%s' (%s)"):format(n, fname, msg), (level or 2) + 1)
end

function M.check_type(fname, n, v, want, optional)
  if v == nil and optional then return v end
  local got = type(v)
  if got ~= want then
    M.argerror(fname, n, ("%s expected, got %s"):format(want, got == "nil" and "no value" or got), 2)
  end
  return v
end

function M.is_callable(v)
  if type(v) == "function" then return true end
  local mt = getmetatable(v)
  return type(mt) == "table" and mt.__call ~= nil
end

function M.check_callable(fname, n, v, optional)
  if v == nil and optional then return v end
  if not M.is_callable(v) then
    M.argerror(fname, n, "function expected, got " .. type(v), 2)
  end
  return v
end

-- A timeout is nil (wait for ever) or a number of seconds >= 0.
function M.check_timeout(fname, n, v)
  if v == nil then return nil end
  if type(v) ~= "number" or v ~= v then
    M.argerror(fname, n, "timeout must be a number of seconds, got " .. type(v), 2)
  end
  return v < 0 and 0 or v
end

-- Raises for keys of opts that are not in allowed (a set).
function M.check_options(fname, n, opts, allowed)
  for k in pairs(opts) do
    if type(k) ~= "number" and not allowed[k] then
      M.argerror(fname, n, ("unknown option '%s'"):format(tostring(k)), 2)
    end
  end
end

return M
