-- Turns the results `make bench` recorded (bench/common.lua's record: one
-- tab-separated line per side: title, unit, side, value) into a chart (SVG,
-- written with plain string formatting: no plotting package) and the
-- Markdown tables of docs/performance.md.
--
--   lua5.4 bench/chart.lua RESULTS.tsv OUT.svg OUT.md
--
-- The chart puts every side of a comparison on one scale: its cost
-- relative to mproc's (time per operation; for a throughput, 1/throughput;
-- for memory, the memory), on a log axis. A bar left of 1x is a side
-- cheaper than mproc, right of it a dearer one.

local results, svg_path, md_path = arg[1], arg[2], arg[3]
assert(results and svg_path and md_path, "usage: chart.lua RESULTS.tsv OUT.svg OUT.md")

local HIGHER_IS_BETTER = { ["MiB/s"] = true, ["ops/s"] = true }

-- Groups in the order first seen: { title, unit, rows = { {side, value} } }
local function read_results(path)
  local groups, by_title = {}, {}
  for line in io.lines(path) do
    local title, unit, side, value = line:match("^([^\t]*)\t([^\t]*)\t([^\t]*)\t([^\t]*)$")
    if title then
      local g = by_title[title]
      if not g then
        g = { title = title, unit = unit, rows = {} }
        by_title[title] = g
        groups[#groups + 1] = g
      end
      g.rows[#g.rows + 1] = { side = side, value = assert(tonumber(value)) }
    end
  end
  return groups
end

-- mproc, floor (a C program doing the least the job needs) or python.
local function kind(side)
  if side:match("^mproc") then return "mproc" end
  if side:match("^Python") then return "python" end
  return "floor"
end

-- How much a side costs relative to mproc (rows[1]): > 1 dearer.
local function ratio(g, r)
  local mine = g.rows[1].value
  if HIGHER_IS_BETTER[g.unit] then return mine / r.value end
  return r.value / mine
end

-- A value with three significant digits or so, never in e-notation.
local function fmt(v)
  if v >= 1e6 then return ("%.2f M"):format(v / 1e6) end
  if v >= 100 then return ("%.0f"):format(v) end
  if v >= 10 then return ("%.1f"):format(v) end
  if v >= 1 then return ("%.2f"):format(v) end
  return ("%.3g"):format(v)
end

-- A ratio: "0.48x", "11.4x".
local function times(q)
  return (q >= 10 and "%.1fx" or "%.2fx"):format(q)
end

local function esc(s)
  return (s:gsub("[&<>\"]", { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ['"'] = "&quot;" }))
end

local function command_output(cmd)
  local p = io.popen(cmd .. " 2>/dev/null")
  if not p then return nil end
  local out = p:read("a")
  p:close()
  out = out and out:gsub("%s+$", "")
  return out ~= "" and out or nil
end

-- Where the numbers come from: the date, the CPU, the cores, Python.
local function provenance()
  local cpu = command_output("sed -n 's/^model name[^:]*: *//p' /proc/cpuinfo | head -n 1") or "unknown CPU"
  local cores = command_output("nproc") or "?"
  local python = command_output("python3 --version") or "Python"
  return ("make bench, %s; %s, %s cores; Lua 5.4, %s"):format(os.date("!%Y-%m-%d"), cpu, cores, python)
end

-- Splits s into lines of at most width characters, at spaces.
local function wrap(s, width)
  local lines, cur = {}, ""
  for word in s:gmatch("%S+") do
    if cur ~= "" and #cur + 1 + #word > width then
      lines[#lines + 1] = cur
      cur = word
    else
      cur = cur == "" and word or (cur .. " " .. word)
    end
  end
  if cur ~= "" then lines[#lines + 1] = cur end
  return lines
end

---------------------------------------------------------------------------
-- Markdown tables
---------------------------------------------------------------------------

local function write_tables(groups, path, source)
  local out = { ("<!-- %s -->"):format(source) }
  for _, g in ipairs(groups) do
    out[#out + 1] = ""
    out[#out + 1] = ("**%s** (%s%s)"):format(g.title, g.unit,
      HIGHER_IS_BETTER[g.unit] and ", higher is better" or ", lower is better")
    out[#out + 1] = ""
    out[#out + 1] = "| | " .. g.unit .. " | cost relative to mproc |"
    out[#out + 1] = "| --- | ---: | ---: |"
    for i, r in ipairs(g.rows) do
      out[#out + 1] = ("| %s | %s | %s |"):format(r.side, fmt(r.value),
        i == 1 and "1x" or times(ratio(g, r)))
    end
  end
  local f = assert(io.open(path, "w"))
  f:write(table.concat(out, "\n"), "\n")
  f:close()
end

---------------------------------------------------------------------------
-- The chart
---------------------------------------------------------------------------

local W, PLOT_X0, PLOT_X1 = 980, 440, 940
local LINE, TOP = 15, 92
local COLOURS = { floor = "#8a8a8a", floor2 = "#c4c4c4", python = "#e08a1e", mproc = "#2160a8" }

local function write_chart(groups, path, source)
  -- the decades the axis spans: every ratio, with room for its label
  local lo, hi = 0, 0
  for _, g in ipairs(groups) do
    for i = 2, #g.rows do
      local l = math.log(ratio(g, g.rows[i]), 10)
      lo, hi = math.min(lo, l), math.max(hi, l)
    end
  end
  lo, hi = math.min(-1, math.floor(lo - 0.35)), math.max(1, math.ceil(hi + 0.35))
  local function x(r)
    return PLOT_X0 + (math.log(r, 10) - lo) / (hi - lo) * (PLOT_X1 - PLOT_X0)
  end

  local stripes, body, y = {}, {}, TOP
  local function add(fmt_, ...) body[#body + 1] = fmt_:format(...) end
  for gi, g in ipairs(groups) do
    local title = wrap(g.title .. " (" .. g.unit .. ")", 62)
    local h = (#title + #g.rows) * LINE + 10
    if gi % 2 == 0 then
      stripes[#stripes + 1] = ('<rect x="0" y="%d" width="%d" height="%d" fill="#f1f4f8"/>'):format(y + 2, W, h - 4)
    end
    for _, t in ipairs(title) do
      y = y + LINE
      add('<text x="10" y="%d" font-weight="bold">%s</text>', y - 3, esc(t))
    end
    local floors = 0
    for i, r in ipairs(g.rows) do
      y = y + LINE
      local k = kind(r.side)
      if k == "floor" then
        floors = floors + 1
        if floors > 1 then k = "floor2" end
      end
      add('<text x="22" y="%d">%s: %s</text>', y - 3, esc(r.side), fmt(r.value))
      if i == 1 then
        add('<circle cx="%.1f" cy="%d" r="4" fill="%s"/>', x(1), y - 7, COLOURS.mproc)
      else
        local q = ratio(g, r)
        local a, b = x(math.min(q, 1)), x(math.max(q, 1))
        add('<rect x="%.1f" y="%d" width="%.1f" height="10" fill="%s"/>', a, y - 12, math.max(b - a, 1), COLOURS[k])
        local label = times(q)
        if q >= 1 then
          add('<text x="%.1f" y="%d">%s</text>', b + 4, y - 3, label)
        else
          add('<text x="%.1f" y="%d" text-anchor="end">%s</text>', a - 4, y - 3, label)
        end
      end
    end
    y = y + 10
  end
  local bottom = y + 6

  local head = {}
  local function h(fmt_, ...) head[#head + 1] = fmt_:format(...) end
  h('<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" '
    .. 'font-family="sans-serif" font-size="12">', W, bottom + 40, W, bottom + 40)
  h('<rect width="100%%" height="100%%" fill="white"/>')
  h('<text x="10" y="22" font-size="16" font-weight="bold">%s</text>',
    "mproc beside a C floor and Python: cost relative to mproc (log scale)")
  h('<text x="10" y="40">%s</text>', esc("Left of 1x: cheaper than mproc (a floor is the least the job needs). "
    .. "Right of 1x: dearer. Throughput is taken as 1/throughput."))
  -- legend
  local lx = 10
  for _, item in ipairs { { "mproc (1x)", "mproc" }, { "C floor", "floor" }, { "second C floor", "floor2" },
                          { "Python multiprocessing / subprocess", "python" } } do
    if item[2] == "mproc" then
      h('<circle cx="%d" cy="57" r="4" fill="%s"/>', lx + 5, COLOURS.mproc)
    else
      h('<rect x="%d" y="52" width="10" height="10" fill="%s"/>', lx, COLOURS[item[2]])
    end
    h('<text x="%d" y="61">%s</text>', lx + 14, esc(item[1]))
    lx = lx + 22 + #item[1] * 7
  end
  for _, s in ipairs(stripes) do head[#head + 1] = s end
  -- decades: grid lines and labels, top and bottom
  for d = lo, hi do
    local gx = x(10 ^ d)
    local label = d >= 0 and ("%dx"):format(math.floor(10 ^ d + 0.5)) or ("%gx"):format(10 ^ d)
    h('<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#d0d0d0"/>', gx, TOP - 6, gx, bottom)
    h('<text x="%.1f" y="%d" text-anchor="middle" fill="#555">%s</text>', gx, TOP - 10, label)
    h('<text x="%.1f" y="%d" text-anchor="middle" fill="#555">%s</text>', gx, bottom + 14, label)
  end
  body[#body + 1] = ('<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="%s" stroke-width="1.5"/>')
    :format(x(1), TOP - 6, x(1), bottom, COLOURS.mproc)
  body[#body + 1] = ('<text x="10" y="%d" fill="#555">%s</text>'):format(bottom + 32, esc("Source: " .. source))
  body[#body + 1] = "</svg>"
  local f = assert(io.open(path, "w"))
  f:write(table.concat(head, "\n"), "\n", table.concat(body, "\n"), "\n")
  f:close()
end

local groups = read_results(results)
assert(#groups > 0, "no results in " .. results)
local source = provenance()
write_chart(groups, svg_path, source)
write_tables(groups, md_path, source)
print(("\nwrote %s and %s (%d comparisons)"):format(svg_path, md_path, #groups))
