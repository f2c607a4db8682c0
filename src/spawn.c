/*
** spawn.c: core.spawn and core.communicate, for mproc.subprocess.
**
** core.spawn(spec) starts a program without fork's cost: vfork() shares
** the parent's memory instead of copying its page tables, so a parent
** holding a 1 GiB Lua heap spawns as fast as an empty one (glibc's
** posix_spawn does the same with clone(CLONE_VM|CLONE_VFORK)).  Unlike
** posix_spawn it covers every option (cwd, umask, close_fds, pass_fds,
** sessions, groups) with one code path.  The parent sleeps until the
** child execs or exits; a failure is left in the shared plan, so the
** parent reports it synchronously, naming the program.
**
** A preexec_fn (Lua code) cannot run in a vfork child, which shares the
** Lua state: that case forks, and the failure travels back through a
** close-on-exec pipe instead, as in CPython's _posixsubprocess.
**
** Between vfork/fork and exec the child makes only async-signal-safe
** calls (the preexec_fn aside, as in Python).
*/
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "mproc.h"

extern char **environ;

/* ---------------------------------------------------------------------
** Portability
** --------------------------------------------------------------------- */
#if MP_LINUX && defined(SYS_close_range)
static int close_range_fds(unsigned lo, unsigned hi) {
  return (int)syscall(SYS_close_range, lo, hi, 0);
}
#else
static int close_range_fds(unsigned lo, unsigned hi) {
  (void)lo; (void)hi; errno = ENOSYS; return -1;
}
#endif



/* Output buffers: on Linux one private mapping grown with mremap (no
** copying) and marked for huge pages, since page faults dominate the cost
** of reading 64 MiB; elsewhere realloc. */
#if MP_LINUX && defined(MREMAP_MAYMOVE) && defined(MADV_HUGEPAGE)
static char *region_grow(char *p, size_t old, size_t cap) {
  void *q = p ? mremap(p, old, cap, MREMAP_MAYMOVE)
              : mmap(NULL, cap, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (q == MAP_FAILED) return NULL;
  if (cap >= (4u << 20)) (void)madvise(q, cap, MADV_HUGEPAGE);
  return (char *)q;
}
static void region_free(char *p, size_t cap) { munmap(p, cap); }
/* Marks the whole 2 MiB pages inside [p, p+n) for huge pages. */
static void advise_huge(void *p, size_t n) {
  uintptr_t lo = ((uintptr_t)p + (2u << 20) - 1) & ~(uintptr_t)((2u << 20) - 1);
  uintptr_t hi = ((uintptr_t)p + n) & ~(uintptr_t)((2u << 20) - 1);
  if (hi > lo) (void)madvise((void *)lo, hi - lo, MADV_HUGEPAGE);
}
#else
static char *region_grow(char *p, size_t old, size_t cap) {
  (void)old;
  return (char *)realloc(p, cap);
}
static void region_free(char *p, size_t cap) { (void)cap; free(p); }
static void advise_huge(void *p, size_t n) { (void)p; (void)n; }
#endif

/* Takes back a SIGPIPE known to be pending (and blocked): at once. */
#if defined(__APPLE__) || defined(MP_PORTABLE)
static void take_signal(const sigset_t *set) {
  int sig;
  (void)sigwait(set, &sig);
}
#else
static void take_signal(const sigset_t *set) {
  struct timespec zero = {0, 0};
  (void)sigtimedwait(set, NULL, &zero);
}
#endif

/* Python's values for the special stdio targets: exported as core.PIPE,
** core.STDOUT and core.DEVNULL, which subprocess.lua hands to its users. */
#define MP_INHERIT (-100)
#define MP_PIPE (-1)
#define MP_STDOUT (-2)
#define MP_DEVNULL (-3)

/* What failed in the child; the parent turns it into a message, and
** names the step for the Lua side (which adds hints of its own). */
enum { STEP_NONE, STEP_EXEC, STEP_CHDIR, STEP_DUP, STEP_SESSION,
       STEP_GROUP, STEP_PREEXEC };
static const char *const step_names[] = {
  "none", "exec", "chdir", "dup", "session", "group", "preexec"
};

#define MSG_MAX 512

/* Everything the child needs, prepared by the parent in Lua-owned memory. */
typedef struct {
  const char *name;        /* the program as the user named it */
  const char **exe;        /* paths to try, in order (PATH resolved) */
  int nexe;
  char **argv, **envp;     /* envp NULL: the parent's environ */
  const char *cwd;
  int src[3];              /* per child fd 0..2: MP_INHERIT, MP_STDOUT, fd */
  int *keep;               /* sorted fds >= 3 that close_fds leaves */
  int nkeep;               /* pass_fds, then the fork path's error pipe
                              (keep_error_pipe: read_keep leaves room) */
  int close_fds, new_session, pgroup, umask_;
  int maxfd;
  sigset_t oldmask;
  int err_fd;              /* fork path: the error pipe; vfork path: -1 */
  lua_State *L;            /* fork path: for preexec_fn at stack index 1 */
  volatile int step, err;  /* vfork path: the failure, in shared memory */
  char msg[MSG_MAX];       /* fork path: preexec_fn's error text */
} plan;

static void sort_ints(int *v, int n) {
  int i, j;
  for (i = 1; i < n; i++) {
    int x = v[i];
    for (j = i; j > 0 && v[j - 1] > x; j--) v[j] = v[j - 1];
    v[j] = x;
  }
}

/* ---------------------------------------------------------------------
** The child: only async-signal-safe calls until exec
** --------------------------------------------------------------------- */

typedef struct { int step, err; char msg[MSG_MAX]; } failure;

static void child_fail(plan *p, int step, int err, const char *msg) {
  if (p->err_fd >= 0) {
    failure f;
    size_t n = 0;
    memset(&f, 0, sizeof f);
    f.step = step; f.err = err;
    while (msg && msg[n] && n < MSG_MAX - 1) { f.msg[n] = msg[n]; n++; }
    while (write(p->err_fd, &f, sizeof f) < 0 && errno == EINTR)
      ;
  } else {
    p->err = err;
    p->step = step;
  }
  _exit(127);
}

/* The parent's handlers must not run in the child (a vfork child shares
** the parent's memory): handled signals go back to their default. */
static void child_signals(plan *p) {
  sigset_t mask;
  int sig;
  for (sig = 1; sig < NSIG; sig++) {
    struct sigaction sa;
    if (sigaction(sig, NULL, &sa) != 0) continue;
    if (sa.sa_handler == SIG_IGN || sa.sa_handler == SIG_DFL) continue;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_DFL;
    sigaction(sig, &sa, NULL);
  }
  /* a copy: a vfork child shares p with the parent, which restores it */
  mask = p->oldmask;
  if (mp_interrupt_held) sigdelset(&mask, SIGINT);   /* see time.c */
  sigprocmask(SIG_SETMASK, &mask, NULL);
}

/* Puts the chosen descriptors on 0, 1, 2.  A source that is itself one of
** 0..2 (and not its own target) moves out of the way first. */
static void child_stdio(plan *p) {
  int i, src[3];
  for (i = 0; i < 3; i++) {
    int s = src[i] = p->src[i];
    if (s >= 0 && s < 3 && s != i) {
      s = fcntl(s, F_DUPFD_CLOEXEC, 3);
      if (s < 0) child_fail(p, STEP_DUP, errno, NULL);
      src[i] = s;
    }
  }
  for (i = 0; i < 3; i++) {
    int s = src[i], r;
    if (s == MP_STDOUT) s = 1;
    if (s == MP_INHERIT) continue;
    if (s == i) r = fcntl(i, F_SETFD, 0);
    else while ((r = dup2(s, i)) < 0 && errno == EINTR)
      ;
    if (r < 0) child_fail(p, STEP_DUP, errno, NULL);
  }
}

static void close_span(plan *p, int lo, int hi) {
  int fd;
  if (close_range_fds((unsigned)lo, (unsigned)hi) == 0) return;
  if (hi > p->maxfd) hi = p->maxfd;
  for (fd = lo; fd <= hi; fd++) close(fd);
}

/* close_fds: everything from 3 up goes, but for keep[]. */
static void child_close_fds(plan *p) {
  int lo = 3, i;
  for (i = 0; i < p->nkeep; i++)
    if (p->keep[i] != p->err_fd && fcntl(p->keep[i], F_SETFD, 0) < 0)
      child_fail(p, STEP_DUP, errno, NULL);
  if (!p->close_fds) return;
  for (i = 0; i <= p->nkeep; i++) {
    int hi = i < p->nkeep ? p->keep[i] - 1 : INT_MAX;
    if (hi >= lo) close_span(p, lo, hi);
    if (i < p->nkeep && p->keep[i] + 1 > lo) lo = p->keep[i] + 1;
  }
}

static void child_preexec(plan *p) {
  lua_State *L = p->L;
  lua_pushvalue(L, 2);
  if (lua_pcall(L, 0, 0, 0) != LUA_OK) {
    const char *m = lua_tostring(L, -1);
    child_fail(p, STEP_PREEXEC, 0, m ? m : "(error object is not a string)");
  }
}

/* Tries each candidate path; reports the most telling errno, as execvp
** does: a program found but not runnable beats "not found". */
static void child_exec(plan *p) {
  int i, saved = 0, e = ENOENT;
  char **envp = p->envp ? p->envp : environ;
  for (i = 0; i < p->nexe; i++) {
    execve(p->exe[i], p->argv, envp);
    e = errno;
    if (e != ENOENT && e != ENOTDIR && saved == 0) saved = e;
  }
  child_fail(p, STEP_EXEC, saved ? saved : e, NULL);
}

static void child_main(plan *p) {
  child_signals(p);
  child_stdio(p);
  if (p->new_session && setsid() < 0) child_fail(p, STEP_SESSION, errno, NULL);
  if (p->pgroup >= 0 && setpgid(0, p->pgroup) < 0)
    child_fail(p, STEP_GROUP, errno, NULL);
  if (p->umask_ >= 0) umask((mode_t)p->umask_);
  if (p->cwd && chdir(p->cwd) < 0) child_fail(p, STEP_CHDIR, errno, NULL);
  if (p->L) child_preexec(p);
  child_close_fds(p);
  child_exec(p);
}

/* ---------------------------------------------------------------------
** The parent: starting the child, learning whether it runs
** --------------------------------------------------------------------- */

/* vfork: returns when the child has exec'd or failed (plan->step set). */
static pid_t start_vfork(plan *p) {
  pid_t pid = vfork();
  if (pid == 0) child_main(p);
  return pid;
}

/* The fork path's error pipe fd, kept open in the child until exec: into
** the room read_keep left in keep[]. */
static void keep_error_pipe(plan *p, int fd) {
  p->err_fd = fd;
  p->keep[p->nkeep++] = fd;
  sort_ints(p->keep, p->nkeep);
}

/* fork, for preexec_fn: reads the error pipe until exec closes it. */
static pid_t start_fork(plan *p) {
  int fds[2];
  failure f;
  ssize_t n;
  pid_t pid;
  if (mp_cloexec_pipe(fds) < 0) return -1;
  keep_error_pipe(p, fds[1]);
  pid = fork();
  if (pid == 0) { close(fds[0]); child_main(p); }
  close(fds[1]);
  if (pid > 0) {
    while ((n = read(fds[0], &f, sizeof f)) < 0 && errno == EINTR)
      ;
    if (n == (ssize_t)sizeof f) {
      p->step = f.step; p->err = f.err;
      memcpy(p->msg, f.msg, MSG_MAX);
      p->msg[MSG_MAX - 1] = '\0';
    }
  }
  close(fds[0]);
  return pid;
}

/* Starts the child with every signal blocked, so no handler of ours can
** run on the shared stack before the child has reset them. */
static pid_t start_child(plan *p) {
  sigset_t all;
  pid_t pid;
  int e;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, &p->oldmask);
  pid = p->L ? start_fork(p) : start_vfork(p);
  e = errno;
  pthread_sigmask(SIG_SETMASK, &p->oldmask, NULL);
  if (pid > 0 && p->step != STEP_NONE) {
    int st;
    mp_waitpid(pid, &st, 0);
  }
  errno = e;
  return pid;
}

/* nil, "cannot run 'prog': why", errno, step; a preexec_fn's error has no
** errno (nil), only its message. */
static int spawn_failure(lua_State *L, plan *p) {
  const char *why = strerror(p->err);
  lua_pushnil(L);
  switch (p->step) {
    case STEP_CHDIR:
      lua_pushfstring(L, "cannot run '%s': cannot change directory to '%s': %s",
                      p->name, p->cwd, why);
      break;
    case STEP_PREEXEC:
      lua_pushfstring(L, "cannot run '%s': preexec_fn failed: %s", p->name, p->msg);
      break;
    case STEP_DUP:
      lua_pushfstring(L, "cannot run '%s': cannot set up descriptors: %s", p->name, why);
      break;
    case STEP_SESSION:
      lua_pushfstring(L, "cannot run '%s': cannot start a session: %s", p->name, why);
      break;
    case STEP_GROUP:
      lua_pushfstring(L, "cannot run '%s': cannot set the process group: %s", p->name, why);
      break;
    default:
      lua_pushfstring(L, "cannot run '%s': %s", p->name, why);
  }
  if (p->step == STEP_PREEXEC) lua_pushnil(L);
  else lua_pushinteger(L, p->err);
  lua_pushstring(L, step_names[p->step]);
  return 4;
}

/* ---------------------------------------------------------------------
** Reading the spec table into a plan
** --------------------------------------------------------------------- */

/* The string at the top of the stack as a C string; a NUL inside would end
** it early (argv "a\0b" reaching the child as "a"), so it raises.  The Lua
** layer refuses these first, naming the user's argument. */
static const char *c_string(lua_State *L, const char *field) {
  size_t len;
  const char *s = lua_tolstring(L, -1, &len);
  if (s != NULL && strlen(s) != len)
    luaL_argerror(L, 1, lua_pushfstring(L, "%s contains a NUL byte", field));
  return s;
}

/* spec[field], a list of strings, as a NULL-terminated array in a userdata
** left on the stack (the strings stay anchored in spec). */
static const char **string_list(lua_State *L, const char *field, int *n, int opt) {
  const char **v;
  lua_Integer i, len;
  if (lua_getfield(L, 1, field) == LUA_TNIL && opt) { lua_pop(L, 1); *n = 0; return NULL; }
  luaL_argcheck(L, lua_istable(L, -1), 1, field);
  len = luaL_len(L, -1);
  v = (const char **)lua_newuserdatauv(L, (size_t)(len + 1) * sizeof *v, 0);
  for (i = 1; i <= len; i++) {
    luaL_argcheck(L, lua_geti(L, -2, i) == LUA_TSTRING, 1, field);
    v[i - 1] = c_string(L, field);
    lua_pop(L, 1);
  }
  v[len] = NULL;
  lua_remove(L, -2);
  *n = (int)len;
  return v;
}

static int int_field(lua_State *L, const char *field, int dflt) {
  int isnum, v;
  lua_getfield(L, 1, field);
  v = lua_isnil(L, -1) ? dflt : (int)lua_tointegerx(L, -1, &isnum);
  luaL_argcheck(L, lua_isnil(L, -1) || isnum, 1, field);
  lua_pop(L, 1);
  return v;
}

static int bool_field(lua_State *L, const char *field) {
  int v;
  lua_getfield(L, 1, field);
  v = lua_toboolean(L, -1);
  lua_pop(L, 1);
  return v;
}

static const char *string_field(lua_State *L, const char *field) {
  const char *s;
  lua_getfield(L, 1, field);
  s = c_string(L, field);
  lua_pop(L, 1);
  return s;
}

/* pass_fds, with room for one more: the fork path's error pipe, which
** start_fork adds (keep_error_pipe). */
static void read_keep(lua_State *L, plan *p) {
  lua_Integer i, len = 0;
  if (lua_getfield(L, 1, "pass_fds") == LUA_TTABLE) len = luaL_len(L, -1);
  p->keep = (int *)lua_newuserdatauv(L, (size_t)(len + 1) * sizeof(int), 0);
  p->nkeep = 0;
  for (i = 1; i <= len; i++) {
    int isnum, fd;
    lua_geti(L, -2, i);
    fd = (int)lua_tointegerx(L, -1, &isnum);
    luaL_argcheck(L, isnum && fd >= 0, 1, "pass_fds");
    lua_pop(L, 1);
    if (fd >= 3) p->keep[p->nkeep++] = fd;
  }
  sort_ints(p->keep, p->nkeep);
  lua_remove(L, -2);
}

static void read_plan(lua_State *L, plan *p) {
  static const char *const stdio[3] = {"stdin", "stdout", "stderr"};
  struct rlimit rl;
  int n, i;
  memset(p, 0, sizeof *p);
  p->name = string_field(L, "name");
  luaL_argcheck(L, p->name != NULL, 1, "name");
  p->argv = (char **)string_list(L, "argv", &n, 0);
  luaL_argcheck(L, n > 0, 1, "argv is empty");
  p->exe = string_list(L, "exe", &p->nexe, 0);
  p->envp = (char **)string_list(L, "env", &n, 1);
  p->cwd = string_field(L, "cwd");
  for (i = 0; i < 3; i++) p->src[i] = int_field(L, stdio[i], MP_INHERIT);
  read_keep(L, p);
  p->close_fds = bool_field(L, "close_fds");
  p->new_session = bool_field(L, "start_new_session");
  p->pgroup = int_field(L, "process_group", -1);
  p->umask_ = int_field(L, "umask", -1);
  p->maxfd = getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
             rl.rlim_cur < 65536 ? (int)rl.rlim_cur : 65536;
  p->err_fd = -1;
}

/* ---------------------------------------------------------------------
** SIGPIPE: writing to a child that has gone must fail with EPIPE, not
** kill the script.  Around communicate and the closing of a child's stdin
** (whose FILE may still hold bytes to flush) SIGPIPE is blocked; one we
** raised is taken back before the mask is restored, so the user's mask,
** handlers and pending signals are as they were.
** --------------------------------------------------------------------- */

typedef struct { sigset_t set, old; int had; } pipe_guard;

static void guard_begin(pipe_guard *g) {
  sigset_t pending;
  sigemptyset(&g->set);
  sigaddset(&g->set, SIGPIPE);
  sigpending(&pending);
  g->had = sigismember(&pending, SIGPIPE); /* the user's: left pending */
  pthread_sigmask(SIG_BLOCK, &g->set, &g->old);
}

/* Keeps errno. */
static void guard_end(pipe_guard *g) {
  sigset_t pending;
  int e = errno;
  sigpending(&pending);
  if (!g->had && sigismember(&pending, SIGPIPE)) take_signal(&g->set);
  pthread_sigmask(SIG_SETMASK, &g->old, NULL);
  errno = e;
}

/* ---------------------------------------------------------------------
** Lua files for the parent's ends of the pipes
** --------------------------------------------------------------------- */

static int stream_close(lua_State *L) {
  luaL_Stream *s = (luaL_Stream *)mp_checkudata(L, 1, LUA_FILEHANDLE);
  return luaL_fileresult(L, fclose(s->f) == 0, NULL);
}

/* The child's stdin: flushing what the FILE holds to a child that has
** gone gives nil, "Broken pipe", EPIPE instead of a SIGPIPE. */
static int stream_close_in(lua_State *L) {
  luaL_Stream *s = (luaL_Stream *)mp_checkudata(L, 1, LUA_FILEHANDLE);
  pipe_guard g;
  int ok;
  guard_begin(&g);
  ok = fclose(s->f) == 0;
  guard_end(&g);
  return luaL_fileresult(L, ok, NULL);
}

/* A closed Lua file, made before the descriptor it will hold. */
static luaL_Stream *new_stream(lua_State *L) {
  luaL_Stream *s = (luaL_Stream *)lua_newuserdatauv(L, sizeof *s, 0);
  s->f = NULL;
  s->closef = NULL;
  luaL_setmetatable(L, LUA_FILEHANDLE);
  return s;
}

static void close_stream(luaL_Stream *s) {
  if (s->closef == NULL) return;
  s->closef = NULL;
  fclose(s->f);
}

/* The pipes and /dev/null one spawn needs: the child's ends go into
** plan->src, the parent's become the Lua files in s[]. */
typedef struct {
  luaL_Stream *s[3];
  int child_end[3];
  int devnull;
} stdio_set;

static void close_child_ends(stdio_set *io) {
  int i;
  for (i = 0; i < 3; i++)
    if (io->child_end[i] >= 0) { close(io->child_end[i]); io->child_end[i] = -1; }
  if (io->devnull >= 0) { close(io->devnull); io->devnull = -1; }
}

static void close_parent_ends(stdio_set *io) {
  int i;
  for (i = 0; i < 3; i++)
    if (io->s[i]) close_stream(io->s[i]);
}

static int open_pipe(plan *p, stdio_set *io, int i) {
  int fds[2], mine = i == 0 ? 1 : 0;
  if (mp_cloexec_pipe(fds) < 0) return -1;
  io->s[i]->f = fdopen(fds[mine], i == 0 ? "w" : "r");
  if (io->s[i]->f == NULL) {
    int e = errno;
    close(fds[0]); close(fds[1]);
    errno = e;
    return -1;
  }
  io->s[i]->closef = i == 0 ? stream_close_in : stream_close;
  io->child_end[i] = fds[1 - mine];
  p->src[i] = fds[1 - mine];
  return 0;
}

static int open_stdio(plan *p, stdio_set *io) {
  int i;
  for (i = 0; i < 3; i++) {
    if (p->src[i] == MP_PIPE) {
      if (open_pipe(p, io, i) < 0) return -1;
    } else if (p->src[i] == MP_DEVNULL) {
      if (io->devnull < 0 &&
          (io->devnull = open("/dev/null", O_RDWR | O_CLOEXEC)) < 0)
        return -1;
      p->src[i] = io->devnull;
    }
  }
  return 0;
}

/* ---------------------------------------------------------------------
** core.spawn(spec) -> child, stdin|false, stdout|false, stderr|false
** or nil, message, errno: a step ("exec", "chdir", ...) follows when the
** child failed before exec. The child is also left in spec.child
** --------------------------------------------------------------------- */

/* Pushes the child handle and one closed file per piped stream. */
static int push_results(lua_State *L, plan *p, stdio_set *io) {
  int i, base;
  mp_child_push(L);
  base = lua_gettop(L);
  for (i = 0; i < 3; i++) {
    io->child_end[i] = -1;
    io->s[i] = NULL;
    if (p->src[i] == MP_PIPE) io->s[i] = new_stream(L);
    else lua_pushboolean(L, 0);
  }
  io->devnull = -1;
  return base;
}

static int l_spawn(lua_State *L) {
  plan *p;
  stdio_set io;
  int base, e;
  pid_t pid;
  luaL_checktype(L, 1, LUA_TTABLE);
  if (!lua_isnoneornil(L, 2)) luaL_checktype(L, 2, LUA_TFUNCTION);
  lua_settop(L, 2);
  p = (plan *)lua_newuserdatauv(L, sizeof *p, 0);
  read_plan(L, p);
  if (!lua_isnil(L, 2)) p->L = L;
  base = push_results(L, p, &io);
  if (open_stdio(p, &io) < 0) {
    e = errno;
    close_child_ends(&io);
    close_parent_ends(&io);
    errno = e;
    return mp_fail(L, "cannot create pipes for the child");
  }
  fflush(NULL);
  pid = start_child(p);
  e = errno;
  close_child_ends(&io);
  if (pid < 0 || p->step != STEP_NONE) {
    close_parent_ends(&io);
    if (pid >= 0) return spawn_failure(L, p);
    errno = e;
    return mp_fail(L, "cannot start a process");
  }
  mp_child_attach(L, base, pid);
  lua_pushvalue(L, base);   /* spec.child: for the Lua layer, should its */
  lua_setfield(L, 1, "child");  /* results be lost (see subprocess.lua) */
  return 4;
}

/* ---------------------------------------------------------------------
** Output buffers: what communicate has read of one stream, kept between
** calls.  Grown with realloc (mremap for big blocks: no copying) and
** marked for huge pages, so 64 MiB costs few page faults.
** --------------------------------------------------------------------- */
#define OUTPUT_MT "mproc.Buffer"

typedef struct { char *p; size_t n, cap; } buffer;

static int m_buffer_gc(lua_State *L) {
  buffer *b = (buffer *)mp_checkudata(L, 1, OUTPUT_MT);
  if (b->p) region_free(b->p, b->cap);
  b->p = NULL;
  b->n = b->cap = 0;
  return 0;
}

/* A string of many MiB is a fresh mapping (glibc maps each afresh) whose
** every 4 KiB page faults while lua_pushlstring copies into it: 16384
** faults for 64 MiB, as long as the whole read. For that one allocation
** the state's allocator is wrapped to mark the block for huge pages
** first, 512 times fewer faults. The wrapper only forwards otherwise; a
** protected call puts the allocator back even if the push raises. */
#define HUGE_STRING (4u << 20)

typedef struct {
  lua_Alloc f;
  void *ud;
  const char *s;
  size_t n;
} big_push;

static void *huge_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  big_push *w = (big_push *)ud;
  void *p = w->f(w->ud, ptr, osize, nsize);
  if (p != NULL && ptr == NULL && nsize >= HUGE_STRING) advise_huge(p, nsize);
  return p;
}

static int push_protected(lua_State *L) {
  big_push *w = (big_push *)lua_touserdata(L, 1);
  lua_pushlstring(L, w->s, w->n);
  return 1;
}

static void push_big_string(lua_State *L, const char *s, size_t n) {
  big_push w;
  int r;
  if (n < HUGE_STRING) { lua_pushlstring(L, s, n); return; }
  w.f = lua_getallocf(L, &w.ud);
  w.s = s;
  w.n = n;
  lua_pushcfunction(L, push_protected);
  lua_pushlightuserdata(L, &w);
  lua_setallocf(L, huge_alloc, &w);
  r = lua_pcall(L, 1, 1, 0);
  lua_setallocf(L, w.f, w.ud);
  if (r != LUA_OK) lua_error(L);
}

/* buffer:text() -> what was read so far */
static int m_buffer_text(lua_State *L) {
  buffer *b = (buffer *)mp_checkudata(L, 1, OUTPUT_MT);
  push_big_string(L, b->p ? b->p : "", b->n);
  return 1;
}

static int m_buffer_tostring(lua_State *L) {
  buffer *b = (buffer *)mp_checkudata(L, 1, OUTPUT_MT);
  lua_pushfstring(L, "mproc.Buffer (%I bytes)", (lua_Integer)b->n);
  return 1;
}

/* Room for at least want more bytes; -1 when memory runs out. */
static int buffer_reserve(buffer *b, size_t want) {
  size_t cap = b->cap ? b->cap : 65536;
  char *p;
  if (b->cap - b->n >= want) return 0;
  while (cap - b->n < want) cap *= 2;
  p = region_grow(b->p, b->cap, cap);
  if (p == NULL) { errno = ENOMEM; return -1; }
  b->p = p;
  b->cap = cap;
  return 0;
}

/* state[field] as a buffer, made on first use. */
static buffer *state_buffer(lua_State *L, const char *field) {
  buffer *b;
  if (lua_getfield(L, 1, field) == LUA_TUSERDATA) {
    b = (buffer *)mp_checkudata(L, -1, OUTPUT_MT);
    lua_pop(L, 1);
    return b;
  }
  lua_pop(L, 1);
  b = (buffer *)lua_newuserdatauv(L, sizeof *b, 0);
  b->p = NULL;
  b->n = b->cap = 0;
  luaL_setmetatable(L, OUTPUT_MT);
  lua_setfield(L, 1, field);
  return b;
}

/* ---------------------------------------------------------------------
** core.communicate(state, [timeout]) -> true, or nil, "timeout", or
** nil, message, errno.  state = {stdin = file, input = s, pos = n,
** stdout = file, stderr = file}: what is read goes to the buffers
** state.out and state.err (buffer:text() gives it) and what is written
** advances pos, so a call cut short by its timeout loses nothing for the
** next one.  Files are closed at EOF (stdin once the input is written).
** --------------------------------------------------------------------- */

#define CHUNK (1 << 20)

typedef struct {
  luaL_Stream *s;
  buffer *b;               /* reading channels */
  int fd, flags;
  int dry;                 /* reading: the FILE's own buffer is empty */
} chan;

/* state.input and state.pos, read before the loop and pos written back
** after it, so the loop itself makes no Lua call that could raise. */
typedef struct {
  const char *s;
  size_t len, pos;
} input;

static const char *const chan_names[3] = {"stdin", "stdout", "stderr"};

static void chan_done(chan *c) {
  if (c->s) close_stream(c->s);
  c->s = NULL;
  c->fd = -1;
}

/* Reads through the Lua FILE, so bytes the user's own reads left in its
** buffer come first, until a short read shows that buffer empty (dry):
** reads then go straight to the descriptor.  One fread a round, so the
** deadline is looked at in between.  0: more may come, 1: EOF, -1: error. */
static int chan_drain(chan *c) {
  FILE *f = c->s->f;
  size_t room, k;
  if (buffer_reserve(c->b, 65536) < 0) return -1;
  room = c->b->cap - c->b->n;
  errno = 0;
  k = fread(c->b->p + c->b->n, 1, room, f);
  c->b->n += k;
  c->dry = k < room;
  if (feof(f)) return 1;
  if (ferror(f)) {
    if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) return -1;
    clearerr(f);
  }
  return 0;
}

/* Finds channel i in state[name]: a file still open, and for a reading
** channel its buffer (made here: this may raise, so before the loop). */
static void chan_find(lua_State *L, chan *c, int i) {
  lua_getfield(L, 1, chan_names[i]);
  c->s = (luaL_Stream *)luaL_testudata(L, -1, LUA_FILEHANDLE);
  lua_pop(L, 1); /* state keeps it */
  c->fd = -1;
  c->b = NULL;
  if (c->s == NULL || c->s->closef == NULL) { c->s = NULL; return; }
  if (i > 0) c->b = state_buffer(L, i == 1 ? "out" : "err");
}

/* Makes channel i non-blocking; stdin first flushes what the user wrote
** to its FILE (a child gone: input done).  0: go on, 1: done, -1: error. */
static int chan_open(chan *c, int i) {
  if (c->s == NULL) return 0;
  if (i == 0 && fflush(c->s->f) != 0) return errno == EPIPE ? 1 : -1;
  c->fd = fileno(c->s->f);
  c->flags = fcntl(c->fd, F_GETFL);
  fcntl(c->fd, F_SETFL, c->flags | O_NONBLOCK);
  mp_grow_pipe(c->fd);
  c->dry = 0;
  return 0;
}

/* Back to blocking, for a user who reads the file after a timeout. */
static void chan_restore(chan *c) {
  if (c->fd >= 0) fcntl(c->fd, F_SETFL, c->flags);
}

/* Reads straight into the buffer.  0: more may come, 1: EOF, -1: error. */
static int chan_read(chan *c) {
  ssize_t k;
  if (!c->dry) return chan_drain(c);
  if (buffer_reserve(c->b, 65536) < 0) return -1;
  k = read(c->fd, c->b->p + c->b->n, c->b->cap - c->b->n);
  if (k > 0) { c->b->n += (size_t)k; return 0; }
  if (k == 0) return 1;
  return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? 0 : -1;
}

static void input_read(lua_State *L, input *in) {
  lua_Integer pos;
  in->s = NULL;
  in->len = in->pos = 0;
  if (lua_getfield(L, 1, "input") == LUA_TSTRING)
    in->s = lua_tolstring(L, -1, &in->len); /* state keeps it */
  lua_getfield(L, 1, "pos");
  pos = lua_tointeger(L, -1);
  lua_pop(L, 2);
  if (in->s && pos > 0) in->pos = (size_t)pos < in->len ? (size_t)pos : in->len;
}

/* Writes what the pipe takes.  1: all written or the reader is gone. */
static int chan_write(chan *c, input *in) {
  size_t left = in->len - in->pos;
  ssize_t w;
  if (left == 0) return 1;
  w = write(c->fd, in->s + in->pos, left > CHUNK ? CHUNK : left);
  if (w < 0)
    return errno == EPIPE ? 1
         : (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) ? 0 : -1;
  in->pos += (size_t)w;
  return in->pos >= in->len;
}

static int chans_open(const chan *c) {
  return c[0].fd >= 0 || c[1].fd >= 0 || c[2].fd >= 0;
}

/* One round of poll over the open channels (not sleeping while a FILE
** may hold bytes), then the deadline: a child that never stops writing
** cannot keep communicate past it.  1 when all are done, 0 to go on, -2
** at the deadline, -3 when Ctrl-C may strike (a slice passed, or a signal
** came, with a hook pending), -1 on an error (errno). */
static int comm_round(lua_State *L, chan *c, input *in, double deadline) {
  struct pollfd pf[3];
  int i, n = 0, r, who[3], wet = 0;
  for (i = 0; i < 3; i++) {
    if (c[i].fd < 0) continue;
    pf[n].fd = c[i].fd;
    pf[n].events = i == 0 ? POLLOUT : POLLIN;
    pf[n].revents = 0;
    wet |= i > 0 && !c[i].dry;
    who[n++] = i;
  }
  if (n == 0) return 1;
  r = poll(pf, (nfds_t)n, wet ? 0 : mp_poll_ms(mp_slice_deadline(deadline)));
  if (r < 0 && errno != EINTR) return -1;
  if (r <= 0 && !wet && mp_interrupt_pending(L)) return -3;
  for (i = 0; i < n; i++) {
    chan *ch = &c[who[i]];
    if (!pf[i].revents && (who[i] == 0 || ch->dry)) continue;
    r = who[i] == 0 ? chan_write(ch, in) : chan_read(ch);
    if (r < 0) return -1;
    if (r > 0) chan_done(ch);
  }
  if (!chans_open(c)) return 1;
  return deadline >= 0 && mp_monotonic() >= deadline ? -2 : 0;
}

/* Opens the channels and moves data until all are done, the deadline, or
** an error; leaves the descriptors as they were. */
static int comm_run(lua_State *L, chan *c, input *in, double deadline) {
  int i, r = 0, e;
  for (i = 0; i < 3 && r >= 0; i++) {
    r = chan_open(&c[i], i);
    if (r > 0) chan_done(&c[i]);
  }
  if (r >= 0) {
    if (c[0].fd >= 0 && in->pos >= in->len) chan_done(&c[0]);
    while ((r = comm_round(L, c, in, deadline)) == 0)
      ;
  }
  e = errno;
  for (i = 0; i < 3; i++) chan_restore(&c[i]);
  errno = e;
  return r;
}

static int l_communicate(lua_State *L) {
  chan c[3];
  input in;
  pipe_guard g;
  int i, r, e;
  double deadline;
  luaL_checktype(L, 1, LUA_TTABLE);
  deadline = mp_opt_deadline(L, 2);
  do {  /* Ctrl-C strikes between rounds, all restored, what came kept */
    lua_settop(L, 2);
    for (i = 0; i < 3; i++) chan_find(L, &c[i], i);
    input_read(L, &in);
    guard_begin(&g);
    r = comm_run(L, c, &in, deadline);
    guard_end(&g);
    e = errno;
    if (in.s) {
      lua_pushinteger(L, (lua_Integer)in.pos);
      lua_setfield(L, 1, "pos");
    }
    if (r == -3) mp_interrupt_point(L);
  } while (r == -3);
  if (r == 1) { lua_pushboolean(L, 1); return 1; }
  if (r == -2) { lua_pushnil(L); lua_pushliteral(L, "timeout"); return 2; }
  errno = e;
  return mp_fail(L, "cannot communicate with the child");
}

/* environ() -> a new table of this process's environment, name -> value:
** os.environ's copy for env = (Lua's os has getenv only). An entry with
** no '=' is skipped; the first of two with the same name wins, as getenv. */
static int l_environ(lua_State *L) {
  char **e;
  lua_newtable(L);
  for (e = environ; *e; e++) {
    const char *eq = strchr(*e, '=');
    if (!eq || eq == *e) continue;
    lua_pushlstring(L, *e, (size_t)(eq - *e));
    if (lua_rawget(L, -2) != LUA_TNIL) { lua_pop(L, 1); continue; }
    lua_pop(L, 1);
    lua_pushlstring(L, *e, (size_t)(eq - *e));
    lua_pushstring(L, eq + 1);
    lua_rawset(L, -3);
  }
  return 1;
}

static const luaL_Reg spawn_funcs[] = {
  {"environ", l_environ},
  {"spawn", l_spawn},
  {"communicate", l_communicate},
  {NULL, NULL}
};

static const luaL_Reg buffer_methods[] = {
  {"text", m_buffer_text},
  {"free", m_buffer_gc},
  {NULL, NULL}
};

static const luaL_Reg buffer_meta[] = {
  {"__gc", m_buffer_gc},
  {"__close", m_buffer_gc},
  {"__tostring", m_buffer_tostring},
  {NULL, NULL}
};

void mp_open_spawn(lua_State *L) {
  mp_type(L, OUTPUT_MT, buffer_meta, buffer_methods, NULL);
  luaL_setfuncs(L, spawn_funcs, 0);
  lua_pushinteger(L, MP_PIPE);
  lua_setfield(L, -2, "PIPE");
  lua_pushinteger(L, MP_STDOUT);
  lua_setfield(L, -2, "STDOUT");
  lua_pushinteger(L, MP_DEVNULL);
  lua_setfield(L, -2, "DEVNULL");
  lua_pushinteger(L, ENOENT);      /* an exec step's "not found" */
  lua_setfield(L, -2, "ENOENT");
}
