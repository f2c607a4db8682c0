/* C floor for the Queue benchmark: a child writes messages on a pipe, the
** parent reads them. "small N": one 8-byte write and read per message,
** prints us/op. "big N": N writes of 1 MiB, read in full, prints MiB/s. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MIB (1024 * 1024)

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void write_all(int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w <= 0) _exit(1);
    p += w;
    n -= (size_t)w;
  }
}

static void read_all(int fd, char *p, size_t n) {
  while (n > 0) {
    ssize_t r = read(fd, p, n);
    if (r <= 0) exit(1);
    p += r;
    n -= (size_t)r;
  }
}

/* One run: seconds to move n messages of size bytes. */
static double run(int n, size_t size) {
  int fds[2], i, st;
  char *buf = malloc(size);
  double t0;
  pid_t pid;
  memset(buf, 'x', size);
  if (pipe(fds) < 0) exit(1);
  t0 = now();
  pid = fork();
  if (pid == 0) {
    close(fds[0]);
    for (i = 0; i < n; i++) write_all(fds[1], buf, size);
    _exit(0);
  }
  close(fds[1]);
  for (i = 0; i < n; i++) read_all(fds[0], buf, size);
  t0 = now() - t0;
  close(fds[0]);
  waitpid(pid, &st, 0);
  free(buf);
  return t0;
}

int main(int argc, char **argv) {
  int big = argc > 1 && strcmp(argv[1], "big") == 0;
  int n = argc > 2 ? atoi(argv[2]) : 100000, r;
  double best = 1e9;
  for (r = 0; r < 3; r++) {
    double t = run(n, big ? MIB : 8);
    if (t < best) best = t;
  }
  if (big)
    printf("%.3f\n", n / best);
  else
    printf("%.3f\n", best / n * 1e6);
  return 0;
}
