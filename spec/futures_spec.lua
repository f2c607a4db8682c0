-- busted gives spec functions their own _ENV, which cannot travel to a
-- worker: the functions of this file see _G instead (busted's names first).
local describe, it, before_each, after_each, assert = describe, it, before_each, after_each, assert
local _ENV = _G -- luacheck: ignore 211
local mproc = require "mproc"
local futures = require "mproc.futures"
local support = require "support"
-- Specs of what only Linux has; the portable build (PORTABLE=1) skips them.
local linux_it = support.PORTABLE and function() end or it

-- A gate between the spec and a task: the task marks that it started,
-- then waits until the spec opens the gate.
local function new_gate()
  local g = { started = support.tmpname(), open = support.tmpname() }
  function g.task(x)
    support.write_file(g.started, tostring(mproc.getpid()))
    -- until the gate opens, or the spec removes it (it then ended)
    while support.read_file(g.started) and not support.read_file(g.open) do mproc.sleep(0.005) end
    return x
  end
  function g.wait_started()
    -- the file exists before its pid is written: wait for the number
    local pid
    assert.is_true(support.eventually(function()
      pid = tonumber(support.read_file(g.started) or "")
      return pid ~= nil
    end, 10))
    return pid
  end
  function g.release() support.write_file(g.open, "") end
  function g.remove()
    os.remove(g.started)
    os.remove(g.open)
  end
  return g
end

local function identity(...) return ... end

describe("mproc.futures", function()
  it("is require 'mproc.futures' and mproc.futures", function()
    assert.are.equal(futures, mproc.futures)
    assert.are.equal(futures.ProcessPoolExecutor, mproc.futures.ProcessPoolExecutor)
  end)
end)

describe("ProcessPoolExecutor and Future", function()
  local ex
  before_each(function() ex = futures.ProcessPoolExecutor(2) end)
  after_each(function() ex:terminate_workers() end)

  it("submit runs fn(...) in a worker; result gives all its values, nils included", function()
    local f = ex:submit(function(a, b, c) return a + c, b, mproc.getpid(), nil end, 1, nil, 3)
    assert.are.equal("mproc.Future", getmetatable(f).__name)
    local r = table.pack(f:result())
    assert.are.equal(4, r.n)
    assert.are.equal(4, r[1])
    assert.is_nil(r[2])
    assert.are_not.equal(mproc.getpid(), r[3])
    assert.are.same({}, { ex:submit(function() end):result() })
  end)

  it("sends closures with their upvalues", function()
    local base, names = 10, { "a", "b" }
    local f = ex:submit(function(i) return base + i, names[i]:upper() end, 2)
    assert.are.same({ 12, "B" }, { f:result() })
  end)

  it("result raises futures.TimeoutError when the timeout passes; a task's nil, 'timeout' is a value", function()
    local g = new_gate()
    local f = ex:submit(g.task, "late")
    local ok, err = pcall(f.result, f, 0.05)
    assert.is_false(ok)
    assert.are.equal(futures.TimeoutError, err)
    ok, err = pcall(f.exception, f, 0)
    assert.is_false(ok)
    assert.are.equal(futures.TimeoutError, err)
    assert.matches("TimeoutError", tostring(err))
    assert.are.same({ nil, "timeout" }, { ex:submit(function() return nil, "timeout" end):result(10) })
    g.release()
    assert.are.equal("late", f:result(10))
    g.remove()
  end)

  it("exception gives nil for a task that returned, the error and traceback for one that raised", function()
    assert.is_nil(ex:submit(identity, 1):exception())
    local function inner() error("boom in task") end
    local f = ex:submit(function() inner() end)
    local err, tb = f:exception(10)
    assert.matches("boom in task\nstack traceback %(pool worker pid %d+%):\n", err)
    assert.matches("in upvalue 'inner'", err, 1, true)
    assert.are.equal(err, tb)
    assert.are.equal(err, f:traceback())
    local ok, raised = pcall(f.result, f)
    assert.is_false(ok)
    assert.are.equal(err, raised)
  end)

  it("a table error arrives with its fields; the traceback beside it, the table untouched", function()
    local function check() error(setmetatable({ code = 42, path = "/x" }, { __index = { kind = "E" } })) end
    local f = ex:submit(function() check() end)
    local ok, err = pcall(f.result, f, 10)
    assert.is_false(ok)
    assert.are.equal(42, err.code)
    assert.are.equal("/x", err.path)
    assert.are.equal("E", err.kind)
    assert.is_nil(rawget(err, "traceback"))
    local same, tb = f:exception()
    assert.are.equal(err, same)
    assert.matches("^%(error object is a table value%)\nstack traceback %(pool worker pid %d+%):\n", tb)
    assert.matches("in upvalue 'check'", tb, 1, true)
    assert.are.equal(tb, f:traceback())
    assert.is_nil(tb:find("mproc/pool.lua", 1, true))
    assert.is_nil(ex:submit(identity, 1):traceback())
  end)

  it("a CalledProcessError raised in a task keeps its returncode", function()
    local f = ex:submit(mproc.subprocess.check_call, { "sh", "-c", "exit 4" })
    local err = f:exception(10)
    assert.are.equal(mproc.subprocess.CalledProcessError, getmetatable(err))
    assert.are.equal(4, err.returncode)
    assert.matches("non%-zero exit status 4", tostring(err))
  end)

  it("done, running and cancelled follow the task", function()
    local g = new_gate()
    local f = ex:submit(g.task, 1)
    g.wait_started()
    assert.is_false(f:done())
    assert.is_true(f:running())
    assert.is_false(f:cancelled())
    assert.matches("running", tostring(f))
    g.release()
    f:result(10)
    assert.is_true(f:done())
    assert.is_false(f:running())
    assert.matches("done", tostring(f))
    g.remove()
  end)

  describe("cancel", function()
    it("cancels only what has not started; result then raises CancelledError", function()
      local one <close> = futures.ProcessPoolExecutor(1)
      local g = new_gate()
      local running = one:submit(g.task, "ran")
      g.wait_started()
      local queued = {}
      for i = 1, 5 do queued[i] = one:submit(identity, i) end
      assert.is_false(running:cancel())
      assert.is_true(queued[2]:cancel())
      assert.is_true(queued[2]:cancel()) -- again: still cancelled
      assert.is_true(queued[2]:cancelled())
      assert.is_true(queued[2]:done())
      assert.is_false(queued[2]:running())
      assert.matches("cancelled", tostring(queued[2]))
      local ok, err = pcall(queued[2].result, queued[2])
      assert.is_false(ok)
      assert.are.equal(futures.CancelledError, err)
      ok, err = pcall(queued[2].exception, queued[2])
      assert.is_false(ok)
      assert.are.equal(futures.CancelledError, err)
      g.release()
      assert.are.equal("ran", running:result(10))
      for _, i in ipairs({ 1, 3, 4, 5 }) do assert.are.equal(i, queued[i]:result(10)) end
      assert.is_false(queued[1]:cancel())
      assert.is_false(running:cancelled())
      g.remove()
    end)

    it("cancels a future still in the executor's queue, behind more than the pool holds", function()
      local one <close> = futures.ProcessPoolExecutor(1)
      local g = new_gate()
      one:submit(g.task, 0)
      g.wait_started()
      local fs = {}
      for i = 1, 3000 do fs[i] = one:submit(identity, i) end
      assert.is_true(fs[3000]:cancel())
      assert.is_true(fs[10]:cancel())
      g.release()
      local done = futures.wait(fs, { timeout = 30 })
      assert.are.equal(3000, #done)
      assert.are.equal(2999, fs[2999]:result())
      assert.is_true(fs[3000]:cancelled())
      g.remove()
    end)
  end)

  describe("add_done_callback", function()
    it("calls fn(future) once, in the parent, when it is done; at once if it is already", function()
      local calls = {}
      local f = ex:submit(function(x) mproc.sleep(0.05) return x end, 7)
      f:add_done_callback(function(fut) calls[#calls + 1] = { "first", fut, mproc.getpid() } end)
      f:add_done_callback(function() calls[#calls + 1] = { "second" } end)
      assert.are.same({}, calls)
      assert.are.equal(7, f:result(10))
      f:done()
      ex:submit(identity, 1):result(10) -- more calls into mproc: no second call
      assert.are.equal(2, #calls)
      assert.are.same({ "first", f, mproc.getpid() }, calls[1])
      assert.are.same({ "second" }, calls[2])
      local now
      f:add_done_callback(function(fut) now = fut end)
      assert.are.equal(f, now)
      assert.are.equal(2, #calls)
    end)

    it("runs for a failed future and for a cancelled one, exactly once", function()
      local one <close> = futures.ProcessPoolExecutor(1)
      local g = new_gate()
      local count = {}
      local function cb(fut) count[fut] = (count[fut] or 0) + 1 end
      local failing = one:submit(function() g.task() error("x") end)
      failing:add_done_callback(cb)
      g.wait_started()
      local queued = one:submit(identity, 1)
      queued:add_done_callback(cb)
      assert.is_true(queued:cancel())
      assert.are.equal(1, count[queued])
      g.release()
      assert.is_not_nil(failing:exception(10))
      failing:cancel()
      queued:cancel()
      failing:done()
      assert.are.equal(1, count[failing])
      assert.are.equal(1, count[queued])
      g.remove()
    end)

    it("callbacks run whenever the parent calls into mproc, e.g. mproc.wait", function()
      local got
      local f = ex:submit(identity, "v")
      f:add_done_callback(function(fut) got = fut:result() end)
      mproc.wait({ f }, 10)
      assert.are.equal("v", got)
    end)
  end)
end)

describe("futures.wait", function()
  local ex
  before_each(function() ex = futures.ProcessPoolExecutor(2) end)
  after_each(function() ex:terminate_workers() end)

  local function sleeper(s, v) mproc.sleep(s) return v end

  it("waits for all by default; done and not_done keep the order of fs", function()
    local fs = {}
    for i = 1, 6 do fs[i] = ex:submit(sleeper, (7 - i) * 0.01, i) end
    local done, not_done = futures.wait(fs)
    assert.are.same(fs, done)
    assert.are.same({}, not_done)
    done = futures.wait(fs, { return_when = futures.ALL_COMPLETED })
    assert.are.same(fs, done)
  end)

  it("FIRST_COMPLETED returns when one is done", function()
    local g = new_gate()
    local slow = ex:submit(g.task, "slow")
    local fast = ex:submit(identity, "fast")
    local done, not_done = futures.wait({ slow, fast }, { return_when = futures.FIRST_COMPLETED })
    assert.are.same({ fast }, done)
    assert.are.same({ slow }, not_done)
    g.release()
    slow:result(10)
    g.remove()
  end)

  it("FIRST_EXCEPTION returns at the first error; with none it waits for all", function()
    local g = new_gate()
    local slow = ex:submit(g.task, "slow")
    local bad = ex:submit(function() error({ bad = true }) end)
    local done, not_done = futures.wait({ slow, bad }, { return_when = futures.FIRST_EXCEPTION })
    assert.are.same({ bad }, done)
    assert.are.same({ slow }, not_done)
    g.release()
    local a, b = ex:submit(sleeper, 0.05, 1), ex:submit(identity, 2)
    done, not_done = futures.wait({ a, b }, { return_when = "FIRST_EXCEPTION" })
    assert.are.same({ a, b }, done)
    assert.are.same({}, not_done)
    g.remove()
  end)

  it("gives back what is done when the timeout passes, without raising", function()
    local g = new_gate()
    local slow, fast = ex:submit(g.task, 1), ex:submit(identity, 2)
    fast:result(10)
    local done, not_done = futures.wait({ slow, fast }, { timeout = 0.05 })
    assert.are.same({ fast }, done)
    assert.are.same({ slow }, not_done)
    g.release()
    g.remove()
  end)

  it("counts a cancelled future as done; lists a future given twice once", function()
    local one <close> = futures.ProcessPoolExecutor(1)
    local g = new_gate()
    local running = one:submit(g.task, 1)
    g.wait_started()
    local queued = one:submit(identity, 2)
    queued:cancel()
    local done, not_done = futures.wait({ queued, running, queued }, { return_when = futures.FIRST_COMPLETED })
    assert.are.same({ queued }, done)
    assert.are.same({ running }, not_done)
    g.release()
    g.remove()
  end)

  it("waits on futures of two executors at once", function()
    local other <close> = futures.ProcessPoolExecutor(1)
    local g = new_gate()
    local a = ex:submit(g.task, "a")
    local b = other:submit(sleeper, 0.05, "b")
    local done = futures.wait({ a, b }, { return_when = futures.FIRST_COMPLETED })
    assert.are.same({ b }, done)
    g.release()
    done = futures.wait({ a, b })
    assert.are.same({ a, b }, done)
    g.remove()
  end)
end)

describe("futures.as_completed", function()
  local ex
  before_each(function() ex = futures.ProcessPoolExecutor(2) end)
  after_each(function() ex:terminate_workers() end)

  it("takes a table keyed by futures, as Python's {ex.submit(f, url): url} dict, and so does wait", function()
    local to_url = {}
    for _, url in ipairs({ "a", "b", "c" }) do to_url[ex:submit(string.upper, url)] = url end
    local got = {}
    for f in futures.as_completed(to_url, 10) do got[to_url[f]] = f:result() end
    assert.are.same({ a = "A", b = "B", c = "C" }, got)
    local done, not_done = futures.wait(to_url, { timeout = 10 })
    assert.are.same({ 3, 0 }, { #done, #not_done })
    assert.has_error(function() futures.wait({ x = 1 }) end,
      "bad argument #1 to 'wait' (a list of Futures or a table keyed by Futures expected, got a key that is string)")
  end)

  it("gives each future once as it completes, those already done first", function()
    local g = new_gate()
    local done_first = ex:submit(identity, "first")
    done_first:result(10)
    local gated = ex:submit(g.task, "gated")
    local quick = ex:submit(identity, "quick")
    local order = {}
    for f in futures.as_completed({ gated, quick, done_first, quick }) do
      order[#order + 1] = f:result()
      if #order == 2 then g.release() end
    end
    assert.are.same({ "first", "quick", "gated" }, order)
    g.remove()
  end)

  it("raises futures.TimeoutError when the timeout passes with some not done", function()
    local g = new_gate()
    local gated, quick = ex:submit(g.task, 1), ex:submit(identity, 2)
    local got = {}
    local ok, err = pcall(function()
      for f in futures.as_completed({ gated, quick }, 0.2) do got[#got + 1] = f end
    end)
    assert.is_false(ok)
    assert.are.equal(futures.TimeoutError, err)
    assert.are.same({ quick }, got)
    g.release()
    assert.are.equal(1, gated:result(10))
    g.remove()
  end)

  it("takes 5000 futures, each given once", function()
    local fs, seen, n = {}, {}, 0
    for i = 1, 5000 do fs[i] = ex:submit(identity, i) end
    for f in futures.as_completed(fs) do
      local v = f:result()
      assert.is_nil(seen[v])
      seen[v], n = true, n + 1
    end
    assert.are.equal(5000, n)
  end)

  it("a loop left early leaves the futures usable", function()
    local fs = { ex:submit(identity, 1), ex:submit(identity, 2) }
    for _ in futures.as_completed(fs) do break end -- luacheck: ignore 512
    assert.are.same({ 1, 2 }, { fs[1]:result(10), fs[2]:result(10) })
    assert.is_nil(fs[1]._waiters)
    assert.is_nil(fs[2]._waiters)
  end)
end)

describe("ProcessPoolExecutor:map", function()
  local ex
  before_each(function() ex = futures.ProcessPoolExecutor(2) end)
  after_each(function() ex:terminate_workers() end)

  local list = {}
  for i = 1, 50 do list[i] = i end

  for _, c in ipairs({ 1, 3, 100 }) do
    it("gives index and value in input order, chunksize " .. c, function()
      local n = 0
      for i, v in ex:map(function(x) mproc.sleep((x % 3) * 0.001) return x * x end, list, { chunksize = c }) do
        n = n + 1
        assert.are.equal(n, i)
        assert.are.equal(i * i, v)
      end
      assert.are.equal(50, n)
    end)
  end

  it("names a result that cannot be sent back by its item's place in the whole input", function()
    local bad5 = function(x) return x == 5 and coroutine.create(print) or x end
    local ok, err = pcall(function() for _ in ex:map(bad5, list, { chunksize = 3 }) do end end)
    assert.is_false(ok)
    assert.matches("back: the result for item #5: coroutine$", err)
  end)

  it("gives every value fn returns, and honours a list's n", function()
    local got = {}
    for i, a, b in ex:map(function(x) return x, x == nil end, table.pack(1, nil, 3)) do
      got[#got + 1] = { i, a, b }
    end
    assert.are.same({ { 1, 1, false }, { 2, nil, true }, { 3, 3, false } }, got)
  end)

  it("takes several inputs as Python's map(fn, xs, ys): cut at the shortest, options last", function()
    local got = {}
    for i, v in ex:map(function(a, b) return a * b end, { 1, 2, 3 }, { 10, 20 }, { chunksize = 2 }) do got[i] = v end
    assert.are.same({ 10, 40 }, got)
    local k, pairs_ = 0, {}
    local function count() k = k + 1 if k <= 3 then return k end end
    for i, a, b in ex:map(function(a, b) return a, b end, table.pack("x", nil, "z"), count) do pairs_[i] = { a, b } end
    assert.are.same({ { "x", 1 }, { nil, 2 }, { "z", 3 } }, pairs_)
    for _ in ex:map(identity, { 1 }, {}, {}) do error("an empty input gives nothing") end
    assert.has_error(function() ex:map(identity, { 1 }, { 2 }, { bogus = 1 }) end,
      "bad argument #4 to 'map' (unknown option 'bogus')")
  end)

  it("pulls an iterator function lazily: an endless one works with break", function()
    local pulled = 0
    local function endless() pulled = pulled + 1 return pulled end
    for i, v in ex:map(identity, endless, { chunksize = 2 }) do
      assert.are.equal(i, v)
      if i == 10 then break end
    end
    assert.is_true(pulled < 2000, "pulled " .. pulled)
    assert.are.equal(5, ex:submit(identity, 5):result(10))
  end)

  it("raises a task's error value when the loop reaches it, after the items before it", function()
    local got = {}
    local ok, err = pcall(function()
      for i, v in ex:map(function(x) if x == 4 then error({ item = x }) end return x end, list) do
        got[i] = v
      end
    end)
    assert.is_false(ok)
    assert.are.same({ item = 4 }, err)
    assert.are.same({ 1, 2, 3 }, got)
  end)

  it("raises futures.TimeoutError when the timeout passes", function()
    local g = new_gate()
    local ok, err = pcall(function()
      for _ in ex:map(g.task, { 1, 2 }, { timeout = 0.1 }) do end
    end)
    assert.is_false(ok)
    assert.are.equal(futures.TimeoutError, err)
    g.release()
    g.remove()
  end)

  it("leaving the loop early cancels the chunks not started", function()
    local one <close> = futures.ProcessPoolExecutor(1)
    local path = support.tmpname()
    local function mark(x)
      local fh = io.open(path, "a")
      fh:write(x, "\n")
      fh:close()
      mproc.sleep(0.01)
      return x
    end
    for i in one:map(mark, list) do if i == 2 then break end end
    one:shutdown()
    local ran = #support.lines(support.read_file(path))
    os.remove(path)
    assert.is_true(ran < 50, "ran " .. ran)
  end)
end)

describe("ProcessPoolExecutor:shutdown", function()
  it("waits for every future, then the workers have exited", function()
    local before = #support.children()
    local ex = futures.ProcessPoolExecutor(2)
    local fs = {}
    for i = 1, 20 do fs[i] = ex:submit(function(x) mproc.sleep(0.01) return x end, i) end
    ex:shutdown()
    for i = 1, 20 do
      assert.is_true(fs[i]:done())
      assert.are.equal(i, fs[i]:result(0))
    end
    assert.are.equal(before, #support.children())
    assert.matches("shut down", tostring(ex))
  end)

  it("with wait = false returns at once; the futures still complete and the workers then exit", function()
    local before = #support.children()
    local ex = futures.ProcessPoolExecutor(2)
    local g = new_gate()
    local f = ex:submit(g.task, "still")
    local rest = {}
    for i = 1, 5 do rest[i] = ex:submit(identity, i) end
    ex:shutdown(false)
    assert.is_false(f:done())
    g.release()
    assert.are.equal("still", f:result(10))
    for i = 1, 5 do assert.are.equal(i, rest[i]:result(10)) end
    assert.is_true(support.eventually(function()
      f:done()
      return #support.children() == before
    end, 10))
    g.remove()
  end)

  it("refuses submit and map afterwards", function()
    local ex = futures.ProcessPoolExecutor(1)
    ex:shutdown()
    local ok, err = pcall(function() ex:submit(identity, 1) end)
    assert.is_false(ok)
    assert.matches("^spec/futures_spec%.lua:%d+: submit: the executor is shut down", err)
    ok, err = pcall(function() ex:map(identity, {}) end)
    assert.is_false(ok)
    assert.matches("^spec/futures_spec%.lua:%d+: map: the executor is shut down", err)
  end)

  it("cancel_futures = true cancels every future not started, at once", function()
    local ex = futures.ProcessPoolExecutor(1)
    local g = new_gate()
    local running = ex:submit(g.task, "ran")
    g.wait_started()
    local fs, cancelled = {}, 0
    for i = 1, 20000 do
      fs[i] = ex:submit(identity, i)
      fs[i]:add_done_callback(function(f) if f:cancelled() then cancelled = cancelled + 1 end end)
    end
    -- the gate opens from another process while shutdown waits for the running task
    local opener = support.when_waiting(mproc.getpid(), g.release)
    ex:shutdown(true, true)
    opener:join()
    assert.are.equal("ran", running:result(0))
    for i = 1, 20000 do assert.is_true(fs[i]:cancelled()) end
    assert.are.equal(20000, cancelled)
    g.remove()
  end)

  it("works as a to-be-closed variable: waits; on an error, cancels what has not started", function()
    local fs = {}
    do
      local ex <close> = futures.ProcessPoolExecutor(2)
      for i = 1, 10 do fs[i] = ex:submit(function(x) mproc.sleep(0.01) return x end, i) end
    end
    for i = 1, 10 do assert.are.equal(i, fs[i]:result(0)) end
    local g = new_gate()
    local running, queued, opener
    local ok = pcall(function()
      local ex <close> = futures.ProcessPoolExecutor(1)
      running = ex:submit(g.task, "ran")
      g.wait_started()
      queued = ex:submit(identity, 1)
      -- the gate opens once the close waits for the running task: opened
      -- here, the worker could take the queued one before the close cancels it
      opener = support.when_waiting(mproc.getpid(), g.release)
      error("leaving")
    end)
    if opener then opener:join(10) end
    assert.is_false(ok)
    assert.are.equal("ran", running:result(0))
    assert.is_true(queued:cancelled())
    g.remove()
  end)

  it("leaves no process or descriptor behind", function()
    local fds, kids = support.fd_count(), #support.children()
    for _ = 1, 3 do
      local ex <close> = futures.ProcessPoolExecutor(2)
      local fs = {}
      for i = 1, 50 do fs[i] = ex:submit(identity, i) end
      futures.wait(fs)
    end
    assert.are.equal(kids, #support.children())
    assert.are.equal(fds, support.fd_count())
  end)

  it("terminate_workers stops running futures, cancels the rest", function()
    local ex = futures.ProcessPoolExecutor(1)
    local g = new_gate()
    local running = ex:submit(g.task, 1)
    g.wait_started()
    local queued = ex:submit(identity, 2)
    ex:terminate_workers()
    assert.matches("terminated", running:exception(0))
    assert.is_true(queued:cancelled())
    g.remove()
  end)
end)

describe("a worker that dies mid-task", function()
  local cases = {
    { "SIGKILL", "was killed by signal 9 %(SIGKILL%)", true },
    { "segfault", "was killed by signal 11 %(SIGSEGV%)" },
    { "os.exit(3)", "exited with code 3" },
  }
  local bodies = {
    SIGKILL = function() mproc.sleep(30) end,
    segfault = function() require("mproc.core").kill(mproc.getpid(), 11) end,
    ["os.exit(3)"] = function() os.exit(3) end,
  }
  for _, case in ipairs(cases) do
    it("fails exactly its future (" .. case[1] .. "), naming pid and cause; the executor goes on", function()
      local ex <close> = futures.ProcessPoolExecutor(2)
      local g = new_gate()
      local body = bodies[case[1]]
      local victim = ex:submit(function() g.task() body() end)
      local pid = g.wait_started()
      local others = {}
      for i = 1, 20 do others[i] = ex:submit(function(x) mproc.sleep(0.005) return x end, i) end
      if case[3] then require("mproc.core").kill(pid, 9) end
      g.release()
      local err = victim:exception(20)
      assert.matches("^pool worker %(pid " .. pid .. "%) " .. case[2] .. " while running this task$", err)
      assert.is_nil(victim:traceback())
      for i = 1, 20 do assert.are.equal(i, others[i]:result(20)) end
      local pids = {}
      for _ = 1, 10 do pids[ex:submit(mproc.getpid):result(20)] = true end
      assert.is_nil(pids[pid])
      g.remove()
    end)
  end
end)

describe("an executor under SIGKILL of its workers at random instants", function()
  it("fails at most one future per kill, completes the rest, and never wedges", function()
    local out = support.run_lua([[
      local mproc = require "mproc"
      local futures = require "mproc.futures"
      local KILLS, N = 40, 4000
      local me = mproc.getpid()
      local function workers()
        local s = io.open(("/proc/%d/task/%d/children"):format(me, me)):read("a")
        local t = {}
        for p in s:gmatch("%d+") do t[#t + 1] = tonumber(p) end
        return t
      end
      local ex <close> = futures.ProcessPoolExecutor(2)
      local fs = {}
      for i = 1, N do fs[i] = ex:submit(function(x) if x % 7 == 0 then mproc.sleep(0.001) end return x end, i) end
      for _ = 1, KILLS do
        futures.wait(fs, { timeout = math.random() * 0.01 })
        local ws = workers()
        if #ws > 0 then require("mproc.core").kill(ws[math.random(#ws)], 9) end
      end
      local done, not_done = futures.wait(fs, { timeout = 60 })
      local ok, failed, other = 0, 0, 0
      for i, f in ipairs(fs) do
        local err = f:exception(0)
        if err == nil and f:result() == i then ok = ok + 1
        elseif tostring(err):match("^pool worker %(pid %d+%) was killed by signal 9 %(SIGKILL%) while running this task$") then
          failed = failed + 1
        else other = other + 1 end
      end
      print(#done, #not_done, ok + failed, failed <= KILLS, other)
    ]], { env = "timeout 120" })
    assert.are.equal("4000\t0\t4000\ttrue\t0\n", out)
  end)

  -- ex:map, as_completed and shutdown(true) while workers are killed: a
  -- killed chunk raises its error when the loop reaches it, the items
  -- before it come right and once; nothing hangs
  it("gives every item of ex:map once or the kill's error, and shuts down, never wedging", function()
    local out = support.run_lua(([[
      local mproc = require "mproc"
      local futures = require "mproc.futures"
      local support = require "support"
      local ex = futures.ProcessPoolExecutor(2)
      local function kill_one()
        local ws = support.children()
        if #ws > 0 then require("mproc.core").kill(ws[math.random(#ws)], 9) end
      end
      local function f(x) if x %% 3 == 0 then mproc.sleep(0.0005) end return x * 2 end
      local bad, failed = 0, 0
      for _ = 1, %d do
        local it <close> = ex:map(f, { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12 }, { chunksize = 2, timeout = 60 })
        local at, n, last = math.random(12), 0, 0
        while true do
          local ok, i, v = pcall(it)
          if not ok then   -- the loop ends with the error, as Python's does
            if tostring(i):match("was killed by signal 9") then failed = failed + 1 else bad = bad + 1 end
            break
          elseif i == nil then break
          else
            n = n + 1
            if i <= last or v ~= 2 * i then bad = bad + 1 end
            last = i
            if n == at then kill_one() end
          end
        end
        local fs = {}
        for i = 1, 6 do fs[i] = ex:submit(f, i) end
        kill_one()
        for fu in futures.as_completed(fs, 60) do
          local err = fu:exception(0)
          if err and not tostring(err):match("was killed by signal 9") then bad = bad + 1 end
        end
      end
      kill_one()
      ex:shutdown(true)
      print("bad " .. bad, "failed " .. tostring(failed > 0), "children " .. #support.children())
    ]]):format(10 * support.SOAK), { env = "timeout 120" })
    assert.are.equal("bad 0\tfailed true\tchildren 0\n", out)
  end)
end)

describe("mproc.wait and futures", function()
  it("waits for a future beside other waitables; an empty list on timeout", function()
    local ex <close> = futures.ProcessPoolExecutor(1)
    local g = new_gate()
    local f = ex:submit(g.task, 1)
    local r, w = mproc.Pipe(false)
    assert.are.same({}, mproc.wait({ f, r }, 0.05))
    w:send("x")
    assert.are.same({ r }, mproc.wait({ f, r }, 10))
    g.release()
    assert.are.same({ f }, mproc.wait({ f }, 10))
    assert.is_true(f:done())
    local done = ex:submit(identity, 2)
    done:result()
    assert.are.same({ done, r }, mproc.wait({ done, r }))
    r:close()
    w:close()
    g.remove()
  end)

  linux_it("fileno() is the pool's descriptor, for event loops; false once the executor has shut down", function()
    local ex = futures.ProcessPoolExecutor(1)
    local f = ex:submit(identity, 1)
    local fd = f:fileno()
    assert.are.equal("integer", math.type(fd))
    assert.are.equal(fd, ex:submit(identity, 2):fileno())
    assert.are.same({ fd }, mproc.wait({ fd }, 10))
    f:result(10)
    ex:shutdown()
    assert.is_false(f:fileno())
    assert.are.same({ f }, mproc.wait({ f }, 0))
  end)
end)

describe("ProcessPoolExecutor options", function()
  it("runs the initializer in each worker; max_tasks_per_child = 1 gives a fresh pid per task", function()
    local ex <close> = futures.ProcessPoolExecutor(2, {
      initializer = function(tag) _G.EXECUTOR_TAG = tag end, initargs = { "init" }, max_tasks_per_child = 1 })
    local fs = {}
    for i = 1, 6 do fs[i] = ex:submit(function() return mproc.getpid(), _G.EXECUTOR_TAG end) end
    local pids = {}
    for i = 1, 6 do
      local pid, tag = fs[i]:result(20)
      assert.are.equal("init", tag)
      assert.is_nil(pids[pid])
      pids[pid] = true
    end
  end)

  it("takes its options as one table too; defaults to process_cpu_count() workers", function()
    local ex <close> = futures.ProcessPoolExecutor{ max_workers = 1 }
    assert.matches("(1 workers", tostring(ex), 1, true)
    local dflt <close> = futures.ProcessPoolExecutor()
    assert.matches(("(%d workers"):format(mproc.process_cpu_count()), tostring(dflt), 1, true)
  end)

  it("fails the futures of an executor whose initializer raises", function()
    local ex <close> = futures.ProcessPoolExecutor(1, { initializer = function() os.exit(1) end })
    assert.matches("initializer", ex:submit(identity, 1):exception(20))
  end)
end)

describe("futures: bad arguments", function()
  local ex
  before_each(function() ex = futures.ProcessPoolExecutor(1) end)
  after_each(function() ex:terminate_workers() end)
  local f = function() end
  local cases = {
    { "ProcessPoolExecutor(0)", function() futures.ProcessPoolExecutor(0) end,
      "bad argument #1 to 'ProcessPoolExecutor' (max_workers must be an integer in 1..4096, got 0)" },
    { "ProcessPoolExecutor(-1)", function() futures.ProcessPoolExecutor(-1) end, "got -1" },
    { "ProcessPoolExecutor{bogus}", function() futures.ProcessPoolExecutor{ bogus = 1 } end, "unknown option 'bogus'" },
    { "ProcessPoolExecutor(1, {max_workers = 2})", function() futures.ProcessPoolExecutor(1, { max_workers = 2 }) end,
      "bad argument #2 to 'ProcessPoolExecutor' (max_workers given twice: as argument #1 and as an option)" },
    { "map over a table with keys only", function() ex:map(f, { a = 1 }) end,
      "bad argument #2 to 'map' (a list expected, got a table with no item 1 but key 'a'" },
    { "initargs not a table", function() futures.ProcessPoolExecutor(1, { initializer = f, initargs = 5 }) end,
      "bad argument #2 to 'ProcessPoolExecutor' (initargs: table expected, got number)" },
    { "max_tasks_per_child 0", function() futures.ProcessPoolExecutor(1, { max_tasks_per_child = 0 }) end,
      "max_tasks_per_child must be an integer >= 1" },
    { "submit(nil)", function() ex:submit(nil) end, "bad argument #1 to 'submit' (function expected, got nil)" },
    { "submit coroutine arg", function() ex:submit(f, coroutine.create(f)) end,
      "bad argument #2 to 'submit' (cannot send the arguments" },
    { "result('x')", function() ex:submit(f):result("x") end, "bad argument #1 to 'result'" },
    { "exception('x')", function() ex:submit(f):exception({}) end, "bad argument #1 to 'exception'" },
    { "add_done_callback(1)", function() ex:submit(f):add_done_callback(1) end,
      "bad argument #1 to 'add_done_callback' (function expected, got number)" },
    { "wait(5)", function() futures.wait(5) end, "bad argument #1 to 'wait' (table expected, got number)" },
    { "wait({1})", function() futures.wait({ 1 }) end, "item 1 is number, not an mproc.Future" },
    { "wait return_when", function() futures.wait({}, { return_when = "SOME" }) end, "return_when must be" },
    { "wait timeout", function() futures.wait({}, { timeout = "1" }) end, "bad argument #2 to 'wait' (timeout" },
    { "wait{bogus}", function() futures.wait({}, { bogus = 1 }) end, "unknown option 'bogus'" },
    { "as_completed(nil)", function() futures.as_completed() end, "bad argument #1 to 'as_completed'" },
    { "as_completed timeout", function() futures.as_completed({}, "x") end, "bad argument #2 to 'as_completed'" },
    { "map(1)", function() ex:map(1, {}) end, "bad argument #1 to 'map'" },
    { "map(f, 5)", function() ex:map(f, 5) end, "bad argument #2 to 'map' (table or iterator function expected" },
    { "map chunksize 0", function() ex:map(f, {}, { chunksize = 0 }) end, "chunksize must be an integer >= 1" },
    { "map(f, {n = -1})", function() ex:map(f, { n = -1 }) end, "n must be >= 0" },
    { "shutdown('no')", function() ex:shutdown("no") end, "bad argument #1 to 'shutdown' (boolean expected" },
    { "shutdown(true, 1)", function() ex:shutdown(true, 1) end, "bad argument #2 to 'shutdown'" },
  }
  for _, case in ipairs(cases) do
    it(case[1], function()
      local ok, err = pcall(case[2])
      assert.is_false(ok)
      assert.matches(case[3], err, 1, true)
      assert.matches("^spec/futures_spec%.lua:%d+: ", err) -- the caller's line, not mproc's
    end)
  end

  describe("a method called with '.' instead of ':'", function()
    local public = {
      ["mproc.ProcessPoolExecutor"] = { "submit", "map", "shutdown", "terminate_workers" },
      ["mproc.Future"] = { "result", "exception", "traceback", "done", "running", "cancelled",
                           "cancel", "add_done_callback", "fileno" },
      ["mproc.futures.MapIterator"] = { "close" },
    }
    local function objects()
      return { ["mproc.ProcessPoolExecutor"] = ex, ["mproc.Future"] = ex:submit(f),
               ["mproc.futures.MapIterator"] = (ex:map(f, {})) }
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
          local fn = objects()[tname][m]
          for _, case in ipairs({ { nil, "nil" }, { 42, "number" }, { {}, "table" } }) do
            local ok, err = pcall(fn, case[1], f)
            assert.is_false(ok)
            assert.matches(("bad argument #1 to '%s' (%s expected, got %s)"):format(m, tname, case[2]), err, 1, true)
          end
        end)
      end
    end
  end)
end)

describe("examples/futures_grep.lua", function()
  it("prints the matching lines of each file as its future completes", function()
    local dir = support.tmpname()
    os.execute("mkdir -p " .. support.shell_quote(dir .. "/sub"))
    support.write_file(dir .. "/a.txt", "alpha\nneedle one\nbeta\n")
    support.write_file(dir .. "/sub/b.txt", "needle two\nneedle three\n")
    support.write_file(dir .. "/c.txt", "nothing here\n")
    local out, code = support.sh(("%s examples/futures_grep.lua -r needle %s"):format(
      support.LUA, support.shell_quote(dir)), true)
    assert.are.equal(0, code, out)
    local lines = support.lines(out)
    table.sort(lines)
    assert.are.same({ dir .. "/a.txt: needle one", dir .. "/sub/b.txt: needle three",
                      dir .. "/sub/b.txt: needle two" }, lines)
    out, code = support.sh(("%s examples/futures_grep.lua -l needle %s/a.txt %s/c.txt"):format(
      support.LUA, support.shell_quote(dir), support.shell_quote(dir)), true)
    assert.are.equal(0, code, out)
    assert.are.same({ dir .. "/a.txt" }, support.lines(out))
    local _, none = support.sh(("%s examples/futures_grep.lua needle %s/c.txt"):format(
      support.LUA, support.shell_quote(dir)), true)
    assert.are.equal(1, none)
    os.execute("rm -rf " .. support.shell_quote(dir))
  end)
end)

describe("a submitted call's arguments", function()
  -- As with Pool: the executor keeps what a call was encoded from until it
  -- ends, so objects made after the workers started and dropped at once
  -- still reach the worker.
  linux_it("stay reachable until the call ends, with no other handle kept", function()
    local ex <close> = futures.ProcessPoolExecutor(1)
    local gate = mproc.Event()
    local busy = ex:submit(function() gate:wait(10) end)
    local fs = {}
    for i = 1, 3 do
      fs[i] = ex:submit(function(q, d) q:put(i); d.x = i; return q:get() + d.x end, mproc.Queue(), mproc.Dict())
    end
    local m = ex:map(function(a) return #a end, { mproc.Array("d", 1000), mproc.Array("d", 2000) })
    collectgarbage()
    collectgarbage()
    gate:set()
    assert.is_nil(busy:result(10))
    for i = 1, 3 do assert.are.equal(2 * i, fs[i]:result(10)) end
    local sizes = {}
    for _, n in m do sizes[#sizes + 1] = n end
    assert.are.same({ 1000, 2000 }, sizes)
  end)
end)
