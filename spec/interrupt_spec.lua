-- Ctrl-C in a blocking wait: lua.c turns SIGINT into an "interrupted!"
-- error at the next Lua instruction; every wait in mproc must let it
-- through promptly (it waits in slices and lets the hook run between
-- them), leaving nothing taken and lost.
local support = require "support"

-- Runs setup, then `wait` under pcall with a SIGINT sent to the script
-- once it sleeps in the wait; the wait alone would last for ever (or a
-- minute). Prints the pcall's results, whether the wait ended well before
-- the minute, then what `after` prints.
local function interrupted(setup, wait, after)
  return support.run_lua(([[
    local mproc = require "mproc"
    local core = require "mproc.core"
    local me = mproc.getpid()
    %s
    local killer = require("support").interrupt_when_waiting(me)
    local t0 = mproc.monotonic()
    local ok, err = pcall(function() %s end)
    print(ok, err, mproc.monotonic() - t0 < 30)
    killer:join()
    %s
  ]]):format(setup, wait, after or ""), { env = "timeout 60" })
end

local EXPECT = "^false\t[^\n]*interrupted!\ttrue\n"

describe("Ctrl-C (SIGINT) in lua5.4", function()
  for _, case in ipairs({
    { "mproc.sleep", "", "mproc.sleep(60)" },
    { "Process:join", "local p = mproc.Process(function() mproc.sleep(60) end):start()",
      "p:join()", "p:kill(); print(p:join())", "%-9\n" },
    { "Queue:get, leaving the queue whole",
      "local q = mproc.Queue()", "q:get()",
      "q:put('x'); print(q:get(true, 5))", "x\n" },
    { "Queue:put on a full queue, putting nothing",
      "local q = mproc.Queue(1); q:put('first')", "q:put('second')",
      "print(q:qsize(), q:get(), q:get(false))", "1\tfirst\tnil\tempty\n" },
    { "JoinableQueue:join", "local q = mproc.JoinableQueue(); q:put(1)", "q:join()" },
    { "Lock:acquire, taking nothing",
      [[local l, e = mproc.Lock(), mproc.Event()
        local h = mproc.Process(function() l:acquire(); e:set(); mproc.sleep(60) end)
        h.daemon = true; h:start(); e:wait()]],
      "l:acquire()", "print(l:held(), tostring(l) == ('mproc.Lock (held by pid ' .. h.pid .. ')'))",
      "false\ttrue\n" },
    { "RLock:acquire with a timeout",
      [[local l, e = mproc.RLock(), mproc.Event()
        local h = mproc.Process(function() l:acquire(); e:set(); mproc.sleep(60) end)
        h.daemon = true; h:start(); e:wait()]],
      "l:acquire(true, 50)", "print(l:held())", "false\n" },
    { "Semaphore:acquire, taking no unit", "local s = mproc.Semaphore(0)", "s:acquire()",
      "s:release(); print(s:get_value(), s:acquire(false), s:get_value())", "1\ttrue\t0\n" },
    { "Event:wait", "local e = mproc.Event()", "e:wait()" },
    { "Condition:wait, holding the lock again after",
      "local c = mproc.Condition(); c:acquire()", "c:wait()",
      "print(c:get_lock():held())", "true\n" },
    { "Barrier:wait, which breaks the barrier",
      "local b = mproc.Barrier(2)", "b:wait()", "print(b.broken)", "true\n" },
    { "Connection:recv, leaving the stream whole",
      "local a, b = mproc.Pipe()", "a:recv()", "b:send(42); print(a:recv())", "42\n" },
    { "Connection:send on a full socket",
      "local a, b = mproc.Pipe(); local big = string.rep('x', 64 * 1024 * 1024)", "b:send(big)",
      "print(pcall(b.send, b, 1))", "false\t[^\n]*interrupted in the middle of a message\n" },
    { "Connection:poll(math.huge)", "local a = mproc.Pipe()", "a:poll(math.huge)" },
    { "mproc.wait", "local a = mproc.Pipe()", "mproc.wait({ a })" },
    { "a wait inside a coroutine", "local q = mproc.Queue()",
      "coroutine.wrap(function() q:get() end)()" },
    { "subprocess.run, killing the child",
      "local sp = require 'mproc.subprocess'; local pidfile = os.tmpname()",
      "sp.run({ 'sh', '-c', 'echo $$ > ' .. pidfile .. '; exec sleep 60' }, { stdout = sp.PIPE })",
      [[local pid = io.open(pidfile):read('n'); os.remove(pidfile)
        local stat = io.open('/proc/' .. pid .. '/stat')   -- gone, not even a zombie
        print(stat and 'alive' or 'gone')]], "gone\n" },
    { "Popen:communicate, keeping what came",
      [[local sp = require 'mproc.subprocess'
        local p = sp.Popen({ 'sh', '-c', 'echo early; exec sleep 60' }, { stdout = sp.PIPE })]],
      "p:communicate()", "p:kill(); print(p:communicate())", "early\n\tfalse\n" },
    { "Popen:wait", "local p = require('mproc.subprocess').Popen({ 'sleep', '60' })",
      "p:wait()", "p:kill(); print(p:wait())", "%-9\n" },
    { "Pool:apply, the pool still working after",
      "local pool = mproc.Pool(2)", "pool:apply(mproc.sleep, { 60 })",
      "print(pool:apply(function() return 5 end)); pool:terminate()", "5\n" },
    { "the scope of a ProcessPoolExecutor, stopping its running tasks",
      "local futures = require 'mproc.futures'",
      "local ex <close> = futures.ProcessPoolExecutor(1); ex:submit(mproc.sleep, 60):result()",
      "print(#require('support').children())", "0\n" },
    { "an imap loop", "local pool = mproc.Pool(1)",
      "for _ in pool:imap(mproc.sleep, { 60 }) do end", "pool:terminate()" },
    -- the waits below are each the one the rows above name, reached another way
    { "an owned BoundedSemaphore's acquire, taking no unit",
      [[local s, e = mproc.BoundedSemaphore(1, { owned = true }), mproc.Event()
        local h = mproc.Process(function() s:acquire(); e:set(); mproc.sleep(60) end)
        h.daemon = true; h:start(); e:wait()]],
      "s:acquire()", "h:kill(); h:join(); print(s:acquire(false), s:get_value())", "true\t0\n" },
    { "Condition:wait_for, holding the lock again after",
      "local c = mproc.Condition(); c:acquire()", "c:wait_for(function() return false end)",
      "print(c:get_lock():held())", "true\n" },
    { "a Value's lock, taking nothing",
      [[local v, e = mproc.Value("i", 0), mproc.Event()
        local h = mproc.Process(function() v:get_lock():acquire(); e:set(); mproc.sleep(60) end)
        h.daemon = true; h:start(); e:wait()]],
      "v:get_lock():acquire()", "h:kill(); h:join(); print(v:get_lock():acquire(false))", "true\towner died\n" },
    { "a Dict's update_key waiting for the lock, changing nothing",
      [[local d, e = mproc.Dict { n = 1 }, mproc.Event()
        local h = mproc.Process(function()
          d:update_key("n", function(n) e:set(); mproc.sleep(60) return n end)
        end)
        h.daemon = true; h:start(); e:wait()]],
      "d:update_key('n', function(n) return n + 1 end)",
      "h:kill(); h:join(); print(d.n, d:update_key('n', function(n) return n + 1 end))", "1\t2\n" },
    { "SimpleQueue:get", "local q = mproc.SimpleQueue()", "q:get()", "q:put(3); print(q:get())", "3\n" },
    { "futures.wait, the executor still working after",
      "local futures = require 'mproc.futures'; local ex = futures.ProcessPoolExecutor(2)",
      "futures.wait({ ex:submit(mproc.sleep, 60) })",
      "print(ex:submit(function() return 6 end):result()); ex:terminate_workers()", "6\n" },
    { "Connection:recv_bytes", "local a, b = mproc.Pipe()", "a:recv_bytes()",
      "b:send_bytes('z'); print(a:recv_bytes())", "z\n" },
  }) do
    local name, setup, wait, after, expect = table.unpack(case)
    it("interrupts " .. name, function()
      local out = interrupted(setup, wait, after)
      assert.matches(EXPECT .. (expect or "") .. "$", out)
    end)
  end

  -- Ctrl-C ending a script: lua.c's message handler has added its traceback
  -- to the error by the time the main chunk's <close> variables close. The
  -- script prints the pid that must be gone; it must go, and the script end
  -- well before the wait's minute.
  for _, case in ipairs({
    { "ends a script whose ProcessPoolExecutor scope runs a task, stopping its workers", [[
      local futures = require "mproc.futures"
      local ex <close> = futures.ProcessPoolExecutor(1)
      print(ex:submit(mproc.getpid):result())
      io.stdout:flush()]], "ex:submit(mproc.sleep, 60):result()" },
    { "ends a script whose Popen scope waits for its child, ending the child", [[
      local sp = require "mproc.subprocess"
      local p <close> = sp.Popen({ "sleep", "60" })
      print(p.pid)
      io.stdout:flush()]], "p:wait()" },
  }) do
    it(case[1], function()
      local t0 = require("mproc").monotonic()
      local out = support.run_lua(([[
        local mproc = require "mproc"
        %s
        local killer = require("support").interrupt_when_waiting(mproc.getpid())
        %s
      ]]):format(case[2], case[3]), { env = "timeout 60" })
      local pid, took = tonumber(out:match("^(%d+)\n")), require("mproc").monotonic() - t0
      assert.matches("interrupted!", out)
      assert.is_true(took < 30)
      assert.is_true(support.eventually(function() return support.pid_ended(pid) end))
    end)
  end

  -- Raises "interrupted!" in this process (not a child) as f returns for
  -- the nth time (the first if nth is nil): where lua.c's hook fires when a
  -- SIGINT came while f ran.
  local STRIKE_ON_RETURN = [[
    local function strike_on_return(f, nth)
      local core = require "mproc.core"
      local me, calls = core.getpid(), 0
      debug.sethook(function()
        if core.getpid() == me and debug.getinfo(2, "f").func == f then
          calls = calls + 1
          if calls == (nth or 1) then
            debug.sethook()
            error("interrupted!")
          end
        end
      end, "r")
    end
  ]]

  it("leaves no child behind when it strikes as Popen's spawn returns", function()
    -- lua.c's hook, set by a SIGINT that came while core.spawn ran, fires
    -- as core.spawn returns: before any Popen holds the child
    local out = support.run_lua(STRIKE_ON_RETURN .. [[
      local core = require "mproc.core"
      local sp = require "mproc.subprocess"
      strike_on_return(core.spawn)
      print(pcall(sp.Popen, { "sleep", "60" }))
      collectgarbage()
      print(#require("support").children())
    ]])
    assert.matches("^false\t[^\n]*interrupted!\n0\n$", out)
  end)

  it("is the parent's alone when it comes as the parent forks", function()
    -- lua.c's hook, set by a SIGINT that came during fork() (which the
    -- kernel restarts after the handler ran), is copied into the child;
    -- this one stands for it (its mask and count, clearing itself as
    -- lua.c's does) but raises only in the child, where it must be gone
    local out = support.run_lua([[
      local mproc = require "mproc"
      local parent, q = mproc.getpid(), mproc.Queue()
      debug.sethook(function()
        if mproc.getpid() ~= parent then
          debug.sethook()
          error("interrupted!")
        end
      end, "crl", 1)
      local ok = pcall(function()
        local p = mproc.Process(function() q:put("the child ran its target") end):start()
        p:join()
      end)
      debug.sethook()
      print(mproc.getpid() == parent and "parent" or "a child, in the parent's script", ok)
      if mproc.getpid() == parent then print(q:get(true, 5)) end
    ]], { env = "timeout 60" })
    assert.are.equal("parent\ttrue\nthe child ran its target\n", out)
  end)

  it("leaves no child behind when it strikes as Process:start's fork returns", function()
    -- as for spawn above: the hook fires in the parent as core.fork returns
    local t0 = require("mproc").monotonic()
    local out = support.run_lua(STRIKE_ON_RETURN .. [[
      local core = require "mproc.core"
      local mproc = require "mproc"
      strike_on_return(core.fork)
      print(pcall(function() local p <close> = mproc.Process(mproc.sleep, { 60 }):start() end))
      print(#require("support").children())
    ]], { env = "timeout 60" })
    assert.matches("^false\t[^\n]*interrupted!\n0\n$", out)
    assert.is_true(require("mproc").monotonic() - t0 < 30)
  end)

  it("leaves no pool worker behind when it strikes as a worker's fork returns", function()
    local out = support.run_lua(STRIKE_ON_RETURN .. [[
      local core = require "mproc.core"
      local mproc = require "mproc"
      local support = require "support"
      strike_on_return(core.fork, 2)
      print(pcall(function() local pool <close> = mproc.Pool(3) end))
      print(support.eventually(function() collectgarbage() return #support.children() == 0 end))
      local pool <close> = mproc.Pool(2)
      print(pool:apply(function() return "a new pool works" end))
    ]], { env = "timeout 60" })
    assert.matches("^false\t[^\n]*interrupted!\ntrue\na new pool works\n$", out)
  end)

  it("leaves a pool no worker it does not watch when it strikes as a replacement's fork returns", function()
    local out = support.run_lua(STRIKE_ON_RETURN .. [[
      local core = require "mproc.core"
      local mproc = require "mproc"
      local support = require "support"
      local q = mproc.Queue()   -- inherited (portable build)
      local pool <close> = mproc.Pool(2)
      core.kill(pool:apply(mproc.getpid), 9)
      mproc.sleep(0.1)
      strike_on_return(core.fork)
      print(pcall(pool.apply, pool, mproc.getpid))   -- replaces the dead worker
      -- every worker busy, then killed: each task fails, none waits for ever
      local rs = {}
      for i = 1, 2 do rs[i] = pool:apply_async(function() q:put(1) mproc.sleep(60) end) end
      local deadline = mproc.monotonic() + 10   -- waits in the pool: it notices deaths
      while q:qsize() < 2 and mproc.monotonic() < deadline do rs[1]:wait(0.05) end
      for _, pid in ipairs(support.children()) do core.kill(pid, 9) end
      for i = 1, 2 do print(pcall(rs[i].get, rs[i], 10)) end
      print(#support.children())
    ]], { env = "timeout 60" })
    assert.matches("^false\t[^\n]*interrupted!\n"
      .. "false\tpool worker %(pid %d+%) was killed by signal 9 %(SIGKILL%) while running this task\n"
      .. "false\tpool worker %(pid %d+%) was killed by signal 9 %(SIGKILL%) while running this task\n2\n$", out)
  end)

  it("loses no result of a pool when it strikes as the results are taken in", function()
    -- the hook fires as board:collect returns (a SIGINT that came while it
    -- read the results): they are delivered by the next wait, not lost
    local out = support.run_lua([[
      local mproc = require "mproc"
      local pool <close> = mproc.Pool(1)
      local board = pool._board
      local collect = board.collect
      local r = pool:apply_async(function() return 42 end)
      mproc.sleep(0.2)   -- the result waits in the pipe
      debug.sethook(function()
        if debug.getinfo(2, "f").func == collect then
          debug.sethook()
          error("interrupted!")
        end
      end, "r")
      print(pcall(r.get, r, 5))
      print(r:get(5))
    ]], { env = "timeout 60" })
    assert.matches("^false\t[^\n]*interrupted!\n42\n$", out)
  end)

  -- A real SIGINT sent to the script from a hook, at the instant a
  -- result is half handed to its job: the job must still get it.
  for _, case in ipairs({
    { "a map's chunk, as its items are decoded into the list", "r",
      "debug.getinfo(2, 'f').func == core.loads_into",
      "pool:map_async(function(x) return x * 2 end, { 1, 2, 3, 4 }, 2)",
      "local t = r:get(5); print(t[1], t[4], t.n)", "2\t8\t4\n" },
    { "a future's result, as the future settles", "c",
      "debug.getinfo(2, 'n').name == 'settle'",
      "ex:submit(function() return 7 end)", "print(r:result(5))", "7\n" },
  }) do
    local name, events, when, submit, after, expect = table.unpack(case)
    it("loses no result when it strikes as the pool hands in " .. name, function()
      local out = support.run_lua(([[
        local mproc = require "mproc"
        local core = require "mproc.core"
        local futures = require "mproc.futures"
        local me = mproc.getpid()
        local ex <close> = futures.ProcessPoolExecutor(1)
        local pool <close> = mproc.Pool(1)
        local r = %s
        mproc.sleep(0.3)   -- the results wait in the pipe
        debug.sethook(function()
          if %s then
            debug.sethook()
            core.kill(me, 2)
          end
        end, "%s")
        print(pcall(function() return r.get and r:get(5) or r:result(5) end))
        debug.sethook()
        %s
      ]]):format(submit, when, events, after), { env = "timeout 60" })
      assert.matches("^false\t[^\n]*interrupted!\n" .. expect .. "$", out)
    end)
  end

  -- The pool hands a result in with SIGINT blocked; code that runs then (a
  -- module the decoder requires for a function it names) may start a
  -- process, which must not inherit that mask: Ctrl-C would not end it.
  for _, case in ipairs({
    { "a Process", "mproc.Process(function() os.exit(sigint_blocked() and 1 or 0) end):start()",
      "p:join(10)", 0 },
    -- (grep: a shell would unblock every signal itself; 1: no match)
    { "a subprocess", [[require("mproc.subprocess").Popen({ "grep", "-q",
        "^SigBlk:.*[2367abef]$", "/proc/self/status" })]], "p:wait(10)", 1 },
  }) do
    local name, start, wait, unblocked = table.unpack(case)
    it("is not left blocked in " .. name .. " started as the pool hands in a result", function()
      local out = support.run_lua(([[
        local mproc = require "mproc"
        local me = mproc.getpid()
        local function sigint_blocked()
          for line in io.lines("/proc/self/status") do
            local hex = line:match("^SigBlk:%%s*(%%x+)")
            if hex then return tonumber(hex:sub(-8), 16) & 2 ~= 0 end
          end
        end
        package.preload.starts_one = function()
          local M = { f = function() end }
          if mproc.getpid() == me then M.p = %s end
          return M
        end
        local pool <close> = mproc.Pool(1)
        local t = pool:map(function() return require("starts_one").f end, { 1 })
        local p = package.loaded.starts_one.p
        print(sigint_blocked(), type(t[1]), %s)
      ]]):format(start, wait), { env = "timeout 60" })
      assert.equal("false\tfunction\t" .. unblocked .. "\n", out)
    end)
  end

  -- Raises "interrupted!" at the first C function called inside f: the
  -- decoder's protected call, where a hook set by a SIGINT that came while
  -- an item was taken fires.
  local ARM_INSIDE = [[
    local function arm_inside(f)
      debug.sethook(function()
        if debug.getinfo(2, "S").what ~= "C" then return end
        for level = 3, 6 do
          local info = debug.getinfo(level, "f")
          if info and info.func == f then
            debug.sethook()
            error("interrupted!")
          end
        end
      end, "c")
    end
  ]]

  it("leaves a Connection's message to the next recv when it strikes as the message is decoded", function()
    local out = support.run_lua(ARM_INSIDE .. [[
      local mproc = require "mproc"
      local a, b = mproc.Pipe()
      a:send({ 1, 2, 3 })
      arm_inside(b.recv)
      print(pcall(b.recv, b))
      debug.sethook()
      -- nothing is left in the pipe: the kept message alone makes b ready
      print(b:poll(), #mproc.wait({ b }, 0))
      print(#b:recv(), b:poll(), #mproc.wait({ b }, 0))
      a:send({ 4, 5 })
      arm_inside(b.recv)
      print(pcall(b.recv, b))
      debug.sethook()
      print(#mproc.loads(b:recv_bytes()))
    ]], { env = "timeout 60" })
    assert.matches("^false\t[^\n]*interrupted!\ntrue\t1\n3\tfalse\t0\nfalse\t[^\n]*interrupted!\n2\n$", out)
  end)

  it("leaves a Connection holding a cut-short message unsendable until it is received", function()
    local out = support.run_lua(ARM_INSIDE .. [[
      local mproc = require "mproc"
      local a, b = mproc.Pipe()
      local q = mproc.Queue()
      a:send("kept")
      arm_inside(b.recv)
      print(pcall(b.recv, b))
      debug.sethook()
      print(pcall(q.put, q, b))
      print(b:recv(), q:put(b), q:get(true, 5) == b)
    ]], { env = "timeout 60" })
    assert.matches("^false\t[^\n]*interrupted!\n"
      .. "false\t[^\n]*cannot send a Connection that holds a message a recv left %(cut short by Ctrl%-C,"
      .. " or longer than recv_bytes' maxlength%): recv it first\n"
      .. "kept\ttrue\ttrue\n$", out)
  end)

  it("leaves a Queue's item queued when it strikes as the item is decoded", function()
    local out = support.run_lua(ARM_INSIDE .. [[
      local mproc = require "mproc"
      local q = mproc.Queue()
      q:put({ 1, 2, 3 })
      arm_inside(q._h.get)
      print(pcall(q.get, q, true, 1))
      debug.sethook()
      print(#q:get(true, 1))
    ]], { env = "timeout 60" })
    assert.matches("^false\t[^\n]*interrupted!\n3\n$", out)
  end)

  it("loses no pool result when it strikes as the result is decoded", function()
    local out = support.run_lua(ARM_INSIDE .. [[
      local mproc = require "mproc"
      local pool <close> = mproc.Pool(1)
      local r = pool:apply_async(function() return { 1, 2, 3 } end)
      mproc.sleep(0.2)   -- the result waits in the pipe
      arm_inside(pool._board.collect)
      print(pcall(r.get, r, 5))
      debug.sethook()
      print(#r:get(5))
    ]], { env = "timeout 60" })
    assert.matches("^false\t[^\n]*interrupted!\n3\n$", out)
  end)

  it("is caught by pcall, and the script goes on to use the objects", function()
    local out = interrupted("local q = mproc.Queue()",
      "for _ = 1, 3 do q:get() end", "for i = 1, 3 do q:put(i) end; print(q:get(), q:get(), q:get())")
    assert.matches(EXPECT .. "1\t2\t3\n$", out)
  end)

  -- The script is over and its end waits for a child (Python's rule):
  -- lua.c has given SIGINT its default action back, so Ctrl-C sent to the
  -- script alone killed it there and left the child running, an orphan.
  it("at the script's end, while it waits for its children, stops them and leaves none running", function()
    local mproc = require "mproc"
    local out = support.tmpname()
    local script = support.script([[
      local mproc = require "mproc"
      local p = mproc.Process(function() mproc.sleep(60) end):start()
      print(mproc.getpid(), p.pid)
    ]])
    support.sh(("%s %s > %s 2>&1 &"):format(support.LUA, script, out))
    local parent, child
    assert.is_true(support.eventually(function()
      parent, child = (support.read_file(out) or ""):match("^(%d+)\t(%d+)\n")
      return child ~= nil
    end, 10))
    parent, child = tonumber(parent), tonumber(child)
    -- the parent sleeps in the join at its end
    assert.is_true(support.eventually(function() return support.pid_state(parent) == "S" end, 10))
    mproc.sleep(0.1)
    require("mproc.core").kill(parent, 2)
    local parent_gone = support.eventually(function() return support.pid_ended(parent) end, 10)
    local child_gone = support.eventually(function() return support.pid_ended(child) end, 10)
    if not child_gone then require("mproc.core").kill(child, 9) end
    os.remove(script)
    os.remove(out)
    assert.is_true(parent_gone)
    assert.is_true(child_gone)
  end)

  it("resumes a wait after a signal whose handler raises nothing", function()
    -- SIGCHLD of a child that ends: a handled signal that is no Ctrl-C
    local out = support.run_lua([[
      local mproc = require "mproc"
      local p = require("support").when_waiting(mproc.getpid(), function() end)
      local q = mproc.Queue()
      local t0 = mproc.monotonic()
      print(q:get(true, 0.2), mproc.monotonic() - t0 >= 0.2)
      p:join()
    ]])
    assert.are.equal("nil\ttrue\n", out)
  end)
end)
