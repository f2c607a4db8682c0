-- The tutorial's third example: processes talking through a Queue. A writer
-- puts four strings, an endless reader prints them; the parent joins the
-- writer and terminates the reader.
local mproc = require "mproc"
local Process, Queue = mproc.Process, mproc.Queue

-- the writer's code
local function write(q)
  print(("Process to write: %s"):format(mproc.getpid()))
  for _, value in ipairs { "Apple", "Banana", "Cat", "Dog" } do
    print(("Put [%s] to queue..."):format(value))
    q:put(value)
    mproc.sleep(math.random())
  end
end

-- the reader's code
local function read(q)
  print(("Process to read: %s"):format(mproc.getpid()))
  while true do
    local value = q:get(true)
    print(("Get [%s] from queue."):format(value))
  end
end

-- the parent makes the Queue and hands it to each child
local q = Queue()
local pw = Process{target = write, args = {q}}
local pr = Process{target = read, args = {q}}
-- start the writer
pw:start()
-- start the reader
pr:start()
-- wait for the writer to end
pw:join()
-- the reader loops for ever and cannot be joined: once it has taken the
-- last item (and had a moment to print it), stop it
while not q:empty() do mproc.sleep(0.01) end
pr:join(0.1)
pr:terminate()
pr:join()
print(("Reader exitcode: %d"):format(pr.exitcode))
