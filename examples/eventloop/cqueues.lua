-- The same as luv.lua with cqueues: one controller, a coroutine per thing
-- waited for, each sleeping in cqueues.poll on an mproc descriptor.
-- Run: lua5.4 examples/eventloop/cqueues.lua
local cqueues = require "cqueues"
local mproc = require "mproc"
local subprocess = require "mproc.subprocess"

-- What cqueues.poll waits on: anything with pollfd() and events().
local function readable(fd)
  return { pollfd = function() return fd end, events = function() return "r" end }
end

local loop = cqueues.new()

-- a Process
local p = mproc.Process(function() mproc.sleep(0.3) end):start()
loop:wrap(function()
  cqueues.poll(readable(p.sentinel))
  print("process ended with exitcode " .. p:join())
end)

-- a Popen's output, line by line
local proc = subprocess.Popen({ "sh", "-c", "for i in 1 2 3; do echo line $i; sleep 0.1; done" },
                              { stdout = subprocess.PIPE })
loop:wrap(function()
  local partial = ""
  while true do
    cqueues.poll(readable(mproc.fileno(proc.stdout)))
    local chunk = mproc.read_nowait(proc.stdout)
    if chunk == nil then break end
    partial = partial .. chunk
    for line in partial:gmatch("([^\n]*)\n") do print("popen: " .. line) end
    partial = partial:match("[^\n]*$")
  end
  proc:wait()
  print("popen ended")
end)

-- 8 MiB messages on a Connection
local a, b = mproc.Pipe(false)
local sender = mproc.Process(function()
  for i = 1, 3 do b:send(string.rep(string.char(64 + i), 8 * 1024 * 1024)) end
  b:close()
end):start()
b:close()
loop:wrap(function()
  local n = 0
  while true do
    cqueues.poll(readable(a:fileno()))
    local m, err = a:recv()
    if m == nil then print("connection: " .. n .. " messages, then " .. err) break end
    n = n + 1
  end
  sender:join()
end)

-- a Pool's results as they complete
local pool = mproc.Pool(2)
loop:wrap(function()
  local results, left = {}, 4
  for i = 1, 4 do
    results[i] = pool:apply_async(function(x) mproc.sleep(0.05 * (5 - x)) return x * x end, { i })
  end
  while left > 0 do
    cqueues.poll(readable(results[next(results)]:fileno()))
    for i, r in pairs(results) do
      if r:ready() then print(("pool: task %d gave %d"):format(i, r:get())); results[i] = nil; left = left - 1 end
    end
  end
end)

-- a Queue fed by two producers
local q = mproc.Queue()
local producers = {}
for k = 1, 2 do
  producers[k] = mproc.Process(function()
    for i = 1, 3 do q:put(("producer %d item %d"):format(k, i)); mproc.sleep(0.05) end
    q:put(nil)
  end):start()
end
loop:wrap(function()
  local ends, items = 0, 0
  while ends < 2 do
    cqueues.poll(readable(q:fileno()))
    while ends < 2 do
      local item, empty = q:get_nowait()
      if empty then break end            -- nothing more for now
      if item == nil then ends = ends + 1 else items = items + 1 end
    end
  end
  for _, pr in ipairs(producers) do pr:join() end
  print("queue: " .. items .. " items")
end)

local cpu0 = os.clock()
assert(loop:loop())
pool:close(); pool:join()
print(("parent CPU while waiting: %.3f s"):format(os.clock() - cpu0))
