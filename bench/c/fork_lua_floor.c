/* A second floor for Process start+join: fork, _exit, waitpid from a C
** program that holds a Lua state with mproc loaded, so the process forked
** is as big as the Lua interpreter's. Shows how much of mproc's time is
** the size of the process rather than mproc's own work.
**
** Prints the best time per start+join (us), then the page faults per
** start+join in the parent and in the children (the figures to read beside
** mproc's: see docs/performance.md, "Process").
**
** With a second argument "bound", the child calls _exit through a pointer
** looked up before the loop (dlsym: taking its address here would change
** how the plain call below is made). Without it (the floor the benchmarks
** quote), each child binds _exit lazily through the PLT, as the first
** call of a function does: about 10 of its page faults are the dynamic
** linker's.
**
** Two more modes measure what a child that runs Lua cannot avoid: "lua",
** the child calls an empty Lua function (lua_pcall) before _exit; "kept",
** it also does what a Process child is promised (stdout line-buffered,
** stdin on /dev/null, math.randomseed(pid, clock)) and flushes stdio before
** _exit, as mproc's does. Both call every function once in the parent
** first (as mproc's parent has called them before it forks) and _exit
** pre-bound: their children fault in no dynamic linking. */
#include <dlfcn.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "lauxlib.h"
#include "lualib.h"

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static long faults(int who) {
  struct rusage ru;
  getrusage(who, &ru);
  return ru.ru_minflt + ru.ru_majflt;
}

/* The child of the "lua" and "kept" modes: the stack holds [f, randomseed]. */
static void run_lua_child(lua_State *L, int kept, int devnull, void (*ex)(int)) {
  if (kept) {
    struct timespec ts;
    setvbuf(stdout, NULL, _IOLBF, BUFSIZ);
    dup2(devnull, 0);
    clock_gettime(CLOCK_MONOTONIC, &ts);
    lua_pushvalue(L, 2);
    lua_pushinteger(L, getpid());
    lua_pushinteger(L, (lua_Integer)ts.tv_sec * 1000000000 + ts.tv_nsec);
    lua_pcall(L, 2, 0, 0);
  }
  lua_pushvalue(L, 1);
  lua_pcall(L, 0, 0, 0);
  if (kept) fflush(NULL);
  ex(0);
}

/* The "lua" and "kept" modes: binds in the parent what the child calls. */
static void bind_child_calls(lua_State *L, int devnull) {
  struct timespec ts;
  setvbuf(stdout, NULL, _IOFBF, BUFSIZ);
  dup2(devnull, devnull);
  clock_gettime(CLOCK_MONOTONIC, &ts);
  lua_pushvalue(L, 2);
  lua_pushinteger(L, getpid());
  lua_pushinteger(L, 1);
  lua_pcall(L, 2, 0, 0);
  lua_pushvalue(L, 1);
  lua_pcall(L, 0, 0, 0);
  fflush(NULL);
}

int main(int argc, char **argv) {
  int n = argc > 1 ? atoi(argv[1]) : 1000, i, r, st, runs = 3;
  const char *mode = argc > 2 ? argv[2] : "";
  int kept = strcmp(mode, "kept") == 0, lua = kept || strcmp(mode, "lua") == 0;
  int bound = lua || strcmp(mode, "bound") == 0, devnull = open("/dev/null", O_RDONLY);
  void (*bound_exit)(int) = bound ? (void (*)(int))dlsym(RTLD_DEFAULT, "_exit") : NULL;
  double best = 1e9;
  long p0, c0;
  lua_State *L = luaL_newstate();
  luaL_openlibs(L);
  if (luaL_dostring(L, "require 'mproc'; return function() end, math.randomseed") != LUA_OK) {
    fprintf(stderr, "%s\n", lua_tostring(L, -1));
    return 1;
  }
  if (lua) bind_child_calls(L, devnull);
  p0 = faults(RUSAGE_SELF);
  c0 = faults(RUSAGE_CHILDREN);
  for (r = 0; r < runs; r++) {
    double t0 = now(), t;
    for (i = 0; i < n; i++) {
      pid_t pid = fork();
      if (pid == 0) {
        if (lua) run_lua_child(L, kept, devnull, bound_exit);
        if (bound_exit) bound_exit(0);
        _exit(0);
      }
      waitpid(pid, &st, 0);
    }
    t = (now() - t0) / n * 1e6;
    if (t < best) best = t;
  }
  printf("%.3f %.2f %.2f\n", best,
         (double)(faults(RUSAGE_SELF) - p0) / (runs * n),
         (double)(faults(RUSAGE_CHILDREN) - c0) / (runs * n));
  lua_close(L);
  return 0;
}
