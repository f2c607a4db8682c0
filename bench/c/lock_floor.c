/* C floor for the Lock benchmarks: a robust process-shared pthread mutex in
** an anonymous shared mapping, as mproc's Lock is.
**   lock_floor uncontended N  -> us per acquire+release pair
**   lock_floor contended N    -> us per increment, 2 processes x N increments
**   lock_floor lua N          -> us per pair, the uncontended loop in Lua
**     (lock:acquire() lock:release()) on a userdata whose two methods only
**     lock and unlock the mutex: what the Lua calls add to the mutex, with
**     no check of anything
** Prints the best of 3 runs. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

typedef struct { pthread_mutex_t m; long counter; } shared;

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static shared *make(void) {
  pthread_mutexattr_t a;
  shared *s = mmap(NULL, sizeof *s, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (s == MAP_FAILED) { perror("mmap"); exit(1); }
  pthread_mutexattr_init(&a);
  pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
  pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
  pthread_mutex_init(&s->m, &a);
  return s;
}

static void count(shared *s, long n) {
  long i;
  for (i = 0; i < n; i++) {
    pthread_mutex_lock(&s->m);
    s->counter++;
    pthread_mutex_unlock(&s->m);
  }
}

static double run(int contended, long n) {
  shared *s = make();
  double t0 = now(), t;
  if (contended) {
    pid_t p = fork();
    if (p == 0) { count(s, n); _exit(0); }
    count(s, n);
    waitpid(p, NULL, 0);
    if (s->counter != 2 * n) { fprintf(stderr, "lost increments\n"); exit(1); }
    t = (now() - t0) / (2.0 * n);
  } else {
    count(s, n);
    t = (now() - t0) / n;
  }
  munmap(s, sizeof *s);
  return t * 1e6;
}

static int nop_acquire(lua_State *L) {
  pthread_mutex_lock(&(*(shared **)lua_touserdata(L, 1))->m);
  lua_pushboolean(L, 1);
  return 1;
}

static int nop_release(lua_State *L) {
  pthread_mutex_unlock(&(*(shared **)lua_touserdata(L, 1))->m);
  return 0;
}

/* Seconds per pair of the Lua loop, best of 3, in one Lua state. */
static double run_lua(long n) {
  static const luaL_Reg methods[] = {
    {"acquire", nop_acquire}, {"release", nop_release}, {NULL, NULL}};
  lua_State *L = luaL_newstate();
  double best = 1e9;
  int i;
  luaL_openlibs(L);
  *(shared **)lua_newuserdatauv(L, sizeof(shared *), 0) = make();
  luaL_newmetatable(L, "floor.Lock");
  luaL_newlib(L, methods);
  lua_setfield(L, -2, "__index");
  lua_setmetatable(L, -2);
  lua_setglobal(L, "lock");
  if (luaL_loadstring(L, "local lock, n = lock, ...\n"
                         "for _ = 1, n do lock:acquire() lock:release() end") != LUA_OK)
    exit(1);
  for (i = 0; i < 3; i++) {
    double t0 = now(), t;
    lua_pushvalue(L, -1);
    lua_pushinteger(L, n);
    if (lua_pcall(L, 1, 0, 0) != LUA_OK) { fprintf(stderr, "%s\n", lua_tostring(L, -1)); exit(1); }
    t = (now() - t0) / n;
    if (t < best) best = t;
  }
  lua_close(L);
  return best * 1e6;
}

int main(int argc, char **argv) {
  int contended = argc > 1 && strcmp(argv[1], "contended") == 0;
  long n = argc > 2 ? atol(argv[2]) : 1000000;
  double best = 1e9;
  int i;
  if (argc > 1 && strcmp(argv[1], "lua") == 0) {
    printf("%.4f\n", run_lua(n));
    return 0;
  }
  for (i = 0; i < 3; i++) {
    double t = run(contended, n);
    if (t < best) best = t;
  }
  printf("%.4f\n", best);
  return 0;
}
