-- The tree-wide registry of holders (src/holders.c): an object whose
-- sender and maker have both ended reaches a receiver through any live
-- process that still holds it. Linux only (/proc/<pid>/fd).
local mproc = require "mproc"
local core = require "mproc.core"
local support = require "support"

local linux_it = support.PORTABLE and function() end or it

-- Each family: how a child makes one, and what a receiver reads from it.
local kinds = {
  Dict = {
    make = function() return mproc.Dict { x = 42 } end,
    read = function(d) return d.x end,
  },
  Queue = {
    make = function()
      local q = mproc.Queue()
      q:put(42)
      return q
    end,
    read = function(q) return q:get(true, 5) end,
  },
  Value = {
    make = function() return mproc.Value("i", 42) end,
    read = function(v) return v.value end,
  },
  Lock = {
    make = function() return mproc.Lock() end,
    read = function(l)
      if not l:acquire(true, 5) then return "not acquired" end
      l:release()
      return 42
    end,
  },
}

-- A few descriptors more in the maker than in its parent, so that the
-- parent's number for the object (taken when it attaches it) is not the
-- maker's: the token's numbers must not find it there by chance.
local function pad_descriptors()
  local pad = {}
  for i = 1, 3 do pad[i] = assert(io.open("/dev/null")) end
  return pad
end

-- Waits for pid to end (it is an orphan: someone else reaps it).
local function ended(pid)
  return support.eventually(function() return support.pid_ended(pid) end, 10)
end

describe("an object whose sender and maker have ended", function()
  for name, kind in pairs(kinds) do
    linux_it("reaches a Pool worker through the parent that attached it (" .. name .. ")", function()
      local q, got = mproc.Queue(), mproc.Event()
      local pool <close> = mproc.Pool(1)
      pool:apply(function() end)                   -- the worker runs
      local a = mproc.Process(function()
        local pad = pad_descriptors()
        local obj = kind.make()
        q:put(obj)
        q:put(obj)
        got:wait(10)                                -- until the parent has it
        assert(pad)
      end):start()
      local ok, mine = pcall(q.get, q, true, 10)
      got:set()
      local code = a:join(10)
      if code == nil then a:kill(); a:join() end
      assert.is_true(ok, mine)
      assert.are.equal(0, code)
      assert.are.equal(42, pool:apply(function() return kind.read(q:get(true, 5)) end))
      assert.is_truthy(mine)
    end)

    linux_it("reaches the parent through a grandchild that inherited it (" .. name .. ")", function()
      local q, release = mproc.Queue(), mproc.Event()
      local a = mproc.Process(function()
        local pad = pad_descriptors()
        local obj = kind.make()
        local g = mproc.Process(function() release:wait(20) end):start()
        q:put(g.pid)
        q:put(obj)
        assert(pad)
        -- ends now: at its exit, a Process waits for its children (as Python's)
        core.kill(mproc.getpid(), 9)
      end):start()
      local code = a:join(10)
      if code == nil then a:kill(); a:join() end
      local gpid = q:get(true, 5)
      local ok, obj = pcall(q.get, q, true, 5)
      local read_ok, value = pcall(function() return ok and kind.read(obj) end)
      release:set()                                 -- the grandchild ends either way
      assert.is_true(read_ok, value)
      assert.are.equal(-9, code)
      assert.is_true(ok, obj)
      assert.are.equal(42, value)
      assert.is_true(ended(gpid))
    end)

    linux_it("is refused, truthfully, when no live process holds it (" .. name .. ")", function()
      local q = mproc.Queue()
      local a = mproc.Process(function()
        local pad = pad_descriptors()
        q:put(kind.make())
        assert(pad)
      end):start()
      local code = a:join(10)
      if code == nil then a:kill(); a:join() end
      assert.are.equal(0, code)
      local ok, err = pcall(q.get, q, true, 5)
      assert.is_false(ok)
      assert.matches(("cannot receive a %s: no live process holds it any more (process %d sent it, "
        .. "process %d made it)"):format(name, a.pid, a.pid), err, 1, true)
    end)
  end
end)

-- A child out of descriptors receives a Dict, a Queue and an Array its
-- parent (their maker and sender, alive) holds: it is told why it cannot
-- have them.
local OUT_OF_DESCRIPTORS = [[
  local mproc = require "mproc"
  -- the received objects' Lua layers, loaded while files can be opened
  require "mproc.managers"
  require "mproc.sync"
  require "mproc.sharedctypes"
  local q = mproc.Queue()
  local p = mproc.Process(function()
    local files = {}
    while true do
      local f = io.open("/dev/null")
      if not f then break end
      files[#files + 1] = f
    end
    for _ = 1, 3 do print(select(2, pcall(q.get, q, true, 10))) end
    io.stdout:flush()
  end):start()
  local d, q2 = mproc.Dict { x = 1 }, mproc.Queue()
  q:put(d)
  q:put(q2)
  q:put(mproc.Array("i", 3))
  print(p:join(30), d.x)
]]

describe("a receiver out of descriptors", function()
  linux_it("is told so, not that no live process holds the object (Dict, Queue, Array)", function()
    local out, code = support.run_lua(OUT_OF_DESCRIPTORS, { env = "ulimit -n 64; timeout 60" })
    assert.are.equal(0, code, out)
    local lines = support.lines(out)
    assert.are.same({
      "cannot decode a queue item: cannot receive a Dict: cannot open it: Too many open files",
      "cannot decode a queue item: cannot receive a Queue: cannot open it: Too many open files",
      "cannot decode a queue item: cannot receive an Array: cannot open it: Too many open files",
      "0\t1",
    }, lines)
  end)
end)

-- A Dict whose only holder (its maker and sender) is another user's
-- process: the receiver, run as nobody, is told that process is out of its
-- reach. Needs root (to be both users) and setpriv.
describe("a holder out of our reach", function()
  local can = support.sh("id -u"):match("^0\n") and support.sh("command -v setpriv") ~= ""
  linux_it("is named, not reported gone (another user)", function()
    if not can then pending("needs root and setpriv") return end
    local holder = assert(io.popen("exec " .. support.LUA .. [[ -e '
      local mproc = require "mproc"; local d = mproc.Dict { x = 1 }
      io.write(mproc.dumps(d):match("%x+:%x+:%x+:%x+:%x+:%x+:%x+"), "\n"); io.flush()
      mproc.sleep(30)' </dev/null]]))
    local token = holder:read("l")
    local pid = tonumber(token:match("^%x+"), 16)
    -- nobody may not reach this checkout (a clone in a mode-700 directory):
    -- it loads mproc from a copy in a directory of its own that it can read
    local dir = support.sh("mktemp -d"):match("[^\n]+")
    local core_so = package.searchpath("mproc.core", package.cpath)
    local layer = package.searchpath("mproc", package.path):match("^(.*)/init%.lua$")
    support.sh(("chmod 755 %s && cp -r %s %s/mproc && cp %s %s/mproc/core.so"):format(
      dir, support.shell_quote(layer), dir, support.shell_quote(core_so), dir))
    local out = support.sh(("cd %s && LUA_PATH_5_4='./?.lua;./?/init.lua' LUA_CPATH_5_4='./?.so' "):format(dir)
      .. "setpriv --reuid=65534 --regid=65534 --clear-groups " .. support.LUA
      .. [[ -e 'require "mproc"
        print(select(2, pcall(debug.getregistry()["mproc.Dict"].__mproc_recv, "]] .. token
      .. [[")))']], true)
    support.sh("rm -rf " .. dir)
    core.kill(pid, 9)
    holder:close()
    assert.are.equal(("cannot receive a Dict: process %d holds it but cannot be reached "
      .. "(another user, or not dumpable)\n"):format(pid), out)
  end)
end)

-- Processes that make and drop objects (each one adds an entry and clears
-- it) are SIGKILLed at random instants; afterwards an object whose sender
-- and maker ended still reaches a worker through the parent, and every
-- entry the killed ones left is freed by a reclaim (none blocks reuse).
local TRIALS = [[
  local mproc = require "mproc"
  local core = require "mproc.core"
  local pool <close> = mproc.Pool(1)
  pool:apply(function() end)
  local q, got = mproc.Queue(), mproc.Event()
  local keep = {}
  local function step(_, i)
    keep[i %% 3] = { mproc.Dict { i = i }, mproc.Queue(), mproc.Array("b", 5000) }
    if i %% 8 == 0 then collectgarbage() end
  end
  local stalls = require("kill_trials").run(step, %d)
  local dead = core.holders_dead()
  core.holders_reclaim()
  local after = core.holders_dead()
  local a = mproc.Process(function()
    local pad = { io.open("/dev/null"), io.open("/dev/null"), io.open("/dev/null") }
    local d = mproc.Dict { x = 42 }
    q:put(d)
    q:put(d)
    got:wait(10)
    assert(pad)
  end):start()
  local mine = q:get(true, 10)
  got:set()
  assert(a:join(10) == 0)
  local seen = pool:apply(function() return q:get(true, 5).x end)
  print("stalls " .. stalls, "left " .. tostring(dead > 0), "after " .. after,
        "reached " .. tostring(seen), mine.x)
]]

describe("the registry of holders under SIGKILL at random instants", function()
  linux_it("frees what killed processes left, and still finds a live holder", function()
    local out = support.run_lua(TRIALS:format(40), { env = "timeout 120", stderr = false })
    assert.are.equal("stalls 0\tleft true\tafter 0\treached 42\t42\n", out)
  end)
end)

describe("core.holders_dead and core.holders_reclaim", function()
  it("are counts (0 where there is no registry)", function()
    assert.are.equal("integer", math.type(core.holders_dead()))
    assert.are.equal("integer", math.type(core.holders_reclaim()))
    if support.PORTABLE then assert.are.equal(0, core.holders_dead()) end
  end)
end)

-- A child's _exit skips the Lua state's close, where its objects would
-- drop their entries: the exit hook clears them, so that a child ending
-- leaves none for a full table's reclaim.
describe("the registry of holders when children end", function()
  local endings = {
    { "return from their target", function() return 0 end },
    { "call os.exit", function() os.exit(0) end },
  }
  for _, ending in ipairs(endings) do
    linux_it("keeps no entry of children that " .. ending[1], function()
      core.holders_reclaim()                 -- what earlier specs' kills left
      local before = core.holders_dead()
      for _ = 1, 5 do
        local p = mproc.Process(function()
          local keep = { mproc.Dict { x = 1 }, mproc.Lock(), mproc.Queue(), mproc.Array("d", 1000) }
          mproc.dumps(keep[2])
          return ending[2]()
        end):start()
        assert.are.equal(0, p:join(30))
      end
      assert.are.equal(before, core.holders_dead())
    end)
  end
end)
