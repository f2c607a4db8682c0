/*
** list.c: mproc.List, an array in a shared store (store.c: the memfd, the
** robust lock, the heap, the transactions).
**
** The state's a_off/a_cap are an array of record offsets and its room;
** n is the length. A record is the value's length then its codec bytes.
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
#define SMALL 512
#define RESET_AT ((uint64_t)1 << 20)
#define MAX_LEN ((uint64_t)1 << 40)
#define SET_LOG (3 * MP_STORE_ALLOC_LOG + 2 * MP_STORE_FREE_LOG + 2)
#define POP_LOG (2 * MP_STORE_FREE_LOG + MP_STORE_ALLOC_LOG + MP_STORE_RESET_LOG)

#define DATA(s) mp_store_data(s)
#define WORD(s, off) (*(uint64_t *)(DATA(s) + (off)))

typedef struct {
  char small[SMALL];
  mp_buf buf;
  const char *p;
  size_t n;
} vcopy;

/* ---------------------------------------------------------------------
** The array, under the lock
** --------------------------------------------------------------------- */

static uint64_t *array_of(mp_store *s) {
  return (uint64_t *)(DATA(s) + mp_store_st(s)->a_off);
}

/* A new record holding v; *rec is its offset. 0 or an errno. */
static int new_record(mp_store *s, const mp_bytes *v, uint64_t *rec) {
  uint64_t vlen = v->n[0] + v->n[1];
  char *r;
  int e = mp_store_alloc(s, 8 + vlen, rec);
  if (e != 0) return e;
  r = DATA(s) + *rec;
  memcpy(r, &vlen, 8);
  memcpy(r + 8, v->p[0], v->n[0]);
  if (v->n[1]) memcpy(r + 8 + v->n[0], v->p[1], v->n[1]);
  return 0;
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
static int append_locked(mp_store *s, const mp_bytes *v) {
  mp_store_state *st = mp_store_st(s);
  uint64_t rec;
  int e;
  if (!mp_store_room(s, SET_LOG)) return E2BIG;
  if (st->n >= MAX_LEN) return EFBIG;
  if ((e = new_record(s, v, &rec)) != 0) return e;
  if (st->n == st->a_cap && (e = rebuild(s, st->a_cap * 2, -1, -1)) != 0) return e;
  array_of(s)[st->n] = rec;   /* past the published length */
  st->n++;
  st->count = st->n;
  return 0;
}

/* Inserts v before element i (0-based, i <= n). 0 or an errno. */
static int insert_locked(mp_store *s, uint64_t i, const mp_bytes *v) {
  mp_store_state *st = mp_store_st(s);
  uint64_t rec;
  int e;
  if (i == st->n) return append_locked(s, v);
  if (!mp_store_room(s, SET_LOG)) return E2BIG;
  if ((e = new_record(s, v, &rec)) != 0) return e;
  if ((e = rebuild(s, st->n == st->a_cap ? st->a_cap * 2 : st->a_cap, -1, (int64_t)i)) != 0)
    return e;
  array_of(s)[i] = rec;       /* in the new array */
  st->n++;
  st->count = st->n;
  return 0;
}

/* Replaces element i (0-based, < n) with v. 0 or an errno. */
static int replace_locked(mp_store *s, uint64_t i, const mp_bytes *v) {
  uint64_t rec, old;
  int e;
  if (!mp_store_room(s, SET_LOG)) return E2BIG;
  if ((e = new_record(s, v, &rec)) != 0) return e;
  old = array_of(s)[i];
  mp_store_put(s, mp_store_st(s)->a_off + i * 8, rec);
  mp_store_free(s, old);
  return 0;
}

static void clear_locked(mp_store *s) {
  mp_store_state *st = mp_store_st(s);
  mp_store_reset(s);
  st->a_off = st->a_cap = st->b_off = st->b_cap = st->n = st->count = 0;
}

/* Removes element i (0-based, < n); an emptied large heap starts over.
** 0 or an errno. */
static int remove_locked(mp_store *s, uint64_t i) {
  mp_store_state *st = mp_store_st(s);
  uint64_t rec = array_of(s)[i];
  int e;
  if (!mp_store_room(s, POP_LOG)) return E2BIG;
  if (i + 1 < st->n && (e = rebuild(s, st->a_cap, (int64_t)i, -1)) != 0) return e;
  mp_store_free(s, rec);
  st->n--;
  st->count = st->n;
  if (st->n == 0 && st->bump > RESET_AT) clear_locked(s);
  return 0;
}

/* Copies the value of element i (0-based) out. 0 or ENOMEM. */
static int copy_value(mp_store *s, uint64_t i, vcopy *c) {
  const char *r = DATA(s) + array_of(s)[i];
  uint64_t vlen;
  memcpy(&vlen, r, 8);
  c->buf.p = NULL;
  c->buf.cap = 0;
  c->n = (size_t)vlen;
  if (vlen <= SMALL) {
    c->p = c->small;
  } else {
    if (mp_buf_take(&c->buf, (size_t)vlen) != 0) return ENOMEM;
    c->p = c->buf.p;
  }
  memcpy((char *)c->p, r + 8, (size_t)vlen);
  return 0;
}

static void push_copy(lua_State *L, vcopy *c) {
  int ok = mp_decode(L, c->p, c->n);
  if (c->buf.p != NULL) mp_buf_give(&c->buf);
  if (!ok) luaL_error(L, "cannot decode a List value: %s", lua_tostring(L, -1));
}

/* ---------------------------------------------------------------------
** Operations: each locks, works, unlocks, then touches Lua
** --------------------------------------------------------------------- */

static mp_store *check_list(lua_State *L) { return mp_store_check(L, 1, LIST_MT); }

static void lock_or_raise(lua_State *L, mp_store *s) {
  int e = mp_store_lock(L, s);
  if (e != 0) luaL_error(L, "cannot lock the List: %s", strerror(e));
}

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

/* Encodes the value at idx, which must not be nil. */
static void check_value(lua_State *L, int idx, mp_bytes *v) {
  if (lua_isnoneornil(L, idx)) luaL_error(L, "a List cannot hold nil (use pop or remove)");
  mp_encode(L, idx, v);
}

/* Pushes element i (1-based): nil past the end; raises below 1. With
** del, removes it too. */
static void list_get(lua_State *L, mp_store *s, lua_Integer i, int del) {
  vcopy c;
  mp_store_mark_t m;
  uint64_t n;
  int e;
  lock_or_raise(L, s);
  mp_store_mark(s, &m);
  n = mp_store_st(s)->n;
  if (i < 1 || (uint64_t)i > n) {
    mp_store_unlock(s);
    if (i < 1 || del) range_error(L, i, n);
    lua_pushnil(L);
    return;
  }
  e = copy_value(s, (uint64_t)i - 1, &c);
  if (e == 0 && del && (e = remove_locked(s, (uint64_t)i - 1)) != 0) {
    if (c.buf.p != NULL) mp_buf_give(&c.buf);
    mp_store_fail(s, &m);
    mp_store_raise(L, "pop from the List", e);
  }
  mp_store_unlock(s);
  if (e != 0) mp_store_raise(L, "read the List", e);
  push_copy(L, &c);
}

/* Stores the value at vidx at i (1..n: replaces, n+1: appends; with
** insert, goes before i). */
static void list_set(lua_State *L, mp_store *s, lua_Integer i, int vidx, int insert) {
  mp_store_mark_t m;
  mp_bytes v;
  uint64_t n;
  int e;
  check_value(L, vidx, &v);
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
static void snapshot(lua_State *L, mp_store *s) {
  mp_store_state *st;
  mp_buf b;
  uint64_t i, total = 0, n;
  char *p;
  int r;
  lock_or_raise(L, s);
  st = mp_store_st(s);
  for (i = 0; i < st->n; i++) total += 8 + WORD(s, array_of(s)[i]);
  if (mp_buf_take(&b, (size_t)total + 1) != 0) {
    mp_store_unlock(s);
    mp_store_raise(L, "read the List", ENOMEM);
  }
  for (i = 0, p = b.p; i < st->n; i++) {
    uint64_t rec = array_of(s)[i], len = 8 + WORD(s, rec);
    memcpy(p, DATA(s) + rec, (size_t)len);
    p += len;
  }
  n = st->n;
  mp_store_unlock(s);
  lua_pushcfunction(L, decode_all);
  lua_pushlightuserdata(L, b.p);
  lua_pushinteger(L, (lua_Integer)n);
  r = lua_pcall(L, 2, 1, 0);
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
static int m_index(lua_State *L) {
  mp_store *s = check_list(L);
  if (lua_type(L, 2) == LUA_TSTRING) {
    lua_pushvalue(L, 2);
    lua_rawget(L, lua_upvalueindex(1));
    return 1;
  }
  list_get(L, s, check_index(L, 2), 0);
  return 1;
}

static int m_newindex(lua_State *L) {
  mp_store *s = check_list(L);
  list_set(L, s, check_index(L, 2), 3, 0);
  return 0;
}

static int m_len(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)list_len(L, check_list(L)));
  return 1;
}

/* l:append(v) */
static int m_append(lua_State *L) {
  mp_store *s = check_list(L);
  mp_store_mark_t m;
  mp_bytes v;
  int e;
  check_value(L, 2, &v);
  lock_or_raise(L, s);
  mp_store_mark(s, &m);
  if ((e = append_locked(s, &v)) != 0) {
    mp_store_fail(s, &m);
    mp_store_raise(L, "append to the List", e);
  }
  mp_store_unlock(s);
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
  if (lua_isnoneornil(L, 2)) {
    mp_store_mark_t m;
    vcopy c;
    uint64_t n;
    int e;
    lock_or_raise(L, s);
    mp_store_mark(s, &m);
    if ((n = mp_store_st(s)->n) == 0) {
      mp_store_unlock(s);
      lua_pushnil(L);
      return 1;
    }
    if ((e = copy_value(s, n - 1, &c)) == 0 && (e = remove_locked(s, n - 1)) != 0 &&
        c.buf.p != NULL)
      mp_buf_give(&c.buf);
    if (e != 0) {
      mp_store_fail(s, &m);
      mp_store_raise(L, "pop from the List", e);
    }
    mp_store_unlock(s);
    push_copy(L, &c);
    return 1;
  }
  list_get(L, s, luaL_checkinteger(L, 2), 1);
  return 1;
}

/* l:clear(): every element gone, the memory given back */
static int m_clear(lua_State *L) {
  mp_store *s = check_list(L);
  mp_store_mark_t m;
  lock_or_raise(L, s);
  mp_store_mark(s, &m);
  if (!mp_store_room(s, MP_STORE_RESET_LOG)) {
    mp_store_fail(s, &m);
    mp_store_raise(L, "clear the List", E2BIG);
  }
  clear_locked(s);
  mp_store_unlock(s);
  return 0;
}

/* l:_snapshot() -> a plain sequence of the values */
static int m_snapshot(lua_State *L) {
  snapshot(L, check_list(L));
  return 1;
}

/* l:_permute(p): element i becomes the old element p[i]; p must be a
** permutation of 1..#l (checked under the lock). */
static int m_permute(lua_State *L) {
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

static int m_locked(lua_State *L) { return mp_store_locked(L, check_list(L)); }

/* l:_check() -> true, or false, what is wrong */
static int m_check(lua_State *L) {
  mp_store *s = check_list(L);
  mp_store_state *st;
  uint64_t nfree, i;
  const char *why = mp_store_check_heap(L, s, &nfree);
  if (why == NULL) {
    lock_or_raise(L, s);
    st = mp_store_st(s);
    if (st->n > st->a_cap || st->count != st->n) why = "bad length";
    for (i = 0; why == NULL && i < st->n; i++) {
      uint64_t rec = array_of(s)[i];
      if (rec < MP_STORE_HEAP || rec >= st->bump) why = "an element outside the heap";
      else if (8 + WORD(s, rec) > mp_store_block_size(s, rec)) why = "an element overruns its block";
    }
    mp_store_unlock(s);
  }
  lua_pushboolean(L, why == NULL);
  if (why == NULL) return 1;
  lua_pushstring(L, why);
  return 2;
}

static int m_sizes(lua_State *L) {
  uint64_t data, top, rollbacks;
  mp_store_sizes(check_list(L), &data, &top, &rollbacks);
  lua_pushinteger(L, (lua_Integer)data);
  lua_pushinteger(L, (lua_Integer)top);
  lua_pushinteger(L, (lua_Integer)rollbacks);
  return 3;
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
  snapshot(L, check_list(L));
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
  {"len", m_len}, {"_snapshot", m_snapshot}, {"_permute", m_permute},
  {"_locked", m_locked}, {"_check", m_check}, {"_sizes", m_sizes}, {NULL, NULL}
};

void mp_open_list(lua_State *L) {
  mp_type(L, LIST_MT, list_meta, list_methods, m_index);
  lua_pushcfunction(L, l_list_new);
  lua_setfield(L, -2, "list_new");
}
