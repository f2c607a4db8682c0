local mproc = require "mproc"
local support = require "support"

local function spawn(f, ...)
  return mproc.Process(f, table.pack(...)):start()
end

-- How many chunks of cells (each a descriptor, on Linux) this process has.
local function cell_chunks()
  local n = 0
  for _ in support.fd_listing():gmatch("mproc%-cells") do n = n + 1 end
  return n
end

describe("Value", function()
  -- typecode, smallest, largest (as Lua sees them)
  local ranges = {
    { "b", -128, 127 }, { "B", 0, 255 }, { "h", -32768, 32767 }, { "H", 0, 65535 },
    { "i", -2147483648, 2147483647 }, { "I", 0, 4294967295 },
    { "q", math.mininteger, math.maxinteger }, { "Q", 0, math.maxinteger },
  }
  for _, r in ipairs(ranges) do
    local tc, lo, hi = r[1], r[2], r[3]
    it(("keeps %d..%d for typecode '%s' and refuses what is outside"):format(lo, hi, tc), function()
      local v = mproc.Value(tc, lo)
      assert.are.equal(lo, v.value)
      v.value = hi
      assert.are.equal(hi, v.value)
      assert.are.equal(tc, v.typecode)
      if lo > math.mininteger then
        assert.has_error(function() v.value = lo - 1 end,
          ("Value: %d is out of range for typecode '%s' (%d..%d)"):format(lo - 1, tc, lo, hi))
      end
      if hi < math.maxinteger then
        assert.has_error(function() v.value = hi + 1 end)
      end
      assert.are.equal(hi, v.value)
    end)
  end

  it("keeps floats and doubles, and refuses a float beyond 'f'", function()
    local f, d = mproc.Value("f", 0.5), mproc.Value("d", 1 / 3)
    assert.are.equal(0.5, f.value)
    assert.are.equal(1 / 3, d.value)
    f.value = 1e38
    assert.is_true(math.abs(f.value - 1e38) < 1e32)
    assert.has_error(function() f.value = 1e39 end)
    f.value = math.huge
    assert.are.equal(math.huge, f.value)
    assert.has_error(function() d.value = "1" end, "Value: number expected, got string")
  end)

  it("sizes 'l' and 'L' as the C long", function()
    local v = mproc.Value("l", -5)
    assert.are.equal(-5, v.value)
    assert.has_error(function() mproc.Value("L", -1) end)
  end)

  it("refuses floats with a fraction in integer typecodes, and takes integral ones", function()
    local v = mproc.Value("i")
    assert.are.equal(0, v.value)
    assert.has_error(function() v.value = 1.5 end, "Value: 1.5 has no integer representation (typecode 'i')")
    v.value = 2.0
    assert.are.equal(2, v.value)
    assert.are.equal("integer", math.type(v.value))
  end)

  it("blames the caller's line for an initial value it refuses", function()
    for _, make in ipairs({
      function() local v = mproc.Value("i", 1.5); return v end,
      function() local a = mproc.Array("B", { 1, 300 }); return a end,
      function() local v = mproc.Value("d", "x"); return v end,
    }) do
      local ok, err = pcall(make)
      assert.is_false(ok)
      assert.matches("sharedctypes_spec%.lua:" .. debug.getinfo(make, "S").linedefined .. ": ", err)
    end
  end)

  it("is shared with child processes", function()
    local v = mproc.Value("d", 0)
    local p = spawn(function() v.value = 2.5 end)
    assert.are.equal(0, p:join(10))
    assert.are.equal(2.5, v.value)
  end)

  it("has an RLock by default, the given lock, or none", function()
    local v = mproc.Value("i", 1)
    assert.are.equal("mproc.RLock", getmetatable(v:get_lock()).__name)
    assert.are.equal(v:get_lock(), v:get_lock())
    local lock = mproc.Lock()
    assert.are.equal(lock, mproc.Value("i", 1, lock):get_lock())
    assert.has_error(function() mproc.Value("i", 1, false):get_lock() end,
      "get_lock: this Value was made with lock = false")
  end)

  it("gives a lock with guard() in a script that never made a Lock itself", function()
    -- the guard is the Lua layer's: get_lock():guard() is the porting
    -- guide's `with v.get_lock():`, and a script may use no mproc.Lock
    local out = support.run_lua([[
      local mproc = require "mproc"
      local v, a = mproc.Value("i", 1), mproc.Array("i", 2)
      do local _ <close> = v:get_lock():guard(); v.value = v.value + 1 end
      do local _ <close> = a:get_lock():guard(); a[1] = 5 end
      print(v.value, a[1])
    ]])
    assert.are.equal("2\t5\n", out)
  end)

  it("has no other fields to set", function()
    local v = mproc.Value("i", 1)
    assert.has_error(function() v.other = 1 end, "cannot set field 'other' of a Value (only 'value')")
    assert.are.equal("mproc.Value ('i', 1)", tostring(v))
  end)
end)

describe("Array", function()
  it("is 1-based with #, ipairs and totable", function()
    local a = mproc.Array("i", { 10, 20, 30 })
    assert.are.equal(3, #a)
    assert.are.equal(10, a[1])
    assert.are.equal(30, a[3])
    local seen = {}
    for i, x in ipairs(a) do seen[i] = x end
    assert.are.same({ 10, 20, 30 }, seen)
    a[2] = -7
    assert.are.same({ 10, -7, 30 }, a:totable())
    assert.are.equal("i", a.typecode)
    assert.are.equal("mproc.Array ('i', 3 elements)", tostring(a))
  end)

  it("starts zeroed when made by size, and may be empty", function()
    assert.are.same({ 0, 0, 0, 0 }, mproc.Array("h", 4):totable())
    assert.are.same({ 0.0, 0.0 }, mproc.Array("d", 2):totable())
    local empty = mproc.Array("b", 0)
    assert.are.equal(0, #empty)
    assert.are.same({}, empty:totable())
  end)

  -- index, what reading it gives ("raises" or nil)
  local reads = { { 0, "raises" }, { -1, "raises" }, { 4, nil }, { 5, "raises" }, { 1.5, "raises" }, { "x", nil } }
  for _, r in ipairs(reads) do
    it("reads index " .. tostring(r[1]) .. (r[2] and " with an error" or " as nil"), function()
      local a = mproc.Array("i", 3)
      if r[2] then
        assert.has_error(function() return a[r[1]] end)
      else
        assert.is_nil(a[r[1]])
      end
    end)
  end

  it("raises clear errors for out-of-range indexes and values on writes", function()
    local a = mproc.Array("B", 3)
    assert.has_error(function() a[0] = 1 end, "Array index 0 out of range (1..3)")
    assert.has_error(function() a[4] = 1 end, "Array index 4 out of range (1..3)")
    assert.has_error(function() a.x = 1 end, "Array index must be an integer, got x")
    assert.has_error(function() a[1] = 256 end, "Array: 256 is out of range for typecode 'B' (0..255)")
    assert.has_error(function() mproc.Array("b", { 1, 200 }) end,
      "Array: 200 is out of range for typecode 'b' (-128..127)")
  end)

  it("is shared with child processes, large ones too", function()
    local a = mproc.Array("d", 100000)
    local p = spawn(function()
      for i = 1, #a, 1000 do a[i] = i / 2 end
      a[#a] = -1
    end)
    assert.are.equal(0, p:join(10))
    assert.are.equal(0.5, a[1])
    assert.are.equal(500.5, a[1001])
    assert.are.equal(-1, a[100000])
  end)

  it("reads totable under its lock unless this process holds it", function()
    local a = mproc.Array("i", { 1, 2 }, mproc.Lock())
    local lock = a:get_lock()
    lock:acquire()
    assert.are.same({ 1, 2 }, a:totable())
    lock:release()
    assert.are.same({ 1, 2 }, a:totable())
    assert.is_false(lock:held())
  end)

  it("travels by token with its lock", function()
    local a = mproc.Array("i", { 5, 6 })
    local mt = getmetatable(a)
    assert.are.equal(mt, debug.getregistry()["mproc.Array"])
    local token = mt.__mproc_send(a)
    local p = spawn(function()
      local b = mt.__mproc_recv(token)
      local _ <close> = b:get_lock():guard()
      b[1] = b[1] + b[2]
    end)
    assert.are.equal(0, p:join(10))
    assert.are.equal(11, a[1])
    local v = mproc.Value("q", 9)
    local vm = getmetatable(v)
    assert.are.equal(9, vm.__mproc_recv(vm.__mproc_send(v)).value)
    assert.has_error(function() mt.__mproc_recv("12:1") end)
    assert.has_error(function() vm.__mproc_recv(mt.__mproc_send(a)) end)
  end)
end)

describe("objects made after a fork", function()
  -- Parent and child each map fresh shared memory after the fork, usually
  -- at the same address: a token from the other side must never resolve
  -- to an unrelated object of the receiver's own. Once the child has
  -- ended, no process holds its object any more.
  -- A fresh interpreter, so that both sides map their first chunks.
  local SCRIPT = [[
    local mproc = require "mproc"
    local make = load("return " .. arg[1], "=make", "t", { mproc = mproc })
    local path = os.tmpname()
    local p = mproc.Process(function()
      local f = assert(io.open(path, "wb"))
      f:write(mproc.dumps(make()))
      f:close()
    end):start()
    local mine = make()
    assert(p:join(10) == 0)
    local f = assert(io.open(path, "rb"))
    local got, err = mproc.loads(f:read("a"))
    f:close()
    os.remove(path)
    print(got and ("resolved to " .. tostring(got) .. " beside ours " .. tostring(mine)) or err)
  ]]
  local makers = {
    'mproc.Value("i", 42)', 'mproc.Array("d", { 1, 2 })', "mproc.Lock()",
    'mproc.Array("b", 100000)', "mproc.Event()", "mproc.Condition()", "mproc.Semaphore(3)",
  }
  for _, make in ipairs(makers) do
    it("are refused, not aliased, when a child's " .. make .. " reaches the parent after it ended", function()
      local path = support.script(SCRIPT)
      local out, code = support.run_lua(nil, { path = path, args = " " .. support.shell_quote(make) })
      os.remove(path)
      assert.are.equal(0, code, out)
      assert.matches(support.PORTABLE and "it was not inherited by this process"
        or "no live process holds it any more", out, 1, true)
    end)
  end

  -- The parent carves the object from a chunk the child inherited, but
  -- its lock comes from a chunk mapped after the fork, at the address of
  -- the child's own Lock: the child must not take that Lock for it, but
  -- attach the parent's (Linux) or refuse.
  local LOCK_SCRIPT = [[
    local mproc = require "mproc"
    local q = mproc.Queue()
    local pre, make = load("return " .. arg[1], "=make", "t", { mproc = mproc })()
    local p = mproc.Process(function()
      local mine = mproc.Lock()
      local ok, got = pcall(q.get, q, true, 10)
      if not ok then print(got:find("its lock was not inherited", 1, true) and "refused" or got) return end
      local lock = got:get_lock()
      assert(lock:acquire(false))
      print(mine:held() and "aliased: " .. tostring(lock) .. " is our " .. tostring(mine)
        or "a lock of its own")
    end):start()
    q:put(make(mproc.Lock()))
    assert(p:join(10) == 0)
    local _ = pre
  ]]
  local with_lock = {
    { "Condition", 'mproc.Array("b", 3000, false), function(l) return mproc.Condition(l) end' },
    { "Value", 'mproc.Value("i", 0, false), function(l) return mproc.Value("i", 1, l) end' },
    { "Array", 'mproc.Array("i", 2, false), function(l) return mproc.Array("i", 2, l) end' },
  }
  for _, case in ipairs(with_lock) do
    it("never give a received " .. case[1] .. " the receiver's own Lock", function()
      local path = support.script(LOCK_SCRIPT)
      local out, code = support.run_lua(nil, { path = path, args = " " .. support.shell_quote(case[2]) })
      os.remove(path)
      assert.are.equal(0, code, out)
      assert.are.equal(support.PORTABLE and "refused\n" or "a lock of its own\n", out)
    end)
  end

  it("reach the parent when a Pool task returns a Value it made (Linux)", function()
    local out, code = support.run_lua([[
      local mproc = require "mproc"
      local pool <close> = mproc.Pool(1)
      local counter = mproc.Value("i", 0)
      local ok, v = pcall(pool.apply, pool, function()
        mproc.KEEP = mproc.Value("i", 42)
        return mproc.KEEP
      end)
      print(ok, ok and v.value or v, counter.value)
    ]])
    assert.are.equal(0, code, out)
    if support.PORTABLE then
      assert.matches("^false\t.*cannot receive a Value: it was not inherited by this process.*\t0\n$", out)
    else
      assert.are.equal("true\t42\t0\n", out)
    end
  end)

  it("still travel within the process that made them", function()
    local p = spawn(function()
      local w = mproc.Value("i", 1)
      local back = assert(mproc.loads(mproc.dumps(w)))
      back.value = 3
      os.exit(w.value == 3 and 0 or 1)
    end)
    assert.are.equal(0, p:join(10))
  end)
end)

describe("Value and Array", function()
  local bad = {
    { "Value with typecode 'z'", function() mproc.Value("z") end, "bad typecode 'z'" },
    { "Value with typecode 'ii'", function() mproc.Value("ii") end, "bad typecode 'ii'" },
    { "Value with no typecode", function() mproc.Value() end, "bad typecode nil" },
    { "Value with a string init", function() mproc.Value("i", "1") end, "number expected, got string" },
    { "Value with a bad lock", function() mproc.Value("i", 1, 5) end, "lock must be a boolean" },
    { "Array with typecode 'c'", function() mproc.Array("c", 3) end, "bad typecode 'c'" },
    { "Array with a negative size", function() mproc.Array("i", -1) end, "size must be in 0..2^40" },
    { "Array with a string size", function() mproc.Array("i", "3") end, "size or table expected" },
    { "Array with a bad element", function() mproc.Array("i", { 1, "x" }) end, "integer expected, got string" },
    { "Array with a bad lock", function() mproc.Array("i", 1, {}) end, "lock must be a boolean" },
  }
  for _, case in ipairs(bad) do
    it("raise for " .. case[1], function()
      local ok, err = pcall(case[2])
      assert.is_false(ok)
      assert.matches(case[3], err, 1, true)
    end)
  end

  -- Chunks of cells are kept for the process's life, each with its
  -- descriptor: a few more may be there, as many as the garbage
  -- collector let live objects fill; a mapping of its own goes with its
  -- object, fork or not.
  it("leave no descriptor or child behind", function()
    collectgarbage(); collectgarbage()
    local fds, chunks, kids = support.fd_count(), cell_chunks(), #support.children()
    for i = 1, 200 do
      local v, a = mproc.Value("i", i), mproc.Array("d", i * 10)
      a[1] = v.value
    end
    spawn(function() end):join(10)
    collectgarbage(); collectgarbage()
    local more = cell_chunks() - chunks
    assert.is_true(more <= 8, more .. " chunks more")
    assert.are.equal(fds + more, support.fd_count())
    assert.are.equal(kids, #support.children())
  end)
end)

describe("Value and Array made at any time", function()
  -- Reaching memory a process did not inherit takes /proc/<pid>/fd
  -- (Linux); the portable build says it cannot.
  local linux_it = support.PORTABLE and function() end or it

  local fresh = support.fresh_cell

  if support.PORTABLE then
    it("are refused, with the reason, where /proc cannot reach them", function()
      local pool <close> = mproc.Pool(1)
      pool:map(function() end, { 1 })
      local v = fresh(function() return mproc.Value("i", 1) end)
      local ok, err = pcall(pool.apply, pool, function(x) return x.value end, { v })
      assert.is_false(ok)
      assert.matches("cannot receive a Value: it was not inherited by this process", err, 1, true)
    end)
  end

  linux_it("reach Pool workers started before them: the exact total under the Value's lock", function()
    local pool <close> = mproc.Pool(2)
    pool:map(function() end, { 1, 2 })          -- the workers run
    local v = fresh(function() return mproc.Value("q", 0) end)
    local a = fresh(function() return mproc.Array("i", 4) end)
    local big = mproc.Array("d", 10000)         -- a mapping of its own
    local pids = pool:map(function(x)
      for _ = 1, 500 do
        local _ <close> = v:get_lock():guard()
        v.value = v.value + 1                   -- not atomic: the lock makes it so
      end
      a[x] = x * 10
      big[x * 1000] = x / 2
      return mproc.getpid()
    end, { 1, 2, 3, 4 })
    assert.are.equal(2000, v.value)
    assert.are.same({ 10, 20, 30, 40 }, { a[1], a[2], a[3], a[4] })
    assert.are.equal(2, big[4000])
    for _, pid in ipairs(pids) do assert.are_not.equal(mproc.getpid(), pid) end
    -- the Value as an upvalue of the task function, and with no lock
    local bare = mproc.Value("i", 5, false)
    assert.are.equal(5, pool:apply(function() return bare.value end))
  end)

  linux_it("travel from a worker to the parent", function()
    local pool <close> = mproc.Pool(1)
    local v, a = pool:apply(function()
      local keep = { mproc.Value("i", 7), mproc.Array("d", { 1.5, 2.5 }) }
      mproc.KEEP = keep       -- the worker keeps them while the parent maps them
      return keep[1], keep[2]
    end)
    assert.are.equal(7, v.value)
    assert.are.equal(2.5, a[2])
    v.value = 8
    do local _ <close> = v:get_lock():guard() end
    assert.are.equal(8, pool:apply(function() return mproc.KEEP[1].value end))
  end)

  linux_it("travel from one child to a sibling through a Queue", function()
    local q, back, done = mproc.Queue(), mproc.Queue(), mproc.Event()
    local a = mproc.Process(function()
      q:put(mproc.Array("i", { 1, 2, 3 }))
      done:wait(30)           -- keep it until the sibling has it
    end):start()
    local b = mproc.Process(function()
      local arr = q:get(true, 10)
      arr[3] = 30
      back:put(arr)           -- b's own handle goes on: b still holds it
      back:put(arr[1] + arr[2] + arr[3])
    end):start()
    local arr, sum = back:get(true, 10), back:get(true, 10)
    done:set()                -- a ends even when b failed
    assert.are.equal(0, b:join(30))
    assert.are.equal(0, a:join(30))
    assert.are.equal(33, sum)
    assert.are.equal(30, arr[3])
  end)

  -- Each chunk and each mapping of its own keeps a descriptor: past the
  -- limit, objects are still made (anonymous, for forked children only).
  it("are still made when descriptors run out, and reach forked children", function()
    local out, code = support.run_lua([[
      local mproc = require "mproc"
      local keep = {}
      for i = 1, 200 do keep[i] = mproc.Array("d", 1000); keep[i][1] = i end
      local n = #keep
      for i = 1, 20 do keep[i] = false end   -- gives descriptors back, for the Process
      collectgarbage(); collectgarbage()
      local p = mproc.Process(function() os.exit(keep[200][1] == 200 and 0 or 1) end):start()
      print(n, p:join(10))
    ]], { env = "ulimit -n 64;" })
    assert.are.equal(0, code, out)
    assert.are.equal("200\t0\n", out)
  end)

  linux_it("say so when no live process holds them any more", function()
    local q = mproc.Queue()
    assert.are.equal(0, mproc.Process(function() q:put(mproc.Value("i", 1)) end):start():join(10))
    local ok, err = pcall(q.get, q, true, 10)
    assert.is_false(ok)
    assert.matches("cannot receive a Value: no live process holds it any more %(process %d+ "
      .. "sent it, process %d+ made it%)", err)
  end)
end)

-- A received Value or Array is another process's memory: its length and
-- typecode are checked against its cell, its cell against its region,
-- before any element is read. Each case forges a 4 KiB region file with a
-- valid record and an Array cell, and receives it in a fresh interpreter
-- (a defect there is a crash, not this suite's).
describe("a received Array whose cell lies", function()
  local linux_it = support.PORTABLE and function() end or it
  local FORGE = [[
    local mproc = require "mproc"
    local core = require "mproc.core"
    local size, tc, n, path = %d, %d, %d, %q
    local cell = string.pack("<I4I2BBI4I4I8I8I8", 0x6d70636c, 8, 255, 0, 1, 0, 0, size, 0)
    local body = string.pack("<I4I4I8", tc, 0, n)
    local origin = 0x1234567
    local rec = string.pack("<I4I4I8I8i4i4", 0x6d707267, 255, origin, 4096, 0, 0)
    local f = assert(io.open(path, "w+b"))
    f:write(cell, body, string.rep("\0", 4096 - 64 - #cell - #body), rec,
            string.rep("\0", 64 - #rec))
    f:flush()
    local p = io.popen("stat -L -c '%%d %%i' " .. path)
    local dev, ino = p:read("n", "n")
    p:close()
    local pid = mproc.getpid()
    local token = string.format("%%d:%%d:%%d:%%d:%%x:%%x:%%x:0:1", pid, core.fileno(f), pid,
                                core.fileno(f), dev, ino, origin)
    local ok, a = pcall(debug.getregistry()["mproc.Array"].__mproc_recv, token)
    os.remove(path)
    if ok then print("received", #a, a[#a]) else print(a) end
  ]]
  local cases = {
    { "claims 2^40 elements", 56, 11, 1 << 40, "its cell is malformed (typecode 11, 1099511627776 elements" },
    { "has an unknown typecode", 64, 99, 1, "its cell is malformed (typecode 99" },
    { "claims more bytes than its region", 56 + 8000, 11, 1000, "its cell claims 8056 bytes, more than its region holds" },
    { "has more elements than its bytes", 56 + 80, 11, 11, "its cell is malformed (typecode 11, 11 elements" },
  }
  for _, case in ipairs(cases) do
    linux_it("is refused when it " .. case[1], function()
      local out, code = support.run_lua(FORGE:format(case[2], case[3], case[4], support.tmpname()))
      assert.are.equal(0, code, out)
      assert.matches("cannot receive an Array: " .. case[5], out, 1, true)
    end)
  end

  linux_it("is received when it is whole (the forgery is sound)", function()
    local out, code = support.run_lua(FORGE:format(56 + 80, 11, 10, support.tmpname()))
    assert.are.equal(0, code, out)
    assert.are.equal("received\t10\t0.0\n", out)
  end)
end)

-- An Array or Value bigger than a chunk's largest class has a mapping and
-- a descriptor of its own, which go with this process's last handle on
-- it: made here, sent, inherited or received alike. (Chunks of small
-- cells stay: many cells share one.)
describe("an Array with a mapping of its own", function()
  local linux_it = support.PORTABLE and function() end or it

  it("leaves no descriptor behind once dropped, sent or not", function()
    collectgarbage(); collectgarbage()
    local fds = support.fd_count()
    for _ = 1, 100 do
      local a = mproc.Array("d", 1000)
      mproc.dumps(a)           -- sent: a token made
      local v = mproc.Value("d", 1)
      mproc.dumps(v)
    end
    collectgarbage(); collectgarbage()
    assert.is_true(support.fd_count() - fds <= 2, (support.fd_count() - fds) .. " more")
  end)

  linux_it("leaves no descriptor behind in a Pool worker or its parent (200 tasks, 128 descriptors)", function()
    local out, code = support.run_lua([[
      local mproc = require "mproc"
      local nfds = require("support").fd_count   -- io.popen's own pipe would race the listing
      local pool = mproc.Pool(1)
      local w0, p0 = pool:apply(nfds), nfds()
      for i = 1, 200 do
        local ok, err = pcall(pool.apply, pool, function(a) return #a end, { mproc.Array("d", 1000) })
        if not ok then print("task " .. i .. " failed: " .. err) break end
        collectgarbage()
      end
      local w1, p1 = pool:apply(nfds), nfds()
      pool:close(); pool:join()
      print(p1 - p0 <= 4, w1 - w0 <= 70, p1 - p0, w1 - w0)
    ]], { env = "ulimit -n 128;" })
    assert.are.equal(0, code, out)
    assert.matches("^true\ttrue\t", out)
  end)

  -- Stored in a container, it is kept by the process that stored it (as
  -- the small ones are by their chunk), so its handle may go.
  linux_it("stored in a Dict is read after every handle is gone", function()
    local d = mproc.Dict()
    local big = mproc.Array("d", 1000)
    big[1000] = 2.5
    d.a = big
    collectgarbage(); collectgarbage()
    assert.are.equal(2.5, d.a[1000])
    big = nil   -- luacheck: ignore 311
    collectgarbage(); collectgarbage()
    assert.are.equal(2.5, d.a[1000])
    local pool <close> = mproc.Pool(1)      -- and by a process started after
    assert.are.equal(2.5, pool:apply(function() return d.a[1000] end))
  end)

  -- Cell mappings and descriptors of this process: on Linux the mappings of
  -- cell memfds (counting every line of /proc/self/maps is fragile: an
  -- unmapping may merge or split the neighbours, as under ASan); in the
  -- portable build every mapping (anonymous there, and no descriptor).
  local function held()
    local n = 0
    for line in io.lines("/proc/self/maps") do
      if support.PORTABLE or line:find("mproc-cells", 1, true) then n = n + 1 end
    end
    return n, support.fd_count()
  end

  it("goes in a forked child when the child drops it, and stays in the parent", function()
    local lock
    collectgarbage(); collectgarbage()   -- earlier garbage goes now, not in the child
    do
      local a = mproc.Array("i", 5000)
      lock = a:get_lock()
      a[5000] = 7
      local q = mproc.Queue()
      local p = spawn(function()
        local maps, fds = held()
        a = nil
        collectgarbage(); collectgarbage()
        local maps2, fds2 = held()
        q:put({ maps - maps2, fds - fds2 })
      end)
      local gone = q:get(true, 10)
      assert.are.equal(0, p:join(10))
      assert.are.same({ 1, support.PORTABLE and 0 or 1 }, gone)
      assert.are.equal(7, a[5000])
    end
    collectgarbage(); collectgarbage()
    assert.is_true(lock:acquire(true, 1))     -- the lock outlives the Array
    lock:release()
  end)
end)
