-- mproc.managers: Dict, List and Namespace in shared memory, and
-- Manager(), as Python's multiprocessing.Manager without its server
-- process. The containers are C types (src/store.c, src/dict.c,
-- src/list.c): every read and write takes the container's robust lock,
-- and values travel as codec bytes (copies, as with Python's proxies).
-- This file adds the argument checks and the methods made of the C ones:
-- the atomic ones run as one transaction under the lock
-- (core.store_locked), so a process killed inside them leaves the
-- container as it was. The private helpers are core functions taking the
-- object, never methods.
local core = require "mproc.core"
local util = require "mproc.util"

local M = {}

local CHUNK = 10000   -- update/extend: pairs per transaction

local function is(v, tname) return core.store_is(v, tname) end

local function check(fname, self, tname)
  if not is(self, tname) then
    local mt = getmetatable(self)
    local name = type(mt) == "table" and rawget(mt, "__name")
    if name == tname then util.misuse(("the %s is closed"):format(tname:sub(7))) end
    util.argerror(fname, 1, ("%s expected, got %s"):format(tname,
      type(name) == "string" and name or type(self)))
  end
end

-- The pairs of t (a table, Dict or Namespace) or nothing.
local function each_pair(fname, n, t)
  if is(t, "mproc.Dict") or is(t, "mproc.Namespace") or type(t) == "table" then
    return pairs(t)
  end
  util.argerror(fname, n, "table, mproc.Dict or mproc.Namespace expected, got " .. type(t))
end

-- The values of a sequence or a List, as a plain sequence.
local function sequence(fname, n, t)
  if is(t, "mproc.List") then return core.store_snapshot(t) end
  if type(t) ~= "table" then
    util.argerror(fname, n, "table or mproc.List expected, got " .. type(t))
  end
  return t
end

local locked, snapshot = core.store_locked, core.store_snapshot

-- Runs body(obj, items, i, j) for items 1..n in chunks, each one
-- transaction under obj's lock.
local function in_chunks(obj, n, body, items)
  for i = 1, math.max(n, 1), CHUNK do
    locked(obj, body, obj, items, i, math.min(i + CHUNK - 1, n))
  end
end

-- Dict -------------------------------------------------------------------

local function set_pairs(d, kv, i, j)
  for x = i, j do d[kv[2 * x - 1]] = kv[2 * x] end
end

-- d:update(t): every pair of t (a table, a Dict or a Namespace) set in d,
-- as one atomic change for up to 10,000 pairs.
local function update(self, t, fname)
  local kv, n = {}, 0
  for k, v in each_pair(fname or "update", 2, t) do
    n = n + 1
    kv[2 * n - 1], kv[2 * n] = k, v
  end
  in_chunks(self, n, set_pairs, kv)
end

-- d:keys(), d:values() -> sequences in insertion order; d:items() -> a
-- sequence of {k, v}; d:copy() -> a plain table {[k] = v}. One snapshot
-- each.
local function keys(self)
  check("keys", self, "mproc.Dict")
  return (snapshot(self))
end

local function values(self)
  check("values", self, "mproc.Dict")
  local _, vs = snapshot(self)
  return vs
end

local function items(self)
  check("items", self, "mproc.Dict")
  local ks, vs = snapshot(self)
  for i, k in ipairs(ks) do ks[i] = { k, vs[i] } end
  return ks
end

local function copy(self)
  check("copy", self, "mproc.Dict")
  local ks, vs = snapshot(self)
  local t = {}
  for i, k in ipairs(ks) do t[k] = vs[i] end
  return t
end

local function update_key_body(self, k, f)
  local new = f(self:get(k))
  self[k] = new
  return new
end

local KEY_TYPES = { string = true, number = true, boolean = true }

-- d:update_key(k, f) -> the new value: f(old value or nil) under the
-- Dict's lock, its result stored at k (nil deletes k), as one atomic
-- change. An error in f leaves k as it was and goes on.
local function dict_update_key(self, k, f)
  check("update_key", self, "mproc.Dict")
  if not KEY_TYPES[type(k)] or k ~= k then
    util.argerror("update_key", 1, "key must be a string, number or boolean, got " ..
      (k ~= k and "NaN" or type(k)))
  end
  util.check_callable("update_key", 2, f)
  return locked(self, update_key_body, self, k, f)
end

for name, f in pairs {
  update = function(self, t) check("update", self, "mproc.Dict"); update(self, t) end,
  keys = keys, values = values, items = items, copy = copy,
  update_key = dict_update_key,
} do core.interpose("mproc.Dict", name, f) end

-- mproc.Dict([t]) -> a new Dict holding t's pairs
function M.Dict(init)
  if init ~= nil then each_pair("Dict", 1, init) end
  local d, err, code = core.dict_new()
  if not d then return nil, err, code end
  if init ~= nil then update(d, init, "Dict") end
  return d
end

-- Namespace --------------------------------------------------------------

-- A Namespace's only method: as in Python, where a Namespace proxy's own
-- names are not the referent's attributes, a field of that name is
-- refused (rather than hidden behind the method, as a Dict key named like
-- a method is).
local NS_METHODS = { update_key = true }

local function ns_update_key_body(self, name, f)
  local new = f(self[name])
  self[name] = new
  return new
end

-- ns:update_key(name, f) -> the new value: f(old value or nil) under the
-- Namespace's lock, its result stored in the field (nil deletes it), as
-- one atomic change. An error in f leaves the field as it was and goes on.
local function ns_update_key(self, name, f)
  check("update_key", self, "mproc.Namespace")
  if type(name) ~= "string" then
    util.argerror("update_key", 1, "field name must be a string, got " .. type(name))
  elseif NS_METHODS[name] then
    util.argerror("update_key", 1, ("'%s' is a Namespace method, not a field"):format(name))
  end
  util.check_callable("update_key", 2, f)
  return locked(self, ns_update_key_body, self, name, f)
end

core.interpose("mproc.Namespace", "update_key", ns_update_key)

-- mproc.Namespace([t]) -> a new Namespace with t's string-keyed fields
function M.Namespace(init)
  if init ~= nil then
    for k in each_pair("Namespace", 1, init) do
      if type(k) ~= "string" then
        util.argerror("Namespace", 1, "field names must be strings, got " .. type(k))
      elseif NS_METHODS[k] then
        util.argerror("Namespace", 1, ("'%s' is a Namespace method, not a field"):format(k))
      end
    end
  end
  local ns, err, code = core.namespace_new()
  if not ns then return nil, err, code end
  if init ~= nil then update(ns, init, "Namespace") end
  return ns
end

-- List -------------------------------------------------------------------

local function append_all(l, vs, i, j)
  for x = i, j do l:append(vs[x]) end
end

-- l:extend(t): every value of the sequence t (or List) appended, as one
-- atomic change for up to 10,000 values.
local function extend(self, t)
  local vs = sequence("extend", 2, t)
  in_chunks(self, #vs, append_all, vs)
end

local function remove_body(self, v)
  for i, x in ipairs(snapshot(self)) do
    if x == v then self:pop(i); return true end
  end
  return false
end

-- l:remove(v) -> true when the first element equal to v (==) was removed,
-- false when there is none.
local function remove(self, v)
  check("remove", self, "mproc.List")
  return locked(self, remove_body, self, v)
end

-- l:index(v, [start]) -> the position of the first element == v, at or
-- after start; nil when there is none.
local function index(self, v, start)
  check("index", self, "mproc.List")
  if start ~= nil and math.type(start) ~= "integer" then
    util.argerror("index", 2, "integer expected, got " .. type(start))
  end
  local vs = snapshot(self)
  for i = math.max(start or 1, 1), #vs do
    if vs[i] == v then return i end
  end
  return nil
end

-- l:count(v) -> how many elements are == v
local function count(self, v)
  check("count", self, "mproc.List")
  local n = 0
  for _, x in ipairs(snapshot(self)) do
    if x == v then n = n + 1 end
  end
  return n
end

local function less(a, b) return a < b end

local function sort_body(self, cmp)
  local vs = snapshot(self)
  local perm = {}
  for i = 1, #vs do perm[i] = i end
  -- stable, as Python's: equal elements keep their order
  table.sort(perm, function(a, b)
    local va, vb = vs[a], vs[b]
    if cmp(va, vb) then return true end
    if cmp(vb, va) then return false end
    return a < b
  end)
  core.list_permute(self, perm)
end

-- l:sort([cmp]): sorts in place, stably, by cmp (as table.sort's; default
-- <), as one atomic change. An error in cmp leaves the List as it was.
local function sort(self, cmp)
  check("sort", self, "mproc.List")
  util.check_callable("sort", 1, cmp, true)
  locked(self, sort_body, self, cmp or less)
end

local function reverse_body(self)
  local n, perm = #self, {}
  for i = 1, n do perm[i] = n - i + 1 end
  core.list_permute(self, perm)
end

-- l:reverse(): reverses in place
local function reverse(self)
  check("reverse", self, "mproc.List")
  locked(self, reverse_body, self)
end

-- l:totable() -> a plain sequence of the values, read at one instant
local function totable(self)
  check("totable", self, "mproc.List")
  return snapshot(self)
end

local function list_update_key_body(self, i, f)
  local n = #self
  if i < 1 or i > n then
    error(("List index %d out of range (1..%d)"):format(i, n), 0)
  end
  local new = f(self[i])
  if new == nil then error("update_key: a List cannot hold nil (use pop or remove)", 0) end
  self[i] = new
  return new
end

-- l:update_key(i, f) -> the new value: l[i] = f(l[i]) under the List's
-- lock, as one atomic change; i must be in 1..#l.
local function list_update_key(self, i, f)
  check("update_key", self, "mproc.List")
  if math.type(i) ~= "integer" then
    util.argerror("update_key", 1, "integer expected, got " .. (math.type(i) or type(i)))
  end
  util.check_callable("update_key", 2, f)
  return locked(self, list_update_key_body, self, i, f)
end

for name, f in pairs {
  extend = function(self, t) check("extend", self, "mproc.List"); extend(self, t) end,
  remove = remove, index = index, count = count, sort = sort, reverse = reverse,
  totable = totable, update_key = list_update_key,
} do core.interpose("mproc.List", name, f) end

-- mproc.List([t]) -> a new List holding the values of t (a sequence or List)
function M.List(init)
  local vs = init ~= nil and sequence("List", 1, init) or nil
  local l, err, code = core.list_new()
  if not l then return nil, err, code end
  if vs then in_chunks(l, #vs, append_all, vs) end
  return l
end

-- Manager ----------------------------------------------------------------

local Manager = { __name = "mproc.Manager" }
Manager.__index = Manager

local function made(self, obj, ...)
  if obj ~= nil then self._objects[obj] = true end
  return obj, ...
end

local function factory(fname, make)
  return function(self, ...)
    util.check_self(fname, self, Manager)
    if self._shut then util.misuse(("%s: the Manager is shut down"):format(fname)) end
    return made(self, make(...))
  end
end

-- The mproc constructors, loaded on first use.
local function ctor(name)
  return function(...) return require("mproc")[name](...) end
end

Manager.dict = factory("dict", M.Dict)
Manager.list = factory("list", M.List)
Manager.Namespace = factory("Namespace", M.Namespace)
for _, name in ipairs { "Queue", "JoinableQueue", "Lock", "RLock", "Semaphore",
  "BoundedSemaphore", "Event", "Condition", "Barrier", "Value", "Array", "Pool" } do
  Manager[name] = factory(name, ctor(name))
end

-- m:shutdown(): this process lets go of what the Manager made (Pools are
-- terminated and joined, the rest closed), as Python's shutdown stops
-- its server; processes that have their own handles keep them. The
-- Manager then refuses to make more. Running it twice does nothing.
function Manager:shutdown()
  util.check_self("shutdown", self, Manager)
  if self._shut then return end
  self._shut = true
  local objects = self._objects
  self._objects = {}
  for obj in pairs(objects) do
    local mt = getmetatable(obj)
    if type(mt) == "table" and mt.__name == "mproc.Pool" then
      obj:terminate()
      obj:join()
    elseif type(mt) == "table" and mt.__close then
      mt.__close(obj)
    end
  end
end

Manager.__close = Manager.shutdown

function Manager:__tostring()
  if self._shut then return "mproc.Manager (shut down)" end
  local n = 0
  for _ in pairs(self._objects) do n = n + 1 end
  return ("mproc.Manager (%d objects)"):format(n)
end

-- mproc.Manager() -> a Manager: m:dict(), m:list(), m:Namespace(),
-- m:Queue() ... make the same objects as mproc.Dict, mproc.List ... and
-- m:shutdown() (or <close>) lets go of them together.
function M.Manager()
  -- what it made, weakly: an object dropped by the user goes as usual
  return setmetatable({ _objects = setmetatable({}, { __mode = "k" }), _shut = false }, Manager)
end

return M
