/*
** modpath.c: the codec's index of what package.loaded reaches, so that a
** module's functions, tables and userdata travel as a PATH (module and
** keys), resolved in the receiver's own package.loaded (codec.c).
**
** Reference paths: a weak-keyed table mapping objects reachable from
** package.loaded to { module, key1, key2, ... }, kept in the registry
** behind a head (its filter, and what package.loaded was).  Built on the
** first encode that meets a table, function or userdata, rebuilt when
** package.loaded's names or values change, when a cached path no longer leads
** to its object, or when a C function or userdata is missing from it (those
** cannot travel otherwise).  So a Lua function or table added to an already
** loaded module after the index was built travels by value until then.
** A bit filter of the indexed objects' pointers (in the head) answers "not
** in the index" for most objects without a table lookup.
*/
#include <stdint.h>
#include <string.h>

#include "mproc.h"

#define INDEX_DEPTH 4           /* levels below a module the index walks */

/* The index's head: a userdata in the registry (at &index_key), whose user
** value is the index table (object -> path). What package.loaded was when
** the index was built: a copy of its hash part's bytes (mp_table_nodes),
** or where those cannot be read, a fingerprint. */
typedef struct {
  size_t mask;          /* the filter's bit count less one */
  size_t nbytes;        /* the copy's size; NO_COPY: the fingerprint */
  uint64_t fingerprint;
} head;                 /* followed by the filter's bits, then the copy */

#define NO_COPY ((size_t)-1)

static char index_key;

/* A fingerprint of package.loaded's names and values: one pass, no
** allocation (some 270 instructions a module). */
static uint64_t loaded_fingerprint(lua_State *L) {
  uint64_t h = 0;
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  lua_pushnil(L);
  while (lua_next(L, -2)) {
    uint64_t k = (uint64_t)(uintptr_t)lua_topointer(L, -2);
    uint64_t v = (uint64_t)(uintptr_t)lua_topointer(L, -1);
    h += (k * 0x9e3779b97f4a7c15u) ^ (v + 0x632be59bd9b4e019u) ^ (h >> 29);
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  return h;
}

/* package.loaded's hash part (*n bytes), or NULL (see mp_table_nodes). */
static const void *loaded_nodes(lua_State *L, size_t *n) {
  const void *p;
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  p = mp_table_nodes(L, -1, n);
  lua_pop(L, 1);
  return p;
}

static const void *head_copy(const head *h) {
  return (const char *)(h + 1) + (h->mask + 1) / 8;
}

/* Whether package.loaded is as it was when the index of head h was built:
** checked on each encode that needs the index, so by its bytes where they
** can be read (a memcmp), else by a fingerprint. */
static int loaded_same(lua_State *L, const head *h) {
  size_t n;
  const void *p = loaded_nodes(L, &n);
  if (p) return h->nbytes == n && memcmp(head_copy(h), p, n) == 0;
  return h->nbytes == NO_COPY && h->fingerprint == loaded_fingerprint(L);
}

static int indexable(int t) {
  return t == LUA_TTABLE || t == LUA_TFUNCTION || t == LUA_TUSERDATA;
}

/* index[value at -1] = path .. key, unless already indexed; with the
** path table at ip and the key at -2.  Returns whether it was new. */
static int index_add(lua_State *L, int index, int ip) {
  int n, i;
  ip = lua_absindex(L, ip);
  n = (int)lua_rawlen(L, ip);
  lua_pushvalue(L, -1);
  if (lua_rawget(L, index) != LUA_TNIL) { lua_pop(L, 1); return 0; }
  lua_pop(L, 1);
  lua_createtable(L, n + 1, 0);
  for (i = 1; i <= n; i++) {
    lua_rawgeti(L, ip, i);
    lua_rawseti(L, -2, i);
  }
  lua_pushvalue(L, -3);
  lua_rawseti(L, -2, n + 1);
  lua_pushvalue(L, -2);
  lua_insert(L, -2);
  lua_rawset(L, index);
  return 1;
}

/* Walks one level: the fields (string keys) of every table queued at
** level `from` (a list of tables at stack `from`), queueing new tables. */
static void index_level(lua_State *L, int index, int from, int to) {
  int i, n = (int)lua_rawlen(L, from);
  for (i = 1; i <= n; i++) {
    int t = lua_gettop(L) + 1;
    lua_rawgeti(L, from, i);               /* t: table */
    lua_pushvalue(L, t);
    lua_rawget(L, index);                  /* t+1: its path */
    lua_pushnil(L);
    while (lua_next(L, t)) {
      if (lua_type(L, -2) == LUA_TSTRING && indexable(lua_type(L, -1)) &&
          index_add(L, index, t + 1) && lua_type(L, -1) == LUA_TTABLE) {
        lua_pushvalue(L, -1);
        lua_rawseti(L, to, (lua_Integer)lua_rawlen(L, to) + 1);
      }
      lua_pop(L, 1);
    }
    lua_settop(L, t - 1);
  }
}

/* Modules first (shortest paths win), then fields level by level.  _G is
** indexed itself and for its functions only: global data tables travel by
** value, global functions (print, a script's own) by reference. */
static void index_modules(lua_State *L, int index, int level, int g) {
  lua_newtable(L);                         /* empty path */
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  lua_pushnil(L);
  while (lua_next(L, -2)) {
    if (lua_type(L, -2) == LUA_TSTRING && indexable(lua_type(L, -1)) &&
        index_add(L, index, -4) && lua_type(L, -1) == LUA_TTABLE &&
        !lua_rawequal(L, -1, g)) {
      lua_pushvalue(L, -1);
      lua_rawseti(L, level, (lua_Integer)lua_rawlen(L, level) + 1);
    }
    lua_pop(L, 1);
  }
  lua_pop(L, 2);
}

static void index_globals(lua_State *L, int index, int g) {
  lua_pushvalue(L, g);
  lua_rawget(L, index);                    /* path of _G, if it is loaded */
  if (lua_type(L, -1) != LUA_TTABLE) { lua_pop(L, 1); return; }
  lua_pushnil(L);
  while (lua_next(L, g)) {
    if (lua_type(L, -2) == LUA_TSTRING && lua_type(L, -1) == LUA_TFUNCTION)
      index_add(L, index, -3);
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
}

/* The head, pushed: two bits per indexed object, set from a hash of its
** pointer (mp_modpath_maybe), about 32 bits an object, so that most
** objects the codec meets (plain data, not in the index) are told apart
** without a table lookup (all but about 0.4%). Objects join the index only
** here, so the filter never misses one. Then what package.loaded is now. */
static void head_build(lua_State *L, int index) {
  size_t n = 0, size = 512, nbytes = 0;
  unsigned char *bits;
  const void *nodes;
  head *h;
  lua_pushnil(L);
  while (lua_next(L, index)) { n++; lua_pop(L, 1); }
  while (size < 4 * n && size < (1u << 17)) size *= 2;
  loaded_nodes(L, &nbytes);
  h = (head *)lua_newuserdatauv(L, sizeof *h + size + nbytes, 1);
  bits = (unsigned char *)(h + 1);
  h->mask = 8 * size - 1;
  memset(bits, 0, size);
  lua_pushnil(L);
  while (lua_next(L, index)) {
    uint64_t k = mp_modpath_hash(lua_topointer(L, -2));
    size_t a = (size_t)(k >> 32) & h->mask, b = (size_t)(k >> 12) & h->mask;
    bits[a >> 3] |= (unsigned char)(1u << (a & 7));
    bits[b >> 3] |= (unsigned char)(1u << (b & 7));
    lua_pop(L, 1);
  }
  lua_pushvalue(L, index);
  lua_setiuservalue(L, -2, 1);
  /* read again: the allocation above may have run code that changed it */
  nodes = loaded_nodes(L, &n);
  h->nbytes = nodes && n == nbytes ? n : NO_COPY;
  if (h->nbytes != NO_COPY) memcpy(bits + size, nodes, n);
  else h->fingerprint = loaded_fingerprint(L);   /* (a copy again next time) */
}

/* Pushes a fresh index (its head), also stored in the registry. */
void mp_modpath_rebuild(lua_State *L) {
  int top = lua_gettop(L), index, level, d;
  lua_newtable(L);
  index = top + 1;
  lua_createtable(L, 0, 1);
  lua_pushliteral(L, "k");
  lua_setfield(L, -2, "__mode");
  lua_setmetatable(L, index);
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS);  /* top+2 */
  lua_newtable(L);
  level = top + 3;
  index_modules(L, index, level, top + 2);
  index_globals(L, index, top + 2);
  for (d = 0; d < INDEX_DEPTH; d++) {
    lua_newtable(L);
    index_level(L, index, level, level + 1);
    lua_replace(L, level);
  }
  lua_settop(L, index);
  head_build(L, index);
  lua_replace(L, index);
  lua_pushvalue(L, index);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &index_key);
}

/* Pushes the cached index (its head), rebuilt if package.loaded changed. */
void mp_modpath_index(lua_State *L) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &index_key) == LUA_TUSERDATA &&
      loaded_same(L, (const head *)lua_touserdata(L, -1)))
    return;
  lua_pop(L, 1);
  mp_modpath_rebuild(L);
}

/* Pushes the path the index (head at ix) has for the value at idx and
** returns 1, if it has one that still leads there; else pushes nothing. */
int mp_modpath_find(lua_State *L, int ix, int idx) {
  lua_getiuservalue(L, ix, 1);
  lua_pushvalue(L, idx);
  if (lua_rawget(L, -2) == LUA_TTABLE && mp_modpath_valid(L, idx)) {
    lua_remove(L, -2);
    return 1;
  }
  lua_pop(L, 2);
  return 0;
}

/* Whether the path at -1 still leads to the value at idx (raw lookups). */
int mp_modpath_valid(lua_State *L, int idx) {
  int i, n = (int)lua_rawlen(L, -1), ok;
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  for (i = 1; i <= n; i++) {
    if (lua_type(L, -1) != LUA_TTABLE) { lua_pop(L, 1); return 0; }
    lua_rawgeti(L, -2, i);
    lua_rawget(L, -2);
    lua_remove(L, -2);
  }
  ok = lua_rawequal(L, -1, idx);
  lua_pop(L, 1);
  return ok;
}

/* The filter of the index (head at idx, which anchors it): its bits, and
** in *mask their count less one. */
const unsigned char *mp_modpath_filter(lua_State *L, int idx, size_t *mask) {
  const head *h = (const head *)lua_touserdata(L, idx);
  *mask = h->mask;
  return (const unsigned char *)(h + 1);
}
