-- make test: runs each spec file in a busted of its own, SPEC_JOBS (2) at
-- a time, slowest first by the last run's times. The specs mostly wait on
-- their children, and a small fresh process forks cheaply. busted's
-- progress characters come as the files print them; then one summary line
-- for all the files, in busted's words, and each file's pendings, failures
-- and errors as busted describes them (file @ line, name, message).
-- Usage: lua5.4 spec/run.lua [times file, default build/spec-times]
local JOBS = tonumber(os.getenv("SPEC_JOBS")) or 2
local LUA = os.getenv("LUA") or "lua5.4"
local TIMES = arg[1] or "build/spec-times"

local has_core, core = pcall(require, "mproc.core")
local clock = has_core and core.monotonic or os.time

local function shell_quote(s)
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

local function write_file(path, s)
  local f = io.open(path, "wb")
  if f then f:write(s) f:close() end
end

-- The spec files, slowest first by the last run's times (new ones first).
local function spec_files()
  local files, last = {}, {}
  local p = assert(io.popen("ls spec"))
  for name in p:lines() do
    if name:match("_spec%.lua$") then files[#files + 1] = "spec/" .. name end
  end
  p:close()
  for secs, file in (read_file(TIMES) or ""):gmatch("([%d.]+) (%S+)") do last[file] = tonumber(secs) end
  table.sort(files, function(a, b)
    local ta, tb = last[a] or math.huge, last[b] or math.huge
    if ta ~= tb then return ta > tb end
    return a < b
  end)
  return files
end

-- Runs busted on each file, JOBS at a time; each leaves its report in dir.
local function run_all(files, dir)
  local list = dir .. "/files"
  write_file(list, table.concat(files, "\n") .. "\n")
  local one = ('export MPROC_SPEC_REPORT=%s/"$(basename "$1")"; exec %s "$(command -v busted)" '
    .. '-o spec/lane_output.lua "$1"'):format(shell_quote(dir), LUA)
  os.execute(("xargs -P %d -I{} sh -c %s sh {} < %s"):format(JOBS, shell_quote(one), shell_quote(list)))
  os.remove(list)
end

-- A file's report: its counts (successes, failures, errors, pending), its
-- seconds, and what busted printed after its summary line; nil without one.
local function read_report(path)
  local c = { (read_file(path) or ""):match(
    "^\n?(%d+) [^/]*/ (%d+) [^/]*/ (%d+) [^/]*/ (%d+) [^:]*: ([%d.]+) [^\n]*\n(.*)$") }
  if not c[1] then return nil end
  return { tonumber(c[1]), tonumber(c[2]), tonumber(c[3]), tonumber(c[4]) }, tonumber(c[5]), c[6]
end

-- busted's summary line for counts n over seconds.
local function summary(n, seconds)
  return ("%d %s / %d %s / %d %s / %d pending : %s seconds"):format(
    n[1], n[1] == 1 and "success" or "successes", n[2], n[2] == 1 and "failure" or "failures",
    n[3], n[3] == 1 and "error" or "errors", n[4], (("%.6f"):format(seconds):gsub("([0-9])0+$", "%1")))
end

local t0 = clock()
local files = spec_files()
local dir = os.tmpname()
os.remove(dir)
assert(os.execute("mkdir " .. shell_quote(dir)))
run_all(files, dir)
table.sort(files)
local total, details, times = { 0, 0, 0, 0 }, {}, {}
for _, file in ipairs(files) do
  local report = dir .. "/" .. file:match("[^/]+$")
  local n, seconds, rest = read_report(report)
  if not n then   -- the busted process died
    n, seconds, rest = { 0, 0, 1, 0 }, 0, ("\nError -> %s\nbusted ended without a summary\n"):format(file)
  end
  for i = 1, 4 do total[i] = total[i] + n[i] end
  details[#details + 1], times[#times + 1] = rest, ("%.3f %s"):format(seconds, file)
  os.remove(report)
end
os.remove(dir)
write_file(TIMES, table.concat(times, "\n") .. "\n")
io.write("\n", summary(total, clock() - t0), "\n", table.concat(details))
os.exit(total[2] + total[3] == 0)
