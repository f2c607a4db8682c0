local mproc = require "mproc"
local core = require "mproc.core"
local subprocess = require "mproc.subprocess"
local support = require "support"

local PIPE, STDOUT, DEVNULL = subprocess.PIPE, subprocess.STDOUT, subprocess.DEVNULL

-- What a string command that is not found gets added to its message.
local HINT = " (a string is one program's name unless shell = true; pass arguments in a list)"

-- Fields of /proc/<pid>/stat after the command name: state, ppid, pgrp, session.
local function stat_of(text)
  local pid, ppid, pgrp, session = text:match("^(%d+) %b() %S+ (%d+) (%d+) (%d+)")
  return tonumber(pid), tonumber(ppid), tonumber(pgrp), tonumber(session)
end

-- A new FIFO's path: a child reading it goes on once a line is written there.
local function fifo()
  local path = support.tmpname()
  assert.is_true(os.execute("mkfifo " .. support.shell_quote(path)))
  return path
end

describe("subprocess", function()
  it("is reachable as mproc.subprocess", function()
    assert.are.equal(subprocess, mproc.subprocess)
    assert.are.same({ -1, -2, -3 }, { PIPE, STDOUT, DEVNULL })
  end)

  describe("calling forms", function()
    local cases = {
      { "args and an options table", function() return subprocess.run({ "pwd" }, { cwd = "/tmp", stdout = PIPE }) end },
      { "one table with argv and options", function() return subprocess.run{ "pwd", cwd = "/tmp", stdout = PIPE } end },
      { "a string command", function() return subprocess.run("pwd", { cwd = "/tmp", stdout = PIPE }) end },
      { "a string with shell = true", function()
        return subprocess.run("cd /tmp && pwd", { shell = true, stdout = PIPE })
      end },
    }
    for _, case in ipairs(cases) do
      it("takes " .. case[1], function()
        local done = assert(case[2]())
        assert.are.equal(0, done.returncode)
        assert.are.equal("/tmp\n", done.stdout)
      end)
    end

    it("runs a string as one program unless shell is set, and says so when it is not found", function()
      local ok, err, code = subprocess.call("echo hi")
      assert.are.same({ nil, "cannot run 'echo hi': No such file or directory" .. HINT, 2 }, { ok, err, code })
    end)

    local dir = support.tmpname()
    local hint_cases = {
      { "run", { "ls -l" }, true },
      { "Popen", { "ls -l" }, true },
      { "call", { "ls\t-l" }, true },
      { "run", { "ls -l", { stdout = PIPE } }, true },
      { "run", { "no-such-program-here" }, false },      -- no space: a name, not a command line
      { "run", { { "ls -l" } }, false },                 -- a list: the name was meant
      { "run", { "ls -l", { cwd = dir } }, false },      -- chdir failed, not the program
      { "run", { "ls -l", { executable = "/nope/x" } }, false }, -- the program is executable's
      { "run", { "/bin/ls -l" }, true },
    }
    for _, case in ipairs(hint_cases) do
      local what = type(case[2][1]) == "table" and "a list" or ("%q"):format(case[2][1])
      it(("makes %s %s the hint for %s%s"):format(case[1], case[3] and "add" or "leave out", what,
        case[2][2] and " with options" or ""), function()
        local r, err = subprocess[case[1]](table.unpack(case[2]))
        assert.is_nil(r)
        assert.matches("^cannot run '", err)
        assert.are.equal(case[3], err:sub(-#HINT) == HINT, err)
      end)
    end

    it("leaves out the hint for a program with a space in its name that is found but cannot run", function()
      local path = support.tmpname() .. " x"
      support.write_file(path, "")
      local r, err, code = subprocess.run(path)
      os.remove(path)
      assert.are.same({ nil, ("cannot run '%s': Permission denied"):format(path), 13 }, { r, err, code })
    end)

    it("makes check_output raise with the hint", function()
      assert.has_error(function() subprocess.check_output("ls -l") end,
        "cannot run 'ls -l': No such file or directory" .. HINT)
    end)

    it("passes the rest of a list to the shell as $0, $1 ...", function()
      local out = subprocess.check_output({ "echo $0-$1", "zero", "one" }, { shell = true })
      assert.are.equal("zero-one\n", out)
    end)

    it("raises for a nil inside the argument list instead of dropping what follows", function()
      local holes = {
        { function() subprocess.call{ "echo", nil, "x" } end, "call", 2 },
        { function() subprocess.run({ "echo", "a", nil, "x" }, { stdout = PIPE }) end, "run", 3 },
        { function() subprocess.check_output(table.pack("echo", "a", nil)) end, "check_output", 3 },
        { function() subprocess.Popen({ nil, "x" }) end, "Popen", 1 },
      }
      for _, case in ipairs(holes) do
        assert.has_error(case[1], ("bad argument #1 to '%s' (argument #%d is nil)"):format(case[2], case[3]))
      end
    end)

    -- A C string ends at its first NUL: "a\0b" would reach the child as "a".
    local nul_cases = {
      { "an argument", function(f) f{ "echo", "a\0b" } end, 1, "argument #2 contains a NUL byte" },
      { "the program", function(f) f{ "/bin/sh\0junk", "-c", "true" } end, 1, "argument #1 contains a NUL byte" },
      { "a string command", function(f) f("true\0junk") end, 1, "the command contains a NUL byte" },
      { "a shell command", function(f) f("true\0; exit 3", { shell = true }) end, 1, "the command contains a NUL byte" },
      { "cwd", function(f) f({ "pwd" }, { cwd = "/tmp\0/x" }) end, 2, "cwd contains a NUL byte" },
      { "cwd, one table", function(f) f{ "pwd", cwd = "/tmp\0/x" } end, 1, "cwd contains a NUL byte" },
      { "executable", function(f) f({ "x" }, { executable = "/bin/true\0x" }) end, 2, "executable contains a NUL byte" },
      { "an env name", function(f) f({ "true" }, { env = { ["A\0B"] = "1" } }) end, 2,
        [[env name "A\0B" contains a NUL byte]] },
      { "an env value", function(f) f{ "true", env = { A = "x\0y" } } end, 1, [[env["A"] contains a NUL byte]] },
    }
    for _, case in ipairs(nul_cases) do
      for _, fname in ipairs({ "run", "call", "check_output", "Popen" }) do
        it(("makes %s refuse a NUL byte in %s"):format(fname, case[1]), function()
          local f = subprocess[fname]
          local ok, err = pcall(case[2], function(...) return f(...) end)
          assert.is_false(ok)
          assert.are.equal(("bad argument #%d to '%s' (%s)"):format(case[3], fname, case[4]),
            (tostring(err):gsub("^[^:]+:%d+: ", "")))
        end)
      end
    end

    it("makes getstatusoutput refuse a NUL byte in its command", function()
      assert.has_error(function() subprocess.getstatusoutput("true\0; exit 3") end,
        "bad argument #1 to 'getstatusoutput' (the command contains a NUL byte)")
    end)

    it("makes core.spawn refuse a NUL byte in any string it passes to C", function()
      local base = { name = "true", argv = { "true" }, exe = { "/bin/true" } }
      for field, value in pairs({ name = "tr\0ue", argv = { "true", "a\0b" }, exe = { "/bin/true\0x" },
                                  env = { "A=x\0y" }, cwd = "/tmp\0x" }) do
        local spec = {}
        for k, v in pairs(base) do spec[k] = v end
        spec[field] = value
        local ok, err = pcall(core.spawn, spec)
        assert.is_false(ok)
        assert.matches("bad argument #1 to .-%(" .. field .. " contains a NUL byte%)$", err)
      end
    end)

    it("takes the count of a list from its n field", function()
      assert.are.equal("a b\n", subprocess.check_output(table.pack("echo", "a", "b")))
      assert.are.equal("a\n", subprocess.check_output{ "echo", "a", "b", n = 2 })
    end)

    it("turns number arguments into strings and keeps others out", function()
      assert.are.equal("1 2.5\n", subprocess.check_output{ "echo", 1, 2.5 })
      assert.has_error(function() subprocess.call{ "echo", {} } end,
        "bad argument #1 to 'call' (argument #2 is a table, not a string)")
    end)
  end)

  describe("returncode", function()
    local cases = {
      { "exit 0", 0 }, { "exit 3", 3 }, { "exit 255", 255 },
      { "kill -TERM $$", -15 }, { "kill -KILL $$", -9 }, { "kill -USR1 $$", -10 },
    }
    for _, case in ipairs(cases) do
      it("is " .. case[2] .. " after " .. case[1], function()
        assert.are.equal(case[2], subprocess.call{ "sh", "-c", case[1] })
      end)
    end
  end)

  describe("a program that cannot start", function()
    local dir = support.tmpname()
    local cases = {
      { "is missing", { "no-such-program-here" }, nil,
        "cannot run 'no-such-program-here': No such file or directory", 2 },
      { "is missing at a path", { "/nonexistent/prog" }, nil,
        "cannot run '/nonexistent/prog': No such file or directory", 2 },
      { "is not executable", { "/etc/passwd" }, nil, "cannot run '/etc/passwd': Permission denied", 13 },
      { "is a directory", { "/tmp" }, nil, "cannot run '/tmp': Permission denied", 13 },
      { "has a bad cwd", { "true" }, { cwd = dir },
        "cannot run 'true': cannot change directory to '" .. dir .. "': No such file or directory", 2 },
      { "has a missing executable", { "true" }, { executable = "/nope/x" },
        "cannot run '/nope/x': No such file or directory", 2 },
      { "is not on the env's PATH", { "true" }, { env = { PATH = "/nonexistent" } },
        "cannot run 'true': No such file or directory", 2 },
    }
    for _, case in ipairs(cases) do
      for _, fname in ipairs({ "Popen", "call", "run" }) do
        it("makes " .. fname .. " return nil, message, errno when it " .. case[1], function()
          local r, msg, code = subprocess[fname](case[2], case[3])
          assert.is_nil(r)
          assert.are.equal(case[4], msg)
          assert.are.equal(case[5], code)
        end)
      end
    end

    for _, fname in ipairs({ "check_call", "check_output" }) do
      it("makes " .. fname .. " raise the message", function()
        local ok, err = pcall(subprocess[fname], { "no-such-program-here" })
        assert.is_false(ok)
        assert.matches("cannot run 'no-such-program-here': No such file or directory", err, 1, true)
      end)

      it("makes " .. fname .. " raise on a timeout, after killing the child", function()
        local ok, err = pcall(subprocess[fname], { "sleep", "30" }, { timeout = 0.2 })
        assert.is_false(ok)
        assert.matches("timeout: the command was killed after 0.2 seconds", err, 1, true)
      end)
    end

    it("leaves no descriptor and no child behind", function()
      local fds, kids = support.fd_count(), #support.children()
      for _ = 1, 50 do
        assert.is_nil(subprocess.Popen({ "no-such-program-here" }, { stdin = PIPE, stdout = PIPE, stderr = PIPE }))
        assert.is_nil(subprocess.Popen({ "true" }, { stdout = PIPE, preexec_fn = function() error("x") end }))
      end
      assert.are.equal(fds, support.fd_count())
      assert.are.equal(kids, #support.children())
    end)
  end)

  describe("CalledProcessError", function()
    it("is raised by check_call with returncode and cmd", function()
      local ok, e = pcall(subprocess.check_call, { "sh", "-c", "exit 4" })
      assert.is_false(ok)
      assert.are.equal("mproc.CalledProcessError", getmetatable(e).__name)
      assert.are.equal(4, e.returncode)
      assert.are.same({ "sh", "-c", "exit 4" }, e.cmd)
      assert.are.equal([[Command '{"sh", "-c", "exit 4"}' returned non-zero exit status 4.]], tostring(e))
    end)

    it("carries what check_output captured", function()
      local ok, e = pcall(subprocess.check_output, { "sh", "-c", "echo partial; exit 2" })
      assert.is_false(ok)
      assert.are.equal("partial\n", e.output)
      assert.are.equal("partial\n", e.stdout)
      assert.are.equal(2, e.returncode)
    end)

    it("comes from run{check = true} with stdout and stderr", function()
      local ok, e = pcall(subprocess.run, { "sh", "-c", "echo o; echo e >&2; kill -9 $$",
        capture_output = true, check = true })
      assert.is_false(ok)
      assert.are.same({ -9, "o\n", "e\n" }, { e.returncode, e.stdout, e.stderr })
      assert.matches("died with signal 9", tostring(e))
    end)
  end)

  describe("run", function()
    it("returns a CompletedProcess with args, returncode, stdout, stderr", function()
      local done = subprocess.run{ "sh", "-c", "cat; echo err >&2; exit 1", input = "in\n", capture_output = true }
      assert.are.equal("mproc.CompletedProcess", getmetatable(done).__name)
      assert.are.same({ "sh", "-c", "cat; echo err >&2; exit 1" }, done.args)
      assert.are.same({ 1, "in\n", "err\n" }, { done.returncode, done.stdout, done.stderr })
      assert.has_error(function() done:check_returncode() end)
      assert.are.equal([[mproc.CompletedProcess (args {"sh", "-c", "cat; echo err >&2; exit 1"}, returncode 1)]],
        tostring(done))
    end)

    it("leaves stdout and stderr nil when they are not captured", function()
      local done = subprocess.run({ "true" })
      assert.are.same({ 0 }, { done.returncode, done.stdout, done.stderr })
      done:check_returncode()
    end)

    it("merges stderr into stdout with STDOUT, in order", function()
      local done = subprocess.run{ "sh", "-c", "echo 1; echo 2 >&2; echo 3", stdout = PIPE, stderr = STDOUT }
      assert.are.equal("1\n2\n3\n", done.stdout)
      assert.is_nil(done.stderr)
    end)

    it("discards output with DEVNULL and reads EOF from it", function()
      local done = subprocess.run{ "sh", "-c", "cat; echo gone", stdin = DEVNULL, stdout = DEVNULL, stderr = PIPE }
      assert.are.same({ 0, nil, "" }, { done.returncode, done.stdout, done.stderr })
    end)

    it("kills the child at the timeout and returns what it had written", function()
      local t0 = mproc.monotonic()
      local r, err, partial = subprocess.run{ "sh", "-c", "echo started; exec sleep 30", stdout = PIPE, timeout = 0.5 }
      assert.is_nil(r)
      assert.are.equal("timeout", err)
      assert.are.equal("started\n", partial.stdout)
      assert.are.equal(-9, partial.returncode)
      assert.is_true(mproc.monotonic() - t0 < 20)
    end)

    it("kills the whole group at the timeout with start_new_session", function()
      local r, err, partial = subprocess.run{ "sh", "-c", "sleep 30 & echo $!; wait",
        stdout = PIPE, timeout = 0.5, start_new_session = true }
      assert.are.same({ nil, "timeout" }, { r, err })
      local grandchild = tonumber(partial.stdout)
      assert.is_true(support.eventually(function() return support.pid_ended(grandchild) end))
    end)
  end)

  describe("call, check_call, check_output", function()
    it("call returns the returncode, check_call 0", function()
      assert.are.equal(7, subprocess.call{ "sh", "-c", "exit 7" })
      assert.are.equal(0, subprocess.check_call{ "true" })
    end)

    it("call returns nil, \"timeout\" after killing the child", function()
      assert.are.same({ nil, "timeout" }, { subprocess.call({ "sleep", "30" }, { timeout = 0.2 }) })
    end)

    it("check_output returns stdout and takes input", function()
      assert.are.equal("got hello\n", subprocess.check_output{ "sh", "-c", "read x; echo got $x", input = "hello\n" })
    end)
  end)

  describe("getoutput and getstatusoutput", function()
    it("run a shell command with stderr merged and one newline stripped", function()
      local status, out = subprocess.getstatusoutput("echo a; echo b >&2; exit 3")
      assert.are.same({ 3, "a\nb" }, { status, out })
      assert.are.equal("x\n", subprocess.getoutput("printf 'x\\n\\n'"))
      assert.are.equal(127, (subprocess.getstatusoutput("no-such-program-here")))
    end)
  end)

  describe("options", function()
    it("env replaces the environment", function()
      local out = subprocess.check_output({ "/usr/bin/env" }, { env = { A = "1", B = "two words" } })
      local lines = support.lines(out)
      table.sort(lines)
      assert.are.same({ "A=1", "B=two words" }, lines)
    end)

    it("env = mproc.environ() plus a change keeps the rest, as Python's {**os.environ, ...}", function()
      local env = mproc.environ()
      assert.are.equal(os.getenv("PATH"), env.PATH)
      env.MPROC_SPEC_EXTRA = "x=y"
      local out = subprocess.check_output({ "/usr/bin/env" }, { env = env })
      local want = subprocess.check_output({ "/usr/bin/env" })   -- inherited
      local got, expected = support.lines(out), support.lines(want .. "MPROC_SPEC_EXTRA=x=y\n")
      table.sort(got)
      table.sort(expected)
      assert.are.same(expected, got)
      assert.is_nil(mproc.environ().MPROC_SPEC_EXTRA)   -- a copy
    end)

    it("send_signal takes mproc.signals' numbers, as Python's signal.SIGUSR1", function()
      local p = subprocess.Popen({ "sleep", "10" })
      assert.is_true(p:send_signal(mproc.signals.SIGUSR1))
      assert.are.equal(-mproc.signals.SIGUSR1, p:wait(10))
      assert.are.equal(-mproc.signals.SIGKILL, subprocess.call({ "sh", "-c", "kill -KILL $$" }))
      assert.are.equal(9, mproc.signals.SIGKILL)
    end)

    it("umask sets the child's mask", function()
      assert.are.equal("0027\n", subprocess.check_output({ "sh", "-c", "umask" }, { umask = tonumber("027", 8) }))
    end)

    local group_cases = {
      { "start_new_session makes a session and a group", { start_new_session = true }, true, true },
      { "process_group = 0 makes a group only", { process_group = 0 }, true, false },
      { "neither keeps the parent's", {}, false, false },
    }
    for _, case in ipairs(group_cases) do
      it(case[1], function()
        local out = subprocess.check_output({ "cat", "/proc/self/stat" }, case[2])
        local pid, _, pgrp, session = stat_of(out)
        assert.are.equal(case[3], pgrp == pid)
        assert.are.equal(case[4], session == pid)
      end)
    end

    describe("close_fds and pass_fds", function()
      local f, fd
      before_each(function()
        f = assert(io.open("/dev/null")) -- fopen without "e": not close-on-exec
        fd = core.fileno(f)
      end)
      after_each(function() f:close() end)
      local cases = {
        { "closes inherited descriptors by default", {}, 1 },
        { "keeps them with close_fds = false", { close_fds = false }, 0 },
        { "keeps pass_fds open", { pass_fds = { 200, 201 } }, 0, true },
      }
      for _, case in ipairs(cases) do
        it(case[1], function()
          local opts = { shell = true }
          for k, v in pairs(case[2]) do opts[k] = v end
          if case[4] then opts.pass_fds = { fd } end
          local cmd = ("[ -e /proc/$$/fd/%d ]"):format(fd)
          assert.are.equal(case[3], subprocess.call(cmd, opts))
        end)
      end

      it("gives the child only its stdio and pass_fds", function()
        local out = subprocess.check_output({ "sh", "-c", "ls /proc/$$/fd" }, { pass_fds = { fd } })
        local got = support.lines(out)
        table.sort(got, function(a, b) return tonumber(a) < tonumber(b) end)
        assert.are.same({ "0", "1", "2", tostring(fd) }, got)
      end)
    end)

    it("takes Lua files and descriptor numbers for stdio", function()
      local path = support.tmpname()
      local f = assert(io.open(path, "w"))
      local cmd = { "sh", "-c", "echo to-file; echo to-err >&2" }
      assert.are.equal(0, subprocess.call(cmd, { stdout = f, stderr = core.fileno(f) }))
      f:close()
      assert.are.equal("to-file\nto-err\n", support.read_file(path))
      f = assert(io.open(path))
      assert.are.equal("to-file\nto-err\n", subprocess.check_output({ "cat" }, { stdin = f }))
      f:close()
      os.remove(path)
    end)

    it("swaps stdout and stderr given as each other's descriptors", function()
      local script = support.script([[
        local subprocess = require "mproc.subprocess"
        subprocess.call({ "sh", "-c", "echo to-out; echo to-err >&2" }, { stdout = 2, stderr = 1 })
      ]])
      local o, e = support.tmpname(), support.tmpname()
      support.sh(("%s %s >%s 2>%s"):format(support.LUA, script, o, e))
      assert.are.same({ "to-err\n", "to-out\n" }, { support.read_file(o), support.read_file(e) })
      os.remove(script); os.remove(o); os.remove(e)
    end)

    it("executable replaces the program but keeps argv[0]", function()
      local out = subprocess.check_output({ "my-name", "-c", "echo $0" }, { executable = "/bin/sh" })
      assert.are.equal("my-name\n", out)
    end)

    it("preexec_fn runs in the child before exec", function()
      local out = subprocess.check_output({ "echo", "post" },
        { preexec_fn = function() io.stdout:write("pre ", mproc.getpid(), "\n"):flush() end })
      local pid = out:match("^pre (%d+)\npost\n$")
      assert.is_truthy(pid)
      assert.are_not.equal(mproc.getpid(), tonumber(pid))
    end)

    it("a failing preexec_fn reports its error", function()
      for _, fname in ipairs({ "Popen", "call", "run" }) do
        local r, msg, code = subprocess[fname]({ "true" }, { preexec_fn = function() error("no thanks", 0) end })
        assert.is_nil(r)
        assert.are.equal("cannot run 'true': preexec_fn failed: no thanks", msg)
        assert.is_nil(code) -- no errno: the failure is the Lua error's
      end
    end)

    it("accepts Python's text options and leaves bytes alone", function()
      local out = subprocess.check_output({ "printf", "a\\r\\nb\\377" }, { text = true, encoding = "utf-8" })
      assert.are.equal("a\r\nb\255", out)
    end)
  end)

  describe("Popen", function()
    it("has pid, args, returncode and real Lua files for pipes", function()
      local p = assert(subprocess.Popen({ "cat" }, { stdin = PIPE, stdout = PIPE }))
      assert.are.same({ "cat" }, p.args)
      assert.is_true(p.pid > 0)
      assert.is_nil(p.returncode)
      assert.are.equal("file", io.type(p.stdin))
      assert.is_nil(p.stderr)
      p.stdin:write("one\n", "two\n")
      p.stdin:close()
      local lines = {}
      for l in p.stdout:lines() do lines[#lines + 1] = l end
      assert.are.same({ "one", "two" }, lines)
      p.stdout:close()
      assert.are.equal(0, p:wait())
      assert.are.equal(0, p.returncode)
      assert.matches("mproc.Popen %(pid %d+, returncode 0%)", tostring(p))
    end)

    it("makes pipes close-on-exec", function()
      local p = subprocess.Popen({ "cat" }, { stdin = PIPE, stdout = PIPE })
      local fd = core.fileno(p.stdout)
      assert.are.equal(1, subprocess.call(("[ -e /proc/$$/fd/%d ]"):format(fd), { shell = true, close_fds = false }))
      p.stdin:close()
      p:wait()
      p.stdout:close()   -- not left to the collector, which would close it in a later spec's count
    end)

    it("wait returns the returncode alone", function()
      local p = subprocess.Popen{ "sh", "-c", "exit 3" }
      assert.are.same({ n = 1, 3 }, table.pack(p:wait()))
      assert.are.same({ n = 1, 3 }, table.pack(p:wait())) -- reaped already
      assert.are.same({ n = 1, 3 }, table.pack(p:wait(1)))
    end)

    it("poll returns nil while the child runs, wait times out", function()
      local p = subprocess.Popen{ "sleep", "30" }
      assert.is_nil(p:poll())
      assert.are.same({ nil, "timeout" }, { p:wait(0.1) })
      assert.is_true(p:terminate())
      assert.are.equal(-15, p:wait())
      assert.are.equal(-15, p:poll())
    end)

    local signal_cases = {
      { "kill", function(p) return p:kill() end, -9 },
      { "terminate", function(p) return p:terminate() end, -15 },
      { "send_signal", function(p) return p:send_signal(10) end, -10 },
    }
    for _, case in ipairs(signal_cases) do
      it(case[1] .. " ends the child", function()
        local p = subprocess.Popen{ "sleep", "30" }
        assert.is_true(case[2](p))
        assert.are.equal(case[3], p:wait())
        assert.is_true(case[2](p)) -- an ended child is not signalled again
      end)
    end

    -- A number the C int cannot hold used to be truncated: (1 << 32) + 9
    -- sent SIGKILL.  Every bad number raises and leaves the child alone.
    local bad_signals = {
      { (1 << 32) + 9, "4294967305" }, { -1, "-1" }, { core.NSIG, tostring(core.NSIG) },
      { 2^32 + 9, "4294967305.0" }, { 9.0, "9.0" }, { "9", "string" }, { nil, "no value" },
    }
    for _, case in ipairs(bad_signals) do
      it("send_signal raises for " .. case[2] .. " without signalling the child", function()
        local p = subprocess.Popen{ "sleep", "30" }
        local ok, err = pcall(function() p:send_signal(case[1]) end)
        assert.are.same({ false, ("spec/subprocess_spec.lua: bad argument #1 to 'send_signal' "
          .. "(signal number from 0 to %d expected, got %s)"):format(core.NSIG - 1, case[2]) },
          { ok, (tostring(err):gsub(":%d+:", ":")) })
        -- the child was not signalled: the next signal is the one it dies of
        -- (a fatal signal sent before would have decided its exit status)
        assert.is_nil(p:poll())
        assert.is_true(p:send_signal(10))
        assert.are.equal(-10, p:wait())
      end)
    end

    it("send_signal takes 0 (is it there?) and the highest signal number", function()
      assert.is_true(core.NSIG > 31)
      local p = subprocess.Popen{ "sleep", "30" }
      assert.is_true(p:send_signal(0))
      assert.is_nil(p:poll())
      assert.is_true(p:send_signal(core.NSIG - 1)) -- a real-time signal: its default ends the child
      assert.are.equal(-(core.NSIG - 1), p:wait())
    end)

    it("kill(true) reaches the child's whole group", function()
      local p = subprocess.Popen({ "sh", "-c", "sleep 30 & echo $!; wait" }, { stdout = PIPE, process_group = 0 })
      local grandchild = tonumber(p.stdout:read("l"))
      assert.is_true(p:kill(true))
      assert.are.equal(-9, p:wait())
      p.stdout:close()
      assert.is_true(support.eventually(function() return support.pid_ended(grandchild) end))
      local q = subprocess.Popen{ "sleep", "30" }
      assert.has_error(function() q:kill(true) end)
      q:kill()
      q:wait()
    end)

    it("works with mproc.wait through its sentinel", function()
      local slow = subprocess.Popen{ "sleep", "30" }
      local fast = subprocess.Popen{ "true" }
      assert.are.same({ fast }, mproc.wait({ slow, fast }, 10))
      slow:kill()
      assert.are.same({ slow }, mproc.wait({ slow }, 10))
      slow:wait()
      fast:wait()
    end)

    it("is ready at once for mproc.wait once reaped (sentinel false)", function()
      local done = subprocess.Popen{ "true" }
      if not support.PORTABLE then assert.is_number(done.sentinel) end -- no pidfd there
      assert.are.equal(0, done:wait())
      assert.is_false(done.sentinel)
      local polled = subprocess.Popen{ "true" }
      assert.is_true(support.eventually(function() return polled:poll() ~= nil end))
      assert.is_false(polled.sentinel)
      local slow = subprocess.Popen{ "sleep", "30" }
      assert.are.same({ done, polled }, mproc.wait({ done, slow, polled }, 0))
      slow:kill()
      assert.are.equal(-9, slow:wait())
      assert.are.same({ done, slow, polled }, mproc.wait({ done, slow, polled }))
    end)

    it("is a to-be-closed variable that closes its pipes and waits", function()
      local p
      do
        local q <close> = subprocess.Popen({ "cat" }, { stdin = PIPE, stdout = PIPE })
        p = q
      end
      assert.are.equal(0, p.returncode)
      assert.are.equal("closed file", io.type(p.stdin))
      assert.are.equal("closed file", io.type(p.stdout))
    end)

    it("does not keep the script waiting for its children at exit", function()
      local t0 = mproc.monotonic()
      local out = support.run_lua([[
        local subprocess = require "mproc.subprocess"
        print(subprocess.Popen{"sleep", "30", stdout = subprocess.DEVNULL, stderr = subprocess.DEVNULL}.pid)
      ]])
      assert.is_true(mproc.monotonic() - t0 < 20)
      local pid = tonumber(out)
      assert.is_truthy(pid)
      core.kill(pid, 9)
    end)

    it("reaps children whose Popen was collected", function()
      if support.PORTABLE then return pending("not in the portable build: reaped through its pidfd") end
      local kids = #support.children()
      local p = subprocess.Popen{ "true" }
      local pid = p.pid
      assert.is_true(support.eventually(function()
        local s = support.read_file(("/proc/%d/stat"):format(pid))
        return s and s:match("^%d+ %b() Z")
      end))
      p = nil -- luacheck: ignore
      collectgarbage()
      collectgarbage()
      subprocess.call{ "true" }
      assert.are.equal(kids, #support.children())
    end)

    it("leaves descriptors and children unchanged after 200 runs with pipes", function()
      collectgarbage(); collectgarbage()  -- earlier specs' unclosed handles must not close mid-count
      local fds, kids = support.fd_count(), #support.children()
      for i = 1, 200 do
        local p = assert(subprocess.Popen({ "cat" }, { stdin = PIPE, stdout = PIPE, stderr = PIPE }))
        local out, err = p:communicate("n" .. i)
        assert.are.same({ "n" .. i, "" }, { out, err })
      end
      assert.are.equal(fds, support.fd_count())
      assert.are.equal(kids, #support.children())
    end)
  end)

  describe("communicate", function()
    it("moves 64 MiB through cat", function()
      local data = string.rep("0123456789abcdef", 4 * 1024 * 1024)
      local p = subprocess.Popen({ "cat" }, { stdin = PIPE, stdout = PIPE })
      local out, err = p:communicate(data)
      assert.is_false(err)
      assert.are.equal(#data, #out)
      assert.is_true(out == data)
      assert.are.equal(0, p.returncode)
    end)

    it("does not deadlock when the child fills stdout and stderr while reading", function()
      local data = string.rep("x", 8 * 1024 * 1024)
      local p = subprocess.Popen({ "sh", "-c", "tee /dev/stderr" }, { stdin = PIPE, stdout = PIPE, stderr = PIPE })
      local out, err = p:communicate(data)
      assert.are.equal(#data, #out)
      assert.are.equal(#data, #err)
    end)

    it("keeps what it read before a timeout for the next call", function()
      local go = fifo()
      local p = subprocess.Popen({ "sh", "-c", 'echo first; read x < "$0"; echo second', go }, { stdout = PIPE })
      assert.are.same({ p.stdout }, mproc.wait({ p.stdout }, 10))   -- "first" is there to read
      assert.are.same({ nil, "timeout" }, { p:communicate(nil, 0.05) })
      support.write_file(go, "\n")
      assert.are.equal("first\nsecond\n", p:communicate())
      assert.are.equal(0, p.returncode)
      os.remove(go)
    end)

    it("goes on writing the input after a timeout", function()
      local go = fifo()
      local data = string.rep("y", 4 * 1024 * 1024)
      local p = subprocess.Popen({ "sh", "-c", 'read x < "$0"; exec cat', go }, { stdin = PIPE, stdout = PIPE })
      assert.are.same({ nil, "timeout" }, { p:communicate(data, 0.05) })
      support.write_file(go, "\n")
      local out = p:communicate()
      assert.is_true(out == data)
      os.remove(go)
    end)

    it("returns data the user's reads left in the file's buffer", function()
      local p = subprocess.Popen({ "printf", "a\\nb\\nc\\n" }, { stdout = PIPE })
      assert.are.equal("a", p.stdout:read("l"))
      assert.are.equal("b\nc\n", p:communicate())
    end)

    it("survives a child that closes stdin without reading", function()
      local p = subprocess.Popen({ "true" }, { stdin = PIPE, stdout = PIPE })
      local out = p:communicate(string.rep("z", 8 * 1024 * 1024))
      assert.are.equal("", out)
      assert.are.equal(0, p.returncode)
    end)

    -- Files that are always ready stand for a child that reads or writes
    -- without pause: communicate must stop at its deadline all the same
    -- (it used to go on while poll found anything ready).
    local ready_cases = {
      { "writing to a reader that is always ready", function()
        return { stdin = assert(io.open("/dev/null", "w")), input = string.rep("w", 32 * 1024 * 1024), pos = 0 }
      end, function(st) return st.pos end },
      { "reading from a writer that is always ready", function(path)
        support.write_file(path, string.rep("r", 32 * 1024 * 1024))
        return { stdout = assert(io.open(path)) }
      end, function(st) return #st.out:text() end },
    }
    for _, case in ipairs(ready_cases) do
      it("stops at its deadline when " .. case[1], function()
        local path = support.tmpname()
        local st = case[2](path)
        assert.are.same({ nil, "timeout" }, { core.communicate(st, 0) })
        assert.is_true(case[3](st) < 32 * 1024 * 1024)
        assert.is_true(core.communicate(st))
        assert.are.equal(32 * 1024 * 1024, case[3](st))
        assert.are.equal("closed file", io.type(st.stdin or st.stdout))
        os.remove(path)
      end)
    end

    it("waits for a child with no pipes, giving false for both streams", function()
      local p = subprocess.Popen{ "sh", "-c", "exit 5" }
      assert.are.same({ n = 2, false, false }, table.pack(p:communicate()))
      assert.are.equal(5, p.returncode)
    end)

    -- nil first means failure or timeout, never a stream that was not piped.
    local shape_cases = {
      { "stdout only", { stdout = PIPE, stderr = DEVNULL }, { "timeout", false } },
      { "stderr only", { stdout = DEVNULL, stderr = PIPE }, { false, "timeout" } },
      { "both", { stdout = PIPE, stderr = PIPE }, { "timeout", "timeout" } },
    }
    for _, case in ipairs(shape_cases) do
      it("gives false for a stream not piped (" .. case[1] .. "), so a child's output is never a timeout", function()
        local p = subprocess.Popen({ "sh", "-c", "printf timeout; printf timeout >&2" }, case[2])
        assert.are.same({ n = 2, case[3][1], case[3][2] }, table.pack(p:communicate()))
        assert.are.equal(0, p.returncode)
      end)
    end
  end)

  describe("a child gone before its stdin was flushed", function()
    -- The child exits without reading; "hello" still sits in the Lua FILE.
    -- Flushing it gives EPIPE, and must not raise SIGPIPE on the script;
    -- afterwards SIGPIPE is neither blocked nor pending (bit 13 of the masks).
    local cases = {
      { "communicate", "print(p:communicate())", "\tfalse" },
      { "closing the pipe", "print(p.stdin:close())", "nil\tBroken pipe\t32" },
      { "leaving a Popen's <close> scope", "do local q <close> = p end print(p.returncode)", "0" },
      { "collecting the file", "p.stdin = nil collectgarbage() collectgarbage() print(p.returncode)", "0" },
    }
    for _, case in ipairs(cases) do
      it("does not kill the script in " .. case[1], function()
        local out, code = support.run_lua(([[
          local subprocess = require "mproc.subprocess"
          local p = subprocess.Popen({ "true" }, { stdin = subprocess.PIPE, stdout = subprocess.PIPE })
          p.stdin:write("hello")
          p:wait()
          %s
          local status = io.open("/proc/self/status"):read("a")
          local function sigpipe(field)
            local low = status:match(field .. ":%%s*%%x*(%%x%%x%%x%%x)\n")
            return tonumber(low, 16) & 0x1000 ~= 0
          end
          print("blocked", sigpipe("SigBlk"), "pending", sigpipe("SigPnd") or sigpipe("ShdPnd"))
        ]]):format(case[2]))
        assert.are.equal(0, code, out)
        assert.are.same({ case[3], "blocked\tfalse\tpending\tfalse" }, support.lines(out))
      end)
    end
  end)

  describe("bad arguments raise, naming the function", function()
    local cases = {
      { "call", function() subprocess.call() end, "bad argument #1 to 'call'" },
      { "check_call", function() subprocess.check_call(42) end, "bad argument #1 to 'check_call'" },
      { "check_output", function() subprocess.check_output{ "true", stdout = PIPE } end, "bad argument #1 to 'check_output'" },
      { "run", function() subprocess.run{ "true", bogus = 1 } end, "unknown option 'bogus'" },
      { "Popen", function() subprocess.Popen{ "true", stdin = "pipe" } end, "stdin must be PIPE" },
      { "Popen stderr", function() subprocess.Popen{ "true", stdout = STDOUT } end, "stdout must be PIPE" },
      { "Popen empty", function() subprocess.Popen{} end, "empty command" },
      { "Popen umask", function() subprocess.Popen{ "true", umask = -1 } end, "umask must be" },
      { "getoutput", function() subprocess.getoutput() end, "bad argument #1 to 'getoutput'" },
      { "getstatusoutput", function() subprocess.getstatusoutput(true) end, "bad argument #1 to 'getstatusoutput'" },
      { "communicate", function()
        local p = subprocess.Popen({ "true" }, { stdin = PIPE })
        p:wait()
        p:communicate(42)
      end, "bad argument #1 to 'communicate'" },
      { "wait", function() subprocess.Popen{ "true" }:wait("soon") end, "bad argument #1 to 'wait'" },
      { "send_signal", function() subprocess.Popen{ "true" }:send_signal("TERM") end, "bad argument #1 to 'send_signal'" },
    }
    for _, case in ipairs(cases) do
      it(case[1], function()
        local ok, err = pcall(case[2])
        assert.is_false(ok)
        assert.is_truthy(tostring(err):find(case[3], 1, true), tostring(err))
      end)
    end
  end)

  describe("a bad option", function()
    -- f({"true"}, opts) names argument #2, f{"true", ...opts} argument #1;
    -- either way the message names the option.
    local cases = {
      { "timeout", "1", "timeout must be a number of seconds, got string" },
      { "input", 1, "input: string expected, got number" },
      { "cwd", 42, "cwd: string expected, got number" },
      { "executable", true, "executable: string expected, got boolean" },
      { "env", "PATH=/bin", "env: table expected, got string" },
      { "env", { A = {} }, "env must map strings to strings" },
      { "env", { ["A=B"] = "c" }, "env name has '=': A=B" },
      { "pass_fds", 3, "pass_fds: table expected, got number" },
      { "pass_fds", { -1 }, "pass_fds must list descriptors" },
      { "stdin", "pipe", "stdin must be PIPE, DEVNULL, a file or a descriptor, got pipe" },
      { "stderr", 2.5, "stderr must be PIPE, DEVNULL, STDOUT, a file or a descriptor, got 2.5" },
      { "umask", -1, "umask must be an integer >= 0" },
      { "process_group", 1.5, "process_group must be an integer >= 0" },
      { "preexec_fn", 1, "preexec_fn: function expected, got number" },
    }
    local takes = {
      Popen = { timeout = false, input = false },
      call = { input = false }, check_call = { input = false },
      check_output = {}, run = {},
    }
    for _, fname in ipairs({ "run", "call", "check_call", "check_output", "Popen" }) do
      for _, case in ipairs(cases) do
        local name, value, msg = case[1], case[2], case[3]
        if takes[fname][name] ~= false then
          it(("makes %s raise naming %s, in both calling forms"):format(fname, name), function()
            local f = subprocess[fname]
            local ok2, err2 = pcall(function() f({ "true" }, { [name] = value }) end)
            local ok1, err1 = pcall(function() f{ "true", [name] = value } end)
            assert.are.same({ false, ("spec/subprocess_spec.lua: bad argument #2 to '%s' (%s)"):format(fname, msg) },
              { ok2, (err2:gsub(":%d+:", ":")) })
            assert.are.same({ false, ("spec/subprocess_spec.lua: bad argument #1 to '%s' (%s)"):format(fname, msg) },
              { ok1, (err1:gsub(":%d+:", ":")) })
          end)
        end
      end
    end

    it("makes check_output raise naming stdout, in both calling forms", function()
      assert.has_error(function() subprocess.check_output({ "true" }, { stdout = PIPE }) end,
        "bad argument #2 to 'check_output' (stdout is not allowed: it is captured)")
      assert.has_error(function() subprocess.check_output{ "true", stdout = PIPE } end,
        "bad argument #1 to 'check_output' (stdout is not allowed: it is captured)")
    end)
  end)

  describe("methods called with '.' instead of ':'", function()
    local p = subprocess.Popen{ "true" }
    p:wait()
    local done = subprocess.run{ "true" }
    local cases = {
      { p, "poll" }, { p, "wait" }, { p, "communicate" }, { p, "send_signal" }, { p, "send_signal", 15 },
      { p, "terminate" }, { p, "kill" }, { done, "check_returncode" },
    }
    for _, case in ipairs(cases) do
      local obj, name, arg = case[1], case[2], case[3]
      local want = ("bad argument #1 to '%s' (%s expected, got %s)")
        :format(name, getmetatable(obj).__name, type(arg))
      it(name .. "(" .. tostring(arg or "") .. ") raises: " .. want, function()
        local ok, err = pcall(function() obj[name](arg) end)
        assert.is_false(ok)
        assert.are.equal(want, (err:gsub("^[^:]+:%d+: ", "")))
        assert.matches("^spec/subprocess_spec%.lua:%d+: ", err) -- the caller's line
      end)
    end
  end)

  describe("misuse raises at the caller's line, naming the function", function()
    local cases = {
      { function() subprocess.run{ "cat", input = "x", stdin = PIPE } end,
        "run: stdin and input may not both be used" },
      { function() subprocess.check_output{ "true", capture_output = true, input = "" } end,
        "bad argument #1 to 'check_output' (unknown option 'capture_output')" },
      { function() subprocess.run{ "true", capture_output = true, stdout = PIPE } end,
        "run: stdout and stderr may not be used with capture_output" },
      { function() subprocess.Popen{ "true" }:communicate("x") end,
        "communicate: cannot send input to a child whose stdin is not a pipe" },
      { function()
          local p = subprocess.Popen{ "true", stdin = PIPE }
          p.stdin:close()
          p:communicate("x")
        end,
        "communicate: cannot send input to a child whose stdin is not a pipe (p.stdin was closed)" },
      { function() subprocess.Popen{ "true" }:kill(true) end,
        "kill: cannot kill the group of a child that does not lead one (use start_new_session or process_group = 0)" },
    }
    for _, case in ipairs(cases) do
      it(case[2], function()
        local ok, err = pcall(case[1])
        assert.is_false(ok)
        assert.are.equal("spec/subprocess_spec.lua:", err:match("^[^:]+:"))
        assert.are.equal(case[2], (err:gsub("^[^:]+:%d+: ", "")))
      end)
    end
  end)

  it("waits with a timeout on systems without pidfd (MPROC_NO_PIDFD=1)", function()
    local go = fifo()
    local out = support.run_lua(([[
      local sp = require "mproc.subprocess"
      local mproc = require "mproc"
      local p = sp.Popen{ "sh", "-c", 'read x < "$0"', %q }
      local t0 = mproc.monotonic()
      local code, err = p:wait(0.1)
      print(code, err, mproc.monotonic() - t0 >= 0.09)
      local f = io.open(%q, "w") f:write("\n") f:close()   -- the child may end now
      print(p:wait(5))
    ]]):format(go, go), { env = "MPROC_NO_PIDFD=1" })
    os.remove(go)
    assert.are.equal("nil\ttimeout\ttrue\n0\n", out)
  end)

  describe("tutorial example 04", function()
    it("prints the commands' output in order with stdout on a pipe", function()
      local out, code = support.run_lua(nil, { path = "examples/tutorial/04_subprocess.lua" })
      assert.are.equal(0, code)
      local lines = support.lines(out)
      assert.are.equal("$ getent passwd root", lines[1])
      assert.matches("^root:", lines[2])
      assert.are.equal("Exit code:\t0", lines[3])
      assert.are.equal("$ sh", lines[4])
      assert.matches("^root:", lines[5])
      assert.are.equal("Exit code:\t0", lines[6])
      assert.are.equal(6, #lines)
    end)

    it("prints nil for a program that cannot start instead of failing at the print", function()
      local dir = support.tmpname() -- a PATH with sh and no getent
      assert.is_true(os.execute(("mkdir %s && ln -s /bin/sh %s/sh"):format(dir, dir)))
      local out, code = support.sh(("PATH=%s \"$(command -v %s)\" examples/tutorial/04_subprocess.lua 2>/dev/null")
        :format(dir, support.LUA))
      os.execute(("rm -r %s"):format(dir))
      assert.are.equal(0, code)
      assert.are.same({ "$ getent passwd root", "Exit code:\tnil", "$ sh", "Exit code:\t127" },
        support.lines(out))
    end)
  end)
end)
