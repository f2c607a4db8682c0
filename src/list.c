/*
** list.c: mproc.List, an array in a shared store (store.c: the memfd, the
** robust lock, the heap, the transactions).
**
** The state's a_off/a_cap are an array of record offsets and its room;
** n is the length. A record is a word (the value's length, and in its top
** 16 bits the number of stores the value names), the codec bytes, then
** those stores' ids (store.c: References between stores).
** append writes its record and the array slot past the published length,
** then bumps the length: one change the undo log takes back if the
** process dies before the commit. Changes that move elements (insert,
** pop but the last, sort) build a new array in a fresh block and switch
** to it, so they log a few words, not one per element moved.
**
** As in dict.c, no Lua runs and nothing Lua allocates under the lock:
** values are encoded before locking and copied out to be decoded after.
*/
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "mproc.h"

#define LIST_MT "mproc.List"
#define MAX_LEN ((uint64_t)1 << 40)
#define SET_LOG (3 * MP_STORE_ALLOC_LOG + 2 * MP_STORE_FREE_LOG + 2)
#define POP_LOG (2 * MP_STORE_FREE_LOG + MP_STORE_ALLOC_LOG + MP_STORE_RESET_LOG)
#define LEN_BITS 48
#define MAX_REFS 0xffff

#define DATA(s) mp_store_data(s)
#define WORD(s, off) (*(uint64_t *)(DATA(s) + (off)))

#define lock_or_raise(L, s) mp_store_lock_or_raise(L, s, LIST_MT)

/* A value to store: its codec bytes and the ids of the stores it names. */
typedef struct {
  mp_bytes b;
  const char *ids;
  uint32_t nids;
} lval;

/* ---------------------------------------------------------------------
** The array, under the lock
** --------------------------------------------------------------------- */

static uint64_t *array_of(mp_store *s) {
  return (uint64_t *)(DATA(s) + mp_store_st(s)->a_off);
}

static uint64_t rec_len(mp_store *s, uint64_t rec) {
  return WORD(s, rec) & (((uint64_t)1 << LEN_BITS) - 1);
}

static uint32_t rec_nref(mp_store *s, uint64_t rec) {
  return (uint32_t)(WORD(s, rec) >> LEN_BITS);
}

/* Counts the references of the record at rec off the table: it goes. */
static void rec_drop_refs(mp_store *s, uint64_t rec) {
  uint32_t n = rec_nref(s, rec);
  if (n > 0) mp_store_refs_drop(s, DATA(s) + rec + 8 + rec_len(s, rec), n);
}

/* A new record holding v, its references counted; *rec is its offset.
** The caller made room for SET_LOG plus the references. 0 or an errno. */
MP_HOT static int new_record(mp_store *s, const lval *v, uint64_t *rec) {
  uint64_t vlen = v->b.n[0] + v->b.n[1], head;
  char *r;
  int e;
  if (v->nids > MAX_REFS || vlen >> LEN_BITS) return EFBIG;
  if ((e = mp_store_alloc(s, 8 + vlen + (uint64_t)v->nids * MP_STORE_ID, rec)) != 0) return e;
  r = DATA(s) + *rec;
  head = vlen | (uint64_t)v->nids << LEN_BITS;
  memcpy(r, &head, 8);
  memcpy(r + 8, v->b.p[0], v->b.n[0]);
  if (v->b.n[1]) memcpy(r + 8 + v->b.n[0], v->b.p[1], v->b.n[1]);
  if (v->nids) memcpy(r + 8 + vlen, v->ids, (size_t)v->nids * MP_STORE_ID);
  return v->nids > 0 ? mp_store_refs_add(s, v->ids, v->nids) : 0;
}

/* Whether the log has room for a change storing v (and, with old, letting
** go of the record at old). */
static int set_room(mp_store *s, const lval *v, uint64_t old) {
  return mp_store_room(s, SET_LOG + MP_STORE_REFS_LOG(v->nids) + (old ? rec_nref(s, old) : 0));
}

/* Switches to a new array of room cap: the old one's elements but the
** one at drop (0-based; -1: none), with a gap at gap (-1: none). Frees
** the old array. 0 or an errno. */
static int rebuild(mp_store *s, uint64_t cap, int64_t drop, int64_t gap) {
  mp_store_state *st = mp_store_st(s);
  uint64_t off, i, k = 0, *old, *arr;
  int e;
  if (cap < 8) cap = 8;
  if ((e = mp_store_alloc(s, cap * 8, &off)) != 0) return e;
  arr = (uint64_t *)(DATA(s) + off);
  old = array_of(s);
  for (i = 0; i < st->n; i++) {
    if ((int64_t)i == drop) continue;
    if ((int64_t)k == gap) k++;
    arr[k++] = old[i];
  }
  if (st->a_cap != 0) mp_store_free(s, st->a_off);
  st->a_off = off;
  st->a_cap = cap;
  return 0;
}

/* Appends v. 0 or an errno. */
MP_HOT static int append_locked(mp_store *s, const lval *v) {
  mp_store_state *st = mp_store_st(s);
  uint64_t rec;
  int e;
  if (!set_room(s, v, 0)) return E2BIG;
  if (st->n >= MAX_LEN) return EFBIG;
  if ((e = new_record(s, v, &rec)) != 0) return e;
  if (st->n == st->a_cap && (e = rebuild(s, st->a_cap * 2, -1, -1)) != 0) return e;
  array_of(s)[st->n] = rec;   /* past the published length */
  st->n++;
  st->count = st->n;
  return 0;
}

/* Inserts v before element i (0-based, i <= n). 0 or an errno. */
static int insert_locked(mp_store *s, uint64_t i, const lval *v) {
  mp_store_state *st = mp_store_st(s);
  uint64_t rec;
  int e;
  if (i == st->n) return append_locked(s, v);
  if (!set_room(s, v, 0)) return E2BIG;
  if ((e = new_record(s, v, &rec)) != 0) return e;
  if ((e = rebuild(s, st->n == st->a_cap ? st->a_cap * 2 : st->a_cap, -1, (int64_t)i)) != 0)
    return e;
  array_of(s)[i] = rec;       /* in the new array */
  st->n++;
  st->count = st->n;
  return 0;
}

/* Replaces element i (0-based, < n) with v. 0 or an errno. */
static int replace_locked(mp_store *s, uint64_t i, const lval *v) {
  uint64_t rec, old = array_of(s)[i];
  int e;
  if (!set_room(s, v, old)) return E2BIG;
  if ((e = new_record(s, v, &rec)) != 0) return e;
  old = array_of(s)[i];       /* the data may have moved */
  mp_store_put(s, mp_store_st(s)->a_off + i * 8, rec);
  rec_drop_refs(s, old);
  mp_store_free(s, old);
  return 0;
}

/* Removes element i (0-based, < n); an emptied large heap starts over.
** 0 or an errno. */
static int remove_locked(mp_store *s, uint64_t i) {
  mp_store_state *st = mp_store_st(s);
  uint64_t rec = array_of(s)[i];
  int e;
  if (!mp_store_room(s, POP_LOG + rec_nref(s, rec))) return E2BIG;
  if (i + 1 < st->n && (e = rebuild(s, st->a_cap, (int64_t)i, -1)) != 0) return e;
  rec_drop_refs(s, rec);
  mp_store_free(s, rec);
  st->n--;
  st->count = st->n;
  if (st->n == 0) mp_store_emptied(s);
  return 0;
}

/* Copies the value of element i (0-based) out. 0 or ENOMEM. */
MP_HOT static int copy_value(mp_store *s, uint64_t i, mp_vcopy *c) {
  uint64_t rec = array_of(s)[i];
  return mp_store_copy_out(s, rec + 8, rec_len(s, rec), c);
}

/* ---------------------------------------------------------------------
** Operations: each locks, works, unlocks, then touches Lua
** --------------------------------------------------------------------- */

static mp_store *check_list(lua_State *L) { return mp_store_check(L, 1, LIST_MT); }

/* The integer index at idx; raises for anything else. */
static lua_Integer check_index(lua_State *L, int idx) {
  int isint;
  lua_Integer i = lua_tointegerx(L, idx, &isint);
  if (!isint)
    luaL_error(L, "List index must be an integer, got %s",
               lua_type(L, idx) == LUA_TNUMBER ? lua_tostring(L, idx) : luaL_typename(L, idx));
  return i;
}

static int range_error(lua_State *L, lua_Integer i, uint64_t hi) {
  return luaL_error(L, "List index %I out of range (1..%I)", (LUAI_UACINT)i, (LUAI_UACINT)hi);
}

/* Encodes the value at idx, which must not be nil, for s, with the
** stores it names. */
static void check_value(lua_State *L, mp_store *s, int idx, lval *v) {
  if (lua_isnoneornil(L, idx)) luaL_error(L, "a List cannot hold nil (use pop or remove)");
  v->nids = mp_store_encode(L, s, idx, &v->b, &v->ids);
}

#define LAST LUA_MININTEGER   /* list_get's i for the last element */

/* Pushes element i (1-based; LAST: the last, nil when empty): nil past
** the end; raises below 1. With del, removes it too. */
MP_HOT static void list_get(lua_State *L, mp_store *s, lua_Integer i, int del) {
  mp_vcopy c;
  mp_store_mark_t m;
  uint64_t n;
  uint32_t nref = 0;
  int e;
  lock_or_raise(L, s);
  mp_store_mark(s, &m);
  n = mp_store_st(s)->n;
  if (i == LAST && n > 0) i = (lua_Integer)n;
  if (i < 1 || (uint64_t)i > n) {
    mp_store_unlock(s);
    if (i != LAST && (i < 1 || del)) range_error(L, i, n);
    lua_pushnil(L);
    return;
  }
  if (del) nref = rec_nref(s, array_of(s)[i - 1]);
  e = copy_value(s, (uint64_t)i - 1, &c);
  if (e == 0 && del && (e = remove_locked(s, (uint64_t)i - 1)) != 0) {
    if (c.buf.p != NULL) mp_buf_give(&c.buf);
    mp_store_fail(s, &m);
    mp_store_raise(L, "pop from the List", e);
  }
  mp_store_unlock_taken(s, nref);
  if (e != 0) mp_store_raise(L, "read the List", e);
  if (del) mp_store_push_taken(L, &c, s, nref, LIST_MT);
  else mp_store_push_copy(L, &c, s, LIST_MT);
}

/* Stores the value at vidx at i (1..n: replaces, n+1: appends; with
** insert, goes before i). */
MP_HOT static void list_set(lua_State *L, mp_store *s, lua_Integer i, int vidx, int insert) {
  mp_store_mark_t m;
  lval v;
  uint64_t n;
  int e;
  check_value(L, s, vidx, &v);
  lock_or_raise(L, s);
  mp_store_mark(s, &m);
  n = mp_store_st(s)->n;
  if (i < 1 || (uint64_t)i > n + 1) {
    mp_store_unlock(s);
    range_error(L, i, n + 1);
  }
  if ((uint64_t)i == n + 1) e = append_locked(s, &v);
  else if (insert) e = insert_locked(s, (uint64_t)i - 1, &v);
  else e = replace_locked(s, (uint64_t)i - 1, &v);
  if (e != 0) {
    mp_store_fail(s, &m);
    mp_store_raise(L, "store in the List", e);
  }
  mp_store_unlock(s);
  if (v.nids > 0) mp_store_keep_ids(s, v.ids, v.nids);
}

static uint64_t list_len(lua_State *L, mp_store *s) {
  uint64_t n;
  lock_or_raise(L, s);
  n = mp_store_st(s)->n;
  mp_store_unlock(s);
  return n;
}

/* lua_pcall'd: (bytes, count) -> the values, a sequence */
static int decode_all(lua_State *L) {
  const char *p = (const char *)lua_touserdata(L, 1);
  lua_Integer n = lua_tointeger(L, 2), i;
  lua_createtable(L, (int)(n > INT32_MAX ? 0 : n), 0);
  for (i = 1; i <= n; i++) {
    uint64_t vlen;
    memcpy(&vlen, p, 8);
    if (!mp_decode(L, p + 8, (size_t)vlen)) return lua_error(L);
    lua_rawseti(L, -2, i);
    p += 8 + vlen;
  }
  return 1;
}

/* Pushes a sequence of the values, read at one instant. */
void mp_list_snapshot(lua_State *L, mp_store *s) {
  mp_store_state *st;
  mp_buf b;
  uint64_t i, total = 0, n;
  char *p;
  int r;
  lock_or_raise(L, s);
  st = mp_store_st(s);
  for (i = 0; i < st->n; i++) total += 8 + rec_len(s, array_of(s)[i]);
  if (mp_buf_take(&b, (size_t)total + 1) != 0) {
    mp_store_unlock(s);
    mp_store_raise(L, "read the List", ENOMEM);
  }
  for (i = 0, p = b.p; i < st->n; i++) {
    uint64_t rec = array_of(s)[i], len = rec_len(s, rec);
    memcpy(p, &len, 8);
    memcpy(p + 8, DATA(s) + rec + 8, (size_t)len);
    p += 8 + len;
  }
  n = st->n;
  mp_store_unlock(s);
  lua_pushcfunction(L, decode_all);
  lua_pushlightuserdata(L, b.p);
  lua_pushinteger(L, (lua_Integer)n);
  mp_store_decoding(s);
  r = lua_pcall(L, 2, 1, 0);
  mp_store_decoding(NULL);
  mp_buf_give(&b);
  if (r != LUA_OK) luaL_error(L, "cannot decode a List value: %s", lua_tostring(L, -1));
}

/* ---------------------------------------------------------------------
** Lua side
** --------------------------------------------------------------------- */

/* core.list_new() -> an empty mproc.List, or nil, message, errno */
static int l_list_new(lua_State *L) {
  return mp_store_make(L, LIST_MT, MP_STORE_LIST) ? 1 : 3;
}

/* l[i] for integers, methods for strings. */
MP_HOT static int m_index(lua_State *L) {
  mp_store *s = check_list(L);
  if (lua_type(L, 2) == LUA_TSTRING) {
    lua_pushvalue(L, 2);
    lua_rawget(L, lua_upvalueindex(1));
    return 1;
  }
  list_get(L, s, check_index(L, 2), 0);
  return 1;
}

MP_HOT static int m_newindex(lua_State *L) {
  mp_store *s = check_list(L);
  list_set(L, s, check_index(L, 2), 3, 0);
  return 0;
}

static int m_len(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)list_len(L, check_list(L)));
  return 1;
}

/* l:append(v) */
MP_HOT static int m_append(lua_State *L) {
  mp_store *s = check_list(L);
  mp_store_mark_t m;
  lval v;
  int e;
  check_value(L, s, 2, &v);
  lock_or_raise(L, s);
  mp_store_mark(s, &m);
  if ((e = append_locked(s, &v)) != 0) {
    mp_store_fail(s, &m);
    mp_store_raise(L, "append to the List", e);
  }
  mp_store_unlock(s);
  if (v.nids > 0) mp_store_keep_ids(s, v.ids, v.nids);
  return 0;
}

/* l:insert(i, v): v goes before element i (1..#l+1) */
static int m_insert(lua_State *L) {
  mp_store *s = check_list(L);
  lua_Integer i = luaL_checkinteger(L, 2);
  list_set(L, s, i, 3, 1);
  return 0;
}

/* l:pop([i]) -> element i (default: the last), removed; nil when empty */
static int m_pop(lua_State *L) {
  mp_store *s = check_list(L);
  list_get(L, s, lua_isnoneornil(L, 2) ? LAST : luaL_checkinteger(L, 2), 1);
  return 1;
}

static int m_clear(lua_State *L) { return mp_store_clear(L, LIST_MT); }

/* core.list_permute(l, p): element i becomes the old element p[i]; p must
** be a permutation of 1..#l (checked under the lock). */
static int l_list_permute(lua_State *L) {
  mp_store *s = check_list(L);
  lua_Integer n, i;
  uint64_t *p, *seen, *arr;
  mp_store_mark_t m;
  int e;
  luaL_checktype(L, 2, LUA_TTABLE);
  n = luaL_len(L, 2);
  luaL_argcheck(L, n >= 0 && (uint64_t)n < MAX_LEN, 2, "too long");
  p = (uint64_t *)lua_newuserdatauv(L, (size_t)(n > 0 ? n : 1) * 16, 0);
  seen = p + n;
  memset(seen, 0, (size_t)n * 8);
  for (i = 1; i <= n; i++) {
    lua_Integer k;
    lua_rawgeti(L, 2, i);
    k = lua_tointeger(L, -1);
    lua_pop(L, 1);
    luaL_argcheck(L, k >= 1 && k <= n && !seen[k - 1], 2, "not a permutation of 1..n");
    seen[k - 1] = 1;
    p[i - 1] = (uint64_t)k - 1;
  }
  lock_or_raise(L, s);
  mp_store_mark(s, &m);
  if (mp_store_st(s)->n != (uint64_t)n) {
    mp_store_unlock(s);
    return luaL_error(L, "the List changed length while it was sorted");
  }
  if (n > 0 && (e = mp_store_room(s, SET_LOG) ? rebuild(s, mp_store_st(s)->a_cap, -1, -1) : E2BIG) != 0) {
    mp_store_fail(s, &m);
    mp_store_raise(L, "sort the List", e);
  }
  arr = array_of(s);               /* a fresh copy: reorder it in place */
  for (i = 0; i < n; i++) seen[i] = arr[i];
  for (i = 0; i < n; i++) arr[i] = seen[p[i]];
  mp_store_unlock(s);
  return 0;
}

/* NULL when the array is whole (the length right, records inside their
** blocks), else what is wrong; the records' references are tallied into
** t. Under the lock. */
const char *mp_list_check_array(mp_store *s, mp_store_tally_t *t) {
  mp_store_state *st = mp_store_st(s);
  uint64_t i;
  if (st->n > st->a_cap || st->count != st->n) return "bad length";
  for (i = 0; i < st->n; i++) {
    uint64_t rec = array_of(s)[i];
    if (rec < MP_STORE_HEAP || rec >= st->bump) return "an element outside the heap";
    if (8 + rec_len(s, rec) + (uint64_t)rec_nref(s, rec) * MP_STORE_ID >
        mp_store_block_size(s, rec))
      return "an element overruns its block";
    mp_store_tally(s, t, DATA(s) + rec + 8 + rec_len(s, rec), rec_nref(s, rec));
  }
  return NULL;
}

static int pairs_next(lua_State *L) {
  lua_Integer i = luaL_checkinteger(L, 2) + 1;
  if (lua_rawgeti(L, 1, i) == LUA_TNIL) return 1;
  lua_pushinteger(L, i);
  lua_insert(L, -2);
  return 2;
}

/* __pairs: i, v over a snapshot taken at the call */
static int m_pairs(lua_State *L) {
  mp_list_snapshot(L, check_list(L));
  lua_pushcfunction(L, pairs_next);
  lua_insert(L, -2);
  lua_pushinteger(L, 0);
  return 3;
}

static int m_tostring(lua_State *L) {
  mp_store *s = mp_store_test(L, 1, LIST_MT);
  if (s == NULL) lua_pushliteral(L, LIST_MT " (closed)");
  else lua_pushfstring(L, LIST_MT " (%I items)", (LUAI_UACINT)list_len(L, s));
  return 1;
}

static int m_gc(lua_State *L) { return mp_store_gc(L, LIST_MT); }
static int m_send(lua_State *L) { return mp_store_send(L, LIST_MT); }
static int m_recv(lua_State *L) { return mp_store_recv(L, LIST_MT, MP_STORE_LIST); }
static int m_eq(lua_State *L) { return mp_store_eq(L, LIST_MT); }

static const luaL_Reg list_meta[] = {
  {"__newindex", m_newindex}, {"__len", m_len}, {"__pairs", m_pairs},
  {"__tostring", m_tostring}, {"__eq", m_eq}, {"__gc", m_gc}, {"__close", m_gc},
  {"__mproc_send", m_send}, {"__mproc_recv", m_recv}, {NULL, NULL}
};

static const luaL_Reg list_methods[] = {
  {"append", m_append}, {"insert", m_insert}, {"pop", m_pop}, {"clear", m_clear},
  {"len", m_len}, {NULL, NULL}
};

void mp_open_list(lua_State *L) {
  mp_type(L, LIST_MT, list_meta, list_methods, m_index);
  lua_pushcfunction(L, l_list_new);
  lua_setfield(L, -2, "list_new");
  lua_pushcfunction(L, l_list_permute);
  lua_setfield(L, -2, "list_permute");
}
