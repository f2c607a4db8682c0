/* C floor for subprocess spawn-and-wait: posix_spawnp of `true`, waitpid.
** Usage: spawn_floor N [HEAP_MIB]; with HEAP_MIB, that much memory is
** allocated and touched first, to show posix_spawn ignores heap size. */
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>

extern char **environ;

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
  int n = argc > 1 ? atoi(argv[1]) : 1000, i, r, st;
  size_t heap = argc > 2 ? (size_t)atol(argv[2]) << 20 : 0;
  char *args[] = {"true", NULL};
  double best = 1e9;
  char *mem = heap ? malloc(heap) : NULL;
  if (mem) memset(mem, 1, heap);
  for (r = 0; r < 3; r++) {
    double t0 = now(), t;
    for (i = 0; i < n; i++) {
      pid_t pid;
      if (posix_spawnp(&pid, "true", NULL, NULL, args, environ) != 0) return 1;
      waitpid(pid, &st, 0);
    }
    t = (now() - t0) / n * 1e6;
    if (t < best) best = t;
  }
  printf("%.3f\n", best);
  free(mem);
  return 0;
}
