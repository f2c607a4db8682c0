-- The tutorial's first example: one child process, started and joined.
local mproc = require "mproc"
local Process = mproc.Process

local function sub_process_runner(name)
  print(("I am a child process name: [%s]. PID:[%s]"):format(name, mproc.getpid()))
end

print(("Parent process %s."):format(mproc.getpid()))
local sub_p = Process{target = sub_process_runner, args = {"sub_proc_name"}}
print("Child proc start")
sub_p:start()
-- wait for the child to end before going on
sub_p:join()
print("Child proc finish")
