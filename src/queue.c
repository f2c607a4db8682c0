/*
** queue.c: the shared-memory queue under mproc.Queue, SimpleQueue and
** JoinableQueue. It moves byte strings; the Lua layer encodes values.
**
** One queue is one unlinked tmpfs file (memfd; elsewhere a temporary file
** unlinked at once), freed by the kernel when the last process that holds
** it ends (nothing can leak past the processes), in two pieces:
** - the header, page 0, mapped once and never moved (the kernel's robust
**   futex list points at the mutex while a process holds it): a robust
**   process-shared mutex, the queue's state, futex words to wait on, and
**   what names the file (a magic, a random nonce, its maker);
** - the items, from the next page on, in a ring of records (8-byte length,
**   bytes, padding to 8) that every process maps. It grows with ftruncate
**   when a put does not fit (so a put on an unbounded queue never waits for
**   a consumer) and shrinks back when a large ring drains.
**
** Handles: a process inherits its queues by fork, with the Lua objects
** (queue.lua keeps them by the file's identity: the same object, no
** system call). A token (sender pid:fd:nfd, maker pid:fd:nfd,
** dev:ino:nonce; nfd the notifier's descriptor) lets a process that did
** not inherit the queue open it through /proc/<pid>/fd/<fd> of a live
** holder (Linux), checked by inode and by the magic and nonce in the
** header, and the holder's notifier with it.
**
** Crash safety: every change is made under the mutex, first to bytes no
** published state refers to (the free part of the ring, or the part a grow
** adds), then published by one store that flips which of two state slots
** is current. A process killed at any point leaves the previous published
** state, which is whole; the next locker gets EOWNERDEAD and goes on from
** it. A killed putter's item was never published; a killed getter's item
** is still in the queue.
**
** For event loops, fileno() gives a notifier (fd.c, a pipe) that is readable
** whenever an item is there (and now and then when none is: a get then says
** "empty"). Until some process asks for it, put and get only test a flag.
** Once watched, the notifier is signalled under the lock before an empty
** queue's first item is published, and drained under the lock once the
** queue is found or left empty: at every instant a process may be killed,
** items there means the notifier is readable. Every holder has the
** notifier (made with the queue, inherited, or reopened with the file: a
** pipe can be reopened through /proc, an eventfd cannot), so a put in a
** process that received the queue wakes the watcher too.
*/
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <inttypes.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mproc.h"

/* ---------------------------------------------------------------------
** Portability: the file is fd.c's mp_shared_file. The ring's mapping grows
** with mremap on Linux, elsewhere by mapping it anew.
** --------------------------------------------------------------------- */
#if MP_LINUX
static void *remap(void *old, size_t oldsize, size_t size, int fd, off_t off) {
  (void)fd; (void)off;
  return mremap(old, oldsize, size, MREMAP_MAYMOVE);
}
#else
static void *remap(void *old, size_t oldsize, size_t size, int fd, off_t off) {
  void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, off);
  if (p != MAP_FAILED) munmap(old, oldsize);
  return p;
}
#endif

#define QUEUE_MT "mproc.QueueCore"  /* the handle under queue.lua's Queue */
#define Q_MAGIC 0x6d707175u                    /* "mpqu" */
#define RING_MIN ((uint64_t)64 * 1024)          /* a new or drained ring */
#define RING_SHRINK ((uint64_t)64 * 1024 * 1024) /* a drained ring above
                                                    this gives memory back */
#define SMALL_ITEM 4096            /* copied out to the C stack */
#define BUF_KEEP (4 * 1024 * 1024) /* a larger get buffer is not kept */
#define HANDOFF_MIN (64 * 1024)    /* a copy this long hands the lock over */
#define HANDOFF_MAX 0.002          /* seconds to wait for the taker */

typedef struct {
  uint64_t cap;        /* ring size; the file is at least this long */
  uint64_t head;       /* offset of the oldest record */
  uint64_t used;       /* bytes of records */
  int64_t count;       /* items */
  int64_t unfinished;  /* items put and not yet task_done */
} q_state;

typedef struct {
  uint32_t magic;        /* Q_MAGIC, set last when the queue is made */
  uint32_t kind;         /* the Lua class's number (queue.lua) */
  uint64_t nonce;        /* random: tells this queue from a reused inode */
  int32_t maker_pid;     /* the process that made it, and its descriptors */
  int32_t maker_fd, maker_nfd;
  uint32_t pad;
  uint64_t note_dev, note_ino;  /* the notifier pipe */
  pthread_mutex_t lock;
  q_state st[2];
  uint32_t cur;          /* st[cur] is the published state */
  uint32_t rseq, wseq;   /* bumped when items arrive / room or tasks end */
  uint32_t rwait, wwait; /* processes waiting on rseq / wseq */
  int64_t maxsize;       /* <= 0: unbounded */
  uint32_t watched;      /* fileno() was asked for: keep the notifier */
  uint32_t lwait;        /* processes blocked taking the lock (a hint) */
  uint32_t lseq;         /* bumped by each of them once it has the lock */
} q_shared;

typedef struct {
  q_shared *sh;   /* the header, page 0 of the file; NULL once closed */
  mp_notifier note;
  int fd;
  uint64_t dev, ino;  /* the file's, for tokens */
  char *map;      /* this process's mapping of the ring */
  size_t mapsize;
  char *buf;      /* where get copies an item out, to decode it unlocked */
  size_t bufsize;
  char tok[128];  /* the token, built for fork generation tokgen (0: none) */
  size_t toklen, idoff;
  unsigned tokgen;
} q_handle;

/* The header's size: one page, where the ring's mapping starts. */
static uint64_t hdr_size(void) {
  static uint64_t page = 0;
  if (page == 0) {
    page = (uint64_t)sysconf(_SC_PAGESIZE);
    while (page < sizeof(q_shared)) page *= 2;
  }
  return page;
}

static uint64_t record_size(size_t len) {
  return 8 + (((uint64_t)len + 7) & ~(uint64_t)7);
}

/* ---------------------------------------------------------------------
** The ring, under the lock
** --------------------------------------------------------------------- */

static q_state current(q_shared *sh) { return sh->st[sh->cur]; }

/* One store makes s the state: what came before it is in place. */
static void publish(q_shared *sh, const q_state *s) {
  uint32_t next = sh->cur ^ 1;
  sh->st[next] = *s;
  __atomic_store_n(&sh->cur, next, __ATOMIC_RELEASE);
}

/* Maps cap bytes of the ring in this process, in place of what it maps
** (nothing yet, in a received queue). 0 or an errno. */
static int map_ring(q_handle *h, uint64_t cap) {
  void *p;
  if (h->map == NULL)
    p = mmap(NULL, (size_t)cap, PROT_READ | PROT_WRITE, MAP_SHARED, h->fd, (off_t)hdr_size());
  else
    p = remap(h->map, h->mapsize, (size_t)cap, h->fd, (off_t)hdr_size());
  if (p == MAP_FAILED) return errno;
  h->map = (char *)p;
  h->mapsize = (size_t)cap;
  return 0;
}

/* Maps at least cap bytes of the ring in this process. 0 or an errno. */
static inline int ensure_map(q_handle *h, uint64_t cap) {
  return h->mapsize >= cap ? 0 : map_ring(h, cap);
}

static void ring_write(q_handle *h, const q_state *s, uint64_t off,
                       const char *src, size_t n) {
  uint64_t first = s->cap - off;
  if (first >= n) { memcpy(h->map + off, src, n); return; }
  memcpy(h->map + off, src, (size_t)first);
  memcpy(h->map, src + first, n - (size_t)first);
}

static void ring_read(q_handle *h, const q_state *s, uint64_t off, char *dst,
                      size_t n) {
  uint64_t first = s->cap - off;
  if (first >= n) { memcpy(dst, h->map + off, n); return; }
  memcpy(dst, h->map + off, (size_t)first);
  memcpy(dst + first, h->map, n - (size_t)first);
}

/* Makes room for need more bytes: a larger file, and the records that
** wrapped past the old end moved to the new end (into bytes no published
** state uses). Changes s only; the caller publishes. 0 or an errno. */
static int ring_grow(q_handle *h, q_state *s, uint64_t need) {
  uint64_t cap = s->cap * 2;
  int e;
  while (cap < s->used + need) cap *= 2;
  if (ftruncate(h->fd, (off_t)(hdr_size() + cap)) < 0) return errno;
  if ((e = ensure_map(h, cap)) != 0) return e;
  if (s->used > 0 && s->head + s->used > s->cap) {
    uint64_t part = s->cap - s->head;
    memcpy(h->map + cap - part, h->map + s->head, (size_t)part);
    s->head = cap - part;
  } else if (s->used == 0) {
    s->head = 0;
  }
  s->cap = cap;
  return 0;
}

/* Appends one record (the encoded value's two pieces) to s. 0 or errno. */
static int ring_put(q_handle *h, q_state *s, const mp_bytes *v) {
  size_t len = v->n[0] + v->n[1];
  uint64_t rec = record_size(len), tail, n64 = len;
  int e;
  if ((e = ensure_map(h, s->cap)) != 0) return e;
  if (s->cap - s->used < rec && (e = ring_grow(h, s, rec)) != 0) return e;
  tail = (s->head + s->used) % s->cap;
  memcpy(h->map + tail, &n64, 8);
  ring_write(h, s, (tail + 8) % s->cap, v->p[0], v->n[0]);
  if (v->n[1] > 0)
    ring_write(h, s, (tail + 8 + v->n[0]) % s->cap, v->p[1], v->n[1]);
  s->used += rec;
  s->count++;
  s->unfinished++;
  return 0;
}

/* Drops the oldest record from s; a drained ring starts again at 0, and a
** large one gives its memory back (the file shrinks before the lock is
** let go, so no grower can race it). */
static void ring_pop(q_handle *h, q_state *s, size_t len) {
  uint64_t rec = record_size(len);
  s->head = (s->head + rec) % s->cap;
  s->used -= rec;
  s->count--;
  if (s->count > 0) return;
  s->head = 0;
  s->used = 0;
  if (s->cap > RING_SHRINK) {
    s->cap = RING_MIN;
    publish(h->sh, s);
    if (ftruncate(h->fd, (off_t)(hdr_size() + RING_MIN)) < 0) { /* only memory is kept */ }
  }
}

/* Puts a record of len bytes back in front of the head of s (a get took
** it but had no memory to decode it). Changes s only; the caller
** publishes. 0 or an errno. */
static int ring_unget(q_handle *h, q_state *s, const char *p, size_t len) {
  uint64_t rec = record_size(len), n64 = len, head;
  int e;
  if ((e = ensure_map(h, s->cap)) != 0) return e;
  if (s->cap - s->used < rec && (e = ring_grow(h, s, rec)) != 0) return e;
  head = (s->head + s->cap - rec) % s->cap;
  memcpy(h->map + head, &n64, 8);
  ring_write(h, s, (head + 8) % s->cap, p, len);
  s->head = head;
  s->used += rec;
  s->count++;
  return 0;
}

/* ---------------------------------------------------------------------
** Locking and waiting
** --------------------------------------------------------------------- */

/* Takes one from *n unless it is 0 (the count of a killed process may
** have been taken already). */
static void count_down(uint32_t *n) {
  uint32_t v = __atomic_load_n(n, __ATOMIC_RELAXED);
  while (v > 0 && !__atomic_compare_exchange_n(n, &v, v - 1, 0,
                                               __ATOMIC_SEQ_CST, __ATOMIC_RELAXED)) {}
}

/* Locks the queue. Holders keep it only for a copy, and a holder that
** dies is recovered from (EOWNERDEAD), so this waits without deadline:
** "empty" and "full" then always mean just that. A locker that has to
** wait says so (lwait, lseq) for q_unlock_handoff. 0 or an errno. */
static int q_lock(q_handle *h) {
  q_shared *sh = h->sh;
  int r = mp_mutex_trylock(&sh->lock, NULL);
  while (r == EBUSY || r == ETIMEDOUT) {  /* said again each slice */
    __atomic_add_fetch(&sh->lwait, 1, __ATOMIC_SEQ_CST);
    r = mp_mutex_lock(NULL, &sh->lock, mp_slice_deadline(-1), NULL);
    count_down(&sh->lwait);
    if (r == 0) __atomic_add_fetch(&sh->lseq, 1, __ATOMIC_RELEASE);
  }
  return r;
}

static void q_unlock(q_handle *h) { mp_mutex_unlock(&h->sh->lock); }

/* Unlocks after a copy of n bytes. The mutex is not fair: a putter that
** locks again at once would starve a getter woken for it for as long as
** it puts (an unbounded queue then grows by everything put meanwhile).
** After a long copy, a process blocked on the lock gets it first: this
** waits until one has (at most HANDOFF_MAX: a count left by a killed
** waiter is then taken back). */
static void q_unlock_handoff(q_handle *h, size_t n) {
  q_shared *sh = h->sh;
  uint32_t seq;
  double until;
  if (n < HANDOFF_MIN || __atomic_load_n(&sh->lwait, __ATOMIC_SEQ_CST) == 0) {
    q_unlock(h);
    return;
  }
  seq = __atomic_load_n(&sh->lseq, __ATOMIC_ACQUIRE);
  q_unlock(h);
  until = mp_monotonic() + HANDOFF_MAX;
  while (__atomic_load_n(&sh->lseq, __ATOMIC_ACQUIRE) == seq) {
    if (mp_monotonic() > until) { count_down(&sh->lwait); break; }
    sched_yield();
  }
}

/* Called locked; waits for seq to move (or one slice), then locks again.
** 0 or an errno (ETIMEDOUT once the deadline passed; the lock is not held
** then). Ctrl-C may strike while it waits unlocked. */
static int q_wait(lua_State *L, q_handle *h, uint32_t *seq, uint32_t *waiters,
                  double deadline) {
  uint32_t seen;
  int r;
  __atomic_add_fetch(waiters, 1, __ATOMIC_SEQ_CST);
  seen = __atomic_load_n(seq, __ATOMIC_SEQ_CST);
  q_unlock(h);
  r = mp_seq_wait(seq, seen, deadline);
  __atomic_sub_fetch(waiters, 1, __ATOMIC_SEQ_CST);
  if (r == ETIMEDOUT) return r;
  mp_interrupt_point(L);
  return q_lock(h);
}

/* Called locked: whether anyone waits on the word; wake after unlocking. */
static int has_waiters(uint32_t *waiters) {
  return __atomic_load_n(waiters, __ATOMIC_SEQ_CST) > 0;
}

/* ---------------------------------------------------------------------
** Lua side
** --------------------------------------------------------------------- */

static q_handle *check_queue(lua_State *L) {
  q_handle *h = (q_handle *)mp_checkudata(L, 1, QUEUE_MT);
  if (h->sh == NULL) mp_error(L, "the queue is closed");
  return h;
}

/* nil, ifwait after a wait that timed out; nil, "what: reason", errno */
static int push_result(lua_State *L, int e, const char *ifwait,
                       const char *what) {
  if (e == ETIMEDOUT) {
    lua_pushnil(L);
    lua_pushstring(L, ifwait);
    return 2;
  }
  errno = e;
  return mp_fail(L, what);
}

/* ---------------------------------------------------------------------
** Making, reaching and letting go of queues
** --------------------------------------------------------------------- */

/* Lets go of what h holds in this process; safe on a half-made handle and
** twice. The queue lives on in the others. */
static void handle_release(q_handle *h) {
  if (h->map != NULL) { munmap(h->map, h->mapsize); h->map = NULL; }
  h->mapsize = 0;
  if (h->sh != NULL) { munmap(h->sh, (size_t)hdr_size()); h->sh = NULL; }
  if (h->fd >= 0) {
    mp_holders_drop(h->fd);
    close(h->fd);
    h->fd = -1;
  }
  mp_notifier_close(&h->note);
  free(h->buf);
  h->buf = NULL;
  h->bufsize = 0;
}

/* Pushes a handle that holds nothing yet (closed), so that nothing leaks
** when what follows fails. */
static q_handle *push_handle(lua_State *L) {
  q_handle *h = (q_handle *)lua_newuserdatauv(L, sizeof *h, 1);
  memset(h, 0, sizeof *h);
  h->fd = -1;
  h->note.rfd = h->note.wfd = -1;
  luaL_setmetatable(L, QUEUE_MT);
  return h;
}

/* Takes fd (a queue file) into h and maps its header. 0 or an errno. */
static int map_header(q_handle *h, int fd) {
  struct stat sb;
  void *p;
  h->fd = fd;
  if (fstat(fd, &sb) < 0) return errno;
  if ((uint64_t)sb.st_size < hdr_size() + RING_MIN) return ESTALE;
  h->dev = (uint64_t)sb.st_dev;
  h->ino = (uint64_t)sb.st_ino;
  p = mmap(NULL, (size_t)hdr_size(), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) return errno;
  h->sh = (q_shared *)p;
  return 0;
}

/* Fills in the new queue's header; the magic last. 0 or an errno. */
static int init_header(q_handle *h, lua_Integer maxsize, lua_Integer kind) {
  q_shared *sh = h->sh;
  struct stat nb;
  int e;
  if (fstat(h->note.rfd, &nb) < 0) return errno;
  if ((e = mp_mutex_init(&sh->lock)) != 0) return e;
  sh->st[0].cap = RING_MIN;
  sh->maxsize = maxsize;
  sh->kind = (uint32_t)kind;
  sh->nonce = mp_random64() | 1;
  sh->maker_pid = (int32_t)getpid();
  sh->maker_fd = h->fd;
  sh->maker_nfd = h->note.rfd;
  sh->note_dev = (uint64_t)nb.st_dev;
  sh->note_ino = (uint64_t)nb.st_ino;
  if ((e = ensure_map(h, RING_MIN)) != 0) return e;
  __atomic_store_n(&sh->magic, Q_MAGIC, __ATOMIC_RELEASE);
  return 0;
}

/* core.queue_new(maxsize, [kind]) -> handle, or nil, message, errno */
static int l_queue_new(lua_State *L) {
  lua_Integer maxsize = luaL_optinteger(L, 1, 0);
  lua_Integer kind = luaL_optinteger(L, 2, 0);
  q_handle *h = push_handle(L);
  int fd, e;
  if (mp_notifier_open(&h->note) < 0) return mp_fail(L, "cannot create a queue");
  if ((fd = mp_shared_file("mproc-queue")) < 0) return mp_fail(L, "cannot create a queue");
  if (ftruncate(fd, (off_t)(hdr_size() + RING_MIN)) < 0) {
    e = errno;
    close(fd);
    errno = e;
    return mp_fail(L, "cannot create a queue");
  }
  if ((e = map_header(h, fd)) != 0 || (e = init_header(h, maxsize, kind)) != 0) {
    handle_release(h);
    errno = e;
    return mp_fail(L, "cannot create a queue");
  }
  mp_holders_add(h->fd, h->note.rfd, h->dev, h->ino);
  return 1;
}

/* Opens into h the queue that process pid holds as descriptor fd (and its
** notifier as nfd; -1: wherever it holds it), if it is the one with that
** identity. 0, or an errno (h then holds nothing; a shortage of ours
** noted: mp_held_note). */
static int queue_reach(q_handle *h, pid_t pid, int fd, int nfd, uint64_t dev,
                       uint64_t ino, uint64_t nonce) {
  int f = mp_open_held(pid, fd, dev, ino), e;
  if (f < 0) return errno;
  if ((e = map_header(h, f)) != 0) goto fail;
  if (__atomic_load_n(&h->sh->magic, __ATOMIC_ACQUIRE) != Q_MAGIC || h->sh->nonce != nonce) {
    e = ESTALE;
    goto fail;
  }
  if (nfd < 0) nfd = mp_find_held(pid, h->sh->note_dev, h->sh->note_ino);
  if (mp_notifier_reach(&h->note, pid, nfd, h->sh->note_dev, h->sh->note_ino) < 0) {
    e = errno;
    goto fail;
  }
  mp_holders_add(h->fd, h->note.rfd, h->dev, h->ino);
  return 0;
fail:
  handle_release(h);
  mp_held_note(e);
  return e;
}

typedef struct { q_handle *h; uint64_t dev, ino, nonce; } queue_try;

/* mp_holders_reach's try: the queue at pid:fd (notifier aux), if it is t's. */
static int queue_try_holder(void *arg, pid_t pid, int fd, int aux) {
  queue_try *t = (queue_try *)arg;
  int e = queue_reach(t->h, pid, fd, aux, t->dev, t->ino, t->nonce);
  return e == 0 || mp_held_short() ? 0 : -1;   /* 0 also stops it */
}

/* Opens into h the queue t names from the token's candidates (the sender
** pid, the maker mpid, our parent, at the numbers in known), else from
** any live holder; stops at a shortage of ours. Whether it did. */
static int queue_reached(q_handle *h, queue_try *t, pid_t pid, pid_t mpid, int known[2][2]) {
  const pid_t pids[4] = { pid, mpid, getppid(), getppid() };
  int i;
  for (i = 0; i < 4 && !mp_held_short(); i++)
    if (queue_reach(h, pids[i], known[i % 2][0], known[i % 2][1], t->dev, t->ino, t->nonce) == 0)
      return 1;
  return !mp_held_short() &&
         mp_holders_reach(t->dev, t->ino, (const int(*)[2])known, 2, queue_try_holder, t) == 0 &&
         h->sh != NULL;
}

/* core.queue_open(token, kind) -> handle, or nil, why: the queue the
** token names, reached through a live process that holds it: the sender,
** the maker, or our parent (a sibling sender may have inherited it from
** it), else any live holder (holders.c); a shortage of ours (out of
** descriptors) stops the search. The ring is mapped on first use. */
static int l_queue_open(lua_State *L) {
  const char *token = luaL_checkstring(L, 1);
  lua_Integer kind = luaL_checkinteger(L, 2);
  unsigned long pid, mpid;
  unsigned fd, nfd, mfd, mnfd;
  uint64_t dev, ino, nonce;
  q_handle *h;
  queue_try t;
  int known[2][2];
  if (sscanf(token, "%lx:%x:%x:%lx:%x:%x:%" SCNx64 ":%" SCNx64 ":%" SCNx64, &pid, &fd, &nfd,
             &mpid, &mfd, &mnfd, &dev, &ino, &nonce) != 9) {
    lua_pushnil(L);
    lua_pushfstring(L, "malformed token '%s'", token);
    return 2;
  }
  h = push_handle(L);
  t.h = h;
  t.dev = dev;
  t.ino = ino;
  t.nonce = nonce;
  known[0][0] = (int)fd;
  known[0][1] = (int)nfd;
  known[1][0] = (int)mfd;
  known[1][1] = (int)mnfd;
  mp_held_clear();
  if (!queue_reached(h, &t, (pid_t)pid, (pid_t)mpid, known)) {
    lua_pushnil(L);
    mp_push_unreached(L, (pid_t)pid, (int)fd, (pid_t)mpid, (int)mfd);
    return 2;
  }
  if (h->sh->kind != (uint32_t)kind) {
    handle_release(h);
    lua_pushnil(L);
    lua_pushliteral(L, "the token names a queue of another kind");
    return 2;
  }
  return 1;
}

/* Checks the block flag and timeout at idx, idx+1: the deadline, 0 for
** "do not wait" (non-blocking, or a timeout that passed). */
static double opt_wait(lua_State *L, int idx) {
  int block = lua_isnoneornil(L, idx) || lua_toboolean(L, idx);
  double deadline = mp_opt_deadline(L, idx + 1);
  return block ? deadline : 0;
}

/* h:put(v, [block], [timeout]) -> true, or nil, "full", or nil, msg,
** errno. A value the codec cannot encode raises here, before the lock. */
static int m_queue_put(lua_State *L) {
  q_handle *h = check_queue(L);
  double deadline = opt_wait(L, 3);
  q_shared *sh = h->sh;
  mp_bytes v;
  q_state s;
  int e, wake;
  if (lua_isnone(L, 2))   /* queue.lua's put passes its arguments as they came */
    return mp_error(L, "bad argument #1 to 'put' (value expected)");
  mp_encode(L, 2, &v);
  if ((e = q_lock(h)) != 0) return push_result(L, e, "full", "cannot put on the queue");
  while (s = current(sh), sh->maxsize > 0 && s.count >= sh->maxsize)
    if ((e = q_wait(L, h, &sh->wseq, &sh->wwait, deadline)) != 0)
      return push_result(L, e, "full", "cannot put on the queue");
  if (sh->watched && s.count == 0) mp_notifier_signal(&h->note);
  if ((e = ring_put(h, &s, &v)) != 0) {
    q_unlock(h);
    return push_result(L, e, "full", "cannot put on the queue");
  }
  publish(sh, &s);
  wake = has_waiters(&sh->rwait);
  q_unlock_handoff(h, v.n[0] + v.n[1]);
  if (wake) mp_seq_wake(&sh->rseq);
  lua_pushboolean(L, 1);
  return 1;
}

/* Called locked: the buffer for an item of len bytes (NULL: no memory). */
static char *item_buffer(q_handle *h, size_t len) {
  if (h->bufsize < len) {
    char *b = (char *)realloc(h->buf, len);
    if (b == NULL) return NULL;
    h->buf = b;
    h->bufsize = len;
  }
  return h->buf;
}

/* A get that took an item and then had no memory to decode it puts it
** back at the head: nothing is lost and a later get has it. (It is not in
** order with items other processes got meanwhile, and a bounded queue may
** hold one item over maxsize until then.) 0 or an errno. */
static int put_back(q_handle *h, const char *p, size_t len) {
  q_shared *sh = h->sh;
  q_state s;
  int e, wake;
  if (sh == NULL) return EBADF;    /* closed by Lua code the decode ran */
  if ((e = q_lock(h)) != 0) return e;
  s = current(sh);
  if (sh->watched && s.count == 0) mp_notifier_signal(&h->note);
  if ((e = ring_unget(h, &s, p, len)) == 0) publish(sh, &s);
  wake = e == 0 && has_waiters(&sh->rwait);
  q_unlock(h);
  if (wake) mp_seq_wake(&sh->rseq);
  return e;
}

/* Decodes the item taken into p and pushes it, as get's results. The
** decode raises nothing, so the buffer (detached from h meanwhile: a close
** from Lua code the decode runs is safe) always comes back or is freed;
** out of memory, or cut short by Ctrl-C (lua.c's hook fires in the
** decoder's protected call), the item goes back on the queue. */
static int decode_item(lua_State *L, q_handle *h, char *p, size_t len,
                       size_t cap) {
  int st = mp_decode_status(L, p, len), e = 0;
  int interrupted = st == LUA_ERRRUN && mp_is_interrupt(L, -1);
  if (st == LUA_ERRMEM || interrupted) e = put_back(h, p, len);
  if (cap > 0) {
    if (h->buf == NULL && h->sh != NULL && cap <= BUF_KEEP) {
      h->buf = p;
      h->bufsize = cap;
    } else {
      free(p);
    }
  }
  if (st == LUA_OK) return 1;
  if (interrupted) return lua_error(L);   /* as it came; the item is queued */
  if (st == LUA_ERRMEM && e == 0) {
    errno = ENOMEM;
    return mp_fail(L, "cannot get from the queue");
  }
  if (st == LUA_ERRMEM)
    return mp_error(L, "cannot get from the queue: not enough memory, and "
                    "the item could not be put back: %s", strerror(e));
  return mp_error(L, "cannot decode a queue item: %s", luaL_tolstring(L, -1, NULL));
}

/* Called locked with an item at the head of s: copies it out, publishes,
** unlocks, and pushes it decoded (a decode runs Lua code: never locked).
** No buffer for it: nil, message, ENOMEM, and the item stays queued. */
static int take_head(lua_State *L, q_handle *h, q_state *s) {
  q_shared *sh = h->sh;
  char small[SMALL_ITEM], *p = small;
  uint64_t n64;
  size_t len, cap = 0;
  int wake;
  memcpy(&n64, h->map + s->head, 8);
  len = (size_t)n64;
  if (len > SMALL_ITEM && (p = item_buffer(h, len)) == NULL) {
    q_unlock(h);
    return push_result(L, ENOMEM, "", "cannot get from the queue");
  }
  ring_read(h, s, (s->head + 8) % s->cap, p, len);
  ring_pop(h, s, len);
  publish(sh, s);
  if (sh->watched && s->count == 0) mp_notifier_drain(&h->note);
  wake = has_waiters(&sh->wwait);
  q_unlock_handoff(h, len);
  if (wake) mp_seq_wake(&sh->wseq);
  if (p != small) {
    cap = h->bufsize;
    h->buf = NULL;
    h->bufsize = 0;
  }
  return decode_item(L, h, p, len, cap);
}

/* h:get([block], [timeout]) -> v, or nil, "empty", or nil, msg, errno */
static int m_queue_get(lua_State *L) {
  q_handle *h = check_queue(L);
  double deadline = opt_wait(L, 2);
  q_shared *sh = h->sh;
  q_state s;
  int e;
  if ((e = q_lock(h)) != 0) return push_result(L, e, "empty", "cannot get from the queue");
  while (s = current(sh), s.count == 0) {
    if (sh->watched) mp_notifier_drain(&h->note);
    if ((e = q_wait(L, h, &sh->rseq, &sh->rwait, deadline)) != 0)
      return push_result(L, e, "empty", "cannot get from the queue");
  }
  if ((e = ensure_map(h, s.cap)) != 0) {
    q_unlock(h);
    return push_result(L, e, "empty", "cannot get from the queue");
  }
  return take_head(L, h, &s);
}

/* h:qsize() -> the number of items */
static int m_queue_qsize(lua_State *L) {
  q_handle *h = check_queue(L);
  q_state s;
  int e = q_lock(h);
  if (e != 0) return push_result(L, e, "timeout", "cannot use the queue");
  s = current(h->sh);
  if (h->sh->watched && s.count == 0) mp_notifier_drain(&h->note);
  q_unlock(h);
  lua_pushinteger(L, (lua_Integer)s.count);
  lua_pushinteger(L, (lua_Integer)h->sh->maxsize);
  return 2;
}

/* h:task_done() -> true; raises when called more times than items put */
static int m_queue_task_done(lua_State *L) {
  q_handle *h = check_queue(L);
  q_shared *sh = h->sh;
  q_state s;
  int e = q_lock(h), wake;
  if (e != 0) return push_result(L, e, "timeout", "cannot use the queue");
  s = current(sh);
  if (s.unfinished <= 0) {
    q_unlock(h);
    return mp_error(L, "task_done() called more times than items were put");
  }
  s.unfinished--;
  publish(sh, &s);
  wake = s.unfinished == 0 && has_waiters(&sh->wwait);
  q_unlock(h);
  if (wake) mp_seq_wake(&sh->wseq);
  lua_pushboolean(L, 1);
  return 1;
}

/* h:join([timeout]) -> true, or nil, "timeout" */
static int m_queue_join(lua_State *L) {
  q_handle *h = check_queue(L);
  double deadline = mp_opt_deadline(L, 2);
  q_shared *sh = h->sh;
  int e = q_lock(h);
  if (e != 0) return push_result(L, e, "timeout", "cannot use the queue");
  while (current(sh).unfinished > 0)
    if ((e = q_wait(L, h, &sh->wseq, &sh->wwait, deadline)) != 0)
      return push_result(L, e, "timeout", "cannot use the queue");
  q_unlock(h);
  lua_pushboolean(L, 1);
  return 1;
}

/* h:fileno() -> a descriptor readable while an item may be there */
static int m_queue_fileno(lua_State *L) {
  q_handle *h = check_queue(L);
  int e = q_lock(h);
  if (e != 0) return push_result(L, e, "", "cannot use the queue");
  if (!h->sh->watched) {
    h->sh->watched = 1;
    if (current(h->sh).count > 0) mp_notifier_signal(&h->note);
  }
  q_unlock(h);
  lua_pushinteger(L, h->note.rfd);
  return 1;
}

/* __gc, __close and close(): lets go of this process's share; the queue
** lives on in the others. */
static int m_queue_close(lua_State *L) {
  handle_release((q_handle *)mp_checkudata(L, 1, QUEUE_MT));
  return 0;
}

/* Bumped in a child after each fork: a token cached in an earlier
** generation names the parent as its sender. */
static unsigned fork_gen = 1;
static void after_fork_child(void) { fork_gen++; }

/* Builds h's token (pid:fd:nfd of this process and of the maker,
** dev:ino:nonce, in hex) into h->tok, for this generation. */
static void build_token(q_handle *h) {
  q_shared *sh = h->sh;
  int n = snprintf(h->tok, sizeof h->tok, "%lx:%x:%x:%lx:%x:%x:", (unsigned long)getpid(),
                   (unsigned)h->fd, (unsigned)h->note.rfd, (unsigned long)sh->maker_pid,
                   (unsigned)sh->maker_fd, (unsigned)sh->maker_nfd);
  h->idoff = (size_t)n;
  n += snprintf(h->tok + n, sizeof h->tok - (size_t)n, "%" PRIx64 ":%" PRIx64 ":%" PRIx64,
                h->dev, h->ino, sh->nonce);
  h->toklen = (size_t)n;
  h->tokgen = fork_gen;
}

/* h:token([id]) -> the token naming the queue, or with id its last part
** (dev:ino:nonce), the same in every process: what queue.lua finds its
** queues by. nil when closed. Sending is frequent: the token is kept, as
** a string too (the handle's user value). */
static int m_queue_token(lua_State *L) {
  q_handle *h = (q_handle *)mp_checkudata(L, 1, QUEUE_MT);
  if (h->sh == NULL) return 0;
  if (lua_toboolean(L, 2)) {
    if (h->tokgen != fork_gen) build_token(h);
    lua_pushlstring(L, h->tok + h->idoff, h->toklen - h->idoff);
    return 1;
  }
  if (h->tokgen == fork_gen && lua_getiuservalue(L, 1, 1) == LUA_TSTRING) return 1;
  build_token(h);
  lua_pushlstring(L, h->tok, h->toklen);
  lua_pushvalue(L, -1);
  lua_setiuservalue(L, 1, 1);
  return 1;
}

static int m_queue_closed(lua_State *L) {
  q_handle *h = (q_handle *)mp_checkudata(L, 1, QUEUE_MT);
  lua_pushboolean(L, h->sh == NULL);
  return 1;
}

static int m_queue_tostring(lua_State *L) {
  q_handle *h = (q_handle *)mp_checkudata(L, 1, QUEUE_MT);
  if (h->sh == NULL)
    lua_pushliteral(L, QUEUE_MT " (closed)");
  else
    lua_pushfstring(L, QUEUE_MT " (%p)", (void *)h->sh);
  return 1;
}

static const luaL_Reg queue_methods[] = {
  {"put", m_queue_put},
  {"get", m_queue_get},
  {"qsize", m_queue_qsize},
  {"task_done", m_queue_task_done},
  {"join", m_queue_join},
  {"close", m_queue_close},
  {"closed", m_queue_closed},
  {"fileno", m_queue_fileno},
  {"token", m_queue_token},
  {NULL, NULL}
};

static const luaL_Reg queue_meta[] = {
  {"__gc", m_queue_close},
  {"__close", m_queue_close},
  {"__tostring", m_queue_tostring},
  {NULL, NULL}
};

/* __mproc_recv of the three classes until mproc.queue is loaded (it is
** loaded on first use, maybe after this process was forked): loads it,
** which registers the classes, and hands the token to the class's own. */
static int l_recv_first(lua_State *L) {
  const char *name = lua_tostring(L, lua_upvalueindex(1));
  lua_settop(L, 1);
  mp_require_layer(L, "mproc.queue");
  if (lua_getfield(L, LUA_REGISTRYINDEX, name) != LUA_TTABLE ||
      lua_getfield(L, -1, "__mproc_recv") != LUA_TFUNCTION ||
      lua_tocfunction(L, -1) == l_recv_first)
    return luaL_error(L, "mproc.queue did not register %s", name);
  lua_pushvalue(L, 1);
  lua_call(L, 1, 1);
  return 1;
}

/* Registers where the codec looks for them (codec.c's decode_mproc) the
** three classes' names, with l_recv_first, unless queue.lua has. */
static void register_classes(lua_State *L) {
  static const char *const names[] = {"mproc.Queue", "mproc.SimpleQueue",
                                      "mproc.JoinableQueue", NULL};
  int i;
  for (i = 0; names[i] != NULL; i++) {
    if (lua_getfield(L, LUA_REGISTRYINDEX, names[i]) == LUA_TNIL) {
      lua_createtable(L, 0, 2);
      lua_pushstring(L, names[i]);
      lua_setfield(L, -2, "__name");
      lua_pushstring(L, names[i]);
      lua_pushcclosure(L, l_recv_first, 1);
      lua_setfield(L, -2, "__mproc_recv");
      lua_setfield(L, LUA_REGISTRYINDEX, names[i]);
    }
    lua_pop(L, 1);
  }
}

void mp_open_queue(lua_State *L) {
  static int atfork_done = 0;
  if (!atfork_done) { atfork_done = 1; pthread_atfork(NULL, NULL, after_fork_child); }
  mp_type(L, QUEUE_MT, queue_meta, queue_methods, NULL);
  register_classes(L);
  lua_pushcfunction(L, l_queue_new);
  lua_setfield(L, -2, "queue_new");
  lua_pushcfunction(L, l_queue_open);
  lua_setfield(L, -2, "queue_open");
}
