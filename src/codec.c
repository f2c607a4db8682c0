/*
** codec.c: Lua values to bytes and back, for Queue, Pipe and friends.
** core.dumps(v) -> string; core.loads(s) -> v | nil, message.
**
** Format: one value, tag byte first; integers in LEB128 varints (zigzag
** for signed), floats as their 8 native bytes (both ends are processes of
** one tree on one machine, so byte order and float format agree).
**   NIL FALSE TRUE | SMALLINT+v (0..127) | INT zz | FLOAT 8 bytes
**   STR len bytes
**   TABLE / TABLE_MT narr nhash(u32) narr values, nhash key+value pairs,
**     then (TABLE_MT) the metatable value.
**   REF i: the i-th table/function/mproc object of this message (shared
**     and cyclic references come back as the same object).
**   FUNC len bytecode nups upvalue*: an upvalue is a value, or UPREF i n:
**     "the same upvalue as upvalue n of object i" (lua_upvaluejoin).
**   PATH nkeys module key*: package.loaded[module][key1]... in the receiver
**     (the sender finds paths through modpath.c's index).
**   GLOBALS: the receiver's global table (what _ENV rebinds to).
**   MPROC name token: registry[name].__mproc_recv(token).
**   TABLE_NOREF: a TABLE at the top of a message with no REF or UPREF in
**     it, so the decoder need not keep its objects by ordinal.
**
** Trust: bytes come from processes of the same tree.  loads never crashes
** on malformed or truncated input except inside bytecode: lua_load checks
** a binary chunk's structure but not its instructions, so a forged FUNC
** could misbehave when called.  mp_decode_opt(..., 0) refuses functions;
** the fuzz target uses it to cover the rest of the format.
*/
#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mproc.h"

enum {
  T_NIL, T_FALSE, T_TRUE, T_INT, T_FLOAT, T_STR, T_TABLE, T_TABLE_MT,
  T_REF, T_FUNC, T_UPREF, T_PATH, T_GLOBALS, T_MPROC,
  T_TABLE_NOREF,               /* a top-level TABLE with no REF or UPREF */
  T_SMALLINT = 0x80            /* 0x80 | v for integers 0..127 */
};

#define MAX_DEPTH 1000          /* nesting, both ways */
#define BOX_INIT 1024           /* bytes held inside the buffer userdata */
#define MEMO_INIT 128           /* memo slots held inline: 63 objects */
#define ITEM_BATCH 16           /* list items on the stack at once */
#define ANCHOR_STACK 65536      /* objects anchored on a stack, then a table */
#define KEY_CACHE 16            /* table keys the decoder keeps at hand */
#define STACK_ROOM 16           /* stack slots an object and its leaves need */

#if defined(__GNUC__) || defined(__clang__)
#define NOINLINE __attribute__((noinline))
#define INLINE inline __attribute__((always_inline))
#else
#define NOINLINE
#define INLINE
#endif

/* ---------------------------------------------------------------------
** Lua 5.4's tables, read where the public API has no cheap answer. Used
** only once layout_check has seen tables it made show their known sizes,
** fields and changes in the places read (else array_limit says 0 and
** mp_table_nodes NULL, and the callers fall back on lua_next).
**
** Where a list ends: lua_next(t, k) from an integer key k goes on from k's
** place, and the API does not say where that is. From key #t a traversal
** meets every pair past the list only when #t lies in the array part (in
** the hash part, as when t[1] is set after the fields while the hash part
** has a free node, it skips the nodes before it). Lua 5.4 keeps keys
** 1..asize in the array part and no integer key <= asize in the hash part,
** and a table's "alimit" is at most asize: so #t <= alimit lets the
** traversal start at #t, and it meets no key in 1..#t.
**
** Whether a table changed (modpath.c asks it of package.loaded on every
** message): its hash part's bytes, where every string key and its value
** live; a key added or removed or a value set rewrites them, and the same
** bytes are the same keys and values.
** --------------------------------------------------------------------- */
typedef struct {              /* the head of Lua 5.4's Table (lobject.h) */
  void *next;
  unsigned char tt, marked, flags, lsizenode;
  unsigned int alimit;
  void *array, *node, *lastfree;
} table_head;

typedef union { void *p; lua_Integer i; lua_Number n; } value_view;
typedef struct {              /* a Node of its hash part */
  value_view value;
  unsigned char tt, key_tt;
  int next;
  value_view key;
} node_view;

static int layout_known;

/* A lower bound of the array part's size of the table at p (its
** lua_topointer). */
static lua_Integer array_limit(const void *p) {
  unsigned int n = 0;
  if (layout_known)
    memcpy(&n, (const char *)p + offsetof(table_head, alimit), sizeof n);
  return (lua_Integer)n;
}

static void read_head(const void *p, table_head *h) {
  memcpy(h, p, sizeof *h);
}

/* mp_table_nodes: see mproc.h. */
const void *mp_table_nodes(lua_State *L, int idx, size_t *n) {
  table_head h;
  if (!layout_known || !lua_istable(L, idx)) return NULL;
  read_head(lua_topointer(L, idx), &h);
  *n = sizeof(node_view) << h.lsizenode;
  return h.node;
}

/* Whether a table of asize list slots and 3 fields shows them: alimit,
** lsizenode 2 and a node vector of 4 nodes ending at lastfree. */
static int head_shows(lua_State *L, int asize) {
  table_head h;
  int ok;
  lua_createtable(L, asize, 3);
  read_head(lua_topointer(L, -1), &h);
  ok = h.alimit == (unsigned)asize && h.lsizenode == 2 &&
       (char *)h.lastfree - (char *)h.node == 4 * (ptrdiff_t)sizeof(node_view);
  lua_pop(L, 1);
  return ok;
}

/* Whether fields set to three addresses show in the nodes, once each,
** and removing one changes their bytes. */
static int nodes_show(lua_State *L) {
  static char marks[3];
  table_head h;
  node_view nd, before[4];
  int i, j, found = 0;
  lua_createtable(L, 0, 3);
  for (i = 0; i < 3; i++) {
    lua_pushlightuserdata(L, &marks[i]);
    lua_setfield(L, -2, i == 0 ? "a" : i == 1 ? "b" : "c");
  }
  read_head(lua_topointer(L, -1), &h);
  for (j = 0; j < 4; j++) {
    memcpy(&nd, (const char *)h.node + j * sizeof nd, sizeof nd);
    for (i = 0; i < 3; i++) found += nd.value.p == (void *)&marks[i];
  }
  memcpy(before, h.node, sizeof before);
  lua_pushnil(L);
  lua_setfield(L, -2, "b");
  found = found == 3 && memcmp(before, h.node, sizeof before) != 0;
  lua_pop(L, 1);
  return found;
}

/* MPROC_CODEC_API_ONLY set: the public API alone (the specs test both). */
static void layout_check(lua_State *L) {
  static const int sizes[] = { 0, 1, 5, 37, 1000 };
  size_t i;
  int ok = LUA_VERSION_NUM == 504 && !getenv("MPROC_CODEC_API_ONLY");
  for (i = 0; ok && i < sizeof sizes / sizeof sizes[0]; i++)
    ok = head_shows(L, sizes[i]);
  layout_known = ok && nodes_show(L);
}

/* Makes sure of n free stack slots above the top, asking Lua for 48 more
** at a time: lua_checkstack's promise holds for the rest of the C call, so
** *room (the highest index it covers) saves asking for every object. */
static void make_room(lua_State *L, int *room, int n, const char *msg) {
  int top = lua_gettop(L);
  if (top + n > *room) {
    luaL_checkstack(L, n + 48, msg);
    *room = top + n + 48;
  }
}

/* ---------------------------------------------------------------------
** Encoder state: the output bytes and the identity memo, inline in the
** encoder's C frame; grown ones are userdata (no finalizer) anchored in
** stack slots the encode reserved, so raising anywhere during encoding
** leaves nothing behind, and a small encode allocates nothing but its
** result string.
** --------------------------------------------------------------------- */
typedef struct {
  const void *key;  /* lua_topointer of an object met before, or NULL */
  lua_Integer ord;
} memo_slot;

typedef struct {
  char *p;
  size_t n, cap;
  memo_slot *slots;      /* open addressing, linear probing; NULL until used */
  size_t mask, used;
  int bslot, mslot; /* stack slots anchoring grown bytes and memo */
  char init[BOX_INIT];
  memo_slot sinit[MEMO_INIT];
} box;

static void box_init(box *b, int bslot, int mslot) {
  b->p = b->init;
  b->n = 0;
  b->cap = BOX_INIT;
  b->slots = NULL;
  b->mask = b->used = 0;
  b->bslot = bslot;
  b->mslot = mslot;
}

/* Makes room for need more bytes; raises when out of memory. */
static void box_grow(lua_State *L, box *b, size_t need) {
  size_t cap = b->cap;
  char *p;
  if (need > ((size_t)-1) / 2 - b->n)
    mp_error(L, "cannot send value: not enough memory");
  while (cap - b->n < need) cap *= 2;
  p = (char *)lua_newuserdatauv(L, cap, 0);
  memcpy(p, b->p, b->n);
  lua_replace(L, b->bslot);
  b->p = p;
  b->cap = cap;
}

/* Leaves the n bytes in a value at slot (a string when they fit inline,
** else their buffer), which keeps out valid as long as it is there. */
static const char *box_keep(lua_State *L, box *b, int slot) {
  if (b->p == b->init) {
    lua_pushlstring(L, b->p, b->n);
    lua_replace(L, slot);
    return lua_tostring(L, slot);
  }
  lua_copy(L, b->bslot, slot);
  return b->p;
}

static char *box_room(lua_State *L, box *b, size_t need) {
  if (b->cap - b->n < need) box_grow(L, b, need);
  return b->p + b->n;
}

static void box_add(lua_State *L, box *b, const void *s, size_t n) {
  memcpy(box_room(L, b, n), s, n);
  b->n += n;
}

static size_t put_varint(char *p, uint64_t v) {
  size_t i = 0;
  while (v >= 0x80) {
    p[i++] = (char)(v | 0x80);
    v >>= 7;
  }
  p[i++] = (char)v;
  return i;
}

/* Writes tag then varint v. */
static void box_tagvar(lua_State *L, box *b, int tag, uint64_t v) {
  char *p = box_room(L, b, 11);
  p[0] = (char)tag;
  b->n += 1 + put_varint(p + 1, v);
}

static void box_varint(lua_State *L, box *b, uint64_t v) {
  b->n += put_varint(box_room(L, b, 10), v);
}

static void box_str(lua_State *L, box *b, const char *s, size_t n) {
  box_varint(L, b, n);
  box_add(L, b, s, n);
}

/* The memo: object pointer -> ordinal, for REF.  Pointers stay valid
** because the encoder also keeps every memoized object on a Lua list. */
static size_t memo_hash(const void *k, size_t mask) {
  return (size_t)(((uint64_t)(uintptr_t)k >> 3) * 0x9e3779b97f4a7c15u >> 32) & mask;
}

static lua_Integer memo_find(box *b, const void *k) {
  size_t i;
  if (!b->slots) return 0;
  for (i = memo_hash(k, b->mask); b->slots[i].key; i = (i + 1) & b->mask)
    if (b->slots[i].key == k) return b->slots[i].ord;
  return 0;
}

static void memo_put(memo_slot *s, size_t mask, const void *k, lua_Integer ord) {
  size_t i = memo_hash(k, mask);
  while (s[i].key) i = (i + 1) & mask;
  s[i].key = k;
  s[i].ord = ord;
}

/* Doubles the memo (or starts the inline one); raises when out of memory.
** The new slots are anchored only once the old ones are copied out. */
static void memo_grow(lua_State *L, box *b) {
  size_t i, n = b->slots ? 2 * (b->mask + 1) : MEMO_INIT;
  memo_slot *s = b->sinit;
  if (b->slots) s = (memo_slot *)lua_newuserdatauv(L, n * sizeof(memo_slot), 0);
  memset(s, 0, n * sizeof(memo_slot));
  for (i = 0; b->slots && i <= b->mask; i++)
    if (b->slots[i].key) memo_put(s, n - 1, b->slots[i].key, b->slots[i].ord);
  if (b->slots) lua_replace(L, b->mslot);
  b->slots = s;
  b->mask = n - 1;
}

static void memo_add(lua_State *L, box *b, const void *k, lua_Integer ord) {
  if (!b->slots || 2 * (b->used + 1) > b->mask + 1) memo_grow(L, b);
  memo_put(b->slots, b->mask, k, ord);
  b->used++;
}

static uint64_t zigzag(lua_Integer i) {
  uint64_t u = (uint64_t)i;
  return (u << 1) ^ (i < 0 ? ~(uint64_t)0 : 0);
}

static lua_Integer unzigzag(uint64_t u) {
  return (lua_Integer)((u >> 1) ^ (~(u & 1) + 1));
}

/* Encodes a nil, boolean or number (type t) into p (>= 11 bytes); returns
** its length, or 0 for other types. */
static size_t encode_scalar(lua_State *L, int idx, int t, char *p) {
  switch (t) {
    case LUA_TNIL: p[0] = T_NIL; return 1;
    case LUA_TBOOLEAN: p[0] = lua_toboolean(L, idx) ? T_TRUE : T_FALSE; return 1;
    case LUA_TNUMBER:
      if (lua_isinteger(L, idx)) {
        lua_Integer i = lua_tointeger(L, idx);
        if (i >= 0 && i < 128) { p[0] = (char)(T_SMALLINT | i); return 1; }
        p[0] = T_INT;
        return 1 + put_varint(p + 1, zigzag(i));
      } else {
        lua_Number d = lua_tonumber(L, idx);
        p[0] = T_FLOAT;
        memcpy(p + 1, &d, sizeof d);
        return 1 + sizeof d;
      }
    default: return 0;
  }
}

/* ---------------------------------------------------------------------
** Encoder
** --------------------------------------------------------------------- */

/* Where the encoder is, innermost first, for "cannot send ..." messages. */
enum { E_FIELD, E_INDEX, E_KEY, E_UPVAL, E_META };
typedef struct edge {
  const struct edge *up;
  int kind;
  lua_Integer a;    /* E_FIELD: key's stack index; E_INDEX: the index */
  int b;            /* E_UPVAL: function's stack index in a, upvalue b */
} edge;

/* The encoder's stack slots, reserved by enc_open above the top it finds
** (base); each is nil until first needed. */
enum {
  SLOT_SEEN = 1,    /* a thread whose stack keeps memoized objects alive */
  SLOT_UPVALS,      /* upvalue id -> ordinal * 256 + n */
  SLOT_INDEX,       /* the path index (object -> path, modpath.c) */
  SLOT_BYTES,       /* the output bytes, once grown out of the box */
  SLOT_MEMO,        /* the memo, once grown out of the box */
  SLOT_LAST = SLOT_MEMO
};

typedef struct {
  lua_State *L;
  box *b;
  int seen, upvals, index;  /* stack indices: base + SLOT_... */
  int seen_made, index_got; /* whether those slots are filled yet */
  int rebuilt;      /* the index was rebuilt during this call */
  const unsigned char *filter;  /* the index's filter (mp_modpath_filter) */
  size_t fmask;
  int nobj;
  int refs;         /* REF and UPREF written */
  int depth;
  int room;         /* stack slots up to here are made sure of */
  const edge *edge;
  const void *globals;  /* the global table's pointer, once seen is made */
  lua_State *anchor;    /* the thread in SLOT_SEEN */
  int anchor_new;       /* made by this encode, not the registry's */
  int abase;            /* its top at the start */
  int aleft;            /* objects it has room for */
  int spill;            /* its stack index of the overflow table, or 0 */
} enc;

static void encode_value(enc *e, int idx);
static void encode_typed(enc *e, int idx, int t);

static void describe_key(luaL_Buffer *B, lua_State *L, int k) {
  if (lua_type(L, k) == LUA_TSTRING) {
    luaL_addstring(B, "field '");
    luaL_addstring(B, lua_tostring(L, k));
    luaL_addchar(B, '\'');
  } else if (lua_type(L, k) == LUA_TNUMBER) {
    lua_pushfstring(L, "[%s]", luaL_tolstring(L, k, NULL));
    lua_remove(L, -2);
    luaL_addvalue(B);
  } else {
    lua_pushfstring(L, "[%s key]", luaL_typename(L, k));
    luaL_addvalue(B);
  }
}

static void describe_function(luaL_Buffer *B, lua_State *L, int f) {
  lua_Debug ar;
  lua_pushvalue(L, f);
  lua_getinfo(L, ">S", &ar);
  lua_pushfstring(L, "function (%s:%d)", ar.short_src, ar.linedefined);
  luaL_addvalue(B);
}

static void describe_edge(luaL_Buffer *B, lua_State *L, const edge *x) {
  const char *name;
  switch (x->kind) {
    case E_FIELD: describe_key(B, L, (int)x->a); break;
    case E_INDEX:
      lua_pushfstring(L, "[%I]", x->a);
      luaL_addvalue(B);
      break;
    case E_KEY: luaL_addstring(B, "key"); break;
    case E_META: luaL_addstring(B, "metatable"); break;
    default:
      name = lua_getupvalue(L, (int)x->a, x->b);
      lua_pop(L, 1);
      lua_pushfstring(L, "upvalue '%s' of ", name ? name : "?");
      luaL_addvalue(B);
      describe_function(B, L, (int)x->a);
  }
}

static const char *type_desc(lua_State *L, int idx) {
  switch (lua_type(L, idx)) {
    case LUA_TFUNCTION: return "C function";
    case LUA_TLIGHTUSERDATA: return "light userdata";
    case LUA_TTHREAD: return "coroutine";
    case LUA_TUSERDATA:
      if (luaL_getmetafield(L, idx, "__name") == LUA_TSTRING) {
        const char *s = lua_pushfstring(L, "userdata (%s)", lua_tostring(L, -1));
        lua_remove(L, -2);
        return s;
      }
      return "userdata";
    default: return luaL_typename(L, idx);
  }
}

/* Raises "cannot send <where>: <why>" at the user's line; why NULL: the
** value's type. */
static int encode_error(enc *e, int idx, const char *why) {
  lua_State *L = e->L;
  const edge *x;
  luaL_Buffer B;
  int n;
  if (!why) why = type_desc(L, idx);
  lua_pushstring(L, why);
  luaL_buffinit(L, &B);
  mp_where(L);
  luaL_addvalue(&B);
  luaL_addstring(&B, "cannot send ");
  if (!e->edge) luaL_addstring(&B, "value");
  for (x = e->edge, n = 0; x; x = x->up, n++) {
    if (n == 8 && x->up) {              /* deep paths: the innermost 8 */
      int more = 0;
      while (x->up) { x = x->up; more++; }
      lua_pushfstring(L, "... (%d levels) in ", more);
      luaL_addvalue(&B);
    }
    describe_edge(&B, L, x);
    if (x->up) luaL_addstring(&B, " in ");
  }
  luaL_addstring(&B, ": ");
  luaL_pushresult(&B);
  lua_insert(L, -2);
  lua_concat(L, 2);
  return lua_error(L);
}

static void edge_enter(enc *e, edge *x, int kind, lua_Integer a, int b) {
  x->up = e->edge;
  x->kind = kind;
  x->a = a;
  x->b = b;
  e->edge = x;
}

/* Room on the anchor thread for 64 more objects. Past ANCHOR_STACK they go
** in a table on it instead (a stack holds at most LUAI_MAXSTACK values). */
static NOINLINE void anchor_room(enc *e) {
  lua_State *L = e->L, *T = e->anchor;
  /* room first: the spill table too goes on T, whose room may be used up */
  if (!lua_checkstack(T, 65)) mp_error(L, "cannot send value: not enough memory");
  if (!e->spill && lua_gettop(T) - e->abase >= ANCHOR_STACK) {
    lua_newtable(L);
    lua_xmove(L, T, 1);
    e->spill = lua_gettop(T);
  }
  e->aleft = 64;
}

/* Gives the object at idx (pointer p) the next ordinal (after seen_before
** said no); the anchor thread keeps it alive, so its pointer stays its
** own. */
static void seen_addp(enc *e, int idx, const void *p) {
  lua_State *L = e->L;
  memo_add(L, e->b, p, ++e->nobj);
  if (e->aleft == 0) anchor_room(e);
  lua_pushvalue(L, idx);
  lua_xmove(L, e->anchor, 1);
  if (e->spill) lua_rawseti(e->anchor, e->spill, e->nobj);
  else e->aleft--;
}

static char anchor_key;   /* registry: a thread to anchor objects on */

/* The anchor thread, on the first object: the one the registry keeps, if
** no encode is using it (its stack is empty: an encode in use keeps a
** mark at its bottom, so a nested one makes a thread of its own), else a
** new one; and the globals' pointer. */
static void seen_start(enc *e) {
  lua_State *L = e->L;
  e->anchor = NULL;
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &anchor_key) == LUA_TTHREAD)
    e->anchor = lua_tothread(L, -1);
  e->anchor_new = !e->anchor || lua_gettop(e->anchor) != 0;
  if (e->anchor_new) {
    lua_pop(L, 1);
    e->anchor = lua_newthread(L);
  }
  lua_pushboolean(e->anchor, 1);      /* the mark: in use */
  e->abase = 1;
  lua_replace(L, e->seen);
  e->seen_made = 1;
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS);
  e->globals = lua_topointer(L, -1);
  lua_pop(L, 1);
}

/* Lets the anchored objects go and the thread be used again; a new one
** takes the registry's place. An encode that raised leaves its thread
** marked, and the next makes a new one. */
static void seen_end(enc *e) {
  if (!e->seen_made) return;
  lua_settop(e->anchor, 0);
  if (!e->anchor_new) return;
  lua_pushvalue(e->L, e->seen);
  lua_rawsetp(e->L, LUA_REGISTRYINDEX, &anchor_key);
}

static void seen_add(enc *e, int idx) {
  seen_addp(e, idx, lua_topointer(e->L, idx));
}

static int seen_before(enc *e, int idx) {
  lua_Integer ord = memo_find(e->b, lua_topointer(e->L, idx));
  if (ord) box_tagvar(e->L, e->b, T_REF, (uint64_t)ord);
  e->refs += ord != 0;
  return ord != 0;
}

static void encode_path(enc *e) {
  lua_State *L = e->L;
  int i, n = (int)lua_rawlen(L, -1);
  size_t len;
  const char *s;
  box_tagvar(L, e->b, T_PATH, (uint64_t)(n - 1));
  for (i = 1; i <= n; i++) {
    lua_rawgeti(L, -1, i);
    s = lua_tolstring(L, -1, &len);
    box_str(L, e->b, s, len);
    lua_pop(L, 1);
  }
}

/* Fetches the index (rebuilt when rebuild) and its filter into e. */
static void enc_index(enc *e, int rebuild) {
  lua_State *L = e->L;
  if (rebuild) mp_modpath_rebuild(L); else mp_modpath_index(L);
  lua_replace(L, e->index);
  e->filter = mp_modpath_filter(L, e->index, &e->fmask);
  e->index_got = 1;
  e->rebuilt |= rebuild;
}

/* Whether the object at p may be in the index: its bit in the filter.
** Most objects are not, and need nothing more. */
static INLINE int may_have_path(enc *e, const void *p) {
  if (!e->index_got) enc_index(e, 0);
  return mp_modpath_maybe(e->filter, e->fmask, p);
}

/* Writes a PATH and returns 1 if the value at idx (pointer p) is reachable
** from package.loaded; may_rebuild: a miss is worth rebuilding the index
** for. */
static int encode_by_path(enc *e, int idx, const void *p, int may_rebuild) {
  lua_State *L = e->L;
  if (!e->index_got) enc_index(e, 0);
  for (;;) {
    if (mp_modpath_maybe(e->filter, e->fmask, p) &&
        mp_modpath_find(L, e->index, idx)) {
      encode_path(e);
      lua_pop(L, 1);
      return 1;
    }
    if (e->rebuilt || !may_rebuild) return 0;
    enc_index(e, 1);
  }
}

/* Objects this process has encoded by token (core.tokens_sent): a caller
** that compares it before and after an encode knows whether what it
** encoded named any, and so must stay alive until received. */
static lua_Integer tokens_sent;

/* An object with __mproc_send in its metatable: MPROC name token. */
static int encode_mproc(enc *e, int idx) {
  lua_State *L = e->L;
  size_t n;
  const char *s;
  if (luaL_getmetafield(L, idx, "__mproc_send") == LUA_TNIL) return 0;
  seen_add(e, idx);
  if (luaL_getmetafield(L, idx, "__name") != LUA_TSTRING)
    encode_error(e, idx, "mproc object without __name");
  lua_getfield(L, LUA_REGISTRYINDEX, lua_tostring(L, -1));
  lua_getmetatable(L, idx);
  if (!lua_rawequal(L, -1, -2))
    encode_error(e, idx, "mproc object type not registered under its __name");
  lua_pop(L, 2);
  lua_insert(L, -2);                 /* name, send */
  lua_pushvalue(L, idx);
  lua_call(L, 1, 1);
  tokens_sent++;
  if (lua_type(L, -1) != LUA_TSTRING)
    encode_error(e, idx, "__mproc_send did not return a string");
  s = lua_tolstring(L, -2, &n);
  box_tagvar(L, e->b, T_MPROC, n);
  box_add(L, e->b, s, n);
  s = lua_tolstring(L, -1, &n);
  box_str(L, e->b, s, n);
  lua_pop(L, 2);
  return 1;
}

/* The pairs outside 1..narr of the table at t (pointer p); their count
** goes to the 4 bytes at pos. */
static void encode_pairs(enc *e, int t, const void *p, lua_Integer narr,
                         size_t pos) {
  lua_State *L = e->L;
  uint32_t count = 0;
  edge x;
  int k = lua_gettop(L) + 1;
  /* From key narr when it lies in the array part; else from the start,
  ** skipping keys 1..narr (written already) as they come. */
  if (narr > 0 && narr <= array_limit(p)) {
    lua_pushinteger(L, narr);
    narr = 0;
  } else {
    lua_pushnil(L);
  }
  while (lua_next(L, t)) {
    if (narr > 0 && lua_isinteger(L, k)) {
      lua_Integer i = lua_tointeger(L, k);
      if (i >= 1 && i <= narr) { lua_settop(L, k); continue; }
    }
    edge_enter(e, &x, E_KEY, k, 0);
    encode_value(e, k);
    x.kind = E_FIELD;
    encode_value(e, k + 1);
    e->edge = x.up;
    lua_pop(L, 1);
    count++;
  }
  memcpy(e->b->p + pos, &count, 4);
}

/* The list items t[i0 + 1 .. i0 + n], x.a counting them from 1 (for
** messages); each is read and left on the stack, and a batch of them
** dropped at once: one lua_settop per ITEM_BATCH items. */
static void encode_items(enc *e, int t, lua_Integer i0, lua_Integer n, edge *x) {
  lua_State *L = e->L;
  int top = lua_gettop(L), v, tt;
  lua_Integer k = 0, end;
  make_room(L, &e->room, ITEM_BATCH + STACK_ROOM, "cannot send value: nesting too deep");
  while (k < n) {
    end = n - k > ITEM_BATCH ? k + ITEM_BATCH : n;
    for (v = top + 1; k < end; k++, v++) {
      x->a = k + 1;
      tt = lua_rawgeti(L, t, i0 + k + 1);
      encode_typed(e, v, tt);
    }
    lua_settop(L, top);
  }
}

/* A table's contents (the table at t, pointer p); m: the stack index of
** its metatable, or 0. */
static void encode_table(enc *e, int t, const void *p, int m) {
  lua_State *L = e->L;
  lua_Integer narr = (lua_Integer)lua_rawlen(L, t);
  size_t pos;
  edge x;
  box_tagvar(L, e->b, m ? T_TABLE_MT : T_TABLE, (uint64_t)narr);
  box_room(L, e->b, 4);
  pos = e->b->n;
  e->b->n += 4;
  if (narr > 0) {
    edge_enter(e, &x, E_INDEX, 0, 0);
    encode_items(e, t, 0, narr, &x);
    e->edge = x.up;
  }
  encode_pairs(e, t, p, narr, pos);
  if (m) {
    edge_enter(e, &x, E_META, 0, 0);
    if (!seen_before(e, m) && !encode_by_path(e, m, lua_topointer(L, m), 0))
      encode_value(e, m);
    e->edge = x.up;
  }
}

static int dump_writer(lua_State *L, const void *p, size_t n, void *ud) {
  box *b = (box *)ud;
  if (b->cap - b->n < n) box_grow(L, b, n);   /* as string.dump's writer may */
  memcpy(b->p + b->n, p, n);
  b->n += n;
  return 0;
}

/* FUNC len bytecode: the length is patched in after lua_dump. */
static void encode_bytecode(enc *e, int f) {
  lua_State *L = e->L;
  size_t pos, len;
  char tmp[10];
  int ok;
  box_room(L, e->b, 11);
  e->b->p[e->b->n++] = T_FUNC;
  pos = e->b->n;
  e->b->n += 10;                     /* room for the longest varint */
  lua_pushvalue(L, f);
  ok = lua_dump(L, dump_writer, e->b, 0) == 0;
  lua_pop(L, 1);
  if (!ok) encode_error(e, f, "not enough memory");
  len = e->b->n - pos - 10;
  ok = (int)put_varint(tmp, len);
  memmove(e->b->p + pos + ok, e->b->p + pos + 10, len);
  memcpy(e->b->p + pos, tmp, (size_t)ok);
  e->b->n -= 10 - (size_t)ok;
}

static void encode_upvalue(enc *e, int f, int n, int ord) {
  lua_State *L = e->L;
  void *id = lua_upvalueid(L, f, n);
  edge x;
  if (lua_isnil(L, e->upvals)) {
    lua_newtable(L);
    lua_replace(L, e->upvals);
  }
  lua_pushlightuserdata(L, id);
  if (lua_rawget(L, e->upvals) != LUA_TNIL) {
    lua_Integer ref = lua_tointeger(L, -1);
    e->refs++;
    box_tagvar(L, e->b, T_UPREF, (uint64_t)(ref >> 8));
    box_varint(L, e->b, (uint64_t)(ref & 0xff));
    lua_pop(L, 1);
    return;
  }
  lua_pop(L, 1);
  lua_pushlightuserdata(L, id);
  lua_pushinteger(L, (lua_Integer)ord * 256 + n);
  lua_rawset(L, e->upvals);
  lua_getupvalue(L, f, n);
  edge_enter(e, &x, E_UPVAL, f, n);
  encode_value(e, lua_gettop(L));
  e->edge = x.up;
  lua_pop(L, 1);
}

static void encode_function(enc *e, int f) {
  lua_State *L = e->L;
  int n, ord;
  if (seen_before(e, f) ||
      encode_by_path(e, f, lua_topointer(L, f), lua_iscfunction(L, f)))
    return;
  if (lua_iscfunction(L, f)) encode_error(e, f, NULL);
  seen_add(e, f);
  ord = e->nobj;
  encode_bytecode(e, f);
  for (n = 0; lua_getupvalue(L, f, n + 1); n++) lua_pop(L, 1);
  box_varint(L, e->b, (uint64_t)n);
  for (int i = 1; i <= n; i++) encode_upvalue(e, f, i, ord);
}

/* A table: REF, GLOBALS, MPROC, PATH or its contents; one pointer read
** serves the memo and the globals test, one metatable read the MPROC test
** and the contents. */
static void encode_table_object(enc *e, int idx) {
  lua_State *L = e->L;
  const void *p = lua_topointer(L, idx);
  lua_Integer ord = memo_find(e->b, p);
  int m = 0;
  if (ord) {
    e->refs++;
    box_tagvar(L, e->b, T_REF, (uint64_t)ord);
    return;
  }
  if (p == e->globals) {
    *box_room(L, e->b, 1) = T_GLOBALS;
    e->b->n++;
    return;
  }
  if (lua_getmetatable(L, idx)) {
    m = lua_gettop(L);
    if (encode_mproc(e, idx)) { lua_pop(L, 1); return; }
  }
  if (may_have_path(e, p) && encode_by_path(e, idx, p, 0)) {
    if (m) lua_pop(L, 1);
    return;
  }
  seen_addp(e, idx, p);
  encode_table(e, idx, p, m);
  if (m) lua_pop(L, 1);
}

static void encode_object(enc *e, int idx, int t) {
  switch (t) {
    case LUA_TTABLE: encode_table_object(e, idx); return;
    case LUA_TFUNCTION: encode_function(e, idx); return;
    case LUA_TUSERDATA:
      if (seen_before(e, idx) || encode_mproc(e, idx) ||
          encode_by_path(e, idx, lua_topointer(e->L, idx), 1))
        return;
      /* fall through */
    default: encode_error(e, idx, NULL);
  }
}

/* memcpy(p, s, n), short copies (keys, small values) without a call. */
static INLINE void copy_bytes(char *p, const char *s, size_t n) {
  if (n > 16) memcpy(p, s, n);
  else if (n >= 8) {            /* two 8-byte copies, overlapping */
    memcpy(p, s, 8);
    memcpy(p + n - 8, s + n - 8, 8);
  } else if (n >= 4) {
    memcpy(p, s, 4);
    memcpy(p + n - 4, s + n - 4, 4);
  } else if (n > 0) {
    p[0] = s[0];
    p[n / 2] = s[n / 2];
    p[n - 1] = s[n - 1];
  }
}

/* STR len bytes, with one room check. */
static void encode_string(enc *e, int idx) {
  size_t n;
  const char *s = lua_tolstring(e->L, idx, &n);
  char *p = box_room(e->L, e->b, 11 + n);
  size_t h;
  p[0] = T_STR;
  h = 1 + put_varint(p + 1, n);
  copy_bytes(p + h, s, n);
  e->b->n += h + n;
}

/* A table, function or userdata (type t) at idx. */
static NOINLINE void encode_object_at(enc *e, int idx, int t) {
  lua_State *L = e->L;
  if (e->depth >= MAX_DEPTH) encode_error(e, idx, "nesting too deep");
  make_room(L, &e->room, STACK_ROOM, "cannot send value: nesting too deep");
  if (!e->seen_made) seen_start(e);
  e->depth++;
  encode_object(e, idx, t);
  e->depth--;
}

/* A number: SMALLINT, INT or FLOAT. */
static void encode_number(enc *e, int idx) {
  lua_State *L = e->L;
  char *p = box_room(L, e->b, 11);
  if (lua_isinteger(L, idx)) {
    lua_Integer i = lua_tointeger(L, idx);
    if (i >= 0 && i < 128) {
      p[0] = (char)(T_SMALLINT | i);
      e->b->n++;
    } else {
      p[0] = T_INT;
      e->b->n += 1 + put_varint(p + 1, zigzag(i));
    }
  } else {
    lua_Number d = lua_tonumber(L, idx);
    p[0] = T_FLOAT;
    memcpy(p + 1, &d, sizeof d);
    e->b->n += 1 + sizeof d;
  }
}

/* The value at idx, whose type t the caller has read: scalars and strings
** here, objects in a function of their own (this one stays small). */
static INLINE void encode_typed(enc *e, int idx, int t) {
  switch (t) {
    case LUA_TSTRING: encode_string(e, idx); return;
    case LUA_TNUMBER: encode_number(e, idx); return;
    case LUA_TBOOLEAN:
      *box_room(e->L, e->b, 1) = lua_toboolean(e->L, idx) ? T_TRUE : T_FALSE;
      e->b->n++;
      return;
    case LUA_TNIL:
      *box_room(e->L, e->b, 1) = T_NIL;
      e->b->n++;
      return;
    default: encode_object_at(e, idx, t);
  }
}

static void encode_value(enc *e, int idx) {
  encode_typed(e, idx, lua_type(e->L, idx));
}

/* A whole message whose top TABLE holds no reference says so. */
static void mark_noref(enc *e) {
  if (e->refs == 0 && e->b->n > 0 && e->b->p[0] == T_TABLE)
    e->b->p[0] = T_TABLE_NOREF;
}

/* Starts an encoder writing into b: its slots above the top (SLOT_...). */
static void enc_open(enc *e, box *b, lua_State *L) {
  int base = lua_gettop(L);
  memset(e, 0, sizeof *e);
  e->L = L;
  lua_settop(L, base + SLOT_LAST);
  e->seen = base + SLOT_SEEN;
  e->upvals = base + SLOT_UPVALS;
  e->index = base + SLOT_INDEX;
  box_init(b, base + SLOT_BYTES, base + SLOT_MEMO);
  e->b = b;
}

/* mp_encode: see mproc.h. */
void mp_encode(lua_State *L, int idx, mp_bytes *out) {
  char head[16];
  size_t n;
  int t = lua_type(L, idx);
  idx = lua_absindex(L, idx);
  out->p[1] = NULL;
  out->n[1] = 0;
  if ((n = encode_scalar(L, idx, t, head)) > 0 || t == LUA_TSTRING) {
    if (n == 0) {
      out->p[1] = lua_tolstring(L, idx, &out->n[1]);
      head[0] = T_STR;
      n = 1 + put_varint(head + 1, out->n[1]);
    }
    out->p[0] = lua_pushlstring(L, head, n);
    out->n[0] = n;
    return;
  }
  {
    enc e;
    box b;
    int top = lua_gettop(L);
    enc_open(&e, &b, L);
    encode_value(&e, idx);
    mark_noref(&e);
    seen_end(&e);
    out->p[0] = box_keep(L, &b, top + 1);   /* into SLOT_SEEN's place */
    out->n[0] = b.n;
    lua_settop(L, top + 1);
  }
}

/* The slice t[i..i+n-1] as if it were a table of its own: a sequence of
** n values (nils kept) and no other keys. Counted by n, not up to j: a
** slice may end at math.maxinteger, where k <= j never turns false. */
static void encode_slice(enc *e, int t, lua_Integer i, lua_Integer n) {
  lua_State *L = e->L;
  uint32_t none = 0;
  edge x;
  box_tagvar(L, e->b, T_TABLE, (uint64_t)n);
  box_add(L, e->b, (const char *)&none, 4);
  e->nobj = 1;   /* ordinal 1 is the slice's own table, as the decoder counts */
  edge_enter(e, &x, E_INDEX, 0, 0);
  encode_items(e, t, i - 1, n, &x);
  e->edge = x.up;
}

/* core.dumps(t, i, j): what core.dumps(table.move(t, i, j, 1, {})) gives,
** without the copy (the pool sends map chunks this way). */
static int l_dumps_slice(lua_State *L) {
  lua_Integer i = luaL_checkinteger(L, 2), j = luaL_checkinteger(L, 3);
  enc e;
  box b;
  luaL_checktype(L, 1, LUA_TTABLE);
  /* i >= 1, so neither i - 1 nor j - i can overflow */
  luaL_argcheck(L, i >= 1, 2, "slice must start at 1 or after");
  luaL_argcheck(L, j >= i - 1 && j - i < INT_MAX, 3, "slice end out of range");
  lua_settop(L, 1);
  enc_open(&e, &b, L);
  e.depth = 1;
  encode_slice(&e, 1, i, j - i + 1);
  mark_noref(&e);
  seen_end(&e);
  lua_pushlstring(L, b.p, b.n);
  return 1;
}

static int l_dumps(lua_State *L) {
  mp_bytes out;
  if (!lua_isnoneornil(L, 2)) return l_dumps_slice(L);
  luaL_checkany(L, 1);
  lua_settop(L, 1);
  mp_encode(L, 1, &out);                /* at 2: the bytes, or their buffer */
  if (out.n[1] > 0) {
    lua_pushvalue(L, 1);
    lua_concat(L, 2);
  } else if (lua_type(L, 2) != LUA_TSTRING) {
    lua_pushlstring(L, out.p[0], out.n[0]);
  }
  return 1;
}

/* core.tokens_sent() -> how many objects this process has encoded by token */
static int l_tokens_sent(lua_State *L) {
  lua_pushinteger(L, tokens_sent);
  return 1;
}

/* ---------------------------------------------------------------------
** Decoder: runs under lua_pcall, so malformed input simply raises; every
** length is checked against what is left before anything is allocated.
** --------------------------------------------------------------------- */
typedef struct {
  lua_State *L;
  const char *p, *end, *start;
  int objs;         /* stack index: ordinal -> object */
  int nobj;
  int noref;        /* TABLE_NOREF: objects need no ordinals */
  int depth;
  int functions;    /* FUNC allowed */
  int keys;         /* stack index of the first KEY_CACHE slots, or 0 */
  int room;         /* stack slots up to here are made sure of */
  struct { const char *s; size_t n; } key[KEY_CACHE];  /* their bytes */
} dec;

static void decode_value(dec *d);

static int bad(dec *d, const char *what) {
  return luaL_error(d->L, "cannot decode: %s at byte %I", what,
                    (lua_Integer)(d->p - d->start));
}

static size_t left(dec *d) { return (size_t)(d->end - d->p); }

static int get_byte(dec *d) {
  if (d->p >= d->end) bad(d, "truncated input");
  return (unsigned char)*d->p++;
}

static NOINLINE uint64_t get_varint_long(dec *d) {
  uint64_t v = 0;
  int shift = 0, c;
  do {
    c = get_byte(d);
    if (shift == 63 && (c & 0x7e)) bad(d, "varint overflow");
    v |= (uint64_t)(c & 0x7f) << shift;
    shift += 7;
  } while ((c & 0x80) && shift < 70);
  if (c & 0x80) bad(d, "varint overflow");
  return v;
}

/* A varint; one byte (under 128), the common case, inline. */
static uint64_t get_varint(dec *d) {
  if (d->p < d->end && !(*d->p & 0x80)) return (unsigned char)*d->p++;
  return get_varint_long(d);
}

/* A length that must fit in what is left, each unit taking >= unit bytes. */
static size_t get_len(dec *d, size_t unit) {
  uint64_t v = get_varint(d);
  if (v > left(d) / unit) bad(d, "length past the end of input");
  return (size_t)v;
}

static const char *get_bytes(dec *d, size_t *n) {
  const char *s;
  *n = get_len(d, 1);
  s = d->p;
  d->p += *n;
  return s;
}

static void push_str(dec *d) {
  size_t n;
  const char *s = get_bytes(d, &n);
  lua_pushlstring(d->L, s, n);
}

static void remember(dec *d) {
  if (d->noref) return;
  if (d->nobj == 0) {
    lua_createtable(d->L, 4, 0);
    lua_replace(d->L, d->objs);
  }
  lua_pushvalue(d->L, -1);
  lua_rawseti(d->L, d->objs, ++d->nobj);
}

/* Refuses a nil or NaN key before decoding it: only NIL and FLOAT can
** give one (REF, PATH, MPROC and GLOBALS never decode to nil). */
static void check_key(dec *d) {
  lua_Number f;
  if (d->p >= d->end) bad(d, "truncated input");
  if (*d->p == T_NIL) bad(d, "nil or NaN table key");
  if (*d->p == T_FLOAT && left(d) > sizeof f) {
    memcpy(&f, d->p + 1, sizeof f);
    if (f != f) bad(d, "nil or NaN table key");
  }
}

static int same_bytes(const char *a, const unsigned char *b, size_t n) {
  size_t i;
  if (n > 8) return memcmp(a, b, n) == 0;
  for (i = 0; i < n; i++)
    if ((unsigned char)a[i] != b[i]) return 0;
  return 1;
}

/* Pushes the n bytes at s (n <= 40, a short string) through the cache: the
** same bytes met before in this message are a copy of the string made
** then, not a new lookup in Lua's string table. */
static void push_cached(dec *d, const unsigned char *s, size_t n) {
  unsigned h = n ? (unsigned)(n * 7 + s[0] + s[n - 1] * 3) % KEY_CACHE : 0;
  if (d->key[h].s && d->key[h].n == n && same_bytes(d->key[h].s, s, n)) {
    lua_pushvalue(d->L, d->keys + (int)h);
    return;
  }
  lua_pushlstring(d->L, (const char *)s, n);
  lua_copy(d->L, -1, d->keys + (int)h);
  d->key[h].s = (const char *)s;
  d->key[h].n = n;
}

/* A table key. Short string keys (records repeat their field names) go
** through the cache. */
static void decode_key(dec *d) {
  const unsigned char *s = (const unsigned char *)d->p + 2;
  size_t n;
  if (!d->keys || left(d) < 2 || d->p[0] != T_STR || (n = s[-1]) > 40 ||
      n > left(d) - 2) {
    check_key(d);
    decode_value(d);
    return;
  }
  d->p = (const char *)s + n;
  push_cached(d, s, n);
}

/* Makes room on the stack for the top level, and the key cache's slots
** when the message starts with a table. */
static void dec_open(dec *d) {
  int top;
  make_room(d->L, &d->room, KEY_CACHE + STACK_ROOM, "cannot decode: nesting too deep");
  if (left(d) == 0 || (*d->p != T_TABLE && *d->p != T_TABLE_NOREF &&
                       *d->p != T_TABLE_MT))
    return;
  top = lua_gettop(d->L);
  lua_settop(d->L, top + KEY_CACHE);
  d->keys = top + 1;
}

static void decode_table(dec *d, int with_mt) {
  lua_State *L = d->L;
  size_t i, narr = get_len(d, 1);
  uint32_t nhash;
  int t;
  if (left(d) < 4) bad(d, "truncated input");
  memcpy(&nhash, d->p, 4);
  d->p += 4;
  if (nhash > left(d) / 2) bad(d, "length past the end of input");
  if (narr > INT_MAX || nhash > INT_MAX) bad(d, "table too large");
  lua_createtable(L, (int)narr, (int)nhash);
  t = lua_gettop(L);
  remember(d);
  for (i = 1; i <= narr; i++) {
    decode_value(d);
    lua_rawseti(L, t, (lua_Integer)i);
  }
  for (i = 0; i < nhash; i++) {
    decode_key(d);
    decode_value(d);
    lua_rawset(L, t);
  }
  if (with_mt) {
    decode_value(d);
    if (!lua_istable(L, -1)) bad(d, "metatable is not a table");
    lua_setmetatable(L, t);
  }
}

static const char *bytecode_reader(lua_State *L, void *ud, size_t *n) {
  const char **s = (const char **)ud;
  (void)L;
  *n = (size_t)(s[1] - s[0]);
  if (*n == 0) return NULL;
  {
    const char *p = s[0];
    s[0] = s[1];
    return p;
  }
}

/* UPREF i n: joins upvalue k of f (at -1) with upvalue n of object i. */
static void join_upvalue(dec *d, int k) {
  lua_State *L = d->L;
  uint64_t i = get_varint(d), n = get_varint(d);
  if (i < 1 || i > (uint64_t)d->nobj) bad(d, "bad upvalue reference");
  lua_rawgeti(L, d->objs, (lua_Integer)i);
  if (lua_type(L, -1) != LUA_TFUNCTION || lua_iscfunction(L, -1) ||
      n < 1 || n > 255 || !lua_getupvalue(L, -1, (int)n))
    bad(d, "bad upvalue reference");
  lua_pop(L, 1);
  lua_upvaluejoin(L, -2, k, -1, (int)n);
  lua_pop(L, 1);
}

static void decode_function(dec *d) {
  lua_State *L = d->L;
  size_t len, nups, k, have;
  const char *span[2];
  if (!d->functions) bad(d, "functions not accepted here");
  span[0] = get_bytes(d, &len);
  span[1] = span[0] + len;
  if (len < 4 || memcmp(span[0], LUA_SIGNATURE, 4) != 0) bad(d, "bad bytecode");
  if (lua_load(L, bytecode_reader, (void *)span, "=(mproc.loads)", "b") != LUA_OK)
    bad(d, lua_pushfstring(L, "bad bytecode (%s)", lua_tostring(L, -1)));
  remember(d);
  nups = get_len(d, 1);
  for (have = 0; have < 256 && lua_getupvalue(L, -1, (int)have + 1); have++)
    lua_pop(L, 1);
  if (nups != have) bad(d, "upvalue count does not match the bytecode");
  for (k = 1; k <= nups; k++) {
    if (d->p < d->end && (unsigned char)*d->p == T_UPREF) {
      d->p++;
      join_upvalue(d, (int)k);
    } else {
      decode_value(d);
      lua_setupvalue(L, -2, (int)k);
    }
  }
}

/* PATH n module key*n: looked up (with metamethods) from package.loaded;
** a module not loaded yet is required. */
static void decode_path(dec *d) {
  lua_State *L = d->L;
  size_t n = get_len(d, 1), i;
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  push_str(d);
  lua_pushvalue(L, -1);
  if (lua_rawget(L, -3) == LUA_TNIL) {
    /* with functions refused, no code runs: no require either */
    if (!d->functions) bad(d, "module not loaded here");
    lua_pop(L, 1);
    lua_getglobal(L, "require");
    lua_pushvalue(L, -2);
    lua_call(L, 1, 1);
  }
  lua_replace(L, -3);
  lua_pop(L, 1);
  for (i = 0; i < n; i++) {
    if (!lua_istable(L, -1)) bad(d, "reference path leads nowhere");
    push_str(d);
    lua_gettable(L, -2);
    lua_remove(L, -2);
  }
  if (lua_isnil(L, -1)) bad(d, "reference path leads nowhere");
  if (!d->functions && lua_type(L, -1) == LUA_TFUNCTION)
    bad(d, "functions not accepted here");
}

/* MPROC name token: registry[name].__mproc_recv(token). A type unknown
** here was first used in the sender after this process was forked, so the
** object was made after that too: the message is the one util.lua's
** tokens() gives for an object of a known type that is not inherited. */
static void decode_mproc(dec *d) {
  lua_State *L = d->L;
  int base = lua_gettop(L);
  push_str(d);                        /* base + 1: type name */
  push_str(d);                        /* base + 2: token */
  lua_pushvalue(L, base + 1);
  if (lua_gettable(L, LUA_REGISTRYINDEX) != LUA_TTABLE ||
      lua_getfield(L, base + 3, "__mproc_recv") != LUA_TFUNCTION) {
    lua_pushfstring(L, "cannot receive %s \"%s\": not inherited by this "
                    "process (it reaches only processes forked after it was "
                    "made)", lua_tostring(L, base + 1),
                    lua_tostring(L, base + 2));
    lua_error(L);
  }
  lua_pushvalue(L, base + 2);
  lua_call(L, 1, 1);
  if (lua_isnil(L, -1)) bad(d, "__mproc_recv returned nil");
  lua_replace(L, base + 1);
  lua_settop(L, base + 1);
  remember(d);
}

static void decode_object(dec *d, int tag) {
  lua_State *L = d->L;
  uint64_t i;
  switch (tag) {
    case T_TABLE: case T_TABLE_MT: decode_table(d, tag == T_TABLE_MT); break;
    case T_REF:
      i = get_varint(d);
      if (i < 1 || i > (uint64_t)d->nobj) bad(d, "bad reference");
      lua_rawgeti(L, d->objs, (lua_Integer)i);
      break;
    case T_FUNC: decode_function(d); break;
    case T_PATH: decode_path(d); break;
    case T_GLOBALS: lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS); break;
    case T_MPROC: decode_mproc(d); break;
    default: bad(d, "unknown tag");
  }
}

/* A table, REF, function, PATH, GLOBALS or MPROC (tag read). */
static NOINLINE void decode_object_at(dec *d, int tag) {
  if (++d->depth > MAX_DEPTH) bad(d, "nesting too deep");
  make_room(d->L, &d->room, STACK_ROOM, "cannot decode: nesting too deep");
  decode_object(d, tag);
  d->depth--;
}

/* Scalars and strings here, objects in a function of their own (this one
** stays small). */
static INLINE void decode_value(dec *d) {
  lua_State *L = d->L;
  int tag = get_byte(d);
  lua_Number f;
  if (tag >= T_SMALLINT) { lua_pushinteger(L, tag & 0x7f); return; }
  switch (tag) {
    case T_STR: push_str(d); return;
    case T_NIL: lua_pushnil(L); return;
    case T_FALSE: lua_pushboolean(L, 0); return;
    case T_TRUE: lua_pushboolean(L, 1); return;
    case T_INT: lua_pushinteger(L, unzigzag(get_varint(d))); return;
    case T_FLOAT:
      if (left(d) < sizeof f) bad(d, "truncated input");
      memcpy(&f, d->p, sizeof f);
      d->p += sizeof f;
      lua_pushnumber(L, f);
      return;
    default: decode_object_at(d, tag);
  }
}

/* lua_pcall'd: (lightuserdata p, integer n, boolean functions) -> value */
static int decode_protected(lua_State *L) {
  dec d;
  size_t n = (size_t)lua_tointeger(L, 2);
  memset(&d, 0, sizeof d);
  d.L = L;
  d.start = d.p = (const char *)lua_touserdata(L, 1);
  d.end = d.p + n;
  d.functions = lua_toboolean(L, 3);
  lua_pushnil(L);                    /* ordinal -> object, made on first use */
  d.objs = lua_gettop(L);
  dec_open(&d);
  if (d.p < d.end && *d.p == T_TABLE_NOREF) {
    d.noref = 1;
    d.p++;
    d.depth++;
    decode_table(&d, 0);
  } else {
    decode_value(&d);
  }
  if (d.p != d.end) bad(&d, "trailing bytes");
  return 1;
}

/* Whether the n bytes at p are one whole STR: its bytes are *s, *len. */
static int top_string(const char *p, size_t n, const char **s, size_t *len) {
  uint64_t v = 0;
  size_t i = 1;
  int shift = 0;
  if (n < 2 || (unsigned char)p[0] != T_STR) return 0;
  while (i < n && i < 10 && (p[i] & 0x80)) {
    v |= (uint64_t)(p[i++] & 0x7f) << shift;
    shift += 7;
  }
  if (i >= n || (p[i] & 0x80)) return 0;
  v |= (uint64_t)(unsigned char)p[i++] << shift;
  if (v != n - i) return 0;
  *s = p + i;
  *len = (size_t)v;
  return 1;
}

/* Scalars and (with strings) strings at the top level skip the protected
** call; without strings nothing here allocates, so nothing can raise. */
static int decode_fast(lua_State *L, const char *p, size_t n, int strings) {
  int tag = n ? (unsigned char)p[0] : -1;
  lua_Number f;
  const char *s;
  size_t len;
  if (n == 1 && tag >= T_SMALLINT) lua_pushinteger(L, tag & 0x7f);
  else if (n == 1 && tag <= T_TRUE) {
    if (tag == T_NIL) lua_pushnil(L);
    else lua_pushboolean(L, tag == T_TRUE);
  } else if (n == 1 + sizeof f && tag == T_FLOAT) {
    memcpy(&f, p + 1, sizeof f);
    lua_pushnumber(L, f);
  } else if (tag == T_INT && n >= 2 && n <= 9 && !(p[n - 1] & 0x80)) {
    uint64_t u = 0;
    size_t i;
    for (i = 1; i < n; i++) u |= (uint64_t)(p[i] & 0x7f) << (7 * (i - 1));
    for (i = 1; i < n - 1; i++) if (!(p[i] & 0x80)) return 0;
    lua_pushinteger(L, unzigzag(u));
  } else if (strings && top_string(p, n, &s, &len)) {
    lua_pushlstring(L, s, len);
  } else return 0;
  return 1;
}

/* The protected decode: LUA_OK with the value pushed, or the failure's
** status with its error object pushed. */
static int decode_call(lua_State *L, const char *p, size_t n, int functions) {
  lua_pushcfunction(L, decode_protected);
  lua_pushlightuserdata(L, (void *)p);
  lua_pushinteger(L, (lua_Integer)n);
  lua_pushboolean(L, functions);
  return lua_pcall(L, 3, 1, 0);
}

/* mp_decode_opt: see mproc.h. */
int mp_decode_opt(lua_State *L, const char *p, size_t n, int functions) {
  if (decode_fast(L, p, n, 1)) return 1;
  if (decode_call(L, p, n, functions) == LUA_OK) return 1;
  if (lua_type(L, -1) != LUA_TSTRING) {
    lua_pop(L, 1);
    lua_pushliteral(L, "cannot decode: error object is not a string");
  }
  return 0;
}

/* lua_pcall'd: (lightuserdata mp_bytes) -> its first piece as a string */
static int push_string_protected(lua_State *L) {
  const mp_bytes *b = (const mp_bytes *)lua_touserdata(L, 1);
  lua_pushlstring(L, b->p[0], b->n[0]);
  return 1;
}

/* mp_decode_status: see mproc.h. A top-level string, the common big item,
** takes a shorter protected call than the decoder's. */
int mp_decode_status(lua_State *L, const char *p, size_t n) {
  mp_bytes b;
  if (decode_fast(L, p, n, 0)) return LUA_OK;
  if (!top_string(p, n, &b.p[0], &b.n[0])) return decode_call(L, p, n, 1);
  lua_pushcfunction(L, push_string_protected);
  lua_pushlightuserdata(L, &b);
  return lua_pcall(L, 1, 1, 0);
}

int mp_decode(lua_State *L, const char *p, size_t n) {
  return mp_decode_opt(L, p, n, 1);
}

/* lua_pcall'd: (lightuserdata p, integer n, table t, integer at) -> the
** count of items of the list encoded at p, stored at t[at], t[at + 1], ... */
static int decode_into_protected(lua_State *L) {
  dec d;
  size_t i, narr;
  uint32_t nhash;
  lua_Integer at = lua_tointeger(L, 4);
  int tag;
  memset(&d, 0, sizeof d);
  d.L = L;
  d.start = d.p = (const char *)lua_touserdata(L, 1);
  d.end = d.p + (size_t)lua_tointeger(L, 2);
  d.functions = 1;
  lua_pushnil(L);                    /* ordinal -> object, made on first use */
  d.objs = lua_gettop(L);
  dec_open(&d);
  tag = get_byte(&d);
  if (tag != T_TABLE && tag != T_TABLE_NOREF) bad(&d, "not a list");
  d.noref = tag == T_TABLE_NOREF;
  d.depth++;
  narr = get_len(&d, 1);
  if (left(&d) < 4) bad(&d, "truncated input");
  memcpy(&nhash, d.p, 4);
  d.p += 4;
  if (nhash != 0) bad(&d, "not a list");
  lua_pushvalue(L, 3);               /* ordinal 1: the list's own table */
  remember(&d);
  lua_pop(L, 1);
  for (i = 0; i < narr; i++) {
    decode_value(&d);
    lua_rawseti(L, 3, at + (lua_Integer)i);
  }
  if (d.p != d.end) bad(&d, "trailing bytes");
  lua_pushinteger(L, (lua_Integer)narr);
  return 1;
}

/* core.loads_into(s, t, at) -> count: s encodes a list and no other keys
** (as core.dumps(list, i, j) gives); its items go to t[at], t[at + 1], ...
** without a table of their own (the pool fills a map's result this way).
** nil, message for bytes that are not such a list (t may be filled part
** way then). */
static int l_loads_into(lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  lua_Integer at = luaL_checkinteger(L, 3);
  luaL_checktype(L, 2, LUA_TTABLE);
  luaL_argcheck(L, at >= 1 && at <= LUA_MAXINTEGER - (lua_Integer)n, 3, "index out of range");
  lua_settop(L, 3);
  lua_pushcfunction(L, decode_into_protected);
  lua_pushlightuserdata(L, (void *)s);
  lua_pushinteger(L, (lua_Integer)n);
  lua_pushvalue(L, 2);
  lua_pushvalue(L, 3);
  if (lua_pcall(L, 4, 1, 0) == LUA_OK) return 1;
  if (lua_type(L, -1) != LUA_TSTRING) lua_pushliteral(L, "cannot decode: error object is not a string");
  lua_pushnil(L);
  lua_insert(L, -2);
  return 2;
}

static int l_loads(lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  if (mp_decode(L, s, n)) return 1;
  lua_pushnil(L);
  lua_insert(L, -2);
  return 2;
}

/* core.register_type(mt): registers a type the Lua layer makes (a class
** with __name and __mproc_send/__mproc_recv, as queue.lua's) under its
** __name, where the codec finds every mproc type (C types are registered
** by mp_type). */
static int l_register_type(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  if (lua_getfield(L, 1, "__name") != LUA_TSTRING)
    return luaL_argerror(L, 1, "a metatable with a __name expected");
  lua_pushvalue(L, 1);
  lua_settable(L, LUA_REGISTRYINDEX);
  return 0;
}

void mp_open_codec(lua_State *L) {
  layout_check(L);
  lua_pushcfunction(L, l_register_type);
  lua_setfield(L, -2, "register_type");
  lua_pushcfunction(L, l_dumps);
  lua_setfield(L, -2, "dumps");
  lua_pushcfunction(L, l_loads);
  lua_setfield(L, -2, "loads");
  lua_pushcfunction(L, l_loads_into);
  lua_setfield(L, -2, "loads_into");
  lua_pushcfunction(L, l_tokens_sent);
  lua_setfield(L, -2, "tokens_sent");
}
