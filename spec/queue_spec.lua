local mproc = require "mproc"
local core = require "mproc.core"
local support = require "support"

local MiB = 1024 * 1024

local within = support.within

-- Big items that are cheap to make and to check: a header, then one of
-- four 8 MiB fillers.
local fillers = {}
for i = 1, 4 do fillers[i] = string.rep(string.char(64 + i), 8 * MiB) end
local function big_item(producer, seq)
  return ("%d:%d:"):format(producer, seq) .. fillers[seq % 4 + 1]
end
local function check_big(s)
  local producer, seq = s:match("^(%d+):(%d+):")
  if not producer then return nil end
  producer, seq = tonumber(producer), tonumber(seq)
  if s ~= big_item(producer, seq) then return nil end
  return producer, seq
end

describe("the shared-memory queue under Queue (bytes)", function()
  it("keeps items of every size in order, growing and shrinking its ring", function()
    local h = core.queue_new(0)
    local items = { "", "a", string.rep("x", 4095), string.rep("y", 4097), string.rep("z", 3 * MiB) }
    for round = 1, 3 do
      for i, s in ipairs(items) do assert.is_true(h:put(s .. round .. i)) end
      assert.are.equal(#items, (h:qsize()))
      for i, s in ipairs(items) do assert.are.equal(s .. round .. i, h:get()) end
    end
    assert.are.same({ nil, "empty" }, { h:get(false) })
    h:close()
  end)

  it("keeps records that wrap past the end of the ring whole", function()
    local h = core.queue_new(0)
    -- fill, drain partly, fill again: later records wrap around the end
    local n, k = 0, 0
    local function put() n = n + 1; assert(h:put(("%06d"):format(n):rep(1000 + n % 7))) end
    local function get()
      k = k + 1
      assert.are.equal(("%06d"):format(k):rep(1000 + k % 7), h:get(false))
    end
    for _ = 1, 8 do put() end
    for _ = 1, 5000 do put(); get(); if n % 3 == 0 then put() end; if k < n - 9 then get() end end
    while k < n do get() end
    assert.are.same({ nil, "empty" }, { h:get(false) })
  end)

  it("holds an unbounded queue's items after the producer is killed", function()
    local h = core.queue_new(0)
    local p = mproc.Process(function()
      for i = 1, 5 do h:put(big_item(1, i)) end
      core.kill(core.getpid(), 9)
    end):start()
    assert.are.equal(-9, p:join())
    for i = 1, 5 do assert.are.same({ 1, i }, { check_big(h:get(false)) }) end
    assert.are.same({ nil, "empty" }, { h:get(false) })
  end)

  it("survives producers and consumers killed with SIGKILL mid-put and mid-get", function()
    local h = core.queue_new(3)          -- bounded: puts also wait for room
    local reports = core.queue_new(0)    -- consumers report "producer:seq"
    local procs, nextid = {}, 0
    local function producer(id)
      return function()
        for seq = 1, math.huge do assert(h:put(big_item(id, seq))) end
      end
    end
    local function consumer()
      local last = {}
      while true do
        local producer_, seq = check_big(assert(h:get()))
        if not producer_ then os.exit(3) end                       -- torn item
        if seq <= (last[producer_] or 0) then os.exit(4) end       -- order
        last[producer_] = seq
        assert(reports:put(producer_ .. ":" .. seq))
      end
    end
    local function start(kind)
      nextid = nextid + 1
      local f = kind == "p" and producer(nextid) or consumer
      procs[#procs + 1] = { kind = kind, p = mproc.Process(f):start() }
    end
    start("p"); start("p"); start("c"); start("c")
    math.randomseed(42)
    for _ = 1, 30 do
      mproc.sleep(math.random() * 0.04)
      local i = math.random(#procs)
      local victim = table.remove(procs, i)
      victim.p:kill()
      assert.are.equal(-9, victim.p:join())
      start(victim.kind)
    end
    for _, v in ipairs(procs) do v.p:kill(); assert.are.equal(-9, v.p:join()) end

    -- whole and usable afterwards, from a child so a deadlock fails here
    local seen = {}
    local code = within(20, function()
      local last = {}
      for _ = 1, 3 do
        local s = h:get(false)
        if s == nil then break end
        local producer_, seq = check_big(s)
        if not producer_ or seq <= (last[producer_] or 0) then os.exit(3) end
        last[producer_] = seq
      end
      assert(h:put("after") and h:get(false) == "after" and h:get(false) == nil)
      os.exit(0)
    end)
    assert.are.equal(0, code)
    local n = 0
    for r in function() return reports:get(false) end do
      assert.is_nil(seen[r], "item got twice: " .. r)
      seen[r] = true
      n = n + 1
    end
    assert.is_true(n > 0)
  end)

  it("does not wedge when a holder of its lock is killed mid-copy", function()
    local h = core.queue_new(0)
    local huge = string.rep("h", 64 * MiB)
    for round = 1, 5 do
      local p = mproc.Process(function() while true do h:put(huge) end end):start()
      mproc.sleep(0.01 + 0.02 * round)
      p:kill()
      p:join()
      local code = within(20, function()
        while true do
          local s = h:get(false)
          if s == nil then break end
          if s ~= huge then os.exit(3) end
        end
        os.exit(h:put("ok") and h:get(false) == "ok" and 0 or 4)
      end)
      assert.are.equal(0, code)
      while h:get(false) do end
    end
  end)
end)

describe("Queue", function()
  local values = {
    { "nil", nil }, { "false", false }, { "true", true }, { "an integer", 42 },
    { "a float", 0.5 }, { "math.maxinteger", math.maxinteger }, { "an empty string", "" },
    { "a string with zeros", "a\0b" }, { "a nested table", { 1, "two", { three = 3 } } },
  }
  for _, case in ipairs(values) do
    it("carries " .. case[1], function()
      local q = mproc.Queue()
      assert.is_true(q:put(case[2]))
      local got = table.pack(q:get())
      assert.are.equal(1, got.n)
      assert.are.same(case[2], got[1])
      if math.type(case[2]) then assert.are.equal(math.type(case[2]), math.type(got[1])) end
    end)
  end

  it("returns nil, 'empty' when no item comes before the deadline", function()
    local q = mproc.Queue()
    assert.are.same({ nil, "empty" }, { q:get(false) })
    assert.are.same({ nil, "empty" }, { q:get_nowait() })
    local t0 = mproc.monotonic()
    assert.are.same({ nil, "empty" }, { q:get(true, 0.05) })
    assert.is_true(mproc.monotonic() - t0 >= 0.04)
  end)

  it("returns nil, 'full' when a bounded queue has no room before the deadline", function()
    local q = mproc.Queue(2)
    assert.is_true(q:empty())
    assert.is_true(q:put(1))
    assert.is_true(q:put_nowait(2))
    assert.are.same({ 2, true, false }, { q:qsize(), q:full(), q:empty() })
    assert.are.same({ nil, "full" }, { q:put(3, false) })
    assert.are.same({ nil, "full" }, { q:put_nowait(3) })
    assert.are.same({ nil, "full" }, { q:put(3, true, 0.05) })
    assert.are.equal(1, q:get())
    assert.is_true(q:put(3, false))
    assert.are.same({ 2, 3 }, { q:get(), q:get() })
  end)

  it("wakes a blocked get when another process puts, and a blocked put when it gets", function()
    local q, me = mproc.Queue(1), mproc.getpid()
    local p = support.when_waiting(me, function()   -- once the parent waits in get
      q:put("late")            -- wakes the parent's get
      q:put("second")          -- may wait for room (maxsize 1)
    end)
    assert.are.equal("late", q:get(true, 10))
    assert.are.equal("second", q:get(true, 10))
    assert.are.equal(0, p:join())
    assert.is_true(q:put("x"))
    local c = support.when_waiting(me, function() os.exit(q:get() == "x" and 0 or 1) end)
    assert.is_true(q:put("y", true, 10))   -- blocks until the child got "x"
    assert.are.equal(0, c:join())
    assert.are.equal("y", q:get(false))
  end)

  it("raises in the caller of put for a value that cannot be encoded, and stays usable", function()
    local q = mproc.Queue()
    assert.has_error(function() q:put(coroutine.create(print)) end)
    assert.has_error(function() q:put({ ok = 1, bad = coroutine.create(print) }) end)
    assert.is_true(q:empty())
    q:put("fine")
    assert.are.equal("fine", q:get())
  end)

  it("never blocks put on an unbounded queue: the producer can be joined first", function()
    local q = mproc.Queue()
    local p = mproc.Process(function()
      for i = 1, 20000 do q:put(i) end
      q:put(string.rep("b", 3 * MiB))
    end):start()
    assert.are.equal(0, p:join(30))       -- before anything was got
    assert.are.equal(20001, q:qsize())
    for i = 1, 20000 do assert(q:get(false) == i) end
    assert.are.equal(3 * MiB, #q:get(false))
  end)

  it("loses nothing a producer put before it was killed", function()
    local q = mproc.Queue()
    local p = mproc.Process(function()
      for i = 1, 100 do q:put({ i = i, s = ("%d"):format(i):rep(i) }) end
      core.kill(core.getpid(), 9)
    end):start()
    assert.are.equal(-9, p:join())
    for i = 1, 100 do assert.are.same({ i = i, s = ("%d"):format(i):rep(i) }, q:get(false)) end
    assert.is_nil(q:get(false))
  end)

  it("delivers each item exactly once, in each producer's order, to many consumers", function()
    local q, results = mproc.Queue(), mproc.Queue()
    local NP, NC, N = 3, 3, 400
    local procs = {}
    for pid = 1, NP do
      procs[#procs + 1] = mproc.Process(function()
        for i = 1, N do q:put({ pid, i }) end
      end):start()
    end
    for _ = 1, NC do
      procs[#procs + 1] = mproc.Process(function()
        local got = {}
        while true do
          local item = q:get(true, 10)
          if item == "stop" or item == nil then break end
          got[#got + 1] = item
        end
        results:put(got)
      end):start()
    end
    for i = 1, NP do assert.are.equal(0, procs[i]:join()) end
    for _ = 1, NC do q:put("stop") end
    local seen, total = {}, 0
    for _ = 1, NC do
      local last = {}
      for _, item in ipairs(results:get(true, 30)) do
        local key = item[1] .. ":" .. item[2]
        assert.is_nil(seen[key], "got twice: " .. key)
        seen[key] = true
        assert.is_true(item[2] > (last[item[1]] or 0), "out of order: " .. key)
        last[item[1]] = item[2]
        total = total + 1
      end
    end
    assert.are.equal(NP * N, total)
    for i = NP + 1, #procs do assert.are.equal(0, procs[i]:join()) end
  end)

  it("travels through the codec to processes that inherited it", function()
    local q, inbox = mproc.Queue(), mproc.Queue()
    local s = mproc.dumps(q)
    assert.are.equal(q, mproc.loads(s))
    local p = mproc.Process(function()
      local target = inbox:get(true, 10)     -- a Queue, sent through a Queue
      target:put("via " .. tostring(getmetatable(target).__name))
    end):start()
    inbox:put(q)
    assert.are.equal("via mproc.Queue", q:get(true, 10))
    assert.are.equal(0, p:join())
    -- a queue made after the fork, in a process gone since: no one to
    -- reach it through (and no reaching at all in the portable build)
    local c = mproc.Process(function() inbox:put(mproc.dumps(mproc.Queue())) end):start()
    assert.are.equal(0, c:join())
    local v, err = mproc.loads(inbox:get())
    assert.is_nil(v)
    assert.matches(support.PORTABLE and "not inherited" or "no live process holds it", err)
  end)

  it("is closed by close and __close, twice safely; a closed queue raises", function()
    local q = mproc.Queue()
    q:close(); q:close()
    assert.is_true(q:closed())
    assert.matches("closed", tostring(q))
    assert.has_error(function() q:put(1) end)
    assert.has_error(function() q:get() end)
    do local r <close> = mproc.Queue(); r:put(1) end
  end)

  it("leaks no descriptors or children", function()
    collectgarbage(); collectgarbage()
    local fds, kids = support.fd_count(), #support.children()
    for _ = 1, 5 do
      local q = mproc.Queue()
      mproc.Process(function() q:put("x") end):start():join()
      assert.are.equal("x", q:get())
      q:close()
      local r = mproc.JoinableQueue()
      r:put(1)
    end
    collectgarbage(); collectgarbage()
    assert.are.equal(fds, support.fd_count())
    assert.are.equal(kids, #support.children())
  end)

  it("gives #q the number of items, as qsize() does (all three kinds)", function()
    for _, kind in ipairs({ "Queue", "JoinableQueue", "SimpleQueue" }) do
      local q = mproc[kind]()
      assert.are.equal(0, #q, kind)
      q:put("a"); q:put(nil); q:put({})
      assert.are.equal(3, #q, kind)
      q:get()
      assert.are.equal(2, #q, kind)
      if kind ~= "SimpleQueue" then assert.are.equal(q:qsize(), #q) end
      q:close()
    end
  end)

  it("requires put's value: put() raises, put(nil) queues nil", function()
    local cases = { { "Queue", "put" }, { "Queue", "put_nowait" }, { "JoinableQueue", "put" },
                    { "SimpleQueue", "put" } }
    for _, case in ipairs(cases) do
      local q, m = mproc[case[1]](), case[2]
      local ok, err = pcall(function() q[m](q) end)
      assert.is_false(ok)
      assert.matches("^spec/queue_spec%.lua:%d+: bad argument #1 to '" .. m .. "' %(value expected%)", err)
      assert.is_true(q:empty(), case[1] .. ":" .. m .. "() queued something")
      assert.is_true(q[m](q, nil))
      local got = table.pack(q:get())
      assert.are.same({ n = 1 }, got)
      q:close()
    end
  end)

  it("raises at the caller's line for every use of a closed queue", function()
    local cases = {
      { "Queue", "put", function(q) q:put(1) end },
      { "Queue", "get", function(q) q:get() end },
      { "Queue", "put_nowait", function(q) q:put_nowait(1) end },
      { "Queue", "get_nowait", function(q) q:get_nowait() end },
      { "Queue", "qsize", function(q) q:qsize() end },
      { "Queue", "empty", function(q) q:empty() end },
      { "Queue", "full", function(q) q:full() end },
      { "Queue", "#", function(q) local _ = #q end },
      { "JoinableQueue", "task_done", function(q) q:task_done() end },
      { "JoinableQueue", "join", function(q) q:join() end },
      { "SimpleQueue", "put", function(q) q:put(1) end },
      { "SimpleQueue", "get", function(q) q:get() end },
      { "SimpleQueue", "empty", function(q) q:empty() end },
    }
    for _, case in ipairs(cases) do
      local q = mproc[case[1]]()
      q:close()
      local ok, err = pcall(case[3], q)
      assert.is_false(ok)
      assert.matches("^spec/queue_spec%.lua:%d+: the queue is closed", err, nil, false,
        case[1] .. " " .. case[2] .. ": " .. tostring(err))
    end
  end)

  it("raises at the caller's line for a value that cannot be encoded", function()
    local q = mproc.Queue()
    local ok, err = pcall(function() q:put({ f = io.stdin, co = coroutine.create(print) }) end)
    assert.is_false(ok)
    assert.matches("^spec/queue_spec%.lua:%d+: cannot send field 'co': coroutine", err)
  end)

  it("reaches a Pool worker forked before it and before mproc.queue was loaded there", function()
    -- in a fresh interpreter, so that the first Queue is the script's
    -- first: the worker's codec has not loaded mproc.queue yet
    local out = support.run_lua([[
      local mproc = require "mproc"
      local pool = mproc.Pool(1)
      for i = 1, 2 do
        local q = mproc.Queue()
        local ok, err = pcall(pool.apply, pool, function(x) return x:put(i) end, { q })
        print(i, ok, err, q:get(false))
      end
      pool:close()
      pool:join()
    ]])
    for i = 1, 2 do
      if support.PORTABLE then   -- no /proc to reach it through
        assert.matches(i .. "\tfalse\t[^\n]*cannot receive a Queue: not inherited by this process", out)
      else
        assert.matches(i .. "\ttrue\ttrue\t" .. i .. "\n", out)
      end
    end
  end)

  it("keeps an item that get has no memory for, and gives it once memory is freed", function()
    -- AddressSanitizer reserves more address space than any ulimit -v allows
    if os.getenv("MPROC_ASAN") then pending("not under AddressSanitizer (ulimit -v)") return end
    -- In a child interpreter limited to 128 MiB: queue a 16 MiB item, fill
    -- memory, then free 1 MiB at a time and try get after each: get fails
    -- first for want of its copy buffer, then for want of the Lua string.
    local path = support.script([[
      local mproc = require "mproc"
      local MiB = 1024 * 1024
      local q = mproc.Queue()
      assert(q:put(string.rep("q", 16 * MiB - 1) .. "!"))
      collectgarbage(); collectgarbage()
      local blocks = {}
      while true do
        local ok, b = pcall(string.rep, "f", MiB)
        if not ok then break end
        blocks[#blocks + 1] = b
      end
      local failed, item = 0, nil
      while #blocks > 0 and not item do
        local ok, v, err, code = pcall(q.get, q, false)
        if not ok then print("raised", v) break end
        if err == "empty" then print("lost") break end
        if v ~= nil then item = v
        else
          assert(err == "cannot get from the queue: Cannot allocate memory" and code == 12, err)
          failed = failed + 1
          blocks[#blocks] = nil
          collectgarbage(); collectgarbage()
        end
      end
      blocks = nil
      collectgarbage(); collectgarbage()
      item = item or q:get(false)
      print("failed gets", failed)
      print("item whole", item ~= nil and #item == 16 * MiB and item:find("^q+!$") ~= nil)
      print("left", q:qsize())
    ]])
    local out, code = support.sh("ulimit -v 131072 && " .. support.LUA .. " " .. support.shell_quote(path), true)
    os.remove(path)
    assert.are.equal(0, code, out)
    assert.is_nil(out:find("raised", 1, true), out)
    assert.is_nil(out:find("lost", 1, true), out)
    assert.is_truthy(tonumber(out:match("failed gets\t(%d+)")) > 0, out)
    assert.matches("item whole\ttrue\nleft\t0\n", out)
  end)

  it("shows its size in tostring", function()
    local q = mproc.Queue(5)
    q:put(1)
    assert.are.equal("mproc.Queue (1 items, maxsize 5)", tostring(q))
  end)

  it("raises for bad arguments", function()
    local q = mproc.Queue()
    assert.has_error(function() mproc.Queue("x") end, "bad argument #1 to 'Queue' (integer expected for maxsize, got string)")
    assert.has_error(function() mproc.JoinableQueue(1.5) end)
    assert.has_error(function() q:put(1, "yes") end, "bad argument #2 to 'put' (boolean expected for block, got string)")
    assert.has_error(function() q:get(true, "soon") end)
    assert.has_error(function() mproc.JoinableQueue():join("x") end)
  end)
end)

describe("JoinableQueue", function()
  it("join waits until task_done was called for every item put", function()
    local q = mproc.JoinableQueue()
    assert.is_true(q:join(0))
    for i = 1, 3 do q:put(i) end
    assert.are.same({ nil, "timeout" }, { q:join(0.05) })
    local p = mproc.Process(function()
      for _ = 1, 3 do q:get(); mproc.sleep(0.01); q:task_done() end
    end):start()
    assert.is_true(q:join(10))
    assert.is_true(q:empty())
    assert.are.equal(0, p:join())
  end)

  it("raises when task_done is called more times than items were put", function()
    local q = mproc.JoinableQueue()
    q:put(1)
    q:get()
    q:task_done()
    assert.has_error(function() q:task_done() end)
  end)
end)

describe("SimpleQueue", function()
  it("has get, put, empty and close", function()
    local q = mproc.SimpleQueue()
    assert.is_true(q:empty())
    q:put({ 1, 2 })
    assert.is_false(q:empty())
    assert.are.same({ 1, 2 }, q:get())
    assert.is_nil(q.qsize)
    q:close()
    assert.has_error(function() q:put(1) end)
  end)
end)

describe("Queues made at any time", function()
  -- Reaching a queue a process did not inherit takes /proc/<pid>/fd
  -- (Linux); the portable build says it cannot.
  local linux_it = support.PORTABLE and function() end or it

  -- whether fd is readable now
  local function readable(fd) return #core.poll({ fd }, 0) == 1 end

  -- a Pool whose workers are running (forked) already
  local function started_pool(n)
    local pool = mproc.Pool(n)
    pool:map(function() end, { 1, 2, 3, 4 })
    return pool
  end

  if support.PORTABLE then
    it("are refused, with the reason, where /proc cannot reach them", function()
      local pool <close> = started_pool(1)
      local q = mproc.Queue()
      local ok, err = pcall(pool.apply, pool, function(x) return x end, { q })
      assert.is_false(ok)
      assert.matches("cannot receive a Queue: not inherited by this process", err, 1, true)
    end)
  end

  for _, kind in ipairs({ "Queue", "SimpleQueue", "JoinableQueue" }) do
    linux_it("reach Pool workers started before them (" .. kind .. "): workers put, the parent gets each item once", function()
      local pool <close> = started_pool(2)
      local q, r = mproc[kind](), mproc[kind]()
      -- q an upvalue of the task, r its argument
      pool:map(function(x) q:put(x); r:put(-x) end, { 1, 2, 3, 4, 5, 6, 7, 8 })
      local got = {}
      for _ = 1, 8 do
        got[#got + 1] = q:get(true, 5)
        got[#got + 1] = r:get(true, 5)
      end
      table.sort(got)
      assert.are.same({ -8, -7, -6, -5, -4, -3, -2, -1, 1, 2, 3, 4, 5, 6, 7, 8 }, got)
      assert.is_true(q:empty())
      assert.is_true(r:empty())
    end)
  end

  linux_it("reach Pool workers started before them: workers get what the parent puts", function()
    local pool <close> = started_pool(2)
    local q = mproc.Queue()
    for i = 1, 6 do q:put(i * 10) end
    local got = pool:map(function(qq) return qq:get(true, 5) end, { q, q, q, q, q, q })
    got.n = nil
    table.sort(got)
    assert.are.same({ 10, 20, 30, 40, 50, 60 }, got)
    assert.is_true(q:empty())
  end)

  linux_it("are the same object each time they reach a worker, opened once there", function()
    local pool <close> = started_pool(1)
    local q = mproc.Queue()
    local fd_count = support.fd_count   -- no globals: the task's _ENV may be busted's
    local function probe(x)
      local first = mproc.KEEP_Q == nil
      mproc.KEEP_Q = mproc.KEEP_Q or x
      return { same = x == mproc.KEEP_Q, first = first, fds = fd_count() }
    end
    local a = pool:apply(probe, { q })
    local b = pool:apply(probe, { q })
    assert.is_true(a.first)
    assert.is_true(b.same)
    assert.are.equal(a.fds, b.fds)
  end)

  linux_it("keep JoinableQueue's task count across: join in one process, task_done in another", function()
    local pool <close> = started_pool(2)
    local q = mproc.JoinableQueue()
    for i = 1, 4 do q:put(i) end
    assert.are.same({ nil, "timeout" }, { q:join(0.01) })
    pool:map(function() q:get(true, 5); q:task_done() end, { 1, 2, 3, 4 })
    assert.is_true(q:join(5))
    -- the other way round: workers put, the parent calls task_done, a worker joins
    local joined = pool:apply_async(function()
      q:put("a"); q:put("b")
      return q:join(10)
    end)
    for _ = 1, 2 do assert.is_truthy(q:get(true, 5)); q:task_done() end
    assert.is_true(joined:get(10))
  end)

  linux_it("travel from a worker to the parent, and back to it", function()
    local pool <close> = mproc.Pool(1)
    local q = pool:apply(function()
      local made = mproc.JoinableQueue()
      made:put("from the worker")
      mproc.KEEP_Q = made   -- the worker keeps it while the parent opens it
      return made
    end)
    assert.are.equal("mproc.JoinableQueue", getmetatable(q).__name)
    assert.are.equal("from the worker", q:get(true, 5))
    q:task_done()
    assert.is_true(pool:apply(function() return mproc.KEEP_Q:join(5) end))
    q:put("from the parent")
    -- sent back to its maker, it is the maker's own object again
    assert.are.same({ true, "from the parent" },
      pool:apply(function(back) return { back == mproc.KEEP_Q, back:get(true, 5) } end, { q }))
  end)

  linux_it("travel from one child to a sibling through another Queue", function()
    local inbox, back = mproc.Queue(), mproc.Queue()
    local a = mproc.Process(function()
      local q = mproc.Queue()
      inbox:put(q)
      back:put(q:get(true, 20))   -- what b puts in a's queue comes back
    end):start()
    local b = mproc.Process(function()
      local q = inbox:get(true, 10)
      q:put("from b")
    end):start()
    local seen = back:get(true, 30)
    local code_b, code_a = b:join(10), a:join(10)
    if code_a == nil then a:kill(); a:join() end
    if code_b == nil then b:kill(); b:join() end
    assert.are.equal(0, code_b)
    assert.are.equal(0, code_a)
    assert.are.equal("from b", seen)
  end)

  linux_it("say so when no live process holds them any more", function()
    local inbox = mproc.Queue()
    local p = mproc.Process(function() inbox:put(mproc.JoinableQueue()) end):start()
    assert.are.equal(0, p:join(10))
    local ok, err = pcall(inbox.get, inbox)
    assert.is_false(ok)
    assert.matches(("cannot receive a JoinableQueue: no live process holds it any more (process %d "
      .. "sent it, process %d made it)"):format(p.pid, p.pid), err, 1, true)
    assert.is_true(inbox:empty())
  end)

  linux_it("wake a watcher (fileno) when a process that received them puts", function()
    local pool <close> = started_pool(1)
    local q = mproc.Queue()
    local fd = q:fileno()
    assert.is_false(readable(fd))
    pool:apply(function() q:put("x") end)
    assert.are.same({ q }, mproc.wait({ q }, 5))
    assert.are.equal("x", q:get_nowait())
    assert.is_false(readable(fd))
    q:put("y")                        -- a receiver's get drains it too
    assert.is_true(readable(fd))
    assert.are.equal("y", pool:apply(function() return q:get(true, 5) end))
    assert.is_false(readable(fd))
    -- the receiver watches, the maker puts
    local r = pool:apply_async(function()
      local ready = mproc.wait({ q }, 10)
      return #ready == 1 and q:get_nowait()
    end)
    mproc.sleep(0.05)
    q:put("z")
    assert.are.equal("z", r:get(15))
  end)

  linux_it("stay whole and usable when producers that received them are SIGKILLed at random instants", function()
    -- Workers (kill_trials) receive the queue on their first step from
    -- the maker, a process of its own: the trials' parent does not hold it
    -- until the end, so no worker inherits it. Each step puts an item and
    -- gets one, and checks that it is whole.
    local out = support.run_lua([[
      local mproc = require "mproc"
      local box, made, done = mproc.Dict(), mproc.Event(), mproc.Event()
      local maker = mproc.Process(function()
        box.q = mproc.Queue()
        made:set()
        done:wait(300)
      end)
      maker.daemon = true
      maker:start()
      assert(made:wait(10))
      local filler = string.rep("x", 64 * 1024)
      local function whole(v) return v:match("^%d+:%d+:(.*)$") == filler end
      local q
      local function step(slot, i)
        q = q or box.q
        q:put(("%d:%d:"):format(slot, i) .. filler)
        local v = q:get(false)
        if v and not whole(v) then error("a torn item") end
      end
      local stalls = require("kill_trials").run(step, 200)
      q = box.q
      local ok = true
      for v in function() return q:get(false) end do ok = ok and whole(v) end
      ok = ok and q:put(1) and q:get(true, 5) == 1
      done:set()
      print("stalls " .. stalls, "whole " .. tostring(ok))
    ]], { env = "timeout 300" })
    assert.are.equal("stalls 0\twhole true\n", out)
  end)
end)

describe("tutorial 03_queue.lua", function()
  it("prints what the reader got, in order, and the reader ends terminated", function()
    local out, code = support.run_example("examples/tutorial/03_queue.lua", 10)   -- sleeps up to 0.1 s
    assert.are.equal(0, code, out)
    local got = {}
    for v in out:gmatch("Get %[(%a+)%] from queue%.") do got[#got + 1] = v end
    assert.are.same({ "Apple", "Banana", "Cat", "Dog" }, got)
    assert.matches("Process to write: %d+", out)
    assert.matches("Process to read: %d+", out)
    assert.matches("Reader exitcode: %-15\n$", out)
  end)
end)

describe("Queue methods called with '.' instead of ':'", function()
  local cases = {
    { "Queue", { "put", "get", "put_nowait", "get_nowait", "qsize", "empty", "full", "close", "closed" } },
    { "JoinableQueue", { "task_done", "join" } },
    { "SimpleQueue", { "put", "get", "empty", "close", "closed" } },
  }
  for _, case in ipairs(cases) do
    for _, m in ipairs(case[2]) do
      it("raise naming " .. case[1] .. "." .. m .. " and what they got", function()
        local q = mproc[case[1]]()
        for _, bad in ipairs({ { nil, "nil" }, { 42, "number" }, { mproc.Lock(), "mproc.Lock" } }) do
          local ok, err = pcall(q[m], bad[1])
          assert.is_false(ok)
          assert.matches(("bad argument #1 to '%s' (mproc.Queue expected, got %s)"):format(m, bad[2]), err, 1, true)
        end
        q:close()
      end)
    end
  end

  it("task_done past the items put raises at the caller's line", function()
    local q = mproc.JoinableQueue()
    local ok, err = pcall(function() q:task_done() end)
    assert.is_false(ok)
    assert.matches("^spec/queue_spec%.lua:%d+: .*task_done", err)
    q:close()
  end)
end)
