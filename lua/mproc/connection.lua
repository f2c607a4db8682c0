-- mproc.connection: Pipe and its Connections, as in Python's
-- multiprocessing. The Connections are src/conn.c's userdata (frames over
-- a socket pair, values through mproc's codec); this file makes the pair
-- and lets Connections travel to processes that inherited them.
local core = require "mproc.core"
local util = require "mproc.util"

local M = {}

-- Connections of this process by token, and back, for the codec: a
-- Connection travels to processes that inherited its descriptor.
local add, find = util.tokens()
local tokens = setmetatable({}, { __mode = "k" })

-- A Connection holding a message a recv left (conn:_held(): a Ctrl-C cut
-- its decode short, or recv_bytes' maxlength refused it) is not sent: the
-- message is out of the pipe, in this object alone, and the receiver's
-- copy would read past it.
core.interpose("mproc.Connection", "__mproc_send", function(c)
  local token = tokens[c] or error("cannot send a Connection that mproc.Pipe did not make", 2)
  if c:_held() then
    error("cannot send a Connection that holds a message a recv left (cut short by Ctrl-C,"
      .. " or longer than recv_bytes' maxlength): recv it first", 2)
  end
  return token
end)

local function usable(c) return not c:closed() end

core.interpose("mproc.Connection", "__mproc_recv", function(token)
  local c = find("mproc.Connection", token, usable)
  return c
end)

local function remember(c)
  tokens[c] = add(c)
end

-- mproc.Pipe([duplex = true]) -> conn1, conn2. One-way: conn1 only
-- receives and conn2 only sends, as in Python.
function M.Pipe(duplex)
  if duplex ~= nil and type(duplex) ~= "boolean" then
    util.argerror("Pipe", 1, "boolean expected, got " .. type(duplex))
  end
  local a, b, code = core.pipe(duplex ~= false)
  if not a then return nil, b, code end
  remember(a)
  remember(b)
  return a, b
end

return M
