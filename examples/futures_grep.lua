-- A parallel grep, after CPython's Doc/includes/concurrency/
-- grep-multiprocessing-cf.py: one future per file on a ProcessPoolExecutor,
-- the matches printed as each file's future completes.  PATTERN is a Lua
-- pattern.
--
--   lua5.4 examples/futures_grep.lua [-r] [-l | -L] [-q] [-e] PATTERN FILE...
--
-- -r searches directories recursively; -l prints only the names of files
-- with a match, -L those without; -q prints nothing.  Exits with 0 when
-- something matched, 1 when nothing did, 2 on an error (as grep does).
local mproc = require "mproc"
local futures = mproc.futures

local MAX_FILES = 10 -- files searched at once, as in the Python example

local function usage()
  io.stderr:write("usage: futures_grep.lua [-r] [-l | -L] [-q] [-e] PATTERN FILE...\n")
  os.exit(2)
end

-- The options, the pattern and the file names from the command line.
local function parse(argv)
  local opts, i = {}, 1
  while argv[i] and argv[i]:match("^%-") and not opts.pattern do
    local a = argv[i]
    if a == "-r" or a == "--recursive" then opts.recursive = true
    elseif a == "-l" or a == "--files-with-matches" then opts.filesonly = "match"
    elseif a == "-L" or a == "--files-without-match" then opts.filesonly = "invert"
    elseif a == "-q" or a == "--quiet" then opts.quiet = true
    elseif a == "-e" or a == "--regexp" then i = i + 1; opts.pattern = argv[i] or usage()
    else usage() end
    i = i + 1
  end
  if not opts.pattern then
    opts.pattern = argv[i] or usage()
    i = i + 1
  end
  local files = table.move(argv, i, #argv, 1, {})
  if #files == 0 then usage() end
  return opts, files
end

-- The files to search: directories are walked with -r (by find(1)), else skipped.
local function resolve_filenames(names, recursive)
  local out = {}
  for _, name in ipairs(names) do
    local isdir = mproc.subprocess.call({ "test", "-d", name }) == 0
    if not isdir then
      out[#out + 1] = name
    elseif recursive then
      local listing = mproc.subprocess.check_output({ "find", name, "-type", "f" })
      for path in listing:gmatch("[^\n]+") do out[#out + 1] = path end
    end
  end
  return out
end

-- Runs in a worker: the lines of filename that match pattern (all of them,
-- or with filesonly whether there is one); nothing for a binary file.
local function search_file(filename, pattern, filesonly)
  local fh, err = io.open(filename, "rb")
  if not fh then error(err, 0) end
  local text = fh:read("a")
  fh:close()
  if text:find("\0", 1, true) then return {} end
  if text ~= "" and text:sub(-1) ~= "\n" then text = text .. "\n" end
  local matches = {}
  for line in text:gmatch("(.-)\n") do
    if line:find(pattern) then
      matches[#matches + 1] = line
      if filesonly then break end
    end
  end
  return matches
end

-- Prints what opts ask for about one file's matches.
local function report(opts, filename, matches, prefix)
  if opts.filesonly == "match" then
    if #matches > 0 then print(filename) end
  elseif opts.filesonly == "invert" then
    if #matches == 0 then print(filename) end
  else
    for _, line in ipairs(matches) do print(prefix and (filename .. ": " .. line) or line) end
  end
end

local function main(argv)
  local opts, names = parse(argv)
  local filenames = resolve_filenames(names, opts.recursive)
  local prefix = #filenames > 1 or opts.recursive
  local ex <close> = futures.ProcessPoolExecutor(MAX_FILES)
  local fs, name_of = {}, {}
  for _, filename in ipairs(filenames) do
    local f = ex:submit(search_file, filename, opts.pattern, opts.filesonly ~= nil)
    fs[#fs + 1], name_of[f] = f, filename
  end
  local matched, failed = false, false
  for f in futures.as_completed(fs) do
    local filename, err = name_of[f], f:exception()
    if err then
      io.stderr:write(("futures_grep.lua: %s\n"):format((tostring(err):match("^[^\n]*"))))
      failed = true
    else
      local matches = f:result()
      if #matches > 0 then matched = true end
      if not opts.quiet then report(opts, filename, matches, prefix) end
    end
  end
  if failed then return 2 end
  return matched and 0 or 1
end

os.exit(main(arg))
