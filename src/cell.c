/*
** cell.c: the shared memory behind locks, semaphores and shared values.
** Each object lives in a "cell": a header (type, generation) and a body,
** carved from 64 KiB anonymous shared chunks by size class, so a thousand
** Locks cost a few mappings, not a thousand. Bodies larger than the biggest
** class get a mapping of their own.
**
** Chunks are inherited by fork and never unmapped. A forked child never
** allocates from chunks it inherited (its parent goes on using them), and
** a cell is recycled only by the process that made it, when no fork has
** happened since and it was never sent through the codec: otherwise some
** other process may still use it, and it stays until the processes end.
**
** Handles (mproc.Lock, mproc.Value, ...) are userdata holding an mp_handle;
** what every type of them does alike (make, check, send, receive,
** collect) is at the end of this file, for sync.c and
** sharedctypes.c. Tokens "address:origin:generation" name a cell across the process tree.
** The origin is drawn when a chunk (or a mapping of its own) is made, and
** is unique across the process tree: after a fork, parent and child each
** map new chunks, usually at the same addresses, with generations starting
** at 1 on both sides, so the address and generation alone would let a
** token from the other side resolve to an unrelated cell of our own. Each
** process keeps its regions with their origins (a fork copies the table,
** as it copies the mappings), and a token resolves only when its origin
** is the one this process knows at that address.
*/
#define _GNU_SOURCE
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "mproc.h"

#define CELL_MAGIC 0x6d70636cu /* "mpcl" */
#define CHUNK_SIZE (64 * 1024)
#define MIN_SHIFT 6            /* 64 bytes */
#define NCLASS 7               /* 64 .. 4096 */
#define OWN_MAPPING 255
#define SENT 1                 /* mp_cell.shared bits */
#define LOCK_OF 2

typedef struct { char *base; size_t size; int cls; uint64_t origin; } region;

typedef struct {
  char *chunk;       /* chunk being carved, NULL: none */
  size_t used;
  mp_cell *free;     /* recycled cells, linked through their body */
} size_class;

static size_class classes[NCLASS];
static region *regions = NULL;
static size_t nregions = 0, capregions = 0;
static unsigned fork_epoch = 0;
static uint64_t self_token = 0;
static uint64_t origin_base = 0, origin_serial = 0;
static int atfork_done = 0;

/* ---------------------------------------------------------------------
** Who we are, and forks
** --------------------------------------------------------------------- */

/* pid in the high half, a per-process nonce in the low half: a reused pid
** is not mistaken for a dead owner. Origins of this process's regions
** count up from a random base (pid and clock mixed in, should the random
** source fail). */
static void set_self(void) {
  struct timespec ts;
  uint64_t mix;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  mix = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 30) ^ 0x5bd1e995u;
  self_token = ((uint64_t)(uint32_t)getpid() << 32) | (uint32_t)mix;
  origin_base = mp_random64() ^ ((uint64_t)(uint32_t)getpid() << 40) ^ mix;
  origin_serial = 0;
}

/* A new origin, for a region this process maps. */
static uint64_t new_origin(void) {
  return origin_base + ++origin_serial;
}

uint64_t mp_self(void) { return self_token; }

static void after_fork_parent(void) { fork_epoch++; }

static void after_fork_child(void) {
  int i;
  fork_epoch++;
  set_self();
  for (i = 0; i < NCLASS; i++) {
    classes[i].chunk = NULL;
    classes[i].used = 0;
    classes[i].free = NULL;
  }
}

/* When the Lua state closes, every handle is gone: the table of regions
** goes too (the mappings stay, as a held robust mutex may sit in them). */
static int regions_gc(lua_State *L) {
  int i;
  (void)L;
  for (i = 0; i < NCLASS; i++) {   /* a later state carves new chunks */
    classes[i].chunk = NULL;
    classes[i].used = 0;
    classes[i].free = NULL;
  }
  free(regions);
  regions = NULL;
  nregions = capregions = 0;
  return 0;
}

void mp_cell_init(lua_State *L) {
  if (luaL_newmetatable(L, "mproc.cells")) {
    lua_pushcfunction(L, regions_gc);
    lua_setfield(L, -2, "__gc");
    lua_newuserdatauv(L, 1, 0);
    lua_pushvalue(L, -2);
    lua_setmetatable(L, -2);
    lua_setfield(L, LUA_REGISTRYINDEX, "mproc.cells.sentinel");
  }
  lua_pop(L, 1);
  if (atfork_done) return;
  atfork_done = 1;
  set_self();
  pthread_atfork(NULL, after_fork_parent, after_fork_child);
}

/* ---------------------------------------------------------------------
** Regions: what this process has mapped, to check tokens against
** --------------------------------------------------------------------- */

static int region_add(char *base, size_t size, int cls) {
  if (nregions == capregions) {
    size_t ncap = capregions ? capregions * 2 : 16;
    region *n = realloc(regions, ncap * sizeof *n);
    if (n == NULL) return -1;
    regions = n;
    capregions = ncap;
  }
  regions[nregions].base = base;
  regions[nregions].size = size;
  regions[nregions].cls = cls;
  regions[nregions].origin = new_origin();
  nregions++;
  return 0;
}

static void region_remove(char *base) {
  size_t i;
  for (i = 0; i < nregions; i++)
    if (regions[i].base == base) { regions[i] = regions[--nregions]; return; }
}

/* Our region holding p, or NULL. */
static region *region_of(const char *p) {
  size_t i;
  for (i = 0; i < nregions; i++)
    if (p >= regions[i].base && p < regions[i].base + regions[i].size)
      return &regions[i];
  return NULL;
}

/* Is p the start of a cell in one of our regions? */
static int is_cell_address(char *p) {
  region *r = region_of(p);
  if (r == NULL) return 0;
  if (r->cls == OWN_MAPPING) return p == r->base;
  return ((size_t)(p - r->base) & (((size_t)1 << (r->cls + MIN_SHIFT)) - 1)) == 0;
}

/* ---------------------------------------------------------------------
** Allocation
** --------------------------------------------------------------------- */

static int class_of(size_t total) {
  int c;
  for (c = 0; c < NCLASS; c++)
    if (total <= ((size_t)1 << (c + MIN_SHIFT))) return c;
  return -1;
}

static mp_cell *carve(int c) {
  size_class *sc = &classes[c];
  size_t sz = (size_t)1 << (c + MIN_SHIFT);
  mp_cell *cell;
  if (sc->free != NULL) {
    cell = sc->free;
    sc->free = *(mp_cell **)(cell + 1);
    return cell;
  }
  if (sc->chunk == NULL || sc->used + sz > CHUNK_SIZE) {
    char *chunk = mp_shm_alloc(CHUNK_SIZE);
    if (chunk == NULL) return NULL;
    if (region_add(chunk, CHUNK_SIZE, c) < 0) {
      mp_shm_free(chunk, CHUNK_SIZE);
      return NULL;
    }
    sc->chunk = chunk;
    sc->used = 0;
  }
  cell = (mp_cell *)(sc->chunk + sc->used);
  sc->used += sz;
  return cell;
}

static mp_cell *own_mapping(size_t total) {
  size_t page = (size_t)sysconf(_SC_PAGESIZE);
  size_t sz = (total + page - 1) / page * page;
  char *p = mp_shm_alloc(sz);
  if (p == NULL) return NULL;
  if (region_add(p, sz, OWN_MAPPING) < 0) { mp_shm_free(p, sz); return NULL; }
  return (mp_cell *)p;
}

/* A zeroed cell with room for body bytes, or NULL (errno set). */
mp_cell *mp_cell_alloc(size_t body, int type) {
  size_t total = sizeof(mp_cell) + body;
  int c = class_of(total);
  mp_cell *cell = c >= 0 ? carve(c) : own_mapping(total);
  uint32_t gen;
  if (cell == NULL) return NULL;
  gen = cell->magic == CELL_MAGIC ? cell->gen + 1 : 1;
  if (c >= 0) memset(cell, 0, (size_t)1 << (c + MIN_SHIFT)); /* a fresh mapping is zero */
  cell->magic = CELL_MAGIC;
  cell->type = (uint16_t)type;
  cell->cls = (uint8_t)(c >= 0 ? c : OWN_MAPPING);
  cell->gen = gen;
  cell->size = total;
  return cell;
}

/* Gives the cell back for reuse (the caller knows no one else uses it). */
static void cell_recycle(mp_cell *cell) {
  assert(!(cell->shared & SENT));   /* only a SOLE handle's cell */
  if (cell->cls == OWN_MAPPING) {
    region_remove((char *)cell);
    mp_shm_free(cell, cell->size);
    return;
  }
  cell->gen++;
  cell->type = 0;
  *(mp_cell **)(cell + 1) = classes[cell->cls].free;
  classes[cell->cls].free = cell;
}

/* ---------------------------------------------------------------------
** Handles and tokens
**
** The lifecycle of a handle (h) and its cell, enforced here only:
**
**   state    h->cell  the cell may be recycled when h lets go
**   CLOSED   NULL     -
**   SOLE     set      yes: h->creator is this pid, h->epoch the fork epoch,
**                     SENT clear (mp_handle_sole)
**   SHARED   set      no: received (creator 0), forked since (epoch), or
**                     SENT; the cell stays until the processes end
**
**   CLOSED -> SOLE     mp_handle_alloc (mp_handle_new makes it CLOSED first)
**   CLOSED -> SHARED   mp_handle_adopt, for a receiver
**   SOLE -> SHARED     mp_push_token sets SENT (and on its lock), for good;
**                      a fork bumps fork_epoch (after_fork_*)
**   SOLE -> CLOSED     mp_handle_drop (__gc) recycles; mp_handle_close
**                      (__close) recycles unless LOCK_OF: a Condition or
**                      Value made on this lock may still use it. sync.c's
**                      lock_gc first lets go of a Lock this process holds
**                      (its closing flag picks close over drop).
**   SHARED -> CLOSED   mp_handle_drop / mp_handle_close: no recycling
**   LOCK_OF            set by mp_cell_set_lock, never cleared
** --------------------------------------------------------------------- */

void mp_handle_bind(mp_handle *h, mp_cell *cell, int creator) {
  assert(h->cell == NULL && cell != NULL);   /* CLOSED -> SOLE or SHARED */
  h->cell = cell;
  h->epoch = fork_epoch;
  h->creator = creator ? getpid() : 0;
}

/* Whether dropping h may recycle its cell: made here, no fork since, never
** sent. */
int mp_handle_sole(const mp_handle *h) {
  return h->cell != NULL && h->creator == getpid() &&
         h->epoch == fork_epoch && !(h->cell->shared & SENT);
}

/* For __gc: the objects that use a lock hold its handle, so when the
** handle is collected they are being collected too. */
void mp_handle_drop(mp_handle *h) {
  if (h->cell == NULL) return;
  if (mp_handle_sole(h)) cell_recycle(h->cell);
  h->cell = NULL;
}

/* For __close, which may come while a Condition or Value still uses the
** lock: its cell then stays (the object raises "the lock is closed"; a
** copy received elsewhere still has the lock). */
void mp_handle_close(mp_handle *h) {
  if (h->cell == NULL) return;
  if (mp_handle_sole(h) && !(h->cell->shared & LOCK_OF)) cell_recycle(h->cell);
  h->cell = NULL;
}

/* Pushes the token of cell; marks it shared for good. */
void mp_push_token(lua_State *L, mp_cell *cell) {
  char buf[80];
  region *r = region_of((char *)cell);
  if (r == NULL) luaL_error(L, "cannot send an object whose memory is not known here");
  cell->shared |= SENT;
  if (cell->lock != NULL) cell->lock->shared |= SENT;
  snprintf(buf, sizeof buf, "%" PRIxPTR ":%016" PRIx64 ":%" PRIu32, (uintptr_t)cell,
           r->origin, cell->gen);
  lua_pushstring(L, buf);
}

/* cell if it is a live cell of this process tree with that generation
** and type (0: Lock or RLock), else NULL. */
static mp_cell *mp_cell_check(mp_cell *cell, uint32_t gen, int type) {
  if (cell == NULL || !is_cell_address((char *)cell)) return NULL;
  if (cell->magic != CELL_MAGIC || cell->gen != gen) return NULL;
  if (type == 0 ? (cell->type != MP_T_LOCK && cell->type != MP_T_RLOCK)
                : cell->type != type)
    return NULL;
  return cell;
}

/* Makes lock the lock that goes with cell (a Condition's, a Value's); it
** is not recycled when its handle is closed (mp_handle_close). */
void mp_cell_set_lock(mp_cell *cell, mp_cell *lock) {
  region *r = region_of((char *)lock);
  lock->shared |= LOCK_OF;
  cell->lock = lock;
  cell->lock_gen = lock->gen;
  cell->lock_origin = r != NULL ? r->origin : 0;
}

/* The lock that goes with cell, if it is the same lock here: the region at
** its address must have the origin it had for the cell's maker. NULL
** otherwise (or when cell has no lock). */
mp_cell *mp_cell_lock(mp_cell *cell) {
  region *r;
  if (cell->lock == NULL) return NULL;
  r = region_of((char *)cell->lock);
  if (r == NULL || r->origin != cell->lock_origin) return NULL;
  return mp_cell_check(cell->lock, cell->lock_gen, 0);
}

/* The hex or decimal number at *s up to stop, or 0 with *ok cleared. */
static uint64_t token_field(const char **s, int base, char stop, int *ok) {
  char *end;
  uint64_t v;
  if (!(**s >= '0' && **s <= '9') && !(base == 16 && ((**s | 0x20) >= 'a' && (**s | 0x20) <= 'f')))
    return *ok = 0, 0;
  v = (uint64_t)strtoull(*s, &end, base);
  if (*end != stop) return *ok = 0, 0;
  *s = end + (stop != '\0');
  return v;
}

/* The live cell of type named by token, or NULL: its address must lie in
** a region of ours whose origin is the token's. */
mp_cell *mp_token_cell(const char *token, int type) {
  int ok = 1;
  uint64_t addr = token_field(&token, 16, ':', &ok);
  uint64_t origin = ok ? token_field(&token, 16, ':', &ok) : 0;
  uint64_t gen = ok ? token_field(&token, 10, '\0', &ok) : 0;
  region *r;
  if (!ok || addr > UINTPTR_MAX || gen > UINT32_MAX) return NULL;
  r = region_of((const char *)(uintptr_t)addr);
  if (r == NULL || r->origin != origin) return NULL;
  return mp_cell_check((mp_cell *)(uintptr_t)addr, (uint32_t)gen, type);
}

/* ---------------------------------------------------------------------
** Handle userdata: what sync.c and sharedctypes.c do alike
** --------------------------------------------------------------------- */

/* Pushes a closed handle with metatable mt and nuv user values (made
** before its cell, so an allocation error leaks nothing). */
mp_handle *mp_handle_new(lua_State *L, const char *mt, int nuv) {
  mp_handle *h = (mp_handle *)lua_newuserdatauv(L, sizeof *h, nuv);
  h->cell = NULL;
  h->epoch = 0;
  h->creator = 0;
  luaL_setmetatable(L, mt);
  lua_getmetatable(L, -1);
  h->meta = lua_topointer(L, -1);
  lua_pop(L, 1);
  return h;
}

/* Gives h a new cell of type with room for body bytes; returns the body. */
void *mp_handle_alloc(lua_State *L, mp_handle *h, size_t body, int type) {
  mp_cell *c = mp_cell_alloc(body, type);
  if (c == NULL)
    luaL_error(L, "cannot allocate shared memory: %s", strerror(errno));
  mp_handle_bind(h, c, 1);
  return MP_CELL_BODY(c);
}

/* mp_handle_body's error: the handle of type mt is closed. */
void mp_handle_closed(lua_State *L, const char *mt) {
  luaL_error(L, "the %s is closed", mt + 6);
}

/* __gc (and __close) of a handle with nothing else to let go. */
int mp_handle_gc(lua_State *L, const char *mt) {
  mp_handle_drop((mp_handle *)mp_checkudata(L, 1, mt));
  return 0;
}

/* __mproc_send: the token of the handle at 1. */
int mp_handle_send(lua_State *L, const char *mt) {
  mp_handle *h = (mp_handle *)mp_checkudata(L, 1, mt);
  if (h->cell == NULL) luaL_error(L, "cannot send a closed %s", mt + 6);
  mp_push_token(L, h->cell);
  return 1;
}

/* Pushes a handle on an existing cell, as a receiver. */
mp_handle *mp_handle_adopt(lua_State *L, mp_cell *cell, const char *mt, int nuv) {
  mp_handle *h = mp_handle_new(L, mt, nuv);
  mp_handle_bind(h, cell, 0);
  return h;
}

/* Pushes a handle on the Lock or RLock cell lk, as a receiver. */
static void push_lock_handle(lua_State *L, mp_cell *lk) {
  mp_handle_adopt(L, lk, lk->type == MP_T_RLOCK ? MP_RLOCK_MT : MP_LOCK_MT, 0);
}

/* __mproc_recv: pushes a handle of type mt (nuv user values) on the cell
** of type named by the token at 1; when the cell has a lock (a Condition,
** a Value), that lock's handle is user value 1. Raises when the token, or
** the lock, is unknown here. */
mp_handle *mp_handle_recv(lua_State *L, int type, const char *mt, int nuv) {
  const char *token = luaL_checkstring(L, 1);
  mp_cell *c = mp_token_cell(token, type), *lk = NULL;
  mp_handle *h;
  if (c == NULL)
    luaL_error(L, "cannot receive a %s: unknown token '%s' (objects travel "
               "only to processes that inherited them)", mt + 6, token);
  if (c->lock != NULL && (lk = mp_cell_lock(c)) == NULL)
    luaL_error(L, "cannot receive a %s: its lock is unknown here (made "
               "after this process was forked?)", mt + 6);
  h = mp_handle_adopt(L, c, mt, nuv);
  if (lk != NULL) {
    push_lock_handle(L, lk);
    lua_setiuservalue(L, -2, 1);
  }
  return h;
}
