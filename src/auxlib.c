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

/* ---------------------------------------------------------------------
** The Lua layer's hook into C types
** --------------------------------------------------------------------- */

/* The metatable of the C type named at idx, pushed; raises if none. */
static void push_type(lua_State *L, int idx) {
  const char *tname = luaL_checkstring(L, idx);
  if (luaL_getmetatable(L, tname) != LUA_TTABLE)
    luaL_argerror(L, idx, lua_pushfstring(L, "no C type named '%s'", tname));
}

/* core.interpose(typename, key, value) -> the value it replaces: the one
** way the Lua layer extends a C type. A key starting with "__" is a
** metamethod (__mproc_send, __mproc_recv), any other a method. */
static int l_interpose(lua_State *L) {
  const char *key = luaL_checkstring(L, 2);
  luaL_checkany(L, 3);
  push_type(L, 1);
  if (strncmp(key, "__", 2) != 0 &&
      lua_getfield(L, -1, "__methods") != LUA_TTABLE)
    return luaL_argerror(L, 1, "a type without methods");
  lua_pushvalue(L, 2);
  lua_rawget(L, -2);
  lua_pushvalue(L, 2);
  lua_pushvalue(L, 3);
  lua_rawset(L, -4);
  return 1;
}

/* core.istype(v, typename) -> whether v is a userdata of that C type */
static int l_istype(lua_State *L) {
  luaL_checkstring(L, 2);
  lua_pushboolean(L, luaL_testudata(L, 1, lua_tostring(L, 2)) != NULL);
  return 1;
}

void mp_open_auxlib(lua_State *L) {
  lua_pushcfunction(L, l_interpose);
  lua_setfield(L, -2, "interpose");
  lua_pushcfunction(L, l_istype);
  lua_setfield(L, -2, "istype");
}

/* Calls gc when the Lua state closes (registers, once per state, a
** sentinel userdata under name whose __gc it is): for tables a C file
** keeps per process that must go with the state (mproc.core is unloaded
** then, and a later state starts afresh). */
void mp_on_state_close(lua_State *L, const char *name, lua_CFunction gc) {
  if (luaL_newmetatable(L, name)) {
    lua_pushcfunction(L, gc);
    lua_setfield(L, -2, "__gc");
    lua_newuserdatauv(L, 1, 0);
    lua_pushvalue(L, -2);
    lua_setmetatable(L, -2);
    lua_setfield(L, LUA_REGISTRYINDEX, name);
  }
  lua_pop(L, 1);
}

/* The Lua methods of a received object (a Lock's guard, a Dict's update
** ...) come from its Lua module: a process forked before that module was
** first loaded (a Pool's worker, started before the sender made its first
** such object) loads it now, as the receiver's require would. */
void mp_require_layer(lua_State *L, const char *module) {
  int loaded;
  lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  loaded = lua_getfield(L, -1, module) != LUA_TNIL;
  lua_pop(L, 2);
  if (loaded || lua_getglobal(L, "require") != LUA_TFUNCTION) {
    lua_pop(L, loaded ? 0 : 1);
    return;
  }
  lua_pushstring(L, module);
  lua_call(L, 1, 0);
}
