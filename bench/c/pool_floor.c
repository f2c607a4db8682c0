/* C floor for the Pool benchmarks: the least a pool of 2 forked workers
** does per task.
**   pool_floor map N
**     -> items/s of a map of a Lua identity function over a Lua list of N
**        integers 1..N in 8 chunks (Python's default chunking), best of 5:
**        the parent reads each item with the Lua API into shared memory,
**        a worker claims a chunk (one atomic add), puts its items in a Lua
**        table, runs `for i = 1, n do t[i] = f(t[i]) end` and reads them
**        back into shared memory, and the parent stores the results in a
**        list made with room for N.  No codec, no pipe, no bookkeeping:
**        what moving the items in and out of Lua and calling f costs.
**   pool_floor apply N [all|one|spin]
**     -> us per round trip: the parent publishes a task word in shared
**        memory and wakes the workers by futex (all of them, or one), a
**        worker claims it by compare-and-swap and writes 16 bytes on its
**        pipe, the parent polls the pipes and reads; what mproc's apply_async
**        + get does besides its Lua.  "spin": the same, but the workers and
**        the parent spin on the shared words (up to 50 us) before they sleep.
** Prints the best of 3 runs. */
#define _GNU_SOURCE
#include <linux/futex.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

typedef struct {
  uint32_t seq, waiters, stop, pad;
  uint64_t posted, claimed, sent;
} board;

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void futex(uint32_t *w, int op, uint32_t v) {
  syscall(SYS_futex, w, op, v, NULL, NULL, 0);
}

static int spin_for(uint64_t *word, uint64_t seen, int spin) {
  double until = spin ? now() + 50e-6 : 0;
  while (spin && now() < until)
    if (__atomic_load_n(word, __ATOMIC_ACQUIRE) != seen) return 1;
  return 0;
}

/* Takes tasks until stop; a task is one increment of posted. */
static void worker(board *b, int wfd, int spin) {
  for (;;) {
    uint32_t seen = __atomic_load_n(&b->seq, __ATOMIC_SEQ_CST);
    uint64_t c = __atomic_load_n(&b->claimed, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&b->stop, __ATOMIC_SEQ_CST)) return;
    if (c < __atomic_load_n(&b->posted, __ATOMIC_SEQ_CST)) {
      if (__atomic_compare_exchange_n(&b->claimed, &c, c + 1, 0, __ATOMIC_SEQ_CST,
                                      __ATOMIC_SEQ_CST)) {
        char frame[16] = {0};
        if (write(wfd, frame, sizeof frame) < 0) return;
        __atomic_add_fetch(&b->sent, 1, __ATOMIC_SEQ_CST);
      }
      continue;
    }
    if (spin_for(&b->posted, c, spin)) continue;
    __atomic_add_fetch(&b->waiters, 1, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&b->claimed, __ATOMIC_SEQ_CST) ==
        __atomic_load_n(&b->posted, __ATOMIC_SEQ_CST))
      futex(&b->seq, FUTEX_WAIT, seen);
    __atomic_sub_fetch(&b->waiters, 1, __ATOMIC_SEQ_CST);
  }
}

static double run_apply(board *b, int rfd[2], long n, int wake, int spin) {
  double t0 = now();
  struct pollfd p[2] = {{rfd[0], POLLIN, 0}, {rfd[1], POLLIN, 0}};
  char buf[64];
  long i;
  for (i = 0; i < n; i++) {
    uint64_t sent = __atomic_load_n(&b->sent, __ATOMIC_SEQ_CST);
    __atomic_add_fetch(&b->posted, 1, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&b->waiters, __ATOMIC_SEQ_CST) > 0) {
      __atomic_add_fetch(&b->seq, 1, __ATOMIC_SEQ_CST);
      futex(&b->seq, FUTEX_WAKE, wake);
    }
    spin_for(&b->sent, sent, spin);
    for (;;) {
      int k, got = 0;
      poll(p, 2, -1);
      for (k = 0; k < 2; k++)
        if (p[k].revents && read(p[k].fd, buf, 16) == 16) got = 1;
      if (got) break;
    }
  }
  return (now() - t0) / n * 1e6;
}

/* ---------------------------------------------------------------------
** map
** --------------------------------------------------------------------- */
#define NCHUNKS 8

typedef struct {
  uint32_t posted, claimed, done;  /* chunks; futex words */
  uint32_t stop, waiters, pad;
  int64_t n;
  int64_t items[];                 /* n inputs, then n results */
} mapboard;

static void map_worker(mapboard *b, lua_State *L) {
  int64_t c = b->n / NCHUNKS;
  for (;;) {
    uint32_t k = __atomic_load_n(&b->claimed, __ATOMIC_SEQ_CST), posted;
    int64_t i, lo, hi;
    if (__atomic_load_n(&b->stop, __ATOMIC_SEQ_CST)) return;
    posted = __atomic_load_n(&b->posted, __ATOMIC_SEQ_CST);
    if (k >= posted) { futex(&b->posted, FUTEX_WAIT, posted); continue; }
    if (!__atomic_compare_exchange_n(&b->claimed, &k, k + 1, 0, __ATOMIC_SEQ_CST,
                                     __ATOMIC_SEQ_CST)) continue;
    lo = (int64_t)(k % NCHUNKS) * c;
    hi = k % NCHUNKS == NCHUNKS - 1 ? b->n : lo + c;
    lua_getglobal(L, "run");
    lua_createtable(L, (int)(hi - lo), 0);
    for (i = lo; i < hi; i++) {
      lua_pushinteger(L, b->items[i]);
      lua_rawseti(L, -2, i - lo + 1);
    }
    lua_pushvalue(L, -1);
    lua_insert(L, -3);                  /* t, run, t */
    lua_pushinteger(L, hi - lo);
    lua_call(L, 2, 0);
    for (i = lo; i < hi; i++) {
      lua_rawgeti(L, -1, i - lo + 1);
      b->items[b->n + i] = lua_tointeger(L, -1);
      lua_pop(L, 1);
    }
    lua_pop(L, 1);
    __atomic_add_fetch(&b->done, 1, __ATOMIC_SEQ_CST);
    futex(&b->done, FUTEX_WAKE, 1);
  }
}

static double run_map(mapboard *b, lua_State *L, uint32_t round) {
  int64_t n = b->n, c = n / NCHUNKS, i;
  double t0 = now();
  int k;
  lua_getglobal(L, "list");
  for (k = 0; k < NCHUNKS; k++) {      /* read every chunk, then publish */
    int64_t lo = k * c, hi = k == NCHUNKS - 1 ? n : lo + c;
    for (i = lo; i < hi; i++) {
      lua_rawgeti(L, -1, i + 1);
      b->items[i] = lua_tointeger(L, -1);
      lua_pop(L, 1);
    }
  }
  __atomic_add_fetch(&b->posted, NCHUNKS, __ATOMIC_SEQ_CST);
  futex(&b->posted, FUTEX_WAKE, 1 << 30);
  lua_pop(L, 1);
  lua_createtable(L, (int)n, 1);
  for (k = 0; k < NCHUNKS; k++) {      /* results in order, as they come */
    int64_t lo = k * c, hi = k == NCHUNKS - 1 ? n : lo + c;
    uint32_t d;
    while ((d = __atomic_load_n(&b->done, __ATOMIC_SEQ_CST)) < round * NCHUNKS + (uint32_t)k + 1)
      futex(&b->done, FUTEX_WAIT, d);
    for (i = lo; i < hi; i++) {
      lua_pushinteger(L, b->items[n + i]);
      lua_rawseti(L, -2, i + 1);
    }
  }
  lua_pop(L, 1);
  return n / (now() - t0);
}

static int main_map(int64_t n) {
  size_t size = sizeof(mapboard) + 2 * (size_t)n * sizeof(int64_t);
  mapboard *b = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  lua_State *L = luaL_newstate();
  double best = 0;
  uint32_t r;
  int k;
  luaL_openlibs(L);
  if (luaL_dostring(L, "function f(x) return x end\n"
                       "function run(t, n) for i = 1, n do t[i] = f(t[i]) end end")) return 1;
  b->n = n;
  for (k = 0; k < 2; k++)
    if (fork() == 0) { map_worker(b, L); _exit(0); }
  lua_createtable(L, (int)n, 0);
  for (r = 1; r <= n; r++) { lua_pushinteger(L, r); lua_rawseti(L, -2, r); }
  lua_setglobal(L, "list");
  for (r = 0; r < 5; r++) {
    double rate = run_map(b, L, r);
    if (rate > best) best = rate;
  }
  __atomic_store_n(&b->stop, 1, __ATOMIC_SEQ_CST);
  __atomic_add_fetch(&b->posted, 1, __ATOMIC_SEQ_CST);
  futex(&b->posted, FUTEX_WAKE, 1 << 30);
  while (wait(NULL) > 0) {}
  printf("%.1f\n", best);
  return 0;
}

int main(int argc, char **argv) {
  long n = argc > 2 ? atol(argv[2]) : 20000;
  const char *how = argc > 3 ? argv[3] : "all";
  int spin = strcmp(how, "spin") == 0, wake = strcmp(how, "one") == 0 ? 1 : 1 << 30;
  board *b = mmap(NULL, sizeof *b, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  int rfd[2], k, r;
  double best = 1e9;
  if (argc >= 2 && strcmp(argv[1], "map") == 0)
    return main_map(argc > 2 ? atol(argv[2]) : 200000);
  if (argc < 2 || strcmp(argv[1], "apply") != 0) {
    fprintf(stderr, "usage: pool_floor apply [N] [all|one|spin] | pool_floor map [N]\n");
    return 2;
  }
  memset(b, 0, sizeof *b);
  for (k = 0; k < 2; k++) {
    int fds[2];
    if (pipe(fds) < 0) return 1;
    if (fork() == 0) {
      close(fds[0]);
      worker(b, fds[1], spin);
      _exit(0);
    }
    close(fds[1]);
    rfd[k] = fds[0];
  }
  for (r = 0; r < 3; r++) {
    double us = run_apply(b, rfd, n, wake, spin);
    if (us < best) best = us;
  }
  __atomic_store_n(&b->stop, 1, __ATOMIC_SEQ_CST);
  __atomic_add_fetch(&b->seq, 1, __ATOMIC_SEQ_CST);
  futex(&b->seq, FUTEX_WAKE, 1 << 30);
  while (wait(NULL) > 0) {}
  printf("%.3f\n", best);
  return 0;
}
