/*
** store.c: the shared store under mproc.Dict, mproc.List and
** mproc.Namespace (dict.c and list.c lay their tables out in it).
**
** One store is one memfd (elsewhere, an unlinked temporary file):
** - the header, mapped once at offset 0 and never moved: a robust
**   process-shared mutex, the published state, the undo log;
** - the data, mapped after it, which grows (ftruncate, then every process
**   remaps when it sees a larger data_size under the lock) and shrinks
**   when the heap's high-water mark falls (clear, a drained container).
** Blocks of the data come from size classes (x1.5 steps) with a free list
** each, else from the top of the heap. Offsets, never pointers, are kept
** in shared memory: every process maps the data at its own address.
**
** Crash consistency: every change happens under the mutex, inside a
** transaction. Its start copies the state aside and empties the undo log;
** each word changed in place that the published state can reach goes
** through mp_store_put, which first logs its old value; new bytes go only
** into blocks the old state counts as free. The end clears one flag.
** A holder killed at any point leaves the flag set; the next locker gets
** EOWNERDEAD and puts every logged word and the state back, which undoes
** the whole transaction. Giving memory back (ftruncate smaller, punching
** holes in large freed blocks) comes after the end, so a rollback never
** needs bytes that were given back.
**
** Handles: a process keeps one mp_store per file it has mapped, found by
** device and inode; userdata of any of the three types point at it. A
** token (pid:fd of the sender, pid:fd of the maker, dev:ino:nonce) names
** the store across processes: a process that has it mapped (inherited by
** fork) uses its own mapping, and one that has not opens /proc/<pid>/fd/<fd>
** of the sender or the maker (Linux), else of any live holder (holders.c:
** each process registers the files it makes or attaches), checked by inode
** and by the nonce in the header. A store named by a value in another store is kept mapped
** with it (References between stores, below).
*/
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mproc.h"

/* ---------------------------------------------------------------------
** Portability: mremap and fallocate's hole punching on Linux; elsewhere
** the file (fd.c's mp_shared_file) is mapped anew and memory is given
** back by ftruncate only.
** --------------------------------------------------------------------- */
#if MP_LINUX
static void *remap(void *old, size_t oldsize, size_t size, int fd, off_t off) {
  (void)fd; (void)off;
  return mremap(old, oldsize, size, MREMAP_MAYMOVE);
}
static void punch(int fd, off_t off, off_t len) {
  if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, len) < 0) {
    /* only memory is kept */
  }
}
#else
static void *remap(void *old, size_t oldsize, size_t size, int fd, off_t off) {
  void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, off);
  if (p != MAP_FAILED) munmap(old, oldsize);
  return p;
}
static void punch(int fd, off_t off, off_t len) { (void)fd; (void)off; (void)len; }
#endif

#define ST_MAGIC 0x6d707374u          /* "mpst" */
#define BLK_MAGIC ((uint64_t)0x626c6b00u << 32)
#define HDR_SIZE ((uint64_t)4 << 20)  /* header + undo log (sparse) */
#define LOG_KEEP ((uint64_t)64 << 10) /* log bytes kept after a big txn */
#define DATA_MIN ((uint64_t)64 << 10) /* a new or emptied store's data */
#define HEADS_OFF 64                  /* free-list heads in the data */
#define NCLASS 80
#define PUNCH_MIN ((uint64_t)64 << 10) /* freed blocks this big give pages back */
#define PUNCH_MAX 64
#define RESET_AT ((uint64_t)1 << 20)  /* an emptied heap above this starts over */

typedef struct { uint64_t off, old; } st_undo;

typedef struct {
  uint32_t magic, kind;
  uint64_t nonce;
  uint64_t data_size;     /* bytes of data in the file (not in a txn) */
  uint64_t txn;           /* serial of the current or last transaction */
  pthread_mutex_t lock;
  uint32_t active;        /* a transaction is under way */
  uint32_t pad;
  uint64_t log_n;
  uint64_t log_peak;      /* most log entries since the log was trimmed */
  int32_t maker_pid;      /* the process that made it, and its descriptor */
  int32_t maker_fd;
  uint64_t rollbacks;     /* transactions of dead holders undone */
  mp_store_state st, saved;
  st_undo log[];          /* to the end of the header */
} st_header;

#define LOG_MAX ((HDR_SIZE - sizeof(st_header)) / sizeof(st_undo))

struct mp_store {
  mp_store *next;
  uint64_t dev, ino, nonce;
  int fd;
  int kind;
  st_header *hdr;
  char *data;             /* this process's mapping of the data */
  size_t mapsize;
  int refs;               /* userdata pointing here (and store_locked's pin) */
  int depth;              /* > 0: this process holds the lock (store_locked) */
  int keeps;              /* stores that keep this one (their kept) */
  int mark;               /* reached from a store in use (collect) */
  int nkept, capkept;     /* stores its values name, kept mapped for them */
  mp_store **kept;
  uint64_t seen_gen;      /* st.r_gen when kept was last pruned */
  int npunch;
  uint64_t punch[PUNCH_MAX];
};

static mp_store *stores = NULL;   /* this process's, inherited by fork */
static int atfork_done = 0;

#define WORD(s, off) (*(uint64_t *)((s)->data + (off)))
#define BARRIER() __atomic_signal_fence(__ATOMIC_SEQ_CST)

/* ---------------------------------------------------------------------
** Size classes: 16, 24, 32, 48, 64, 96 ... bytes, header included.
** --------------------------------------------------------------------- */

static uint64_t class_size(int c) {
  return (uint64_t)((c & 1) ? 24 : 16) << (c >> 1);
}

/* The smallest class holding total bytes (at least 24: a free block holds
** two words), or -1. */
static int class_of(uint64_t total) {
  int c = 1;
  while (c < NCLASS && class_size(c) < total) c++;
  return c < NCLASS ? c : -1;
}

/* ---------------------------------------------------------------------
** Mappings
** --------------------------------------------------------------------- */

/* Maps want bytes of data, at most what the file holds when clamp is
** set. The file size is the truth: bytes mapped past its end fault when
** touched, so a header announcing more (not a store's, or torn) is
** refused, EINVAL. 0 or an errno. */
static int map_data(mp_store *s, uint64_t want, int clamp) {
  struct stat sb;
  uint64_t have;
  void *p;
  if (fstat(s->fd, &sb) < 0) return errno;
  have = (uint64_t)sb.st_size > HDR_SIZE ? (uint64_t)sb.st_size - HDR_SIZE : 0;
  if (clamp && want > have) want = have;
  if (want < DATA_MIN || want > have) return EINVAL;
  if (s->mapsize >= want) return 0;
  if (s->data == NULL)
    p = mmap(NULL, (size_t)want, PROT_READ | PROT_WRITE, MAP_SHARED, s->fd, (off_t)HDR_SIZE);
  else
    p = remap(s->data, s->mapsize, (size_t)want, s->fd, (off_t)HDR_SIZE);
  if (p == MAP_FAILED) return errno;
  s->data = (char *)p;
  s->mapsize = (size_t)want;
  return 0;
}

/* Maps at least the data the header announces (under the lock: another
** process may have grown it). 0 or an errno. */
MP_HOT static int ensure_map(mp_store *s) {
  uint64_t want = s->hdr->data_size;
  return s->mapsize >= want ? 0 : map_data(s, want, 0);
}

static uint64_t page_size(void) {
  static uint64_t page = 0;
  if (page == 0) page = (uint64_t)sysconf(_SC_PAGESIZE);
  return page;
}

static uint64_t round_page(uint64_t n) {
  uint64_t page = page_size();
  return (n + page - 1) / page * page;
}

/* Grows the data to hold end bytes (at least doubling). 0 or an errno. */
static int grow(mp_store *s, uint64_t end) {
  st_header *h = s->hdr;
  uint64_t size = h->data_size * 2;
  if (size < end) size = round_page(end);
  if (ftruncate(s->fd, (off_t)(HDR_SIZE + size)) < 0) return errno;
  h->data_size = size;
  return ensure_map(s);
}

/* After a commit: a heap whose top fell below a quarter of the data gives
** the rest back. data_size falls before the file does, so no process
** ever counts on bytes past the end of the file. */
static void shrink(mp_store *s) {
  st_header *h = s->hdr;
  uint64_t size = DATA_MIN;
  if (h->data_size <= DATA_MIN || h->st.bump > h->data_size / 4) return;
  while (size < h->st.bump * 2) size *= 2;
  if (size >= h->data_size) return;
  h->data_size = size;
  BARRIER();
  if (ftruncate(s->fd, (off_t)(HDR_SIZE + size)) < 0) { /* only memory is kept */ }
}

/* After a commit: the pages of large freed blocks, but their first page
** (the free-list link), go back; so do the log's pages after a big one. */
static void give_back(mp_store *s) {
  int i;
  uint64_t page = page_size();
  for (i = 0; i < s->npunch; i++) {
    uint64_t blk = s->punch[i], c = WORD(s, blk) & 0xff;
    uint64_t from = round_page(blk + 24), to = (blk + class_size((int)c)) / page * page;
    if (to > from) punch(s->fd, (off_t)(HDR_SIZE + from), (off_t)(to - from));
  }
  s->npunch = 0;
  if (s->hdr->log_peak * sizeof(st_undo) > LOG_KEEP) {
    uint64_t from = round_page(sizeof(st_header) + LOG_KEEP);
    punch(s->fd, (off_t)from, (off_t)(HDR_SIZE - from));
    s->hdr->log_peak = 0;
  }
}

/* ---------------------------------------------------------------------
** Transactions
** --------------------------------------------------------------------- */

MP_HOT static void txn_begin(mp_store *s) {
  st_header *h = s->hdr;
  h->saved = h->st;
  h->log_n = 0;
  h->txn++;
  BARRIER();
  h->active = 1;
  BARRIER();
  s->npunch = 0;
}

MP_HOT static void txn_commit(mp_store *s) {
  BARRIER();
  s->hdr->active = 0;
  BARRIER();
}

/* Puts the logged words back, newest first, down to entry mark. */
static void undo_to(mp_store *s, uint64_t mark) {
  st_header *h = s->hdr;
  while (h->log_n > mark) {
    st_undo *u = &h->log[h->log_n - 1];
    WORD(s, u->off) = u->old;
    BARRIER();
    h->log_n--;
  }
}

/* Undoes the transaction under way (a killed holder's, or our own). */
static void txn_rollback(mp_store *s) {
  st_header *h = s->hdr;
  undo_to(s, 0);
  h->st = h->saved;
  BARRIER();
  h->active = 0;
  BARRIER();
  s->npunch = 0;
}

MP_HOT void mp_store_mark(mp_store *s, mp_store_mark_t *m) {
  m->log_n = s->hdr->log_n;
  m->st = s->hdr->st;
  m->npunch = s->npunch;
}

void mp_store_undo(mp_store *s, const mp_store_mark_t *m) {
  undo_to(s, m->log_n);
  s->hdr->st = m->st;
  s->npunch = m->npunch;
}

int mp_store_room(mp_store *s, uint64_t n) {
  return s->hdr->log_n + n <= LOG_MAX;
}

/* Sets the word at data offset off to v, its old value logged first. The
** caller made sure of room (mp_store_room). */
MP_HOT void mp_store_put(mp_store *s, uint64_t off, uint64_t v) {
  st_header *h = s->hdr;
  uint64_t n = h->log_n;
  h->log[n].off = off;
  h->log[n].old = WORD(s, off);
  BARRIER();
  h->log_n = n + 1;
  if (n + 1 > h->log_peak) h->log_peak = n + 1;
  BARRIER();
  WORD(s, off) = v;
}

/* Locks s for a change or a read and starts a transaction; within
** store_locked (depth > 0) it is held already and this does nothing.
** The wait goes in slices, Ctrl-C may strike between them. A transaction
** found under way was left by a holder that died (EOWNERDEAD; or by a
** locker that could not map the data to undo it): it is undone first.
** 0 or an errno (the lock is not held then). */
MP_HOT int mp_store_lock(lua_State *L, mp_store *s) {
  int r, e;
  if (s->depth > 0) return 0;
  r = mp_mutex_lock(L, &s->hdr->lock, -1, NULL);
  if (r != 0) return r;
  if ((e = ensure_map(s)) != 0) { mp_mutex_unlock(&s->hdr->lock); return e; }
  if (s->hdr->active) {
    txn_rollback(s);
    s->hdr->rollbacks++;
  }
  txn_begin(s);
  return 0;
}

static int prune_begin(mp_store *s);
static void prune_end(mp_store *s, int n);

/* Commits, gives memory back, unlocks; with prune, then lets go of the
** kept stores the container no longer names. */
MP_HOT static void unlock(mp_store *s, int prune) {
  int n;
  if (s->depth > 0) return;
  txn_commit(s);
  give_back(s);
  shrink(s);
  n = prune ? prune_begin(s) : s->nkept;
  mp_mutex_unlock(&s->hdr->lock);
  if (n < s->nkept) prune_end(s, n);
}

/* Ends what mp_store_lock started. */
void mp_store_unlock(mp_store *s) { unlock(s, 1); }

/* Ends a change that took a value out (a pop): when it names stores
** (nref), they are let go of only after it is decoded, by
** mp_store_push_taken. */
void mp_store_unlock_taken(mp_store *s, uint32_t nref) { unlock(s, nref == 0); }

/* Undoes what was changed since mp_store_lock, and unlocks; within
** store_locked only the caller's mark is undone (it passes it). */
void mp_store_fail(mp_store *s, const mp_store_mark_t *m) {
  if (s->depth > 0) { mp_store_undo(s, m); return; }
  txn_rollback(s);
  mp_mutex_unlock(&s->hdr->lock);
}

mp_store_state *mp_store_st(mp_store *s) { return &s->hdr->st; }
char *mp_store_data(mp_store *s) { return s->data; }
uint64_t mp_store_seed(mp_store *s) { return s->nonce; }

/* ---------------------------------------------------------------------
** Blocks
** --------------------------------------------------------------------- */

/* A block with room for n bytes; *off is where they go. Never a block
** freed in this transaction (a rollback would want its bytes back). May
** remap: pointers into the data are stale after it. 0 or an errno. */
MP_HOT int mp_store_alloc(mp_store *s, uint64_t n, uint64_t *off) {
  st_header *h = s->hdr;
  int c = class_of(n + 8), e;
  uint64_t head, blk;
  if (c < 0) return EFBIG;
  head = WORD(s, HEADS_OFF + 8 * (uint64_t)c);
  if (head != 0 && WORD(s, head + 16) != h->txn) {
    mp_store_put(s, head + 8, WORD(s, head + 8));   /* logged, as its */
    mp_store_put(s, head + 16, WORD(s, head + 16)); /* bytes will change */
    mp_store_put(s, HEADS_OFF + 8 * (uint64_t)c, WORD(s, head + 8));
    *off = head + 8;
    return 0;
  }
  blk = h->st.bump;
  if (blk + class_size(c) > h->data_size && (e = grow(s, blk + class_size(c))) != 0)
    return e;
  WORD(s, blk) = BLK_MAGIC | (uint64_t)c;
  h->st.bump = blk + class_size(c);
  *off = blk + 8;
  return 0;
}

/* Log entries an alloc and a free may take. */
#define ALLOC_LOG 3
#define FREE_LOG 3

/* Puts the block holding off on its free list, marked with this
** transaction; a large one gives its pages back after the commit. */
MP_HOT void mp_store_free(mp_store *s, uint64_t off) {
  st_header *h = s->hdr;
  uint64_t blk = off - 8, c = WORD(s, blk) & 0xff, hoff = HEADS_OFF + 8 * c;
  mp_store_put(s, blk + 8, WORD(s, hoff));
  mp_store_put(s, blk + 16, h->txn);
  mp_store_put(s, hoff, blk);
  if (class_size((int)c) >= PUNCH_MIN && s->npunch < PUNCH_MAX)
    s->punch[s->npunch++] = blk;
}

/* Bytes the block at off holds (its class, less the header). */
uint64_t mp_store_block_size(mp_store *s, uint64_t off) {
  return class_size((int)(WORD(s, off - 8) & 0xff)) - 8;
}

/* Empties the heap and the container: every block free, the top back at
** the start, no table, no reference counted. */
void mp_store_reset(mp_store *s) {
  mp_store_state *st = &s->hdr->st;
  int c;
  for (c = 0; c < NCLASS; c++)
    if (WORD(s, HEADS_OFF + 8 * (uint64_t)c) != 0)
      mp_store_put(s, HEADS_OFF + 8 * (uint64_t)c, 0);
  st->bump = MP_STORE_HEAP;
  st->a_off = st->a_cap = st->b_off = st->b_cap = st->n = st->count = 0;
  if (st->r_n > 0) st->r_gen++;
  st->r_off = st->r_cap = st->r_n = 0;
  s->npunch = 0;
}

/* A container just emptied: a large heap starts over (clear's room was
** made with the change's). */
void mp_store_emptied(mp_store *s) {
  if (s->hdr->st.bump > RESET_AT) mp_store_reset(s);
}

int mp_store_reset_room(mp_store *s) { return mp_store_room(s, NCLASS); }

/* ---------------------------------------------------------------------
** Making, finding and letting go of stores
** --------------------------------------------------------------------- */

static void after_fork_child(void) {
  mp_store *s;
  for (s = stores; s != NULL; s = s->next) s->depth = 0;
}

/* Unlinks and unmaps s; the stores it kept are the caller's (collect). */
static void store_destroy(mp_store *s) {
  mp_store **p;
  for (p = &stores; *p != NULL; p = &(*p)->next)
    if (*p == s) { *p = s->next; break; }
  if (s->data != NULL) munmap(s->data, s->mapsize);
  if (s->hdr != NULL) munmap(s->hdr, (size_t)HDR_SIZE);
  if (s->fd >= 0) {
    mp_holders_drop(s->fd);
    close(s->fd);
  }
  free(s->kept);
  free(s);
}

static int in_use(mp_store *s) { return s->refs > 0 || s->depth > 0; }

static void mark_from(mp_store *s) {
  int i;
  if (s->mark) return;
  s->mark = 1;
  for (i = 0; i < s->nkept; i++) mark_from(s->kept[i]);
}

/* Lets go of every store no handle reaches, through the stores that keep
** it (a mark and sweep, so that a Dict holding itself through a List is
** let go of too). */
static void collect(void) {
  mp_store *s, *next;
  int i;
  for (s = stores; s != NULL; s = s->next) s->mark = 0;
  for (s = stores; s != NULL; s = s->next)
    if (in_use(s)) mark_from(s);
  for (s = stores; s != NULL; s = s->next)
    if (!s->mark)
      for (i = 0; i < s->nkept; i++) s->kept[i]->keeps--;
  for (s = stores; s != NULL; s = next) {
    next = s->next;
    if (!s->mark) store_destroy(s);
  }
}

/* After a handle or a keep went: s goes if nothing reaches it. */
static void maybe_free(mp_store *s) {
  if (in_use(s)) return;
  if (s->keeps == 0 && s->nkept == 0) store_destroy(s);
  else collect();
}

static mp_store *store_by_id(uint64_t dev, uint64_t ino, uint64_t nonce) {
  mp_store *s;
  for (s = stores; s != NULL; s = s->next)
    if (s->dev == dev && s->ino == ino && s->nonce == nonce) return s;
  return NULL;
}

/* outer keeps inner mapped in this process (once; never itself). */
static void keep(mp_store *outer, mp_store *inner) {
  int i;
  if (inner == outer) return;
  for (i = 0; i < outer->nkept; i++)
    if (outer->kept[i] == inner) return;
  if (outer->nkept == outer->capkept) {
    int cap = outer->capkept ? 2 * outer->capkept : 4;
    mp_store **k = (mp_store **)realloc(outer->kept, (size_t)cap * sizeof *k);
    if (k == NULL) return;   /* not kept: it may have to be reached anew */
    outer->kept = k;
    outer->capkept = cap;
  }
  outer->kept[outer->nkept++] = inner;
  inner->keeps++;
}

/* Maps the header of the store file fd into a new mp_store, checks it
** (nonce 0: a new store, its header still to be written) and links it.
** NULL with errno set: ESTALE when the file is not the store (too short
** to hold a store's header and least data: mapping it would fault). */
static mp_store *store_attach(int fd, uint64_t nonce) {
  mp_store *s = (mp_store *)calloc(1, sizeof *s);
  struct stat sb;
  void *p;
  if (s == NULL) { close(fd); errno = ENOMEM; return NULL; }
  s->fd = fd;
  if (fstat(fd, &sb) < 0) goto fail;
  s->dev = (uint64_t)sb.st_dev;
  s->ino = (uint64_t)sb.st_ino;
  if ((uint64_t)sb.st_size < HDR_SIZE + DATA_MIN) {
    errno = ESTALE;
    goto fail;
  }
  p = mmap(NULL, (size_t)HDR_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) goto fail;
  s->hdr = (st_header *)p;
  if (nonce != 0 && (s->hdr->magic != ST_MAGIC || s->hdr->nonce != nonce)) {
    errno = ESTALE;
    goto fail;
  }
  s->nonce = s->hdr->nonce;
  s->kind = (int)s->hdr->kind;
  s->next = stores;
  stores = s;
  mp_holders_add(fd, -1, s->dev, s->ino);
  if (!atfork_done) { atfork_done = 1; pthread_atfork(NULL, NULL, after_fork_child); }
  return s;
fail:
  { int e = errno; store_destroy(s); errno = e; }
  return NULL;
}

/* A new store of kind, or NULL with errno set. */
mp_store *mp_store_new(int kind) {
  int fd = mp_shared_file("mproc-store"), e;
  mp_store *s;
  st_header *h;
  if (fd < 0) return NULL;
  if (ftruncate(fd, (off_t)(HDR_SIZE + DATA_MIN)) < 0) { e = errno; close(fd); errno = e; return NULL; }
  if ((s = store_attach(fd, 0)) == NULL) return NULL;
  h = s->hdr;
  if ((e = mp_mutex_init(&h->lock)) != 0) { store_destroy(s); errno = e; return NULL; }
  h->kind = (uint32_t)kind;
  h->nonce = mp_random64() | 1;
  h->maker_pid = (int32_t)getpid();
  h->maker_fd = fd;
  h->data_size = DATA_MIN;
  h->st.bump = MP_STORE_HEAP;
  if ((e = ensure_map(s)) != 0) { store_destroy(s); errno = e; return NULL; }
  h->magic = ST_MAGIC;
  s->nonce = h->nonce;
  s->kind = kind;
  s->refs = 1;
  return s;
}

void mp_store_ref(mp_store *s) { s->refs++; }

/* One userdata fewer points at s; the last one unmaps it, unless a
** store_locked on it is still under way or a store in use keeps it. */
void mp_store_release(mp_store *s) {
  s->refs--;
  maybe_free(s);
}

int mp_store_kind(mp_store *s) { return s->kind; }

/* Pushes the token naming s: pid:fd (ours), pid:fd (its maker's),
** dev:ino:nonce, in hex. */
static void mp_store_push_token(lua_State *L, mp_store *s) {
  char buf[160];
  snprintf(buf, sizeof buf, "%lx:%x:%lx:%x:%" PRIx64 ":%" PRIx64 ":%" PRIx64,
           (unsigned long)getpid(), (unsigned)s->fd, (unsigned long)s->hdr->maker_pid,
           (unsigned)s->hdr->maker_fd, s->dev, s->ino, s->nonce);
  lua_pushstring(L, buf);
}

/* Maps the store that process pid holds as descriptor fd, if it is the
** one with that device, inode and nonce; NULL otherwise (a shortage of
** ours noted: mp_held_note). Its data is mapped as far as the file holds
** it now: without the lock, data_size may be moving. */
static mp_store *store_open(pid_t pid, int fd, uint64_t dev, uint64_t ino, uint64_t nonce) {
  mp_store *s;
  int f = mp_open_held(pid, fd, dev, ino), e;
  if (f < 0) return NULL;
  if ((s = store_attach(f, nonce)) == NULL) {   /* closes f */
    mp_held_note(errno);
    return NULL;
  }
  if ((e = map_data(s, s->hdr->data_size, 1)) != 0) {
    store_destroy(s);
    mp_held_note(e);
    return NULL;
  }
  return s;
}

typedef struct { uint64_t dev, ino, nonce; mp_store *s; } store_try;

/* mp_holders_reach's try: the store at pid:fd, if it is t's. */
static int store_try_holder(void *arg, pid_t pid, int fd, int aux) {
  store_try *t = (store_try *)arg;
  (void)aux;
  t->s = store_open(pid, fd, t->dev, t->ino, t->nonce);
  return t->s != NULL || mp_held_short() ? 0 : -1;   /* 0 also stops it */
}

/* The store dev:ino:nonce, from the token's candidates: the sender (pid:fd),
** its maker (mpid:mfd), or our parent (which a sibling sender may have
** inherited it from) at either number; else any live holder (holders.c).
** A shortage of ours (mp_held_short) stops the search. */
static mp_store *store_reach(pid_t pid, int fd, pid_t mpid, int mfd, uint64_t dev,
                             uint64_t ino, uint64_t nonce) {
  store_try t = { dev, ino, nonce, NULL };
  const int known[2][2] = { { fd, -1 }, { mfd, -1 } };
  const pid_t pids[4] = { pid, mpid, getppid(), getppid() };
  const int fds[4] = { fd, mfd, fd, mfd };
  int i;
  for (i = 0; i < 4 && !mp_held_short(); i++)
    if ((t.s = store_open(pids[i], fds[i], dev, ino, nonce)) != NULL) return t.s;
  if (!mp_held_short()) mp_holders_reach(dev, ino, known, 2, store_try_holder, &t);
  return t.s;
}

/* The store named by token, with a reference taken: ours if this process
** has it mapped, else reached through a descriptor of a live process
** that holds it (store_reach). NULL with a message pushed. */
static mp_store *mp_store_from_token(lua_State *L, const char *token, int kind) {
  unsigned long pid, mpid;
  unsigned fd, mfd;
  uint64_t dev, ino, nonce;
  mp_store *s;
  if (sscanf(token, "%lx:%x:%lx:%x:%" SCNx64 ":%" SCNx64 ":%" SCNx64, &pid, &fd, &mpid,
             &mfd, &dev, &ino, &nonce) != 7 || nonce == 0) {   /* a store's is odd */
    lua_pushfstring(L, "malformed token '%s'", token);
    return NULL;
  }
  mp_held_clear();
  s = store_by_id(dev, ino, nonce);
  if (s == NULL &&
      (s = store_reach((pid_t)pid, (int)fd, (pid_t)mpid, (int)mfd, dev, ino, nonce)) == NULL) {
    mp_push_unreached(L, (pid_t)pid, (int)fd, (pid_t)mpid, (int)mfd);
    return NULL;
  }
  if (s->kind != kind) {
    maybe_free(s);
    lua_pushliteral(L, "the token names an object of another type");
    return NULL;
  }
  s->refs++;
  return s;
}

/* ---------------------------------------------------------------------
** References between stores
**
** A value stored in a container may name other stores (a List in a
** Dict). So that a process that reads it later can still reach them,
** the process that stored it keeps them mapped (their descriptors open,
** which /proc/<pid>/fd reaches) for as long as it keeps the container;
** a process that reads one keeps it likewise. Each record lists the ids
** (dev, ino, nonce) of the stores its value names; the container's table
** (st.r_off: {dev, ino, nonce, count} entries, r_n of them) counts the
** records naming each, changed in the same transaction as the records.
** When a count falls to 0, st.r_gen moves on, and each process, at its
** next unlock of the container, lets go of the kept stores the table no
** longer counts. The descriptors a container keeps are so bounded by the
** stores its values name, plus those named since this process last used
** it.
** --------------------------------------------------------------------- */

#define REF_SIZE 32

/* Stores sent (mp_store_send) while a container's value is encoded. */
static struct {
  mp_store *into;
  int on;
  uint32_t n, cap;
  char *ids;
} sends = {NULL, 0, 0, 0, NULL};

static void put_id(char *p, mp_store *s) {
  uint64_t id[3];
  id[0] = s->dev; id[1] = s->ino; id[2] = s->nonce;
  memcpy(p, id, MP_STORE_ID);
}

/* Encodes the value at idx for the container into: its bytes, and the
** ids of the stores it names (into excepted; *ids valid until the next
** encoding), their count returned. An encoding that raises leaves the
** collecting on; the next one starts over. */
MP_HOT uint32_t mp_store_encode(lua_State *L, mp_store *into, int idx, mp_bytes *b, const char **ids) {
  sends.into = into;
  sends.on = 1;
  sends.n = 0;
  mp_encode(L, idx, b);
  sends.on = 0;
  *ids = sends.ids;
  return sends.n;
}

/* Whether a container's value is being encoded (mp_store_encode): what
** its __mproc_send is asked for is stored, not only sent. */
int mp_store_encoding(void) { return sends.on; }

static void sends_add(mp_store *s) {
  char id[MP_STORE_ID];
  uint32_t i;
  if (!sends.on || s == sends.into) return;
  put_id(id, s);
  for (i = 0; i < sends.n; i++)
    if (memcmp(sends.ids + (size_t)i * MP_STORE_ID, id, MP_STORE_ID) == 0) return;
  if (sends.n == sends.cap) {
    uint32_t cap = sends.cap ? 2 * sends.cap : 8;
    char *p = (char *)realloc(sends.ids, (size_t)cap * MP_STORE_ID);
    if (p == NULL) return;   /* not counted: not kept by the storer */
    sends.ids = p;
    sends.cap = cap;
  }
  memcpy(sends.ids + (size_t)sends.n++ * MP_STORE_ID, id, MP_STORE_ID);
}

/* The table entry of the id at p, or -1. */
static int64_t ref_find(mp_store *s, const char *p) {
  uint64_t i, r = s->hdr->st.r_off;
  for (i = 0; i < s->hdr->st.r_n; i++)
    if (memcmp(s->data + r + i * REF_SIZE, p, MP_STORE_ID) == 0) return (int64_t)i;
  return -1;
}

/* A new table with room for want more entries, the counted ones moved
** in. 0 or an errno. */
static int ref_grow(mp_store *s, uint64_t want) {
  mp_store_state *st = &s->hdr->st;
  uint64_t live = 0, i, off, cap = 8;
  int e;
  for (i = 0; i < st->r_n; i++)
    if (WORD(s, st->r_off + i * REF_SIZE + 24) != 0) live++;
  while (cap < 2 * (live + want)) cap *= 2;
  if ((e = mp_store_alloc(s, cap * REF_SIZE, &off)) != 0) return e;
  for (i = 0, live = 0; i < st->r_n; i++)
    if (WORD(s, st->r_off + i * REF_SIZE + 24) != 0)
      memcpy(s->data + off + live++ * REF_SIZE, s->data + st->r_off + i * REF_SIZE, REF_SIZE);
  if (st->r_cap != 0) mp_store_free(s, st->r_off);
  st->r_off = off;
  st->r_cap = cap;
  st->r_n = live;
  return 0;
}

/* Counts one more reference to each of the n ids at ids (not in the data).
** The caller made room for MP_STORE_REFS_LOG(n). 0 or an errno. */
int mp_store_refs_add(mp_store *s, const char *ids, uint32_t n) {
  mp_store_state *st = &s->hdr->st;
  uint32_t k;
  for (k = 0; k < n; k++) {
    const char *id = ids + (size_t)k * MP_STORE_ID;
    int64_t i = ref_find(s, id);
    uint64_t off;
    int e;
    if (i >= 0) {
      off = st->r_off + (uint64_t)i * REF_SIZE + 24;
      mp_store_put(s, off, WORD(s, off) + 1);
      continue;
    }
    if (st->r_n == st->r_cap && (e = ref_grow(s, n - k)) != 0) return e;
    off = st->r_off + st->r_n * REF_SIZE;   /* past the published count */
    memcpy(s->data + off, id, MP_STORE_ID);
    WORD(s, off + 24) = 1;
    st->r_n++;
  }
  return 0;
}

/* Counts one reference fewer to each of the n ids at ids (a record about
** to be freed: read before mp_store_free, which writes over its start).
** The caller made room for n entries. */
void mp_store_refs_drop(mp_store *s, const char *ids, uint32_t n) {
  uint32_t k;
  char id[MP_STORE_ID];
  for (k = 0; k < n; k++) {
    int64_t i;
    uint64_t off, c;
    memcpy(id, ids + (size_t)k * MP_STORE_ID, MP_STORE_ID);
    if ((i = ref_find(s, id)) < 0) continue;
    off = s->hdr->st.r_off + (uint64_t)i * REF_SIZE + 24;
    if ((c = WORD(s, off)) == 0) continue;
    mp_store_put(s, off, c - 1);
    if (c == 1) s->hdr->st.r_gen++;
  }
}

/* After storing a value naming the n ids: s keeps those stores mapped. */
void mp_store_keep_ids(mp_store *s, const char *ids, uint32_t n) {
  uint32_t k;
  for (k = 0; k < n; k++) {
    uint64_t id[3];
    mp_store *t;
    memcpy(id, ids + (size_t)k * MP_STORE_ID, MP_STORE_ID);
    if ((t = store_by_id(id[0], id[1], id[2])) != NULL) keep(s, t);
  }
}

/* Under the lock: moves the kept stores s's table no longer counts to the
** end of s->kept; returns how many stay. */
static int prune_begin(mp_store *s) {
  int i, n = s->nkept;
  if (n == 0 || s->hdr->st.r_gen == s->seen_gen) return n;
  s->seen_gen = s->hdr->st.r_gen;
  for (i = 0; i < n;) {
    char id[MP_STORE_ID];
    int64_t r;
    put_id(id, s->kept[i]);
    r = ref_find(s, id);
    if (r >= 0 && WORD(s, s->hdr->st.r_off + (uint64_t)r * REF_SIZE + 24) != 0) { i++; continue; }
    { mp_store *t = s->kept[i]; s->kept[i] = s->kept[--n]; s->kept[n] = t; }
  }
  return n;
}

/* After unlocking: lets go of the kept stores past n. */
static void prune_end(mp_store *s, int n) {
  int i, any = 0;
  for (i = n; i < s->nkept; i++) {
    s->kept[i]->keeps--;
    if (!in_use(s->kept[i])) any = 1;
  }
  s->nkept = n;
  if (any) collect();
}

/* Where the specs' check tallies the records' references. */
void mp_store_tally(mp_store *s, mp_store_tally_t *t, const char *ids, uint32_t n) {
  uint32_t k;
  for (k = 0; k < n && t->why == NULL; k++) {
    int64_t i = ref_find(s, ids + (size_t)k * MP_STORE_ID);
    if (i < 0 || (uint64_t)i >= t->n) t->why = "a reference the table does not count";
    else t->seen[i]++;
  }
}

/* NULL when the table counts exactly the tallied references. */
static const char *tally_end(mp_store *s, mp_store_tally_t *t) {
  uint64_t i;
  if (t->why != NULL) return t->why;
  if (s->hdr->st.r_n > s->hdr->st.r_cap) return "bad reference table size";
  for (i = 0; i < t->n; i++)
    if (t->seen[i] != WORD(s, s->hdr->st.r_off + i * REF_SIZE + 24))
      return "a reference count is wrong";
  return NULL;
}

/* ---------------------------------------------------------------------
** store_locked: f(...) as one transaction, for the Lua layer
** --------------------------------------------------------------------- */

/* Calls the function at 2 with the arguments after it, holding s's lock:
** what it changes through the store's handles is one transaction,
** committed when it returns and undone when it raises (the error then
** goes on). Within another store_locked on s, it simply calls. */
int mp_store_locked(lua_State *L, mp_store *s) {
  int n = lua_gettop(L), e, r;
  luaL_checktype(L, 2, LUA_TFUNCTION);
  if (s->depth > 0) {
    lua_call(L, n - 2, LUA_MULTRET);
    return lua_gettop(L) - 1;
  }
  if ((e = mp_store_lock(L, s)) != 0)
    return luaL_error(L, "cannot lock the shared object: %s", strerror(e));
  s->depth = 1;
  s->refs++;                            /* its handle may be closed inside */
  r = lua_pcall(L, n - 2, LUA_MULTRET, 0);
  s->depth = 0;
  if (r == LUA_OK) {
    mp_store_unlock(s);
  } else {
    txn_rollback(s);
    mp_mutex_unlock(&s->hdr->lock);
  }
  mp_store_release(s);
  if (r != LUA_OK) return lua_error(L);
  return lua_gettop(L) - 1;
}

/* Whether this process is inside store_locked on s. */
int mp_store_held(mp_store *s) { return s->depth > 0; }

/* ---------------------------------------------------------------------
** Checks, for the specs: the heap's blocks and free lists are whole.
** --------------------------------------------------------------------- */

/* NULL when the heap is whole, else what is wrong. Under the lock. */
static const char *check_heap(mp_store *s) {
  static char why[120];
  uint64_t off;
  int c;
  for (off = MP_STORE_HEAP; off < s->hdr->st.bump; off += class_size((int)(WORD(s, off) & 0xff)))
    if ((WORD(s, off) & ~(uint64_t)0xff) != BLK_MAGIC || (WORD(s, off) & 0xff) >= NCLASS) {
      snprintf(why, sizeof why, "bad block header at %" PRIu64, off);
      return why;
    }
  if (off != s->hdr->st.bump) return "blocks overrun the top";
  for (c = 0; c < NCLASS; c++) {
    uint64_t b, steps = 0;
    for (b = WORD(s, HEADS_OFF + 8 * (uint64_t)c); b != 0; b = WORD(s, b + 8)) {
      if (b < MP_STORE_HEAP || b >= s->hdr->st.bump || (WORD(s, b) & 0xff) != (uint64_t)c ||
          ++steps > s->hdr->st.bump / 16) {
        snprintf(why, sizeof why, "bad free list of class %d", c);
        return why;
      }
    }
  }
  return NULL;
}

/* Under the lock: the heap, the container's own table (its kind's
** check), and the reference counts against the records' references. */
static const char *check_all(mp_store *s) {
  mp_store_tally_t t;
  const char *why = check_heap(s);
  if (why != NULL) return why;
  t.n = s->hdr->st.r_n;
  t.why = NULL;
  if ((t.seen = (uint64_t *)calloc((size_t)t.n + 1, 8)) == NULL) return "out of memory";
  why = s->kind == MP_STORE_LIST ? mp_list_check_array(s, &t) : mp_dict_check_table(s, &t);
  if (why == NULL) why = tally_end(s, &t);
  free(t.seen);
  return why;
}

/* ---------------------------------------------------------------------
** The scratch buffer
** --------------------------------------------------------------------- */

#define BUF_KEEP (4 * 1024 * 1024)  /* a larger scratch buffer is not kept */
static mp_buf scratch = {NULL, 0};

int mp_buf_take(mp_buf *b, size_t n) {
  *b = scratch;
  scratch.p = NULL;
  scratch.cap = 0;
  if (b->cap < n) {
    char *p = (char *)realloc(b->p, n);
    if (p == NULL) { free(b->p); b->p = NULL; b->cap = 0; return ENOMEM; }
    b->p = p;
    b->cap = n;
  }
  return 0;
}

void mp_buf_give(mp_buf *b) {
  if (scratch.p == NULL && b->cap <= BUF_KEEP) scratch = *b;
  else free(b->p);
  b->p = NULL;
  b->cap = 0;
}

/* ---------------------------------------------------------------------
** Userdata on a store: what dict.c and list.c do alike
** --------------------------------------------------------------------- */

typedef struct { mp_store *s; } store_ud;

/* The store of the userdata of type mt at idx; raises if it is closed. */
MP_HOT mp_store *mp_store_check(lua_State *L, int idx, const char *mt) {
  store_ud *u = (store_ud *)mp_checkudata(L, idx, mt);
  if (u->s == NULL) luaL_error(L, "the %s is closed", mt + 6);
  return u->s;
}

/* The store of the userdata of type mt at idx, NULL if it is closed. */
mp_store *mp_store_test(lua_State *L, int idx, const char *mt) {
  return ((store_ud *)mp_checkudata(L, idx, mt))->s;
}

/* Pushes a new userdata of type mt on a new store of kind (the userdata
** first, so an allocation error leaks nothing); on failure it pushes
** nil, message, errno instead and returns NULL. */
mp_store *mp_store_make(lua_State *L, const char *mt, int kind) {
  store_ud *u = (store_ud *)lua_newuserdatauv(L, sizeof *u, 0);
  u->s = NULL;
  luaL_setmetatable(L, mt);
  if ((u->s = mp_store_new(kind)) == NULL) {
    int e = errno;
    const char *what = lua_pushfstring(L, "cannot make a %s", mt + 6);
    errno = e;
    mp_fail(L, what);
    lua_remove(L, -4);   /* the message given to mp_fail */
    return NULL;
  }
  return u->s;
}

/* __gc and __close: lets go of this process's share. */
int mp_store_gc(lua_State *L, const char *mt) {
  store_ud *u = (store_ud *)mp_checkudata(L, 1, mt);
  if (u->s != NULL) { mp_store_release(u->s); u->s = NULL; }
  return 0;
}

/* The store a container's value is being decoded from (its reads set it
** around mp_decode, which raises nothing), which keeps what it names. */
static mp_store *decoding = NULL;

void mp_store_decoding(mp_store *from) { decoding = from; }

/* __mproc_send: the token; a container's value being encoded counts it. */
int mp_store_send(lua_State *L, const char *mt) {
  store_ud *u = (store_ud *)mp_checkudata(L, 1, mt);
  if (u->s == NULL) luaL_error(L, "cannot send a closed %s", mt + 6);
  sends_add(u->s);
  mp_store_push_token(L, u->s);
  return 1;
}

/* __mproc_recv: a handle; read from a container, the container keeps it.
** What may raise (the require, the userdata) comes before the store is
** attached, so a raise leaks nothing; the require may decode values of
** its own, so the container being decoded is put back after it. */
int mp_store_recv(lua_State *L, const char *mt, int kind) {
  const char *token = luaL_checkstring(L, 1);
  mp_store *from = decoding;
  store_ud *u;
  mp_require_layer(L, "mproc.managers");   /* update, keys, ... */
  decoding = from;
  u = (store_ud *)lua_newuserdatauv(L, sizeof *u, 0);
  u->s = NULL;
  luaL_setmetatable(L, mt);
  if ((u->s = mp_store_from_token(L, token, kind)) == NULL)
    return luaL_error(L, "cannot receive a %s: %s", mt + 6, lua_tostring(L, -1));
  if (from != NULL) keep(from, u->s);
  return 1;
}

/* Copies the n bytes at data offset off out, to c's own room or the
** scratch buffer. 0 or ENOMEM. */
MP_HOT int mp_store_copy_out(mp_store *s, uint64_t off, uint64_t n, mp_vcopy *c) {
  c->buf.p = NULL;
  c->buf.cap = 0;
  c->n = (size_t)n;
  if (n <= MP_STORE_SMALL) {
    c->p = c->small;
  } else {
    if (mp_buf_take(&c->buf, (size_t)n) != 0) return ENOMEM;
    c->p = c->buf.p;
  }
  memcpy((char *)c->p, s->data + off, (size_t)n);
  return 0;
}

/* After unlocking: pushes the copied value decoded (stores it names kept
** by from, if not NULL); raises if it cannot be. */
MP_HOT void mp_store_push_copy(lua_State *L, mp_vcopy *c, mp_store *from, const char *mt) {
  int ok;
  decoding = from;
  ok = mp_decode(L, c->p, c->n);
  decoding = NULL;
  if (c->buf.p != NULL) mp_buf_give(&c->buf);
  if (!ok) luaL_error(L, "cannot decode a %s value: %s", mt + 6, lua_tostring(L, -1));
}

/* After mp_store_unlock_taken: pushes the value taken out decoded, then
** lets go of the stores s no longer names. */
void mp_store_push_taken(lua_State *L, mp_vcopy *c, mp_store *s, uint32_t nref, const char *mt) {
  mp_store_push_copy(L, c, NULL, mt);
  if (nref > 0 && s->depth == 0) {
    mp_store_lock_or_raise(L, s, mt);
    mp_store_unlock(s);
  }
}

/* Locks s, or raises "cannot lock the Dict: ..." */
MP_HOT mp_store *mp_store_lock_or_raise(lua_State *L, mp_store *s, const char *mt) {
  int e = mp_store_lock(L, s);
  if (e != 0) luaL_error(L, "cannot lock the %s: %s", mt + 6, strerror(e));
  return s;
}

/* __eq: two handles on one store are equal. */
int mp_store_eq(lua_State *L, const char *mt) {
  store_ud *a = (store_ud *)luaL_testudata(L, 1, mt);
  store_ud *b = (store_ud *)luaL_testudata(L, 2, mt);
  lua_pushboolean(L, a != NULL && b != NULL && a->s != NULL && a->s == b->s);
  return 1;
}

/* d:clear(), l:clear(): every entry gone, the memory given back */
int mp_store_clear(lua_State *L, const char *mt) {
  mp_store *s = mp_store_check(L, 1, mt);
  mp_store_lock_or_raise(L, s, mt);
  if (!mp_store_room(s, MP_STORE_RESET_LOG)) {
    mp_store_unlock(s);           /* nothing changed yet */
    return luaL_error(L, "cannot clear the %s: too many changes in one atomic operation",
                      mt + 6);
  }
  mp_store_reset(s);
  mp_store_unlock(s);
  return 0;
}

/* Methods first, for Dict and Namespace: d.get is the method; the key
** "get" is read with d:get("get"). upvalue 1: the methods. 1 if pushed. */
int mp_store_method(lua_State *L) {
  if (lua_type(L, 2) != LUA_TSTRING) return 0;
  lua_pushvalue(L, 2);
  if (lua_rawget(L, lua_upvalueindex(1)) != LUA_TNIL) return 1;
  lua_pop(L, 1);
  return 0;
}

/* Raises "cannot <what>: <reason>" for errno e (E2BIG: the log is full). */
int mp_store_raise(lua_State *L, const char *what, int e) {
  if (e == E2BIG)
    return luaL_error(L, "cannot %s: too many changes in one atomic operation", what);
  return luaL_error(L, "cannot %s: %s", what, strerror(e));
}

static const char *const store_types[] = {"mproc.Dict", "mproc.List", "mproc.Namespace", NULL};

/* core.store_is(v, typename) -> whether v is an open object of that type */
static int l_store_is(lua_State *L) {
  const char *mt = store_types[luaL_checkoption(L, 2, NULL, store_types)];
  store_ud *u = (store_ud *)luaL_testudata(L, 1, mt);
  lua_pushboolean(L, u != NULL && u->s != NULL);
  return 1;
}

/* The open store of a Dict, List or Namespace at idx (*mt its type);
** raises for anything else. */
static mp_store *any_store(lua_State *L, int idx, const char **mt) {
  int i;
  for (i = 0; store_types[i] != NULL; i++) {
    if (luaL_testudata(L, idx, store_types[i]) != NULL) {
      *mt = store_types[i];
      return mp_store_check(L, idx, store_types[i]);
    }
  }
  luaL_argexpected(L, 0, idx, "mproc.Dict, mproc.List or mproc.Namespace");
  return NULL;
}

/* core.store_locked(obj, f, ...) -> f(...), run as one transaction under
** obj's lock (mp_store_locked) */
static int l_store_locked(lua_State *L) {
  const char *mt;
  return mp_store_locked(L, any_store(L, 1, &mt));
}

/* core.store_snapshot(obj) -> keys, values (Dict, Namespace: insertion
** order), or the values (List): sequences read at one instant */
static int l_store_snapshot(lua_State *L) {
  const char *mt;
  mp_store *s = any_store(L, 1, &mt);
  if (s->kind == MP_STORE_LIST) {
    mp_list_snapshot(L, s);
    return 1;
  }
  mp_dict_snapshot(L, s, mt);
  return 2;
}

/* core.store_check(obj) -> true, or false, what is wrong (heap, free
** lists, the container's table, reference counts), for the specs */
static int l_store_check(lua_State *L) {
  const char *mt, *why;
  mp_store *s = any_store(L, 1, &mt);
  mp_store_lock_or_raise(L, s, mt);
  why = check_all(s);
  mp_store_unlock(s);
  lua_pushboolean(L, why == NULL);
  if (why == NULL) return 1;
  lua_pushstring(L, why);
  return 2;
}

/* core.store_sizes(obj) -> bytes of data in the shared file, bytes of heap
** in use, transactions of killed holders undone, stores obj keeps mapped
** in this process, for the specs */
static int l_store_sizes(lua_State *L) {
  const char *mt;
  mp_store *s = any_store(L, 1, &mt);
  lua_pushinteger(L, (lua_Integer)s->hdr->data_size);
  lua_pushinteger(L, (lua_Integer)s->hdr->st.bump);
  lua_pushinteger(L, (lua_Integer)s->hdr->rollbacks);
  lua_pushinteger(L, s->nkept);
  return 4;
}

/* When the Lua state closes (and this library may be unloaded), the
** scratch buffer goes. */
static int scratch_gc(lua_State *L) {
  (void)L;
  free(scratch.p);
  scratch.p = NULL;
  scratch.cap = 0;
  free(sends.ids);
  sends.ids = NULL;
  sends.n = sends.cap = 0;
  return 0;
}

static const luaL_Reg store_funcs[] = {
  {"store_is", l_store_is}, {"store_locked", l_store_locked},
  {"store_snapshot", l_store_snapshot}, {"store_check", l_store_check},
  {"store_sizes", l_store_sizes}, {NULL, NULL}
};

void mp_open_store(lua_State *L) {
  mp_on_state_close(L, "mproc.store.scratch", scratch_gc);
  luaL_setfuncs(L, store_funcs, 0);
}
