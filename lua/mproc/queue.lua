-- mproc.queue: Queue, SimpleQueue and JoinableQueue, as in Python's
-- multiprocessing. The work is in src/queue.c: put encodes the value with
-- mproc's codec in the caller (so an unencodable value raises there) and
-- copies the bytes into a shared-memory queue that outlives the putting
-- process; see the README's "Queue" section for how it survives killed
-- processes. This file adds argument checks and the three classes.
local core = require "mproc.core"
local util = require "mproc.util"

local M = {}

-- Queues of this process by the file's identity (the token's last part,
-- dev:ino:nonce), for the codec's __mproc_recv: a process that inherited
-- the queue, or received it before, gets the very same object from here,
-- with no system call; any other opens it through a live process that
-- holds it (queue.c's queue_open). One table for the three classes.
-- `seen` keeps the tokens met already (one per sending process), so that
-- the usual receive is one lookup.
local live = setmetatable({}, { __mode = "v" })
local seen = setmetatable({}, { __mode = "v" })
local ID = "^%x+:%x+:%x+:%x+:%x+:%x+:(.*)$"

-- The queue of class mt that token names, opened if this process has none.
local function receive(mt, token, what)
  local id = token:match(ID)
  local q = live[id]
  if q == nil or getmetatable(q) ~= mt or q._h:closed() then
    local h, why = core.queue_open(token, mt.kind)
    if not h then error(what .. why, 0) end
    q = setmetatable({ _h = h }, mt)
    live[id] = q
  end
  seen[token] = q
  return q
end

local function check_block(fname, block, timeout)
  if block ~= nil and type(block) ~= "boolean" then
    util.argerror(fname, 2, "boolean expected for block, got " .. type(block))
  end
  if timeout ~= nil then util.check_timeout(fname, 3, timeout) end
end

-- The C handle of a queue; a method called with '.' instead of ':' gets a
-- message naming it.
local function bad_self(fname, self)
  local mt = getmetatable(self)
  local name = type(mt) == "table" and rawget(mt, "__name")
  util.argerror(fname, 1, "mproc.Queue expected, got " ..
    (type(name) == "string" and name or type(self)))
end

local function handle(self, fname)
  local h = type(self) == "table" and rawget(self, "_h")
  if not h then bad_self(fname, self) end
  return h
end

local methods = {}

-- put(v, [block], [timeout]) -> true, or nil, "full"; v is required
-- (put(nil) puts nil, put() raises: the C put tells none from nil, so the
-- arguments go to it as they came).
-- put and get check inline and only what was passed: they are the hot path
function methods:put(...)
  local h = getmetatable(self) and self._h or bad_self("put", self)
  local _, block, timeout = ...
  if block ~= nil or timeout ~= nil then check_block("put", block, timeout) end
  return h:put(...)
end

-- get([block], [timeout]) -> v (a got nil has no second value), or
-- nil, "empty"
function methods:get(block, timeout)
  local h = getmetatable(self) and self._h or bad_self("get", self)
  if block ~= nil or timeout ~= nil then check_block("get", block, timeout) end
  return h:get(block, timeout)
end

function methods:put_nowait(...)
  local h = handle(self, "put_nowait")
  if select("#", ...) == 0 then util.argerror("put_nowait", 1, "value expected") end
  return h:put((...), false)
end

function methods:get_nowait() return handle(self, "get_nowait"):get(false) end

function methods:qsize() return (handle(self, "qsize"):qsize()) end

function methods:empty() return (handle(self, "empty"):qsize()) == 0 end

function methods:full()
  local n, maxsize = handle(self, "full"):qsize()
  return maxsize > 0 and n >= maxsize
end

-- Lets go of this process's share of the queue; others keep using it.
function methods:close() handle(self, "close"):close() end

function methods:closed() return handle(self, "closed"):closed() end

-- fileno() -> a descriptor that is readable while an item may be there
-- (readiness can be spurious: get_nowait then says "empty"), for
-- mproc.wait and event loops. The queue owns it: do not close it.
function methods:fileno() return handle(self, "fileno"):fileno() end

-- JoinableQueue only
local joinable = setmetatable({}, { __index = methods })

-- task_done(): one item got earlier is processed; raises when called
-- more times than items were put.
function joinable:task_done() return handle(self, "task_done"):task_done() end

-- join([timeout]) -> true once every item put is task_done, or nil, "timeout"
function joinable:join(timeout)
  local h = handle(self, "join")
  timeout = util.check_timeout("join", 1, timeout)
  return h:join(timeout)
end

-- SimpleQueue: get, put, empty, close; get_nowait too (Python's has
-- none), for a loop woken by fileno(): with two consumers, empty() then
-- get() could block.
local simple = {
  get = function(self) return handle(self, "get"):get() end,
  get_nowait = methods.get_nowait,
  put = function(self, ...)
    local h = handle(self, "put")
    if select("#", ...) == 0 then util.argerror("put", 1, "value expected") end
    return h:put((...))
  end,
  empty = methods.empty,
  close = methods.close,
  closed = methods.closed,
  fileno = methods.fileno,
}

local function class(name, index, kind)
  local mt = { __name = name, __index = index }
  local what = "cannot receive a " .. name:sub(7) .. ": "
  function mt.__tostring(self)
    if self._h:closed() then return name .. " (closed)" end
    local n, maxsize = self._h:qsize()
    return ("%s (%d items%s)"):format(name, n, maxsize > 0 and (", maxsize " .. maxsize) or "")
  end
  function mt.__close(self) self._h:close() end
  -- #q: the number of items, qsize() (SimpleQueue too, which has no qsize)
  function mt.__len(self) return (self._h:qsize()) end
  function mt.__mproc_send(self)
    return self._h:token() or error("cannot send a closed " .. name:sub(7), 0)
  end
  function mt.__mproc_recv(token)
    local q = seen[token]
    if q ~= nil and getmetatable(q) == mt and not q._h:closed() then return q end
    return receive(mt, token, what)
  end
  mt.kind = kind
  core.register_type(mt)
  return mt
end

local QueueMT = class("mproc.Queue", methods, 1)
local SimpleMT = class("mproc.SimpleQueue", simple, 2)
local JoinableMT = class("mproc.JoinableQueue", joinable, 3)

local function new(fname, mt, maxsize)
  if maxsize ~= nil and math.type(maxsize) ~= "integer" then
    util.argerror(fname, 1, "integer expected for maxsize, got " .. (math.type(maxsize) or type(maxsize)))
  end
  local h, err, code = core.queue_new(maxsize or 0, mt.kind)
  if not h then return nil, err, code end
  local q = setmetatable({ _h = h }, mt)
  live[h:token(true)] = q
  return q
end

-- mproc.Queue([maxsize]): maxsize <= 0 or none means unbounded.
function M.Queue(maxsize) return new("Queue", QueueMT, maxsize) end

function M.SimpleQueue() return new("SimpleQueue", SimpleMT) end

function M.JoinableQueue(maxsize) return new("JoinableQueue", JoinableMT, maxsize) end

return M
