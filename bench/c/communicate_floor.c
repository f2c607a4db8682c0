/* C floor for communicate: MIB mebibytes through `cat` (posix_spawnp,
** two pipes of 1 MiB, a poll loop writing and reading), read into a
** buffer allocated and touched once beforehand: the pipe copies and cat
** are all the time. Prints MiB/s, best of three.
** With "fresh", each run reads into new memory (huge pages, untouched, as
** a first communicate in a fresh process does) and then copies the bytes
** once into another new block, as making the Lua string must: the least a
** first call returning a Lua string can cost.
** Usage: communicate_floor MIB [fresh] */
#define _GNU_SOURCE
#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Seconds to send n bytes of in through cat and read them into out. */
static double run(const char *in, char *out, size_t n) {
  int to[2], from[2], st;
  size_t sent = 0, got = 0;
  char *args[] = {"cat", NULL};
  posix_spawn_file_actions_t fa;
  double t0 = now();
  pid_t pid;
  if (pipe2(to, O_CLOEXEC) < 0 || pipe2(from, O_CLOEXEC) < 0) exit(1);
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, to[0], 0);
  posix_spawn_file_actions_adddup2(&fa, from[1], 1);
  if (posix_spawnp(&pid, "cat", &fa, NULL, args, environ) != 0) exit(1);
  close(to[0]);
  close(from[1]);
  fcntl(to[1], F_SETPIPE_SZ, 1 << 20);
  fcntl(from[0], F_SETPIPE_SZ, 1 << 20);
  fcntl(to[1], F_SETFL, O_NONBLOCK);
  while (got < n || to[1] >= 0) {
    struct pollfd pf[2] = {{from[0], POLLIN, 0}, {to[1], POLLOUT, 0}};
    poll(pf, to[1] >= 0 ? 2 : 1, -1);
    if (to[1] >= 0 && pf[1].revents) {
      size_t k = n - sent > (1 << 20) ? (1 << 20) : n - sent;
      ssize_t w = write(to[1], in + sent, k);
      if (w > 0) sent += (size_t)w;
      if (sent == n) { close(to[1]); to[1] = -1; }
    }
    if (pf[0].revents) {
      ssize_t r = read(from[0], out + got, n - got + 1);
      if (r <= 0) break;
      got += (size_t)r;
    }
  }
  close(from[0]);
  waitpid(pid, &st, 0);
  posix_spawn_file_actions_destroy(&fa);
  if (got != n) exit(2);
  return now() - t0;
}

/* n bytes on huge pages where the system gives them (as mproc's buffer). */
static char *big(size_t n) {
  void *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) exit(1);
#ifdef MADV_HUGEPAGE
  madvise(p, n, MADV_HUGEPAGE);
#endif
  return (char *)p;
}

int main(int argc, char **argv) {
  size_t mib = argc > 1 ? (size_t)atol(argv[1]) : 64, n = mib << 20;
  int fresh = argc > 2 && strcmp(argv[2], "fresh") == 0, r;
  char *in = big(n), *out = fresh ? NULL : big(n + 1);
  double best = 1e9;
  memset(in, 'x', n);
  if (!fresh) memset(out, 0, n + 1);
  for (r = 0; r < 3; r++) {
    double t0 = now(), t;
    char *dst = NULL;
    if (fresh) out = big(n + 1);
    t = run(in, out, n);
    if (fresh) {
      dst = big(n);
      memcpy(dst, out, n);
      t = now() - t0;
      if (dst[n - 1] != 'x') exit(3);
      munmap(out, n + 1);
      munmap(dst, n);
    }
    if (t < best) best = t;
  }
  printf("%.1f\n", (double)mib / best);
  return 0;
}
