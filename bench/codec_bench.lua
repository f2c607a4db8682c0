-- Codec round trips (dumps + loads): mproc beside Python's pickle
-- (highest protocol) and, for the 1 MiB string, two memcpy in C.
local mproc = require "mproc"
local common = require "bench.common"

local N = tonumber(os.getenv("N")) or 20000
local dumps, loads = mproc.dumps, mproc.loads

-- The same 100 values bench/codec.py builds.
local function mixed()
  local out = {}
  for i = 1, 100 do
    local k = i % 5
    out[i] = k == 0 and i or k == 1 and i + 0.5 or k == 2 and ("value-" .. i)
      or k == 3 or { a = i, b = "x" }
  end
  return out
end

local cases = {
  { "mixed", "a 100-element mixed table", mixed(), N // 10 },
  { "int", "an integer", 123456789, N * 10 },
  { "mib", "a 1 MiB string", ("0123456789abcdef"):rep(65536), 2000 },
}

for _, c in ipairs(cases) do
  local v, n = c[3], c[4]
  assert(loads(dumps(v)) ~= nil)
  local mine = common.time_per_op(function(k)
    for _ = 1, k do loads(dumps(v)) end
  end, n)
  local rows = {
    { "mproc dumps+loads", mine },
    { "Python pickle dumps+loads", common.external(("python3 bench/codec.py %s %d"):format(c[1], n)) },
  }
  if c[1] == "mixed" then
    rows[3] = { "C making and visiting it with the Lua API", common.external("build/bench/codec_floor " .. n) }
  end
  if c[1] == "mib" then
    rows[3] = { "C 2x memcpy 1 MiB", common.external("build/bench/memcpy_floor " .. n) }
    rows[4] = { "C 2x malloc+memcpy+free 1 MiB",
      common.external("build/bench/memcpy_floor " .. n .. " 1048576 fresh") }
  end
  common.report("Codec round trip of " .. c[2] .. ", " .. n .. " times", "us/op", rows)
end
