/*
** auxlib.c: helpers every other C file of mproc.core uses, as lauxlib is
** to Lua's libraries. It depends on nothing else of mproc, so it sits
** below all of them; core.c, the entry point, only gathers.
*/
#include <errno.h>
#include <string.h>

#include "mproc.h"

/* mp_fail: see mproc.h. */
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
