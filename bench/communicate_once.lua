-- One communicate of MIB mebibytes through cat, the first in this fresh
-- process; prints MiB/s. bench/spawn_bench.lua runs it (Python's side is
-- bench/subprocess_communicate.py with "once").
local mproc = require "mproc"
local subprocess = mproc.subprocess

local MIB = tonumber(arg[1]) or 64
local data = string.rep("0123456789abcdef", MIB << 16)
local t0 = mproc.monotonic()
local p = subprocess.Popen({ "cat" }, { stdin = subprocess.PIPE, stdout = subprocess.PIPE })
local out = p:communicate(data)
local t = mproc.monotonic() - t0
assert(out == data)
print(("%.1f"):format(MIB / t))
