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

/* mp_type: see mproc.h. */
void mp_type(lua_State *L, const char *tname, const luaL_Reg *meta,
             const luaL_Reg *methods, lua_CFunction index) {
  luaL_newmetatable(L, tname);
  lua_pushvalue(L, -1);
  luaL_setfuncs(L, meta, 1);
  if (methods != NULL) {
    lua_newtable(L);
    lua_pushvalue(L, -2);
    luaL_setfuncs(L, methods, 1);
    lua_pushvalue(L, -1);
    lua_setfield(L, -3, "__methods");
    if (index != NULL) lua_pushcclosure(L, index, 1);
    lua_setfield(L, -2, "__index");
  }
  lua_pop(L, 1);
}
