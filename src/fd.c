/*
** fd.c: descriptor plumbing shared by the C files: pipes and socket pairs
** that are close-on-exec from birth, and bigger pipe buffers where the
** system has them.  The pipe and socket platform choices live here.
** core.fileno and core.read_nowait, on Lua files, are here too.
*/
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mproc.h"

#if MP_LINUX
#include <sys/mman.h>
#include <sys/random.h>
#endif

#if (defined(__linux__) || defined(__FreeBSD__) || defined(__NetBSD__) || \
     defined(__OpenBSD__)) && !defined(MP_PORTABLE)
#define MP_HAVE_PIPE2 1
#else
#define MP_HAVE_PIPE2 0
#endif

int mp_cloexec_pipe(int fds[2]) {
#if MP_HAVE_PIPE2
  return pipe2(fds, O_CLOEXEC);
#else
  if (pipe(fds) < 0) return -1;
  fcntl(fds[0], F_SETFD, FD_CLOEXEC);
  fcntl(fds[1], F_SETFD, FD_CLOEXEC);
  return 0;
#endif
}

/* A Unix stream socket pair, with SOCK_CLOEXEC where it exists, else
** FD_CLOEXEC right after. */
int mp_cloexec_socketpair(int sv[2]) {
#if defined(SOCK_CLOEXEC) && !defined(MP_PORTABLE)
  return socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv);
#else
  if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0) return -1;
  fcntl(sv[0], F_SETFD, FD_CLOEXEC);
  fcntl(sv[1], F_SETFD, FD_CLOEXEC);
  return 0;
#endif
}

/* Asks for a 1 MiB pipe buffer (capped by /proc/sys/fs/pipe-max-size);
** fewer wake-ups when megabytes go through.  A no-op where unsupported. */
void mp_grow_pipe(int fd) {
#if defined(F_SETPIPE_SZ) && !defined(MP_PORTABLE)
  (void)fcntl(fd, F_SETPIPE_SZ, 1 << 20);
#else
  (void)fd;
#endif
}

/* ---------------------------------------------------------------------
** Shared files: memory that processes share through a descriptor (a
** memfd on Linux, elsewhere a temporary file unlinked at once), and
** reaching one that another live process holds (/proc/<pid>/fd/<n>, on
** Linux only: MP_HAVE_PROC_FD).
** --------------------------------------------------------------------- */

/* A new empty shared file, close-on-exec; -1 with errno set. name is
** what /proc/<pid>/fd shows for it on Linux. */
int mp_shared_file(const char *name) {
#if MP_LINUX
  return memfd_create(name, MFD_CLOEXEC);
#else
  char path[] = "/tmp/mproc-XXXXXX";
  int fd = mkstemp(path);
  (void)name;
  if (fd < 0) return -1;
  unlink(path);
  fcntl(fd, F_SETFD, FD_CLOEXEC);
  return fd;
#endif
}

/* The failure of a receive's attempts that says most: a shortage in this
** process (EMFILE, ENFILE, ENOMEM) that stops it, noted by mp_held_note
** since the receive's mp_held_clear. */
static int held_short = 0;

void mp_held_clear(void) { held_short = 0; }

/* Notes e if it is a shortage of ours; whether it is (the caller stops
** trying: every other holder would fail the same way). */
int mp_held_note(int e) {
  if (e != EMFILE && e != ENFILE && e != ENOMEM) return 0;
  held_short = e;
  return 1;
}

int mp_held_short(void) { return held_short; }

/* A descriptor of our own (close-on-exec, read-write) on the file that
** process pid holds as descriptor fd, if that file has device dev and
** inode ino; -1 otherwise, with errno ENOENT when no live process holds
** it there (or the system cannot tell), else what stopped us: EACCES or
** EPERM (pid is another user's, or not dumpable), EMFILE, ENFILE, ENOMEM
** (noted: mp_held_note). The caller checks what is in the file (a nonce),
** since a pid, a descriptor number or an inode may have been reused. The
** link is stat'ed before it is opened: the registry's scan (holders.c)
** tries numbers in processes that may hold anything there, and opening
** some devices (a serial line, a watchdog) acts. */
int mp_open_held(pid_t pid, int fd, uint64_t dev, uint64_t ino) {
#if MP_HAVE_PROC_FD
  char path[64];
  struct stat sb;
  int f, e;
  if (pid <= 0 || fd < 0) { errno = ENOENT; return -1; }
  snprintf(path, sizeof path, "/proc/%d/fd/%d", (int)pid, fd);
  if (stat(path, &sb) < 0) goto fail;
  if ((uint64_t)sb.st_dev != dev || (uint64_t)sb.st_ino != ino) { errno = ENOENT; return -1; }
  if ((f = open(path, O_RDWR | O_CLOEXEC)) < 0) goto fail;
  if (fstat(f, &sb) < 0 || (uint64_t)sb.st_dev != dev || (uint64_t)sb.st_ino != ino) {
    close(f);
    errno = ENOENT;
    return -1;
  }
  return f;
fail:
  e = errno == ESRCH || errno == ENOTDIR ? ENOENT : errno;
  mp_held_note(e);
  errno = e;
  return -1;
#else
  (void)pid; (void)fd; (void)dev; (void)ino;
  errno = ENOENT;
  return -1;
#endif
}

/* Whether process pid lives but its descriptors are out of our sight
** (another user's process, or one not dumpable): after a receive failed,
** for its message. */
int mp_held_denied(pid_t pid, int fd) {
#if MP_HAVE_PROC_FD
  char path[64];
  struct stat sb;
  if (pid <= 0 || fd < 0) return 0;
  snprintf(path, sizeof path, "/proc/%d/fd/%d", (int)pid, fd);
  return stat(path, &sb) < 0 && (errno == EACCES || errno == EPERM);
#else
  (void)pid; (void)fd;
  return 0;
#endif
}

/* After a receive found no holder: pushes why, if it is not that none is
** left (a shortage noted since mp_held_clear, or the sender or the maker
** alive but out of our reach), and returns 1; else 0, nothing pushed. */
int mp_held_why(lua_State *L, pid_t pid, int fd, pid_t mpid, int mfd) {
  pid_t who;
  if (held_short != 0) {
    lua_pushfstring(L, "cannot open it: %s", strerror(held_short));
    return 1;
  }
  who = mp_held_denied(pid, fd) ? pid : mp_held_denied(mpid, mfd) ? mpid : 0;
  if (who > 0) {
    lua_pushfstring(L, "process %d holds it but cannot be reached (another user, or not "
                    "dumpable)", (int)who);
    return 1;
  }
  return 0;
}

/* After a receive of a store or a queue found no holder: pushes why (see
** mp_held_why), else that none is left (or, without /proc, that this
** process did not inherit it). */
void mp_push_unreached(lua_State *L, pid_t pid, int fd, pid_t mpid, int mfd) {
  if (mp_held_why(L, pid, fd, mpid, mfd)) return;
#if MP_HAVE_PROC_FD
  lua_pushfstring(L, "no live process holds it any more (process %d sent it, "
                  "process %d made it)", (int)pid, (int)mpid);
#else
  lua_pushliteral(L, "not inherited by this process");
#endif
}

/* 64 bits from the kernel's random source; 0 when there is none. */
uint64_t mp_random64(void) {
  uint64_t r = 0;
#if MP_LINUX
  if (getrandom(&r, sizeof r, 0) != (ssize_t)sizeof r) r = 0;
#else
  if (getentropy(&r, sizeof r) != 0) r = 0;
#endif
  return r;
}

/* ---------------------------------------------------------------------
** Notifiers: a descriptor that an object makes readable when it may be
** ready, for event loops: a pipe, both ends non-blocking and close-on-exec,
** inherited by fork. A pipe, not an eventfd (which costs the same to
** signal and drain, and one descriptor fewer): a process that did not
** inherit it can reopen a pipe through /proc/<pid>/fd (opened read-write,
** one descriptor is both ends of the same pipe), an eventfd not (ENXIO).
** --------------------------------------------------------------------- */

int mp_notifier_open(mp_notifier *n) {
  int fds[2];
  if (mp_cloexec_pipe(fds) < 0) return -1;
  fcntl(fds[0], F_SETFL, fcntl(fds[0], F_GETFL) | O_NONBLOCK);
  fcntl(fds[1], F_SETFL, fcntl(fds[1], F_GETFL) | O_NONBLOCK);
  n->rfd = fds[0];
  n->wfd = fds[1];
  return 0;
}

/* Opens the notifier that process pid holds as descriptor fd, if it is
** the pipe with device dev and inode ino, as one descriptor for both
** ends (mp_open_held: Linux only). 0, or -1 with errno set. */
int mp_notifier_reach(mp_notifier *n, pid_t pid, int fd, uint64_t dev, uint64_t ino) {
  int f = mp_open_held(pid, fd, dev, ino);
  if (f < 0) return -1;
  fcntl(f, F_SETFL, fcntl(f, F_GETFL) | O_NONBLOCK);
  n->rfd = n->wfd = f;
  return 0;
}

/* Makes it readable (a full pipe is readable already). */
void mp_notifier_signal(mp_notifier *n) {
  char one = 1;
  ssize_t r;
  do r = write(n->wfd, &one, 1);
  while (r < 0 && errno == EINTR);
}

/* Makes it unreadable again. */
void mp_notifier_drain(mp_notifier *n) {
  char buf[64];
  while (read(n->rfd, buf, sizeof buf) > 0 || errno == EINTR) {}
}

void mp_notifier_close(mp_notifier *n) {
  if (n->rfd >= 0) close(n->rfd);
  if (n->wfd >= 0 && n->wfd != n->rfd) close(n->wfd);
  n->rfd = n->wfd = -1;
}

/* ---------------------------------------------------------------------
** Lua files' descriptors
** --------------------------------------------------------------------- */

/* core.fileno(file) -> the descriptor under a Lua file */
static int l_fileno(lua_State *L) {
  luaL_Stream *s = (luaL_Stream *)mp_checkudata(L, 1, LUA_FILEHANDLE);
  luaL_argcheck(L, s->closef != NULL, 1, "file is closed");
  lua_pushinteger(L, fileno(s->f));
  return 1;
}

/* core.read_nowait(file, [max]) -> what can be read now from the file's
** descriptor without waiting, up to max bytes ("" when nothing is there
** yet), or nil at end of file, or nil, message, errno. It reads the
** descriptor itself, past the file's buffer: for a pipe an event loop
** watches, not mixed with file:read. */
static int l_read_nowait(lua_State *L) {
  luaL_Stream *s = (luaL_Stream *)mp_checkudata(L, 1, LUA_FILEHANDLE);
  lua_Integer max = luaL_optinteger(L, 2, 65536);
  struct pollfd p;
  luaL_Buffer b;
  ssize_t r;
  luaL_argcheck(L, s->closef != NULL, 1, "file is closed");
  luaL_argcheck(L, max >= 1 && max <= (1 << 30), 2, "max must be in 1..2^30");
  p.fd = fileno(s->f);
  p.events = POLLIN;
  p.revents = 0;
  if (poll(&p, 1, 0) <= 0) return lua_pushliteral(L, ""), 1;
  do r = read(p.fd, luaL_buffinitsize(L, &b, (size_t)max), (size_t)max);
  while (r < 0 && errno == EINTR);
  if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) r = 0;
  else if (r < 0) return mp_fail(L, "cannot read");
  else if (r == 0) return lua_pushnil(L), 1;
  luaL_pushresultsize(&b, (size_t)r);
  return 1;
}

void mp_open_fd(lua_State *L) {
  lua_pushcfunction(L, l_fileno);
  lua_setfield(L, -2, "fileno");
  lua_pushcfunction(L, l_read_nowait);
  lua_setfield(L, -2, "read_nowait");
}
