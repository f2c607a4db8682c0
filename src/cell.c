/*
** cell.c: the shared memory behind locks, semaphores and shared values.
** Each object lives in a "cell": a header (type, generation) and a body,
** carved from 64 KiB shared chunks by size class, so a thousand
** Locks cost a few mappings, not a thousand. Bodies larger than the biggest
** class get a mapping of their own.
**
** Chunks are inherited by fork and never unmapped (a chunk holds many
** cells, some maybe sent; a Value's or Array's mapping of its own is
** unmapped when this process's last handle on it goes, see "Handles and
** tokens"). A forked child never
** allocates from chunks it inherited (its parent goes on using them), and
** a cell is recycled only by the process that made it, when no fork has
** happened since and it was never sent through the codec: otherwise some
** other process may still use it, and it stays until the processes end.
**
** Handles (mproc.Lock, mproc.Value, ...) are userdata holding an mp_handle;
** what every type of them does alike (make, check, send, receive,
** collect) is at the end of this file, for sync.c and sharedctypes.c.
**
** Regions (a chunk, or a mapping of its own) have an origin, drawn when
** the region is made and unique across the process tree: after a fork,
** parent and child each map new chunks, usually at the same addresses,
** with generations starting at 1 on both sides, so an address alone would
** let a token from the other side resolve to an unrelated cell. Each
** process keeps its regions with their origins (a fork copies the table,
** as it copies the mappings), and a token names a cell by its region's
** origin and its offset there.
**
** Sending to any live process (Linux, MP_HAVE_PROC_FD): each region is a
** shared file (fd.c's mp_shared_file, a memfd) that the process keeps open,
** close-on-exec, and whose last REC_SIZE bytes record its origin and maker.
** A token "cell[/lock]", each part
**   senderpid:fd:makerpid:fd:dev:ino:origin:offset:generation
** resolves in a process that has the region (inherited, or attached
** before) by a lookup in the region table, with no system call; elsewhere
** the file is opened through /proc/<pid>/fd/<fd> of the sender, the maker
** or our parent (mp_open_held), else of any live holder (holders.c, where
** each process registers the regions it maps), checked by inode and by the
** origin in its record, mapped and added to the table (keeping the
** descriptor, so this process can be a holder for others). A Condition's or Value's lock is
** named in its cell by origin and offset too, and its part of the token
** lets the receiver attach the lock's region. Elsewhere regions are
** anonymous and reach only the processes that inherited them.
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
#include <sys/mman.h>
#include <sys/stat.h>
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
#define REC_MAGIC 0x6d707267u  /* "mprg" */
#define REC_SIZE 64            /* a region's record, at its end */

/* What a region's file says of it, in its last REC_SIZE bytes: a receiver
** maps the file only if the origin there is the token's. */
typedef struct {
  uint32_t magic;
  uint32_t cls;
  uint64_t origin;
  uint64_t size;
  int32_t maker, maker_fd;
} region_rec;

typedef struct {
  char *base;
  size_t size;
  int cls;
  uint64_t origin;
  int fd;                /* the shared file behind it, -1: anonymous */
  uint64_t dev, ino;
  pid_t maker;           /* the process that made it, and its descriptor */
  int maker_fd;
  unsigned handles;      /* own mapping of a Value/Array: our handles on it */
  int pinned;            /* stored in a container here: kept for good */
} region;

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
/* Counted own mappings alive here, and how many make us collect garbage
** first (COUNTED_MIN, then twice those left): a handle is a small
** userdata, and the collector does not know it holds a descriptor and a
** mapping, so a loop that receives Arrays would run out of descriptors
** long before it runs out of memory. */
#define COUNTED_MIN 64
static size_t ncounted = 0, counted_limit = COUNTED_MIN;

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

/* A new origin, for a region this process maps; never 0 (a cell with
** no lock has lock_origin 0). */
static uint64_t new_origin(void) {
  uint64_t o = origin_base + ++origin_serial;
  return o != 0 ? o : origin_base + ++origin_serial;
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
** goes too, with its descriptors (the mappings stay, as a held robust
** mutex may sit in them). */
static int regions_gc(lua_State *L) {
  size_t i;
  (void)L;
  for (i = 0; i < nregions; i++)
    if (regions[i].fd >= 0) {
      mp_holders_drop(regions[i].fd);
      close(regions[i].fd);
    }
  for (i = 0; i < (size_t)NCLASS; i++) {   /* a later state carves new chunks */
    classes[i].chunk = NULL;
    classes[i].used = 0;
    classes[i].free = NULL;
  }
  free(regions);
  regions = NULL;
  nregions = capregions = 0;
  ncounted = 0;
  return 0;
}

void mp_cell_init(lua_State *L) {
  mp_on_state_close(L, "mproc.cells", regions_gc);
  if (atfork_done) return;
  atfork_done = 1;
  set_self();
  pthread_atfork(NULL, after_fork_parent, after_fork_child);
}

/* ---------------------------------------------------------------------
** Regions: what this process has mapped, to check tokens against
** --------------------------------------------------------------------- */

/* ---------------------------------------------------------------------
** Portability: where another process can reach our descriptors
** (MP_HAVE_PROC_FD), a region is a shared file kept open; elsewhere an
** anonymous mapping, which only forked children see.
** --------------------------------------------------------------------- */
static int region_map_anon(region *r, size_t size) {
  if ((r->base = mp_shm_alloc(size)) == NULL) return -1;
  r->fd = -1;
  r->dev = r->ino = 0;
  return 0;
}

#if MP_HAVE_PROC_FD
/* Maps a new shared file of size bytes into r (base, fd, dev, ino). With
** no descriptor left (many big Arrays alive at once), an anonymous
** mapping, which reaches forked children only: running out of memory
** for objects would be worse than these travelling less far. */
static int region_map(region *r, size_t size) {
  struct stat sb;
  void *p;
  int fd = mp_shared_file("mproc-cells"), e;
  if (fd < 0 && (errno == EMFILE || errno == ENFILE)) return region_map_anon(r, size);
  if (fd < 0) return -1;
  if (ftruncate(fd, (off_t)size) < 0 || fstat(fd, &sb) < 0 ||
      (p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)) == MAP_FAILED) {
    e = errno;
    close(fd);
    errno = e;
    return -1;
  }
  r->base = p;
  r->fd = fd;
  r->dev = (uint64_t)sb.st_dev;
  r->ino = (uint64_t)sb.st_ino;
  mp_holders_add(fd, -1, r->dev, r->ino);
  return 0;
}
#else
static int region_map(region *r, size_t size) { return region_map_anon(r, size); }
#endif

static void region_unmap(const region *r) {
  mp_shm_free(r->base, r->size);
  if (r->fd >= 0) {
    mp_holders_drop(r->fd);
    close(r->fd);
  }
}

static region *region_add(const region *r) {
  if (nregions == capregions) {
    size_t ncap = capregions ? capregions * 2 : 16;
    region *n = realloc(regions, ncap * sizeof *n);
    if (n == NULL) return NULL;
    regions = n;
    capregions = ncap;
  }
  regions[nregions] = *r;
  return &regions[nregions++];
}

/* A new region of size bytes (its record at the end), for cells of class
** cls; its base, or NULL (errno set). */
static char *region_new(size_t size, int cls) {
  region r;
  region_rec *rec;
  if (region_map(&r, size) < 0) return NULL;
  r.size = size;
  r.cls = cls;
  r.origin = new_origin();
  r.maker = getpid();
  r.maker_fd = r.fd;
  r.handles = 0;
  r.pinned = 0;
  rec = (region_rec *)(r.base + size - REC_SIZE);
  rec->cls = (uint32_t)cls;
  rec->origin = r.origin;
  rec->size = size;
  rec->maker = (int32_t)r.maker;
  rec->maker_fd = r.fd;
  rec->magic = REC_MAGIC;
  if (region_add(&r) == NULL) { region_unmap(&r); errno = ENOMEM; return NULL; }
  return r.base;
}

/* Unmaps the region r of our table, closes its file and forgets it. */
static void region_drop(region *r) {
  region_unmap(r);
  *r = regions[--nregions];
}

/* Unmaps the region at base (a cell's own mapping, recycled). */
static void region_remove(char *base, size_t size) {
  size_t i;
  for (i = 0; i < nregions; i++)
    if (regions[i].base == base) {
      region_drop(&regions[i]);
      return;
    }
  mp_shm_free(base, size);   /* the table went with the Lua state */
}

/* Our region holding p, or NULL. */
static region *region_of(const char *p) {
  size_t i;
  for (i = 0; i < nregions; i++)
    if (p >= regions[i].base && p < regions[i].base + regions[i].size)
      return &regions[i];
  return NULL;
}

/* Our region with that origin, or NULL. */
static region *region_by_origin(uint64_t origin) {
  size_t i;
  for (i = 0; i < nregions; i++)
    if (regions[i].origin == origin) return &regions[i];
  return NULL;
}

/* Whether cell c, at offset off of r, claims no more bytes than its place
** there has (its class's size in a chunk, up to the record in a mapping
** of its own): a received Value or Array trusts its size. */
static int cell_fits(const region *r, uint64_t off, const mp_cell *c) {
  uint64_t room = r->cls == OWN_MAPPING ? r->size - REC_SIZE - off
                                        : (uint64_t)1 << (r->cls + MIN_SHIFT);
  return c->size >= sizeof(mp_cell) && c->size <= room;
}

/* The cell at offset off of r, if a cell may be there (whole, before the
** record); else NULL. */
static mp_cell *region_cell(const region *r, uint64_t off) {
  uint64_t sz = r->cls == OWN_MAPPING ? sizeof(mp_cell) : (uint64_t)1 << (r->cls + MIN_SHIFT);
  if (off + sz > r->size - REC_SIZE || off > r->size) return NULL;
  if (r->cls == OWN_MAPPING ? off != 0 : (off & (sz - 1)) != 0) return NULL;
  return (mp_cell *)(r->base + off);
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
  if (sc->chunk == NULL || sc->used + sz > CHUNK_SIZE - REC_SIZE) {
    char *chunk = region_new(CHUNK_SIZE, c);
    if (chunk == NULL) return NULL;
    sc->chunk = chunk;
    sc->used = 0;
  }
  cell = (mp_cell *)(sc->chunk + sc->used);
  sc->used += sz;
  return cell;
}

/* The size of the mapping of its own for a cell of total bytes. */
static size_t own_size(size_t total) {
  size_t page = (size_t)sysconf(_SC_PAGESIZE);
  return (total + REC_SIZE + page - 1) / page * page;
}

static mp_cell *own_mapping(size_t total) {
  return (mp_cell *)region_new(own_size(total), OWN_MAPPING);
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
    region_remove((char *)cell, own_size(cell->size));
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
**   SOLE     set      yes: h->creator is this pid, SENT clear, h->epoch the
**                     fork epoch or the cell's a mapping of its own
**                     (unmapped: children keep theirs) (mp_handle_sole)
**   SHARED   set      no: received (creator 0), forked since (epoch, in a
**                     chunk), or SENT; the cell stays until the processes
**                     end
**
**   CLOSED -> SOLE     mp_handle_alloc (mp_handle_new makes it CLOSED first)
**   CLOSED -> SHARED   mp_handle_adopt, for a receiver (also of a region
**                      attached from another process's file: those are
**                      never carved from, so never recycled)
**   SOLE -> SHARED     mp_push_token sets SENT (and on its lock), for good;
**                      a fork bumps fork_epoch (after_fork_*)
**   SOLE -> CLOSED     mp_handle_drop (__gc) recycles; mp_handle_close
**                      (__close) recycles unless LOCK_OF: a Condition or
**                      Value made on this lock may still use it. sync.c's
**                      lock_gc first lets go of a Lock this process holds
**                      (its closing flag picks close over drop).
**   SHARED -> CLOSED   mp_handle_drop / mp_handle_close: no recycling
**   LOCK_OF            set by mp_cell_set_lock, never cleared
**
** Apart from these states, a Value's or Array's own mapping (h->counted)
** is counted: its region holds the number of our handles on it, and the
** last to go unmaps it and closes its file, in whatever state (a copy
** sent elsewhere lives on in the receivers' mappings; a token still in
** flight then needs another live holder). Its lock is a separate Lock
** cell in a chunk, so no robust mutex goes with the mapping. A fork copies
** the table, counts included, as it copies the handles.
** --------------------------------------------------------------------- */

/* The own mapping of the Value or Array cell, counted per handle, or NULL
** (a chunk's cell, or a cell of another type: a Semaphore's or Barrier's
** own mapping holds robust mutexes, which are never unmapped). */
static region *counted_region(mp_cell *cell) {
  region *r;
  if (cell->type != MP_T_VALUE && cell->type != MP_T_ARRAY) return NULL;
  r = region_of((char *)cell);
  return r != NULL && r->cls == OWN_MAPPING && r->base == (char *)cell ? r : NULL;
}

void mp_handle_bind(mp_handle *h, mp_cell *cell, int creator) {
  region *r = counted_region(cell);
  assert(h->cell == NULL && cell != NULL);   /* CLOSED -> SOLE or SHARED */
  h->cell = cell;
  h->epoch = fork_epoch;
  h->creator = creator ? getpid() : 0;
  h->counted = r != NULL;
  if (r != NULL && r->handles++ == 0) ncounted++;
}

/* Before a handle may get a counted own mapping: a full collection when
** many are alive, so that those only garbage holds go. */
static void counted_collect(lua_State *L) {
  if (ncounted < counted_limit) return;
  lua_gc(L, LUA_GCCOLLECT);
  counted_limit = ncounted * 2 > COUNTED_MIN ? ncounted * 2 : COUNTED_MIN;
}

/* h lets go of its counted own mapping: the last handle here on it unmaps
** it, closes its file and forgets it, whether it was made here, inherited
** or attached, sent or not (other processes have their own mapping and
** descriptor). Nothing once regions_gc has emptied the table. */
static void release_counted(mp_handle *h) {
  region *r = region_of((char *)h->cell);
  if (r != NULL && r->base == (char *)h->cell && r->handles > 0 && --r->handles == 0) {
    region_drop(r);
    ncounted--;
  }
}

/* A Value's or Array's own mapping stored in a container (a Dict's value
** names it): this process keeps it for as long as it lives, as if one
** handle more were left, so that readers of the container reach it once
** every handle is gone (containers keep the containers they name in
** store.c; a stored cell is kept this simpler way). */
static void pin_counted(mp_cell *cell) {
  region *r = counted_region(cell);
  if (r == NULL || r->pinned) return;
  r->pinned = 1;
  if (r->handles++ == 0) ncounted++;
}

/* Whether dropping h may recycle its cell: made here, never sent, and no
** fork since, or the cell has a mapping of its own (forked children have
** their own mapping of it, and descriptor, which ours going leaves alone).
** A Value's or Array's own mapping is not recycled so but counted
** (release_counted), sent or not. */
int mp_handle_sole(const mp_handle *h) {
  return h->cell != NULL && h->creator == getpid() && !(h->cell->shared & SENT) &&
         (h->epoch == fork_epoch || h->cell->cls == OWN_MAPPING);
}

/* For __gc: the objects that use a lock hold its handle, so when the
** handle is collected they are being collected too. */
void mp_handle_drop(mp_handle *h) {
  if (h->cell == NULL) return;
  if (h->counted) release_counted(h);
  else if (mp_handle_sole(h)) cell_recycle(h->cell);
  h->cell = NULL;
}

/* For __close, which may come while a Condition or Value still uses the
** lock: its cell then stays (the object raises "the lock is closed"; a
** copy received elsewhere still has the lock). */
void mp_handle_close(mp_handle *h) {
  if (h->cell == NULL) return;
  if (h->counted) release_counted(h);
  else if (mp_handle_sole(h) && !(h->cell->shared & LOCK_OF)) cell_recycle(h->cell);
  h->cell = NULL;
}

/* cell if it is a live cell with that generation and type (0: Lock or
** RLock), else NULL. */
static mp_cell *cell_check(mp_cell *cell, uint32_t gen, int type) {
  if (cell == NULL || cell->magic != CELL_MAGIC || cell->gen != gen) return NULL;
  if (type == 0 ? (cell->type != MP_T_LOCK && cell->type != MP_T_RLOCK)
                : cell->type != type)
    return NULL;
  return cell;
}

/* Makes lock the lock that goes with cell (a Condition's, a Value's),
** named by its region's origin and its offset there; it is not recycled
** when its handle is closed (mp_handle_close). */
void mp_cell_set_lock(mp_cell *cell, mp_cell *lock) {
  region *r = region_of((char *)lock);
  lock->shared |= LOCK_OF;
  if (r == NULL) return;   /* not after regions_gc: a live handle's cell */
  cell->lock_origin = r->origin;
  cell->lock_off = (uint64_t)((char *)lock - r->base);
  cell->lock_gen = lock->gen;
}

/* The lock that goes with cell, when its region is known here (inherited
** or attached); NULL otherwise, or when cell has no lock. */
mp_cell *mp_cell_lock(mp_cell *cell) {
  region *r;
  mp_cell *lock;
  if (cell->lock_origin == 0) return NULL;
  r = region_by_origin(cell->lock_origin);
  if (r == NULL || (lock = cell_check(region_cell(r, cell->lock_off), cell->lock_gen, 0)) == NULL)
    return NULL;
  return cell_fits(r, cell->lock_off, lock) ? lock : NULL;
}

/* Adds to b the part of a token that names cell, with what a process
** that has not got its region needs to reach it. */
static void add_token_part(lua_State *L, luaL_Buffer *b, mp_cell *cell) {
  char buf[160];
  region *r = region_of((char *)cell);
  if (r == NULL) luaL_error(L, "cannot send an object whose memory is not known here");
  snprintf(buf, sizeof buf, "%d:%d:%d:%d:%" PRIx64 ":%" PRIx64 ":%" PRIx64 ":%" PRIx64
           ":%" PRIu32, (int)getpid(), r->fd, (int)r->maker, r->maker_fd, r->dev, r->ino,
           r->origin, (uint64_t)((char *)cell - r->base), cell->gen);
  luaL_addstring(b, buf);
}

/* Pushes the token of cell ("cell" or "cell/lock"); marks it, and its
** lock, shared for good. */
void mp_push_token(lua_State *L, mp_cell *cell) {
  luaL_Buffer b;
  mp_cell *lock = mp_cell_lock(cell);
  if (cell->lock_origin != 0 && lock == NULL)
    luaL_error(L, "cannot send an object whose lock is not known here");
  luaL_buffinit(L, &b);
  add_token_part(L, &b, cell);
  if (lock != NULL) {
    luaL_addchar(&b, '/');
    add_token_part(L, &b, lock);
    lock->shared |= SENT;
  }
  cell->shared |= SENT;
  luaL_pushresult(&b);
}

/* One part of a token, parsed. */
typedef struct {
  int pid, fd, maker, maker_fd;
  uint64_t dev, ino, origin, off;
  uint32_t gen;
} token_part;

/* Parses the part at *s into t and moves *s past it and its '/'; 0 if
** it is malformed. */
static int parse_part(const char **s, token_part *t) {
  int n = 0;
  if (sscanf(*s, "%d:%d:%d:%d:%" SCNx64 ":%" SCNx64 ":%" SCNx64 ":%" SCNx64 ":%" SCNu32 "%n",
             &t->pid, &t->fd, &t->maker, &t->maker_fd, &t->dev, &t->ino, &t->origin,
             &t->off, &t->gen, &n) != 9 || ((*s)[n] != '\0' && (*s)[n] != '/'))
    return 0;
  *s += n + ((*s)[n] == '/');
  return 1;
}

/* Maps the region that process pid holds as descriptor fd, if it is the
** one t names (inode, and the origin in its record); adds it to our
** regions, keeping the descriptor. NULL otherwise. */
static region *region_attach(pid_t pid, int fd, const token_part *t) {
  struct stat sb;
  region r;
  const region_rec *rec;
  void *p;
  int f = mp_open_held(pid, fd, t->dev, t->ino);
  if (f < 0) return NULL;
  if (fstat(f, &sb) < 0 || sb.st_size < REC_SIZE + (off_t)sizeof(mp_cell) ||
      (p = mmap(NULL, (size_t)sb.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, f, 0)) ==
          MAP_FAILED) {
    close(f);
    return NULL;
  }
  r.base = p;
  r.size = (size_t)sb.st_size;
  rec = (const region_rec *)(r.base + r.size - REC_SIZE);
  r.cls = (int)rec->cls;
  r.origin = rec->origin;
  r.fd = f;
  r.dev = t->dev;
  r.ino = t->ino;
  r.maker = (pid_t)rec->maker;
  r.maker_fd = (int)rec->maker_fd;
  r.handles = 0;
  r.pinned = 0;
  if (rec->magic == REC_MAGIC && rec->origin == t->origin && rec->size == r.size &&
      (r.cls < NCLASS || r.cls == OWN_MAPPING)) {
    region *added = region_add(&r);
    if (added != NULL) {
      mp_holders_add(f, -1, r.dev, r.ino);
      return added;
    }
  }
  region_unmap(&r);
  return NULL;
}

typedef struct { const token_part *t; region *r; } region_try;

/* mp_holders_reach's try: the region at pid:fd, if it is the one t names. */
static int region_try_holder(void *arg, pid_t pid, int fd, int aux) {
  region_try *rt = (region_try *)arg;
  (void)aux;
  rt->r = region_attach(pid, fd, rt->t);
  return rt->r != NULL ? 0 : -1;
}

/* Attaches the region t names from any live holder but the token's own
** candidates (holders.c); NULL if none. */
static region *region_attach_any(const token_part *t) {
  region_try rt;
  int known[2][2];
  rt.t = t;
  rt.r = NULL;
  known[0][0] = t->fd;
  known[1][0] = t->maker_fd;
  known[0][1] = known[1][1] = -1;
  mp_holders_reach(t->dev, t->ino, (const int(*)[2])known, 2, region_try_holder, &rt);
  return rt.r;
}

/* The region t names: ours (inherited, or attached before), else
** attached from the sender, the maker, or our parent (which a sibling
** sender may have inherited it from), under either descriptor number,
** else from any live holder. NULL with a reason pushed when none is left. */
static region *region_reach(lua_State *L, const token_part *t, const char *what) {
  region *r = region_by_origin(t->origin);
  if (r == NULL && (r = region_attach(t->pid, t->fd, t)) == NULL &&
      (r = region_attach(t->maker, t->maker_fd, t)) == NULL &&
      (r = region_attach(getppid(), t->fd, t)) == NULL &&
      (r = region_attach(getppid(), t->maker_fd, t)) == NULL &&
      (r = region_attach_any(t)) == NULL) {
#if MP_HAVE_PROC_FD
    if (t->fd < 0 && t->maker_fd < 0)
      lua_pushfstring(L, "%s was not inherited by this process (process %d made it "
                      "with no descriptor left for it)", what, t->maker);
    else
      lua_pushfstring(L, "no live process holds %s any more (process %d sent it, "
                      "process %d made it)", what, t->pid, t->maker);
#else
    lua_pushfstring(L, "%s was not inherited by this process", what);
#endif
  }
  return r;
}

/* __mproc_recv's resolution: the live cell of type named by token, and
** its lock (else NULL) in *lock. Raises with "cannot receive a <name>:
** <why>" when it cannot be had (why: fd.c's mp_held_why when the reason
** is not that no holder is left, a shortage of ours or a holder out of
** our reach). */
static mp_cell *token_cell(lua_State *L, const char *token, int type, const char *name,
                           mp_cell **lock) {
  const char *s = token, *an = strchr("AEIOU", name[0]) != NULL ? "an" : "a";
  token_part t, lt;
  region *r;
  mp_cell *c;
  int has_lock;
  if (!parse_part(&s, &t) || ((has_lock = *s != '\0') && !parse_part(&s, &lt)))
    luaL_error(L, "cannot receive %s %s: malformed token '%s'", an, name, token);
  mp_held_clear();
  if ((r = region_reach(L, &t, "it")) == NULL) {
    mp_held_why(L, t.pid, t.fd, t.maker, t.maker_fd);   /* pushed over region_reach's */
    luaL_error(L, "cannot receive %s %s: %s", an, name, lua_tostring(L, -1));
  }
  if ((c = cell_check(region_cell(r, t.off), t.gen, type)) == NULL)
    luaL_error(L, "cannot receive %s %s: token '%s' names no live %s", an, name, token, name);
  if (!cell_fits(r, t.off, c))
    luaL_error(L, "cannot receive %s %s: its cell claims %I bytes, more than its region holds",
               an, name, (LUAI_UACINT)c->size);
  *lock = NULL;
  if (c->lock_origin == 0) return c;
  mp_held_clear();
  if (has_lock && lt.origin == c->lock_origin && region_reach(L, &lt, "its lock") == NULL) {
    mp_held_why(L, lt.pid, lt.fd, lt.maker, lt.maker_fd);
    luaL_error(L, "cannot receive %s %s: %s", an, name, lua_tostring(L, -1));
  }
  if ((*lock = mp_cell_lock(c)) == NULL)
    luaL_error(L, "cannot receive %s %s: its lock is not known here", an, name);
  return c;
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
  h->counted = 0;
  luaL_setmetatable(L, mt);
  lua_getmetatable(L, -1);
  h->meta = lua_topointer(L, -1);
  lua_pop(L, 1);
  return h;
}

/* Gives h a new cell of type with room for body bytes; returns the body. */
void *mp_handle_alloc(lua_State *L, mp_handle *h, size_t body, int type) {
  mp_cell *c;
  if (class_of(sizeof(mp_cell) + body) < 0) counted_collect(L);
  if ((c = mp_cell_alloc(body, type)) == NULL)
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
  if (h->counted && mp_store_encoding()) pin_counted(h->cell);
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
** a Value), that lock's handle is user value 1. Raises when no live
** process holds the cell, or its lock. */
mp_handle *mp_handle_recv(lua_State *L, int type, const char *mt, int nuv) {
  const char *token = luaL_checkstring(L, 1);
  mp_cell *lk, *c;
  mp_handle *h;
  counted_collect(L);
  c = token_cell(L, token, type, mt + 6, &lk);
  mp_require_layer(L, "mproc.sync");   /* a Value's lock is a Lock or RLock */
  if (type == MP_T_VALUE || type == MP_T_ARRAY) mp_require_layer(L, "mproc.sharedctypes");
  h = mp_handle_adopt(L, c, mt, nuv);
  if (lk != NULL) {
    push_lock_handle(L, lk);
    lua_setiuservalue(L, -2, 1);
  }
  return h;
}
