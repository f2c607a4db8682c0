local mproc = require "mproc"
local core = require "mproc.core"
local support = require "support"

local within = support.within

-- 4 processes each add 1 to obj.n `each` times with update_key; obj.n after.
local function increments(obj, each)
  local ps = {}
  for i = 1, 4 do
    ps[i] = mproc.Process(function()
      for _ = 1, each do obj:update_key("n", function(n) return n + 1 end) end
    end):start()
  end
  for _, p in ipairs(ps) do assert.are.equal(0, p:join(60)) end
  return obj.n
end

-- A child calls obj:update_key("n", f), f changing other fields, and is
-- SIGKILLed inside it, holding the lock; returns once it is dead.
local function killed_inside_update_key(obj)
  local inside = mproc.Event()
  local p = mproc.Process(function()
    obj:update_key("n", function(n)
      obj.other = "new"
      for i = 1, 1000 do obj["junk" .. i] = i end
      inside:set()
      mproc.sleep(60)
      return n + 1
    end)
  end):start()
  local entered = inside:wait(10)
  p:kill()
  assert.are.equal(-9, p:join(10))
  assert.is_true(entered)
end

local function whole(obj)
  local ok, why = core.store_check(obj)
  assert(ok, why)
  return true
end

describe("Dict", function()
  it("keeps strings, integers, floats, booleans and tables, apart and whole", function()
    local d = mproc.Dict()
    local values = { s = "text", i = 42, f = 42.0, big = math.maxinteger, neg = -7.5,
      t = true, no = false, tab = { 1, 2, x = { y = "z" } }, empty = "", bin = "a\0b" }
    for k, v in pairs(values) do d[k] = v end
    for k, v in pairs(values) do
      if type(v) == "table" then assert.are.same(v, d[k]) else assert.are.equal(v, d[k]) end
      assert.are.equal(math.type(v), math.type(d[k]))
    end
    assert.are.equal(10, #d)
    assert.is_true(whole(d))
  end)

  it("takes string, number and boolean keys; 1.0 is the key 1, as in a table", function()
    local d = mproc.Dict()
    d[1] = "int"; d["1"] = "str"; d[true] = "yes"; d[2.5] = "float"
    assert.are.equal("int", d[1.0])
    d[1.0] = "again"
    assert.are.equal("again", d[1])
    assert.are.equal("str", d["1"])
    assert.are.equal("yes", d[true])
    assert.are.equal("float", d[2.5])
    assert.are.equal(4, #d)
    local keys = d:keys()
    assert.are.equal("integer", math.type(keys[1]))
  end)

  it("refuses NaN, nil, table and function keys", function()
    local d = mproc.Dict()
    assert.has_error(function() d[0 / 0] = 1 end, "Dict key is NaN")
    assert.has_error(function() return d[{}] end, "Dict key must be a string, number or boolean, got table")
    assert.has_error(function() d[print] = 1 end, "Dict key must be a string, number or boolean, got function")
    assert.has_error(function() return d:get(nil) end)
  end)

  it("deletes a key set to nil, and counts with # and len()", function()
    local d = mproc.Dict { a = 1, b = 2 }
    d.a = nil
    d.zzz = nil     -- absent: nothing happens
    assert.is_nil(d.a)
    assert.are.equal(1, #d)
    assert.are.equal(1, d:len())
    assert.are.equal("mproc.Dict (1 items)", tostring(d))
  end)

  it("gives a value's copy: changing it changes nothing shared", function()
    local d = mproc.Dict { t = { x = 1 } }
    d.t.x = 2
    assert.are.equal(1, d.t.x)
    local t = d.t
    t.x = 3
    d.t = t
    assert.are.equal(3, d.t.x)
  end)

  it("puts methods before keys: d.keys is the method, d:get('keys') the value", function()
    local d = mproc.Dict()
    d.keys = "a value"
    assert.are.equal("function", type(d.keys))
    assert.are.equal("a value", d:get("keys"))
    assert.are.same({ "keys" }, d:keys())
  end)

  it("has get, pop, setdefault with Python's defaults", function()
    local d = mproc.Dict { a = 1 }
    assert.are.equal(1, d:get("a", 5))
    assert.are.equal(5, d:get("b", 5))
    assert.is_nil(d:get("b"))
    assert.are.equal(1, d:pop("a"))
    assert.is_nil(d.a)
    assert.are.equal("dflt", d:pop("a", "dflt"))
    assert.is_nil(d:pop("a"))
    assert.are.equal(10, d:setdefault("c", 10))
    assert.are.equal(10, d:setdefault("c", 20))
    assert.are.equal(10, d.c)
  end)

  it("gives keys, values, items and pairs in insertion order, from one snapshot", function()
    local d = mproc.Dict()
    for i = 1, 50 do d["k" .. i] = i end
    for i = 1, 50, 3 do d["k" .. i] = nil end
    d.k1 = "back"      -- deleted, then set again: goes last
    local ks, vs, its = d:keys(), d:values(), d:items()
    assert.are.equal(#d, #ks)
    assert.are.equal("k1", ks[#ks])
    assert.are.equal("back", vs[#vs])
    for i, k in ipairs(ks) do
      assert.are.same({ k, vs[i] }, its[i])
    end
    local n = 0
    for k, v in pairs(d) do
      n = n + 1
      assert.are.equal(ks[n], k)
      assert.are.equal(vs[n], v)
      d[k] = nil       -- changes do not disturb the snapshot
      d["new" .. n] = n
    end
    assert.are.equal(#ks, n)
  end)

  it("updates from a table, a Dict or a Namespace, copies and clears", function()
    local d = mproc.Dict { a = 1 }
    d:update { b = 2, c = 3 }
    d:update(mproc.Dict { d = 4 })
    d:update(mproc.Namespace { e = 5 })
    assert.are.same({ a = 1, b = 2, c = 3, d = 4, e = 5 }, d:copy())
    d:clear()
    assert.are.equal(0, #d)
    assert.are.same({}, d:copy())
    d.x = 1
    assert.are.same({ x = 1 }, d:copy())
  end)

  it("update_key: f(old) stored atomically, nil deletes, the new value returned", function()
    local d = mproc.Dict()
    assert.are.equal(1, d:update_key("n", function(old) return (old or 0) + 1 end))
    assert.are.equal(2, d:update_key("n", function(old) return old + 1 end))
    assert.is_nil(d:update_key("n", function() return nil end))
    assert.are.equal(0, #d)
  end)

  it("update_key: an error in f leaves every change made inside it undone", function()
    local d = mproc.Dict { n = 1 }
    local ok, err = pcall(d.update_key, d, "n", function()
      d.other = "set inside"       -- part of the same transaction
      d.n = 100
      error({ code = 7 })          -- any error object goes on as it was
    end)
    assert.is_false(ok)
    assert.are.same({ code = 7 }, err)
    assert.are.same({ n = 1 }, d:copy())
    assert.is_true(whole(d))
  end)

  it("update_key: reads and writes of other keys in f are part of it", function()
    local d = mproc.Dict { a = 10, b = 0 }
    d:update_key("a", function(a)
      d.b = d.b + a
      return 0
    end)
    assert.are.same({ a = 0, b = 10 }, d:copy())
  end)

  it("update_key: more changes than the undo log holds raise and are undone", function()
    local d = mproc.Dict { n = 1 }
    local ok, err = pcall(d.update_key, d, "n", function(n)
      for i = 1, 400000 do d[i] = i end
      return n + 1
    end)
    assert.is_false(ok)
    assert.matches("cannot store in the Dict: too many changes in one atomic operation", err, 1, true)
    assert.are.same({ n = 1 }, d:copy())
    assert.is_true(whole(d))
    d:update_key("n", function(n) return n + 1 end)   -- usable, and the log is whole
    assert.are.equal(2, d.n)
  end)

  it("holds Dicts, Lists and Namespaces by reference, as Python's nested proxies", function()
    local d, inner, l = mproc.Dict(), mproc.Dict(), mproc.List()
    d.inner, d.list = inner, l
    d.inner.x = 1           -- d.inner is the same Dict
    d.list:append("a")
    assert.are.equal(1, inner.x)
    assert.are.same({ "a" }, l:totable())
    assert.is_true(d.inner == inner)
    assert.is_false(d.inner == d)
    d.self = d
    assert.is_true(d.self.self == d)
  end)

  it("raises for a closed Dict, and closes twice without harm", function()
    local d = mproc.Dict { a = 1 }
    local mt = getmetatable(d)
    mt.__close(d)
    mt.__close(d)
    assert.has_error(function() return d.a end, "the Dict is closed")
    assert.are.equal("mproc.Dict (closed)", tostring(d))
    assert.has_error(function() d:keys() end, "the Dict is closed")
  end)

  it("refuses bad arguments, naming the function", function()
    local d = mproc.Dict()
    assert.has_error(function() mproc.Dict(5) end,
      "bad argument #1 to 'Dict' (table, mproc.Dict or mproc.Namespace expected, got number)")
    assert.has_error(function() d:update(5) end,
      "bad argument #2 to 'update' (table, mproc.Dict or mproc.Namespace expected, got number)")
    assert.has_error(function() d:update_key("k", 5) end,
      "bad argument #2 to 'update_key' (function expected, got number)")
    assert.has_error(function() d:update_key({}, print) end,
      "bad argument #1 to 'update_key' (key must be a string, number or boolean, got table)")
    assert.has_error(function() d.keys({}) end,
      "bad argument #1 to 'keys' (mproc.Dict expected, got table)")
    assert.has_error(function() d:setdefault("k", nil) end)
    assert.has_error(function() d.x = coroutine.create(print) end, "cannot send value: coroutine")
  end)

  it("is shared with children: what one writes the others read", function()
    local d = mproc.Dict { from = "parent" }
    assert.are.equal(0, within(10, function()
      assert(d.from == "parent")
      d.child = mproc.getpid()
    end))
    assert.are.equal("number", type(d.child))
  end)

  it("keeps 4 processes x 2000 update_key increments: exactly 8000", function()
    assert.are.equal(8000, increments(mproc.Dict { n = 0 }, 2000))
  end)

  it("grows while older processes keep reading it", function()
    local d, go = mproc.Dict { first = 1 }, mproc.Event()
    local done = mproc.Event()
    local p = mproc.Process(function()
      go:wait()
      for i = 1, 20000 do assert(d[i] == i * 2, "missing " .. i) end
      assert(#d == 20001)
      d.child_saw = true
      done:set()
    end):start()
    for i = 1, 20000 do d[i] = i * 2 end
    go:set()
    assert.is_true(done:wait(30))
    assert.are.equal(0, p:join(10))
    assert.is_true(d.child_saw)
  end)

  it("gives its memory back after clear()", function()
    local d = mproc.Dict()
    local data0 = core.store_sizes(d)
    for i = 1, 100000 do d[i] = ("v"):rep(40) end
    local data1 = core.store_sizes(d)
    assert.is_true(data1 > 4 * 1024 * 1024)
    d:clear()
    local data2, top = core.store_sizes(d)
    assert.are.equal(data0, data2)
    assert.is_true(top < 4096)
    d.again = 1
    assert.are.equal(1, d.again)
    assert.is_true(whole(d))
  end)

  it("gives a large value's pages back when it is deleted", function()
    local d = mproc.Dict()
    d.small = 1
    d.big = ("x"):rep(8 * 1024 * 1024)
    d.big = nil
    d.big2 = ("y"):rep(8 * 1024 * 1024)   -- reuses the freed block
    assert.are.equal(8 * 1024 * 1024, #d.big2)
    assert.is_true(whole(d))
  end)

  it("keeps values of every size whole", function()
    local d = mproc.Dict()
    for _, n in ipairs { 0, 1, 7, 8, 9, 100, 511, 512, 513, 4096, 70000, 3 * 1024 * 1024 } do
      d[n] = ("z"):rep(n)
      d["t" .. n] = { s = ("q"):rep(n) }
    end
    for _, n in ipairs { 0, 1, 7, 8, 9, 100, 511, 512, 513, 4096, 70000, 3 * 1024 * 1024 } do
      assert.are.equal(("z"):rep(n), d[n])
      assert.are.equal(("q"):rep(n), d["t" .. n].s)
    end
    assert.is_true(whole(d))
  end)

  it("leaks no descriptor: a collected Dict closes its file", function()
    collectgarbage()
    local before = support.fd_count()
    for _ = 1, 20 do
      local d = mproc.Dict { a = 1 }
      d.b = mproc.List { 1 }
    end
    collectgarbage()
    collectgarbage()
    assert.are.equal(before, support.fd_count())
  end)

  it("undoes the change of a process killed holding its lock inside update_key", function()
    local d = mproc.Dict { n = 1, other = "old" }
    killed_inside_update_key(d)
    assert.are.same({ n = 1, other = "old" }, d:copy())
    assert.is_true(whole(d))
    d.n = 2
    assert.are.equal(2, d:update_key("n", function(n) return n end))
  end)
end)

describe("a wait for a container's lock", function()
  it("is interrupted by Ctrl-C (SIGINT in lua5.4), taking nothing", function()
    local out = support.run_lua([[
      local mproc = require "mproc"
      local core = require "mproc.core"
      local me = mproc.getpid()
      local d, inside = mproc.Dict { n = 1 }, mproc.Event()
      local holder = mproc.Process(function()
        d:update_key("n", function(n) d.half = true; inside:set(); mproc.sleep(60); return n + 1 end)
      end)
      holder.daemon = true
      holder:start()
      inside:wait()
      local killer = require("support").interrupt_when_waiting(me)
      local t0 = mproc.monotonic()
      local ok, err = pcall(function() d.x = 1 end)
      print(ok, err, mproc.monotonic() - t0 < 30)
      killer:join()
      holder:kill()
      holder:join()
      print(d.n, d.half, d.x, core.store_check(d))
    ]], { env = "timeout 60" })
    assert.matches("^false\t[^\n]*interrupted!\ttrue\n1\tnil\tnil\ttrue\n$", out)
  end)
end)

describe("List", function()
  it("indexes from 1: l[#l+1] = v appends, reading past the end gives nil", function()
    local l = mproc.List { "a", "b" }
    assert.are.equal("a", l[1])
    assert.are.equal("b", l[2])
    assert.is_nil(l[3])
    assert.is_nil(l[100])
    l[3] = "c"
    l[1] = "A"
    assert.are.same({ "A", "b", "c" }, l:totable())
    assert.are.equal(3, #l)
    assert.are.equal("mproc.List (3 items)", tostring(l))
  end)

  it("raises for indexes outside 1..#l+1 when storing, below 1 when reading", function()
    local l = mproc.List { 1 }
    assert.has_error(function() l[3] = 1 end, "List index 3 out of range (1..2)")
    assert.has_error(function() l[0] = 1 end, "List index 0 out of range (1..2)")
    assert.has_error(function() return l[0] end, "List index 0 out of range (1..1)")
    assert.has_error(function() return l[1.5] end, "List index must be an integer, got 1.5")
    assert.has_error(function() return l[true] end, "List index must be an integer, got boolean")
    assert.has_error(function() l[1] = nil end, "a List cannot hold nil (use pop or remove)")
    assert.has_error(function() l:append(nil) end, "a List cannot hold nil (use pop or remove)")
  end)

  it("appends, extends, inserts and pops as Python's list", function()
    local l = mproc.List()
    l:append(1)
    l:extend { 2, 3 }
    l:extend(mproc.List { 4 })
    l:insert(1, 0)
    l:insert(3, 1.5)
    l:insert(#l + 1, 5)
    assert.are.same({ 0, 1, 1.5, 2, 3, 4, 5 }, l:totable())
    assert.are.equal(5, l:pop())
    assert.are.equal(0, l:pop(1))
    assert.are.equal(2, l:pop(3))
    assert.are.same({ 1, 1.5, 3, 4 }, l:totable())
    assert.has_error(function() l:pop(5) end, "List index 5 out of range (1..4)")
    assert.has_error(function() l:insert(6, 1) end, "List index 6 out of range (1..5)")
    l:clear()
    assert.is_nil(l:pop())
    assert.are.equal(0, #l)
  end)

  it("removes, finds and counts by ==", function()
    local l = mproc.List { "a", "b", "a", 1, 1.0 }
    assert.are.equal(3, l:count("a") + l:count(1) - 1)
    assert.are.equal(2, l:index("b"))
    assert.are.equal(3, l:index("a", 2))
    assert.is_nil(l:index("zz"))
    assert.is_true(l:remove("a"))
    assert.is_false(l:remove("zz"))
    assert.are.same({ "b", "a", 1, 1.0 }, l:totable())
  end)

  it("sorts stably, by < or by cmp, and reverses", function()
    local l = mproc.List { 3, 1, 2, 5, 4 }
    l:sort()
    assert.are.same({ 1, 2, 3, 4, 5 }, l:totable())
    l:sort(function(a, b) return a > b end)
    assert.are.same({ 5, 4, 3, 2, 1 }, l:totable())
    l:reverse()
    assert.are.same({ 1, 2, 3, 4, 5 }, l:totable())
    local r = mproc.List { { k = 1, i = 1 }, { k = 0, i = 2 }, { k = 1, i = 3 }, { k = 0, i = 4 } }
    r:sort(function(a, b) return a.k < b.k end)
    local order = {}
    for _, x in ipairs(r:totable()) do order[#order + 1] = x.i end
    assert.are.same({ 2, 4, 1, 3 }, order)
  end)

  it("leaves the List as it was when sort's cmp raises", function()
    local l = mproc.List { 3, "x", 1 }
    assert.has_error(function() l:sort() end)
    assert.are.same({ 3, "x", 1 }, l:totable())
    assert.is_true(whole(l))
  end)

  it("update_key replaces one element atomically", function()
    local l = mproc.List { 10, 20 }
    assert.are.equal(21, l:update_key(2, function(v) return v + 1 end))
    assert.are.same({ 10, 21 }, l:totable())
    assert.has_error(function() l:update_key(3, function(v) return v end) end,
      "List index 3 out of range (1..2)")
    assert.has_error(function() l:update_key(1, function() return nil end) end,
      "update_key: a List cannot hold nil (use pop or remove)")
    assert.are.same({ 10, 21 }, l:totable())
  end)

  it("iterates with ipairs and with pairs (a snapshot)", function()
    local l = mproc.List { "a", "b", "c" }
    local seen = {}
    for i, v in ipairs(l) do seen[i] = v end
    assert.are.same({ "a", "b", "c" }, seen)
    seen = {}
    for i, v in pairs(l) do seen[i] = v; l:append("more") end
    assert.are.same({ "a", "b", "c" }, seen)
  end)

  it("gets every item of 4 processes appending 2000 each, once", function()
    local l = mproc.List()
    local ps = {}
    for w = 1, 4 do
      ps[w] = mproc.Process(function() for i = 1, 2000 do l:append(w * 100000 + i) end end):start()
    end
    for _, p in ipairs(ps) do assert.are.equal(0, p:join(60)) end
    local seen, n = {}, 0
    for _, v in ipairs(l:totable()) do
      assert.is_nil(seen[v])
      seen[v], n = true, n + 1
    end
    assert.are.equal(8000, n)
    assert.is_true(whole(l))
  end)

  it("refuses bad arguments, naming the function", function()
    local l = mproc.List()
    assert.has_error(function() mproc.List(5) end,
      "bad argument #1 to 'List' (table or mproc.List expected, got number)")
    assert.has_error(function() l:extend("abc") end,
      "bad argument #2 to 'extend' (table or mproc.List expected, got string)")
    assert.has_error(function() l:sort(5) end, "bad argument #1 to 'sort' (function expected, got number)")
    assert.has_error(function() l:update_key("1", print) end,
      "bad argument #1 to 'update_key' (integer expected, got string)")
    assert.has_error(function() l:index(1, "x") end,
      "bad argument #2 to 'index' (integer expected, got string)")
  end)
end)

describe("Namespace", function()
  it("has fields: ns.x = v, ns.x, ns.x = nil, pairs", function()
    local ns = mproc.Namespace { a = 1 }
    ns.b = "two"
    ns.c = { 3 }
    ns.a = nil
    assert.is_nil(ns.a)
    assert.are.equal("two", ns.b)
    assert.are.same({ 3 }, ns.c)
    local t = {}
    for k, v in pairs(ns) do t[k] = v end
    assert.are.same({ b = "two", c = { 3 } }, t)
    assert.are.equal(2, #ns)
    assert.are.equal("mproc.Namespace (2 fields)", tostring(ns))
  end)

  it("has one method, update_key: every other name is a field", function()
    local ns = mproc.Namespace()
    assert.is_nil(ns.keys)
    ns.update = 1
    ns.get = 2
    assert.are.equal(1, ns.update)
    assert.are.equal(2, ns.get)
    assert.are.equal("function", type(ns.update_key))
  end)

  it("refuses a field named update_key rather than hide it", function()
    local ns = mproc.Namespace()
    assert.has_error(function() ns.update_key = 1 end, "'update_key' is a Namespace method, not a field")
    assert.has_error(function() mproc.Namespace { update_key = 1 } end,
      "bad argument #1 to 'Namespace' ('update_key' is a Namespace method, not a field)")
    assert.has_error(function() ns:update_key("update_key", print) end,
      "bad argument #1 to 'update_key' ('update_key' is a Namespace method, not a field)")
    assert.are.equal(0, #ns)
  end)

  it("update_key: f(old) stored atomically, nil deletes, an error leaves the old value", function()
    local ns = mproc.Namespace()
    assert.are.equal(1, ns:update_key("n", function(old) return (old or 0) + 1 end))
    assert.are.equal(2, ns:update_key("n", function(old) return old + 1 end))
    local ok, err = pcall(ns.update_key, ns, "n", function()
      ns.other = "set inside"
      error({ code = 7 })
    end)
    assert.is_false(ok)
    assert.are.same({ code = 7 }, err)
    assert.are.equal(2, ns.n)
    assert.is_nil(ns.other)
    assert.is_nil(ns:update_key("n", function() return nil end))
    assert.are.equal(0, #ns)
    assert.is_true(whole(ns))
  end)

  it("update_key: 4 processes x 1000 increments give exactly 4000", function()
    assert.are.equal(4000, increments(mproc.Namespace { n = 0 }, 1000))
  end)

  it("update_key: a process killed inside leaves the old value", function()
    local ns = mproc.Namespace { n = 1, other = "old" }
    killed_inside_update_key(ns)
    assert.are.equal(1, ns.n)
    assert.are.equal("old", ns.other)
    assert.are.equal(2, #ns)
    assert.is_true(whole(ns))
    assert.are.equal(2, ns:update_key("n", function(n) return n + 1 end))
  end)

  it("update_key refuses bad arguments, naming the function", function()
    local ns = mproc.Namespace()
    assert.has_error(function() ns:update_key(1, print) end,
      "bad argument #1 to 'update_key' (field name must be a string, got number)")
    assert.has_error(function() ns:update_key("x", 5) end,
      "bad argument #2 to 'update_key' (function expected, got number)")
    assert.has_error(function() ns.update_key({}, "x", print) end,
      "bad argument #1 to 'update_key' (mproc.Namespace expected, got table)")
  end)

  it("takes string names only", function()
    local ns = mproc.Namespace()
    assert.has_error(function() ns[1] = 1 end, "Namespace key must be a string, got number")
    assert.has_error(function() mproc.Namespace { 1 } end,
      "bad argument #1 to 'Namespace' (field names must be strings, got number)")
  end)

  it("is shared with children", function()
    local ns = mproc.Namespace()
    assert.are.equal(0, within(10, function() ns.x = "from child" end))
    assert.are.equal("from child", ns.x)
  end)
end)

describe("objects made at any time", function()
  -- Reaching an object a process did not inherit takes /proc/<pid>/fd
  -- (Linux); the portable build says it cannot.
  local linux_it = support.PORTABLE and function() end or it

  if support.PORTABLE then
    it("are refused, with the reason, where /proc cannot reach them", function()
      local pool <close> = mproc.Pool(1)
      pool:map(function() end, { 1 })
      local d = mproc.Dict()
      local ok, err = pcall(pool.apply, pool, function(x) return x end, { d })
      assert.is_false(ok)
      assert.matches("cannot receive a Dict: not inherited by this process", err, 1, true)
    end)
  end

  linux_it("reach Pool workers started before them", function()
    local pool <close> = mproc.Pool(2)
    pool:map(function() end, { 1, 2 })          -- the workers run
    local d, l, ns = mproc.Dict(), mproc.List(), mproc.Namespace()
    local pids = pool:map(function(x)
      d[x] = mproc.getpid()
      l:append(x)
      ns["f" .. x] = true
      return mproc.getpid()
    end, { 1, 2, 3, 4 })
    for i = 1, 4 do assert.are.equal(pids[i], d[i]) end
    assert.are.equal(4, #l)
    assert.is_true(ns.f4)
  end)

  -- A fresh interpreter: its worker starts before mproc.managers is loaded,
  -- and must load it to give what it receives its Lua methods.
  linux_it("come with their Lua methods to workers started before any container", function()
    local out, code = support.run_lua([[
      local mproc = require "mproc"
      local pool <close> = mproc.Pool(1)
      pool:apply(function() end)
      local d, l = mproc.Dict { a = 1 }, mproc.List { 3, 1, 2 }
      print(pool:apply(function()
        d:update { b = 2 }
        d:update_key("a", function(old) return old + 10 end)
        l:sort()
        return #d:keys(), d.a, table.concat(l:totable(), ",")
      end))
    ]])
    assert.are.equal(0, code, out)
    assert.are.equal("2\t11\t1,2,3\n", out)
  end)

  linux_it("travel from a worker to the parent", function()
    local pool <close> = mproc.Pool(1)
    local d = pool:apply(function()
      local made = mproc.Dict { made_in = mproc.getpid() }
      mproc.KEEP = made     -- the worker keeps it while the parent maps it
      return made
    end)
    assert.are.equal("number", type(d.made_in))
    d.seen_by_parent = true
    assert.is_true(pool:apply(function() return mproc.KEEP.seen_by_parent end))
  end)

  linux_it("travel from one child to a sibling through a Queue", function()
    local q, back, done = mproc.Queue(), mproc.Queue(), mproc.Event()
    local a = mproc.Process(function()
      local l = mproc.List { "from a" }
      q:put(l)
      done:wait()           -- keep l until the sibling has it
    end):start()
    local b = mproc.Process(function()
      local l = q:get()
      l:append("from b")
      back:put(l:totable())
    end):start()
    local code = b:join(30)
    local seen = back:get(true, 5)
    done:set()                      -- a ends even when b failed
    assert.are.equal(0, code)
    assert.are.equal(0, a:join(30))
    assert.are.same({ "from a", "from b" }, seen)
  end)

  linux_it("say so when no live process holds them any more", function()
    local q = mproc.Queue()
    assert.are.equal(0, within(10, function() q:put(mproc.Dict { x = 1 }) end))
    local ok, err = pcall(q.get, q)
    assert.is_false(ok)
    assert.matches("cannot receive a Dict: no live process holds it any more", err, 1, true)
  end)
end)

describe("Dict, List and Namespace", function()
  for _, make in ipairs { mproc.Dict, mproc.List, mproc.Namespace } do
    local mt = getmetatable(make())
    it(mt.__name .. " has no private function among its methods", function()
      local n = 0
      for name in pairs(mt.__methods) do
        n = n + 1
        assert.is_nil(name:find("^_"), name)
      end
      assert.is_true(n > 0)
    end)
  end
end)

describe("a container held only by another container", function()
  local linux_it = support.PORTABLE and function() end or it

  local function settle()
    collectgarbage()
    collectgarbage()
  end

  linux_it("lives: workers started before and after the parent let go of it append to it", function()
    local pool <close> = mproc.Pool(2)
    pool:map(function() end, { 1, 2 })          -- the workers run
    local results = mproc.Dict()
    results.log = mproc.List()                  -- no handle kept
    settle()
    pool:map(function(x) results.log:append(x) end, { 1, 2, 3, 4 })
    local late = within(30, function() results.log:append("late") end)
    assert.are.equal(0, late)
    local seen = results.log:totable()
    table.sort(seen, function(a, b) return tostring(a) < tostring(b) end)
    assert.are.same({ 1, 2, 3, 4, "late" }, seen)
  end)

  linux_it("lives when its holder is itself held only by a third container", function()
    local pool <close> = mproc.Pool(1)
    pool:map(function() end, { 1 })
    local top = mproc.Dict()
    do
      local mid = mproc.Namespace()
      mid.log = mproc.List { "first" }
      top.mid = mid
    end
    settle()
    pool:map(function(x) top.mid.log:append(x) end, { 1, 2 })
    assert.are.same({ "first", 1, 2 }, top.mid.log:totable())
  end)

  it("is let go of (its descriptor closed) when the reference is deleted or overwritten", function()
    settle()
    local d = mproc.Dict()
    local base = support.fd_count()
    d.a = mproc.List { 1 }
    d.b = { nested = { mproc.List { 2 } } }
    d.c = mproc.Dict()
    settle()
    assert.are.equal(base + 3, support.fd_count())    -- kept open by d
    d.a = nil
    assert.are.equal(base + 2, support.fd_count())
    d.b = "overwritten"
    assert.are.equal(base + 1, support.fd_count())
    d:pop("c")
    settle()
    assert.are.equal(base, support.fd_count())
    assert.is_true(whole(d))
  end)

  it("is let go of when another process deletes the reference, at this one's next use", function()
    settle()
    local d = mproc.Dict()
    local base = support.fd_count()
    d.x = mproc.List()
    d.y = mproc.List()
    settle()
    assert.are.equal(base + 2, support.fd_count())
    assert.are.equal(0, within(10, function() d.x = nil; d:clear() end))
    settle()
    assert.are.equal(0, #d)                           -- a use: the kept ones go
    assert.are.equal(base, support.fd_count())
  end)

  it("is kept once however many values name it, and let go of with the last", function()
    settle()
    local l = mproc.List()
    local base = support.fd_count()
    do
      local inner = mproc.Dict()
      for i = 1, 5 do l:append({ i, inner }) end
      l[2] = inner
    end
    settle()
    assert.are.equal(base + 1, support.fd_count())
    assert.are.equal(4, select(4, core.store_sizes(l)) + 3)   -- one kept store
    for _ = 1, 4 do l:pop() end
    settle()
    assert.are.equal(base + 1, support.fd_count())
    do
      local last = l:pop()        -- names the Dict: decoded, then let go of by l
      assert.are.equal(1, last[1])
      last[2].x = "usable"
      assert.are.equal("usable", last[2].x)
    end
    settle()
    assert.are.equal(base, support.fd_count())
    assert.is_true(whole(l))
  end)

  it("leaks nothing through cycles: containers that hold each other go together", function()
    settle()
    local before = support.fd_count()
    for _ = 1, 10 do
      local a, b = mproc.Dict(), mproc.List()
      a.b = b
      b:append(a)
      a.self = a
    end
    settle()
    assert.are.equal(before, support.fd_count())
  end)

  it("counts references whole through update_key, update, extend, sort and an error undone", function()
    local d, l, inner = mproc.Dict(), mproc.List(), mproc.List()
    d:update { a = inner, b = { inner } }
    l:extend { inner, 1, inner }
    l:sort(function(x, y) return tostring(x) < tostring(y) end)
    pcall(d.update_key, d, "a", function() d.c = inner; error("undone") end)
    d:update_key("b", function() return inner end)
    assert.is_nil(d.c)
    assert.is_true(d.a == inner and d.b == inner and l:count(inner) == 2)
    assert.is_true(whole(d))
    assert.is_true(whole(l))
  end)
end)

describe("Manager", function()
  it("makes every kind of object, and shutdown lets go of them", function()
    local m = mproc.Manager()
    local d, l, ns = m:dict { a = 1 }, m:list { 1 }, m:Namespace { x = 1 }
    local q, lock, v, pool = m:Queue(), m:Lock(), m:Value("i", 3), m:Pool(1)
    for _, name in ipairs { "JoinableQueue", "RLock", "Semaphore", "BoundedSemaphore", "Event",
      "Condition", "Array" } do
      assert.is_truthy(name == "Array" and m:Array("i", 2) or m[name](m))
    end
    assert.is_truthy(m:Barrier(2))
    assert.are.equal(1, d.a)
    assert.are.equal(1, l[1])
    assert.are.equal(1, ns.x)
    assert.is_true(q:put(1))
    assert.is_true(lock:acquire())
    lock:release()
    assert.are.equal(3, v.value)
    assert.are.equal(4, pool:apply(function() return 2 + 2 end))
    assert.matches("^mproc.Manager %(%d+ objects%)$", tostring(m))
    m:shutdown()
    m:shutdown()
    assert.are.equal("mproc.Manager (shut down)", tostring(m))
    assert.has_error(function() return d.a end, "the Dict is closed")
    assert.has_error(function() return l[1] end, "the List is closed")
    assert.is_true(q:closed())
    assert.has_error(function() m:dict() end, "dict: the Manager is shut down")
    assert.has_error(function() pool:apply(print) end)
  end)

  it("works as a to-be-closed variable, as Python's with Manager() as m", function()
    local d
    do
      local m <close> = mproc.Manager()
      d = m:dict()
      d.x = 1
      assert.are.equal(0, within(10, function() d.x = d.x + 1 end))
      assert.are.equal(2, d.x)
    end
    assert.has_error(function() return d.x end, "the Dict is closed")
  end)
end)

describe("examples/mp_newtype.lua", function()
  it("runs, and its children and parent share the objects", function()
    local out, code = support.run_lua(nil, { path = "examples/mp_newtype.lua" })
    assert.are.equal(0, code)
    assert.matches("f1's counts: f=3 g=1 _h=0", out, 1, true)
    assert.matches("the squares, each once: <0> <1> <4> <9> <16> <25> <36> <49> <64> <81> ", out, 1, true)
    assert.matches("op.add(23, 45) =\t68", out, 1, true)
  end)
end)

-- A token crafted to name a file of ours: pid:fd twice, dev:ino, nonce.
local FORGED = [[
  local mproc = require "mproc"
  local recv = debug.getregistry()["mproc.Dict"].__mproc_recv
  local pid = mproc.getpid()
  -- f: a file we hold whose first bytes are head, size bytes long
  local function token_for(path, head, size, nonce)
    local f = assert(io.open(path, "w+b"))
    f:write(head)
    if size > #head then f:seek("set", size - 1); f:write("\0") end
    f:flush()
    local p = io.popen("stat -L -c '%d %i' " .. path)
    local dev, ino = p:read("n", "n")
    p:close()
    local fd = require("mproc.core").fileno(f)
    return ("%x:%x:%x:%x:%x:%x:%x"):format(pid, fd, pid, fd, dev, ino, nonce), f
  end
  local function try(token)
    local ok, d = pcall(recv, token)
    if not ok then return d end
    local read_ok, err = pcall(function() return d.x end)
    return read_ok and "received and read" or err
  end
  local dir = os.tmpname()
  os.remove(dir)
  os.execute("mkdir " .. dir)
  local HDR, DATA = 4 << 20, 64 << 10
  -- an empty file
  local t1, f1 = token_for(dir .. "/empty", "", 0, 0x4d3)
  print(try(t1))
  -- a store's header with the right nonce, announcing more data than the file has
  local t2, f2 = token_for(dir .. "/short", string.pack("<I4I4I8I8", 0x6d707374, 1, 0x4d3, 1 << 20),
                           HDR + DATA, 0x4d3)
  print(try(t2))
  -- a token of our own Dict with nonce 0 ("any")
  local d = mproc.Dict { x = 1 }
  local own = mproc.dumps(d):match("(%x+:%x+:%x+:%x+:%x+:%x+:)%x+")
  print(try(own .. "0"))
  f1:close(); f2:close()
  os.execute("rm -r " .. dir)
]]

describe("a Dict token naming something else", function()
  it("is refused with a message, the receiver unharmed", function()
    local out, code = support.run_lua(FORGED, { env = "timeout 60" })
    assert.are.equal(0, code, out)
    local lines = support.lines(out)
    assert.are.equal(3, #lines, out)
    if support.PORTABLE then
      assert.matches("^cannot receive a Dict: not inherited by this process", lines[1])
      assert.matches("^cannot receive a Dict: not inherited by this process", lines[2])
    else
      assert.matches("^cannot receive a Dict: no live process holds it any more", lines[1])
      assert.matches("cannot lock the Dict: Invalid argument", lines[2], 1, true)
    end
    assert.matches("^cannot receive a Dict: malformed token '%x+:%x+:%x+:%x+:%x+:%x+:0'$", lines[3])
  end)
end)

-- Another process holds a Dict; this one receives it while mproc.managers
-- cannot load: the require raises each time, and nothing stays attached.
local LAYER_RAISES = [[
  local mproc = require "mproc"
  local nfds = require("support").fd_count   -- io.popen's own pipe would race the listing
  local q, done = mproc.Queue(), mproc.Event()
  local holder = mproc.Process(function()
    local d = mproc.Dict { x = 1 }
    q:put((mproc.dumps(d):match("(%x+:%x+:%x+:%x+:%x+:%x+:%x+)")))
    done:wait(30)
  end):start()
  local token = q:get(true, 10)
  assert(package.loaded["mproc.managers"] == nil)
  package.preload["mproc.managers"] = function() error("layer unavailable") end
  local recv = debug.getregistry()["mproc.Dict"].__mproc_recv
  collectgarbage(); collectgarbage()   -- what is garbage already goes before counting
  local before = nfds()
  local failed = 0
  for _ = 1, 20 do
    local ok, err = pcall(recv, token)
    if not ok and err:find("layer unavailable", 1, true) then failed = failed + 1 end
  end
  collectgarbage(); collectgarbage()
  local after = nfds()
  done:set()
  print(failed, after - before, holder:join(10))
]]

describe("a Dict received while its Lua layer cannot load", function()
  local linux_it = support.PORTABLE and function() end or it

  linux_it("raises, and leaves no descriptor or mapping behind", function()
    local out, code = support.run_lua(LAYER_RAISES, { env = "timeout 60" })
    assert.are.equal(0, code, out)
    assert.are.equal("20\t0\t0\n", out)
  end)
end)
