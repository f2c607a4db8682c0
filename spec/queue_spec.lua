local mproc = require "mproc"
local core = require "mproc.core"
local support = require "support"

local MiB = 1024 * 1024

-- Runs f in a child and fails the spec if it does not end in time: a
-- deadlock then fails instead of hanging the suite.
local function within(seconds, f)
  local p = mproc.Process(f):start()
  local code = p:join(seconds)
  if code == nil then p:kill(); p:join() end
  return code
end

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
