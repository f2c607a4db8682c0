-- Event loops: the latency from q:put(x) in a child to the parent's luv
-- callback on q:fileno(), median and 99th percentile over N items put one
-- at a time, beside Python's asyncio loop.add_reader(q._reader); then
-- small-item Queue throughput with a watched descriptor (what fileno()
-- costs put and get once asked for), beside the same unwatched.
local mproc = require "mproc"
local common = require "bench.common"

local N = tonumber(os.getenv("N")) or 10000
local STEP = 0.0002   -- seconds between puts: latency, not a backlog

local ok, uv = pcall(require, "luv")
if not ok then
  print("\nevent-loop latency: skipped (lua-luv is not installed)")
else
  local best_med, best_p99 = math.huge, math.huge
  for _ = 1, 3 do
    local q = mproc.Queue()
    local lat = {}
    local p = mproc.Process(function()
      for _ = 1, N do
        q:put(mproc.monotonic())
        mproc.sleep(STEP)
      end
    end):start()
    local poll = uv.new_poll(q:fileno())
    poll:start("r", function()
      while true do
        local t, empty = q:get_nowait()
        if empty then break end
        lat[#lat + 1] = mproc.monotonic() - t
      end
      if #lat >= N then poll:stop() end
    end)
    uv.run()
    poll:close(); uv.run("nowait")
    p:join()
    table.sort(lat)
    best_med = math.min(best_med, lat[#lat // 2] * 1e6)
    best_p99 = math.min(best_p99, lat[math.floor(#lat * 0.99)] * 1e6)
  end
  local py = {}
  for _ = 1, 3 do
    local out = io.popen(("python3 bench/eventloop.py %d %g"):format(N, STEP)):read("a")
    local m, p99 = out:match("([%d.]+) ([%d.]+)")
    py.med = math.min(py.med or math.huge, tonumber(m))
    py.p99 = math.min(py.p99 or math.huge, tonumber(p99))
  end
  common.report("Queue put in a child -> loop callback, median of " .. N .. " (luv / asyncio)", "us/op", {
    { "mproc + luv", best_med }, { "Python asyncio add_reader", py.med },
  })
  common.report("Queue put in a child -> loop callback, 99th percentile of " .. N, "us/op", {
    { "mproc + luv", best_p99 }, { "Python asyncio add_reader", py.p99 },
  })
end

-- Small items through a Queue, 1 producer, the parent getting; watched
-- (fileno() asked for) against unwatched, interleaved rounds.
local M = tonumber(os.getenv("NQ")) or 200000
local function round(watch)
  local q = mproc.Queue()
  if watch then q:fileno() end
  local t0 = mproc.monotonic()
  local p = mproc.Process(function() for i = 1, M do q:put(i) end end):start()
  for _ = 1, M do q:get() end
  local t = (mproc.monotonic() - t0) / M * 1e6
  p:join()
  return t
end
local plain, watched = math.huge, math.huge
for _ = 1, 3 do
  plain = math.min(plain, round(false))
  watched = math.min(watched, round(true))
end
common.report("Queue small items, " .. M .. " through one queue, fileno() asked for", "us/op", {
  { "mproc, watched", watched }, { "mproc, not watched", plain },
})
