/* C floor for the codec's 1 MiB string round trip: two memcpy of 1 MiB
** (dumps and loads each copy the bytes once), into buffers allocated once,
** or with "fresh" as third argument into buffers malloc'd and freed each
** time, as Lua's strings are. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
  int n = argc > 1 ? atoi(argv[1]) : 1000, i, r;
  size_t size = argc > 2 ? (size_t)atol(argv[2]) : 1 << 20;
  int fresh = argc > 3 && strcmp(argv[3], "fresh") == 0;
  double best = 1e9;
  char *src = malloc(size), *a = NULL, *b = NULL;
  volatile char sink = 0;
  memset(src, 'x', size);
  if (!fresh) { a = malloc(size + 8); b = malloc(size); }
  for (r = 0; r < 3; r++) {
    double t0 = now(), t;
    for (i = 0; i < n; i++) {
      if (fresh) { a = malloc(size + 8); b = malloc(size); }
      memcpy(a + 8, src, size);
      memcpy(b, a + 8, size);
      sink ^= b[size - 1];
      if (fresh) { free(a); free(b); a = b = NULL; }
    }
    t = (now() - t0) / n * 1e6;
    if (t < best) best = t;
  }
  printf("%.3f\n", best + sink * 0);
  free(src);
  free(a);
  free(b);
  return 0;
}
