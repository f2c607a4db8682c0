-- Shared by the benchmarks: run the other sides, time, print ratios.
local mproc = require "mproc"

local M = {}

-- Runs a shell command and returns the number it prints (microseconds per op).
function M.external(cmd)
  local p = assert(io.popen(cmd))
  local out = p:read("a")
  p:close()
  return assert(tonumber(out:match("[%d.]+")), "no number from: " .. cmd .. "\n" .. out)
end

-- Best of runs of f(n), in microseconds per operation.
function M.time_per_op(f, n, runs)
  local best = math.huge
  for _ = 1, runs or 3 do
    local t0 = mproc.monotonic()
    f(n)
    best = math.min(best, (mproc.monotonic() - t0) / n * 1e6)
  end
  return best
end

-- Appends one comparison to the file named by BENCH_RESULTS (bench/run
-- sets it), a line per row: title, unit, side, value, tab-separated.
-- bench/chart.lua turns that file into the tables and the chart.
function M.record(title, unit, rows)
  local path = os.getenv("BENCH_RESULTS")
  if not path or path == "" then return end
  local f = assert(io.open(path, "a"))
  for _, r in ipairs(rows) do
    f:write(("%s\t%s\t%s\t%.6g\n"):format(title, unit, r[1], r[2]))
  end
  f:close()
end

-- Prints one comparison, and records it. rows[1] is mproc; each other row
-- gets the ratio mproc/that for "us/op" (time: lower is better) or
-- "MiB/s" and "ops/s" (throughput: higher is better), so "0.50x" means
-- half the time or half the throughput of that side.
function M.report(title, unit, rows)
  print(("\n%s (%s)"):format(title, unit))
  local mine = rows[1][2]
  for i, r in ipairs(rows) do
    local note = i == 1 and "" or ("mproc/this = %.2fx"):format(mine / r[2])
    print(("  %-30s %12.2f   %s"):format(r[1], r[2], note))
  end
  M.record(title, unit, rows)
end

return M
