/*
** sharedctypes.c: Value and Array in shared memory, for mproc.core.
** Both are a cell holding a typecode, a length and the elements (a Value
** is an Array of one). Elements are read and written with atomic loads
** and stores of their size, so a single read or write is never torn; a
** read-modify-write (v.value = v.value + 1) needs the lock, user value 1
** (an mproc.Lock or mproc.RLock, or nil for lock = false).
*/
#define _GNU_SOURCE
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "mproc.h"

#define VALUE_MT "mproc.Value"
#define ARRAY_MT "mproc.Array"
#define MAX_ELEMENTS ((lua_Integer)1 << 40)

enum { K_SIGNED, K_UNSIGNED, K_FLOAT };

typedef struct { char code; uint8_t size, kind; } typecode;

/* The one list of typecodes: exported as core.TYPECODES ("bBhH..."), which
** sharedctypes.lua checks the user's typecode against. */
static const typecode typecodes[] = {
  {'b', 1, K_SIGNED}, {'B', 1, K_UNSIGNED}, {'h', 2, K_SIGNED}, {'H', 2, K_UNSIGNED},
  {'i', sizeof(int), K_SIGNED}, {'I', sizeof(unsigned), K_UNSIGNED},
  {'l', sizeof(long), K_SIGNED}, {'L', sizeof(unsigned long), K_UNSIGNED},
  {'q', 8, K_SIGNED}, {'Q', 8, K_UNSIGNED}, {'f', 4, K_FLOAT}, {'d', 8, K_FLOAT},
  {0, 0, 0}
};

typedef struct {
  uint32_t tc;      /* index in typecodes */
  uint32_t pad;
  uint64_t n;
} array_body;       /* the elements follow */

#define ELEMENTS(b) ((char *)((b) + 1))

/* ---------------------------------------------------------------------
** Typecodes and conversions
** --------------------------------------------------------------------- */

/* The index of the typecode at idx (sharedctypes.lua has checked it). */
static int find_typecode(lua_State *L, int idx) {
  size_t len;
  const char *s = luaL_checklstring(L, idx, &len);
  int i;
  for (i = 0; len == 1 && typecodes[i].code; i++)
    if (typecodes[i].code == s[0]) return i;
  return luaL_argerror(L, idx, "bad typecode (see core.TYPECODES)");
}

static void push_typecodes(lua_State *L) {
  luaL_Buffer b;
  int i;
  luaL_buffinit(L, &b);
  for (i = 0; typecodes[i].code; i++) luaL_addchar(&b, typecodes[i].code);
  luaL_pushresult(&b);
}

static void int_range(const typecode *t, lua_Integer *lo, lua_Integer *hi) {
  int bits = t->size * 8;
  if (t->kind == K_SIGNED) {
    *hi = bits >= 64 ? LUA_MAXINTEGER : (((lua_Integer)1 << (bits - 1)) - 1);
    *lo = -*hi - 1;
  } else {
    *lo = 0;
    *hi = bits >= 64 ? LUA_MAXINTEGER : (((lua_Integer)1 << bits) - 1);
  }
}

/* The value at idx as the bits to store for t; raises naming what. */
static uint64_t to_bits(lua_State *L, int idx, const typecode *t, const char *what) {
  if (t->kind == K_FLOAT) {
    double d;
    if (lua_type(L, idx) != LUA_TNUMBER)
      mp_error(L, "%s: number expected, got %s", what, luaL_typename(L, idx));
    d = (double)lua_tonumber(L, idx);
    if (t->size == 4) {
      float f = (float)d;
      uint32_t u;
      if (isfinite(d) && fabs(d) > FLT_MAX)
        mp_error(L, "%s: %f is out of range for typecode 'f'", what, d);
      memcpy(&u, &f, 4);
      return u;
    } else {
      uint64_t u;
      memcpy(&u, &d, 8);
      return u;
    }
  } else {
    int isint;
    lua_Integer v = lua_tointegerx(L, idx, &isint), lo, hi;
    if (!isint) {
      if (lua_type(L, idx) == LUA_TNUMBER)
        mp_error(L, "%s: %s has no integer representation (typecode '%c')",
                what, lua_tostring(L, idx), t->code);
      mp_error(L, "%s: integer expected, got %s", what, luaL_typename(L, idx));
    }
    int_range(t, &lo, &hi);
    if (v < lo || v > hi)
      mp_error(L, "%s: %I is out of range for typecode '%c' (%I..%I)", what,
              (LUAI_UACINT)v, t->code, (LUAI_UACINT)lo, (LUAI_UACINT)hi);
    return (uint64_t)v;
  }
}

static void store(char *p, int size, uint64_t bits) {
  switch (size) {
    case 1: __atomic_store_n((uint8_t *)p, (uint8_t)bits, __ATOMIC_RELAXED); break;
    case 2: __atomic_store_n((uint16_t *)p, (uint16_t)bits, __ATOMIC_RELAXED); break;
    case 4: __atomic_store_n((uint32_t *)p, (uint32_t)bits, __ATOMIC_RELAXED); break;
    default: __atomic_store_n((uint64_t *)p, bits, __ATOMIC_RELAXED); break;
  }
}

static void push_element(lua_State *L, const typecode *t, const char *p) {
  switch (t->size) {
    case 1: {
      uint8_t u = __atomic_load_n((const uint8_t *)p, __ATOMIC_RELAXED);
      lua_pushinteger(L, t->kind == K_SIGNED ? (lua_Integer)(int8_t)u : (lua_Integer)u);
      break;
    }
    case 2: {
      uint16_t u = __atomic_load_n((const uint16_t *)p, __ATOMIC_RELAXED);
      lua_pushinteger(L, t->kind == K_SIGNED ? (lua_Integer)(int16_t)u : (lua_Integer)u);
      break;
    }
    case 4: {
      uint32_t u = __atomic_load_n((const uint32_t *)p, __ATOMIC_RELAXED);
      float f;
      if (t->kind == K_FLOAT) { memcpy(&f, &u, 4); lua_pushnumber(L, (lua_Number)f); }
      else lua_pushinteger(L, t->kind == K_SIGNED ? (lua_Integer)(int32_t)u : (lua_Integer)u);
      break;
    }
    default: {
      uint64_t u = __atomic_load_n((const uint64_t *)p, __ATOMIC_RELAXED);
      double d;
      if (t->kind == K_FLOAT) { memcpy(&d, &u, 8); lua_pushnumber(L, (lua_Number)d); }
      else lua_pushinteger(L, (lua_Integer)u);
      break;
    }
  }
}

/* ---------------------------------------------------------------------
** Construction
** --------------------------------------------------------------------- */

/* Pushes a handle on a new cell for n elements of typecode tc; the lock
** (a Lock/RLock handle or nil/false) at lock_idx goes with it. */
static array_body *new_array(lua_State *L, const char *mt, int tc, lua_Integer n,
                             int lock_idx) {
  mp_cell *lk = mp_test_lock(L, lock_idx);
  mp_handle *h;
  array_body *b;
  luaL_argexpected(L, lk != NULL || !lua_toboolean(L, lock_idx), lock_idx,
                   "mproc.Lock, mproc.RLock or false");
  h = mp_handle_new(L, mt, 1);
  b = mp_handle_alloc(L, h, sizeof *b + (size_t)n * typecodes[tc].size,
                      mt[6] == 'V' ? MP_T_VALUE : MP_T_ARRAY);
  if (lk != NULL) mp_cell_set_lock(h->cell, lk);
  lua_pushvalue(L, lock_idx);
  lua_setiuservalue(L, -2, 1);
  b->tc = (uint32_t)tc;
  b->n = (uint64_t)n;
  return b;
}

/* core.Value(typecode, init, lock) */
static int l_Value(lua_State *L) {
  int tc = find_typecode(L, 1);
  array_body *b;
  uint64_t bits = 0;
  if (!lua_isnoneornil(L, 2)) bits = to_bits(L, 2, &typecodes[tc], "Value");
  b = new_array(L, VALUE_MT, tc, 1, 3);
  store(ELEMENTS(b), typecodes[tc].size, bits);
  return 1;
}

/* core.Array(typecode, n_or_table, lock) */
static int l_Array(lua_State *L) {
  int tc = find_typecode(L, 1), size = typecodes[tc].size;
  int from_table = lua_type(L, 2) == LUA_TTABLE;
  lua_Integer n, i;
  array_body *b;
  if (from_table) n = luaL_len(L, 2);
  else {
    luaL_argexpected(L, lua_isinteger(L, 2), 2, "integer or table");
    n = lua_tointeger(L, 2);
  }
  luaL_argcheck(L, n >= 0 && n <= MAX_ELEMENTS, 2, "size must be in 0..2^40");
  for (i = 1; from_table && i <= n; i++) {  /* check all before allocating */
    lua_geti(L, 2, i);
    to_bits(L, -1, &typecodes[tc], "Array");
    lua_pop(L, 1);
  }
  b = new_array(L, ARRAY_MT, tc, n, 3);
  for (i = 1; from_table && i <= n; i++) {
    lua_geti(L, 2, i);
    store(ELEMENTS(b) + (i - 1) * size, size, to_bits(L, -1, &typecodes[tc], "Array"));
    lua_pop(L, 1);
  }
  return 1;
}

/* ---------------------------------------------------------------------
** Access
** --------------------------------------------------------------------- */

/* Field or method k of the object at 1, from the methods upvalue. */
static int method(lua_State *L, array_body *b) {
  if (lua_type(L, 2) == LUA_TSTRING && strcmp(lua_tostring(L, 2), "typecode") == 0) {
    lua_pushlstring(L, &typecodes[b->tc].code, 1);
    return 1;
  }
  lua_pushvalue(L, 2);
  lua_rawget(L, lua_upvalueindex(1));
  return 1;
}

static int m_value_index(lua_State *L) {
  array_body *b = mp_handle_body(L, 1, VALUE_MT);
  if (lua_type(L, 2) == LUA_TSTRING && strcmp(lua_tostring(L, 2), "value") == 0) {
    push_element(L, &typecodes[b->tc], ELEMENTS(b));
    return 1;
  }
  return method(L, b);
}

static int m_value_newindex(lua_State *L) {
  array_body *b = mp_handle_body(L, 1, VALUE_MT);
  const typecode *t = &typecodes[b->tc];
  if (lua_type(L, 2) != LUA_TSTRING || strcmp(lua_tostring(L, 2), "value") != 0)
    return luaL_error(L, "cannot set field '%s' of a Value (only 'value')",
                      luaL_tolstring(L, 2, NULL));
  store(ELEMENTS(b), t->size, to_bits(L, 3, t, "Value"));
  return 0;
}

/* The index at 2 as 0-based, for n elements; -1 for n + 1 when reading
** (the end of the sequence, so ipairs stops). Raises otherwise. */
static lua_Integer array_index(lua_State *L, array_body *b, int reading) {
  int isint;
  lua_Integer i = lua_tointegerx(L, 2, &isint);
  if (!isint)
    luaL_error(L, "Array index must be an integer, got %s", luaL_tolstring(L, 2, NULL));
  if (i >= 1 && (uint64_t)i <= b->n) return i - 1;
  if (reading && (uint64_t)i == b->n + 1) return -1;
  return luaL_error(L, "Array index %I out of range (1..%I)", (LUAI_UACINT)i,
                    (LUAI_UACINT)b->n);
}

static int m_array_index(lua_State *L) {
  array_body *b = mp_handle_body(L, 1, ARRAY_MT);
  const typecode *t = &typecodes[b->tc];
  lua_Integer i;
  if (lua_type(L, 2) == LUA_TSTRING) return method(L, b);
  if ((i = array_index(L, b, 1)) < 0) return lua_pushnil(L), 1;
  push_element(L, t, ELEMENTS(b) + i * t->size);
  return 1;
}

static int m_array_newindex(lua_State *L) {
  array_body *b = mp_handle_body(L, 1, ARRAY_MT);
  const typecode *t = &typecodes[b->tc];
  lua_Integer i = array_index(L, b, 0);
  store(ELEMENTS(b) + i * t->size, t->size, to_bits(L, 3, t, "Array"));
  return 0;
}

static int m_array_len(lua_State *L) {
  array_body *b = mp_handle_body(L, 1, ARRAY_MT);
  lua_pushinteger(L, (lua_Integer)b->n);
  return 1;
}

/* core.array_totable(a) -> a new table of the elements (the Lua side locks) */
static int l_array_totable(lua_State *L) {
  array_body *b = mp_handle_body(L, 1, ARRAY_MT);
  const typecode *t = &typecodes[b->tc];
  uint64_t i;
  lua_createtable(L, b->n > INT32_MAX ? 0 : (int)b->n, 0);
  for (i = 0; i < b->n; i++) {
    push_element(L, t, ELEMENTS(b) + i * t->size);
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  return 1;
}

static int get_lock(lua_State *L, const char *mt) {
  mp_handle_body(L, 1, mt);
  lua_getiuservalue(L, 1, 1);
  if (!lua_toboolean(L, -1))
    return luaL_error(L, "get_lock: this %s was made with lock = false", mt + 6);
  return 1;
}

static int m_value_get_lock(lua_State *L) { return get_lock(L, VALUE_MT); }
static int m_array_get_lock(lua_State *L) { return get_lock(L, ARRAY_MT); }

/* ---------------------------------------------------------------------
** Metamethods, the codec protocol, registration
** --------------------------------------------------------------------- */

static int tostring(lua_State *L, const char *mt) {
  mp_handle *h = (mp_handle *)mp_checkudata(L, 1, mt);
  array_body *b;
  if (h->cell == NULL) return lua_pushfstring(L, "%s (closed)", mt), 1;
  b = (array_body *)MP_CELL_BODY(h->cell);
  if (mt[6] == 'A')
    return lua_pushfstring(L, "%s ('%c', %I elements)", mt, typecodes[b->tc].code,
                           (LUAI_UACINT)b->n), 1;
  push_element(L, &typecodes[b->tc], ELEMENTS(b));
  lua_pushfstring(L, "%s ('%c', %s)", mt, typecodes[b->tc].code, lua_tostring(L, -1));
  return 1;
}

static int m_value_tostring(lua_State *L) { return tostring(L, VALUE_MT); }
static int m_array_tostring(lua_State *L) { return tostring(L, ARRAY_MT); }

static int m_value_gc(lua_State *L) { return mp_handle_gc(L, VALUE_MT); }
static int m_array_gc(lua_State *L) { return mp_handle_gc(L, ARRAY_MT); }

static int m_value_send(lua_State *L) { return mp_handle_send(L, VALUE_MT); }
static int m_array_send(lua_State *L) { return mp_handle_send(L, ARRAY_MT); }

/* Whether the received cell's typecode is one of ours and its elements
** fit in it (its size was checked against its region): another process's
** memory is not trusted with our reads and writes. */
static int body_fits(const mp_cell *cell) {
  const array_body *b = (const array_body *)MP_CELL_BODY(cell);
  uint64_t room = cell->size - sizeof(mp_cell), n = b->n;
  uint32_t tc = b->tc;
  if (tc >= sizeof typecodes / sizeof typecodes[0] - 1 || room < sizeof *b) return 0;
  return n <= (room - sizeof *b) / typecodes[tc].size;
}

/* User value 1 is the lock's handle, or false (made with lock = false). */
static int recv(lua_State *L, const char *mt, int type) {
  mp_handle *h = mp_handle_recv(L, type, mt, 1);
  if (!body_fits(h->cell)) {
    const array_body *b = (const array_body *)MP_CELL_BODY(h->cell);
    lua_Integer tc = (lua_Integer)b->tc, n = (lua_Integer)b->n, sz = (lua_Integer)h->cell->size;
    mp_handle_drop(h);
    return luaL_error(L, "cannot receive %s %s: its cell is malformed (typecode %I, "
                      "%I elements, %I bytes)", type == MP_T_ARRAY ? "an" : "a", mt + 6,
                      (LUAI_UACINT)tc, (LUAI_UACINT)n,
                      (LUAI_UACINT)sz);
  }
  if (h->cell->lock_origin == 0) {
    lua_pushboolean(L, 0);
    lua_setiuservalue(L, -2, 1);
  }
  return 1;
}

static int m_value_recv(lua_State *L) { return recv(L, VALUE_MT, MP_T_VALUE); }
static int m_array_recv(lua_State *L) { return recv(L, ARRAY_MT, MP_T_ARRAY); }

static const luaL_Reg value_meta[] = {
  {"__newindex", m_value_newindex}, {"__tostring", m_value_tostring},
  {"__gc", m_value_gc}, {"__close", m_value_gc}, {"__mproc_send", m_value_send},
  {"__mproc_recv", m_value_recv}, {NULL, NULL}
};
static const luaL_Reg value_methods[] = {{"get_lock", m_value_get_lock}, {NULL, NULL}};

static const luaL_Reg array_meta[] = {
  {"__newindex", m_array_newindex}, {"__len", m_array_len},
  {"__tostring", m_array_tostring}, {"__gc", m_array_gc}, {"__close", m_array_gc},
  {"__mproc_send", m_array_send}, {"__mproc_recv", m_array_recv}, {NULL, NULL}
};
static const luaL_Reg array_methods[] = {
  {"get_lock", m_array_get_lock}, {NULL, NULL}
};

static const luaL_Reg funcs[] = {
  {"Value", l_Value}, {"Array", l_Array},
  {"array_totable", l_array_totable},   /* private to sharedctypes.lua */
  {NULL, NULL}
};

void mp_open_sharedctypes(lua_State *L) {
  mp_type(L, VALUE_MT, value_meta, value_methods, m_value_index);
  mp_type(L, ARRAY_MT, array_meta, array_methods, m_array_index);
  luaL_setfuncs(L, funcs, 0);
  push_typecodes(L);
  lua_setfield(L, -2, "TYPECODES");
}
