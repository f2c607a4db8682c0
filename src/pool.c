/*
** pool.c: the task board of mproc.Pool.
**
** One anonymous shared mapping, made before the workers fork, holds:
**   - a header: the futex sequence word, the waiter count, the claim
**     ring's head (advanced by workers) and tail (advanced by the parent);
**   - slots: {state, task id, payload position, length, item count}; a slot is FREE,
**     QUEUED, or CLAIMED+w (worker w took it);
**   - the claim ring: slot numbers in the order the parent published them;
**   - the data ring: payload records {len, flags} + bytes (MAP_NORESERVE:
**     only touched pages cost memory).
** The parent is the only writer of tasks: it copies the payload, fills the
** slot, publishes it (state QUEUED, release), then the ring entry and the
** tail; it wakes workers only when some wait.  A worker claims a task by a
** compare-and-swap of its slot from QUEUED to CLAIMED+w, so the claim
** itself records who took it: a worker killed at any instruction leaves
** either a QUEUED slot (another worker takes it) or a slot CLAIMED by a
** dead worker, which the parent fails.  Workers never free anything.
**
** Results come back on one pipe per worker, in frames
**   {u32 length, u32 slot, i64 task id, u32 count, u32 flags} + payload,
** the payload a slice of count values as core.dumps(t, 1, count) encodes
** it.  The parent reads them without blocking and decodes them here, into
** tables with n = count, except a frame flagged ITEMS (a map chunk's
** items, which pool.lua decodes straight into the map's list): its bytes
** are passed on.  A slot is freed when its result arrives, or when the parent takes back a task no worker has claimed
** (cancel, by the same compare-and-swap from QUEUED), and data-ring space
** is reclaimed in order.
*/
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "mproc.h"

/* ---------------------------------------------------------------------
** Portability: a worker asks to be killed with its parent on Linux; on
** other systems it notices within a wait period (getppid changes).
** --------------------------------------------------------------------- */
#if MP_LINUX
#include <sys/prctl.h>
static void die_with_parent(void) { prctl(PR_SET_PDEATHSIG, SIGKILL); }
static int parent_gone(pid_t parent) { (void)parent; return 0; }  /* killed */
#else
static void die_with_parent(void) {}
static int parent_gone(pid_t parent) { return getppid() != parent; }
#endif

/* ---------------------------------------------------------------------
** Portability: board:fileno() is an epoll descriptor over the workers'
** result pipes and sentinels (Linux); elsewhere there is none.
** --------------------------------------------------------------------- */
#if MP_LINUX
#include <sys/epoll.h>
static int watch_open(void) { return epoll_create1(EPOLL_CLOEXEC); }
static void watch_fd(int ep, int fd, int add) {
  struct epoll_event ev;
  if (ep < 0 || fd < 0) return;
  memset(&ev, 0, sizeof ev);
  ev.events = EPOLLIN;
  epoll_ctl(ep, add ? EPOLL_CTL_ADD : EPOLL_CTL_DEL, fd, &ev);
}
#else
static int watch_open(void) { errno = ENOSYS; return -1; }
static void watch_fd(int ep, int fd, int add) { (void)ep; (void)fd; (void)add; }
#endif

/* A result pipe of 1 MiB where the system allows: a worker can finish a
** map chunk and take the next while the parent is still submitting,
** instead of blocking on a 64 KiB pipe. */
static int board_pipe(int fds[2]) {
  if (mp_cloexec_pipe(fds) < 0) return -1;
  mp_grow_pipe(fds[1]);
  return 0;
}

#define BOARD_MT "mproc.Board"
#define SLOT_FREE 0u
#define SLOT_QUEUED 1u
#define SLOT_CLAIMED 2u            /* + worker index */
#define REC_FREED 1u
#define REC_PAD 2u
#define REC_HDR 8u
#define FRAME_HDR 24u
#define FRAME_ITEMS 1u             /* frame flag: the payload is a chunk's items */
#define IDLE_PERIOD 0.5            /* s between parent checks of a waiting worker */
#define SOFT_LAP ((uint64_t)1 << 20) /* wrap early past this when the start is free */
#define READ_CHUNK 65536
#define READ_BUDGET ((size_t)4 << 20)
#define MAX_WORKERS 4096           /* core.POOL_MAX_WORKERS, checked by Pool() */
#define FEW_WORKERS 32             /* collect polls these on the C stack */
#define BOARD_PAGE 4096            /* core.POOL_BOARD_PAGE: a board's data size is a multiple */
#define MAX_BOARD ((lua_Integer)1 << 40) /* core.POOL_MAX_BOARD, checked by Pool() */

typedef struct {
  uint32_t state;
  uint32_t len;
  uint64_t pos;                    /* data-ring position of the record */
  int64_t task;
  uint32_t count;                  /* items in a map chunk (its list may end in nils) */
} board_slot;

typedef struct {
  uint32_t seq;                    /* futex word */
  uint32_t waiters;
  uint32_t shutdown;
  uint32_t nslots;
  char pad1[48];
  uint64_t head;                   /* next ring position to claim */
  char pad2[56];
  uint64_t tail;                   /* next ring position to publish */
  char pad3[56];
} board_shared;

typedef struct {
  int rfd, wfd;                    /* result pipe; parent keeps rfd */
  int sentinel;                    /* the worker's mproc.Child fd, not owned */
  char *buf;                       /* partial frames read so far */
  size_t len, cap;
  lua_Integer results;             /* results received from this worker */
  int eof;                         /* its pipe is at end of file: the worker is ending */
} board_worker;

typedef struct {
  board_shared *sh;                /* NULL once closed */
  size_t maplen;
  uint32_t *ring;
  board_slot *slots;
  char *data;
  uint64_t dsize, dhead, dtail;    /* data ring (parent only) */
  uint32_t *freelist, nfree;       /* free slots (parent only) */
  int nworkers;
  pid_t parent;
  int watch;                       /* fileno()'s descriptor, -1: none yet */
  mp_notifier again;               /* in watch: results taken in, not asked about */
  int again_on;                    /* whether again is signalled */
  board_worker *w;
} board;

/* ---------------------------------------------------------------------
** Creation and release
** --------------------------------------------------------------------- */

static board *check_board(lua_State *L) {
  board *b = (board *)mp_checkudata(L, 1, BOARD_MT);
  if (b->sh == NULL) luaL_error(L, "the pool's task board is closed");
  return b;
}

static void close_fd(int *fd) {
  if (*fd >= 0) { close(*fd); *fd = -1; }
}

static int m_board_close(lua_State *L) {
  board *b = (board *)mp_checkudata(L, 1, BOARD_MT);
  int i;
  if (b->w) {
    for (i = 0; i < b->nworkers; i++) {
      close_fd(&b->w[i].rfd);
      close_fd(&b->w[i].wfd);
      free(b->w[i].buf);
      b->w[i].buf = NULL;
    }
    free(b->w);
    b->w = NULL;
  }
  free(b->freelist);
  b->freelist = NULL;
  close_fd(&b->watch);
  mp_notifier_close(&b->again);
  if (b->sh) { mp_shm_free(b->sh, b->maplen); b->sh = NULL; }
  return 0;
}

static size_t align8(size_t n) { return (n + 7) & ~(size_t)7; }

static void board_layout(board *b, uint32_t nslots) {
  char *base = (char *)b->sh;
  size_t off = align8(sizeof(board_shared));
  b->slots = (board_slot *)(base + off);
  off += align8(nslots * sizeof(board_slot));
  b->ring = (uint32_t *)(base + off);
  off += align8(nslots * sizeof(uint32_t));
  off = (off + 4095) & ~(size_t)4095;
  b->data = base + off;
}

static int board_alloc(board *b, int nworkers, uint32_t nslots, size_t dsize) {
  uint32_t i;
  size_t meta = align8(sizeof(board_shared)) + align8(nslots * sizeof(board_slot)) +
                align8(nslots * sizeof(uint32_t));
  b->w = (board_worker *)calloc((size_t)nworkers, sizeof(board_worker));
  b->freelist = (uint32_t *)malloc(nslots * sizeof(uint32_t));
  if (b->w == NULL || b->freelist == NULL) return -1;
  for (i = 0; i < (uint32_t)nworkers; i++)
    b->w[i].rfd = b->w[i].wfd = b->w[i].sentinel = -1;
  b->nworkers = nworkers;
  b->maplen = ((meta + 4095) & ~(size_t)4095) + dsize;
  if ((b->sh = (board_shared *)mp_shm_reserve(b->maplen)) == NULL) return -1;
  b->sh->nslots = nslots;
  board_layout(b, nslots);
  b->dsize = dsize;
  for (i = 0; i < nslots; i++) b->freelist[i] = nslots - 1 - i;
  b->nfree = nslots;
  return 0;
}

/* core.pool_board(nworkers, nslots, data_bytes) -> board */
static int l_board_new(lua_State *L) {
  lua_Integer nw = luaL_checkinteger(L, 1);
  lua_Integer ns = luaL_checkinteger(L, 2);
  lua_Integer ds = luaL_checkinteger(L, 3);
  board *b;
  luaL_argcheck(L, nw >= 1 && nw <= MAX_WORKERS, 1, "worker count out of range");
  luaL_argcheck(L, ns >= 1 && ns <= (1 << 20), 2, "slot count out of range");
  luaL_argcheck(L, ds >= BOARD_PAGE && ds % BOARD_PAGE == 0 && ds <= MAX_BOARD, 3,
                "data size must be a multiple of 4096");
  b = (board *)lua_newuserdatauv(L, sizeof *b, 0);
  memset(b, 0, sizeof *b);
  b->watch = b->again.rfd = b->again.wfd = -1;
  b->parent = getpid();
  luaL_setmetatable(L, BOARD_MT);
  if (board_alloc(b, (int)nw, (uint32_t)ns, (size_t)ds) < 0)
    return mp_fail(L, "cannot create the pool's task board");
  return 1;
}

/* ---------------------------------------------------------------------
** The data ring (parent only)
** --------------------------------------------------------------------- */

static uint32_t *rec_at(board *b, uint64_t pos) {
  return (uint32_t *)(b->data + pos % b->dsize);
}

/* Reserves a record for len bytes; 0 when the ring has no room now. */
static int data_alloc(board *b, size_t len, uint64_t *pos) {
  uint64_t need = REC_HDR + align8(len), off, used;
  if (b->dhead == b->dtail && b->dtail % b->dsize != 0)
    b->dhead = b->dtail = (b->dtail / b->dsize + 1) * b->dsize;
  off = b->dtail % b->dsize;
  used = b->dtail - b->dhead;
  if (off != 0 && (off + need > b->dsize || off >= SOFT_LAP)) {
    uint64_t pad = b->dsize - off;
    if (used + pad + need <= b->dsize) {
      uint32_t *r = rec_at(b, b->dtail);
      r[0] = (uint32_t)(pad - REC_HDR);
      r[1] = REC_PAD | REC_FREED;
      b->dtail += pad;
      used += pad;
    } else if (off + need > b->dsize) {
      return 0;
    }
  }
  if (used + need > b->dsize) return 0;
  *pos = b->dtail;
  rec_at(b, *pos)[0] = (uint32_t)len;
  rec_at(b, *pos)[1] = 0;
  b->dtail += need;
  return 1;
}

static void data_reclaim(board *b) {
  while (b->dhead < b->dtail) {
    uint32_t *r = rec_at(b, b->dhead);
    if (!(r[1] & REC_FREED)) break;
    b->dhead += REC_HDR + align8(r[0]);
  }
}

/* Slot s is FREE already: its record and the slot go back for reuse. */
static void slot_release(board *b, uint32_t s) {
  rec_at(b, b->slots[s].pos)[1] |= REC_FREED;
  b->freelist[b->nfree++] = s;
  data_reclaim(b);
}

static void slot_free(board *b, uint32_t s) {
  __atomic_store_n(&b->slots[s].state, SLOT_FREE, __ATOMIC_RELEASE);
  slot_release(b, s);
}

/* ---------------------------------------------------------------------
** The parent's side: publish, collect, fail
** --------------------------------------------------------------------- */

/* A task published alone needs one taker: waking every waiting worker
** woke ones that found nothing and slept again, each a context switch
** taken from the parent and the worker that runs the task (a fifth of
** apply_async + get's CPU, measured).  A woken worker that dies before it
** claims leaves the task to the next that looks: the others re-check
** every IDLE_PERIOD, its replacement at once.  all: a batch (board:wake). */
static void wake_workers(board *b, int all) {
  if (__atomic_load_n(&b->sh->waiters, __ATOMIC_SEQ_CST) == 0) return;
  if (all) mp_seq_wake(&b->sh->seq);
  else mp_seq_wake_one(&b->sh->seq);
}

/* board:room() -> the largest head + body a task may have */
static int m_board_room(lua_State *L) {
  board *b = check_board(L);
  size_t room = b->dsize - REC_HDR - 4;
  lua_pushinteger(L, (lua_Integer)(room < UINT32_MAX - 4 ? room : UINT32_MAX - 4));
  return 1;
}

/* board:put(task_id, head, body, [count], [later]) -> true, or false while
** the board is full; later: wake no worker yet (board:wake() will: a map
** publishes all its chunks, then wakes the workers once, so that a woken
** worker does not take the parent's processor while it still publishes).  The record holds {u32 #head, head, body}; take() splits
** it and gives count back.  Head and body are opaque here: what is in them
** (a kind byte, the function, the arguments) is defined once, in pool.lua's
** "Task heads". */
static int m_board_put(lua_State *L) {
  board *b = check_board(L);
  lua_Integer id = luaL_checkinteger(L, 2);
  size_t hlen, blen, len;
  const char *h = luaL_checklstring(L, 3, &hlen);
  const char *s = luaL_checklstring(L, 4, &blen);
  lua_Integer count = luaL_optinteger(L, 5, 0);
  uint64_t pos, tail = b->sh->tail;
  uint32_t slot, h32 = (uint32_t)hlen;
  char *dst;
  luaL_argcheck(L, count >= 0 && count <= UINT32_MAX, 5, "item count out of range");
  len = 4 + hlen + blen;
  if (len > b->dsize - REC_HDR || len > UINT32_MAX)
    return luaL_error(L, "a task of %I bytes does not fit the pool's board "
                      "(%I bytes)", (lua_Integer)len, (lua_Integer)(b->dsize - REC_HDR));
  if (b->nfree == 0 || tail - __atomic_load_n(&b->sh->head, __ATOMIC_ACQUIRE) >=
                           b->sh->nslots || !data_alloc(b, len, &pos)) {
    lua_pushboolean(L, 0);
    return 1;
  }
  dst = b->data + pos % b->dsize + REC_HDR;
  memcpy(dst, &h32, 4);
  memcpy(dst + 4, h, hlen);
  memcpy(dst + 4 + hlen, s, blen);
  slot = b->freelist[--b->nfree];
  b->slots[slot].task = id;
  b->slots[slot].pos = pos;
  b->slots[slot].len = (uint32_t)len;
  b->slots[slot].count = (uint32_t)count;
  __atomic_store_n(&b->slots[slot].state, SLOT_QUEUED, __ATOMIC_RELEASE);
  b->ring[tail % b->sh->nslots] = slot;
  __atomic_store_n(&b->sh->tail, tail + 1, __ATOMIC_SEQ_CST);
  if (!lua_toboolean(L, 6)) wake_workers(b, 0);
  lua_pushboolean(L, 1);
  return 1;
}

/* board:wake(): wakes the waiting workers, after puts told not to */
static int m_board_wake(lua_State *L) {
  wake_workers(check_board(L), 1);
  return 0;
}

static board_worker *check_worker(lua_State *L, board *b, int idx) {
  lua_Integer w = luaL_checkinteger(L, idx);
  luaL_argcheck(L, w >= 1 && w <= b->nworkers, idx, "no such worker");
  return &b->w[w - 1];
}

/* board:open_worker(w): a fresh result pipe for worker w (before fork) */
static int m_board_open_worker(lua_State *L) {
  board *b = check_board(L);
  board_worker *wk = check_worker(L, b, 2);
  int fds[2];
  watch_fd(b->watch, wk->rfd, 0);
  watch_fd(b->watch, wk->sentinel, 0);
  close_fd(&wk->rfd);
  close_fd(&wk->wfd);
  wk->len = 0;
  wk->results = 0;
  wk->eof = 0;
  wk->sentinel = -1;
  if (board_pipe(fds) < 0) return mp_fail(L, "cannot open a pipe for a pool worker");
  fcntl(fds[0], F_SETFL, fcntl(fds[0], F_GETFL) | O_NONBLOCK);
  wk->rfd = fds[0];
  wk->wfd = fds[1];
  lua_pushboolean(L, 1);
  return 1;
}

/* board:started(w, sentinel_fd): in the parent, after the fork */
static int m_board_started(lua_State *L) {
  board *b = check_board(L);
  board_worker *wk = check_worker(L, b, 2);
  wk->sentinel = (int)luaL_checkinteger(L, 3);
  close_fd(&wk->wfd);
  watch_fd(b->watch, wk->rfd, 1);
  watch_fd(b->watch, wk->sentinel, 1);
  return 0;
}

/* board:drop_worker(w): the parent forgets worker w (ended, not replaced) */
static int m_board_drop_worker(lua_State *L) {
  board *b = check_board(L);
  board_worker *wk = check_worker(L, b, 2);
  watch_fd(b->watch, wk->rfd, 0);
  watch_fd(b->watch, wk->sentinel, 0);
  close_fd(&wk->rfd);
  close_fd(&wk->wfd);
  wk->sentinel = -1;
  wk->len = 0;
  return 0;
}

/* board:fileno() -> a descriptor readable when a worker has sent
** results or ended, or while the pool holds results no one has asked about
** since they came (board:again), made on first use, in the parent; nil,
** message, errno when it cannot be made */
static int m_board_fileno(lua_State *L) {
  board *b = check_board(L);
  int i;
  if (b->watch < 0) {
    if ((b->watch = watch_open()) < 0)
      return mp_fail(L, "cannot make a descriptor for the pool's results");
    if (mp_notifier_open(&b->again) < 0) {
      close_fd(&b->watch);
      return mp_fail(L, "cannot make a descriptor for the pool's results");
    }
    watch_fd(b->watch, b->again.rfd, 1);
    if (b->again_on) mp_notifier_signal(&b->again);
    for (i = 0; i < b->nworkers; i++) {
      if (b->w[i].sentinel < 0) continue;   /* not started */
      watch_fd(b->watch, b->w[i].rfd, 1);
      watch_fd(b->watch, b->w[i].sentinel, 1);
    }
  }
  lua_pushinteger(L, b->watch);
  return 1;
}

/* board:again(on): keeps fileno() readable (on) or not for results the
** pool took in and no one has asked about: the pump that takes them in
** drains the pipes that told of them. Costs a system call only when it
** changes, and only once fileno() was asked for. Only in the parent: a
** forked copy's ask (a Process handed a result) shares the pipe, and its
** drain would lose the parent's wake-up, its signal leave it readable. */
static int m_board_again(lua_State *L) {
  board *b = check_board(L);
  int on = lua_toboolean(L, 2);
  if (getpid() != b->parent) return 0;
  if (on != b->again_on && b->again.rfd >= 0) {
    if (on) mp_notifier_signal(&b->again);
    else mp_notifier_drain(&b->again);
  }
  b->again_on = on;
  return 0;
}

/* Reads what worker wk has sent, up to a budget; 0 or -1 (error). */
static int read_available(board_worker *wk) {
  size_t got = 0;
  while (got < READ_BUDGET) {
    ssize_t r;
    if (wk->cap - wk->len < READ_CHUNK) {
      size_t ncap = wk->cap ? wk->cap * 2 : 2 * READ_CHUNK;
      char *nb = (char *)realloc(wk->buf, ncap);
      if (nb == NULL) return -1;
      wk->buf = nb;
      wk->cap = ncap;
    }
    r = read(wk->rfd, wk->buf + wk->len, wk->cap - wk->len);
    if (r > 0) {
      wk->len += (size_t)r;
      got += (size_t)r;
      if (wk->len < wk->cap) break;     /* the pipe is empty: no EAGAIN read */
      continue;
    }
    if (r < 0 && errno == EINTR) continue;
    if (r == 0) wk->eof = 1;
    break;                              /* EAGAIN, EOF */
  }
  return 0;
}

/* Pushes the result in frame payload p (n bytes, count values) onto the
** stack: {values..., n = count}, or {false, message, n = 2} when it cannot
** be decoded; a chunk's items (flags ITEMS) as their bytes. Returns 0, with
** the error pushed instead, when Ctrl-C cut the decode short (lua.c's hook
** fires in the decoder's protected call): the bytes are not at fault. */
static int push_result(lua_State *L, const char *p, uint32_t n, uint32_t count,
                       uint32_t flags) {
  int ok;
  if (flags & FRAME_ITEMS) {
    lua_pushlstring(L, p, n);
    return 1;
  }
  ok = mp_decode(L, p, n);
  if (!ok && mp_is_interrupt(L, -1)) return 0;
  if (!ok || !lua_istable(L, -1)) {
    const char *why = lua_isstring(L, -1) ? lua_tostring(L, -1) : "not a list of values";
    lua_createtable(L, 2, 1);
    lua_pushboolean(L, 0);
    lua_rawseti(L, -2, 1);
    lua_pushfstring(L, "cannot decode a task's result: %s", why);
    lua_rawseti(L, -2, 2);
    lua_remove(L, -2);
    count = 2;
  }
  lua_pushinteger(L, count);
  lua_setfield(L, -2, "n");
  return 1;
}

/* Appends id, result of each complete frame to the list at index t (k
** items so far) and frees their slots; keeps a partial frame for later.
** A decode cut short by Ctrl-C keeps its frame too, then raises. */
static lua_Integer parse_frames(lua_State *L, int t, board *b, board_worker *wk,
                                lua_Integer k) {
  uint32_t w = (uint32_t)(wk - b->w);
  size_t at = 0;
  int interrupted = 0;
  while (wk->len - at >= FRAME_HDR) {
    uint32_t len, slot, count, flags;
    int64_t id;
    memcpy(&len, wk->buf + at, 4);
    memcpy(&slot, wk->buf + at + 4, 4);
    memcpy(&id, wk->buf + at + 8, 8);
    memcpy(&count, wk->buf + at + 16, 4);
    memcpy(&flags, wk->buf + at + 20, 4);
    if (wk->len - at - FRAME_HDR < len) break;
    if (slot < b->sh->nslots && b->slots[slot].task == id &&
        __atomic_load_n(&b->slots[slot].state, __ATOMIC_ACQUIRE) == SLOT_CLAIMED + w) {
      if (!push_result(L, wk->buf + at + FRAME_HDR, len, count, flags)) {
        interrupted = 1;
        break;
      }
      slot_free(b, slot);
      wk->results++;
      lua_rawseti(L, t, k + 2);
      lua_pushinteger(L, id);
      lua_rawseti(L, t, k + 1);
      k += 2;
    }
    at += FRAME_HDR + len;
  }
  memmove(wk->buf, wk->buf + at, wk->len - at);
  wk->len -= at;
  if (interrupted) lua_error(L);
  return k;
}

/* Reads and parses what worker wk sent: appends to the list at index t. */
static lua_Integer recv_worker(lua_State *L, int t, board *b, board_worker *wk,
                               lua_Integer k) {
  if (wk->rfd < 0) return k;
  if (read_available(wk) < 0)
    return luaL_error(L, "out of memory reading a pool worker's results");
  if (wk->eof) watch_fd(b->watch, wk->rfd, 0);   /* it would stay readable */
  return parse_frames(L, t, b, wk, k);
}

/* The list results are appended to: the table at idx (after its last
** item), else a new one; pushed. Appending to the caller's own table keeps
** results taken that Lua's hook (Ctrl-C) would lose as the call returns. */
static int results_list(lua_State *L, int idx, int size, lua_Integer *k) {
  if (lua_istable(L, idx)) {
    lua_pushvalue(L, idx);
    *k = (lua_Integer)lua_rawlen(L, -1);
  } else {
    lua_createtable(L, size, 0);
    *k = 0;
  }
  return lua_gettop(L);
}

/* board:recv(w, [list]) -> {id, result, id, result, ...}: worker w's
** results in, appended to list when given */
static int m_board_recv(lua_State *L) {
  board *b = check_board(L);
  board_worker *wk = check_worker(L, b, 2);
  lua_Integer k;
  int t = results_list(L, 3, 0, &k);
  recv_worker(L, t, b, wk, k);
  return 1;
}

/* board:results(w) -> how many results worker w has sent since it started */
static int m_board_results(lua_State *L) {
  board *b = check_board(L);
  lua_pushinteger(L, check_worker(L, b, 2)->results);
  return 1;
}

/* Polls the workers' result pipes and sentinels until one is ready or
** deadline; fills p (2 entries a worker with a pipe) and returns poll's
** result, or -1 with errno. */
static int poll_workers(board *b, struct pollfd *p, double deadline) {
  int i, n = 0, r;
  for (i = 0; i < b->nworkers; i++) {
    if (b->w[i].rfd < 0) continue;
    /* a pipe at its end is readable for ever: the sentinel tells the end */
    p[n].fd = b->w[i].eof ? -1 : b->w[i].rfd; p[n].events = POLLIN; p[n++].revents = 0;
    p[n].fd = b->w[i].sentinel; p[n].events = POLLIN; p[n++].revents = 0;
  }
  r = poll(p, (nfds_t)n, mp_poll_ms(deadline));
  if (r < 0 && errno == EINTR) return 0;
  return r;
}

/* board:collect([timeout], [list]) -> {id, result, ...}, quiet: waits
** until a worker has sent results or ended (or timeout passes), then takes
** every result in (appended to list when given).  quiet: nil, or the list
** of workers that woke the wait without a whole result (each may have
** ended).  A signal ends the wait early (nothing in) so Lua's hooks can
** run.  nil, message, errno when poll(2) itself fails. */
static int m_board_collect(lua_State *L) {
  board *b = check_board(L);
  double deadline = mp_opt_deadline(L, 2);
  struct pollfd few[2 * FEW_WORKERS];   /* most pools: no allocation per wait */
  struct pollfd *p;
  int i, n = 0, r, t, nquiet = 0;
  lua_Integer k;
  lua_settop(L, 3);
  p = b->nworkers <= FEW_WORKERS ? few :
      (struct pollfd *)lua_newuserdatauv(L, (size_t)b->nworkers * 2 * sizeof *p, 0);
  t = results_list(L, 3, 0, &k);
  lua_pushnil(L);                       /* t + 1: the quiet list, if any */
  for (i = 0; i < b->nworkers; i++)     /* frames an interrupted parse kept */
    if (b->w[i].rfd >= 0 && b->w[i].len >= FRAME_HDR) {
      lua_Integer before = k;
      if ((k = parse_frames(L, t, b, &b->w[i], k)) > before) deadline = 0;
    }
  r = poll_workers(b, p, deadline);
  if (r < 0) return mp_fail(L, "cannot wait for pool workers");
  for (i = 0; r > 0 && i < b->nworkers; i++) {
    lua_Integer before = k;
    if (b->w[i].rfd < 0) continue;
    if (p[n].revents | p[n + 1].revents) {
      k = recv_worker(L, t, b, &b->w[i], k);
      if (k == before) {
        if (nquiet == 0) {
          lua_newtable(L);
          lua_replace(L, t + 1);
        }
        lua_pushinteger(L, i + 1);
        lua_rawseti(L, t + 1, ++nquiet);
      }
    }
    n += 2;
  }
  return 2;
}

/* board:fail(w) -> {id, ...}: tasks worker w had claimed, now freed */
static int m_board_fail(lua_State *L) {
  board *b = check_board(L);
  board_worker *wk = check_worker(L, b, 2);
  uint32_t w = (uint32_t)(wk - b->w), s, claimed = SLOT_CLAIMED + w;
  lua_Integer k = 0;
  lua_newtable(L);
  for (s = 0; s < b->sh->nslots; s++) {
    if (__atomic_load_n(&b->slots[s].state, __ATOMIC_ACQUIRE) != claimed) continue;
    lua_pushinteger(L, b->slots[s].task);
    lua_rawseti(L, -2, ++k);
    slot_free(b, s);
  }
  wk->len = 0;
  return 1;
}

/* board:cancel({[task id] = true, ...}) -> {id, ...}: those of the tasks
** still queued, taken back.  The cancel and a worker's claim are both a
** compare-and-swap from QUEUED, so exactly one of them wins.  The ring
** keeps the slot's old position: a worker that reaches it later finds
** the slot FREE, or queued again with a newer task, which it may take
** early; the newer task's own position is then skipped. */
static int m_board_cancel(lua_State *L) {
  board *b = check_board(L);
  uint32_t s;
  lua_Integer k = 0;
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_newtable(L);
  for (s = 0; s < b->sh->nslots; s++) {
    board_slot *sl = &b->slots[s];
    uint32_t expect = SLOT_QUEUED;
    int wanted;
    if (__atomic_load_n(&sl->state, __ATOMIC_ACQUIRE) != SLOT_QUEUED) continue;
    wanted = lua_rawgeti(L, 2, sl->task) != LUA_TNIL;
    lua_pop(L, 1);
    if (!wanted || !__atomic_compare_exchange_n(&sl->state, &expect, SLOT_FREE, 0,
                                                 __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
      continue;
    lua_pushinteger(L, sl->task);
    lua_rawseti(L, -2, ++k);
    slot_release(b, s);
  }
  return 1;
}

/* board:shutdown(): workers exit once nothing is left to claim */
static int m_board_shutdown(lua_State *L) {
  board *b = check_board(L);
  __atomic_store_n(&b->sh->shutdown, 1, __ATOMIC_SEQ_CST);
  mp_seq_wake(&b->sh->seq);
  return 0;
}

/* board:counts() -> queued (published, unclaimed), in flight (on the board) */
static int m_board_counts(lua_State *L) {
  board *b = check_board(L);
  uint32_t s, queued = 0;
  for (s = 0; s < b->sh->nslots; s++)
    if (__atomic_load_n(&b->slots[s].state, __ATOMIC_ACQUIRE) == SLOT_QUEUED) queued++;
  lua_pushinteger(L, queued);
  lua_pushinteger(L, b->sh->nslots - b->nfree);
  return 2;
}

/* board:claimed(task_id) -> whether a worker has claimed that task and
** its result is not in yet (it is running) */
static int m_board_claimed(lua_State *L) {
  board *b = check_board(L);
  int64_t id = (int64_t)luaL_checkinteger(L, 2);
  uint32_t s;
  for (s = 0; s < b->sh->nslots; s++) {
    if (b->slots[s].task == id &&
        __atomic_load_n(&b->slots[s].state, __ATOMIC_ACQUIRE) >= SLOT_CLAIMED) {
      lua_pushboolean(L, 1);
      return 1;
    }
  }
  lua_pushboolean(L, 0);
  return 1;
}

/* board:fds() -> {fd, ...}: the result pipes and sentinels wait() polls,
** for a caller that waits on them beside other descriptors */
static int m_board_fds(lua_State *L) {
  board *b = check_board(L);
  int i;
  lua_Integer k = 0;
  lua_newtable(L);
  for (i = 0; i < b->nworkers; i++) {
    if (b->w[i].rfd < 0) continue;
    lua_pushinteger(L, b->w[i].rfd);
    lua_rawseti(L, -2, ++k);
    if (b->w[i].sentinel < 0) continue;
    lua_pushinteger(L, b->w[i].sentinel);
    lua_rawseti(L, -2, ++k);
  }
  return 1;
}

/* ---------------------------------------------------------------------
** The worker's side: set up, claim, send
** --------------------------------------------------------------------- */

/* board:worker_init(w) -> true, or false if the parent is already gone.
** Keeps only w's write end; SIGINT ends the worker at once. */
static int m_board_worker_init(lua_State *L) {
  board *b = check_board(L);
  board_worker *wk = check_worker(L, b, 2);
  int i;
  die_with_parent();
  signal(SIGINT, SIG_DFL);
  close_fd(&b->watch);
  mp_notifier_close(&b->again);
  for (i = 0; i < b->nworkers; i++) {
    close_fd(&b->w[i].rfd);
    if (&b->w[i] != wk) close_fd(&b->w[i].wfd);
    free(b->w[i].buf);
    b->w[i].buf = NULL;
    b->w[i].len = b->w[i].cap = 0;
  }
  lua_pushboolean(L, getppid() == b->parent);
  return 1;
}

/* Claims the next queued task for worker w; the slot, or -1 if none. */
static int64_t try_claim(board *b, uint32_t w) {
  board_shared *sh = b->sh;
  for (;;) {
    uint64_t head = __atomic_load_n(&sh->head, __ATOMIC_ACQUIRE);
    uint32_t s, expect = SLOT_QUEUED;
    int won;
    if (head >= __atomic_load_n(&sh->tail, __ATOMIC_ACQUIRE)) return -1;
    s = __atomic_load_n(&b->ring[head % sh->nslots], __ATOMIC_ACQUIRE);
    won = s < sh->nslots &&
          __atomic_compare_exchange_n(&b->slots[s].state, &expect, SLOT_CLAIMED + w,
                                      0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
    /* claimed or not, that position is done: help the head along */
    __atomic_compare_exchange_n(&sh->head, &head, head + 1, 0,
                                __ATOMIC_ACQ_REL, __ATOMIC_RELAXED);
    if (won) return s;
  }
}

/* Waits for a task to claim; -1 at shutdown or when the parent is gone. */
static int64_t claim_wait(board *b, uint32_t w) {
  board_shared *sh = b->sh;
  for (;;) {
    uint32_t seen = __atomic_load_n(&sh->seq, __ATOMIC_SEQ_CST);
    int64_t s = try_claim(b, w);
    if (s >= 0) return s;
    if (__atomic_load_n(&sh->shutdown, __ATOMIC_SEQ_CST)) return -1;
    if (parent_gone(b->parent)) return -1;
    __atomic_add_fetch(&sh->waiters, 1, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&sh->tail, __ATOMIC_SEQ_CST) ==
        __atomic_load_n(&sh->head, __ATOMIC_SEQ_CST))
      mp_seq_wait(&sh->seq, seen, mp_monotonic() + IDLE_PERIOD);
    __atomic_sub_fetch(&sh->waiters, 1, __ATOMIC_SEQ_CST);
  }
}

/* board:take(w, [nowait]) -> slot, task id, head, body, count; nil once
** the pool shuts down or the parent is gone; with nowait, false when no
** task is queued now */
static int m_board_take(lua_State *L) {
  board *b = check_board(L);
  board_worker *wk = check_worker(L, b, 2);
  uint32_t w = (uint32_t)(wk - b->w);
  int nowait = lua_toboolean(L, 3);
  int64_t s = nowait ? try_claim(b, w) : claim_wait(b, w);
  if (s < 0 && nowait) {
    lua_pushboolean(L, 0);
    return 1;
  }
  board_slot *sl;
  const char *rec;
  uint32_t hlen;
  if (s < 0) { lua_pushnil(L); return 1; }
  sl = &b->slots[s];
  rec = b->data + sl->pos % b->dsize + REC_HDR;
  memcpy(&hlen, rec, 4);
  lua_pushinteger(L, s);
  lua_pushinteger(L, sl->task);
  lua_pushlstring(L, rec + 4, hlen);
  lua_pushlstring(L, rec + 4 + hlen, sl->len - 4 - hlen);
  lua_pushinteger(L, sl->count);
  return 5;
}

static int write_all(int fd, struct iovec *iov, int n) {
  while (n > 0) {
    ssize_t r = writev(fd, iov, n);
    if (r < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    while (n > 0 && (size_t)r >= iov->iov_len) { r -= (ssize_t)iov->iov_len; iov++; n--; }
    if (n > 0) { iov->iov_base = (char *)iov->iov_base + r; iov->iov_len -= (size_t)r; }
  }
  return 0;
}

/* board:send(w, slot, task_id, payload, count, [items]) -> true, or nil,
** message, errno; payload: count values encoded as a slice; items: they
** are a map chunk's items (passed to the parent as bytes) */
static int m_board_send(lua_State *L) {
  board *b = check_board(L);
  board_worker *wk = check_worker(L, b, 2);
  uint32_t slot = (uint32_t)luaL_checkinteger(L, 3);
  int64_t id = (int64_t)luaL_checkinteger(L, 4);
  size_t len;
  const char *s = luaL_checklstring(L, 5, &len);
  lua_Integer count = luaL_checkinteger(L, 6);
  uint32_t len32 = (uint32_t)len, count32 = (uint32_t)count;
  uint32_t flags = lua_toboolean(L, 7) ? FRAME_ITEMS : 0;
  char hdr[FRAME_HDR] = {0};
  struct iovec iov[2];
  luaL_argcheck(L, len <= UINT32_MAX, 5, "result too large");
  luaL_argcheck(L, count >= 0 && count <= UINT32_MAX, 6, "value count out of range");
  memcpy(hdr, &len32, 4);
  memcpy(hdr + 4, &slot, 4);
  memcpy(hdr + 8, &id, 8);
  memcpy(hdr + 16, &count32, 4);
  memcpy(hdr + 20, &flags, 4);
  iov[0].iov_base = hdr; iov[0].iov_len = FRAME_HDR;
  iov[1].iov_base = (void *)s; iov[1].iov_len = len;
  if (wk->wfd < 0 || write_all(wk->wfd, iov, 2) < 0)
    return mp_fail(L, "cannot send a result to the pool");
  lua_pushboolean(L, 1);
  return 1;
}

static int m_board_tostring(lua_State *L) {
  board *b = (board *)mp_checkudata(L, 1, BOARD_MT);
  if (b->sh == NULL) lua_pushliteral(L, BOARD_MT " (closed)");
  else lua_pushfstring(L, BOARD_MT " (%d slots, %d in use)", (int)b->sh->nslots,
                       (int)(b->sh->nslots - b->nfree));
  return 1;
}

static const luaL_Reg board_methods[] = {
  {"put", m_board_put},
  {"wake", m_board_wake},
  {"room", m_board_room},
  {"open_worker", m_board_open_worker},
  {"started", m_board_started},
  {"fileno", m_board_fileno},
  {"again", m_board_again},
  {"drop_worker", m_board_drop_worker},
  {"collect", m_board_collect},
  {"recv", m_board_recv},
  {"results", m_board_results},
  {"fail", m_board_fail},
  {"cancel", m_board_cancel},
  {"shutdown", m_board_shutdown},
  {"counts", m_board_counts},
  {"claimed", m_board_claimed},
  {"fds", m_board_fds},
  {"worker_init", m_board_worker_init},
  {"take", m_board_take},
  {"send", m_board_send},
  {"close", m_board_close},
  {NULL, NULL}
};

static const luaL_Reg board_meta[] = {
  {"__gc", m_board_close},
  {"__close", m_board_close},
  {"__tostring", m_board_tostring},
  {NULL, NULL}
};

/* core.pool_list(n) -> {n = n} with room for n items, for a map's result
** (filled by core.loads_into: without the room, each doubling of the
** table would copy it) */
static int l_pool_list(lua_State *L) {
  lua_Integer n = luaL_checkinteger(L, 1);
  luaL_argcheck(L, n >= 0 && n <= INT_MAX, 1, "length out of range");
  lua_createtable(L, (int)n, 1);
  lua_pushinteger(L, n);
  lua_setfield(L, -2, "n");
  return 1;
}

void mp_open_pool(lua_State *L) {
  mp_type(L, BOARD_MT, board_meta, board_methods, NULL);
  lua_pushcfunction(L, l_pool_list);
  lua_setfield(L, -2, "pool_list");
  lua_pushcfunction(L, l_board_new);
  lua_setfield(L, -2, "pool_board");
  lua_pushinteger(L, MAX_WORKERS);
  lua_setfield(L, -2, "POOL_MAX_WORKERS");
  lua_pushinteger(L, BOARD_PAGE);
  lua_setfield(L, -2, "POOL_BOARD_PAGE");
  lua_pushinteger(L, MAX_BOARD);
  lua_setfield(L, -2, "POOL_MAX_BOARD");
}
