-- busted gives spec functions their own _ENV, which cannot travel to a
-- worker: the functions of this file see _G instead (busted's names first).
local describe, it, before_each, after_each, assert, pending = describe, it, before_each, after_each, assert, pending
local _ENV = _G -- luacheck: ignore 211
local mproc = require "mproc"
local support = require "support"
-- Specs of what only Linux has; the portable build (PORTABLE=1) skips them.
local linux_it = support.PORTABLE and function() end or it

-- Waits for a file to hold a pid; returns it.
local function pid_in(path)
  local pid
  assert.is_true(support.eventually(function()
    pid = tonumber(support.read_file(path) or "")
    return pid ~= nil
  end, 10))
  return pid
end

-- pids of processes whose parent is pid
local function children_of(pid)
  local s = support.read_file(("/proc/%d/task/%d/children"):format(pid, pid)) or ""
  local t = {}
  for p in s:gmatch("%d+") do t[#t + 1] = tonumber(p) end
  return t
end

local function all_gone(pids)
  for _, p in ipairs(pids) do
    local stat = support.read_file("/proc/" .. p .. "/stat")
    if stat and not stat:match("^%d+ %b() Z") then return false end
  end
  return true
end

describe("Pool", function()
  local pool
  local go = mproc.Event()   -- made before the pools, so their workers have it
  before_each(function() pool = mproc.Pool(2) end)
  after_each(function() pool:terminate() end)

  it("runs a function in another process and returns all its values", function()
    local a, b, pid = pool:apply(function(x, y) return x + y, x * y, mproc.getpid() end, {3, 4})
    assert.are.same({7, 12}, {a, b})
    assert.are_not.equal(mproc.getpid(), pid)
  end)

  it("names its workers: current_process() and parent_process() inside a task", function()
    local name, pid, ppid = pool:apply(function()
      local me = mproc.current_process()
      return me.name, me.pid, mproc.parent_process().pid
    end)
    assert.matches("^PoolWorker%-%d+$", name)
    assert.are_not.equal(mproc.getpid(), pid)
    assert.are.equal(mproc.getpid(), ppid)
  end)

  it("refuses a task too big for its board and stays usable", function()
    local small <close> = mproc.Pool(2, { board_size = 64 * 1024 })
    local big = ("x"):rep(64 * 1024)
    for _, call in ipairs({
      function() return small:apply_async(print, { big }) end,
      function() return small:map(print, { "a", big }, 1) end,
    }) do
      local ok, err = pcall(call)
      assert.is_false(ok)
      assert.matches("does not fit the pool's board", err, 1, true)
      assert.matches(" 0 tasks pending", tostring(small), 1, true)
    end
    assert.are.same({ 2, 4, n = 2 }, small:map(function(x) return x * 2 end, { 1, 2 }))
    assert.are.equal(60 * 1024, small:apply(string.len, { big:sub(1, 60 * 1024) }))
    assert.are.equal(#big, pool:apply(string.len, { big }))   -- the default board is bigger
    small:close()
    small:join()
  end)

  it("sends closures with their upvalues and modules by reference", function()
    local base, names = 100, { "a", "b" }
    local function f(i) return base + i, names[i], string.upper(names[i]), type(mproc.Pool) end
    assert.are.same({101, "a", "A", "table"}, { pool:apply(f, {1}) })
    base = 200 -- each call sends the upvalues' current values
    assert.are.equal(202, (pool:apply(f, {2})))
  end)

  it("keeps a table shared by two arguments, or two items of a chunk, shared", function()
    local t = { x = 1 }
    local function same(a, b) return rawequal(a, b), a.x, b.x end
    assert.are.same({ true, 1, 1 }, { pool:apply(same, { t, t }) })
    assert.are.same({ true, 1, 1 }, { pool:apply(same, table.pack(t, t)) })
    local function check(x) return x.x end
    assert.are.same({ 1, 1, n = 2 }, pool:map(check, { t, t }, 2))
    assert.are.same({ true, n = 1 }, pool:starmap(same, { { t, t } }))
    for _, v in pool:imap(check, { t, t }, 2) do assert.are.equal(1, v) end
  end)

  it("a worker keeps nothing of a map's items once it waits for tasks", function()
    local one <close> = mproc.Pool(1)
    local items = {}
    for i = 1, 100 do items[i] = { i } end
    local function note(x)
      _G.seen = _G.seen or setmetatable({}, { __mode = "k" })
      _G.seen[x] = true
      return x
    end
    assert.are.equal(100, #one:map(note, items, 30))
    mproc.sleep(0.2) -- the worker has found no task and waits
    assert.are.equal(0, one:apply(function()
      collectgarbage()
      collectgarbage()
      local n = 0
      for _ in pairs(_G.seen) do n = n + 1 end
      return n
    end))
  end)

  it("sends a function called again with its scalar upvalues' values of that call", function()
    -- the pool reuses a function's encoding while its upvalues are unchanged
    local k, s, on = 1, "a", true
    local function f() return k, math.type(k), s, on, type(string) end
    for _, want in ipairs({ { 1, "integer", "a", true }, { 2, "integer", "a", true },
                            { 2.0, "float", "a", true }, { 2.0, "float", "b", false } }) do
      k, s, on = want[1], want[3], want[4]
      want[5] = "table"
      assert.are.same(want, { pool:apply(f) })
      assert.are.same(want, { pool:apply_async(f):get(10) })
      assert.are.same({ want[1], n = 1 }, pool:map(function() return (f()) end, { 0 }))
      for _, v in pool:imap(f, { 0 }) do assert.are.equal(want[1], v) end
    end
  end)

  it("re-raises a task's error with the worker's pid and traceback", function()
    local function inner() error("boom in task") end
    local r = pool:apply_async(function() inner() end)
    local ok, err = pcall(r.get, r)
    assert.is_false(ok)
    assert.matches("boom in task", err)
    assert.matches("stack traceback %(pool worker pid %d+%)", err)
    assert.matches("in upvalue 'inner'", err)
    assert.is_false(r:successful())
  end)

  describe("errors travel as values", function()
    it("a table raised in a task arrives equal, its traceback beside it", function()
      local function inner() error({ code = 42, why = { "nested" } }) end
      local r = pool:apply_async(function() inner() end)
      local ok, err = pcall(r.get, r)
      assert.is_false(ok)
      assert.are.same({ code = 42, why = { "nested" } }, err)
      local tb = r:traceback()
      assert.matches("^%(error object is a table value%)\nstack traceback %(pool worker pid %d+%):\n", tb)
      assert.matches("in upvalue 'inner'", tb, 1, true)
      assert.is_nil(tb:find("mproc/pool.lua", 1, true), tb)
    end)

    it("a CalledProcessError from check_call keeps its returncode and metatable", function()
      local r = pool:apply_async(function()
        return mproc.subprocess.check_call({ "sh", "-c", "exit 3" })
      end)
      local ok, err = pcall(r.get, r)
      assert.is_false(ok)
      assert.are.equal(mproc.subprocess.CalledProcessError, getmetatable(err))
      assert.are.equal(3, err.returncode)
      assert.matches("returned non%-zero exit status 3", r:traceback())
    end)

    it("a value the codec cannot carry arrives as its text with the traceback", function()
      local r = pool:apply_async(function() error({ co = coroutine.create(print) }) end)
      local ok, err = pcall(r.get, r)
      assert.is_false(ok)
      assert.matches("^%(error object is a table value%)\nstack traceback %(pool worker pid %d+%):", err)
      assert.are.equal(err, r:traceback())
    end)

    it("a string error keeps its traceback in it; traceback() gives the same text", function()
      local r = pool:apply_async(function() error("plain") end)
      local ok, err = pcall(r.get, r)
      assert.is_false(ok)
      assert.matches("plain\nstack traceback %(pool worker pid %d+%):", err)
      assert.are.equal(err, r:traceback())
      assert.is_nil(pool:apply_async(function() return 1 end):traceback())
    end)

    it("error_callback gets the value and the traceback; map and imap raise the value", function()
      local got
      pool:apply_async(function() error({ n = 1 }) end, nil,
        { error_callback = function(e, tb) got = { e, tb } end }):wait(10)
      assert.are.same({ n = 1 }, got[1])
      assert.matches("stack traceback %(pool worker pid", got[2])
      local boom = function(x) if x == 2 then error({ item = x }) end return x end
      local ok, err = pcall(pool.map, pool, boom, { 1, 2, 3 })
      assert.is_false(ok)
      assert.are.same({ item = 2 }, err)
      ok, err = pcall(function() for _ in pool:imap(boom, { 1, 2, 3 }) do end end)
      assert.is_false(ok)
      assert.are.same({ item = 2 }, err)
    end)
  end)

  describe("tracebacks end with the task's own frames", function()
    local function inner() error("boom in task") end
    local function task() inner() end
    local function first(iter) return iter() end
    local cases = {
      { "apply", function() return pool:apply(task) end },
      { "apply_async", function() return pool:apply_async(task):get(10) end },
      { "map", function() return pool:map(task, {1, 2}) end },
      { "map_async", function() return pool:map_async(task, {1}):get(10) end },
      { "starmap", function() return pool:starmap(task, {{1}}) end },
      { "starmap_async", function() return pool:starmap_async(task, {{1}}):get(10) end },
      { "imap", function() return first(pool:imap(task, {1})) end },
      { "imap_unordered", function() return first(pool:imap_unordered(task, {1}, 1)) end },
    }
    for _, case in ipairs(cases) do
      it(case[1], function()
        local ok, err = pcall(case[2])
        assert.is_false(ok)
        assert.matches("boom in task\nstack traceback %(pool worker pid %d+%):\n", err)
        assert.matches("in upvalue 'inner'", err, 1, true)
        assert.is_nil(err:find("mproc/pool.lua", 1, true), err)
        assert.is_nil(err:find("xpcall", 1, true), err)
        local last = err:match("([^\n]*)$")
        assert.matches("^\tspec/pool_spec%.lua:%d+: in ", last)
      end)
    end
  end)

  it("returns nil, 'timeout' from get, and the value on a later get", function()
    local r = pool:apply_async(function() go:wait(10) return "late" end)
    assert.are.same({nil, "timeout"}, { r:get(0.01) })
    assert.is_false(r:ready())
    assert.has_error(function() r:successful() end)
    assert.is_false(r:wait(0))
    go:set()
    assert.are.equal("late", r:get(10))
    assert.is_true(r:ready())
    assert.is_true(r:successful())
  end)

  it("runs callback and error_callback in the parent", function()
    local got, failed = {}, nil
    local r1 = pool:apply_async(function(x) return x * 2, "two" end, {21},
      { callback = function(a, b) got = {a, b, mproc.getpid()} end })
    local r2 = pool:apply_async(function() error("cb boom") end, nil,
      { error_callback = function(e) failed = e end })
    r1:wait(10)
    r2:wait(10)
    assert.are.same({42, "two", mproc.getpid()}, got)
    assert.matches("cb boom", failed)
  end)

  describe("map", function()
    local list = {}
    for i = 1, 97 do list[i] = i end
    for _, c in ipairs({ "default", 1, 3, 50, 1000 }) do
      it("keeps input order with chunksize " .. c, function()
        local r = pool:map(function(x) return x * x end, list, c ~= "default" and c or nil)
        assert.are.equal(97, r.n)
        for i = 1, 97 do assert.are.equal(i * i, r[i]) end
      end)
    end

    it("returns an empty list for an empty input", function()
      assert.are.same({ n = 0 }, pool:map(function(x) return x end, {}))
    end)

    it("raises a failing item's error", function()
      assert.has_error(function()
        pool:map(function(x) if x == 5 then error("bad item") end return x end, list, 2)
      end)
    end)

    for _, name in ipairs({ "map", "map_async", "starmap", "starmap_async" }) do
      it(name .. " submits nothing when a later chunk cannot be sent", function()
        local path = support.tmpname()
        local function mark(x)
          local fh = io.open(path, "a")
          fh:write(tostring(x), "\n")
          fh:close()
          return x
        end
        local star = name:match("^star")
        local items = { 1, 2, coroutine.create(print) }
        if star then items = { {1}, {2}, {coroutine.create(print)} } end
        local ok, err = pcall(pool[name], pool, mark, items, 1)
        assert.is_false(ok)
        assert.matches("bad argument #2 to '" .. name .. "' (cannot send the arguments", err, 1, true)
        pool:close()
        pool:join()
        local ran = support.read_file(path)
        os.remove(path)
        assert.is_nil(ran)
      end)
    end

    describe("takes an iterator function as input", function()
      local function count_to(n)
        local i = 0
        return function() if i < n then i = i + 1 return i end end
      end
      local function pairs_to(n)
        local next_i = count_to(n)
        return function() local i = next_i() return i and { i, i } end
      end
      local sq = function(x) return x * x end
      local mul = function(a, b) return a * b end
      local cases = {
        { "map", function() return pool:map(sq, count_to(10), 3) end },
        { "map_async", function() return pool:map_async(sq, count_to(10)):get(10) end },
        { "starmap", function() return pool:starmap(mul, pairs_to(10)) end },
        { "starmap_async", function() return pool:starmap_async(mul, pairs_to(10), 4):get(10) end },
      }
      for _, case in ipairs(cases) do
        it(case[1] .. " calls it until it returns nil", function()
          local r = case[2]()
          assert.are.equal(10, r.n)
          for i = 1, 10 do assert.are.equal(i * i, r[i]) end
        end)
      end

      it("such as string.gmatch; an empty one gives an empty list", function()
        assert.are.same({ "A", "B", "C", n = 3 }, pool:map(string.upper, ("a b c"):gmatch("%a")))
        assert.are.same({ n = 0 }, pool:map(string.upper, function() return nil end))
      end)

      it("gives starmap all the values of each call (gmatch's captures), map the first", function()
        local src = "a=1 b=2"
        assert.are.same({ "a1", "b2", n = 2 }, pool:starmap(function(k, v) return k .. v end, src:gmatch("(%w+)=(%w+)")))
        assert.are.same({ "a", "b", n = 2 }, pool:map(function(k, v) return v or k end, src:gmatch("(%w+)=(%w+)")))
        assert.has_error(function() pool:starmap(print, src:gmatch("%w+")) end,
          "bad argument #2 to 'starmap' (item 1 is a string, not a table of arguments)")
      end)

      it("is not called when another argument is bad", function()
        local called = false
        local function src() called = true end
        assert.has_error(function() pool:map(print, src, 0) end)
        assert.has_error(function() pool:map_async(print, src, nil, { callback = 1 }) end)
        assert.is_false(called)
      end)
    end)

    it("map_async gives an AsyncResult; starmap spreads argument lists", function()
      local r = pool:map_async(function(s) return #s end, {"a", "bb", "ccc"})
      assert.are.same({1, 2, 3, n = 3}, r:get(10))
      assert.are.same({6, 20, n = 2}, pool:starmap(function(a, b) return a * b end, {{2, 3}, {4, 5}}))
      assert.are.same({3, n = 1}, pool:starmap_async(math.max, {{1, 3, 2}}):get(10))
    end)
  end)

  describe("imap", function()
    it("yields index and value in input order", function()
      local out = {}
      for i, v in pool:imap(function(x) mproc.sleep((5 - x) * 0.01) return x * 10 end, {1, 2, 3, 4}) do
        out[#out + 1] = {i, v}
      end
      assert.are.same({{1, 10}, {2, 20}, {3, 30}, {4, 40}}, out)
    end)

    it("next(timeout) gives the next item, nil, 'timeout' while it is not in, nil at the end", function()
      local gate = mproc.Event()          -- before the pool, so its workers inherit it
      local p <close> = mproc.Pool(1)
      local iter = p:imap(function(x) if x == 2 then gate:wait(10) end return x * 10 end, {1, 2})
      assert.are.same({1, 10}, { iter:next(10) })
      local early = { iter:next(0.05) }
      local now = { iter:next(0) }
      gate:set()
      assert.are.same({nil, "timeout"}, early)
      assert.are.same({nil, "timeout"}, now)
      assert.are.same({2, 20}, { iter:next(10) })
      assert.are.same({}, { iter:next(10) })
      assert.has_error(function() iter:next("1") end,
        "bad argument #1 to 'next' (timeout must be a number of seconds, got string)")
    end)

    it("imap_unordered yields every item once", function()
      local seen, n = {}, 0
      for i, v in pool:imap_unordered(function(x) return -x end, {1, 2, 3, 4, 5, 6, 7}, 2) do
        assert.are.equal(-i, v)
        seen[i], n = true, n + 1
      end
      assert.are.equal(7, n)
      for i = 1, 7 do assert.is_true(seen[i]) end
    end)

    it("pulls a lazy iterator only a bounded number of items ahead", function()
      local pulled, yielded, lag = 0, 0, 0
      local function source()
        if pulled == 3000 then return nil end
        pulled = pulled + 1
        lag = math.max(lag, pulled - yielded)
        return pulled
      end
      for i, v in pool:imap(function(x) return x + 1 end, source) do
        yielded = yielded + 1
        assert.are.equal(i + 1, v)
      end
      assert.are.equal(3000, yielded)
      assert.is_true(lag <= 600, "lag " .. lag)
    end)
  end)

  describe("lists with n (table.pack's)", function()
    local isnil = function(x) return x == nil end
    local three_nils = function() return table.pack(nil, nil, nil) end
    local function collect(iter)
      local out, n = {}, 0
      for i, v in iter do out[i], n = v, n + 1 end
      out.n = n
      return out
    end
    local cases = {
      { "map", function() return pool:map(isnil, three_nils()) end },
      { "map_async", function() return pool:map_async(isnil, three_nils(), 1):get(10) end },
      { "imap", function() return collect(pool:imap(isnil, three_nils())) end },
      { "imap_unordered", function() return collect(pool:imap_unordered(isnil, three_nils(), 2)) end },
    }
    for _, case in ipairs(cases) do
      it(case[1] .. " runs a task for each of the n items, nils included", function()
        assert.are.same({ true, true, true, n = 3 }, case[2]())
      end)
    end

    it("an n shorter than the list limits map and starmap to the first n", function()
      local id = function(x) return x end
      assert.are.same({ 1, 2, n = 2 }, pool:map(id, { 1, 2, 3, n = 2 }))
      assert.are.same({ 1, 2, n = 2 }, pool:starmap(math.max, { { 1 }, { 2 }, { 3 }, n = 2 }))
      assert.are.same({ n = 0 }, pool:map(id, { 1, 2, n = 0 }))
      assert.are.same({ [1] = 1, n = 1 }, collect(pool:imap(id, { 1, 2, n = 1 })))
    end)
  end)

  describe("multiple return values", function()
    local function two(x) return x, x * 10 end
    for _, name in ipairs({ "imap", "imap_unordered" }) do
      it(name .. " gives the index, then every value the function returned", function()
        local got = {}
        for i, a, b in pool[name](pool, two, { 1, 2, 3 }) do got[i] = { a, b } end
        assert.are.same({ { 1, 10 }, { 2, 20 }, { 3, 30 } }, got)
        local iter = pool[name](pool, function(x) return nil, x, nil end, { 7 })
        assert.are.same({ 1, nil, 7, nil, n = 4 }, table.pack(iter()))
        iter = pool[name](pool, function() end, { 7 })
        assert.are.same({ 1, n = 1 }, table.pack(iter()))
      end)
    end

    it("map and starmap keep each task's first value, as Python's map does", function()
      assert.are.same({ 1, 2, n = 2 }, pool:map(two, { 1, 2 }))
      assert.are.same({ 3, n = 1 }, pool:starmap(function(a, b) return a + b, "x" end, { { 1, 2 } }))
    end)

    it("apply and apply_async's get and callback give them all", function()
      assert.are.same({ 2, 20, n = 2 }, table.pack(pool:apply(two, { 2 })))
      local got
      local r = pool:apply_async(function() return nil, "b", nil end, nil,
        { callback = function(...) got = table.pack(...) end })
      assert.are.same({ nil, "b", nil, n = 3 }, table.pack(r:get(10)))
      assert.are.same({ nil, "b", nil, n = 3 }, got)
    end)
  end)

  describe("a task whose argument's metamethod raises", function()
    -- one metamethod each (the codec cannot yet send a slice holding two
    -- functions that share an upvalue)
    local function no_index()
      return setmetatable({ 1 }, { __index = function(_, k) error("no field " .. tostring(k) .. " here", 0) end })
    end
    local function no_len()
      return setmetatable({ 1 }, { __len = function() error("no length here", 0) end })
    end

    it("fails that task with the metamethod's error; the worker and the pool go on", function()
      local before = support.children()
      local r = pool:apply_async(function(x) return x end, no_index())
      local ok, err = pcall(r.get, r, 10)
      assert.is_false(ok)
      assert.matches("^no field n here", err)
      ok, err = pcall(pool.apply, pool, print, no_len())
      assert.is_false(ok)
      assert.matches("^no length here", err)
      ok, err = pcall(pool.starmap, pool, function(x) return x end, { no_index() })
      assert.is_false(ok)
      assert.matches("^no field n here", err)
      ok, err = pcall(pool.map, pool, function(t) return #t end, { no_len() })
      assert.is_false(ok)
      assert.matches("^no length here", err)
      assert.are.equal(5, pool:apply(function() return 5 end))
      assert.are.same(before, support.children()) -- the same workers: none died
    end)
  end)

  describe("an imap iterator closed early", function()
    for _, name in ipairs({ "imap", "imap_unordered" }) do
      it(name .. ": close() stops pulling its input; calling it again raises", function()
        local pulled = 0
        local iter = pool[name](pool, function(x) return x end, function() pulled = pulled + 1 return pulled end)
        local i = iter()
        assert.is_truthy(i)
        local seen = pulled
        iter:close()
        iter:close() -- twice is harmless
        assert.are.same({ 2, 4, n = 2 }, pool:map(function(x) return 2 * x end, { 1, 2 }))
        assert.are.equal(seen, pulled)
        local ok, err = pcall(iter)
        assert.is_false(ok)
        assert.matches(name .. ": the iterator is closed", err, 1, true)
        pool:close()
        pool:join()
        assert.are.equal(seen, pulled)
      end)

      it(name .. " works as a to-be-closed variable", function()
        local pulled = 0
        do
          local iter <close> = pool[name](pool, function(x) return x end, function() pulled = pulled + 1 return pulled end)
          assert.is_truthy(iter())
        end
        local seen = pulled
        pool:close()
        pool:join()
        assert.are.equal(seen, pulled)
      end)
    end
  end)

  describe("an imap iterator and terminate()", function()
    local function three()
      local i = 0
      return function() if i < 3 then i = i + 1 return i end end
    end
    for _, name in ipairs({ "imap", "imap_unordered" }) do
      for _, src in ipairs({ "list", "iterator" }) do
        it(name .. " over a " .. src .. " raises when the pool was terminated before it was read", function()
          local iter = pool[name](pool, function(x) return x end, src == "list" and {1, 2, 3} or three())
          pool:terminate()
          for _ = 1, 2 do -- and again on the next call
            local ok, err = pcall(iter)
            assert.is_false(ok)
            assert.matches(name .. ": the pool was terminated before", err, 1, true)
          end
        end)
      end
    end

    it("raises, after what was done, when terminated with input left mid-way", function()
      local n = 0
      local function endless() n = n + 1 return n end
      local iter = pool:imap(function(x) return x end, endless)
      assert.are.same({1, 1}, { iter() })
      pool:terminate()
      local ok, err, got = true, nil, 1
      while ok do
        local i
        ok, i = pcall(iter)
        if ok then
          assert.are.equal(got + 1, i)
          got = i
        else
          err = i
        end
      end
      assert.matches("the pool was terminated before", err, 1, true)
      assert.is_true(got <= n) -- all that was done may have come back before terminate
    end)

    it("ends normally when its input was used up and read before terminate", function()
      local iter = pool:imap(function(x) return x end, three())
      assert.are.same({1, 1}, { iter() })
      assert.are.same({2, 2}, { iter() })
      assert.are.same({3, 3}, { iter() })
      pool:terminate()
      assert.is_nil(iter())
    end)

    it("yields everything after close() and join()", function()
      local iter = pool:imap(function(x) return x * 2 end, three())
      pool:close()
      pool:join()
      local out = {}
      for i, v in iter do out[i] = v end
      assert.are.same({2, 4, 6}, out)
    end)
  end)

  describe("results that cannot be sent", function()
    it("fail only their own task", function()
      local bad = pool:apply_async(function() return coroutine.create(print) end)
      local good = pool:apply_async(function() return "fine" end)
      local ok, err = pcall(bad.get, bad, 10)
      assert.is_false(ok)
      assert.matches("cannot send the task's result back: return value #1: coroutine$", err)
      assert.are.equal("fine", good:get(10))
    end)

    it("are named by their place among the values returned, or in the map", function()
      local _, err = pcall(pool.apply, pool, function() return 1, { x = { coroutine.create(print) } } end)
      assert.matches("back: %[1%] in field 'x' in return value #2: coroutine$", err)
      local bad5 = function(x) return x == 5 and coroutine.create(print) or x end
      _, err = pcall(pool.map, pool, bad5, { 1, 2, 3, 4, 5, 6 }, 2)
      assert.matches("back: the result for item #5: coroutine$", err)
      _, err = pcall(pool.starmap, pool, bad5, { { 1 }, { 2 }, { 3 }, { 4 }, { 5 } }, 3)
      assert.matches("back: the result for item #5: coroutine$", err)
      _, err = pcall(function() for _ in pool:imap(bad5, { 1, 2, 3, 4, 5, 6 }, 2) do end end)
      assert.matches("back: the result for item #5: coroutine$", err)
      local two3 = function(x) if x == 3 then return 1, coroutine.create(print) end return x end
      _, err = pcall(function() for _ in pool:imap_unordered(two3, { 1, 2, 3, 4 }, 2) do end end)
      assert.matches("back: value #2 of the result for item #3: coroutine$", err)
    end)
  end)

  describe("a worker that dies mid-task", function()
    local cases = {
      { "SIGKILL", function(pidfile)
          support.write_file(pidfile, tostring(mproc.getpid())); mproc.sleep(30) end,
        "was killed by signal 9 %(SIGKILL%)", true },
      { "segfault", function() require("mproc.core").kill(mproc.getpid(), 11) end,
        "was killed by signal 11 %(SIGSEGV%)" },
      { "os.exit(3)", function() os.exit(3) end, "exited with code 3" },
    }
    for _, case in ipairs(cases) do
      it("fails its task (" .. case[1] .. "), naming pid and cause; the others complete", function()
        local pidfile = support.tmpname()
        local others = {}
        for i = 1, 4 do others[i] = pool:apply_async(function(x) mproc.sleep(0.05) return x end, {i}) end
        local r = pool:apply_async(case[2], {pidfile})
        local pid
        if case[4] then
          pid = pid_in(pidfile)
          mproc.sleep(0.05)
          require("mproc.core").kill(pid, 9)
        end
        local t0 = mproc.monotonic()
        local ok, err = pcall(r.get, r, 20)
        os.remove(pidfile)
        assert.is_false(ok)
        assert.matches("pool worker %(pid %d+%) " .. case[3] .. " while running this task", err)
        if pid then assert.matches("pid " .. pid, err, 1, true) end
        assert.is_true(mproc.monotonic() - t0 < 5)
        for i = 1, 4 do assert.are.equal(i, others[i]:get(20)) end
        -- the pool stays usable, with a replacement worker
        assert.are.same({1, 2, 3, n = 3}, pool:map(function(x) return x end, {1, 2, 3}, 1))
      end)
    end
  end)

  it("runs the initializer in each worker; maxtasksperchild = 1 gives a fresh pid per task", function()
    local p <close> = mproc.Pool(2, { initializer = function(tag) _G.POOL_TAG = tag end,
                                      initargs = {"init"}, maxtasksperchild = 1 })
    local r = p:map(function() return mproc.getpid() .. ":" .. tostring(_G.POOL_TAG) end, {1, 2, 3, 4, 5, 6}, 1)
    local pids = {}
    for i = 1, 6 do
      local pid, tag = r[i]:match("^(%d+):(.*)$")
      assert.are.equal("init", tag)
      assert.is_nil(pids[pid])
      pids[pid] = true
    end
  end)

  it("fails the tasks of a pool whose initializer raises, without respawning for ever", function()
    -- in a fresh interpreter: the worker's error goes to its stderr, read here
    local out = support.run_lua([[
      local mproc = require "mproc"
      local p <close> = mproc.Pool(1, { initializer = function() error("init fails") end })
      print(pcall(p.apply, p, function() return 1 end))
    ]])
    local pid = ("\n" .. out):match("\nfalse\tpool worker %(pid (%d+)%)[^\n]*initializer")
    assert.is_not_nil(pid, out)
    -- "see its stderr": the error with its traceback, as a failing Process's
    assert.matches("Process PoolWorker%-1:\n[^\n]*:2: init fails\nstack traceback:\n.-:2: in function", out)
  end)

  -- Lua calls no message handler for a memory error: reported all the same
  it("reports a memory error in the initializer under the worker's name", function()
    if os.getenv("MPROC_ASAN") then pending("not under AddressSanitizer (ulimit -v)") return end
    local out = support.run_lua([[
      local mproc = require "mproc"
      local p <close> = assert(mproc.Pool(1, { initializer = function()
        local t = {}
        while true do t[#t + 1] = ("m"):rep(1 << 20, tostring(#t)) end
      end }))
      print(pcall(p.apply, p, function() return 1 end))
    ]], { env = "ulimit -v 524288;" })
    assert.matches("in the pool's initializer", out, 1, true)
    assert.matches("Process PoolWorker-1:\nnot enough memory\n", out, 1, true)
  end)

  it("terminate stops workers mid-task and fails what was not done", function()
    local r = pool:apply_async(function() mproc.sleep(30) end)
    mproc.sleep(0.1)
    local t0 = mproc.monotonic()
    pool:terminate()
    assert.is_true(mproc.monotonic() - t0 < 5)
    assert.has_error(function() r:get(1) end, "the pool was terminated before this task completed")
    pool:join()
  end)

  it("leaves no process, zombie or descriptor after close and join", function()
    pool:terminate()
    local fds, kids = support.fd_count(), #support.children()
    local p = mproc.Pool(3)
    assert.are.equal(6, p:map(function(x) return x * 2 end, {1, 2, 3})[3])
    p:close()
    p:join()
    assert.are.equal(kids, #support.children())
    assert.are.equal(fds, support.fd_count())
  end)

  it("under SIGKILL of a worker at random instants: every task ends, none is lost, the pool goes on", function()
    -- the instants land on workers waiting, woken but not yet claiming (a
    -- task wakes one worker only), running, sending
    local p <close> = mproc.Pool(2)
    local core = require "mproc.core"
    local function id(x) return x end
    local lost, failed, done = 0, 0, 0
    for _ = 1, 40 do
      local rs = {}
      for i = 1, 4 do rs[i] = p:apply_async(id, { i }) end
      mproc.sleep(math.random() * 0.002)
      local pids = {}
      for _, wk in pairs(p._workers) do pids[#pids + 1] = wk.pid end
      core.kill(pids[math.random(#pids)], 9)
      for i = 1, 4 do
        local ok, v, why = pcall(rs[i].get, rs[i], 10)
        if ok and v == i then
          done = done + 1
        elseif not ok and tostring(v):match("was killed by signal 9") then
          failed = failed + 1
        else
          lost = lost + 1
          print("lost:", ok, v, why)
        end
      end
    end
    assert.are.equal(0, lost)
    assert.are.equal(160, done + failed)
    assert.is_true(done > 0)
    assert.are.same({ 1, 2, 3, n = 3 }, p:map(id, { 1, 2, 3 }, 1))
  end)

  -- The same for the other ways in: map_async, starmap_async, imap and
  -- imap_unordered (a worker killed mid-chunk fails that chunk), with
  -- workers that end after two tasks, or start with an initializer (the
  -- kills land inside it too), or send results bigger than their pipe
  -- (killed mid-frame). Every item comes once, right, or its chunk fails
  -- naming the kill; nothing hangs.
  for _, case in ipairs({
    { "plain", {} },
    { "maxtasksperchild = 2", { maxtasksperchild = 2 } },
    { "an initializer", { initializer = function() mproc.sleep(math.random() * 0.002); _G.POOL_INIT = 1 end } },
    { "results of 2 MiB", {}, 2 * 1024 * 1024 },
  }) do
    it("under SIGKILL of a worker at random instants in map, starmap and imap (" .. case[1]
      .. "): no item lost, none twice, none wrong", function()
      local p <close> = mproc.Pool(2, case[2])
      local core = require "mproc.core"
      local big, init = case[3] or 0, case[2].initializer ~= nil
      local function f(x)
        if init and not _G.POOL_INIT then error("no initializer") end
        if x % 4 == 0 then mproc.sleep(0.0005) end   -- so that kills land in tasks
        return x * 2, ("r"):rep(big)
      end
      local function right(i, v, s) return v == 2 * i and s == ("r"):rep(big) end
      local bad, failed = 0, 0
      local function kill_one()
        local pids = {}
        for _, wk in pairs(p._workers) do pids[#pids + 1] = wk.pid end
        if #pids > 0 then core.kill(pids[math.random(#pids)], 9) end
      end
      local function failure(err)
        if tostring(err):match("was killed by signal 9") then failed = failed + 1 else bad = bad + 1 end
      end
      local items, pairs_ = {}, {}
      for i = 1, 24 do items[i], pairs_[i] = i, { i } end
      for round = 1, 4 * support.SOAK do
        for _, kind in ipairs({ "map_async", "starmap_async" }) do
          local r = p[kind](p, f, kind == "map_async" and items or pairs_, 3)
          mproc.sleep(math.random() * 0.004)
          kill_one()
          local ok, v = pcall(r.get, r, 30)
          if not ok then failure(v)
          elseif v == nil then bad = bad + 1   -- a timeout
          elseif big == 0 then
            for i = 1, 24 do if v[i] ~= 2 * i then bad = bad + 1 end end
          end
        end
        for _, kind in ipairs({ "imap", "imap_unordered" }) do
          local iter <close> = p[kind](p, f, items, 2)
          local seen, n, at = {}, 0, math.random(24)
          while true do
            local ok, i, v, s = pcall(iter)
            if not ok then failure(i)
            elseif i == nil then break
            else
              n = n + 1
              if seen[i] or not right(i, v, s) then bad = bad + 1 end
              seen[i] = true
              if n == at then kill_one() end
            end
          end
        end
        assert.are.equal(0, bad, "round " .. round)
      end
      -- (with workers that end or start often, the kills mostly land between tasks)
      if next(case[2]) == nil then assert.is_true(failed > 0) end
      assert.are.same({ 2, 4, 6 }, { p:map(f, { 1, 2, 3 }, 1)[1], p:map(f, { 2 })[1], (p:apply(f, { 3 })) })
    end)
  end

  -- not PORTABLE: there a worker's sentinel is itself a pipe, at its end as
  -- early as the result pipe, and join polls until the worker is reaped
  linux_it("join sleeps while its workers end (a pipe at its end does not wake it again and again)", function()
    local p = mproc.Pool(2)
    local board = getmetatable(p._board).__index
    local collect, waits = board.collect, 0
    board.collect = function(...) waits = waits + 1 return collect(...) end
    local ok, err = pcall(function()
      for _ = 1, 10 do
        local q = mproc.Pool(2)
        q:apply(print, {})
        q:close()
        q:join()
      end
    end)
    board.collect = collect
    p:terminate()
    assert(ok, err)
    assert.is_true(waits < 100, waits .. " waits for 10 pools") -- was about 3,000
  end)

  it("completes submitted tasks when a <close> variable leaves scope; terminates on error", function()
    local r
    do
      local p <close> = mproc.Pool(2)
      r = p:apply_async(function() mproc.sleep(0.2) return "done" end)
    end
    assert.are.equal("done", r:get(0))
    local ok = pcall(function()
      local p <close> = mproc.Pool(2)
      r = p:apply_async(function() mproc.sleep(30) end)
      error("leaving")
    end)
    assert.is_false(ok)
    assert.has_error(function() r:get(0) end)
  end)

  describe("rejects bad arguments", function()
    local f = function() end
    local cases = {
      { "Pool(0)", function() mproc.Pool(0) end, "processes must be an integer in 1..4096, got 0" },
      { "Pool(5000)", function() mproc.Pool(5000) end,
        "bad argument #1 to 'Pool' (processes must be an integer in 1..4096, got 5000)" },
      { "Pool{processes = 5000}", function() mproc.Pool{ processes = 5000 } end,
        "bad argument #1 to 'Pool' (processes must be an integer in 1..4096, got 5000)" },
      { "Pool('x')", function() mproc.Pool("x") end, "processes must be an integer" },
      { "Pool{bogus}", function() mproc.Pool{ bogus = 1 } end, "unknown option 'bogus'" },
      { "Pool(1, {processes = 2})", function() mproc.Pool(1, { processes = 2 }) end,
        "bad argument #2 to 'Pool' (processes given twice: as argument #1 and as an option)" },
      { "maxtasksperchild 0", function() mproc.Pool(1, { maxtasksperchild = 0 }) end, "maxtasksperchild" },
      { "map over a table with keys only (Python maps a dict's keys)", function() pool:map(f, { x = 1 }) end,
        "bad argument #2 to 'map' (a list expected, got a table with no item 1 but key 'x' (to map over a"
        .. " table's keys or values, make a list of them))" },
      { "imap over a table with keys only", function() pool:imap(f, { [2] = 1 }) end,
        "bad argument #2 to 'imap' (a list expected, got a table with no item 1 but key number" },
      { "initargs not a table (Python's initargs=(lock) with no comma)",
        function() mproc.Pool(1, { initializer = f, initargs = 5 }) end,
        "bad argument #2 to 'Pool' (initargs: table expected, got number)" },
      { "initializer not a function", function() mproc.Pool{ processes = 1, initializer = 5 } end,
        "bad argument #1 to 'Pool' (initializer: function expected, got number)" },
      { "board_size 1000", function() mproc.Pool(1, { board_size = 1000 }) end,
        "bad argument #2 to 'Pool' (board_size must be a multiple of 4096 in 4096..1099511627776, got 1000)" },
      { "apply_async(nil)", function() pool:apply_async(nil) end, "bad argument #1 to 'apply_async'" },
      { "apply_async(f, 5)", function() pool:apply_async(f, 5) end, "bad argument #2 to 'apply_async'" },
      { "apply coroutine arg", function() pool:apply(f, { coroutine.create(f) }) end,
        "bad argument #2 to 'apply' (cannot send the arguments" },
      { "apply(f, 5)", function() pool:apply(f, 5) end, "bad argument #2 to 'apply' (table expected, got number)" },
      { "map(f, nil)", function() pool:map(f, nil) end, "bad argument #2 to 'map'" },
      { "map chunksize 0", function() pool:map(f, {}, 0) end, "chunksize must be an integer >= 1" },
      { "starmap(f, 1)", function() pool:starmap(f, 1) end,
        "bad argument #2 to 'starmap' (table or iterator function expected, got number)" },
      { "starmap(f, {{1}, 2})", function() pool:starmap(f, {{1}, 2}) end,
        "bad argument #2 to 'starmap' (item 2 is a number, not a table of arguments)" },
      { "starmap_async over an iterator of strings", function() pool:starmap_async(f, ("a b"):gmatch("%a")) end,
        "bad argument #2 to 'starmap_async' (item 1 is a string, not a table of arguments)" },
      { "map(f, {n = -1})", function() pool:map(f, { n = -1 }) end,
        "bad argument #2 to 'map' (n must be >= 0, got -1)" },
      { "map_async(f, 'x')", function() pool:map_async(f, "x") end,
        "bad argument #2 to 'map_async' (table or iterator function expected, got string)" },
      { "map_async callback 42", function() pool:map_async(f, {1}, nil, { callback = 42 }) end,
        "bad argument #4 to 'map_async' (function expected, got number)" },
      { "map_async error_callback", function() pool:map_async(f, {1}, nil, { error_callback = "x" }) end,
        "bad argument #4 to 'map_async' (function expected, got string)" },
      { "starmap_async callback", function() pool:starmap_async(f, {{1}}, 1, { callback = {} }) end,
        "bad argument #4 to 'starmap_async' (function expected, got table)" },
      { "map_async(f, {}, nil, 5)", function() pool:map_async(f, {}, nil, 5) end,
        "bad argument #4 to 'map_async'" },
      { "imap(f, 5)", function() pool:imap(f, 5) end, "bad argument #2 to 'imap'" },
      { "imap_unordered(1)", function() pool:imap_unordered(1, {}) end, "bad argument #1 to 'imap_unordered'" },
      { "get('x')", function() pool:apply_async(f):get("x") end, "bad argument #1 to 'get'" },
      { "join while running", function() pool:join() end, "join: the pool is still running" },
      { "apply after close", function() pool:close(); pool:apply(f) end, "the pool is not running" },
    }
    for _, case in ipairs(cases) do
      it(case[1], function()
        local ok, err = pcall(case[2])
        assert.is_false(ok)
        assert.matches(case[3], err, 1, true)
        assert.matches("^spec/pool_spec%.lua:%d+: ", err) -- the caller's line, not mproc's
      end)
    end

    describe("a method called with '.' instead of ':'", function()
      local public = {
        ["mproc.Pool"] = { "apply", "apply_async", "map", "map_async", "starmap", "starmap_async",
                           "imap", "imap_unordered", "close", "terminate", "join" },
        ["mproc.AsyncResult"] = { "wait", "get", "ready", "successful", "fileno", "traceback" },
        ["mproc.IMapIterator"] = { "close", "ready", "next", "fileno" },
      }
      local function objects()
        return { ["mproc.Pool"] = pool, ["mproc.AsyncResult"] = pool:apply_async(f),
                 ["mproc.IMapIterator"] = (pool:imap(f, {})) }
      end

      it("covers every public method", function()
        for tname, obj in pairs(objects()) do
          local listed = {}
          for _, m in ipairs(public[tname]) do listed[m] = true end
          for m in pairs(getmetatable(obj).__index) do
            if not m:match("^_") then assert.is_true(listed[m], tname .. ":" .. m .. " has no case") end
          end
        end
      end)

      for tname, names in pairs(public) do
        for _, m in ipairs(names) do
          it(tname .. "." .. m .. "() raises naming the method and the type", function()
            local objs = objects()
            local fn = objs[tname][m]
            local other = tname == "mproc.Pool" and "mproc.AsyncResult" or "mproc.Pool"
            -- util.check_self names what it got: an mproc type by its name
            for _, case in ipairs({ { nil, "nil" }, { 42, "number" }, { {}, "table" }, { objs[other], other } }) do
              local ok, err = pcall(fn, case[1], f, {1})
              assert.is_false(ok)
              assert.matches(("bad argument #1 to '%s' (%s expected, got %s)"):format(m, tname, case[2]), err, 1, true)
            end
          end)
        end
      end
    end)

    it("a bad map_async callback is refused; later calls are unharmed", function()
      local id = function(x) return x end
      pcall(pool.map_async, pool, id, {1, 2}, 1, { callback = 42 })
      pcall(pool.starmap_async, pool, id, {{1}, {2}}, 1, { error_callback = 42 })
      assert.are.same({3, 4, n = 2}, pool:map(id, {3, 4}, 1))
      assert.are.equal(5, pool:apply(function() return 5 end))
    end)
  end)

  describe("jobs (the interface mproc.futures is built on)", function()
    local jobs = require("mproc.pool").jobs

    it("delivers each task's result to the job's declared deliver function", function()
      local Job = jobs.define({}, function(job, part, r) job.got = { part, r[1], r[2] } end)
      local job = setmetatable({}, Job)
      local head, body, count = jobs.encode_call(pool, "submit", function(x) return x * 2 end, table.pack(21))
      jobs.submit(pool, job, head, body, count)
      while not job.got do jobs.pump(pool, nil) end
      assert.are.same({ 1, true, 42 }, job.got)
    end)

    it("refuses what was not declared a job, and keeps deliver off a result's methods", function()
      local head, body, count = jobs.encode_call(pool, "submit", print, table.pack())
      local ok, err = pcall(jobs.submit, pool, { _deliver = print }, head, body, count)
      assert.is_false(ok)
      assert.matches("not a job", err)
      assert.is_nil(pool:apply_async(function() end)._deliver)
    end)
  end)
end)

describe("a Pool in a forked child", function()
  -- The parent's pool, a task of sleep seconds running, the calls tried in
  -- a child (each printed as pcall gives it), then after: the parent's checks.
  local function tried_in_child(sleep, calls, after)
    return support.run_lua(([[
      local mproc = require "mproc"
      local pool <close> = mproc.Pool(1)
      local r = pool:apply_async(function() mproc.sleep(%s) return 42 end)
      local c = mproc.Process(function()
        for _, call in ipairs({ %s }) do
          local ok, err = pcall(call)
          print(ok, (tostring(err):gsub("process %%d+", "process N")))
        end
      end):start()
      print("child", c:join(10))
      %s
    ]]):format(sleep, calls, after), { env = "timeout 60" })
  end
  local refused = "false\t[^\n]*the pool belongs to process N: a forked child cannot use its parent's pool\n"

  it("refuses to run there, leaving the parent's results and workers to the parent", function()
    local out = tried_in_child(0.3, [[
      function() return r:get(2) end,
      function() return r:ready() end,
      function() return pool:apply_async(print, {}) end,
      function() return pool:map(print, { 1 }) end,
      function() for _ in pool:imap(print, { 1 }) do end end,
    ]], [[print("parent", r:get(5), pool:apply(function() return "still" end))]])
    assert.matches("^" .. refused:rep(5) .. "child\t0\nparent\t42\tstill\n$", out)
  end)

  it("refuses to terminate, close or join the parent's pool there (terminate killed the parent's workers)", function()
    local out = tried_in_child(0.5, [[
      function() return pool:terminate() end,
      function() return pool:close() end,
      function() return pool:join() end,
    ]], [[print("parent", pcall(r.get, r, 5))
      print("parent", table.concat(pool:map(function(x) return x * 2 end, { 1, 2, 3 }), " "))]])
    assert.matches("^" .. refused:rep(3) .. "child\t0\nparent\ttrue\t42\nparent\t2 4 6\n$", out)
  end)
end)

describe("Pool and its parent", function()
  local function start_script(code, setsid)
    local path = support.script(code)
    local out = support.tmpname()
    local p = assert(io.popen(("%s%s %s > %s 2>&1 & echo $!"):format(
      setsid and "setsid " or "", support.LUA, support.shell_quote(path), out)))
    local pid = tonumber(p:read("a"))
    p:close()
    return pid, out, path
  end

  local SCRIPT = [[
    local mproc = require "mproc"
    local pool = mproc.Pool(2)
    local rs = {}
    for i = 1, 2 do rs[i] = pool:apply_async(function() mproc.sleep(60) end) end
    print("ready") io.stdout:flush()
    rs[1]:get()
  ]]

  local function wait_ready(pid, out)
    assert.is_true(support.eventually(function()
      return (support.read_file(out) or ""):match("ready") and #children_of(pid) == 2
    end, 10))
    return children_of(pid)
  end

  linux_it("leaves no worker for long when the parent is killed with SIGKILL", function() -- not PORTABLE
    local pid, out, path = start_script(SCRIPT)
    local workers = wait_ready(pid, out)
    require("mproc.core").kill(pid, 9)
    assert.is_true(support.eventually(function() return all_gone(workers) end, 3))
    os.remove(out) os.remove(path)
  end)

  it("ends the script and its workers promptly on Ctrl-C (SIGINT to the group)", function()
    local pid, out, path = start_script(SCRIPT, true)
    local workers = wait_ready(pid, out)
    require("mproc.core").kill(-pid, 2)
    assert.is_true(support.eventually(function() return all_gone({pid}) end, 3))
    assert.is_true(support.eventually(function() return all_gone(workers) end, 3))
    assert.matches("interrupted", support.read_file(out))
    os.remove(out) os.remove(path)
  end)
end)

-- Runs code in a fresh interpreter, killed after 20 s (a hang fails the
-- spec instead of hanging the suite); returns its output and exit code.
local function run_bounded(code, prefix)
  return support.run_lua(code, { env = (prefix or "") .. "timeout 20" })
end

describe("Pool and imap over an endless input", function()
  local ENDLESS = [[
    local mproc = require "mproc"
    local pulled = 0
    local function endless() pulled = pulled + 1 return pulled end
    local t0 = mproc.monotonic()
  ]]

  for _, name in ipairs({ "imap", "imap_unordered" }) do
    it(name .. ": break stops pulling, and the pool's <close> scope ends without running the rest", function()
      local out, code = run_bounded(ENDLESS .. ([[
        local at_break
        do
          local pool <close> = mproc.Pool(2)
          local n = 0
          for _ in pool:%s(function(x) mproc.sleep(0.05) return x end, endless) do
            n = n + 1
            if n == 3 then at_break = pulled break end
          end
        end
        print(at_break, pulled, mproc.monotonic() - t0)
      ]]):format(name))
      assert.are.equal(0, code, out)
      local at_break, pulled, secs = out:match("^(%d+)\t(%d+)\t(%S+)\n$")
      assert.are.equal(at_break, pulled, out)
      -- 512 tasks of 50 ms ahead, on 2 workers, would take 13 s
      assert.is_true(tonumber(secs) < 8, out)
    end)

    for _, ending in ipairs({ "", "pool:close() pool:join()", "pool:terminate()" }) do
      local how = ending == "" and "its <close> scope ends" or ending
      it(name .. " dropped unfinished: the pool stops pulling its input when " .. how, function()
        local out, code = run_bounded(ENDLESS .. ([[
          local iter
          do
            local pool <close> = mproc.Pool(2)
            iter = pool:%s(function(x) return x end, endless)
            iter() iter()
            %s
          end
          local seen = pulled
          local ok, err = true, nil
          while ok do ok, err = pcall(iter) end
          print(pulled, seen, err)
        ]]):format(name, ending))
        assert.are.equal(0, code, out)
        local pulled, seen, err = out:match("^(%d+)\t(%d+)\t(.-)\n$")
        assert.are.equal(seen, pulled, out)
        assert.is_true(tonumber(pulled) <= 1100, out) -- its look-ahead, not more
        if ending:match("terminate") then
          assert.matches("the pool was terminated before", err, 1, true)
        else
          assert.matches(name .. ": the pool was closed before this iterator's input was used up", err, 1, true)
        end
      end)
    end
  end
end)

describe("a Pool collected without close()", function()
  it("leaves no zombie workers: 30 pools made and dropped in a loop", function()
    local out, code = support.run_lua([[
      local mproc = require "mproc"
      local me = mproc.getpid()
      local function children() -- running and zombie
        local f = assert(io.open(("/proc/%d/task/%d/children"):format(me, me)))
        local n = select(2, f:read("a"):gsub("%d+", ""))
        f:close()
        return n
      end
      local most = 0
      for _ = 1, 30 do
        local p = mproc.Pool(2)
        assert(p:map(function(x) return x end, { 1, 2, 3, 4 }).n == 4)
        p = nil -- luacheck: ignore 311
        collectgarbage()
        most = math.max(most, children())
      end
      local deadline = mproc.monotonic() + 10
      while children() > 0 and mproc.monotonic() < deadline do
        collectgarbage() -- a long-running program collects now and then
        mproc.sleep(0.01)
      end
      print(most, children())
    ]], { env = "timeout 60" })
    assert.are.equal(0, code, out)
    local most, left = out:match("^(%d+)\t(%d+)\n$")
    assert.are.equal("0", left, out)
    -- not 60 (every worker left until exit); a loaded machine reaps a few late
    assert.is_true(tonumber(most) <= 16, out)
  end)
end)

describe("process_cpu_count", function()
  linux_it("is the number of CPUs this process may run on, and Pool()'s default size", function() -- not PORTABLE
    local out, code = run_bounded([[
      local mproc = require "mproc"
      local pool <close> = mproc.Pool()
      print(mproc.process_cpu_count(), tostring(pool):match("%((%d+) processes"))
    ]], "taskset -c 0 ")
    assert.are.equal(0, code, out)
    assert.are.equal("1\t1\n", out)
    local n = mproc.process_cpu_count()
    assert.are.equal("integer", math.type(n))
    assert.is_true(n >= 1 and n <= mproc.cpu_count())
  end)
end)

describe("tutorial example 02_pool.lua", function()
  it("runs five tasks on at most four workers, with different sleeps", function()
    local out, code = support.run_example("examples/tutorial/02_pool.lua", 4)   -- sleeps up to 0.5 s
    assert.are.equal(0, code)
    local lines = support.lines(out)
    local parent = tonumber(lines[1]:match("^Pool parent process (%d+)%.$"))
    assert.is_truthy(parent)
    local pids, npids, runs, secs = {}, 0, 0, {}
    for _, l in ipairs(lines) do
      local task, pid = l:match("^Run task (%d) %((%d+)%)%.%.%.$")
      if task then
        runs = runs + 1
        assert.are_not.equal(parent, tonumber(pid))
        if not pids[pid] then pids[pid], npids = true, npids + 1 end
      end
      local s = l:match("^Task %d runs ([%d.]+) seconds%.$")
      if s then secs[s] = true end
    end
    local distinct = 0
    for _ in pairs(secs) do distinct = distinct + 1 end
    assert.are.equal(5, runs)
    assert.is_true(npids >= 1 and npids <= 4)
    assert.is_true(distinct >= 3, "sleeps: " .. out)
    assert.are.equal("All subprocesses done.", lines[#lines])
  end)
end)

describe("a task's arguments", function()
  -- Objects made after the workers started reach them through this
  -- process's descriptors: the pool keeps what a task was encoded from
  -- until the task ends, so dropping every other handle at once (the
  -- fire-and-forget style) loses nothing, as with Python's Pool.
  linux_it("stay reachable until the task ends, with no other handle kept", function()
    local pool <close> = mproc.Pool(1)
    local gate = mproc.Event()
    local busy = pool:apply_async(function() gate:wait(10) end)
    local rs = {}
    for i = 1, 3 do
      rs[#rs + 1] = pool:apply_async(function(q, d) q:put(i); d.x = i; return q:get() + d.x end,
        { mproc.Queue(), mproc.Dict() })
      rs[#rs + 1] = pool:map_async(function(a) return #a end, { mproc.Array("d", 1000) })
      local q = mproc.Queue()
      rs[#rs + 1] = pool:apply_async(function() q:put(i); return q:get() end)
      local iter = pool:imap(function(l) return #l end, { mproc.List { 1, 2 } })
      rs[#rs + 1] = { get = function() return select(2, iter()) end }
    end
    collectgarbage()
    collectgarbage()
    gate:set()
    assert.is_nil(busy:get(10))
    local got = {}
    for k, r in ipairs(rs) do
      local ok, v = pcall(r.get, r, 10)
      assert(ok, v)
      got[k] = type(v) == "table" and v[1] or v
    end
    assert.are.same({ 2, 1000, 1, 2, 4, 1000, 2, 2, 6, 1000, 3, 2 }, got)
  end)

  it("are not kept when they name no shared object: an imap's look-ahead holds only its encodings", function()
    local pool <close> = mproc.Pool(1)
    local gate = mproc.Event()
    local seen = setmetatable({}, { __mode = "k" })
    local k = 0
    local function source()
      if k == 100 then return nil end
      k = k + 1
      local item = { k }
      seen[item] = true
      return item
    end
    local iter = pool:imap(function(t)
      if t[1] > 1 then gate:wait(10) end
      return t[1]
    end, source, 1)
    local _, sum = iter()   -- the first result: every item is pulled and submitted by now
    collectgarbage()
    collectgarbage()
    local left = 0
    for _ in pairs(seen) do left = left + 1 end
    gate:set()
    for _, v in iter do sum = sum + v end
    assert.are.equal(5050, sum)
    assert.are.equal(0, left)   -- 99 before: every chunk submitted was kept
  end)
end)
