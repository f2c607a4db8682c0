/*
** error.c: misuse raised at the user's line. A check in C under one of
** mproc's Lua methods (queue.lua's put calls the C put) would otherwise
** blame mproc's file, as luaL_error does; util.lua's user_level does the
** same for checks made in Lua. A file of its own so that codec.c links
** without the rest of the core (the fuzz target).
*/
#include <ctype.h>
#include <stdarg.h>
#include <string.h>

#include "mproc.h"

/* Whether a chunk's source is one of mproc's own Lua files (.../mproc/x.lua),
** as util.lua's user_level tells them apart. */
static int mproc_source(const char *src) {
  size_t n = strlen(src);
  const char *end = src + n - 4, *name, *p;
  if (n < 4 || strcmp(end, ".lua") != 0) return 0;
  for (name = end; name > src && name[-1] != '/' && name[-1] != '\\'; name--)
    ;
  if (name == end || name - src < 7) return 0;
  for (p = name; p < end; p++)
    if (!isalnum((unsigned char)*p) && *p != '_') return 0;
  return memcmp(name - 6, "mproc", 5) == 0 &&
         (name[-7] == '/' || name[-7] == '\\' || name[-7] == '@');
}

/* mp_where: see mproc.h. */
void mp_where(lua_State *L) {
  lua_Debug ar;
  int level;
  for (level = 1; lua_getstack(L, level, &ar); level++) {
    lua_getinfo(L, "Sl", &ar);
    if (mproc_source(ar.source)) continue;
    if (ar.currentline > 0) {
      lua_pushfstring(L, "%s:%d: ", ar.short_src, ar.currentline);
      return;
    }
    break;
  }
  lua_pushliteral(L, "");
}

/* mp_error: see mproc.h. */
int mp_error(lua_State *L, const char *fmt, ...) {
  va_list ap;
  mp_where(L);
  va_start(ap, fmt);
  lua_pushvfstring(L, fmt, ap);
  va_end(ap);
  lua_concat(L, 2);
  return lua_error(L);
}
