/*
** conn.c: the Connections of mproc.Pipe. A Connection owns one end of a
** Unix stream socket pair and moves length-prefixed frames of bytes (an
** 8-byte native length, then the bytes); send/recv encode values with the
** codec (mp_encode/mp_decode), send_bytes/recv_bytes move strings as they are.
** Sockets rather than pipes for the one-way kind too (with the unused
** direction shut down): send(MSG_NOSIGNAL) turns a vanished reader into
** EPIPE instead of a SIGPIPE that would kill the Lua process.
** Reads are never buffered in user space, so fileno() with poll/mproc.wait
** tells the truth about what recv can get.
** Every transfer is non-blocking (MSG_DONTWAIT) and waits with poll in
** slices: the descriptor may be left non-blocking by an event loop, and
** Ctrl-C may strike between slices. A transfer interrupted part-way leaves
** a torn stream: the connection says so rather than misread what follows.
*/
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "mproc.h"

/* ---------------------------------------------------------------------
** Portability: MSG_NOSIGNAL where it exists; elsewhere SO_NOSIGPIPE
** (macOS). The close-on-exec socket pair is fd.c's.
** --------------------------------------------------------------------- */
#if !defined(MSG_NOSIGNAL)
#define MSG_NOSIGNAL 0
static void no_sigpipe(int fd) {
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_NOSIGPIPE, &one, sizeof one);
}
#else
static void no_sigpipe(int fd) { (void)fd; }
#endif

#define CONN_MT "mproc.Connection"
#define FRAME_MAX ((uint64_t)1 << 46) /* a longer length is a broken frame */

typedef struct {
  int fd;        /* -1 once closed */
  int readable;
  int writable;
  int torn;      /* a send or recv was interrupted in a message */
  int held;      /* user value 1 holds a frame whose decode was cut short */
} mp_conn;

static mp_conn *check_conn(lua_State *L) {
  mp_conn *c = (mp_conn *)mp_checkudata(L, 1, CONN_MT);
  if (c->fd < 0) luaL_error(L, "the connection is closed");
  return c;
}

/* check_conn, for send and recv: a torn stream cannot carry messages. */
static mp_conn *check_stream(lua_State *L) {
  mp_conn *c = check_conn(L);
  if (c->torn)
    luaL_error(L, "the connection is broken: a send or recv was interrupted "
               "in the middle of a message");
  return c;
}

static mp_conn *new_conn(lua_State *L, int readable, int writable) {
  mp_conn *c = (mp_conn *)lua_newuserdatauv(L, sizeof *c, 1);
  c->fd = -1;
  c->held = 0;
  c->readable = readable;
  c->writable = writable;
  c->torn = 0;
  luaL_setmetatable(L, CONN_MT);
  return c;
}

/* core.pipe([duplex]) -> conn1, conn2 (one-way: conn1 reads, conn2 writes),
** or nil, message, errno */
static int l_pipe(lua_State *L) {
  int duplex = lua_isnoneornil(L, 1) || lua_toboolean(L, 1);
  mp_conn *a = new_conn(L, 1, duplex), *b = new_conn(L, duplex, 1);
  int sv[2];
  if (mp_cloexec_socketpair(sv) < 0) return mp_fail(L, "cannot create a pipe");
  a->fd = sv[0];
  b->fd = sv[1];
  no_sigpipe(a->fd);
  no_sigpipe(b->fd);
  if (!duplex) {
    shutdown(a->fd, SHUT_WR);
    shutdown(b->fd, SHUT_RD);
  }
  return 2;
}

/* ---------------------------------------------------------------------
** Frames
** --------------------------------------------------------------------- */

/* Waits one slice for c to be ready for events; between slices Ctrl-C
** may strike, which tears the stream when part of a message has moved. */
static void conn_block(lua_State *L, mp_conn *c, short events, int partial) {
  struct pollfd p;
  p.fd = c->fd;
  p.events = events;
  p.revents = 0;
  if (poll(&p, 1, mp_poll_ms(mp_slice_deadline(-1))) > 0) return;
  if (!mp_interrupt_pending(L)) return;
  c->torn = partial;
  mp_interrupt_point(L);
  c->torn = 0;   /* another hook than Ctrl-C's: the transfer goes on */
}

/* Sends all of iov through EINTR, short writes and a full socket.
** 0 or -1 (errno). */
static int send_all(lua_State *L, mp_conn *c, struct iovec *iov, int n) {
  struct msghdr m;
  int partial = 0;
  memset(&m, 0, sizeof m);
  m.msg_iov = iov;
  m.msg_iovlen = n;
  while (m.msg_iovlen > 0) {
    ssize_t w = sendmsg(c->fd, &m, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) conn_block(L, c, POLLOUT, partial);
      else if (errno != EINTR) return -1;
      continue;
    }
    partial = 1;
    while (m.msg_iovlen > 0 && (size_t)w >= m.msg_iov->iov_len) {
      w -= (ssize_t)m.msg_iov->iov_len;
      m.msg_iov++;
      m.msg_iovlen--;
    }
    if (m.msg_iovlen > 0) {
      m.msg_iov->iov_base = (char *)m.msg_iov->iov_base + w;
      m.msg_iov->iov_len -= (size_t)w;
    }
  }
  return 0;
}

/* Reads exactly n bytes (partial: some of the message came before).
** n: done; 0..n-1: end of file first; -1: errno. */
static ssize_t read_all(lua_State *L, mp_conn *c, char *p, size_t n, int partial) {
  size_t got = 0;
  while (got < n) {
    ssize_t r = recv(c->fd, p + got, n - got, MSG_DONTWAIT);
    if (r < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK)
        conn_block(L, c, POLLIN, partial || got > 0);
      else if (errno != EINTR) return -1;
      continue;
    }
    if (r == 0) break;
    got += (size_t)r;
  }
  return (ssize_t)got;
}

static int push_closed(lua_State *L) {
  lua_pushnil(L);
  lua_pushliteral(L, "closed");
  return 2;
}

/* The end of file came inside a frame: its sender died (or closed a
** shared end) in the middle of a message. Not a clean "closed": a message
** was lost, and the caller must be able to tell. */
static int push_cut(lua_State *L) {
  lua_pushnil(L);
  lua_pushliteral(L, "cannot receive on the connection: the sender closed it "
                     "in the middle of a message");
  lua_pushinteger(L, EPIPE);
  return 3;
}

/* Sends one frame of the pieces of b. true, or nil, message, errno. */
static int send_frame(lua_State *L, mp_conn *c, const mp_bytes *b) {
  uint64_t n64 = b->n[0] + b->n[1];
  struct iovec iov[3];
  int n = 1, i;
  iov[0].iov_base = &n64;
  iov[0].iov_len = 8;
  for (i = 0; i < 2; i++) {
    if (b->n[i] == 0) continue;
    iov[n].iov_base = (void *)b->p[i];
    iov[n++].iov_len = b->n[i];
  }
  if (send_all(L, c, iov, n) < 0)
    return mp_fail(L, "cannot send on the connection");
  lua_pushboolean(L, 1);
  return 1;
}

/* conn:send_bytes(s, [offset = 0], [size]) -> true, or nil, message,
** errno: Python's send_bytes(buffer, offset, size), the size bytes of s
** after the first offset (a byte offset, as file:seek's, not an index). */
static int m_conn_send_bytes(lua_State *L) {
  mp_conn *c = check_stream(L);
  mp_bytes b;
  size_t len;
  const char *s = luaL_checklstring(L, 2, &len);
  lua_Integer off = luaL_optinteger(L, 3, 0), size;
  luaL_argcheck(L, off >= 0 && (lua_Unsigned)off <= len, 3, "offset out of range");
  size = luaL_optinteger(L, 4, (lua_Integer)(len - (size_t)off));
  luaL_argcheck(L, size >= 0 && (lua_Unsigned)size <= len - (size_t)off, 4, "size out of range");
  b.p[0] = s + off;
  b.n[0] = (size_t)size;
  b.p[1] = NULL;
  b.n[1] = 0;
  luaL_argcheck(L, c->writable, 1, "the connection is read-only");
  return send_frame(L, c, &b);
}

/* conn:send(v) -> true, or nil, message, errno; an unencodable v raises */
static int m_conn_send(lua_State *L) {
  mp_conn *c = check_stream(L);
  mp_bytes b;
  luaL_checkany(L, 2);
  luaL_argcheck(L, c->writable, 1, "the connection is read-only");
  mp_encode(L, 2, &b);
  return send_frame(L, c, &b);
}

/* Receives one frame into the caller's buffer b: 1 with *p, *n set, or
** the results to return (nil, "closed" once the peer is gone and nothing
** is left, or nil, message, errno, a frame cut short by the end included)
** pushed and their count negated. */
static int recv_frame(lua_State *L, mp_conn *c, luaL_Buffer *b,
                      const char **out, size_t *n) {
  uint64_t n64;
  ssize_t r;
  char *p;
  luaL_argcheck(L, c->readable, 1, "the connection is write-only");
  r = read_all(L, c, (char *)&n64, 8, 0);
  if (r < 0) return -mp_fail(L, "cannot receive on the connection");
  if (r < 8) return r == 0 ? -push_closed(L) : -push_cut(L);
  if (n64 > FRAME_MAX) {
    errno = EPROTO;
    return -mp_fail(L, "cannot receive on the connection");
  }
  p = luaL_buffinitsize(L, b, (size_t)n64);
  r = read_all(L, c, p, (size_t)n64, 1);
  if (r < 0) return -mp_fail(L, "cannot receive on the connection");
  if ((uint64_t)r < n64) return -push_cut(L);
  *out = p;
  *n = (size_t)n64;
  return 1;
}

/* Pushes the frame a cut-short recv kept, if any, and forgets it. */
static int take_held(lua_State *L, mp_conn *c) {
  if (!c->held) return 0;
  c->held = 0;
  lua_getiuservalue(L, 1, 1);
  lua_pushnil(L);
  lua_setiuservalue(L, 1, 1);
  return 1;
}

/* conn:recv_bytes([maxlength]) -> s, or nil, "closed", or nil, message,
** errno. A message longer than maxlength is kept for the next receive and
** nil, "message too long (N bytes, maxlength M)" returned (Python raises
** OSError and the connection is lost). */
static int m_conn_recv_bytes(lua_State *L) {
  mp_conn *c = check_stream(L);
  luaL_Buffer b;
  const char *p;
  size_t n;
  int r;
  lua_Integer max = luaL_optinteger(L, 2, -1);
  luaL_argcheck(L, max >= 0 || lua_isnoneornil(L, 2), 2, "maxlength must be >= 0");
  lua_settop(L, 1);
  if (!take_held(L, c)) {
    if ((r = recv_frame(L, c, &b, &p, &n)) < 0) return -r;
    luaL_pushresultsize(&b, n);
  }
  n = lua_rawlen(L, -1);
  if (max < 0 || (lua_Unsigned)n <= (lua_Unsigned)max) return 1;
  lua_setiuservalue(L, 1, 1);
  c->held = 1;
  lua_pushnil(L);
  lua_pushfstring(L, "message too long (%I bytes, maxlength %I)", (lua_Integer)n, max);
  return 2;
}

/* conn:recv() -> v, or nil, "closed", or nil, message, errno; decoded
** straight from the receive buffer. Cut short by Ctrl-C (lua.c's hook
** fires in the decoder's protected call) or by want of memory, the frame
** is kept for the next recv and the error raised as it came: the message
** is not lost. */
static int m_conn_recv(lua_State *L) {
  mp_conn *c = check_stream(L);
  luaL_Buffer b;
  const char *s;
  size_t n;
  int r, st;
  if (take_held(L, c)) s = lua_tolstring(L, -1, &n);
  else if ((r = recv_frame(L, c, &b, &s, &n)) < 0) return -r;
  if ((st = mp_decode_status(L, s, n)) == LUA_OK) return 1;
  if (st == LUA_ERRMEM || mp_is_interrupt(L, -1)) {
    lua_pushlstring(L, s, n);
    lua_setiuservalue(L, 1, 1);
    c->held = 1;
    return lua_error(L);
  }
  return luaL_error(L, "cannot decode a message: %s", lua_tostring(L, -1));
}

/* conn:poll([timeout]) -> whether recv would not block (data or end) */
static int m_conn_poll(lua_State *L) {
  mp_conn *c = check_conn(L);
  double deadline = lua_isnoneornil(L, 2) ? mp_monotonic() : mp_opt_deadline(L, 2);
  struct pollfd p;
  int r;
  luaL_argcheck(L, c->readable, 1, "the connection is write-only");
  if (c->held) { lua_pushboolean(L, 1); return 1; }
  p.fd = c->fd;
  p.events = POLLIN;
  for (;;) {
    p.revents = 0;
    r = poll(&p, 1, mp_poll_ms(mp_slice_deadline(deadline)));
    if (r > 0 || (r < 0 && errno != EINTR)) break;
    if (mp_poll_ms(deadline) == 0) { r = 0; break; }
    mp_interrupt_point(L);
  }
  if (r < 0) return mp_fail(L, "cannot poll the connection");
  lua_pushboolean(L, r > 0);
  return 1;
}

/* conn:_held() -> whether a frame kept by a cut-short recv waits (its
** descriptor does not tell: mproc.wait asks) */
static int m_conn_held(lua_State *L) {
  lua_pushboolean(L, check_conn(L)->held);
  return 1;
}

static int m_conn_fileno(lua_State *L) {
  lua_pushinteger(L, check_conn(L)->fd);
  return 1;
}

/* __gc, __close and close(); safe to call twice */
static int m_conn_close(lua_State *L) {
  mp_conn *c = (mp_conn *)mp_checkudata(L, 1, CONN_MT);
  if (c->fd >= 0) { close(c->fd); c->fd = -1; }
  return 0;
}

static int m_conn_closed(lua_State *L) {
  mp_conn *c = (mp_conn *)mp_checkudata(L, 1, CONN_MT);
  lua_pushboolean(L, c->fd < 0);
  return 1;
}

static int m_conn_readable(lua_State *L) {
  lua_pushboolean(L, check_conn(L)->readable);
  return 1;
}

static int m_conn_writable(lua_State *L) {
  lua_pushboolean(L, check_conn(L)->writable);
  return 1;
}

static int m_conn_tostring(lua_State *L) {
  mp_conn *c = (mp_conn *)mp_checkudata(L, 1, CONN_MT);
  if (c->fd < 0)
    lua_pushliteral(L, "mproc.Connection (closed)");
  else
    lua_pushfstring(L, "mproc.Connection (fd %d, %s)", c->fd,
                    c->readable && c->writable ? "duplex"
                    : c->readable ? "read-only" : "write-only");
  return 1;
}

static const luaL_Reg conn_methods[] = {
  {"send", m_conn_send},
  {"recv", m_conn_recv},
  {"send_bytes", m_conn_send_bytes},
  {"recv_bytes", m_conn_recv_bytes},
  {"poll", m_conn_poll},
  {"fileno", m_conn_fileno},
  {"_held", m_conn_held},
  {"close", m_conn_close},
  {"closed", m_conn_closed},
  {"readable", m_conn_readable},
  {"writable", m_conn_writable},
  {NULL, NULL}
};

static const luaL_Reg conn_meta[] = {
  {"__gc", m_conn_close},
  {"__close", m_conn_close},
  {"__tostring", m_conn_tostring},
  {NULL, NULL}
};

void mp_open_conn(lua_State *L) {
  mp_type(L, CONN_MT, conn_meta, conn_methods, NULL);
  lua_pushcfunction(L, l_pipe);
  lua_setfield(L, -2, "pipe");
}
