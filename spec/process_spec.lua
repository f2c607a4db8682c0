local mproc = require "mproc"
local support = require "support"

describe("mproc", function()
  it("runs under Lua 5.4", function()
    assert.are.equal("Lua 5.4", _VERSION)
  end)

  it("loads its C core from the module table, exporting one symbol", function()
    assert.is_function(require("mproc.core").getpid)
    assert.are.equal(mproc.getpid(), require("mproc.core").getpid())
  end)

  it("takes signal numbers and names from the platform, one name per number", function()
    local core = require "mproc.core"
    assert.are.equal(9, core.signals.SIGKILL)
    assert.are.equal(15, core.signals.SIGTERM)
    for name, num in pairs(core.signals) do
      assert.is_true(num >= 1 and num < core.NSIG, name)
      assert.are.equal(num, core.signals[core.signal_names[num]], name)
    end
    assert.are.equal("SIGABRT", core.signal_names[core.signals.SIGABRT])
    assert.is_nil(core.signal_names[core.NSIG - 1])   -- a real-time signal has no name
  end)
end)

describe("Process", function()
  it("runs the target with its arguments in another process", function()
    local out = support.tmpname()
    local p = mproc.Process{target = function(a, b)
      support.write_file(out, ("%s %s %d"):format(a, b, mproc.getpid()))
    end, args = {"x", 42}}
    assert.are.equal(p, p:start())
    assert.are.equal(0, p:join())
    local a, b, pid = support.read_file(out):match("^(%S+) (%S+) (%d+)$")
    os.remove(out)
    assert.are.same({"x", "42"}, {a, b})
    assert.are.equal(p.pid, tonumber(pid))
    assert.are_not.equal(mproc.getpid(), p.pid)
  end)

  it("takes the short form Process(f, args), keeping nils inside table.pack", function()
    local p = mproc.Process(function(a, b, c)
      os.exit((a == 1 and b == nil and c == 3) and 5 or 6)
    end, table.pack(1, nil, 3))
    p:start()
    assert.are.equal(5, p:join())
  end)

  describe("exitcode", function()
    local cases = {
      { "target returns", function() end, 0 },
      { "os.exit(n)", function() os.exit(7) end, 7 },
      { "os.exit(true)", function() os.exit(true) end, 0 },
      { "os.exit(false)", function() os.exit(false) end, 1 },
      -- these print a traceback: they run in a fresh interpreter, whose
      -- stderr the spec reads
      { "uncaught error", 'error("boom")', 1, "Process Process%-1:\n[^\n]*: boom\nstack traceback:\n" },
      { "error with a table", "error({})", 1,
        "Process Process%-1:\n%(error object is a table value%)\nstack traceback:\n" },
      { "SIGSEGV", function() require("mproc.core").kill(mproc.getpid(), 11) end, -11 },
      { "SIGABRT", function() require("mproc.core").kill(mproc.getpid(), 6) end, -6 },
      { "SIGUSR1", function() require("mproc.core").kill(mproc.getpid(), 10) end, -10 },
    }
    for _, case in ipairs(cases) do
      it("is " .. case[3] .. " when " .. case[1], function()
        if type(case[2]) == "string" then
          local out = support.run_lua(([[
            local mproc = require "mproc"
            local p = mproc.Process{target = function() %s end}
            local before = p.exitcode
            p:start()
            print("exitcode", before, p:join(), p.exitcode)
          ]]):format(case[2]))
          assert.matches(case[4], out)
          assert.matches("exitcode\tnil\t" .. case[3] .. "\t" .. case[3] .. "\n$", out)
          return
        end
        local p = mproc.Process{target = case[2]}
        assert.is_nil(p.exitcode)
        p:start()
        assert.are.equal(case[3], p:join())
        assert.are.equal(case[3], p.exitcode)
      end)
    end

    it("is -15 after terminate() and -9 after kill()", function()
      local a = mproc.Process(function() mproc.sleep(30) end):start()
      local b = mproc.Process(function() mproc.sleep(30) end):start()
      assert.is_nil(a.exitcode)
      a:terminate()
      b:kill()
      assert.are.equal(-15, a:join())
      assert.are.equal(-9, b:join())
    end)

    it("is -N after send_signal(N), Python's os.kill(p.pid, N)", function()
      local p = mproc.Process(function() mproc.sleep(30) end):start()
      finally(function() p:kill() p:join(10) end)   -- not left running when an assertion fails
      assert.is_true(p:send_signal(0))
      assert.is_true(p:send_signal(mproc.signals.SIGUSR1))
      assert.are.equal(-mproc.signals.SIGUSR1, p:join(10))
      assert.is_true(p:send_signal(mproc.signals.SIGKILL))   -- reaped: nothing is sent
      assert.has_error(function() p:send_signal(1.5) end,
        "bad argument #1 to 'send_signal' (signal number from 0 to " .. (require("mproc.core").NSIG - 1) .. " expected, got 1.5)")
    end)
  end)

  it("prints an uncaught error with its traceback on the child's stderr", function()
    local out = support.run_lua([[
      local mproc = require "mproc"
      local function inner() error("boom in child") end
      local p = mproc.Process{target = function() inner() end, name = "worker"}
      p:start()
      print("exitcode", p:join())
    ]])
    assert.matches("Process worker:\n[^\n]*boom in child\nstack traceback:", out)
    assert.matches("in upvalue 'inner'", out, 1, true)
    -- mproc's own frames below the target are left out
    assert.is_nil(out:find("mproc.core.fork", 1, true))
    assert.is_nil(out:find("process.lua", 1, true))
    assert.matches("exitcode\t1", out, 1, true)
  end)

  -- The message handler runs again for each error a to-be-closed variable
  -- raises while the first unwinds: one failure, one report of it.
  it("reports a failure once, with the errors raised while closing after it", function()
    local out = support.run_lua([[
      local mproc = require "mproc"
      local p = mproc.Process{target = function()
        local t <close> = setmetatable({}, { __close = function() error("close failed") end })
        error("first failure")
      end, name = "worker"}
      p:start()
      print("exitcode", p:join())
    ]])
    local _, headers = out:gsub("Process worker:\n", "")
    assert.are.equal(1, headers)
    assert.matches("Process worker:\n[^\n]*first failure\nstack traceback:", out)
    assert.matches("close failed", out, 1, true)
    assert.matches("exitcode\t1", out, 1, true)
  end)

  -- Lua calls no message handler for a memory error: the child reports it
  -- as any other uncaught error all the same.
  it("reports a memory error in the target under the process's name", function()
    if os.getenv("MPROC_ASAN") then pending("not under AddressSanitizer (ulimit -v)") return end
    local out = support.run_lua([[
      local mproc = require "mproc"
      local p = mproc.Process{target = function()
        local t = {}
        while true do t[#t + 1] = ("m"):rep(1 << 20, tostring(#t)) end
      end, name = "hungry"}
      p:start()
      print("exitcode", p:join())
    ]], { env = "ulimit -v 262144;" })
    assert.matches("Process hungry:\nnot enough memory\n", out, 1, true)
    assert.matches("exitcode\t1", out, 1, true)
  end)

  it("stops the child of a start cut short after a start nested in it (a __gc's)", function()
    local out = support.run_lua([[
      local mproc = require "mproc"
      -- a start nested in another's last lines (as a __gc may run one), then an
      -- error there (as Ctrl-C may strike): the outer child must be stopped
      local src = package.searchpath("mproc.process", package.path)
      local target, n = nil, 0
      for l in io.lines(src) do
        n = n + 1
        if l:match("^%s*add_child%(self%)") then target = n end
      end
      local fired, inner = false, nil
      local p = mproc.Process{target = function() mproc.sleep(30) end}
      debug.sethook(function(_, line)
        if fired or line ~= target then return end
        fired = true
        inner = mproc.Process{target = function() end}:start()
        error("struck")
      end, "l")
      print(pcall(p.start, p))
      debug.sethook()
      inner:join(10)
      local alive = os.execute("kill -0 " .. p._pid .. " 2>/dev/null")
      print("outer child running", alive == true)
      if alive then p:kill() p:join(10) end
    ]], { env = "timeout 60" })
    assert.matches("^false\t[^\n]*struck\nouter child running\tfalse\n$", out)
  end)

  -- A __gc may start a Process at core.fork's first allocation, after the
  -- outer start has set up what its child is to see: a call hook on
  -- core.fork runs one there, from a finalizer.
  it("forks the outer child as itself when a __gc starts a Process inside its start", function()
    local out = support.run_lua([[
      local mproc = require "mproc"
      local core = require "mproc.core"
      local inner
      local p = mproc.Process{target = function()
        io.write("outer child is ", tostring(mproc.current_process() and mproc.current_process().name), "\n")
      end, name = "outer"}
      debug.sethook(function()
        if debug.getinfo(2, "f").func ~= core.fork then return end
        debug.sethook()
        setmetatable({}, { __gc = function()
          inner = mproc.Process{target = function() end, name = "inner"}:start()
        end })
        collectgarbage()
      end, "c")
      p:start()
      debug.sethook()
      print("exits", p:join(10), inner and inner:join(10))
      print("parent is", mproc.current_process().name, #mproc.active_children())
    ]], { env = "timeout 60" })
    assert.are.equal("outer child is outer\nexits\t0\t0\nparent is\tMainProcess\t0\n", out)
  end)

  -- A target or run replaced after Process() by what cannot be called: the
  -- child reports Lua's error, as for any failure, and exits 1.
  for _, case in ipairs {
    { "a target", "p.target = 5", "attempt to call a number value" },
    { "a target", "p.target = 'text'", "attempt to call a string value" },
    { "a run", "p.run = 7", "attempt to call a number value" },
  } do
    it("reports " .. case[1] .. " that cannot be called (" .. case[2] .. ")", function()
      local out = support.run_lua(([[
        local mproc = require "mproc"
        local p = mproc.Process{target = function() end, name = "odd"}
        %s
        p:start()
        print("exitcode", p:join(10))
      ]]):format(case[2]), { env = "timeout 60" })
      assert.matches("Process odd:\n[^\n]*" .. case[3], out)
      assert.matches("process.lua:%d+: attempt to call", out)
      assert.matches("exitcode\t1\n$", out)
    end)
  end

  it("runs the target when run is set to false, as if it were not set", function()
    local out = support.run_lua([[
      local mproc = require "mproc"
      local p = mproc.Process{target = function() io.write("target ran\n") end}
      p.run = false
      p:start()
      print("exitcode", p:join(10))
    ]], { env = "timeout 60" })
    assert.are.equal("target ran\nexitcode\t0\n", out)
  end)

  it("times out a join, leaving exitcode nil", function()
    local p = mproc.Process(function() mproc.sleep(10) end):start()
    local t0 = mproc.monotonic()
    local code, err = p:join(0.1)
    local took = mproc.monotonic() - t0
    assert.is_nil(code)
    assert.are.equal("timeout", err)
    assert.is_nil(p.exitcode)
    assert.is_true(took >= 0.09 and took < 3, "join(0.1) took " .. took)
    assert.is_true(p:is_alive())
    p:kill()
    assert.are.equal(-9, p:join())
    assert.is_false(p:is_alive())
  end)

  it("runs children at the same time", function()
    local both = mproc.Barrier(2)   -- passed only by two children alive at once
    local function meet() os.exit(both:wait(10) and 0 or 1) end
    local a = mproc.Process(meet):start()
    local b = mproc.Process(meet):start()
    assert.are.same({ 0, 0 }, { a:join(), b:join() })
  end)

  it("leaves no zombie and no descriptor after 300 processes", function()
    collectgarbage()  -- earlier specs' unclosed handles must not close mid-count
    local fds, kids = support.fd_count(), #support.children()
    for _ = 1, 300 do
      local p = mproc.Process(function() end):start()
      p:join()
      p:close()
    end
    assert.are.equal(fds, support.fd_count())
    assert.are.equal(kids, #support.children())
  end)

  it("gives a grandchild its parent's Process with that parent's pid", function()
    local out = support.tmpname()
    local p = mproc.Process(function()
      local me = mproc.current_process()
      local g = mproc.Process(function()
        support.write_file(out, ("%s %s %s"):format(me.name, tostring(me.pid), mproc.parent_process().pid))
      end):start()
      g:join(5)
    end):start()
    assert.are.equal(0, p:join(10))
    local got = support.read_file(out)
    os.remove(out)
    assert.are.equal(("%s %d %d"):format(p.name, p.pid, p.pid), got)
  end)

  it("names processes Process-N unless named, and knows itself in the child", function()
    local out = support.tmpname()
    local p = mproc.Process{target = function()
      local me, parent = mproc.current_process(), mproc.parent_process()
      support.write_file(out, table.concat({ me.name, me.pid, parent.pid,
        tostring(parent:is_alive()) }, " "))
    end, name = "alpha"}
    assert.matches("^Process%-%d+$", mproc.Process(function() end).name)
    p:start()
    p:join()
    assert.are.equal(("alpha %d %d true"):format(p.pid, mproc.getpid()), support.read_file(out))
    os.remove(out)
    assert.are.equal("MainProcess", mproc.current_process().name)
    assert.are.equal(mproc.getpid(), mproc.current_process().pid)
    assert.is_nil(mproc.parent_process())
  end)

  it("reseeds math.random in each child: siblings and the parent draw apart", function()
    local outs = { support.tmpname(), support.tmpname() }
    math.randomseed(42)
    for _, out in ipairs(outs) do
      local p = mproc.Process(function()
        support.write_file(out, tostring(math.random(0, 1 << 52)))
      end):start()
      assert.are.equal(0, p:join(5))
    end
    local a, b = support.read_file(outs[1]), support.read_file(outs[2])
    for _, out in ipairs(outs) do os.remove(out) end
    assert.are_not.equal(a, b)
    assert.are_not.equal(tostring(math.random(0, 1 << 52)), a)
  end)

  it("starts a child as itself with no children, while the parent keeps its own view", function()
    local out = support.tmpname()
    local a = mproc.Process(function() mproc.sleep(30) end):start()
    local b = mproc.Process(function()
      local g = mproc.Process(function() end)
      support.write_file(out, ("%d %s %s %d %s"):format(#mproc.active_children(),
        mproc.current_process().name, g.name, mproc.parent_process().pid, mproc.parent_process().name))
    end):start()
    local status = b:join(10)
    local got = support.read_file(out)
    os.remove(out)
    local after = mproc.Process(function() end)
    local active = mproc.active_children()
    a:kill()
    a:join()
    assert.are.equal(0, status)
    assert.are.equal(("0 %s %s:1 %d MainProcess"):format(b.name, b.name, mproc.getpid()), got)
    assert.are.equal("MainProcess", mproc.current_process().name)
    assert.is_nil(mproc.parent_process())
    assert.are.same({a}, active)
    assert.are.equal("Process-" .. (tonumber(b.name:match("%d+$")) + 1), after.name)
  end)

  it("lists running children in active_children and drops ended ones", function()
    local a = mproc.Process(function() mproc.sleep(30) end):start()
    local b = mproc.Process(function() end):start()
    b:join()
    local active = mproc.active_children()
    assert.are.same({a}, active)
    a:kill()
    a:join()
    assert.are.same({}, mproc.active_children())
  end)

  it("has a sentinel that mproc.wait reports once the child ends", function()
    local slow = mproc.Process(function() mproc.sleep(30) end):start()
    local quick = mproc.Process(function() mproc.sleep(0.1) end):start()
    assert.is_number(slow.sentinel)
    assert.are.same({}, mproc.wait({slow, quick}, 0))
    assert.are.same({quick}, mproc.wait({slow, quick}, 10))
    slow:terminate()
    assert.are.equal(-15, slow:join())
    assert.are.same({slow, quick}, mproc.wait({slow, quick}))
    quick:join()
  end)

  it("lets mproc.wait mix processes, Lua files and raw descriptors", function()
    local f = assert(io.popen("sleep 0.2; echo ready"))
    local p = mproc.Process(function() mproc.sleep(30) end):start()
    assert.are.same({}, mproc.wait({p, f}, 0))
    assert.are.same({f}, mproc.wait({p, f}, 10))
    assert.are.equal("ready", f:read("l"))
    f:close()
    p:kill()
    local fd = p.sentinel
    assert.are.same({fd}, mproc.wait({fd}, 10))
    p:join()
  end)

  it("blames the caller's line, not mproc's, for a bad argument", function()
    local ok, err = pcall(function() mproc.Process{target = 1} end)
    assert.is_false(ok)
    assert.matches("^spec/process_spec%.lua:%d+: bad argument #1 to 'Process'", err)
    local _, err2 = pcall(function() mproc.Process(print):join() end)
    assert.matches("^spec/process_spec%.lua:%d+: join: the process was not started", err2)
  end)

  it("returns the exitcode alone from join", function()
    local p = mproc.Process(function() end):start()
    assert.are.equal(1, select("#", p:join()))
  end)

  it("terminates the child when a <close> scope is left by an error", function()
    local pid
    local t0 = mproc.monotonic()
    local ok, err = pcall(function()
      local p <close> = mproc.Process(function() mproc.sleep(30) end):start()
      pid = p.pid
      error("leaving")
    end)
    assert.is_false(ok)
    assert.matches("leaving", err)
    assert.is_true(mproc.monotonic() - t0 < 10)
    assert.is_false(support.pid_exists(pid))
  end)

  it("lets mproc.wait report at once an object whose sentinel is false (ended)", function()
    local ended = { sentinel = false }
    local p = mproc.Process(function() mproc.sleep(30) end):start()
    local t0 = mproc.monotonic()
    assert.are.same({ ended }, mproc.wait({ p, ended }))
    assert.is_true(mproc.monotonic() - t0 < 5)
    p:kill()
    p:join()
    assert.are.same({ p, ended }, mproc.wait({ p, ended }, 10))
  end)

  it("is a to-be-closed variable: leaving scope joins, and terminates a daemon", function()
    local kids = #support.children()
    local pid, dpid
    local t0 = mproc.monotonic()
    do
      local p <close> = mproc.Process(function() mproc.sleep(0.2) end):start()
      local d <close> = mproc.Process{target = function() mproc.sleep(30) end, daemon = true}:start()
      pid, dpid = p.pid, d.pid
    end
    assert.is_true(mproc.monotonic() - t0 < 10)
    assert.are.equal(kids, #support.children())
    assert.is_false(support.pid_exists(pid))
    assert.is_false(support.pid_exists(dpid))
  end)

  describe("misuse raises", function()
    local function quiet() end   -- print would print an empty line in the child
    local cases = {
      { "Process(42)", function() mproc.Process(42) end, "bad argument #1 to 'Process'" },
      { "a target that is not a function", function() mproc.Process{target = 1} end, "function expected" },
      { "an unknown option", function() mproc.Process{targte = print} end, "unknown option 'targte'" },
      { "a target not named (Process{f})", function() mproc.Process{print} end,
        "bad argument #1 to 'Process' (unnamed value in the options table; pass target = f, or call mproc.Process(f, args))" },
      { "args not named (Process{target = f, {1}})", function() mproc.Process{target = print, {1}} end,
        "unnamed value in the options table" },
      { "a name that is not a string", function() mproc.Process{target = print, name = 1} end,
        "bad argument #1 to 'Process' (name: string expected, got number)" },
      { "args that are not a table, named", function() mproc.Process{target = print, args = 5} end,
        "bad argument #1 to 'Process' (args: table expected, got number)" },
      { "daemon that is not a boolean", function() mproc.Process{target = print, daemon = 1} end,
        "bad argument #1 to 'Process' (daemon: boolean expected, got number)" },
      { "args that are not a table", function() mproc.Process(print, "x") end, "bad argument #2 to 'Process'" },
      { "join before start", function() mproc.Process(print):join() end, "not started" },
      { "terminate before start", function() mproc.Process(print):terminate() end, "not started" },
      { "a timeout that is not a number", function()
          local p = mproc.Process(quiet):start()
          local _, err = pcall(p.join, p, "soon")
          p:join()
          error(err, 0)
        end, "bad argument #1 to 'join'" },
      { "start twice", function()
          local p = mproc.Process(quiet):start()
          p:join()
          p:start()
        end, "cannot start a process twice" },
      { "close while running", function()
          local p = mproc.Process(function() mproc.sleep(30) end):start()
          local _, err = pcall(p.close, p)
          p:kill()
          p:join()
          error(err, 0)
        end, "still running" },
      { "join after close", function()
          local p = mproc.Process(quiet):start()
          p:join()
          p:close()
          p:join()
        end, "join: the process is closed" },
      { "mproc.wait of a non-table", function() mproc.wait(3) end, "bad argument #1 to 'wait'" },
      { "mproc.wait of an object without descriptor", function() mproc.wait({{}}) end, "no descriptor" },
      { "sleep(-1)", function() mproc.sleep(-1) end, "bad argument #1 to 'sleep'" },
      { "sleep('0.01')", function() mproc.sleep("0.01") end,
        "bad argument #1 to 'sleep' (number expected, got string)" },
      { "core.poll of a list whose __len overflows its size", function()
          require("mproc.core").poll(setmetatable({}, {
            __len = function() return 1 << 61 end, __index = function() return 0 end }))
        end, "bad argument #1 to 'poll' (too many descriptors)" },
    }
    for _, m in ipairs({ "start", "join", "is_alive", "terminate", "kill", "send_signal", "close", "run" }) do
      table.insert(cases, { m .. " called with '.'", function() mproc.Process(print)[m]() end,
        "bad argument #1 to '" .. m .. "' (mproc.Process expected, got nil)" })
    end
    for _, case in ipairs(cases) do
      it("for " .. case[1], function()
        local ok, err = pcall(case[2])
        assert.is_false(ok)
        assert.matches(case[3], tostring(err), 1, true)
      end)
    end
  end)
end)

describe("a Process handle a sibling inherited", function()
  for _, env in ipairs({ "", "MPROC_NO_PIDFD=1" }) do
    it("tells it runs, times out a join, signals it and sees it end" .. (env ~= "" and " (" .. env .. ")" or ""), function()
      local out = support.run_lua([[
        local mproc = require "mproc"
        local a = mproc.Process(function() mproc.sleep(30) end):start()
        local b = mproc.Process(function()
          print("running", a:is_alive(), a.exitcode, a:join(0.05))
          a:terminate()
          print("ended", a:join(5) ~= nil, a:is_alive())
        end):start()
        b:join(20)
        print("parent", a:join(5), b.exitcode)
      ]], { env = env .. " timeout 60" })
      assert.are.equal("running\ttrue\tnil\tnil\ttimeout\nended\ttrue\tfalse\nparent\t-15\t0\n", out)
    end)
  end
end)

describe("Process without pidfd (pipe sentinels, as on macOS and BSD)", function()
  it("has a sentinel that becomes ready when the child ends, not before", function()
    local out = support.run_lua([[
      local mproc = require "mproc"
      local go, gone = mproc.Event(), mproc.Event()
      local p = mproc.Process(function() go:wait(10) end):start()
      print("early", #mproc.wait({ p }, 0.05))
      print("join", p:join(0.05))
      go:set()
      print("ended", p:join(), #mproc.wait({ p }, 5))
      -- a grandchild (alive until `gone`) must not hold its parent's sentinel open
      local q = mproc.Process(function()
        mproc.Process(function() gone:wait(10) end):start()
        require("mproc.core").kill(mproc.getpid(), 9)
      end):start()
      local t0 = mproc.monotonic()
      print("q ready", #mproc.wait({ q }, 5), mproc.monotonic() - t0 < 1.2)
      gone:set()
      print("q", q:join())
    ]], { env = "MPROC_NO_PIDFD=1" })
    assert.matches("early\t0\n", out, 1, true)
    assert.matches("join\tnil\ttimeout\n", out, 1, true)
    assert.matches("ended\t0\t1\n", out, 1, true)
    assert.matches("q ready\t1\ttrue\n", out, 1, true)
    assert.matches("q\t-9\n", out, 1, true)
  end)
end)

describe("Process with SIGCHLD ignored (children reaped by the kernel as they end)", function()
  -- env --ignore-signal makes SIGCHLD ignored in lua5.4 (an ignored
  -- disposition survives exec); dash's trap '' CHLD does not. A quick child
  -- then often ends, and is gone, before start() has watched it: about one
  -- start in 300 here, so 3000 starts.
  for _, mode in ipairs({ "", "MPROC_NO_PIDFD=1" }) do
    it("starts 3000 quick processes without one failing" .. (mode ~= "" and " (" .. mode .. ")" or ""), function()
      local out = support.run_lua([[
        local mproc = require "mproc"
        local status = io.open("/proc/self/status"):read("a")
        local ign = tonumber(status:match("SigIgn:%s*(%x+)"), 16)
        print("SIGCHLD ignored", ign & (1 << 16) ~= 0)
        local failed, codes = 0, {}
        for _ = 1, 3000 do
          local p, err = mproc.Process(function() end):start()
          if not p then
            failed = failed + 1
            if failed == 1 then print("first failure: " .. err) end
          else
            local code = p:join()
            codes[#codes + 1] = code ~= 0 and code or nil
            assert(p:terminate() and not p:is_alive() and p.exitcode == 0)
          end
        end
        print("failed", failed)
        print("nonzero exitcodes", #codes)
      ]], { env = "env --ignore-signal=CHLD " .. mode })
      assert.matches("SIGCHLD ignored\ttrue\n", out, 1, true)
      assert.matches("failed\t0\n", out, 1, true)
      -- the status of a child the kernel reaped is lost: exitcode 0
      assert.matches("nonzero exitcodes\t0\n", out, 1, true)
    end)
  end
end)

describe("fork hygiene", function()
  it("flushes stdio before fork: no line is printed twice on a pipe", function()
    local out = support.run_lua([[
      local mproc = require "mproc"
      io.write("before fork\n")
      mproc.Process(function() io.write("in child\n") end):start():join()
      io.write("after join\n")
    ]])
    assert.are.equal("before fork\nin child\nafter join\n", out)
  end)

  it("line-buffers the child's stdout: a terminated child's lines are kept, in order", function()
    local out = support.run_lua([[
      local mproc = require "mproc"
      print("parent first")
      local printed = mproc.Event()
      local p = mproc.Process(function() print("child line") printed:set() mproc.sleep(30) end):start()
      assert(printed:wait(10))
      p:terminate()
      p:join()
      print("parent last")
    ]])
    assert.are.equal("parent first\nchild line\nparent last\n", out)
  end)

  it("reseeds math.random in every child", function()
    local files, procs = {}, {}
    for i = 1, 4 do
      files[i] = support.tmpname()
      procs[i] = mproc.Process(function()
        support.write_file(files[i], tostring(math.random(1 << 40)))
      end):start()
    end
    local seen = {}
    for i = 1, 4 do
      procs[i]:join()
      local v = support.read_file(files[i])
      os.remove(files[i])
      assert.is_nil(seen[v], "two children drew " .. tostring(v))
      seen[v] = true
    end
  end)

  it("never returns into the parent's script from the child", function()
    local out = support.run_lua([[
      local mproc = require "mproc"
      mproc.Process(function() end):start():join()
      mproc.Process(function() error("x") end):start():join()
      mproc.Process(function() coroutine.yield() end):start():join()
      local co = coroutine.wrap(function()
        mproc.Process(function() coroutine.yield() end):start():join()
      end)
      co()
      print("after joins")
    ]], { stderr = false })
    assert.are.equal("after joins\n", out)
  end)

  it("gives the child /dev/null as stdin", function()
    local out = support.tmpname()
    mproc.Process(function()
      local p = io.popen("readlink /proc/" .. mproc.getpid() .. "/fd/0")
      support.write_file(out, p:read("l"))
      p:close()
    end):start():join()
    assert.are.equal("/dev/null", support.read_file(out))
    os.remove(out)
  end)
end)

describe("the parent's exit", function()
  for _, ending in ipairs({ "", "os.exit(0)", "os.exit(0, true)", "error('script fails')" }) do
    it("terminates daemonic children and joins the others (" .. (ending == "" and "end of script" or ending) .. ")", function()
      local flag = support.tmpname()
      local t0 = mproc.monotonic()
      local out = support.run_lua(([[
        local mproc, support = require "mproc", require "support"
        local d = mproc.Process{target = function() mproc.sleep(60) end, daemon = true}:start()
        mproc.Process{target = function()
          -- still running when the exit has terminated the daemon
          support.eventually(function() return support.pid_ended(d.pid) end, 10)
          local f = io.open(%q, "w") f:write("done") f:close()
        end}:start()
        print(d.pid)
        %s
      ]]):format(flag, ending), { stderr = false })
      local took = mproc.monotonic() - t0
      assert.are.equal("done", support.read_file(flag))
      os.remove(flag)
      local dpid = tonumber(out:match("%d+"))
      assert.is_false(support.pid_exists(dpid))
      assert.is_true(took < 30, "the daemon was waited for")
    end)
  end
end)

describe("mproc loaded again in the same Lua state", function()
  it("does not join the children mid-way when the first load's hook is collected", function()
    local out = support.run_lua([[
      local mproc = require "mproc"
      local a, b = mproc.Pipe()
      local p = mproc.Process(function() b:recv() end):start()
      for k in pairs(package.loaded) do if k:match("^mproc") then package.loaded[k] = nil end end
      require "mproc"
      collectgarbage(); collectgarbage()
      print("not joined mid-way")
      a:send(1)
      print(p:join())
    ]], { env = "timeout 20" })
    assert.are.equal("not joined mid-way\n0\n", out)
  end)
end)

describe("clocks", function()
  it("sleeps fractional seconds", function()
    local t0 = mproc.monotonic()
    mproc.sleep(0.2)
    local took = mproc.monotonic() - t0
    assert.is_true(took >= 0.2 and took < 2, "sleep(0.2) took " .. took)
  end)

  -- lua.c turns SIGINT into a Lua error through a hook set by a C signal
  -- handler: the waits must let it through at once, not when their time is
  -- up (spec/interrupt_spec.lua has every other kind of wait).
  for _, case in ipairs({
    { "sleep", "pcall(mproc.sleep, 0.6)" },
    { "join with a timeout", "pcall(slow.join, slow, 0.6)" },
    { "mproc.wait with a timeout", "pcall(mproc.wait, { slow }, 0.6)" },
  }) do
    it("lets Ctrl-C interrupt " .. case[1] .. " before its time is up", function()
      local out = support.run_lua(([[
        local mproc = require "mproc"
        local me = mproc.getpid()
        local slow = mproc.Process(function() mproc.sleep(5) end):start()
        local k = require("support").interrupt_when_waiting(me)
        local t0 = mproc.monotonic()
        local ok, err = %s
        print(ok, err, mproc.monotonic() - t0 >= 0.59)
        k:join()
        slow:kill()
        slow:join()
      ]]):format(case[2]))
      assert.matches("^false\t[^\n]*interrupted!\tfalse\n$", out)
    end)
  end

  it("takes math.huge and other huge seconds as for ever", function()
    local ps = {}
    for i, forever in ipairs({ math.huge, 1e300, 2^63 }) do
      ps[i] = mproc.Process(function() mproc.sleep(forever) end):start()
    end
    for i, forever in ipairs({ math.huge, 1e300, 2^63 }) do   -- 0.2 s for all three
      assert.are.same({ nil, "timeout" }, { ps[i]:join(i == 1 and 0.2 or 0) })
      ps[i]:kill()
      assert.are.equal(-9, ps[i]:join(forever))
    end
  end)

  it("tells wall-clock time with sub-second resolution", function()
    local t = mproc.time()
    assert.is_true(math.abs(t - os.time()) <= 2)
    assert.are.equal("float", math.type(t))
  end)

  it("counts cpus", function()
    assert.is_true(mproc.cpu_count() >= 1)
  end)
end)

describe("tutorial example 01_process", function()
  it("prints the four lines in order, once each, from two processes", function()
    local out = support.run_lua(nil, { path = "examples/tutorial/01_process.lua" })
    local l = support.lines(out)
    assert.are.equal(4, #l)
    local parent = l[1]:match("^Parent process (%d+)%.$")
    assert.are.equal("Child proc start", l[2])
    local child = l[3]:match("^I am a child process name: %[sub_proc_name%]%. PID:%[(%d+)%]$")
    assert.are.equal("Child proc finish", l[4])
    assert.is_not_nil(parent)
    assert.is_not_nil(child)
    assert.are_not.equal(parent, child)
  end)
end)

describe("mproc.core opened twice in one Lua state (busted reloads modules per spec file)", function()
  it("does not wait for running children at a later garbage collection", function()
    local out = support.run_lua([[
      local mproc = require "mproc"
      local q = mproc.Queue()
      local p = mproc.Process(function() q:get() end):start()
      package.loaded["mproc.core"] = nil
      require "mproc.core"
      collectgarbage(); collectgarbage()
      print("not blocked")
      q:put(1)
      p:join()
    ]], { env = "timeout 20" })
    assert.are.equal("not blocked\n", out)
  end)
end)
