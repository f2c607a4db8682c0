/*
** core.c: luaopen_mproc_core, the one symbol mproc.core exports.
** Each concern's file registers its own functions; see mproc.h.
*/
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "mproc.h"

int mp_fail(lua_State *L, const char *what) {
  int e = errno;
  lua_pushnil(L);
  lua_pushfstring(L, "%s: %s", what, strerror(e));
  lua_pushinteger(L, e);
  return 3;
}

/* Registers the metatable name, once per Lua state: the metamethods in
** meta, the methods in a table that is its __index. */
void mp_new_type(lua_State *L, const char *name, const luaL_Reg *meta,
                 const luaL_Reg *methods) {
  if (luaL_newmetatable(L, name)) {
    luaL_setfuncs(L, meta, 0);
    lua_newtable(L);
    luaL_setfuncs(L, methods, 0);
    lua_setfield(L, -2, "__index");
  }
  lua_pop(L, 1);
}

/* core.fileno(file) -> the descriptor under a Lua file */
static int l_fileno(lua_State *L) {
  luaL_Stream *s = (luaL_Stream *)luaL_checkudata(L, 1, LUA_FILEHANDLE);
  luaL_argcheck(L, s->closef != NULL, 1, "file is closed");
  lua_pushinteger(L, fileno(s->f));
  return 1;
}

/* core.read_nowait(file, [max]) -> what can be read now from the file's
** descriptor without waiting, up to max bytes ("" when nothing is there
** yet), or nil at end of file, or nil, message, errno. It reads the
** descriptor itself, past the file's buffer: for a pipe an event loop
** watches, not mixed with file:read. */
static int l_read_nowait(lua_State *L) {
  luaL_Stream *s = (luaL_Stream *)luaL_checkudata(L, 1, LUA_FILEHANDLE);
  lua_Integer max = luaL_optinteger(L, 2, 65536);
  struct pollfd p;
  luaL_Buffer b;
  ssize_t r;
  luaL_argcheck(L, s->closef != NULL, 1, "file is closed");
  luaL_argcheck(L, max >= 1 && max <= (1 << 30), 2, "max must be in 1..2^30");
  p.fd = fileno(s->f);
  p.events = POLLIN;
  p.revents = 0;
  if (poll(&p, 1, 0) <= 0) return lua_pushliteral(L, ""), 1;
  do r = read(p.fd, luaL_buffinitsize(L, &b, (size_t)max), (size_t)max);
  while (r < 0 && errno == EINTR);
  if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) r = 0;
  else if (r < 0) return mp_fail(L, "cannot read");
  else if (r == 0) return lua_pushnil(L), 1;
  luaL_pushresultsize(&b, (size_t)r);
  return 1;
}

MP_EXPORT int luaopen_mproc_core(lua_State *L) {
  lua_newtable(L);
  lua_pushcfunction(L, l_fileno);
  lua_setfield(L, -2, "fileno");
  lua_pushcfunction(L, l_read_nowait);
  lua_setfield(L, -2, "read_nowait");
  mp_open_time(L);
  mp_open_proc(L);
  mp_open_pool(L);
  mp_open_codec(L);
  mp_open_spawn(L);
  mp_open_sync(L);
  mp_open_sharedctypes(L);
  mp_open_queue(L);
  mp_open_conn(L);
  mp_open_store(L);
  mp_open_dict(L);
  mp_open_list(L);
  return 1;
}
