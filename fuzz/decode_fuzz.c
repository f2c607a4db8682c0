/*
** decode_fuzz.c: libFuzzer target for the codec's decoder (src/codec.c).
** Decodes the input with functions refused (bytecode is trusted, see
** codec.c), and re-encodes and re-decodes whatever decodes, so both
** directions meet odd shapes (cycles, shared keys, metatables).
** `make fuzz` builds and runs it; seeds come from fuzz/seeds.lua.
*/
#include <stdint.h>
#include <stdlib.h>

#include "lualib.h"
#include "../src/mproc.h"

/* A fresh state per input, closed after it, so LeakSanitizer sees every
** allocation the codec makes come back. */

/* A registered mproc type whose __mproc_recv accepts only "ok". */
static const char *SETUP =
  "local mt = { __name = 'mproc.FuzzThing' }\n"
  "mt.__mproc_send = function() return 'ok' end\n"
  "mt.__mproc_recv = function(t)\n"
  "  if t ~= 'ok' then error('unknown token') end\n"
  "  return setmetatable({}, mt)\n"
  "end\n"
  "debug.getregistry()['mproc.FuzzThing'] = mt\n"
  "require = nil  -- no module loading from fuzzed paths\n";

static int reencode(lua_State *S) {
  mp_bytes out;
  mp_encode(S, 1, &out);
  lua_pushlstring(S, out.p[0], out.n[0]);
  if (out.n[1]) lua_pushlstring(S, out.p[1], out.n[1]);
  lua_concat(S, out.n[1] ? 2 : 1);
  return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  lua_State *L = luaL_newstate();
  luaL_openlibs(L);
  if (luaL_dostring(L, SETUP) != LUA_OK) abort();
  if (mp_decode_opt(L, (const char *)data, size, 0)) {
    size_t n;
    const char *s;
    lua_pushcfunction(L, reencode);
    lua_pushvalue(L, -2);
    if (lua_pcall(L, 1, 1, 0) == LUA_OK) {
      s = lua_tolstring(L, -1, &n);
      if (!mp_decode_opt(L, s, n, 0)) abort();  /* what encodes decodes */
    }
  }
  lua_close(L);
  return 0;
}
