/* C floor for the codec's mixed-table round trip: what dumps and loads of
** the 100-value table of bench/codec_bench.lua cannot avoid in Lua 5.4,
** done with the C API and no format at all: loads makes the table, its 20
** tables of two fields and its 20 strings (lua_createtable, lua_pushlstring,
** lua_rawseti, lua_setfield); dumps visits every value once (lua_rawgeti,
** lua_next) and reads it by its type. Both in one Lua state, the garbage
** collector running as it does for mproc. Prints us per round trip, best
** of 3.
** Usage: codec_floor N */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static char strs[101][16];   /* the strings' bytes, as in a message */
static size_t lens[101];

/* The value of bench/codec_bench.lua's mixed(), made as loads makes it. */
static void make(lua_State *L) {
  int i;
  lua_createtable(L, 100, 0);
  for (i = 1; i <= 100; i++) {
    switch (i % 5) {
      case 0: lua_pushinteger(L, i); break;
      case 1: lua_pushnumber(L, i + 0.5); break;
      case 2: lua_pushlstring(L, strs[i], lens[i]); break;
      case 3: lua_pushboolean(L, 1); break;
      default:
        lua_createtable(L, 0, 2);
        lua_pushinteger(L, i);
        lua_setfield(L, -2, "a");
        lua_pushliteral(L, "x");
        lua_setfield(L, -2, "b");
    }
    lua_rawseti(L, -2, i);
  }
}

/* Reads the value at idx as dumps must: by its type, numbers as integer or
** float (lua_tointeger alone would try to convert strings to numbers, which
** is no part of the work). */
static size_t read_value(lua_State *L, int idx) {
  size_t len;
  switch (lua_type(L, idx)) {
    case LUA_TSTRING: return lua_tolstring(L, idx, &len) ? len : 0;
    case LUA_TNUMBER:
      if (lua_isinteger(L, idx)) return (size_t)lua_tointeger(L, idx);
      return (size_t)lua_tonumber(L, idx);
    case LUA_TBOOLEAN: return (size_t)lua_toboolean(L, idx);
    default: return 0;
  }
}

/* Visits every value of the table on top once, as dumps must. */
static size_t visit(lua_State *L) {
  size_t n = 0;
  lua_Integer i, narr = (lua_Integer)lua_rawlen(L, -1);
  for (i = 1; i <= narr; i++) {
    if (lua_rawgeti(L, -1, i) == LUA_TTABLE) {
      lua_pushnil(L);
      while (lua_next(L, -2)) {
        n += read_value(L, -2) + read_value(L, -1);
        lua_pop(L, 1);
      }
    } else {
      n += read_value(L, -1);
    }
    lua_pop(L, 1);
  }
  return n;
}

int main(int argc, char **argv) {
  int n = argc > 1 ? atoi(argv[1]) : 2000, i, r;
  lua_State *L = luaL_newstate();
  double best = 1e9;
  volatile size_t sink = 0;
  luaL_openlibs(L);
  for (i = 1; i <= 100; i++)
    lens[i] = (size_t)snprintf(strs[i], sizeof strs[i], "value-%d", i);
  make(L);                                     /* the value dumps visits */
  for (r = 0; r < 3; r++) {
    double t0 = now(), t;
    for (i = 0; i < n; i++) {
      sink += visit(L);
      make(L);
      lua_pop(L, 1);
    }
    t = (now() - t0) / n * 1e6;
    if (t < best) best = t;
  }
  printf("%.3f\n", best);
  lua_close(L);
  return (int)(sink & 0);
}
