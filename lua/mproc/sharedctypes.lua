-- mproc.sharedctypes: Value and Array in shared memory (src/sharedctypes.c),
-- as multiprocessing.Value and multiprocessing.Array.
local core = require "mproc.core"
local util = require "mproc.util"
require "mproc.sync"   -- get_lock()'s lock has guard() even when required alone

local M = {}

-- The typecodes sharedctypes.c knows, checked here, once.
local TYPECODES, ONE_OF = {}, core.TYPECODES:gsub(".", " %0"):sub(2)
for c in core.TYPECODES:gmatch(".") do TYPECODES[c] = true end

local function check_typecode(fname, tc)
  if not TYPECODES[tc] then
    util.argerror(fname, 1, ("bad typecode %s (one of %s)")
      :format(type(tc) == "string" and ("'" .. tc .. "'") or type(tc), ONE_OF))
  end
end

-- lock: true or nil (a new RLock), false (none: get_lock raises), or an
-- mproc.Lock / mproc.RLock to use.
local function the_lock(fname, n, lock)
  if lock == nil or lock == true then return core.RLock() end
  if lock == false then return false end
  return util.check_lock(fname, n, lock, "lock must be a boolean, mproc.Lock or mproc.RLock, got ")
end

-- Value(typecode, [init = 0], [lock = true])
function M.Value(typecode, init, lock)
  check_typecode("Value", typecode)
  if init ~= nil and type(init) ~= "number" then
    util.argerror("Value", 2, "number expected, got " .. type(init))
  end
  return core.Value(typecode, init, the_lock("Value", 3, lock))
end

-- Array(typecode, size_or_table, [lock = true])
function M.Array(typecode, init, lock)
  check_typecode("Array", typecode)
  if math.type(init) ~= "integer" and type(init) ~= "table" then
    util.argerror("Array", 2, "size or table expected, got " .. type(init))
  end
  return core.Array(typecode, init, the_lock("Array", 3, lock))
end

-- a:totable() -> a plain table of the elements, read under the Array's
-- lock (unless this process holds it already, or there is none).
core.interpose("mproc.Array", "totable", function(self)
  util.check_self("totable", self, "mproc.Array")
  local ok, lock = pcall(self.get_lock, self)
  if not ok or lock:held() then return core.array_totable(self) end
  lock:acquire()
  local ok2, t = pcall(core.array_totable, self)
  lock:release()
  if not ok2 then error(t, 0) end
  return t
end)

return M
