/*
** core.c: luaopen_mproc_core, the one symbol mproc.core exports.
** It only gathers: each concern's file registers its own functions (see
** mproc.h); the helpers they share are in auxlib.c.
*/

#include "mproc.h"

MP_EXPORT int luaopen_mproc_core(lua_State *L) {
  lua_newtable(L);
  mp_open_auxlib(L);
  mp_open_fd(L);
  mp_open_holders(L);
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
