-- One luv loop waits, with no timer and no busy loop, for everything at
-- once: a Process ending, a Popen's output line by line, 8 MiB messages on
-- a Connection, a Pool's results as they complete, and a Queue's items
-- from two producers. Run: lua5.4 examples/eventloop/luv.lua
local uv = require "luv"
local mproc = require "mproc"
local subprocess = require "mproc.subprocess"

local pending = 0        -- watchers still open; the loop ends with the last
local function watch(fd, on_ready)
  local h = uv.new_poll(fd)   -- luv makes fd non-blocking: mproc copes
  pending = pending + 1
  h:start("r", function()
    if on_ready() == "done" then
      h:stop(); h:close()     -- closes the watcher, not fd: mproc owns it
      pending = pending - 1
    end
  end)
end

-- a Process: its sentinel becomes readable when it ends
local p = mproc.Process(function() mproc.sleep(0.3) end):start()
watch(p.sentinel, function()
  print("process ended with exitcode " .. p:join())
  return "done"
end)

-- a Popen's output, line by line as it comes
local proc = subprocess.Popen({ "sh", "-c", "for i in 1 2 3; do echo line $i; sleep 0.1; done" },
                              { stdout = subprocess.PIPE })
local partial = ""
watch(mproc.fileno(proc.stdout), function()
  local chunk = mproc.read_nowait(proc.stdout)
  if chunk == nil then proc:wait(); print("popen ended"); return "done" end
  partial = partial .. chunk
  for line in partial:gmatch("([^\n]*)\n") do print("popen: " .. line) end
  partial = partial:match("[^\n]*$")
end)

-- 8 MiB messages on a Connection
local a, b = mproc.Pipe(false)
local sender = mproc.Process(function()
  for i = 1, 3 do b:send(string.rep(string.char(64 + i), 8 * 1024 * 1024)) end
  b:close()
end):start()
b:close()
local messages = 0
watch(a:fileno(), function()
  local m, err = a:recv()
  if m == nil then sender:join(); print("connection: " .. messages .. " messages, then " .. err); return "done" end
  messages = messages + 1
  assert(#m == 8 * 1024 * 1024 and m:sub(1, 1) == m:sub(-1))
end)

-- a Pool's results as they complete
local pool = mproc.Pool(2)
local results = {}
for i = 1, 4 do
  results[i] = pool:apply_async(function(x) mproc.sleep(0.05 * (5 - x)) return x * x end, { i })
end
local got = 0
watch(results[1]:fileno(), function()
  for i, r in pairs(results) do
    if r:ready() then print(("pool: task %d gave %d"):format(i, r:get())); results[i] = nil; got = got + 1 end
  end
  if got == 4 then return "done" end
end)

-- a Queue fed by two producers; nil from each marks its end
local q = mproc.Queue()
local producers = {}
for k = 1, 2 do
  producers[k] = mproc.Process(function()
    for i = 1, 3 do q:put(("producer %d item %d"):format(k, i)); mproc.sleep(0.05) end
    q:put(nil)
  end):start()
end
local ends, items = 0, 0
watch(q:fileno(), function()
  while true do
    local item, empty = q:get_nowait()
    if empty then return end          -- a spurious wake-up: wait again
    if item == nil then ends = ends + 1 else items = items + 1 end
    if ends == 2 then
      for _, pr in ipairs(producers) do pr:join() end
      print("queue: " .. items .. " items")
      return "done"
    end
  end
end)

local cpu0 = os.clock()
uv.run()
pool:close(); pool:join()
print(("parent CPU while waiting: %.3f s"):format(os.clock() - cpu0))
assert(pending == 0)
