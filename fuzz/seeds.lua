-- Writes seed inputs for the decoder fuzz target: encodings of one value
-- of every kind the format has, bytecode aside.  Usage: lua fuzz/seeds.lua DIR
local mproc = require "mproc"
local dir = assert(arg[1], "usage: seeds.lua DIR")
local shared = { "s" }
local cyclic = { 1, 2 }
cyclic.self = cyclic
local samples = {
  nil, true, false, 0, 127, 128, -1, math.maxinteger, math.mininteger, 1.5, -0.0, 1 / 0, 0 / 0,
  "", "apple", ("x"):rep(300),
  { 1, 2, 3 }, { a = 1, b = { c = "d" } }, { shared, shared, [shared] = shared }, cyclic,
  setmetatable({}, { __index = string }), setmetatable({ x = 1 }, { y = 2 }),
  { string.format, io.stdout, string, _G, package.loaded },
}
for i = 1, #samples + 1 do
  local f = assert(io.open(("%s/seed%02d"):format(dir, i), "wb"))
  f:write(mproc.dumps(samples[i]))
  f:close()
end
