local mproc = require "mproc"
local support = require "support"

describe("Pipe", function()
  it("returns two duplex Connections that carry frames of bytes both ways", function()
    local a, b = mproc.Pipe()
    assert.are.equal("mproc.Connection", getmetatable(a).__name)
    for _, s in ipairs { "", "x", "\0\1\2", string.rep("long ", 10000) } do
      assert.is_true(a:send_bytes(s))
      assert.are.equal(s, b:recv_bytes())
      assert.is_true(b:send_bytes(s))
      assert.are.equal(s, a:recv_bytes())
    end
    a:close()
    b:close()
  end)

  it("send/recv carry values through the codec, nil included", function()
    local a, b = mproc.Pipe()
    for _, v in ipairs { 1, 2.5, "s", true, false, { 1, { x = "y" } }, math.mininteger } do
      assert.is_true(a:send(v))
      assert.are.same(v, b:recv())
    end
    a:send(nil)
    local got = table.pack(b:recv())
    assert.are.same({ n = 1 }, got)
    assert.has_error(function() a:send(coroutine.create(print)) end)
    assert.is_false(b:poll())
    a:send("still fine")
    assert.are.equal("still fine", b:recv())
  end)

  it("a Connection travels to a process that inherited it, through a Queue", function()
    local a, b = mproc.Pipe()
    local q = mproc.Queue()
    assert.are.equal(b, mproc.loads(mproc.dumps(b)))
    local p = mproc.Process(function()
      local conn = q:get(true, 10)
      conn:send({ from = "child" })
    end):start()
    q:put(a)
    assert.are.same({ from = "child" }, b:recv())
    assert.are.equal(0, p:join())
  end)

  it("one-way: the first end only receives, the second only sends", function()
    local r, w = mproc.Pipe(false)
    assert.is_true(w:send_bytes("one"))
    assert.are.equal("one", r:recv_bytes())
    assert.has_error(function() r:send_bytes("x") end)
    assert.has_error(function() w:recv_bytes() end)
    assert.is_false(r:writable())
    assert.is_false(w:readable())
  end)

  it("send_bytes(s, offset, size) sends that slice, as Python's", function()
    local a, b = mproc.Pipe()
    assert.is_true(a:send_bytes("hello world", 6, 5))
    assert.are.equal("world", b:recv_bytes())
    assert.is_true(a:send_bytes("hello world", 6))
    assert.are.equal("world", b:recv_bytes())
    assert.is_true(a:send_bytes("hello", 5))
    assert.are.equal("", b:recv_bytes())
    assert.has_error(function() a:send_bytes("hello", 6) end, "bad argument #2 to 'send_bytes' (offset out of range)")
    assert.has_error(function() a:send_bytes("hello", 2, 4) end, "bad argument #3 to 'send_bytes' (size out of range)")
    assert.has_error(function() a:send_bytes("hello", -1) end, "bad argument #2 to 'send_bytes' (offset out of range)")
  end)

  it("recv_bytes(maxlength) keeps a longer message for the next receive", function()
    local a, b = mproc.Pipe()
    a:send_bytes("toolong")
    assert.are.same({ nil, "message too long (7 bytes, maxlength 3)" }, { b:recv_bytes(3) })
    assert.is_true(b:poll())
    assert.are.equal("toolong", b:recv_bytes(7))
    a:send({ 1, 2 })
    assert.is_nil((b:recv_bytes(1)))
    assert.are.same({ 1, 2 }, b:recv())
    assert.has_error(function() b:recv_bytes(-1) end, "bad argument #1 to 'recv_bytes' (maxlength must be >= 0)")
  end)

  it("refuses to send a Connection holding a message recv_bytes(maxlength) refused, and says why", function()
    local a, b = mproc.Pipe()
    a:send_bytes("toolong")
    assert.is_nil((b:recv_bytes(3)))
    local ok, err = pcall(mproc.dumps, { b })
    assert.is_false(ok)
    assert.matches("holds a message a recv left", err, 1, true)
    assert.matches("longer than recv_bytes' maxlength", err, 1, true)
    assert.are.equal("toolong", b:recv_bytes())
    assert.is_string(mproc.dumps({ b }))
  end)

  it("recv_bytes returns nil, 'closed' once the peer is closed and nothing is left", function()
    local a, b = mproc.Pipe()
    a:send_bytes("last")
    a:close()
    assert.are.equal("last", b:recv_bytes())
    assert.are.same({ nil, "closed" }, { b:recv_bytes() })
  end)

  it("reports a peer that went away as a failed send, not a SIGPIPE", function()
    local a, b = mproc.Pipe()
    b:close()
    local ok, err, code = a:send_bytes("anyone?")
    assert.is_nil(ok)
    assert.matches("Broken pipe", err)
    assert.is_number(code)
  end)


  -- The fault spec of a Pipe: the sender (the only holder of its end) is
  -- SIGKILLed at random instants, mostly in the middle of a big message.
  -- The receiver gets every whole message, then says the last was cut
  -- short: a truncated message is not a clean "closed", and never a value.
  it("says a message was cut short when its sender is SIGKILLed in the middle of it", function()
    local big = ("m"):rep(4 * 1024 * 1024)
    local cut = 0
    for _ = 1, 10 do
      local a, b = mproc.Pipe(false)
      local p = mproc.Process(function() a:close(); while true do b:send(big) end end):start()
      b:close()
      mproc.sleep(math.random() * 0.01)
      p:kill()
      assert.are.equal(-9, p:join(10))
      local v, why, code
      repeat v, why, code = a:recv() until v ~= big
      a:close()
      assert.is_nil(v)
      if why ~= "closed" then
        assert.matches("^cannot receive on the connection: the sender closed it in the middle of a message", why)
        assert.is_number(code)
        cut = cut + 1
      end
    end
    assert.is_true(cut > 0)
  end)

  it("fails a send with a message when the receiver is SIGKILLed in the middle of it", function()
    local big = ("m"):rep(16 * 1024 * 1024)
    for _ = 1, 3 do
      local a, b = mproc.Pipe(false)
      local p = mproc.Process(function() b:close(); while true do a:recv() end end):start()
      a:close()
      local pid = p.pid   -- (a Process handle signals from its parent only, in the portable build)
      local killer <close> = mproc.Process(function()
        mproc.sleep(math.random() * 0.01)
        require("mproc.core").kill(pid, 9)
      end):start()
      local ok, err, code
      repeat ok, err, code = b:send(big) until not ok
      assert.matches("^cannot send on the connection: ", err)
      assert.is_number(code)
      killer:join(10)
      assert.are.equal(-9, p:join(10))
      b:close()
    end
  end)
  it("poll tells whether recv would block, within a timeout", function()
    local a, b = mproc.Pipe()
    assert.is_false(b:poll())
    assert.is_false(b:poll(0.05))
    local p = support.when_waiting(mproc.getpid(), function() a:send_bytes("late") end)
    assert.is_true(b:poll(10))   -- sends once this waits
    assert.are.equal("late", b:recv_bytes())
    p:join()
  end)

  it("works with mproc.wait through fileno", function()
    local a, b = mproc.Pipe()
    local c, d = mproc.Pipe()
    assert.are.same({}, mproc.wait({ b, d }, 0.01))
    c:send_bytes("x")
    assert.are.same({ d }, mproc.wait({ b, d }, 5))
    assert.are.equal("integer", math.type(a:fileno()))
  end)

  it("carries frames between processes, in order", function()
    local a, b = mproc.Pipe()
    local p = mproc.Process(function()
      for i = 1, 200 do a:send_bytes(("%d:"):format(i) .. string.rep("z", i * 97)) end
      local s = a:recv_bytes()
      a:send_bytes("echo " .. s)
    end):start()
    for i = 1, 200 do assert.are.equal(("%d:"):format(i) .. string.rep("z", i * 97), b:recv_bytes()) end
    b:send_bytes("hi")
    assert.are.equal("echo hi", b:recv_bytes())
    assert.are.equal(0, p:join())
  end)

  it("is closed by close, __close and __gc, twice safely, without leaking descriptors", function()
    collectgarbage(); collectgarbage()
    local before = support.fd_count()
    do
      local x, y = mproc.Pipe()
      local a <close> = x
      local b <close> = y
      a:send_bytes("x")
      assert.are.equal("x", b:recv_bytes())
    end
    local a = mproc.Pipe()   -- the other end is left to __gc
    a:close(); a:close()
    assert.is_true(a:closed())
    assert.matches("closed", tostring(a))
    assert.has_error(function() a:send_bytes("x") end)
    collectgarbage(); collectgarbage()
    assert.are.equal(before, support.fd_count())
  end)

  it("raises at the caller's line for a value that cannot be sent, or none", function()
    local a = mproc.Pipe()
    local f = io.tmpfile()
    local ok, err = pcall(function() a:send(f) end)
    assert.is_false(ok)
    assert.matches("^spec/pipe_spec%.lua:%d+: cannot send value: userdata %(FILE%*%)", err)
    ok, err = pcall(function() a:send({ log = f }) end)
    assert.is_false(ok)
    assert.matches("^spec/pipe_spec%.lua:%d+: cannot send field 'log': userdata %(FILE%*%)", err)
    ok, err = pcall(function() a:send() end)
    assert.is_false(ok)
    assert.matches("^spec/pipe_spec%.lua:%d+: bad argument #1 to 'send' %(value expected%)", err)
    f:close()
  end)

  it("tells a Pool worker that a Connection made after it was forked is not inherited", function()
    local out = support.run_lua([[
      local mproc = require "mproc"
      local pool = mproc.Pool(1)
      local a = mproc.Pipe()
      print(pcall(pool.apply, pool, function(c) return tostring(c) end, { a }))
      pool:close()
      pool:join()
    ]])
    assert.matches("false\t[^\n]*cannot receive mproc%.Connection \"%d+:%d+\": not inherited by this "
      .. "process %(it reaches only processes forked after it was made%)", out)
  end)

  it("raises for bad arguments", function()
    local a = mproc.Pipe()
    assert.has_error(function() mproc.Pipe("yes") end, "bad argument #1 to 'Pipe' (boolean expected, got string)")
    assert.has_error(function() a:send_bytes({}) end)
    assert.has_error(function() a:send() end)
    assert.has_error(function() a:poll("soon") end)
    assert.has_error(function() a:poll("0.01") end, "bad argument #1 to 'poll' (number expected, got string)")
  end)
end)
