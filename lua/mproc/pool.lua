-- mproc.pool: Pool and AsyncResult, after multiprocessing.Pool.
--
-- Workers are forked once and pull tasks from a task board in shared
-- memory (src/pool.c); results come back on one pipe per worker.  Lua has
-- no threads, so the parent feeds the board, collects results and runs
-- callbacks whenever it calls into the pool.  A worker that dies fails the
-- tasks it had claimed (the claim records who took a task) and is replaced;
-- the pool never hangs on it.
local core = require "mproc.core"
local util = require "mproc.util"
local process = require "mproc.process"

local M = {}

local SIGTERM, SIGKILL = core.signals.SIGTERM, core.signals.SIGKILL
local without_interrupt = core.without_interrupt
local NSLOTS = 1024               -- tasks on the board at once
local DATA_BYTES = 256 << 20      -- default board payload space (virtual; pages used on touch)
local IMAP_AHEAD = 512            -- chunks an imap keeps submitted ahead of its reader
local FCACHE_MAX = 64             -- decoded functions a worker keeps

-- ---------------------------------------------------------------------
-- Task heads: the one definition of what a task carries
-- ---------------------------------------------------------------------
-- A task is a head and a body (src/pool.c stores both as opaque bytes in
-- its record {u32 #head, head, body}, with an item count).  The head is a
-- kind byte, then the function as core.dumps encodes it; the body is the
-- arguments (CALL: the argument list, a table; ARGS: count arguments, a
-- slice) or the items (a chunk of count), encoded.  A worker keeps decoded
-- functions by their head.
local CALL, ARGS, MAP, STAR, IMAP = "c", "a", "m", "s", "i"

local function task_head(kind, fbytes) return kind .. fbytes end
local function head_kind(head) return head:sub(1, 1) end
local function head_function(head) return head:sub(2) end

local unpack, pack = table.unpack, table.pack
local WEAK_KEYS = { __mode = "k" }  -- a pool's imaps: one dropped unread is not fed

-- A first-in first-out queue: its items are q[q.head .. q.tail].
local Fifo = {}
Fifo.__index = Fifo

local function fifo() return setmetatable({ head = 1, tail = 0 }, Fifo) end

function Fifo:empty() return self.head > self.tail end

function Fifo:push(v)
  local t = self.tail + 1
  self.tail, self[t] = t, v
end

-- The first item, left in the queue; nil when empty.
function Fifo:peek() return self[self.head] end

function Fifo:pop()
  local h = self.head
  local v = self[h]
  self[h], self.head = nil, h + 1
  return v
end

function Fifo:clear()
  for i = self.head, self.tail do self[i] = nil end
  self.head, self.tail = 1, 0
end

-- Removes the items for which drop(v) is true, keeping the others in order.
function Fifo:remove_if(drop)
  local k = self.head - 1
  for i = self.head, self.tail do
    local v = self[i]
    self[i] = nil
    if not drop(v) then
      k = k + 1
      self[k] = v
    end
  end
  self.tail = k
end

-- ---------------------------------------------------------------------
-- The worker's side (runs in the forked child)
-- ---------------------------------------------------------------------

local error_text = util.error_text

-- The frames below the task are mproc's own: tracebacks leave them out,
-- cut at the first of xpcall or run_call/run_map/run_star/run_imap.
local OWN_FRAMES = { "\n\t%[C%]: in function 'xpcall'", "\n[^\n]*mproc[/\\]pool%.lua:" }

-- The text of the running task's error as lua.c would print it: the
-- error as text, then the task's own frames.  The message handler keeps
-- it here for run_task and passes a value that is not a string on as it
-- is, so the value itself can travel back; a string error becomes the text.
local last_traceback

local function task_traceback(e)
  local tb = debug.traceback(error_text(e), 2)
  local msg, frames = tb:match("^(.*)\nstack traceback:(.*)$")
  if msg then
    local cut = #frames + 1
    for _, pat in ipairs(OWN_FRAMES) do cut = math.min(cut, frames:find(pat) or cut) end
    tb = ("%s\nstack traceback (pool worker pid %d):%s")
      :format(msg, core.getpid(), frames:sub(1, cut - 1))
  end
  last_traceback = tb
  if type(e) == "string" then return tb end
  return e
end

-- A failed task's result, as sent back: {false, text, true} for a string
-- error (text: it and the traceback); {false, text, bytes} for another
-- value, bytes its encoding, or false when the codec cannot carry it (the
-- text stands in).  The pool's own failures are {false, message}.
local function task_failure(e)
  if type(e) == "string" then return { false, e, true } end
  local ok, bytes = pcall(core.dumps, e)
  local text = last_traceback or ("(error object is a %s value)"):format(type(e))
  return { false, text, e ~= nil and ok and bytes }
end

local function pass(...) return ... end

-- The arguments are unpacked under xpcall too: a metamethod of theirs
-- that raises fails the task, not the worker.  f is not tail-called, so
-- a traceback shows run_call below it and is cut there.
local function run_call(f, args)
  return pass(f(unpack(args, 1, args.n or #args)))
end

local function run_args(f, args, count)
  return pass(f(unpack(args, 1, count)))
end

-- A chunk of map: count items, nils included, each replaced by its
-- result (the decoded chunk has room for them all).
local function run_map(f, items, count)
  for i = 1, count do items[i] = f(items[i]) end
  return items
end

-- imap keeps every value f returns: out[i] when it is exactly one,
-- out.more[i] (packed) otherwise.
local function keep(out, i, ...)
  if select("#", ...) == 1 then
    out[i] = ...
  else
    out.more = out.more or {}
    out.more[i] = pack(...)
  end
end

local function run_imap(f, items, count)
  local out = { n = count }
  for i = 1, count do keep(out, i, f(items[i])) end
  return out
end

local function run_star(f, items, count)
  for i = 1, count do
    local a = items[i]
    items[i] = f(unpack(a, 1, a.n or #a))
  end
  return items
end

-- How a worker runs each kind of task: f and the decoded body (and count).
local RUNNERS = { [CALL] = run_call, [ARGS] = run_args, [MAP] = run_map, [STAR] = run_star, [IMAP] = run_imap }
-- The kinds whose result is a chunk's items, sent as they are (see encode_items).
local ITEMS = { [MAP] = true, [STAR] = true }

-- Decodes a task's function, keeping the last few by their bytes: a
-- worker keeps a function's upvalues between tasks while its bytes are
-- the same, as a Python worker keeps its module globals.
local function task_function(cache, head)
  local f = cache[head]
  if f then return f end
  local err
  f, err = core.loads(head_function(head))
  if type(f) ~= "function" then error("cannot decode the task's function: " .. tostring(err), 0) end
  if cache.n >= FCACHE_MAX then
    for k in pairs(cache) do cache[k] = nil end
    cache.n = 0
  end
  cache[head], cache.n = f, cache.n + 1
  return f
end

-- Why a result cannot be sent back. The codec names where the value sits
-- from the inside out ("[1] in field 'x' in [3]"), its last [k] an index
-- in the table sent, not the user's: named(k) says what that place is.
local BACK = "cannot send the task's result back: "
local function back_text(err) return BACK .. error_text(err):gsub("^cannot send ", "") end

local function unsendable(err, named)
  return (back_text(err):gsub("%[(%d+)%]([^%[]*)$", function(k, rest) return named(tonumber(k)) .. rest end, 1))
end

local function return_value(k) return "return value #" .. (k - 1) end   -- r[1] is the ok flag
local function chunk_item(k) return "the result for item #" .. k .. " of its chunk" end

-- A chunk_item place counted in the whole map instead, the chunk's first
-- item being the map's item #start (the worker does not know it).
local function map_place(err, start)
  if type(err) ~= "string" or err:sub(1, #BACK) ~= BACK then return err end
  return (err:gsub("the result for item #(%d+) of its chunk",
    function(k) return "the result for item #" .. (start + tonumber(k) - 1) end, 1))
end

-- An imap chunk's result is {true, out}: "[k] in [2]" is item k's value,
-- "[j] in [k] in field 'more' in [2]" its value #j of several (see keep).
local function imap_place(err)
  local msg, n = back_text(err):gsub("%[(%d+)%] in %[(%d+)%] in field 'more' in %[2%]([^%[]*)$",
    function(j, k, rest) return "value #" .. j .. " of " .. chunk_item(k) .. rest end, 1)
  if n > 0 then return msg end
  return (msg:gsub("%[(%d+)%] in %[2%]([^%[]*)$", function(k, rest) return chunk_item(k) .. rest end, 1))
end

-- The result r ({ok, ...}) as sent back: its values as a slice, and their
-- count (the frame carries it: see src/pool.c).
local function encode_result(r, imap)
  local n = r.n or #r
  local ok, bytes = pcall(core.dumps, r, 1, n)
  if ok then return bytes, n end
  return core.dumps({ false, imap and imap_place(bytes) or unsendable(bytes, return_value) }, 1, 2), 2
end

-- A worker decodes every map chunk into one table, wchunk, which keeps its
-- room from chunk to chunk: a table of its own per chunk cost the
-- allocation, its pages' first touch and the collection.  The next chunk
-- overwrites it; wchunk[1..wdirty] may hold a chunk's items and results,
-- which clear_chunk lets go before the worker waits for tasks (clearing
-- after every chunk cost a tenth of a map's time in the worker).
local CHUNK_KEEP = 1 << 16   -- items: a bigger chunk gets a table of its own (1 MiB of slots)
local wchunk, wroom, wdirty = {}, 0, 0

local function clear_chunk(from)
  for i = from, wdirty do wchunk[i] = nil end
  wdirty = math.min(wdirty, from - 1)
end

-- The table to decode a chunk of count items into.
local function chunk_table(count)
  if count > CHUNK_KEEP then return core.pool_list(count) end
  if count > wroom then
    wchunk, wroom, wdirty = core.pool_list(count), count, 0
  elseif wdirty > count then
    clear_chunk(count + 1)   -- a longer chunk's tail
  end
  wdirty = math.max(wdirty, count)
  return wchunk
end

local function decode_body(kind, body, count)
  if not ITEMS[kind] then return core.loads(body) end
  local t = chunk_table(count)
  local ok, err = core.loads_into(body, t, 1)
  if ok then return t end
  return nil, err
end

-- A map chunk's results, r[2][1..count]: sent as a list alone, flagged
-- as items (src/pool.c), so the parent decodes them into the map's list.
local function encode_items(r, count)
  if not r[1] then return encode_result(task_failure(r[2])) end
  local ok, bytes = pcall(core.dumps, r[2], 1, count)
  if ok then return bytes, count, true end
  return encode_result({ false, unsendable(bytes, chunk_item) })
end

-- Runs one task; returns its result to send back, encoded, its count and
-- whether it is a chunk's items.
local function run_task(cache, head, body, count)
  local ok, f = pcall(task_function, cache, head)
  if not ok then return encode_result({ false, error_text(f) }) end
  local kind = head_kind(head)
  local args, err = decode_body(kind, body, count)
  if args == nil and err then
    return encode_result({ false, "cannot decode the task's arguments: " .. err })
  end
  last_traceback = nil
  local r = pack(xpcall(RUNNERS[kind], task_traceback, f, args, count))
  if ITEMS[kind] then return encode_items(r, count) end
  if not r[1] then r = task_failure(r[2]) end
  return encode_result(r, kind == IMAP)
end

-- A worker's failure on its stderr, under its name, as a failing Process's.
local function report_failure(text)
  io.stderr:write(("Process %s:\n%s\n"):format(process.current_process().name, text))
end

-- An initializer's error: reported with its traceback (as Python's pool
-- workers do), leaving out the frames below it, which are mproc's own.
local function initializer_error(e)
  local tb = debug.traceback(error_text(e), 2)
  report_failure(tb:match("^(.-)\n[^\n]*%[C%]: in function 'xpcall'") or tb)
end

-- The body of a worker: set up, run the initializer, then take, run and
-- send tasks until the pool shuts down, the parent is gone, or
-- maxtasksperchild is reached.  Returns the exit code.
local function worker_main(pool, w)
  local board = pool._board
  if not board:worker_init(w) then return 1 end
  for i, wk in pairs(pool._workers) do
    if i ~= w then wk.handle:close() end
  end
  process.enter_child(process.Process{ name = "PoolWorker-" .. w, daemon = true })
  if pool._initializer then
    local a = pool._initargs
    local ok, e = xpcall(pool._initializer, initializer_error, unpack(a, 1, a.n or #a))
    if not ok then
      -- Lua calls no message handler for a memory error: e is its message
      if e ~= nil then report_failure(error_text(e)) end
      return 1
    end
  end
  local cache, max, done = { n = 0 }, pool._maxtasks, 0
  while not max or done < max do
    local slot, id, head, body, count = board:take(w, true)
    if slot == false then   -- nothing queued: tidy up, then wait
      if wdirty > 0 then clear_chunk(1) end
      slot, id, head, body, count = board:take(w)
    end
    if not slot then break end
    local bytes, n, items = run_task(cache, head, body, count)
    if not board:send(w, slot, id, bytes, n, items) then return 1 end
    done = done + 1
  end
  return 0
end

-- ---------------------------------------------------------------------
-- Failures, in the parent
-- ---------------------------------------------------------------------

-- A failed result's error value and traceback text (see task_failure):
-- the value the task raised when the codec carried it, else its text; the
-- traceback is nil for the pool's own failures (a worker died, terminate).
local function failure(r)
  local text, how = r[2], r[3]
  if type(how) == "string" then
    local ok, v = pcall(core.loads, how)
    if ok and v ~= nil then return v, text end
    return text, text
  end
  return text, how ~= nil and text or nil
end

-- ---------------------------------------------------------------------
-- Jobs: what a pool's tasks belong to
-- ---------------------------------------------------------------------
-- A job is an object whose class (its metatable) was declared with
-- define_job(class, deliver): AsyncResult, the imap iterator, and
-- mproc.futures' Future (through jobs.define).  The pool calls
-- deliver(job, part, r) once for each task of the job when its result is
-- in, never for a task taken back: r is {true, values..., n = k} or a
-- failure, whose error value and traceback failure(r) gives.  deliver
-- returns true when the job's user is told by a callback; else the job is
-- "unseen" until its class calls pool:_seen(job) from the method that
-- tells its user (ready(), done() ...): the pool's descriptor stays
-- readable meanwhile.  Nothing else is asked of a job, and nothing of it
-- is on its users' methods.

local deliverers = {}   -- job class -> its deliver function

local function define_job(class, deliver)
  deliverers[class] = deliver
  return class
end

local function is_job(v) return deliverers[getmetatable(v)] ~= nil end

local function deliver(job, part, r)
  return deliverers[getmetatable(job)](job, part, r)
end

-- ---------------------------------------------------------------------
-- AsyncResult
-- ---------------------------------------------------------------------

local AsyncResult = { __name = "mproc.AsyncResult" }
local ar = {}
AsyncResult.__index = ar

-- Fields: _pool, _parts (tasks not in yet), _ready, _ok, _value (a
-- map's list, or the worker's {true, values..., n}), _err and _tb (a
-- failure's), _callback, _error_callback; _map and _starts for a map.
local function new_result(pool, parts, opts)
  local self = setmetatable({ _pool = pool, _parts = parts, _ready = false }, AsyncResult)
  if opts then self._callback, self._error_callback = opts.callback, opts.error_callback end
  return self
end

-- Whether the result's user needs no ask to learn of this delivery (see
-- define_job): a part of a map that leaves it not ready tells nothing new;
-- else the callback its outcome calls tells (a result with only an
-- error_callback that succeeds is told by nothing but an ask).
local function told(self)
  if not self._ready then return true end
  if self._ok then return self._callback ~= nil end
  return self._error_callback ~= nil
end

local function fail_result(self, err, traceback)
  if self._ready then return true end   -- its outcome is known: nothing new
  self._ready, self._ok, self._err, self._tb = true, false, err, traceback
  if self._error_callback then self._pool:_later(self._error_callback, err, traceback) end
  return told(self)
end

local function result_values(self)
  if self._map then return self._value end
  return unpack(self._value, 2, self._value.n)
end

-- A part of the job finished: r is the worker's packed {ok, ...}, or a
-- map chunk's items as bytes (see encode_items).
local function deliver_result(self, idx, r)
  if self._ready then return true end   -- a map's chunk after it failed
  if type(r) == "string" then
    local ok, err = core.loads_into(r, self._value, self._starts[idx])
    if not ok then return fail_result(self, "cannot decode a task's result: " .. err) end
  elseif not r[1] then
    local err, tb = failure(r)
    if self._map then err = map_place(err, self._starts[idx]) end
    return fail_result(self, err, tb)
  else
    self._value = r
  end
  self._parts = self._parts - 1
  if self._parts == 0 then
    self._ready, self._ok = true, true
    if self._callback then self._pool:_later(self._callback, result_values(self)) end
  end
  return told(self)
end

define_job(AsyncResult, deliver_result)

-- Waits until the result is ready or timeout passes; returns ready().
local function wait(self, timeout)
  local pool = self._pool
  local deadline = timeout and util.deadline(timeout)
  while not self._ready do
    local left = deadline and util.left(deadline)
    pool:_pump(left)
    if left == 0 then break end
  end
  pool:_seen(self, not self._ready)
  pool:_run_later()
  return self._ready
end

function ar:wait(timeout)
  util.check_self("wait", self, AsyncResult)
  return wait(self, util.check_timeout("wait", 1, timeout))
end

-- The task's values; re-raises its error value (a string error carries the
-- worker's traceback in it); nil, "timeout" if not ready in time.
function ar:get(timeout)
  if getmetatable(self) ~= AsyncResult then util.check_self("get", self, AsyncResult) end
  if timeout ~= nil then timeout = util.check_timeout("get", 1, timeout) end
  if not wait(self, timeout) then return nil, "timeout" end
  if not self._ok then error(self._err, 0) end
  return result_values(self)
end

-- The worker's traceback of the task's error: the error as text, then the
-- task's frames; nil unless the task raised (a worker that died or
-- terminate() fails a task with a message and no traceback).
function ar:traceback()
  util.check_self("traceback", self, AsyncResult)
  return self._tb
end

function ar:ready()
  util.check_self("ready", self, AsyncResult)
  if not self._ready then self._pool:_pump(0) end
  self._pool:_seen(self, not self._ready)
  return self._ready
end

-- fileno() -> a descriptor that is readable when a result of the pool may
-- have come (spurious wake-ups happen: check ready()), for mproc.wait and
-- event loops; the pool owns it. nil, message on systems without epoll.
function ar:fileno()
  util.check_self("fileno", self, AsyncResult)
  return self._pool:_fileno("fileno")
end

function ar:successful()
  util.check_self("successful", self, AsyncResult)
  if not self:ready() then util.misuse("successful: the result is not ready") end
  return self._ok
end

function AsyncResult.__tostring(self)
  local state = not self._ready and "pending" or (self._ok and "done" or "failed")
  return ("mproc.AsyncResult (%s)"):format(state)
end

-- ---------------------------------------------------------------------
-- Pool: workers
-- ---------------------------------------------------------------------

local Pool = { __name = "mproc.Pool" }
local methods = {}
Pool.__index = methods

-- A pool's states (pool._state; the names show in tostring and messages)
-- and the moves between them, which set_state alone makes and checks:
--   RUN        takes tasks; imap iterators pull their input.
--   CLOSE      close(): no new tasks; the tasks out and the imap iterators
--              still open go on, and the workers stay for them.
--   TERMINATE  terminate() is stopping the workers; the tasks not done fail.
--   JOINED     the board is closed (join, terminate, or the pool was
--              collected): no worker, no task, nothing more happens.
local RUN, CLOSE, TERMINATE, JOINED = "run", "close", "terminate", "joined"
local STATES = {
  [RUN] = { tasks = true, pulls = true, to = { [CLOSE] = true, [TERMINATE] = true, [JOINED] = true } },
  [CLOSE] = { pulls = true, to = { [TERMINATE] = true, [JOINED] = true } },
  [TERMINATE] = { to = { [JOINED] = true } },
  [JOINED] = { to = {} },
}

local function set_state(pool, to)
  local from = pool._state
  if not STATES[from].to[to] then
    error(("mproc.Pool: no move from state %s to %s"):format(from, to), 2)
  end
  pool._state = to
end

-- Workers of pools collected unjoined, not reaped yet: handle -> when
-- they were sent SIGTERM.  Reaped without blocking at the next chance (a
-- new Pool, any pool's wait, the next garbage collection), so a program
-- that drops a Pool per call does not pile up zombies; one that ignores
-- SIGTERM gets SIGKILL a second later.
local orphans = {}

local function reap_orphans()
  for h, since in pairs(orphans) do
    if h:poll() then
      orphans[h] = nil
      h:close()
    elseif core.monotonic() - since > 1 then
      h:signal(SIGKILL)
    end
  end
end

-- A finalizer that reaps at each collection while orphans are left.
local function reap_at_next_gc()
  setmetatable({}, { __gc = function()
    reap_orphans()
    if next(orphans) then reap_at_next_gc() end
  end })
end

local function how_died(pid, code)
  if code < 0 then
    return ("pool worker (pid %d) was killed by signal %d (%s)")
      :format(pid, -code, core.signal_names[-code] or "?")
  end
  return ("pool worker (pid %d) exited with code %d"):format(pid, code)
end

-- A worker that an error left unrecorded (Ctrl-C: lua.c's hook fires as
-- core.fork returns, losing its result), which core.fork also left in
-- box.child: recorded, then killed, so the pool replaces it as any worker
-- that died (or, collected, reaps it), rather than leave it running
-- unknown to the pool: it would take tasks whose end no one watches.
local Unrecorded = {
  __close = function(box, err)
    local h, pool, w = box.child, box.pool, box.w
    if err == nil or not h then return end
    if not pool._workers[w] then
      pool._board:started(w, h:fileno())
      pool._workers[w] = { handle = h, pid = h:pid() }
    end
    h:signal(SIGKILL)
  end,
}

-- Forks worker w; raises if the system cannot.
function methods:_spawn(w)
  local board = self._board
  local ok, err = board:open_worker(w)
  if not ok then error("Pool: " .. err, 3) end
  local box <close> = setmetatable({ pool = self, w = w }, Unrecorded)
  local h, ferr = core.fork(true, box)
  if h == false then core.child_main(worker_main, nil, self, w) end
  if not h then
    board:drop_worker(w)
    error("Pool: cannot start a worker: " .. ferr, 3)
  end
  board:started(w, h:fileno())
  self._workers[w] = { handle = h, pid = h:pid() }
  box.child = nil
end

-- After close(), workers stay while tasks are out or an imap may still
-- submit some (its reader goes on after close()).
function methods:_needs_workers()
  return self._state == RUN or (self._state == CLOSE and (self._nout > 0 or next(self._imaps) ~= nil))
end

-- Worker w has ended: fail what it had claimed, replace it if needed.
function methods:_worker_ended(w, code)
  local wk = self._workers[w]
  self._board:recv(w, self._inbox)
  self:_dispatch()
  local done = self._board:results(w)
  local lost = self._board:fail(w)
  if #lost > 0 then
    local msg = how_died(wk.pid, code) .. " while running this task"
    for _, id in ipairs(lost) do self:_finish(id, { false, msg }) end
  end
  wk.handle:close()
  self._workers[w] = nil
  if self._initializer and code > 0 and done == 0 and #lost == 0 and
     self._state ~= TERMINATE then
    self._broken = how_died(wk.pid, code) .. " in the pool's initializer (see its stderr)"
  end
  if self._broken then
    self._board:drop_worker(w)
    return self:_fail_all(self._broken)
  end
  if self:_needs_workers() then self:_spawn(w) else self._board:drop_worker(w) end
end

-- ---------------------------------------------------------------------
-- Pool: tasks and results
-- ---------------------------------------------------------------------

-- A forked child has a copy of its parent's pool: the same workers' pipes
-- and board. Used there, it took the parent's results (the parent then
-- waited for them for ever) and gave the parent's workers tasks.
local function check_home(self, fname)
  if self._owner ~= core.getpid() then
    util.misuse(("%s: the pool belongs to process %d: a forked child cannot use its parent's pool")
      :format(fname, self._owner))
  end
end

-- Queues one task of job (part idx; count items for a map chunk); it
-- reaches the board now or later.  later: wake no worker for it yet (the
-- caller calls board:wake() after its last task).
-- f and args (optional) are what the task's head and body were encoded
-- from: the pool keeps them until the task ends, so that an object made
-- after the workers started and sent in them (a Queue, a Dict, a big
-- Array), with no other handle left in this process, stays reachable until
-- a worker has received it (as Python's Pool keeps a task's arguments).
function methods:_submit(job, idx, head, body, count, later, f, args)
  check_home(self, "Pool")
  local id = self._nextid + 1
  self._nextid, self._nout = id, self._nout + 1
  self._job[id], self._part[id] = job, idx
  if f ~= nil then self._keepf[id], self._keepa[id] = f, args end
  if self._broken then
    self:_finish(id, { false, self._broken })
    return id
  end
  if self._pending:empty() and self._board:put(id, head, body, count, later) then return id end
  self._pending:push{ id, head, body, count }
  return id
end

function methods:_feed()
  local board, pending = self._board, self._pending
  while not pending:empty() do
    local t = pending:peek()
    if not board:put(t[1], t[2], t[3], t[4]) then break end
    pending:pop()
  end
end

function methods:_forget(id)
  self._job[id], self._part[id], self._nout = nil, nil, self._nout - 1
  self._keepf[id], self._keepa[id] = nil, nil
end

-- Of the tasks ids (a set), takes back those no worker has claimed yet,
-- queued here or on the board; returns them, a list.  Claimed ones run to
-- their end.
function methods:_take_back(ids)
  local out = {}
  self._pending:remove_if(function(t)
    if not ids[t[1]] then return false end
    self:_forget(t[1])
    out[#out + 1] = t[1]
    return true
  end)
  if self._state ~= JOINED then
    for _, id in ipairs(self._board:cancel(ids)) do
      self:_forget(id)
      out[#out + 1] = id
    end
  end
  return out
end

-- Takes back the tasks of job no worker has claimed yet; returns how many.
function methods:_cancel(job)
  local ids = {}
  for id, j in pairs(self._job) do
    if j == job then ids[id] = true end
  end
  if not next(ids) then return 0 end
  return #self:_take_back(ids)
end

function methods:_finish(id, r)
  local job, idx = self._job[id], self._part[id]
  if not job then return end
  self:_forget(id)
  if not deliver(job, idx, r) then
    local gen = self._asks
    self._unseen[job] = gen
    if gen < self._oldest then self._oldest = gen end
  end
end

-- The descriptor's promise to a loop (see board:again): readable while a
-- job was delivered to that no one has asked about since, so that a loop
-- asking its jobs in turn is woken again for one a later ask took in.
-- Kept once a loop asked for the descriptor (_watched): a pool no loop
-- watches makes no system call for it.
function methods:_tell_again()
  local on = next(self._unseen) ~= nil
  if on ~= self._again then
    self._again = on
    self._board:again(on)
  end
end

-- Puts to sleep the unseen jobs delivered before ask number gen: a job
-- found not ready at gen was found so again, so the loop has been round
-- all it waits for (woken in between), and a job it did not ask about then
-- is one it does not wait for now (a result dropped unasked, or one a loop
-- taking results in order has not come to): it must not keep the
-- descriptor readable, until the loop moves on (_wake_dormant).
function methods:_age(gen)
  local oldest, dormant = math.huge, self._dormant
  for job, at in pairs(self._unseen) do
    if at < gen then self._unseen[job], dormant[job] = nil, true
    elseif at < oldest then oldest = at end
  end
  self._oldest = oldest
end

-- A job delivered to was asked about: the loop moved on, and may wait for
-- the jobs put to sleep now (the next in its order): unseen again, as if
-- delivered now. A result dropped unasked costs a loop a wake-up or two
-- each time it moves on, not a busy loop.
function methods:_wake_dormant()
  local dormant = self._dormant
  if next(dormant) == nil then return end
  local gen, unseen = self._asks, self._unseen
  for job in pairs(dormant) do unseen[job], dormant[job] = gen, nil end
  if gen < self._oldest then self._oldest = gen end
end

-- job's user has been told where it stands (see define_job); waiting:
-- it was found not ready (what ages the others, see _age).
function methods:_seen(job, waiting)
  local unseen, dormant = self._unseen, self._dormant
  local was = unseen[job]
  if dormant[job] then was, dormant[job] = self._asks, nil end
  unseen[job] = nil
  if not self._watched then return end
  if not waiting then
    if was == nil then return end
    self:_wake_dormant()
    if self._state ~= JOINED then self:_tell_again() end
    return
  end
  local gen, asked = self._asks + 1, self._asked
  local prev = asked[job]
  self._asks, asked[job] = gen, gen
  if prev and prev > self._oldest then self:_age(prev) elseif was == nil then return end
  if self._state ~= JOINED then self:_tell_again() end
end

local function finish_inbox(self, inbox, n)
  for i = 1, n, 2 do self:_finish(inbox[i], inbox[i + 1]) end
  self._inbox = {}
end

-- Finishes the results in the inbox, {id, r, ...}, which board:collect
-- and board:recv append to: results stay there until finished, so those
-- Ctrl-C strikes on (lua.c's hook fires as collect returns) are finished
-- by the next call, not lost. Finishing them is done whole, with Ctrl-C
-- held off (a result half handed to its job was lost: taken off the
-- pool's books, never counted by the job).
function methods:_dispatch()
  local inbox = self._inbox
  local n = #inbox
  if n == 0 then return end
  without_interrupt(finish_inbox, self, inbox, n)
end

function methods:_fileno(fname)
  if self._state == JOINED then util.misuse(fname .. ": the pool was joined or terminated") end
  return self:_watch()
end

-- The descriptor for loops, made on first use (see _tell_again).
function methods:_watch()
  local fd, err, code = self._board:fileno()
  if fd and not self._watched then
    self._watched = true
    self:_tell_again()
  end
  return fd, err, code
end

-- Collects what is ready, waiting up to timeout (nil: until something is).
function methods:_pump(timeout)
  if self._state == JOINED then return end
  check_home(self, "Pool")
  if next(orphans) then reap_orphans() end
  if self._pending.tail >= self._pending.head then self:_feed() end
  self:_dispatch()   -- what an interrupted call left
  local results, quiet = self._board:collect(timeout, self._inbox)
  if not results then error("Pool: " .. quiet, 0) end   -- poll(2) itself failed
  self:_dispatch()
  -- Results mean a worker was alive; a wake-up without any may be its end
  -- (one that ended as it sent wakes the next wait again, by its sentinel).
  if quiet then
    for _, w in ipairs(quiet) do
      local code = self._workers[w].handle:poll()
      if code then self:_worker_ended(w, code) end
    end
  end
  if self._pending.tail >= self._pending.head then self:_feed() end
  if self._watched then self:_tell_again() end
end

-- Callbacks run after results are in, one at a time: one that raises
-- leaves the others for the next call into the pool.
function methods:_later(f, ...)
  self._later_q:push(pack(f, ...))
end

function methods:_run_later()
  local q = self._later_q
  while q.head <= q.tail do   -- not q:empty(), on every get
    local c = q:pop()
    c[1](unpack(c, 2, c.n))
  end
end

function methods:_fail_all(msg)
  self._pending:clear()
  for id in pairs(self._job) do self:_finish(id, { false, msg }) end
end

-- ---------------------------------------------------------------------
-- Pool: public methods
-- ---------------------------------------------------------------------

local function check_running(self, fname)
  check_home(self, fname)
  if not STATES[self._state].tasks then util.misuse(("%s: the pool is not running (%s)"):format(fname, self._state)) end
end

-- Heads of functions sent before, so a pool called with the same function
-- again (apply_async in a loop, a map's chunks) does not encode it again:
-- f -> {[kind] = head, ups = {upvalue values}}.  Only a Lua function
-- whose encoding is its own bytecode and whose upvalues are scalars or the
-- global table is kept (encoding one is a pure function of those), and a
-- head is reused only while its upvalues hold the same values: any other
-- function, or one whose upvalue changed, is encoded anew.
local heads = setmetatable({}, WEAK_KEYS)
local GLOBALS = debug.getregistry()[2]  -- LUA_RIDX_GLOBALS: encoded as "the receiver's globals"
local getupvalue, mtype = debug.getupvalue, math.type

local function same_value(a, b)
  return rawequal(a, b) and mtype(a) == mtype(b)   -- 1 and 1.0 encode apart
end

local function plain_upvalues(f)
  local ups = {}
  for i = 1, 255 do
    local name, v = getupvalue(f, i)
    if name == nil then return ups end
    local t = type(v)
    if not (t == "nil" or t == "boolean" or t == "number" or t == "string" or rawequal(v, GLOBALS)) then
      return nil
    end
    ups[i], ups.n = v, i
  end
end

-- The cache entry of f, still valid, or nil.
local function cached_heads(f)
  local c = heads[f]
  if not c then return nil end
  local ups = c.ups
  for i = 1, ups.n or 0 do
    local _, v = getupvalue(f, i)
    if not same_value(v, ups[i]) then
      heads[f] = nil
      return nil
    end
  end
  return c
end

-- Keeps f's encoding when it may be reused (see heads).
local function remember(f, bytes)
  if type(f) ~= "function" then return end
  local ok, code = pcall(string.dump, f)
  if not ok or not bytes:find(code, 1, true) then return end  -- a C function, or sent by path
  local ups = plain_upvalues(f)
  if ups then heads[f] = { ups = ups, bytes = bytes } end
end

local function encode_function(fname, f, kind)
  local c = cached_heads(f)
  if c then
    local head = c[kind]
    if not head then
      head = task_head(kind, c.bytes)
      c[kind] = head
    end
    return head
  end
  util.check_callable(fname, 1, f)
  local ok, bytes = pcall(core.dumps, f)
  if not ok then util.argerror(fname, 1, "cannot send the function: " .. error_text(bytes)) end
  remember(f, bytes)
  return task_head(kind, bytes)
end

local function encode_args(fname, n, v, i, j)
  local ok, bytes = pcall(core.dumps, v, i, j)
  if not ok then util.argerror(fname, n, "cannot send the arguments: " .. error_text(bytes)) end
  return bytes
end

local RESULT_OPTIONS = { callback = true, error_callback = true }

-- opts: nil or {callback = f, error_callback = f}
local function check_result_options(fname, n, opts)
  util.check_type(fname, n, opts, "table", true)
  if not opts then return end
  util.check_options(fname, n, opts, RESULT_OPTIONS)
  util.check_callable(fname, n, opts.callback, true)
  util.check_callable(fname, n, opts.error_callback, true)
end

-- A task must fit the board whole; one that cannot raises before any
-- bookkeeping, so the pool is left as it was.
local function check_fits(pool, fname, head, body)
  local size, room = #head + #body, pool._room
  if size > room then
    util.argerror(fname, 2, ("a task of %d bytes does not fit the pool's board (%d bytes)")
      :format(size, room))
  end
  return body
end

-- apply_async(f, [args], [{callback, error_callback}]) -> AsyncResult
-- The head, body and count of a call f(unpack(args, 1, n)): an ARGS task
-- when args is a plain list (the common case, encoded as a slice, without
-- the codec's look for args among the modules), else a CALL task, whose
-- worker unpacks args itself (and runs its metamethods, if any).
local MAX_ARGS = 250   -- more is no call Lua can make anyway: leave it to CALL's unpack
local NO_ARGS = core.dumps({}, 1, 0)

local function encode_call(self, fname, f, args)
  local n = args and rawget(args, "n")
  if n == nil and args then n = rawlen(args) end
  if args == nil or (getmetatable(args) == nil and mtype(n) == "integer" and n >= 0 and n <= MAX_ARGS) then
    local head = encode_function(fname, f, ARGS)
    return head, check_fits(self, fname, head, args and encode_args(fname, 2, args, 1, n) or NO_ARGS), n or 0
  end
  local head = encode_function(fname, f, CALL)
  return head, check_fits(self, fname, head, encode_args(fname, 2, args))
end

-- apply_async and apply: misuse is reported under fname, the one called.
local function submit_call(self, fname, f, args, opts)
  if getmetatable(self) ~= Pool then util.check_self(fname, self, Pool) end
  if self._state ~= RUN then check_running(self, fname) end
  if args ~= nil and type(args) ~= "table" then util.check_type(fname, 2, args, "table", true) end
  if opts ~= nil then check_result_options(fname, 3, opts) end
  local head, body, count = encode_call(self, fname, f, args)
  local res = new_result(self, 1, opts)
  self:_submit(res, 1, head, body, count, nil, f, args)
  return res
end

function methods:apply_async(f, args, opts)
  return submit_call(self, "apply_async", f, args, opts)
end

-- apply(f, [args]) -> f(unpack(args)) run in a worker
function methods:apply(f, args)
  return submit_call(self, "apply", f, args):get()
end

local function default_chunksize(self, n)
  local c, extra = n // (self._processes * 4), n % (self._processes * 4)
  if extra > 0 then c = c + 1 end
  return math.max(c, 1)
end

local function check_chunksize(fname, n, c)
  if c == nil then return nil end
  if math.type(c) ~= "integer" or c < 1 then
    util.argerror(fname, n, "chunksize must be an integer >= 1")
  end
  return c
end

-- The length of a list: its n when an integer (table.pack's), else #list.
local function list_length(fname, list)
  local n = rawget(list, "n")
  if math.type(n) ~= "integer" then return util.input_length(fname, 2, list) end
  if n < 0 then util.argerror(fname, 2, ("n must be >= 0, got %d"):format(n)) end
  return n
end

-- The input of map and imap: a list or an iterator function.
local function check_source(fname, src)
  local t = type(src)
  if t ~= "table" and not util.is_callable(src) then
    util.argerror(fname, 2, "table or iterator function expected, got " .. t)
  end
end

-- One item of an iterator: its first value; for starmap, all its values
-- as the argument list when it gives more than one (s:gmatch with two
-- captures gives pairs, as Python's re.findall gives tuples).
local function pull(src, star)
  if not star then return (src()) end
  local t = pack(src())
  if t.n > 1 and t[1] ~= nil then return t end
  return t[1]
end

-- Calls the iterator function src until it returns nil; returns the list
-- (with n).
local function collect(src, star)
  local list, n = {}, 0
  while true do
    local v = pull(src, star)
    if v == nil then list.n = n return list end
    n = n + 1
    list[n] = v
  end
end

-- starmap's items are argument lists: each is checked before anything is sent.
local function check_arg_lists(fname, list, n)
  for i = 1, n do
    local t = type(rawget(list, i))
    if t ~= "table" then
      util.argerror(fname, 2, ("item %d is %s, not a table of arguments"):format(i, t == "nil" and t or "a " .. t))
    end
  end
end

-- Encodes list[1..n] in slices of chunksize; raises before anything is
-- submitted if one cannot be sent.  Returns the bodies, their first
-- indexes and their item counts.
local function encode_chunks(fname, list, n, chunksize)
  local bodies, starts, counts = {}, {}, {}
  for i = 1, n, chunksize do
    local k, j = #starts + 1, math.min(i + chunksize - 1, n)
    starts[k], counts[k] = i, j - i + 1
    bodies[k] = encode_args(fname, 2, list, i, j)
  end
  return bodies, starts, counts
end

local function map_async(self, fname, f, list, chunksize, opts, kind)
  check_running(self, fname)
  local head = encode_function(fname, f, kind)
  check_source(fname, list)
  chunksize = check_chunksize(fname, 3, chunksize)
  check_result_options(fname, 4, opts)
  if type(list) ~= "table" then list = collect(list, kind == STAR) end
  local n = list_length(fname, list)
  if kind == STAR then check_arg_lists(fname, list, n) end
  chunksize = chunksize or default_chunksize(self, n)
  local bodies, starts, counts = encode_chunks(fname, list, n, chunksize)
  for _, body in ipairs(bodies) do check_fits(self, fname, head, body) end
  local res = new_result(self, #bodies, opts)
  res._map, res._value, res._starts = true, core.pool_list(n), starts
  if n == 0 then
    res._ready, res._ok = true, true
    if res._callback then self:_later(res._callback, res._value) end
    return res
  end
  for k, body in ipairs(bodies) do self:_submit(res, k, head, body, counts[k], true, f, list) end
  if self._state ~= JOINED then self._board:wake() end
  return res
end

function methods:map_async(f, list, chunksize, opts)
  util.check_self("map_async", self, Pool)
  return map_async(self, "map_async", f, list, chunksize, opts, MAP)
end

function methods:starmap_async(f, list, chunksize, opts)
  util.check_self("starmap_async", self, Pool)
  return map_async(self, "starmap_async", f, list, chunksize, opts, STAR)
end

-- map(f, list_or_iterator, [chunksize]) -> {f(list[1]), ..., n = #list};
-- an iterator function is called until it returns nil, all before submitting.
function methods:map(f, list, chunksize)
  util.check_self("map", self, Pool)
  return map_async(self, "map", f, list, chunksize, nil, MAP):get()
end

function methods:starmap(f, list, chunksize)
  util.check_self("starmap", self, Pool)
  return map_async(self, "starmap", f, list, chunksize, nil, STAR):get()
end

-- ---------------------------------------------------------------------
-- imap: results as an iterator, input pulled lazily
-- ---------------------------------------------------------------------

-- The iterator is an mproc.IMapIterator: callable, and closable, so a
-- generic for closes it when the loop is left early (break, an error) and
-- `local it <close> = pool:imap(...)` works.  Closing takes back the tasks
-- of it still queued and pulls no more input.  join() gives an open
-- iterator its look-ahead, no more: an endless source is never pulled to
-- its end.
local IMapIterator = { __name = "mproc.IMapIterator" }
local Imap = {}
IMapIterator.__index = Imap

-- Pulls up to chunksize items from the source: the chunk and its item
-- count (a list's items may be nil); nil when the source is exhausted.
function Imap:_next_chunk()
  local src, chunk, count = self.src, {}, 0
  for i = 1, self.chunksize do
    local v
    if self.list then
      local k = self.pos + i
      if k > self.n then break end
      v = src[k]
    else
      v = src()
      if v == nil then break end
    end
    chunk[i], count = v, i
  end
  if count == 0 then self.exhausted = true return nil end
  return chunk, count
end

-- No more input will be pulled: the reader gets what was submitted, then
-- the error "<fname>: the pool was <how> before ...".
function Imap:_cut(how)
  self.cut = self.cut or ("%s: the pool was %s before this iterator's input was used up"):format(self.fname, how)
  self.pool._imaps[self] = nil
end

-- Cut, and the tasks no worker has claimed yet are taken back.
function Imap:_abandon(how)
  self:_cut(how)
  self.out = self.out - self.pool:_cancel(self)
end

-- Submits chunks until ahead of the reader by limit chunks or exhausted.
function Imap:_fill(limit)
  if self.cut or self.exhausted then return end
  if not STATES[self.pool._state].pulls then return self:_cut("terminated") end
  while not self.exhausted and self.submitted - self.consumed < limit do
    local chunk, count = self:_next_chunk()
    if not chunk then break end
    local sent = core.tokens_sent()
    local body = check_fits(self.pool, self.fname, self.head, core.dumps(chunk))
    self.submitted, self.out = self.submitted + 1, self.out + 1
    self.starts[self.submitted] = self.pos + 1
    self.pos = self.pos + count
    -- a chunk is kept until its task ends only when it names objects that
    -- must stay reachable: 512 chunks of plain values ahead were 15 MiB
    if core.tokens_sent() == sent then chunk = nil end
    self.pool:_submit(self, self.submitted, self.head, body, count, nil, self.f, chunk)
  end
  if self.exhausted then self.pool._imaps[self] = nil end
end

-- A chunk's result is in (the iterator is a job).
local function deliver_chunk(self, idx, r)
  self.out = self.out - 1
  if not self.closed then self.done[idx] = r end
end

define_job(IMapIterator, deliver_chunk)

-- The next chunk to hand out: the next in order, or any that is done.
function Imap:_take_done()
  if self.ordered then
    local r = self.done[self.consumed + 1]
    if r then self.done[self.consumed + 1] = nil end
    return r, self.consumed + 1
  end
  local k, r = next(self.done)
  if k then self.done[k] = nil end
  return r, k
end

-- The next item of the current chunk: its index and values.
local function next_item(self)
  local cur, i = self.cur, self.cur_i + 1
  self.cur_i = i
  local more = cur.more and cur.more[i]
  if more then return self.cur_base + i - 1, unpack(more, 1, more.n) end
  return self.cur_base + i - 1, cur[i]
end

-- The next item; nil at the end; nil, "timeout" when deadline (nil: none)
-- passes first.
function Imap:_step(deadline)
  local pumped = false
  while true do
    local cur = self.cur
    if cur and self.cur_i < cur.n then return next_item(self) end
    self.cur = nil
    if self.closed then util.misuse(self.fname .. ": the iterator is closed") end
    self:_fill(IMAP_AHEAD)
    if self.exhausted and self.consumed == self.submitted then
      self.pool:_seen(self)
      return nil
    end
    local r, k = self:_take_done()
    if r then
      if next(self.done) == nil then self.pool:_seen(self) end   -- none more to tell of
      self.consumed = self.consumed + 1
      if not r[1] then error(map_place((failure(r)), self.starts[k]), 0) end
      self.cur, self.cur_i, self.cur_base = r[2], 0, self.starts[k]
      self.starts[k] = nil
    elseif self.out > 0 and self.pool._state ~= JOINED then
      local left = deadline and util.left(deadline)
      if left == 0 and pumped then return nil, "timeout" end
      self.pool:_pump(left)
      self.pool:_run_later()
      pumped = true
    else -- nothing more will come: the pool ended, or took back the tasks
      error(self.cut or (self.fname .. ": the pool was joined or terminated"), 0)
    end
  end
end

-- close(): no more input is pulled, its queued tasks are taken back, and
-- the iterator cannot be called again.  Safe to call twice.
function Imap:close()
  util.check_self("close", self, IMapIterator)
  if self.closed then return end
  self.closed, self.cur, self.done = true, nil, {}
  self:_abandon("closed")
  self.pool:_seen(self)
end

-- ready() -> whether the next call gives an item (or ends or raises)
-- without waiting; fileno() as AsyncResult's, for event loops.
function Imap:ready()
  util.check_self("ready", self, IMapIterator)
  local cur = self.cur
  if self.closed or (cur and self.cur_i < cur.n) then return true end
  if self.exhausted and self.consumed == self.submitted then return true end
  self:_fill(IMAP_AHEAD)
  self.pool:_pump(0)
  local k = self.ordered and self.consumed + 1 or next(self.done)
  local ready = (k and self.done[k]) ~= nil or self.out == 0 or self.pool._state == JOINED
  -- told only once it says no: a loop that takes one item a wake-up is
  -- woken again for the rest
  if not ready then self.pool:_seen(self, true) end
  return ready
end

-- next([timeout]) -> the next item as a call gives it, or nil, "timeout":
-- Python's IMapIterator.next(timeout).
function Imap:next(timeout)
  util.check_self("next", self, IMapIterator)
  return self:_step(util.deadline(util.check_timeout("next", 1, timeout)))
end

function Imap:fileno()
  util.check_self("fileno", self, IMapIterator)
  return self.pool:_fileno("fileno")
end

IMapIterator.__call = function(self) return self:_step(nil) end
IMapIterator.__close = Imap.close

function IMapIterator.__tostring(self)
  local state = self.closed and "closed" or (self.exhausted and self.consumed == self.submitted) and "done"
    or self.cut and "cut short" or "open"
  return ("mproc.IMapIterator (%s, %s, %d chunks of %d read)"):format(self.fname, state, self.consumed, self.submitted)
end

local function imap(self, fname, f, src, chunksize, ordered)
  check_running(self, fname)
  local head = encode_function(fname, f, IMAP)
  check_source(fname, src)
  local list = type(src) == "table"
  chunksize = check_chunksize(fname, 3, chunksize) or 1
  local it = setmetatable({
    pool = self, fname = fname, f = f, head = head, src = src, list = list, n = list and list_length(fname, src) or nil,
    chunksize = chunksize, ordered = ordered, pos = 0, submitted = 0, consumed = 0, out = 0,
    done = {}, starts = {}, exhausted = false, closed = false,
  }, IMapIterator)
  self._imaps[it] = true
  return it, nil, nil, it
end

-- imap(f, list_or_iterator, [chunksize]): for i, v in pool:imap(f, xs) do
-- gives i and f(xs[i]) (all its values) in input order; an iterator
-- function as input is called until it returns nil, a bounded number of
-- chunks ahead.  Returns the iterator, nil, nil and the iterator again: a
-- generic for closes it when left early.
function methods:imap(f, src, chunksize)
  util.check_self("imap", self, Pool)
  return imap(self, "imap", f, src, chunksize, true)
end

-- imap_unordered: the same pairs, as they complete.
function methods:imap_unordered(f, src, chunksize)
  util.check_self("imap_unordered", self, Pool)
  return imap(self, "imap_unordered", f, src, chunksize, false)
end

-- ---------------------------------------------------------------------
-- close, terminate, join
-- ---------------------------------------------------------------------

-- No more tasks; the workers end once the submitted ones are done (join).
function methods:close()
  util.check_self("close", self, Pool)
  check_home(self, "close")
  if self._state == RUN then set_state(self, CLOSE) end
end

local function reap_all(self, timeout)
  local deadline = util.deadline(timeout)
  for _, wk in pairs(self._workers) do
    wk.handle:wait(util.left(deadline))
  end
  for _, wk in pairs(self._workers) do
    if not wk.handle:poll() then
      wk.handle:signal(SIGKILL)
      wk.handle:wait()
    end
    wk.handle:close()
  end
  self._workers = {}
end

-- The imap iterators whose input is not used up and that may still pull.
local function open_imaps(self)
  local list = {}
  for it in pairs(self._imaps) do list[#list + 1] = it end
  return list
end

local function release(self)
  set_state(self, JOINED)
  self._board:close()
end

-- Stops the workers now, mid-task; tasks not done fail.
function methods:terminate()
  util.check_self("terminate", self, Pool)
  check_home(self, "terminate")
  if self._state == JOINED or self._state == TERMINATE then return end
  set_state(self, TERMINATE)
  for _, it in ipairs(open_imaps(self)) do it:_cut("terminated") end
  for _, wk in pairs(self._workers) do wk.handle:signal(SIGTERM) end
  reap_all(self, 1)
  self:_fail_all("the pool was terminated before this task completed")
  release(self)
end

-- Waits for the workers to end, after close() (or terminate()).
function methods:join()
  util.check_self("join", self, Pool)
  check_home(self, "join")
  if self._state == RUN then util.misuse("join: the pool is still running; call close() or terminate() first") end
  if self._state ~= CLOSE then return end
  for _, it in ipairs(open_imaps(self)) do
    it:_fill(IMAP_AHEAD)
    it:_cut("closed")
  end
  while self._nout > 0 do self:_pump(nil) end
  self._board:shutdown()
  while next(self._workers) do self:_pump(nil) end
  self:_run_later()
  release(self)
end

-- Leaving the scope of a <close> variable: close and join, so every task
-- submitted completes; when leaving by an error, terminate instead.  An
-- imap iterator still open is abandoned first: its input is not pulled
-- further and its look-ahead tasks no worker took are not run.
function Pool.__close(self, err)
  if self._owner ~= core.getpid() then return end
  if err ~= nil then return self:terminate() end
  for _, it in ipairs(open_imaps(self)) do it:_abandon("closed") end
  self:close()
  self:join()
end

-- Collected without close/join: stop the workers without blocking (__gc
-- must not wait) and leave them to reap_orphans.
function Pool.__gc(self)
  if self._owner ~= core.getpid() or self._state == JOINED then return end
  set_state(self, JOINED)
  local now, armed = core.monotonic(), next(orphans) ~= nil
  for _, wk in pairs(self._workers) do
    wk.handle:signal(SIGTERM)
    orphans[wk.handle] = now
  end
  self._board:close()
  reap_orphans()
  if not armed and next(orphans) then reap_at_next_gc() end
end

function Pool.__tostring(self)
  local n = 0
  for _ in pairs(self._workers) do n = n + 1 end
  return ("mproc.Pool (%d processes, %s, %d workers, %d tasks pending)")
    :format(self._processes, self._state, n, self._nout)
end

-- ---------------------------------------------------------------------
-- Construction
-- ---------------------------------------------------------------------

local OPTIONS = { processes = true, initializer = true, initargs = true, maxtasksperchild = true,
                  board_size = true }

local function check_options(a, b)
  local opts, n = b, 2
  if type(a) == "table" then opts, n, a = a, 1, a.processes end
  util.check_type("Pool", n, opts, "table", true)
  if n == 2 and opts and opts.processes ~= nil then
    if a ~= nil then util.argerror("Pool", 2, "processes given twice: as argument #1 and as an option") end
    a = opts.processes
  end
  opts = opts or {}
  util.check_options("Pool", n, opts, OPTIONS)
  local max = core.POOL_MAX_WORKERS
  if a ~= nil and (math.type(a) ~= "integer" or a < 1 or a > max) then
    util.argerror("Pool", 1, ("processes must be an integer in 1..%d, got %s"):format(max, tostring(a)))
  end
  util.check_option("Pool", n, "initializer", opts.initializer, "callable")
  util.check_option("Pool", n, "initargs", opts.initargs, "table")
  local m = opts.maxtasksperchild
  if m ~= nil and (math.type(m) ~= "integer" or m < 1) then
    util.argerror("Pool", n, "maxtasksperchild must be an integer >= 1")
  end
  local size, page, most = opts.board_size, core.POOL_BOARD_PAGE, core.POOL_MAX_BOARD
  if size ~= nil and (math.type(size) ~= "integer" or size < page or size > most or size % page ~= 0) then
    util.argerror("Pool", n, ("board_size must be a multiple of %d in %d..%d, got %s")
      :format(page, page, most, tostring(size)))
  end
  return a or core.process_cpu_count(), opts
end

-- mproc.Pool([processes], [{initializer, initargs, maxtasksperchild, board_size}])
-- mproc.Pool{processes = n, initializer = f, ...}
local function new(_, a, b)
  local processes, opts = check_options(a, b)
  if next(orphans) then reap_orphans() end
  local board, err, code = core.pool_board(processes, NSLOTS, opts.board_size or DATA_BYTES)
  if not board then return nil, err, code end
  -- A pool's fields, all private:
  --   workers    _processes (how many), _board (core.pool_board),
  --              _workers (index -> {handle, pid, done: results sent}),
  --              _initializer, _initargs, _maxtasks (the options),
  --              _owner (the pid that made it: a forked copy does nothing)
  --   state      _state (see STATES), _broken (nil, or why every task fails:
  --              the initializer failed)
  --   tasks      _nextid (the last task id), _nout (tasks not finished),
  --              _job and _part (task id -> its job and part), _pending (a
  --              FIFO of {id, head, body, count} not on the board yet),
  --              _inbox ({id, r, ...} taken in and not finished: _dispatch)
  --   jobs       _imaps (the imap iterators that may still pull input),
  --              _later_q (a FIFO of callbacks to run, each packed),
  --              _unseen (job -> _asks when it was delivered to, not asked
  --              about since: the descriptor stays readable; _dormant:
  --              those put to sleep by _age, until a loop moves on; _again:
  --              whether it is so, _watched: whether a loop asked for it,
  --              _asks: asks counted once watched, _asked: job -> its last
  --              ask, _oldest: at most the least of _unseen, see _age)
  local self = setmetatable({
    _processes = processes, _board = board, _workers = {}, _state = RUN,
    _owner = core.getpid(), _initializer = opts.initializer,
    _initargs = opts.initargs or {}, _maxtasks = opts.maxtasksperchild,
    _nextid = 0, _nout = 0, _job = {}, _part = {}, _keepf = {}, _keepa = {}, _imaps = setmetatable({}, WEAK_KEYS),
    _pending = fifo(), _later_q = fifo(), _inbox = {}, _room = board:room(),
    _unseen = setmetatable({}, WEAK_KEYS), _dormant = setmetatable({}, WEAK_KEYS), _again = false,
    _asks = 0, _asked = setmetatable({}, WEAK_KEYS), _oldest = math.huge,
  }, Pool)
  for w = 1, processes do self:_spawn(w) end
  return self
end

-- ---------------------------------------------------------------------
-- Jobs: the interface for modules built on a Pool (mproc.futures)
-- ---------------------------------------------------------------------
-- A job is an object of a class declared with jobs.define(class,
-- deliver) (see "Jobs" above): deliver(job, part, r) is called once for
-- each of its tasks when the task's result is in, and never for a task
-- taken back; jobs.failure(r) gives a failed r's error value and
-- traceback.  Results are delivered only inside jobs.pump: when the parent
-- calls into the pool.

local jobs = { failure = failure, define = define_job, map_place = map_place }

-- The encoded head, body and count of a call f(unpack(args)) (args with
-- its n), as apply_async encodes it; raises at the caller's line, as
-- apply_async does, when the pool is not running or f or args cannot be
-- sent or do not fit (fname: the caller's name; its argument #1 is f, #2
-- on the arguments).
function jobs.encode_call(pool, fname, f, args)
  check_running(pool, fname)
  return encode_call(pool, fname, f, args)
end

-- The same for a chunk: f(items[i]) for i = 1..count; the task's result is
-- {true, out}: out[i] the value of item i when f returned exactly one,
-- else out.more[i], its values packed.
function jobs.encode_chunk(pool, fname, f, items, count)
  check_running(pool, fname)
  local head = encode_function(fname, f, IMAP)
  return head, check_fits(pool, fname, head, encode_args(fname, 2, items, 1, count))
end

-- Submits a task of job (its part 1; head, body and count as encode_call or
-- encode_chunk gave them, from f and args, which the pool keeps until the
-- task ends); returns the task's id.
function jobs.submit(pool, job, head, body, count, f, args)
  if not is_job(job) then error("jobs.submit: not a job (declare its class with jobs.define)", 2) end
  return pool:_submit(job, 1, head, body, count, nil, f, args)
end

-- Of the task ids (a set), takes back those no worker has claimed; returns them, a list.
function jobs.take_back(pool, ids)
  return pool:_take_back(ids)
end

-- Whether a worker has claimed task id and not sent its result yet.
function jobs.running(pool, id)
  return pool._job[id] ~= nil and pool._state ~= JOINED and pool._board:claimed(id)
end

-- Delivers the results that are in, waiting up to timeout (nil: until
-- one comes or a worker ends), then runs the callbacks queued.
function jobs.pump(pool, timeout)
  pool:_pump(timeout)
  pool:_run_later()
end

-- The job's user has been told where it stands (waiting: it is not done):
-- the pool's descriptor need not stay readable for it (see define_job).
function jobs.seen(pool, job, waiting)
  pool:_seen(job, waiting)
end

-- Queues f(...) to run after the results being delivered (a callback).
function jobs.later(pool, f, ...)
  pool:_later(f, ...)
end

-- The descriptors that become readable when pump has something to do:
-- to wait on them beside others, then pump(pool, 0).
function jobs.descriptors(pool)
  if pool._state == JOINED then return {} end
  return pool._board:fds()
end

-- The pool's one descriptor for event loops (as AsyncResult:fileno());
-- false once the pool is joined; nil, message where there is none.
function jobs.fileno(pool)
  if pool._state == JOINED then return false end
  return pool:_watch()
end

M.jobs = jobs
M.Pool = setmetatable(Pool, { __call = new })
M.AsyncResult = AsyncResult

return M
