/*
** core.c: luaopen_mproc_core, the one symbol mproc.core exports.
** Each concern's file registers its own functions; see mproc.h.
*/
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <stdio.h>
#include <string.h>

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

MP_EXPORT int luaopen_mproc_core(lua_State *L) {
  lua_newtable(L);
  lua_pushcfunction(L, l_fileno);
  lua_setfield(L, -2, "fileno");
  mp_open_time(L);
  mp_open_proc(L);
  mp_open_pool(L);
  mp_open_codec(L);
  mp_open_spawn(L);
  mp_open_sync(L);
  mp_open_sharedctypes(L);
  mp_open_queue(L);
  mp_open_conn(L);
  return 1;
}
