-- Waiting from an event loop: every waitable object has a descriptor that
-- is readable when it may be ready, mproc.wait takes them all, and
-- Connections work on descriptors a loop made non-blocking.
local mproc = require "mproc"
local support = require "support"

local has_luv = pcall(require, "luv")
local has_cqueues = pcall(require, "cqueues")

-- Whether fd is readable now.
local function readable(fd)
  return #require("mproc.core").poll({ fd }, 0) == 1
end

describe("Queue:fileno()", function()
  it("is readable exactly while an item is there, across processes", function()
    local q = mproc.Queue()
    local fd = q:fileno()
    assert.is_false(readable(fd))
    local p = mproc.Process(function() q:put(1); q:put(2) end):start()
    p:join()
    assert.is_true(readable(fd))
    assert.are.equal(1, q:get_nowait())
    assert.is_true(readable(fd))
    assert.are.equal(2, q:get_nowait())
    assert.is_false(readable(fd))
    assert.are.same({}, mproc.wait({ q }, 0))
  end)

  it("becomes readable for an item put before fileno() was asked for", function()
    for _, make in ipairs({ mproc.Queue, mproc.JoinableQueue, mproc.SimpleQueue }) do
      local q = make()
      q:put("x")
      assert.is_true(readable(q:fileno()))
    end
  end)

  it("is answered by get_nowait on all three kinds: a spurious wake-up never blocks", function()
    for _, make in ipairs({ mproc.Queue, mproc.JoinableQueue, mproc.SimpleQueue }) do
      local q = make()
      local fd = q:fileno()
      local p = mproc.Process(function() q:put("x") end):start()
      assert.are.equal(1, #mproc.wait({ fd }, 10))
      local c = mproc.Process(function() q:get() end):start()   -- another consumer takes it
      assert.are.equal(0, c:join(10))
      p:join()
      assert.are.same({ nil, "empty" }, { q:get_nowait() })
      q:put(nil)
      assert.are.same({ n = 1 }, table.pack(q:get_nowait()))
    end
  end)

  it("stays valid when the processes that put and got are gone", function()
    local q = mproc.Queue()
    local fd = q:fileno()
    mproc.Process(function() q:put("a") end):start():join()
    mproc.Process(function() q:get() end):start():join()
    assert.is_false(readable(fd))
    mproc.Process(function() q:put("b") end):start():join()
    assert.is_true(readable(fd))
    assert.are.equal("b", q:get_nowait())
  end)

  it("never misses an item over many puts and gets from two processes", function()
    local q, done = mproc.Queue(), mproc.Event()
    local fd = q:fileno()
    local p = mproc.Process(function()
      for i = 1, 2000 do q:put(i) end
      done:set()
    end):start()
    local got = 0
    while got < 2000 do
      assert.are.equal(1, #mproc.wait({ fd }, 10))   -- it is readable, or nothing comes
      while q:get_nowait() do got = got + 1 end
    end
    p:join()
    assert.is_false(readable(fd))
  end)
end)

describe("mproc.wait", function()
  it("takes every waitable object and returns the ready ones in order", function()
    local pool = mproc.Pool(2)
    local q, a, b = mproc.Queue(), mproc.Pipe()
    local p = mproc.Process(function() mproc.sleep(30) end):start()
    local ar = pool:apply_async(function() return 1 end)
    local slow = pool:apply_async(mproc.sleep, { 30 })
    local it = pool:imap(function(x) return x end, { 1 })
    ar:wait(10)
    assert.is_true(it:ready() or #mproc.wait({ it }, 10) == 1)
    q:put(1)
    b:send("x")
    local objs = { p, q, a, ar, slow, it }
    assert.are.same({ q, a, ar, it }, mproc.wait(objs, 0))
    q:get(); a:recv()
    assert.are.same({ ar, it }, mproc.wait(objs, 0))
    p:kill(); p:join()
    assert.are.same({ p, ar, it }, mproc.wait(objs, 5))
    pool:terminate()
  end)

  it("takes a set of objects, {[conn] = true}, as Python's wait takes any iterable", function()
    local a, b = mproc.Pipe()
    local c, d = mproc.Pipe()
    b:send("x")
    assert.are.same({ a }, mproc.wait({ [a] = true, [c] = true }, 5))
    assert.are.same({}, mproc.wait({ [c] = true }, 0))
    d:close()
    assert.are.same({ c }, mproc.wait({ [c] = "any value" }, 5))
  end)

  it("waits for a Pool result by its descriptor, not by polling", function()
    if support.PORTABLE then return pending("not in the portable build: a Pool's results descriptor is an epoll descriptor") end
    local pool = mproc.Pool(2)
    local fast = pool:apply_async(function() return "fast" end)
    local slow = pool:apply_async(mproc.sleep, { 30 })
    assert.are.same({ fast }, mproc.wait({ slow, fast }, 10))
    assert.is_number(fast:fileno())
    assert.are.equal(fast:fileno(), slow:fileno())
    pool:terminate()
  end)
end)

describe("a Pool's descriptor", function()
  if support.PORTABLE then return end   -- no epoll: fileno() gives nil there

  -- What an event loop's handler does: asks each result in turn. The pump
  -- one ask makes takes in results of others already asked (b's here).
  it("stays readable for a result another ask took in after its own ask", function()
    local pool <close> = mproc.Pool(2)
    local b = pool:apply_async(function() mproc.sleep(0.3) return "b" end)
    local a = pool:apply_async(mproc.sleep, { 30 })
    local fd = b:fileno()
    assert.is_false(b:ready())
    assert.are.equal(1, #mproc.wait({ fd }, 10))   -- b's result is in the pipe
    assert.is_false(a:ready())                     -- this ask takes it in
    assert.is_true(readable(fd), "a wake-up was lost: b is ready and nothing will come")
    assert.is_true(b:ready())
    assert.is_false(readable(fd), "readable with nothing new: a loop would spin")
    pool:terminate()
  end)

  it("does the same for a result whose callback is not the one its outcome calls", function()
    -- (the tasks name no global: busted's _ENV would travel with them)
    local cases = {
      { "error_callback only, the task succeeds", function() return "b" end, { error_callback = print } },
      { "callback only, the task fails", function() mproc.sleep(0.3) mproc.sleep("no") end, { callback = print } },
    }
    for _, case in ipairs(cases) do
      local pool <close> = mproc.Pool(2)
      local b = pool:apply_async(function(f) mproc.sleep(0.3) return f() end, { case[2] }, case[3])
      local a = pool:apply_async(mproc.sleep, { 30 })
      local fd = b:fileno()
      assert.is_false(b:ready())
      assert.are.equal(1, #mproc.wait({ fd }, 10))   -- b's result is in the pipe
      assert.is_false(a:ready())                     -- this ask takes it in
      assert.is_true(readable(fd), case[1] .. ": a wake-up was lost")
      assert.is_true(b:ready())
      assert.is_false(readable(fd))
      pool:terminate()
    end
  end)

  it("is not made readable by a map's chunk that comes after the map failed", function()
    local pool <close> = mproc.Pool(2)
    -- item 1 fails at once, item 2's chunk comes later (no global in the task)
    local m = pool:map_async(function(x) if x == 1 then mproc.sleep("no") end mproc.sleep(0.3) return x end,
      { 1, 2 }, 1)
    local fd = m:fileno()
    assert.is_true(m:wait(10))
    assert.is_false(m:successful())
    assert.is_false(readable(fd))
    local a = pool:apply_async(mproc.sleep, { 30 })
    assert.are.equal(1, #mproc.wait({ fd }, 10))   -- item 2's chunk is in the pipe
    assert.is_false(a:ready())                     -- this ask takes it in
    assert.is_false(readable(fd), "readable for a map whose outcome did not change: a loop would wake for nothing")
    pool:terminate()
  end)

  it("does the same for futures and imap iterators", function()
    local futures = require "mproc.futures"
    local ex <close> = futures.ProcessPoolExecutor(2)
    local go = mproc.Event()
    finally(function() go:set() end)   -- the executor's end waits for a
    local b = ex:submit(function() mproc.sleep(0.3) return "b" end)
    local a = ex:submit(function(e) e:wait(30) end, go)
    local fd = b:fileno()
    assert.is_false(b:done())
    assert.are.equal(1, #mproc.wait({ fd }, 10))
    assert.is_false(a:done())
    assert.is_true(readable(fd), "a future's wake-up was lost")
    assert.is_true(b:done())
    assert.is_false(readable(fd))
    go:set()
    assert.is_nil(a:result(10))

    local pool <close> = mproc.Pool(2)
    local it = pool:imap_unordered(function(x) mproc.sleep(x) return x end, { 0.3 })
    local slow = pool:apply_async(mproc.sleep, { 30 })
    fd = it:fileno()
    assert.is_false(it:ready())
    assert.are.equal(1, #mproc.wait({ fd }, 10))
    assert.is_false(slow:ready())
    assert.is_true(readable(fd), "an imap iterator's wake-up was lost")
    assert.is_true(it:ready())
    assert.are.same({ 1, 0.3 }, { it() })
    assert.is_false(readable(fd))
    pool:terminate()
  end)

  it("does not stay readable for a result no one will ask about (no busy loop)", function()
    local pool <close> = mproc.Pool(2)
    local go = mproc.Event()
    local mine = pool:apply_async(function(e) e:wait(30) end, { go })
    local fd = mine:fileno()
    pool:apply_async(function() return "dropped" end)   -- fire and forget
    collectgarbage("stop")   -- the dropped result stays in memory, as in a loop that allocates little
    finally(function() collectgarbage("restart") end)
    local wakes = 0
    for _ = 1, 100 do   -- what a loop does: wait, ask its own result
      if #mproc.wait({ fd }, 0.2) == 0 then break end
      wakes = wakes + 1
      if mine:ready() then break end
    end
    go:set()   -- before asserting: the pool's end waits for its worker
    assert.is_true(wakes <= 3, wakes .. " wake-ups for one result no one asks about")
    assert.is_true(mine:wait(10))
  end)

  it("wakes a loop that takes its results in order, one a wake-up, for the next one", function()
    local pool <close> = mproc.Pool(2)
    local go = mproc.Event()
    local first = pool:apply_async(function(e) e:wait(30) return 1 end, { go })
    local second = pool:apply_async(function() return 2 end)
    local fd = first:fileno()
    -- the handler: asks the result it is at; when ready, takes it and
    -- moves on to the next (asked at the next wake-up)
    local at, got, wakes = { first, second }, {}, 0
    local function handler()
      wakes = wakes + 1
      local r = at[#got + 1]
      if r:ready() then got[#got + 1] = r:get() end
      if #got == 0 and wakes == 2 then go:set() end   -- first's result comes after two asks
    end
    for _ = 1, 50 do
      if #got == 2 or #mproc.wait({ fd }, 5) == 0 then break end
      handler()
    end
    go:set()   -- before asserting: the pool's end waits for its worker
    assert.are.same({ 1, 2 }, got, "the loop was not woken for a result that is in")
    assert.is_true(wakes < 20, wakes .. " wake-ups")
  end)

  it("is not drained by a forked child that asks a result the parent has not", function()
    local pool <close> = mproc.Pool(2)
    local slow = pool:apply_async(mproc.sleep, { 30 })
    local b = pool:apply_async(function() return "b" end)
    local fd = b:fileno()
    assert.are.equal(1, #mproc.wait({ fd }, 10))   -- b's result is in the pipe
    assert.is_false(slow:ready())                  -- this ask takes it in: b unseen
    assert.is_true(readable(fd))
    local p = mproc.Process(function() assert(b:get() == "b") end)   -- the child's copy of b
    p:start()
    assert.are.equal(0, p:join(10))
    assert.is_true(readable(fd), "a child's ask drained the parent's descriptor: a wake-up was lost")
    assert.are.equal("b", b:get())
    assert.is_false(readable(fd))
    pool:terminate()
  end)

  it("wakes a luv loop for every result of thousands, with an imap beside them", function()
    if not has_luv then pending("lua-luv is not installed") return end
    local uv = require "luv"
    local pool <close> = mproc.Pool(2)
    local n, left, res = 5000, 5000, {}
    for i = 1, n do res[i] = pool:apply_async(function(x) return x end, { i }) end
    local items = {}
    for i = 1, n do items[i] = i end
    local it, got = pool:imap(function(x) return -x end, items), 0
    local h, wakes = uv.new_poll(res[1]:fileno()), 0
    local timer = uv.new_timer()
    uv.update_time()   -- luv's clock stands still outside uv.run
    timer:start(30000, 0, function() h:stop(); timer:stop() end)   -- a lost wake-up ends the loop
    local failed
    h:start("r", function()
      wakes = wakes + 1
      local ok, err = pcall(function()
        for i, r in pairs(res) do
          if r:ready() then assert(r:get() == i); res[i] = nil; left = left - 1 end
        end
        while got < n and it:ready() do   -- each step asks the iterator again
          local k, v = it()
          assert(k == got + 1 and v == -k)
          got = k
        end
      end)
      if not ok then failed = err end
      if (left == 0 and got == n) or failed then h:stop(); timer:stop() end
    end)
    local cpu0 = os.clock()
    uv.run()
    h:close(); timer:close(); uv.run("nowait")
    assert.is_nil(failed)
    assert.are.same({ 0, n }, { left, got })
    assert.is_true(os.clock() - cpu0 < 10, "the loop spun")
  end)
end)

describe("mproc.read_nowait", function()
  it("gives what a pipe holds now, '' when nothing yet, nil at its end", function()
    local sp = require "mproc.subprocess"
    local p = sp.Popen({ "sh", "-c", "echo one; read x; echo two" }, { stdin = sp.PIPE, stdout = sp.PIPE })
    assert.are.equal(1, #mproc.wait({ mproc.fileno(p.stdout) }, 10))
    assert.are.equal("one\n", mproc.read_nowait(p.stdout))
    assert.are.equal("", mproc.read_nowait(p.stdout))
    p.stdin:write("\n"); p.stdin:close()
    local rest = ""
    while true do
      mproc.wait({ mproc.fileno(p.stdout) }, 10)
      local s = mproc.read_nowait(p.stdout)
      if s == nil then break end
      rest = rest .. s
    end
    assert.are.equal("two\n", rest)
    assert.are.equal(0, p:wait())
  end)
end)


-- Runs an examples/eventloop script: everything it waits for arrives, and
-- the parent's CPU time while it waits stays near zero (no busy loop).
local function check_example(path)
  local out = support.run_lua(nil, { path = path, env = "timeout 60" })
  for _, line in ipairs({ "process ended with exitcode 0", "popen: line 1", "popen: line 3", "popen ended",
                          "connection: 3 messages, then closed", "pool: task 4 gave 16", "queue: 6 items" }) do
    assert.matches(line, out, 1, true)
  end
  local cpu = tonumber(out:match("parent CPU while waiting: ([%d.]+) s"))
  assert.is_true(cpu ~= nil and cpu < 0.3, "the parent busy-waited: " .. tostring(cpu))
end

describe("with luv", function()
  it("sends and receives 8 MiB messages on descriptors luv made non-blocking, none torn", function()
    if not has_luv then pending("lua-luv is not installed") return end
    local uv = require "luv"
    local a, b = mproc.Pipe()
    local pa, pb = uv.new_poll(a:fileno()), uv.new_poll(b:fileno())   -- sets O_NONBLOCK
    local p = mproc.Process(function()
      for i = 1, 100 do   -- each message meets a full or an empty socket many times
        local m = assert(b:recv())
        assert(#m == 8 * 1024 * 1024 and m:byte(1) == i % 256 and m:byte(-1) == i % 256, "torn")
        b:send(i)
      end
    end):start()
    b:close()   -- the child's now: if this process fails, the child sees the end
    for i = 1, 100 do
      assert.is_true(a:send(string.rep(string.char(i % 256), 8 * 1024 * 1024)))
      assert.are.equal(i, a:recv())
    end
    assert.are.equal(0, p:join(60))
    pa:close(); pb:close()
    uv.run("nowait")   -- lets the closes finish before the state ends
  end)

  it("runs examples/eventloop/luv.lua: everything arrives, the parent idles", function()
    if not has_luv then pending("lua-luv is not installed") return end
    if support.PORTABLE then return pending("not in the portable build: the example watches a Pool's epoll descriptor") end
    check_example("examples/eventloop/luv.lua")
  end)
end)

describe("with cqueues", function()
  it("wakes coroutines that wait on one pool's descriptor, each for its own results", function()
    if not has_cqueues then pending("lua-cqueues is not installed") return end
    if support.PORTABLE then return pending("not in the portable build: a Pool's results descriptor is an epoll descriptor") end
    local cqueues = require "cqueues"
    local futures = require "mproc.futures"
    local function readable_by(fd) return { pollfd = function() return fd end, events = function() return "r" end } end
    local pool <close> = mproc.Pool(2)
    local ex <close> = futures.ProcessPoolExecutor(2)
    local n, res, fs, done = 2000, {}, {}, 0
    for i = 1, n do res[i] = pool:apply_async(function(x) return 2 * x end, { i }) end
    for i = 1, n // 4 do fs[i] = ex:submit(function(x) return -x end, i) end
    local loop = cqueues.new()
    for k = 1, 4 do   -- each takes its results in order, sleeping until the next is ready
      loop:wrap(function()
        for i = k, n, 4 do
          while not res[i]:ready() do cqueues.poll(readable_by(res[i]:fileno())) end
          assert(res[i]:get() == 2 * i)
        end
        done = done + 1
      end)
    end
    loop:wrap(function()   -- futures, last first
      for i = #fs, 1, -1 do
        while not fs[i]:done() do cqueues.poll(readable_by(fs[i]:fileno())) end
        assert(fs[i]:result() == -i)
      end
      done = done + 1
    end)
    local cpu0 = os.clock()
    assert(loop:loop(60))
    assert.are.equal(5, done)   -- not 5: a coroutine still slept when the 60 s were over
    assert.is_true(os.clock() - cpu0 < 10, "the loop spun")
  end)


  it("runs examples/eventloop/cqueues.lua: everything arrives, the parent idles", function()
    if not has_cqueues then pending("lua-cqueues is not installed") return end
    if support.PORTABLE then return pending("not in the portable build: the example watches a Pool's epoll descriptor") end
    check_example("examples/eventloop/cqueues.lua")
  end)
end)
