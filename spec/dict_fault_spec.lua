-- Fault injection for Dict and List: workers change one container in a
-- tight loop while they are SIGKILLed at random instants, inside d[k] = v,
-- append or update_key, holding the lock or waiting for it. After each
-- kill every survivor goes on within a second; at the end the container is
-- whole (its own check), usable, and holds what the workers' own counts
-- say: no change lost, none done twice, no value torn. Each run is a small
-- interpreter of its own, where fork is cheap.
local support = require "support"

local KILLS = 100

-- name -> code that makes `step(slot, i)` (the worker's i-th change, done
-- once it returns) and `verify(done)` (given each slot's count of finished
-- steps, whether the container holds exactly what they imply)
local kinds = {
  ["d[k] = v"] = [[
    local d = mproc.Dict()
    local sizes = { 1, 100, 3000, 70000 }
    local function value(slot, i)
      return ("%d:%d:"):format(slot, i) .. ("x"):rep(sizes[i % 4 + 1])
    end
    step = function(slot, i)
      d["w" .. slot] = value(slot, i)
      d["k" .. (i % 50)] = i                  -- shared keys, small values
      if i % 7 == 0 then d["k" .. ((i + 3) % 50)] = nil end
    end
    verify = function(done)
      for slot, n in pairs(done) do
        local v = d["w" .. slot]
        -- the last finished step's value, or the one the kill cut short
        if n > 0 and v ~= value(slot, n) and v ~= value(slot, n + 1) then return false end
      end
      for k, v in pairs(d) do
        if k:match("^k") and math.type(v) ~= "integer" then return false end
      end
      return core.store_check(d)
    end
    usable = function() d.after = { 1, 2 }; return d.after[2] == 2 and #d > 0 end
    obj = d
  ]],
  append = [[
    local l = mproc.List()
    -- slot and step in one integer; a worker the kills spare for a while
    -- does well over a million appends, so the step gets 32 bits
    step = function(slot, i) l:append(slot << 32 | i) end
    verify = function(done)
      local last, count = {}, {}
      for _, v in ipairs(l:totable()) do
        local slot, i = v >> 32, v & 0xffffffff
        if i ~= (last[slot] or 0) + 1 then return false end   -- in order, once each
        last[slot], count[slot] = i, (count[slot] or 0) + 1
      end
      for slot, n in pairs(done) do
        local c = count[slot] or 0
        if c ~= n and c ~= n + 1 then return false end
      end
      return core.store_check(l)
    end
    usable = function() l:append("end"); return l[#l] == "end" and l:pop() == "end" end
    obj = l
  ]],
  ["List insert, pop(1), sort"] = [[
    local l = mproc.List { 0 }
    step = function(slot, i)
      l:insert(math.random(#l + 1 > 1 and 2 or 1), slot * 1000000 + i)
      if #l > 40 then l:pop(1) end
      if i % 10 == 0 then l:sort() end
    end
    verify = function()
      for _, v in ipairs(l:totable()) do
        if math.type(v) ~= "integer" then return false end
      end
      return #l <= 40 + 3 + 100 and core.store_check(l)   -- a kill between insert and pop adds one
    end
    usable = function() l:sort(); return l:update_key(1, function(v) return v end) ~= nil end
    obj = l
  ]],
  -- values naming other containers: the outer's reference counts change
  -- in the same transaction as its records, so a kill leaves them exact
  -- (core.store_check tallies every record's references against them)
  ["values naming containers"] = [[
    local d, l = mproc.Dict(), mproc.List()
    local inner = { mproc.List(), mproc.Dict(), mproc.Namespace() }
    step = function(slot, i)
      local a, b = inner[i % 3 + 1], inner[(i + slot) % 3 + 1]
      d["k" .. (i % 16)] = (i % 5 ~= 0) and { a, b, n = i } or nil
      -- a longer transaction, so that kills land between a count changed
      -- and the commit
      d:update_key("u" .. (i % 4), function()
        for j = 1, 8 do d["t" .. j] = (i + j) % 3 == 0 and a or { b } end
        return b
      end)
      l:append(a)
      if #l > 12 then l:pop(1) end
    end
    verify = function()
      for _, v in pairs(d) do
        local x = type(v) == "table" and v[1] or v
        if not (x == inner[1] or x == inner[2] or x == inner[3]) then return false end
      end
      for _, v in ipairs(l:totable()) do
        if not (v == inner[1] or v == inner[2] or v == inner[3]) then return false end
      end
      local ok_d, why_d = core.store_check(d)
      local ok_l, why_l = core.store_check(l)
      if not ok_d or not ok_l then error(tostring(why_d) .. " / " .. tostring(why_l)) end
      return true
    end
    usable = function()
      d.after = inner[1]
      l:append(inner[2])
      return d.after == inner[1] and l:pop() == inner[2]
    end
    obj = d
  ]],
  update_key = [[
    local d = mproc.Dict { n = 0 }
    step = function(slot, i)
      d:update_key("n", function(n)
        d["last" .. slot] = i                  -- a second change, in the same one
        return n + 1
      end)
    end
    verify = function(done)
      local sum, kills = 0, 0
      for slot, n in pairs(done) do
        local last = d["last" .. slot]
        if n > 0 and last ~= n and last ~= n + 1 then return false end
        if last == n + 1 then kills = kills + 1 end     -- committed, then killed
        sum = sum + n
      end
      return d.n == sum + kills and core.store_check(d)
    end
    usable = function() return d:update_key("n", function(n) return n + 1 end) > 0 end
    obj = d
  ]],
}

local TRIALS = [[
  local mproc = require "mproc"
  local core = require "mproc.core"
  local step, verify, usable, obj
  %s
  -- past %d kills (up to 10 times as many: in the portable build few land there) until one landed inside a
  -- transaction, so that the undo path is surely taken
  local stalls, done = require("kill_trials").run(step, %d,
    function() return select(3, core.store_sizes(obj)) == 0 end, 10 * %d)
  local ok, whole = pcall(verify, done)
  local rollbacks = select(3, core.store_sizes(obj))
  print("stalls " .. stalls, "whole " .. tostring(ok and whole), "usable " .. tostring(usable()),
    "undone " .. (rollbacks > 0 and "some" or "none"))
  if not ok then print(whole) end
  io.stderr:write(("%%d transactions of killed holders undone\n"):format(rollbacks))
]]

describe("Dict and List under SIGKILL at random instants", function()
  for name, make in pairs(kinds) do
    it("stay whole and usable through " .. KILLS .. " kills inside " .. name, function()
      local out = support.run_lua(TRIALS:format(make, KILLS, KILLS, KILLS), { env = "timeout 300", stderr = false })
      assert.are.equal("stalls 0\twhole true\tusable true\tundone some\n", out)
    end)
  end
end)
