-- The tutorial's second example: a pool of 4 worker processes runs 5
-- tasks; the fifth waits for a free worker and reuses its process.
local mproc = require "mproc"

local function long_time_task(name)
  print(("Run task %s (%s)..."):format(name, mproc.getpid()))
  local start = mproc.time()
  mproc.sleep(math.random() * 2)
  local stop = mproc.time()
  print(("Task %s runs %0.2f seconds."):format(name, stop - start))
end

print(("Pool parent process %s."):format(mproc.getpid()))
local p = mproc.Pool(4)
for i = 0, 4 do
  p:apply_async(long_time_task, {i})
end
print("Waiting for all subprocesses done...")
p:close()
p:join()
print("All subprocesses done.")
