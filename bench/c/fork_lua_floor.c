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
** linker's. */
#include <dlfcn.h>
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

int main(int argc, char **argv) {
  int n = argc > 1 ? atoi(argv[1]) : 1000, i, r, st, runs = 3;
  int bound = argc > 2 && strcmp(argv[2], "bound") == 0;
  void (*bound_exit)(int) = bound ? (void (*)(int))dlsym(RTLD_DEFAULT, "_exit") : NULL;
  double best = 1e9;
  long p0, c0;
  lua_State *L = luaL_newstate();
  luaL_openlibs(L);
  if (luaL_dostring(L, "require 'mproc'") != LUA_OK) {
    fprintf(stderr, "%s\n", lua_tostring(L, -1));
    return 1;
  }
  p0 = faults(RUSAGE_SELF);
  c0 = faults(RUSAGE_CHILDREN);
  for (r = 0; r < runs; r++) {
    double t0 = now(), t;
    for (i = 0; i < n; i++) {
      pid_t pid = fork();
      if (pid == 0) {
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
