-- mproc.futures: concurrent.futures for Lua, on mproc's Pool.
--
-- A ProcessPoolExecutor owns an mproc.Pool; each Future is a job of that
-- pool (pool.lua's jobs interface): the pool delivers its result when the
-- parent calls into mproc.  Futures wait in the executor's own queue until
-- the pool has room: at most WINDOW tasks are in the pool at once, so
-- cancelling one future, or every future not started, stays cheap however
-- many are queued.  A worker that dies fails the futures it was running
-- and is replaced (the Pool does that); the executor goes on.
local core = require "mproc.core"
local util = require "mproc.util"
local Pool = require("mproc.pool").Pool
local jobs = require("mproc.pool").jobs

local M = {}

local WINDOW = 1024      -- tasks an executor keeps in its pool at once
local MAP_AHEAD = 512    -- chunks map keeps submitted ahead of its reader

local unpack, pack = table.unpack, table.pack

-- ---------------------------------------------------------------------
-- Unique error values and wait's conditions
-- ---------------------------------------------------------------------

-- A value raised, told apart by identity: select(2, pcall(...)) == it.
local function unique(name, text)
  return setmetatable({}, {
    __name = "mproc.futures." .. name,
    __tostring = function() return "mproc.futures." .. name .. ": " .. text end,
  })
end

M.TimeoutError = unique("TimeoutError", "the timeout passed before the futures completed")
M.CancelledError = unique("CancelledError", "the future was cancelled")

M.FIRST_COMPLETED = "FIRST_COMPLETED"
M.FIRST_EXCEPTION = "FIRST_EXCEPTION"
M.ALL_COMPLETED = "ALL_COMPLETED"
local RETURN_WHEN = { FIRST_COMPLETED = true, FIRST_EXCEPTION = true, ALL_COMPLETED = true }

-- ---------------------------------------------------------------------
-- Future
-- ---------------------------------------------------------------------
-- _state: "pending" (in the executor's queue, or in the pool and not
-- claimed: _id set), "finished" or "cancelled".  Running is asked of the
-- pool.  A future settles once: its waiters are told, its callbacks queued.

local Future = { __name = "mproc.Future" }
local fut = {}
Future.__index = fut
M.Future = Future

-- fn and args: what head and body were encoded from, kept until the task
-- ends (by the future until it is fed to the pool, then by the pool), so
-- that an object sent in them stays reachable until a worker has it.
local function new_future(ex, head, body, count, fn, args)
  return setmetatable({ _ex = ex, _state = "pending", _head = head, _body = body, _count = count,
    _fn = fn, _args = args }, Future)
end

local function settled(f)
  return f._state ~= "pending"
end

-- A waiter (see wait and as_completed) is told of each future that settles:
-- done lists them in that order, pending counts those not settled yet,
-- failed tells whether one finished with an error.
local function notify(w, f)
  w.pending = w.pending - 1
  w.done[#w.done + 1] = f
  if f._state == "finished" and not f._ok then w.failed = true end
end

local function settle(f, state)
  f._state, f._head, f._body = state, nil, nil
  local waiters = f._waiters
  if waiters then
    f._waiters = nil
    for w in pairs(waiters) do notify(w, f) end
  end
  local cbs = f._callbacks
  if cbs then
    f._callbacks = nil
    for _, cb in ipairs(cbs) do jobs.later(f._ex._pool, cb, f) end
  end
end

-- The job interface: the task's result is in (r as pool.lua's jobs describe).
local function deliver(self, _, r)
  local ex, told = self._ex, self._waiters ~= nil or self._callbacks ~= nil
  if self._id then ex._inflight[self._id] = nil end -- nil: delivered inside submit
  ex._inpool = ex._inpool - 1
  if r[1] then
    self._ok, self._values = true, r
  else
    self._ok, self._err, self._tb = false, jobs.failure(r)
  end
  settle(self, "finished")
  return told   -- else done() and the rest tell (jobs.seen)
end

jobs.define(Future, deliver)

-- ---------------------------------------------------------------------
-- The executor's queue: feeding the pool, pumping it, winding it down
-- ---------------------------------------------------------------------

-- Hands queued futures to the pool while it has room.
local function feed(self)
  local q, pool = self._queue, self._pool
  while self._qhead <= self._qtail and self._inpool < WINDOW do
    local f = q[self._qhead]
    q[self._qhead], self._qhead = nil, self._qhead + 1
    if f._state == "pending" then
      local head, body, fn, args = f._head, f._body, f._fn, f._args
      f._head, f._body, f._fn, f._args, self._inpool = nil, nil, nil, nil, self._inpool + 1
      local id = jobs.submit(pool, f, head, body, f._count, fn, args)
      if f._state == "pending" then f._id, self._inflight[id] = id, f end
    end
  end
end

-- After shutdown: the pool is closed once the queue is empty, and joined
-- once nothing is left in it (the workers then exit).
local function wind_down(self)
  if self._qhead <= self._qtail or self._joining then return end
  local pool = self._pool
  pool:close()
  if self._inpool == 0 then
    self._joining = true
    pool:join()
  end
end

-- Delivers results, waiting up to timeout (nil: until one comes), and
-- feeds the pool; never blocks on a pool with nothing to do.
local function pump(self, timeout)
  feed(self)
  if self._inpool == 0 then timeout = 0 end
  jobs.pump(self._pool, timeout)
  feed(self)
  if self._shutdown then wind_down(self) end
end

-- Queues f; it reaches the pool now if the pool has room.
local function enqueue(self, f)
  local t = self._qtail + 1
  self._qtail, self._queue[t] = t, f
  feed(self)
  return f
end

-- Cancels every future not started: those queued here, then those in the
-- pool no worker has claimed, each set taken back at once.
local function cancel_pending(self)
  local q = self._queue
  for i = self._qhead, self._qtail do
    local f = q[i]
    q[i] = nil
    if f._state == "pending" then settle(f, "cancelled") end
  end
  self._qhead, self._qtail = 1, 0
  if self._inpool == 0 then return end
  for _, id in ipairs(jobs.take_back(self._pool, self._inflight)) do
    local f = self._inflight[id]
    self._inflight[id], self._inpool = nil, self._inpool - 1
    settle(f, "cancelled")
  end
end

-- No more input is pulled by the executor's map iterators (shutdown).
local function cut_maps(self)
  for it in pairs(self._maps) do
    it.cut = true
    self._maps[it] = nil
  end
end

-- ---------------------------------------------------------------------
-- Future: public methods
-- ---------------------------------------------------------------------

-- Waits until f settles; raises TimeoutError when timeout passes first.
local function wait_settled(f, timeout)
  local ex = f._ex
  if settled(f) then return jobs.seen(ex._pool, f) end
  local deadline = util.deadline(timeout)
  repeat
    local left = util.left(deadline)
    pump(ex, left)
    if left == 0 and not settled(f) then error(M.TimeoutError, 0) end
  until settled(f)
  jobs.seen(ex._pool, f)
end

-- result([timeout]) -> the task's values; raises its error, TimeoutError
-- or CancelledError.
function fut:result(timeout)
  util.check_self("result", self, Future)
  timeout = util.check_timeout("result", 1, timeout)
  wait_settled(self, timeout)
  if self._state == "cancelled" then error(M.CancelledError, 0) end
  if not self._ok then error(self._err, 0) end
  local r = self._values
  return unpack(r, 2, r.n)
end

-- exception([timeout]) -> the task's error value and traceback, or nil
-- when it returned; raises TimeoutError or CancelledError.
function fut:exception(timeout)
  util.check_self("exception", self, Future)
  timeout = util.check_timeout("exception", 1, timeout)
  wait_settled(self, timeout)
  if self._state == "cancelled" then error(M.CancelledError, 0) end
  if self._ok then return nil end
  return self._err, self._tb
end

-- traceback() -> the worker's traceback of the task's error, or nil (not
-- failed yet, or failed by the pool: a worker that died).  Does not wait.
function fut:traceback()
  util.check_self("traceback", self, Future)
  return self._tb
end

function fut:done()
  util.check_self("done", self, Future)
  if not settled(self) then pump(self._ex, 0) end
  jobs.seen(self._ex._pool, self, not settled(self))
  return settled(self)
end

function fut:cancelled()
  util.check_self("cancelled", self, Future)
  return self._state == "cancelled"
end

local function is_running(f)
  return f._state == "pending" and f._id ~= nil and jobs.running(f._ex._pool, f._id)
end

function fut:running()
  util.check_self("running", self, Future)
  if not settled(self) then pump(self._ex, 0) end
  return is_running(self)
end

-- cancel() -> true when the future is cancelled (it had not started),
-- false when it is running or done.  Its callbacks run before it returns.
function fut:cancel()
  util.check_self("cancel", self, Future)
  if self._state ~= "pending" then return self._state == "cancelled" end
  local ex = self._ex
  if self._id then
    if #jobs.take_back(ex._pool, { [self._id] = true }) == 0 then return false end
    ex._inflight[self._id], ex._inpool = nil, ex._inpool - 1
  end
  settle(self, "cancelled")
  pump(ex, 0)
  return true
end

-- add_done_callback(fn): fn(future) once it is done or cancelled; at once
-- if it is already.  Callbacks run in this process when it calls into
-- mproc, in the order they were added.
function fut:add_done_callback(fn)
  util.check_self("add_done_callback", self, Future)
  util.check_callable("add_done_callback", 1, fn)
  if settled(self) then
    fn(self)
    return
  end
  local cbs = self._callbacks or {}
  cbs[#cbs + 1], self._callbacks = fn, cbs
end

-- fileno() -> a descriptor readable when a result of the executor's pool
-- may have come (wake-ups may be spurious: check done()), for mproc.wait
-- and event loops; the pool owns it.  false once the executor has shut
-- down and its workers have exited (every future is done then); nil,
-- message on systems without epoll.
function fut:fileno()
  util.check_self("fileno", self, Future)
  return jobs.fileno(self._ex._pool)
end

function Future.__tostring(self)
  local state = self._state
  if state == "finished" then state = self._ok and "done" or "failed"
  elseif is_running(self) then state = "running" end
  return ("mproc.Future (%s)"):format(state)
end

-- ---------------------------------------------------------------------
-- Waiting on many futures: waiters, and pumping their executors
-- ---------------------------------------------------------------------

-- A waiter over a list of futures (see notify): the settled ones are
-- listed first, in list order.  A closable: closing it detaches it from
-- the futures still pending.
local Waiter = {}

function Waiter:__close()
  for f in pairs(self.set) do
    if f._waiters then f._waiters[self] = nil end
  end
end

local function check_future(fname, f, i)
  if getmetatable(f) ~= Future then
    util.argerror(fname, 1, ("item %d is %s, not an mproc.Future"):format(i, type(f)))
  end
end

-- fs as a list: a list of Futures, or a table whose keys are Futures
-- (Python's as_completed({executor.submit(...): url, ...}) iterates the
-- dict's keys), its keys in pairs order.
local function future_list(fname, fs)
  util.check_type(fname, 1, fs, "table")
  if rawget(fs, 1) ~= nil or next(fs) == nil then return fs end
  local list = {}
  for f in pairs(fs) do
    if getmetatable(f) ~= Future then
      util.argerror(fname, 1, ("a list of Futures or a table keyed by Futures expected, got a key that is %s")
        :format(type(f)))
    end
    list[#list + 1] = f
  end
  return list
end

-- The waiter over fs (each future once); the executors of those pending.
local function new_waiter(fname, fs)
  local w = setmetatable({ set = {}, done = {}, pending = 0, failed = false }, Waiter)
  local execs, pending = {}, {}
  for i, f in ipairs(fs) do
    check_future(fname, f, i)
    if not w.set[f] then
      w.set[f] = true
      if settled(f) then notify(w, f) else pending[#pending + 1] = f end
      w.pending = w.pending + 1
    end
  end
  for _, f in ipairs(pending) do
    f._waiters = f._waiters or {}
    f._waiters[w] = true
    execs[f._ex] = true
  end
  return w, execs
end

-- One round of waiting, up to timeout, for results of any of execs.
local function pump_any(execs, timeout)
  local first = next(execs)
  if next(execs, first) == nil then return pump(first, timeout) end
  local fds = {}
  for e in pairs(execs) do
    pump(e, 0)
    for _, fd in ipairs(jobs.descriptors(e._pool)) do fds[#fds + 1] = fd end
  end
  if #fds > 0 then core.poll(fds, timeout) end
  for e in pairs(execs) do pump(e, 0) end
end

local function wait_condition(w, return_when)
  if w.pending == 0 then return true end
  if return_when == M.FIRST_COMPLETED then return #w.done > 0 end
  return return_when == M.FIRST_EXCEPTION and w.failed
end

local WAIT_OPTIONS = { timeout = true, return_when = true }

-- wait(fs, [{timeout, return_when}]) -> done, not_done: lists, each in the
-- order of fs.
function M.wait(fs, opts)
  fs = future_list("wait", fs)
  local w <close>, execs = new_waiter("wait", fs)
  util.check_type("wait", 2, opts, "table", true)
  opts = opts or {}
  util.check_options("wait", 2, opts, WAIT_OPTIONS)
  local timeout = util.check_timeout("wait", 2, opts.timeout)
  local return_when = opts.return_when or M.ALL_COMPLETED
  if not RETURN_WHEN[return_when] then
    util.argerror("wait", 2, "return_when must be FIRST_COMPLETED, FIRST_EXCEPTION or ALL_COMPLETED")
  end
  local deadline = util.deadline(timeout)
  while not wait_condition(w, return_when) do
    local left = util.left(deadline)
    if left == 0 then break end
    pump_any(execs, left)
  end
  local done, not_done, seen = {}, {}, {}
  for _, f in ipairs(fs) do
    if not seen[f] then
      seen[f] = true
      local list = settled(f) and done or not_done
      list[#list + 1] = f
    end
  end
  return done, not_done
end

-- as_completed(fs, [timeout]) -> an iterator for a generic for giving each
-- future of fs once, as it completes (those done already first); raises
-- TimeoutError when timeout passes with some not done.
function M.as_completed(fs, timeout)
  local w, execs = new_waiter("as_completed", future_list("as_completed", fs))
  timeout = util.check_timeout("as_completed", 2, timeout)
  local deadline, i = util.deadline(timeout), 0
  local function step()
    while true do
      if i < #w.done then
        i = i + 1
        return w.done[i]
      end
      if w.pending == 0 then return nil end
      local left = util.left(deadline)
      if left == 0 then error(M.TimeoutError, 0) end
      pump_any(execs, left)
    end
  end
  return step, nil, nil, w
end

-- ---------------------------------------------------------------------
-- ProcessPoolExecutor
-- ---------------------------------------------------------------------

local Executor = { __name = "mproc.ProcessPoolExecutor" }
local methods = {}
Executor.__index = methods

local function check_open(self, fname)
  if self._shutdown then util.misuse(fname .. ": the executor is shut down") end
end

-- submit(fn, ...) -> Future of fn(...) run in a worker.
function methods:submit(fn, ...)
  util.check_self("submit", self, Executor)
  check_open(self, "submit")
  local args = pack(...)
  local head, body, count = jobs.encode_call(self._pool, "submit", fn, args)
  return enqueue(self, new_future(self, head, body, count, fn, args))
end

-- shutdown([wait = true], [cancel_futures = false]): no more submits; with
-- wait, returns once every future is done and the workers have exited.
function methods:shutdown(wait, cancel_futures)
  util.check_self("shutdown", self, Executor)
  util.check_type("shutdown", 1, wait, "boolean", true)
  util.check_type("shutdown", 2, cancel_futures, "boolean", true)
  self._shutdown = true
  cut_maps(self)
  if cancel_futures then cancel_pending(self) end
  if wait ~= false then
    while self._qhead <= self._qtail or self._inpool > 0 do pump(self, nil) end
  end
  pump(self, 0)
end

-- terminate_workers(): stops the workers now, mid-task (as Pool:terminate):
-- the futures running fail, those not started are cancelled, and the
-- executor is shut down.
function methods:terminate_workers()
  util.check_self("terminate_workers", self, Executor)
  self._shutdown = true
  cut_maps(self)
  cancel_pending(self)
  self._joining = true
  self._pool:terminate()
  pump(self, 0)
end

-- Leaving a <close> variable's scope: shutdown(true); when leaving by an
-- error, the futures not started are cancelled first (shutdown(true, true)).
-- Ctrl-C stops the running ones too (terminate_workers), as a Pool's scope
-- left by an error does: waiting for them would take a second Ctrl-C.
function Executor.__close(self, err)
  if self._owner ~= core.getpid() then return end
  if util.is_interrupt(err) then return self:terminate_workers() end
  self:shutdown(true, err ~= nil)
end

function Executor.__tostring(self)
  local state = self._joining and "shut down" or self._shutdown and "shutting down" or "running"
  return ("mproc.ProcessPoolExecutor (%d workers, %s, %d futures queued, %d in the pool)")
    :format(self._max_workers, state, self._qtail - self._qhead + 1, self._inpool)
end

-- ---------------------------------------------------------------------
-- map: results in input order, input pulled lazily
-- ---------------------------------------------------------------------
-- Each chunk of chunksize items is one future; at most MAP_AHEAD chunks
-- are submitted ahead of the reader.  The iterator is callable and
-- closable: leaving the loop early (break, an error) cancels the chunks
-- not started.

local MapIterator = { __name = "mproc.futures.MapIterator" }
local mi = {}
MapIterator.__index = mi

-- The next chunk of the input: the items and their count; nil at the end.
local function next_chunk(self)
  local items, count = {}, 0
  for i = 1, self.chunksize do
    local v
    if self.list then
      if self.pos + i > self.n then break end
      v = self.src[self.pos + i]
    else
      v = self.src()
      if v == nil then break end
    end
    items[i], count = v, i
  end
  if count == 0 then return nil end
  return items, count
end

local function fill(self)
  local ex = self.ex
  while not self.exhausted and not self.cut and self.tail - self.head < MAP_AHEAD do
    local items, count = next_chunk(self)
    if not items then
      self.exhausted = true
      ex._maps[self] = nil
      break
    end
    local head, body = jobs.encode_chunk(ex._pool, "map", self.fn, items, count)
    self.tail = self.tail + 1
    self.chunks[self.tail], self.starts[self.tail] =
      enqueue(ex, new_future(ex, head, body, count, self.fn, items)), self.pos + 1
    self.pos = self.pos + count
  end
end

-- Cancels the chunks not started and ends the iterator.
function mi:close()
  util.check_self("close", self, MapIterator)
  if self.closed then return end
  self.closed, self.cur = true, nil
  for k = self.head + 1, self.tail do self.chunks[k]:cancel() end
  self.ex._maps[self] = nil
end

-- The next chunk's results, waiting for them; raises its error (after
-- cancelling the rest) or TimeoutError.
local function take(self)
  fill(self)
  if self.head == self.tail then
    if self.cut and not self.exhausted then
      error("map: the executor was shut down before this iterator's input was used up", 0)
    end
    return nil
  end
  local k = self.head + 1
  local f = self.chunks[k]
  local ok, out = pcall(f.result, f, util.left(self.deadline))
  if not ok then
    mi.close(self)
    error(jobs.map_place(out, self.starts[k]), 0)
  end
  self.chunks[k], self.head = nil, k
  self.cur, self.cur_i, self.cur_base = out, 0, self.starts[k]
  self.starts[k] = nil
  return out
end

local function step(self)
  if self.closed then util.misuse("map: the iterator is closed") end
  local cur = self.cur
  if not cur or self.cur_i >= cur.n then
    cur = take(self)
    if not cur then return nil end
  end
  local i = self.cur_i + 1
  self.cur_i = i
  local more = cur.more and cur.more[i]
  if more then return self.cur_base + i - 1, unpack(more, 1, more.n) end
  return self.cur_base + i - 1, cur[i]
end

MapIterator.__call = step
MapIterator.__close = mi.close

local MAP_OPTIONS = { timeout = true, chunksize = true }

-- The length of a list: its n when an integer (table.pack's), else #list.
local function list_length(list, argn)
  local n = rawget(list, "n")
  if math.type(n) ~= "integer" then return util.input_length("map", argn, list) end
  if n < 0 then util.argerror("map", argn, ("n must be >= 0, got %d"):format(n)) end
  return n
end

local function check_source(n, src)
  if type(src) ~= "table" and not util.is_callable(src) then
    util.argerror("map", n, "table or iterator function expected, got " .. type(src))
  end
end

-- The options table that may end map's arguments: a plain table with no
-- item 1 and no n, after at least one input ({} is options, not a list).
local function split_options(args)
  local last = args[args.n]
  if args.n >= 2 and type(last) == "table" and getmetatable(last) == nil
    and rawget(last, 1) == nil and rawget(last, "n") == nil then
    args.n = args.n - 1
    return last
  end
  return nil
end

-- Python's map(fn, xs, ys): one source of argument lists, cut at the
-- shortest input, and fn called with each list's values.
local function zip(fn, args)
  local lists, pos = {}, 0
  for k = 1, args.n do
    if type(args[k]) == "table" then lists[k] = list_length(args[k], k + 1) end
  end
  local function source()
    pos = pos + 1
    local item = { n = args.n }
    for k = 1, args.n do
      local src, v = args[k]
      if lists[k] then
        if pos > lists[k] then return nil end
        v = src[pos]
      else
        v = src()
        if v == nil then return nil end
      end
      item[k] = v
    end
    return item
  end
  return function(item) return fn(unpack(item, 1, item.n)) end, source
end

-- map(fn, list_or_iterator, ..., [{timeout, chunksize}]) -> an iterator for
-- a generic for giving index and fn(item)'s values, in input order; with
-- several inputs, fn(xs[i], ys[i], ...) up to the shortest, as Python's.
function methods:map(fn, ...)
  util.check_self("map", self, Executor)
  check_open(self, "map")
  util.check_callable("map", 1, fn)
  local inputs = pack(...)
  while inputs.n > 1 and inputs[inputs.n] == nil do inputs.n = inputs.n - 1 end
  local opts = split_options(inputs)
  local optn = inputs.n + 2
  for k = 1, math.max(inputs.n, 1) do check_source(k + 1, inputs[k]) end
  local src = inputs[1]
  if inputs.n > 1 then fn, src = zip(fn, inputs) end
  opts = opts or {}
  util.check_options("map", optn, opts, MAP_OPTIONS)
  local timeout = util.check_timeout("map", optn, opts.timeout)
  local chunksize = opts.chunksize or 1
  if math.type(chunksize) ~= "integer" or chunksize < 1 then
    util.argerror("map", optn, "chunksize must be an integer >= 1")
  end
  local list = type(src) == "table"
  local it = setmetatable({
    ex = self, fn = fn, src = src, list = list, n = list and list_length(src, 2) or nil,
    chunksize = chunksize, deadline = util.deadline(timeout), pos = 0,
    chunks = {}, starts = {}, head = 0, tail = 0, exhausted = false, cut = false, closed = false,
  }, MapIterator)
  self._maps[it] = true
  fill(it)
  return it, nil, nil, it
end

-- ---------------------------------------------------------------------
-- Construction
-- ---------------------------------------------------------------------

local OPTIONS = { max_workers = true, initializer = true, initargs = true, max_tasks_per_child = true }

local function check_options(a, b)
  local opts, n = b, 2
  if type(a) == "table" then opts, n, a = a, 1, a.max_workers end
  util.check_type("ProcessPoolExecutor", n, opts, "table", true)
  if n == 2 and opts and opts.max_workers ~= nil then
    if a ~= nil then
      util.argerror("ProcessPoolExecutor", 2, "max_workers given twice: as argument #1 and as an option")
    end
    a = opts.max_workers
  end
  opts = opts or {}
  util.check_options("ProcessPoolExecutor", n, opts, OPTIONS)
  local max = core.POOL_MAX_WORKERS
  if a ~= nil and (math.type(a) ~= "integer" or a < 1 or a > max) then
    util.argerror("ProcessPoolExecutor", 1,
      ("max_workers must be an integer in 1..%d, got %s"):format(max, tostring(a)))
  end
  util.check_option("ProcessPoolExecutor", n, "initializer", opts.initializer, "callable")
  util.check_option("ProcessPoolExecutor", n, "initargs", opts.initargs, "table")
  local m = opts.max_tasks_per_child
  if m ~= nil and (math.type(m) ~= "integer" or m < 1) then
    util.argerror("ProcessPoolExecutor", n, "max_tasks_per_child must be an integer >= 1")
  end
  return a or core.process_cpu_count(), opts
end

-- ProcessPoolExecutor([max_workers], [{initializer, initargs, max_tasks_per_child}])
-- ProcessPoolExecutor{max_workers = n, ...}; nil, message, errno when the
-- system cannot make its pool.
local function new(_, a, b)
  local max_workers, opts = check_options(a, b)
  local pool, err, code = Pool(max_workers, {
    initializer = opts.initializer, initargs = opts.initargs, maxtasksperchild = opts.max_tasks_per_child,
  })
  if not pool then return nil, err, code end
  return setmetatable({
    _pool = pool, _max_workers = max_workers, _owner = core.getpid(), _shutdown = false,
    _queue = {}, _qhead = 1, _qtail = 0, _inpool = 0, _inflight = {},
    _maps = setmetatable({}, { __mode = "k" }),
  }, Executor)
end

M.ProcessPoolExecutor = setmetatable(Executor, { __call = new })

return M
