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

  it("one-way: the first end only receives, the second only sends", function()
    local r, w = mproc.Pipe(false)
    assert.is_true(w:send_bytes("one"))
    assert.are.equal("one", r:recv_bytes())
    assert.has_error(function() r:send_bytes("x") end)
    assert.has_error(function() w:recv_bytes() end)
    assert.is_false(r:writable())
    assert.is_false(w:readable())
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

  it("poll tells whether recv would block, within a timeout", function()
    local a, b = mproc.Pipe()
    assert.is_false(b:poll())
    assert.is_false(b:poll(0.05))
    local p = mproc.Process(function() mproc.sleep(0.1); a:send_bytes("late") end):start()
    assert.is_true(b:poll(10))
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
    local a, b = mproc.Pipe()
    a:close(); a:close()
    assert.is_true(a:closed())
    assert.matches("closed", tostring(a))
    assert.has_error(function() a:send_bytes("x") end)
    b = nil
    collectgarbage(); collectgarbage()
    assert.are.equal(before, support.fd_count())
  end)

  it("raises for bad arguments", function()
    local a = mproc.Pipe()
    assert.has_error(function() mproc.Pipe("yes") end, "bad argument #1 to 'Pipe' (boolean expected, got string)")
    assert.has_error(function() a:send_bytes({}) end)
    assert.has_error(function() a:poll("soon") end)
  end)
end)
