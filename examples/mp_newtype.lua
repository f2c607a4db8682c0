-- Python's Doc/includes/mp_newtype.py, ported to mproc's shared containers.
--
-- The Python example registers a class (Foo, whole or with some methods
-- exposed), a generator and a module with a BaseManager, whose server
-- process owns them while other processes call them through proxies. In
-- mproc there is no server: an object keeps its state in a Dict, a List or
-- a Namespace, which every process maps, and its methods are plain Lua
-- functions, which travel with the object to whoever it is given to.
-- Run it: lua5.4 examples/mp_newtype.lua
local mproc = require "mproc"

local main = mproc.getpid()

-- Foo: its state (how often each method ran) lives in a Dict, so calls made
-- in any process count in the one object.
local Foo = {}
Foo.__index = Foo

function Foo.new()
  return setmetatable({ calls = mproc.Dict { f = 0, g = 0, _h = 0 } }, Foo)
end

local function called(self, name)
  self.calls:update_key(name, function(n) return n + 1 end)
  print(("you called Foo.%s() in process %s"):format(name, mproc.getpid() == main and "main" or "child"))
end

function Foo:f() called(self, "f") end
function Foo:g() called(self, "g") end
function Foo:_h() called(self, "_h") end

-- Python's `exposed=('g', '_h')`: a view of an object with only some of
-- its methods.
local function exposing(obj, names)
  local view = {}
  for _, name in ipairs(names) do
    view[name] = function(_, ...) return obj[name](obj, ...) end
  end
  return view
end

-- baz(), the generator: squares handed out one at a time to whichever
-- process asks next. Taking the next one is an update_key, atomic under
-- the Dict's lock, so no square goes to two processes and none is skipped.
local function baz(n)
  local state = mproc.Dict { i = 0 }
  return function()
    local taken
    state:update_key("i", function(i)
      taken = i < n and i or nil     -- f runs in the caller: it may set locals
      return taken and i + 1 or i
    end)
    return taken and taken * taken
  end
end

local f1 = Foo.new()
f1:f()
f1:g()
assert(f1._h ~= nil and exposing(f1, { "f", "g" })._h == nil)

local f2 = exposing(Foo.new(), { "g", "_h" })
f2:g()
f2:_h()
assert(f2.f == nil)

-- a child calls f1's methods; the counts are the same object's
local p = mproc.Process(function() f1:f(); f1:f() end):start()
p:join()
print(("f1's counts: f=%d g=%d _h=%d"):format(f1.calls.f, f1.calls.g, f1.calls._h))

-- the generator, drained by two children and the parent together
local it = baz(10)
local got = mproc.List()
local children = {}
for c = 1, 2 do
  children[c] = mproc.Process(function()
    for v in it do got:append(v) end
  end):start()
end
for v in it do got:append(v) end
for _, c in ipairs(children) do c:join() end
got:sort()
io.write("the squares, each once: ")
for _, v in ipairs(got) do io.write(("<%d> "):format(v)) end
print()

-- Python's operator module served by the manager: here a module travels by
-- reference, so a child simply uses its own copy of it.
local results = mproc.Namespace()
mproc.Process(function()
  results.add = 23 + 45
  results.pow = 2 ^ 94
end):start():join()
print("op.add(23, 45) =", results.add)
print("op.pow(2, 94) =", results.pow)
