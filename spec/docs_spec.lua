-- Every ```lua block in README.md and docs/*.md runs, each alone in a fresh
-- interpreter with the tree's LUA_PATH/LUA_CPATH (make test sets them),
-- stdin on /dev/null and a time limit; a failure names the file and line
-- of the block. A block marked ```lua fragment is not run (it cannot run
-- alone: say why beside it); one marked ```lua linux runs only where the
-- build has Linux's facilities (not under PORTABLE=1); other fences (sh,
-- text, ...) are not Lua.
local support = require "support"

local LIMIT = 60       -- seconds a block may take
local FRAGMENT = "fragment"
local LINUX = "linux"

-- The fenced blocks of the Markdown text s: { start = line of the opening
-- fence, info = its info string, code = the lines between the fences }.
local function fenced_blocks(s)
  local list, cur, n = {}, nil, 0
  for line in (s .. "\n"):gmatch("([^\n]*)\n") do
    n = n + 1
    local fence, info = line:match("^%s*(```+)%s*(.-)%s*$")
    if cur then
      if fence and #fence >= #cur.fence and info == "" then
        cur.code = table.concat(cur.lines, "\n")
        list[#list + 1], cur = cur, nil
      else
        cur.lines[#cur.lines + 1] = line
      end
    elseif fence then
      cur = { start = n, info = info, fence = fence, lines = {} }
    end
  end
  return list
end

-- The Lua blocks of a Markdown file: those to run, and the fragments.
local function lua_blocks(path)
  local text = assert(support.read_file(path), "cannot read " .. path)
  local run, fragments = {}, {}
  for _, b in ipairs(fenced_blocks(text)) do
    local lang, rest = b.info:match("^(%S*)%s*(.*)$")
    if lang == "lua" then
      if rest:find(FRAGMENT, 1, true) then fragments[#fragments + 1] = b
      elseif not (support.PORTABLE and rest:find(LINUX, 1, true)) then run[#run + 1] = b end
    end
  end
  return run, fragments
end

-- Starts block b of file path; returns a function that waits for it and
-- gives nil when it succeeded, else a message naming path:line. The code is
-- shifted down to its lines in the file, so an error's line number is the
-- one in the Markdown file.
local function start_block(path, b)
  local script = support.script(("\n"):rep(b.start) .. b.code .. "\n")
  local p = assert(io.popen(("timeout -k 5 %d %s %s </dev/null 2>&1"):format(LIMIT, support.LUA,
    support.shell_quote(script))))
  return function()
    local out = p:read("a")
    local _, _, code = p:close()
    os.remove(script)
    if code == 0 then return nil end
    out = out:gsub(script:gsub("%p", "%%%0"), path)
    local why = code == 124 and ("timed out after %d s"):format(LIMIT) or ("exit status " .. tostring(code))
    return ("%s:%d: the lua block there failed (%s):\n%s"):format(path, b.start, why, out)
  end
end

local function run_block(path, b)
  return start_block(path, b)()
end

local function doc_files()
  local list = { "README.md" }
  local p = assert(io.popen("ls docs/*.md 2>/dev/null"))
  for f in p:lines() do list[#list + 1] = f end
  p:close()
  return list
end

describe("the docs' code blocks", function()
  describe("the runner", function()
    it("finds lua blocks with their line, skips fragments and other fences", function()
      local md = table.concat({
        "# t",                 -- 1
        "```lua",              -- 2
        "print(1)",            -- 3
        "```",                 -- 4
        "```sh",               -- 5
        "```lua",              -- 6: inside an sh block, not a fence of its own
        "```",                 -- 7
        "````lua",             -- 8
        "x = [[",              -- 9
        "```",                 -- 10: shorter than the fence: still code
        "]]",                  -- 11
        "````",                -- 12
        "```lua fragment",     -- 13
        "local x = y.z",       -- 14
        "```",                 -- 15
      }, "\n")
      local path = support.tmpname() .. ".md"
      support.write_file(path, md)
      local run, fragments = lua_blocks(path)
      os.remove(path)
      assert.same({ 2, 8 }, { run[1].start, run[2].start })
      assert.equal(2, #run)
      assert.equal("x = [[\n```\n]]", run[2].code)
      assert.equal(1, #fragments)
      assert.equal(13, fragments[1].start)
    end)

    it("names the Markdown file and line of an error", function()
      local path = support.tmpname() .. ".md"
      support.write_file(path, "text\n\n```lua\nlocal a = 1\nerror('boom')\n```\n")
      local run = lua_blocks(path)
      local msg = run_block(path, run[1])
      os.remove(path)
      assert.truthy(msg)
      assert.truthy(msg:find(path .. ":3: the lua block there failed", 1, true), msg)
      assert.truthy(msg:find(path .. ":5: boom", 1, true), msg)
    end)

    it("passes a block that runs", function()
      assert.is_nil(run_block("x.md", { start = 1, code = "assert(require('mproc').getpid() > 0)" }))
    end)
  end)

  -- Most blocks spend their time asleep: each starts the AHEAD blocks after
  -- it before it waits for its own.
  local AHEAD = 5
  local blocks, waits = {}, {}
  for _, path in ipairs(doc_files()) do
    for _, b in ipairs((lua_blocks(path))) do blocks[#blocks + 1] = { path = path, b = b } end
  end
  for i, block in ipairs(blocks) do
    it(("%s:%d runs"):format(block.path, block.b.start), function()
      for j = i, math.min(i + AHEAD, #blocks) do
        waits[j] = waits[j] or start_block(blocks[j].path, blocks[j].b)
      end
      local msg = waits[i]()
      if msg then error(msg, 0) end
    end)
  end

  it("finds the blocks of README.md and docs/", function()
    assert.is_true(#blocks >= 20, "only " .. #blocks .. " lua blocks found")
  end)
end)
