/*
** dict.c: mproc.Dict and mproc.Namespace, hash tables in a shared store
** (store.c: the memfd, the robust lock, the heap, the transactions).
**
** The layout is CPython's compact dict: an index of 32-bit slots (the
** hash's low bits, linear probing; 0 empty, DUMMY deleted, else entry
** number + 1) into an array of entries {hash, record} in insertion order,
** so keys(), values() and pairs() give keys in the order they were first
** set. A record holds the value's length, the key's length, the number of
** stores the value names, then the key and the value as codec bytes, then
** those stores' ids (store.c: References between stores). Keys are encoded too (a float with an
** integer value as that integer, as Lua's tables do): equal keys have
** equal bytes.
**
** Every change writes its new bytes into fresh blocks (or entries past
** the published count) and links them in with logged stores, so a process
** killed inside it leaves the old value or the new one. No Lua code runs
** and nothing Lua allocates while the lock is held: values are encoded
** before locking and copied out to be decoded after unlocking (within a
** store_locked, by the Lua layer's choice, the lock is held throughout).
*/
#define _GNU_SOURCE
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "mproc.h"

#define DICT_MT "mproc.Dict"
#define NS_MT "mproc.Namespace"
#define EMPTY 0u
#define DUMMY 0xffffffffu
#define REC_HEAD 16          /* u64 value length, u32 key length, u32 refs */
#define MAX_INDEX ((uint64_t)1 << 31)
#define SET_LOG (4 * MP_STORE_ALLOC_LOG + 4 * MP_STORE_FREE_LOG + 4)
#define DEL_LOG (3 + MP_STORE_FREE_LOG + MP_STORE_RESET_LOG)

typedef struct { uint64_t hash, rec; } entry;

typedef struct {
  mp_bytes b;      /* the key's codec bytes, in two pieces */
  size_t n;
  uint64_t hash;
} dkey;

/* A value to store: its codec bytes and the ids of the stores it names. */
typedef struct {
  mp_bytes b;
  const char *ids;
  uint32_t nids;
} dval;

#define DATA(s) mp_store_data(s)
#define WORD(s, off) (*(uint64_t *)(DATA(s) + (off)))

/* ---------------------------------------------------------------------
** Keys
** --------------------------------------------------------------------- */

MP_HOT static uint64_t hash_bytes(uint64_t h, const char *p, size_t n) {
  const uint64_t K = 0x9e3779b97f4a7c15u;
  uint64_t w;
  for (; n >= 8; p += 8, n -= 8) {
    memcpy(&w, p, 8);
    h = (h ^ w) * K;
    h ^= h >> 29;
  }
  w = 0;
  if (n > 0) memcpy(&w, p, n);
  h = (h ^ w ^ ((uint64_t)n << 56)) * K;
  return h ^ (h >> 32);
}

static const char *key_types(const char *mt) {
  return mt[6] == 'N' ? "string" : "string, number or boolean";
}

/* Checks the key at idx and encodes it into k (pushing one value that
** keeps the bytes alive). A float with an integer value becomes that
** integer; NaN and other types raise. */
MP_HOT static void check_key(lua_State *L, mp_store *s, int idx, dkey *k, const char *mt) {
  int t = lua_type(L, idx);
  idx = lua_absindex(L, idx);
  if (t == LUA_TNUMBER && mt[6] != 'N' && !lua_isinteger(L, idx)) {
    lua_Number d = lua_tonumber(L, idx);
    lua_Integer i;
    if (d != d) luaL_error(L, "%s key is NaN", mt + 6);
    if (floor(d) == d && lua_numbertointeger(d, &i)) {
      lua_pushinteger(L, i);
      idx = lua_gettop(L);
    }
  } else if (t != LUA_TSTRING && (mt[6] == 'N' || (t != LUA_TNUMBER && t != LUA_TBOOLEAN))) {
    luaL_error(L, "%s key must be a %s, got %s", mt + 6, key_types(mt), luaL_typename(L, idx));
  }
  mp_encode(L, idx, &k->b);
  k->n = k->b.n[0] + k->b.n[1];
  k->hash = hash_bytes(hash_bytes(mp_store_seed(s), k->b.p[0], k->b.n[0]), k->b.p[1],
                       k->b.n[1]);
}

/* ---------------------------------------------------------------------
** The table, under the lock
** --------------------------------------------------------------------- */

static uint32_t *index_of(mp_store *s) {
  return (uint32_t *)(DATA(s) + mp_store_st(s)->a_off);
}

static entry *entries_of(mp_store *s) {
  return (entry *)(DATA(s) + mp_store_st(s)->b_off);
}

/* The record at rec: its key and value lengths, the stores it names. */
static void rec_sizes(mp_store *s, uint64_t rec, uint64_t *vlen, uint32_t *klen, uint32_t *nref) {
  const char *r = DATA(s) + rec;
  memcpy(vlen, r, 8);
  memcpy(klen, r + 8, 4);
  memcpy(nref, r + 12, 4);
}

/* Counts the references of the record at rec off the table: it goes. */
static void rec_drop_refs(mp_store *s, uint64_t rec) {
  uint64_t vlen;
  uint32_t klen, nref;
  rec_sizes(s, rec, &vlen, &klen, &nref);
  if (nref > 0) mp_store_refs_drop(s, DATA(s) + rec + REC_HEAD + klen + vlen, nref);
}

static uint32_t rec_nref(mp_store *s, uint64_t rec) {
  uint32_t nref;
  memcpy(&nref, DATA(s) + rec + 12, 4);
  return nref;
}

MP_HOT static int key_equal(mp_store *s, uint64_t rec, const dkey *k) {
  const char *r = DATA(s) + rec;
  uint32_t klen;
  memcpy(&klen, r + 8, 4);
  return klen == k->n && memcmp(r + REC_HEAD, k->b.p[0], k->b.n[0]) == 0 &&
         (k->b.n[1] == 0 || memcmp(r + REC_HEAD + k->b.n[0], k->b.p[1], k->b.n[1]) == 0);
}

/* The entry of key k, or -1; *slot is its index slot, or where it would go. */
MP_HOT static int64_t find(mp_store *s, const dkey *k, uint64_t *slot) {
  mp_store_state *st = mp_store_st(s);
  uint32_t *idx;
  entry *ent;
  uint64_t mask, i;
  int64_t free = -1;
  *slot = 0;
  if (st->a_cap == 0) return -1;
  idx = index_of(s);
  ent = entries_of(s);
  mask = st->a_cap - 1;
  for (i = k->hash & mask;; i = (i + 1) & mask) {
    uint32_t v = idx[i];
    if (v == EMPTY) {
      *slot = free >= 0 ? (uint64_t)free : i;
      return -1;
    }
    if (v == DUMMY) {
      if (free < 0) free = (int64_t)i;
    } else if (ent[v - 1].hash == k->hash && key_equal(s, ent[v - 1].rec, k)) {
      *slot = i;
      return (int64_t)v - 1;
    }
  }
}

/* Sets index slot i to v: a logged store of the word around it. */
MP_HOT static void put_slot(mp_store *s, uint64_t i, uint32_t v) {
  uint64_t off = mp_store_st(s)->a_off + i * 4, w = off & ~(uint64_t)7, word;
  uint32_t half[2];
  memcpy(&word, DATA(s) + w, 8);
  memcpy(half, &word, 8);
  half[(off - w) / 4] = v;
  memcpy(&word, half, 8);
  mp_store_put(s, w, word);
}

static uint64_t entry_rec_off(mp_store *s, int64_t j) {
  return mp_store_st(s)->b_off + (uint64_t)j * sizeof(entry) + 8;
}

/* New index and entries with room for twice want entries, the live
** entries moved in, in order; the old ones freed. 0 or an errno. */
static int resize(mp_store *s, uint64_t want) {
  mp_store_state *st = mp_store_st(s);
  uint64_t cap = 8, usable, nidx, nent, j, n = 0;
  uint32_t *idx;
  entry *ent, *old;
  int e;
  while (cap * 2 / 3 < want * 2) cap *= 2;
  if (cap > MAX_INDEX) return EFBIG;
  usable = cap * 2 / 3;
  if ((e = mp_store_alloc(s, cap * 4, &nidx)) != 0) return e;
  if ((e = mp_store_alloc(s, usable * sizeof(entry), &nent)) != 0) return e;
  idx = (uint32_t *)(DATA(s) + nidx);
  ent = (entry *)(DATA(s) + nent);
  old = entries_of(s);
  memset(idx, 0, (size_t)cap * 4);
  for (j = 0; j < st->n; j++) {
    uint64_t i;
    if (old[j].rec == 0) continue;
    ent[n] = old[j];
    for (i = old[j].hash & (cap - 1); idx[i] != EMPTY; i = (i + 1) & (cap - 1)) {}
    idx[i] = (uint32_t)(++n);
  }
  if (st->a_cap != 0) {
    mp_store_free(s, st->a_off);
    mp_store_free(s, st->b_off);
  }
  st->a_off = nidx; st->a_cap = cap;
  st->b_off = nent; st->b_cap = usable;
  st->n = n;
  return 0;
}

MP_HOT static void write_record(mp_store *s, uint64_t rec, const dkey *k, const dval *v) {
  char *r = DATA(s) + rec;
  uint64_t vlen = v->b.n[0] + v->b.n[1];
  uint32_t klen = (uint32_t)k->n;
  memcpy(r, &vlen, 8);
  memcpy(r + 8, &klen, 4);
  memcpy(r + 12, &v->nids, 4);
  r += REC_HEAD;
  memcpy(r, k->b.p[0], k->b.n[0]);
  if (k->b.n[1]) memcpy(r + k->b.n[0], k->b.p[1], k->b.n[1]);
  r += k->n;
  memcpy(r, v->b.p[0], v->b.n[0]);
  if (v->b.n[1]) memcpy(r + v->b.n[0], v->b.p[1], v->b.n[1]);
  r += vlen;
  if (v->nids) memcpy(r, v->ids, (size_t)v->nids * MP_STORE_ID);
}

/* d[k] = v. 0 or an errno (the caller undoes to its mark). */
MP_HOT static int set_locked(mp_store *s, const dkey *k, const dval *v) {
  mp_store_state *st = mp_store_st(s);
  uint64_t slot, rec, size = REC_HEAD + k->n + v->b.n[0] + v->b.n[1];
  int64_t j;
  int e;
  if (k->n > UINT32_MAX) return EFBIG;
  if (!mp_store_room(s, SET_LOG + MP_STORE_REFS_LOG(v->nids))) return E2BIG;
  j = find(s, k, &slot);
  if ((e = mp_store_alloc(s, size + (uint64_t)v->nids * MP_STORE_ID, &rec)) != 0) return e;
  write_record(s, rec, k, v);
  if (v->nids > 0 && (e = mp_store_refs_add(s, v->ids, v->nids)) != 0) return e;
  if (j >= 0) {
    uint64_t old = WORD(s, entry_rec_off(s, j));
    uint32_t nref = rec_nref(s, old);
    if (nref > 0 && !mp_store_room(s, nref + SET_LOG)) return E2BIG;
    mp_store_put(s, entry_rec_off(s, j), rec);
    if (nref > 0) rec_drop_refs(s, old);
    mp_store_free(s, old);
    return 0;
  }
  if (st->n == st->b_cap) {
    if ((e = resize(s, st->count + 1)) != 0) return e;
    find(s, k, &slot);
  }
  entries_of(s)[st->n].hash = k->hash;   /* past the published count */
  entries_of(s)[st->n].rec = rec;
  put_slot(s, slot, (uint32_t)(st->n + 1));
  st->n++;
  st->count++;
  return 0;
}

/* Deletes entry j (at index slot). An emptied large heap starts over. */
static void del_locked(mp_store *s, int64_t j, uint64_t slot) {
  mp_store_state *st = mp_store_st(s);
  uint64_t rec = WORD(s, entry_rec_off(s, j));
  put_slot(s, slot, DUMMY);
  mp_store_put(s, entry_rec_off(s, j), 0);
  rec_drop_refs(s, rec);
  mp_store_free(s, rec);
  st->count--;
  if (st->count == 0) mp_store_emptied(s);
}

/* Copies the value of entry j out. 0 or ENOMEM. */
MP_HOT static int copy_value(mp_store *s, int64_t j, mp_vcopy *c) {
  uint64_t rec = entries_of(s)[j].rec, vlen;
  uint32_t klen, nref;
  rec_sizes(s, rec, &vlen, &klen, &nref);
  return mp_store_copy_out(s, rec + REC_HEAD + klen, vlen, c);
}

/* ---------------------------------------------------------------------
** Operations: each locks, works, unlocks, then touches Lua
** --------------------------------------------------------------------- */

#define lock_or_raise mp_store_lock_or_raise

/* Encodes the value at idx into v, with the stores it names. */
static void encode_value(lua_State *L, mp_store *s, int idx, dval *v) {
  v->nids = mp_store_encode(L, s, idx, &v->b, &v->ids);
}

/* Pushes the value at the key at kidx, or nil; with del, deletes it too. */
MP_HOT static void dict_get(lua_State *L, mp_store *s, int kidx, const char *mt, int del) {
  dkey k;
  mp_vcopy c;
  uint64_t slot;
  int64_t j;
  uint32_t nref;
  int e = 0;
  check_key(L, s, kidx, &k, mt);
  lock_or_raise(L, s, mt);
  j = find(s, &k, &slot);
  if (j < 0) {
    mp_store_unlock(s);
    lua_pushnil(L);
    return;
  }
  nref = del ? rec_nref(s, entries_of(s)[j].rec) : 0;
  if (del && !mp_store_room(s, DEL_LOG + nref)) e = E2BIG;
  if (e == 0) e = copy_value(s, j, &c);
  if (e == 0 && del) del_locked(s, j, slot);
  mp_store_unlock_taken(s, nref);
  if (e != 0) mp_store_raise(L, del ? "pop from the Dict" : "read the Dict", e);
  if (del) mp_store_push_taken(L, &c, s, nref, mt);
  else mp_store_push_copy(L, &c, s, mt);
}

/* Sets the key at kidx to the value at vidx (nil: deletes). */
MP_HOT static void dict_set(lua_State *L, mp_store *s, int kidx, int vidx, const char *mt) {
  dkey k;
  dval v;
  mp_store_mark_t m;
  uint64_t slot;
  int64_t j;
  int e = 0;
  kidx = lua_absindex(L, kidx);
  vidx = lua_absindex(L, vidx);
  check_key(L, s, kidx, &k, mt);
  if (!lua_isnil(L, vidx)) encode_value(L, s, vidx, &v);
  lock_or_raise(L, s, mt);
  mp_store_mark(s, &m);
  if (!lua_isnil(L, vidx)) {
    e = set_locked(s, &k, &v);
  } else if ((j = find(s, &k, &slot)) >= 0) {
    if (mp_store_room(s, DEL_LOG + rec_nref(s, entries_of(s)[j].rec))) del_locked(s, j, slot);
    else e = E2BIG;
  }
  if (e != 0) {
    mp_store_fail(s, &m);
    mp_store_raise(L, mt[6] == 'N' ? "set the Namespace attribute" : "store in the Dict", e);
  }
  mp_store_unlock(s);
  if (!lua_isnil(L, vidx) && v.nids > 0) mp_store_keep_ids(s, v.ids, v.nids);
}

static uint64_t dict_count(lua_State *L, mp_store *s, const char *mt) {
  uint64_t n;
  lock_or_raise(L, s, mt);
  n = mp_store_st(s)->count;
  mp_store_unlock(s);
  return n;
}

/* Under the lock: every live entry as (u64 klen, u64 vlen, key, value)
** into b; *count entries, *size bytes. 0 or ENOMEM. */
static int copy_all(mp_store *s, mp_buf *b, uint64_t *count, size_t *size) {
  mp_store_state *st = mp_store_st(s);
  entry *ent = entries_of(s);
  uint64_t j, total = 0;
  char *p;
  for (j = 0; j < st->n; j++) {
    uint32_t klen;
    if (ent[j].rec == 0) continue;
    memcpy(&klen, DATA(s) + ent[j].rec + 8, 4);
    total += 16 + klen + WORD(s, ent[j].rec);
  }
  if (mp_buf_take(b, (size_t)total + 1) != 0) return ENOMEM;
  for (j = 0, p = b->p; j < st->n; j++) {
    const char *r = DATA(s) + ent[j].rec;
    uint64_t kv[2];
    uint32_t klen;
    if (ent[j].rec == 0) continue;
    memcpy(&kv[1], r, 8);
    memcpy(&klen, r + 8, 4);
    kv[0] = klen;
    memcpy(p, kv, 16);
    memcpy(p + 16, r + REC_HEAD, (size_t)(kv[0] + kv[1]));
    p += 16 + kv[0] + kv[1];
  }
  *count = st->count;
  *size = (size_t)total;
  return 0;
}

/* lua_pcall'd: (bytes, size, count) -> keys, values (two sequences) */
static int decode_all(lua_State *L) {
  const char *p = (const char *)lua_touserdata(L, 1);
  lua_Integer n = lua_tointeger(L, 3), i;
  lua_createtable(L, (int)(n > INT32_MAX ? 0 : n), 0);
  lua_createtable(L, (int)(n > INT32_MAX ? 0 : n), 0);
  for (i = 1; i <= n; i++) {
    uint64_t kv[2];
    memcpy(kv, p, 16);
    if (!mp_decode(L, p + 16, (size_t)kv[0])) return lua_error(L);
    lua_rawseti(L, -3, i);
    if (!mp_decode(L, p + 16 + kv[0], (size_t)kv[1])) return lua_error(L);
    lua_rawseti(L, -2, i);
    p += 16 + kv[0] + kv[1];
  }
  return 2;
}

/* Pushes two sequences, the keys and the values, read at one instant. */
void mp_dict_snapshot(lua_State *L, mp_store *s, const char *mt) {
  mp_buf b;
  uint64_t n = 0;
  size_t size = 0;
  int e, r;
  lock_or_raise(L, s, mt);
  e = copy_all(s, &b, &n, &size);
  mp_store_unlock(s);
  if (e != 0) mp_store_raise(L, "read the Dict", e);
  lua_pushcfunction(L, decode_all);
  lua_pushlightuserdata(L, b.p);
  lua_pushinteger(L, (lua_Integer)size);
  lua_pushinteger(L, (lua_Integer)n);
  mp_store_decoding(s);
  r = lua_pcall(L, 3, 2, 0);
  mp_store_decoding(NULL);
  mp_buf_give(&b);
  if (r != LUA_OK)
    luaL_error(L, "cannot decode a %s entry: %s", mt + 6, lua_tostring(L, -1));
}

/* ---------------------------------------------------------------------
** The consistency check, for the specs
** --------------------------------------------------------------------- */

/* NULL when the table is whole (every live entry in the index once, the
** count right, records inside their blocks), else what is wrong; the
** records' references are tallied into t. Under the lock. */
const char *mp_dict_check_table(mp_store *s, mp_store_tally_t *t) {
  mp_store_state *st = mp_store_st(s);
  uint64_t j, i, live = 0, slots = 0;
  if (st->a_cap == 0) return st->count == 0 && st->n == 0 ? NULL : "no table but a count";
  if (st->n > st->b_cap || (st->a_cap & (st->a_cap - 1)) != 0) return "bad table sizes";
  for (j = 0; j < st->n; j++) {
    entry *e = &entries_of(s)[j];
    uint64_t vlen, slot;
    uint32_t klen, nref;
    dkey k;
    if (e->rec == 0) continue;
    live++;
    if (e->rec < MP_STORE_HEAP || e->rec >= st->bump) return "record outside the heap";
    rec_sizes(s, e->rec, &vlen, &klen, &nref);
    if (REC_HEAD + klen + vlen + (uint64_t)nref * MP_STORE_ID > mp_store_block_size(s, e->rec))
      return "record overruns its block";
    mp_store_tally(s, t, DATA(s) + e->rec + REC_HEAD + klen + vlen, nref);
    k.b.p[0] = DATA(s) + e->rec + REC_HEAD;
    k.b.n[0] = klen;
    k.b.p[1] = NULL;
    k.b.n[1] = 0;
    k.n = klen;
    k.hash = e->hash;
    if (find(s, &k, &slot) != (int64_t)j) return "an entry the index does not find";
  }
  for (i = 0; i < st->a_cap; i++) {
    uint32_t v = index_of(s)[i];
    if (v == EMPTY || v == DUMMY) continue;
    if (v > st->n || entries_of(s)[v - 1].rec == 0) return "an index slot to no entry";
    slots++;
  }
  if (live != st->count || slots != live) return "the count is wrong";
  return NULL;
}

/* ---------------------------------------------------------------------
** Lua side: Dict
** --------------------------------------------------------------------- */

/* core.dict_new() -> an empty mproc.Dict, or nil, message, errno */
static int l_dict_new(lua_State *L) {
  return mp_store_make(L, DICT_MT, MP_STORE_DICT) ? 1 : 3;
}

/* Methods first: d.get is the method; d:get("get") reads that key. */
MP_HOT static int m_dict_index(lua_State *L) {
  mp_store *s = mp_store_check(L, 1, DICT_MT);
  if (!mp_store_method(L)) dict_get(L, s, 2, DICT_MT, 0);
  return 1;
}

MP_HOT static int m_dict_newindex(lua_State *L) {
  dict_set(L, mp_store_check(L, 1, DICT_MT), 2, 3, DICT_MT);
  return 0;
}

/* The value at k (deleted with pop), or default: d:get and d:pop. */
static int get_or_default(lua_State *L, int pop) {
  mp_store *s = mp_store_check(L, 1, DICT_MT);
  luaL_checkany(L, 2);
  lua_settop(L, 3);
  dict_get(L, s, 2, DICT_MT, pop);
  if (lua_isnil(L, -1)) lua_pushvalue(L, 3);
  return 1;
}

/* d:get(k, [default]) -> the value at k, or default */
static int m_dict_get(lua_State *L) { return get_or_default(L, 0); }

/* d:pop(k, [default]) -> the value that was at k (now deleted), or default */
static int m_dict_pop(lua_State *L) { return get_or_default(L, 1); }

/* d:setdefault(k, v) -> the value at k, set to v first if there was none */
static int m_dict_setdefault(lua_State *L) {
  mp_store *s = mp_store_check(L, 1, DICT_MT);
  dkey k;
  dval v;
  mp_store_mark_t m;
  mp_vcopy c;
  uint64_t slot;
  int64_t j;
  int e;
  luaL_checkany(L, 3);
  luaL_argcheck(L, !lua_isnil(L, 3), 3, "the default value must not be nil");
  check_key(L, s, 2, &k, DICT_MT);
  encode_value(L, s, 3, &v);
  lock_or_raise(L, s, DICT_MT);
  mp_store_mark(s, &m);
  if ((j = find(s, &k, &slot)) >= 0) {
    e = copy_value(s, j, &c);
    mp_store_unlock(s);
    if (e != 0) mp_store_raise(L, "read the Dict", e);
    mp_store_push_copy(L, &c, s, DICT_MT);
    return 1;
  }
  if ((e = set_locked(s, &k, &v)) != 0) {
    mp_store_fail(s, &m);
    mp_store_raise(L, "store in the Dict", e);
  }
  mp_store_unlock(s);
  if (v.nids > 0) mp_store_keep_ids(s, v.ids, v.nids);
  lua_pushvalue(L, 3);
  return 1;
}

static int m_dict_len(lua_State *L) {
  mp_store *s = mp_store_check(L, 1, DICT_MT);
  lua_pushinteger(L, (lua_Integer)dict_count(L, s, DICT_MT));
  return 1;
}

static int m_dict_clear(lua_State *L) { return mp_store_clear(L, DICT_MT); }

/* The iterator pairs() returns: upvalues keys, values, position. */
static int pairs_next(lua_State *L) {
  lua_Integer i = lua_tointeger(L, lua_upvalueindex(3)) + 1;
  if (lua_rawgeti(L, lua_upvalueindex(1), i) == LUA_TNIL) return 1;
  lua_pushinteger(L, i);
  lua_replace(L, lua_upvalueindex(3));
  lua_rawgeti(L, lua_upvalueindex(2), i);
  return 2;
}

/* __pairs, for Dict and Namespace: a snapshot taken at the call. */
static int pairs(lua_State *L, const char *mt) {
  mp_dict_snapshot(L, mp_store_check(L, 1, mt), mt);
  lua_pushinteger(L, 0);
  lua_pushcclosure(L, pairs_next, 3);
  return 1;
}

static int m_dict_pairs(lua_State *L) { return pairs(L, DICT_MT); }

static int tostring(lua_State *L, const char *mt, const char *items) {
  mp_store *s = mp_store_test(L, 1, mt);
  if (s == NULL) lua_pushfstring(L, "%s (closed)", mt);
  else lua_pushfstring(L, "%s (%I %s)", mt, (LUAI_UACINT)dict_count(L, s, mt), items);
  return 1;
}

static int m_dict_tostring(lua_State *L) { return tostring(L, DICT_MT, "items"); }
static int m_dict_gc(lua_State *L) { return mp_store_gc(L, DICT_MT); }
static int m_dict_send(lua_State *L) { return mp_store_send(L, DICT_MT); }
static int m_dict_recv(lua_State *L) { return mp_store_recv(L, DICT_MT, MP_STORE_DICT); }
static int m_dict_eq(lua_State *L) { return mp_store_eq(L, DICT_MT); }

static const luaL_Reg dict_meta[] = {
  {"__newindex", m_dict_newindex}, {"__len", m_dict_len}, {"__pairs", m_dict_pairs},
  {"__tostring", m_dict_tostring}, {"__eq", m_dict_eq}, {"__gc", m_dict_gc},
  {"__close", m_dict_gc}, {"__mproc_send", m_dict_send}, {"__mproc_recv", m_dict_recv},
  {NULL, NULL}
};

static const luaL_Reg dict_methods[] = {
  {"get", m_dict_get}, {"pop", m_dict_pop}, {"setdefault", m_dict_setdefault},
  {"len", m_dict_len}, {"clear", m_dict_clear}, {NULL, NULL}
};

/* ---------------------------------------------------------------------
** Lua side: Namespace (string keys; every name is a field but its one
** method, update_key, which managers.lua adds: a field of that name is
** refused rather than hidden)
** --------------------------------------------------------------------- */

static int l_namespace_new(lua_State *L) {
  return mp_store_make(L, NS_MT, MP_STORE_NAMESPACE) ? 1 : 3;
}

static int m_ns_index(lua_State *L) {
  mp_store *s = mp_store_check(L, 1, NS_MT);
  if (!mp_store_method(L)) dict_get(L, s, 2, NS_MT, 0);
  return 1;
}

/* upvalue 1: the metatable */
static int m_ns_newindex(lua_State *L) {
  mp_store *s = mp_store_check(L, 1, NS_MT);
  if (lua_type(L, 2) == LUA_TSTRING) {
    lua_getfield(L, lua_upvalueindex(1), "__methods");
    lua_pushvalue(L, 2);
    if (lua_rawget(L, -2) != LUA_TNIL)
      luaL_error(L, "'%s' is a Namespace method, not a field", lua_tostring(L, 2));
    lua_pop(L, 2);
  }
  dict_set(L, s, 2, 3, NS_MT);
  return 0;
}

static int m_ns_len(lua_State *L) {
  mp_store *s = mp_store_check(L, 1, NS_MT);
  lua_pushinteger(L, (lua_Integer)dict_count(L, s, NS_MT));
  return 1;
}

static int m_ns_pairs(lua_State *L) { return pairs(L, NS_MT); }
static int m_ns_tostring(lua_State *L) { return tostring(L, NS_MT, "fields"); }
static int m_ns_gc(lua_State *L) { return mp_store_gc(L, NS_MT); }
static int m_ns_send(lua_State *L) { return mp_store_send(L, NS_MT); }
static int m_ns_recv(lua_State *L) { return mp_store_recv(L, NS_MT, MP_STORE_NAMESPACE); }
static int m_ns_eq(lua_State *L) { return mp_store_eq(L, NS_MT); }

static const luaL_Reg ns_meta[] = {
  {"__newindex", m_ns_newindex}, {"__len", m_ns_len}, {"__pairs", m_ns_pairs},
  {"__tostring", m_ns_tostring}, {"__eq", m_ns_eq}, {"__gc", m_ns_gc},
  {"__close", m_ns_gc}, {"__mproc_send", m_ns_send}, {"__mproc_recv", m_ns_recv},
  {NULL, NULL}
};

static const luaL_Reg no_methods[] = {{NULL, NULL}};

static const luaL_Reg funcs[] = {
  {"dict_new", l_dict_new}, {"namespace_new", l_namespace_new}, {NULL, NULL}
};

void mp_open_dict(lua_State *L) {
  mp_type(L, DICT_MT, dict_meta, dict_methods, m_dict_index);
  mp_type(L, NS_MT, ns_meta, no_methods, m_ns_index);
  luaL_setfuncs(L, funcs, 0);
}
