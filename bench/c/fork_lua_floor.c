/* A second floor for Process start+join: fork, _exit, waitpid from a C
** program that holds a Lua state with mproc loaded, so the process forked
** is as big as the Lua interpreter's. Shows how much of mproc's time is
** the size of the process rather than mproc's own work. */
#include <stdio.h>
#include <stdlib.h>
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

int main(int argc, char **argv) {
  int n = argc > 1 ? atoi(argv[1]) : 1000, i, r, st;
  double best = 1e9;
  lua_State *L = luaL_newstate();
  luaL_openlibs(L);
  if (luaL_dostring(L, "require 'mproc'") != LUA_OK) {
    fprintf(stderr, "%s\n", lua_tostring(L, -1));
    return 1;
  }
  for (r = 0; r < 3; r++) {
    double t0 = now(), t;
    for (i = 0; i < n; i++) {
      pid_t pid = fork();
      if (pid == 0) _exit(0);
      waitpid(pid, &st, 0);
    }
    t = (now() - t0) / n * 1e6;
    if (t < best) best = t;
  }
  printf("%.3f\n", best);
  lua_close(L);
  return 0;
}
