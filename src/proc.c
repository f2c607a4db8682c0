/*
** proc.c: forked children for mproc.core.
** core.fork() forks the calling Lua state; the parent gets an mproc.Child
** handle (pid, sentinel descriptor, exit status), the child gets false and
** later leaves through core.child_main(), which never returns.  A table of
** live children, kept in C, lets the exit hook apply Python's rule when the
** parent ends: terminate daemonic children, then wait for all of them.
*/
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "mproc.h"

/* ---------------------------------------------------------------------
** Portability: the sentinel is a pidfd where the kernel has one (readable
** once the child ends, inherited by nobody), else the read end of a pipe
** whose write end only the child holds.
** --------------------------------------------------------------------- */
#if MP_LINUX && defined(SYS_pidfd_open) && \
    defined(SYS_pidfd_send_signal)
#define MP_HAVE_PIDFD 1
static int pidfd_open(pid_t pid) {
  return (int)syscall(SYS_pidfd_open, pid, 0);
}
static int pidfd_send_signal(int fd, int sig) {
  return (int)syscall(SYS_pidfd_send_signal, fd, sig, NULL, 0);
}
#else
#define MP_HAVE_PIDFD 0
static int pidfd_open(pid_t pid) { (void)pid; errno = ENOSYS; return -1; }
static int pidfd_send_signal(int fd, int sig) {
  (void)fd; (void)sig; errno = ENOSYS; return -1;
}
#endif

/* The CPUs this process may run on: its affinity mask where the system
** has sched_getaffinity (Python's os.process_cpu_count), else 0 (unknown). */
#if MP_LINUX
#include <sched.h>
static long affinity_cpus(void) {
  int ncpu;
  for (ncpu = 1024; ncpu <= (1 << 22); ncpu *= 2) {  /* masks grow past CPU_SETSIZE */
    cpu_set_t *set = CPU_ALLOC(ncpu);
    size_t size = CPU_ALLOC_SIZE(ncpu);
    long n = -1;
    if (set == NULL) return 0;
    if (sched_getaffinity(0, size, set) == 0) n = CPU_COUNT_S(size, set);
    else if (errno != EINVAL) n = 0;
    CPU_FREE(set);
    if (n >= 0) return n;
  }
  return 0;
}
#else
static long affinity_cpus(void) { return 0; }
#endif


#define CHILD_MT "mproc.Child"

typedef struct {
  pid_t pid;     /* 0 until forked */
  int fd;        /* sentinel; -1 once closed */
  int status;    /* wait status, valid when reaped */
  int reaped;
  int daemon;
} mp_child;

static int use_pidfd = 0;      /* decided once, at module open */
static int devnull_fd = -1;    /* kept open: a child's stdin is one dup2 */
static int my_sentinel_w = -1; /* in a child: the pipe end our parent reads */

/* ---------------------------------------------------------------------
** The table of live children, for the exit hook
** --------------------------------------------------------------------- */
typedef struct { pid_t pid; int daemon; } live_child;

/* The first children are kept in static storage, beside the module data
** that every fork writes anyway (the fork handlers' counters): the parent
** writes the table right after each fork, and a heap page there would be
** one more page for it to copy each time. */
#define LIVE_STATIC 16
static live_child live_first[LIVE_STATIC];
static live_child *live = live_first;
static size_t nlive = 0, caplive = LIVE_STATIC;
static pid_t live_owner = 0;

/* Room for one more child, made before forking: live_add after the fork
** then cannot fail. */
static int live_reserve(void) {
  if (nlive == caplive) {
    size_t ncap = caplive * 2;
    live_child *n = malloc(ncap * sizeof *n);
    if (n == NULL) return -1;
    memcpy(n, live, nlive * sizeof *n);
    if (live != live_first) free(live);
    live = n;
    caplive = ncap;
  }
  return 0;
}

/* Back to the static storage, the table empty. */
static void live_release(void) {
  if (live != live_first) free(live);
  live = live_first;
  nlive = 0;
  caplive = LIVE_STATIC;
}

/* Adds a child into the room live_reserve made. */
static void live_add(pid_t pid, int daemon) {
  live[nlive].pid = pid;
  live[nlive].daemon = daemon;
  nlive++;
}

static void live_remove(pid_t pid) {
  size_t i;
  for (i = 0; i < nlive; i++) {
    if (live[i].pid == pid) {
      live[i] = live[--nlive];
      return;
    }
  }
}

/* waitpid through EINTR; spawn.c reaps with it too. */
pid_t mp_waitpid(pid_t pid, int *status, int flags) {
  pid_t r;
  while ((r = waitpid(pid, status, flags)) < 0 && errno == EINTR)
    ;
  return r;
}

/* Whether pid is a child of ours that still runs (one that ended is
** reaped on the way). Only such a pid may be signalled by number: once a
** child is reaped (by the kernel at once when SIGCHLD is ignored) its pid
** may be another process's. */
static int running_child(pid_t pid) {
  int st;
  return mp_waitpid(pid, &st, WNOHANG) == 0;
}

/* Ctrl-C while the script's end waits for its children: counted, so that
** the wait stops them rather than leave them running without a parent. */
static volatile sig_atomic_t exit_interrupts;

static void on_exit_interrupt(int sig) {
  (void)sig;
  exit_interrupts++;
}

/* Sends sig to every child in the table from i on that still runs. */
static void signal_children(size_t i, int sig, int daemons_only) {
  for (; i < nlive; i++)
    if ((!daemons_only || live[i].daemon) && running_child(live[i].pid))
      kill(live[i].pid, sig);
}

/* Python's rule at exit: terminate daemonic children, then wait for all.
** Runs from exit_hook and from the Lua state's close; only in the process
** that forked them. Ctrl-C during that wait (once the script is over,
** lua.c has given SIGINT back its default action, which would kill this
** process and leave the children running) terminates the children, a
** second one kills them; once they are reaped the interrupt is raised as
** it came. A SIGINT this process ignores stays ignored. */
static void join_children(void) {
  struct sigaction sa, old;
  int hooked = 0, seen = 0;
  size_t i;
  if (live_owner != getpid()) return;
  signal_children(0, SIGTERM, 1);
  if (nlive > 0 && sigaction(SIGINT, NULL, &old) == 0 && old.sa_handler != SIG_IGN) {
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_exit_interrupt;   /* no SA_RESTART: waitpid returns */
    sigemptyset(&sa.sa_mask);
    exit_interrupts = 0;
    hooked = sigaction(SIGINT, &sa, NULL) == 0;
  }
  for (i = 0; i < nlive; i++) {
    int st;
    do {   /* an interrupt counted before this wait is acted on too */
      if (exit_interrupts > seen) {
        seen = exit_interrupts;
        signal_children(i, seen == 1 ? SIGTERM : SIGKILL, 0);
      }
    } while (waitpid(live[i].pid, &st, 0) < 0 && errno == EINTR);
  }
  nlive = 0;
  if (!hooked) return;
  sigaction(SIGINT, &old, NULL);
  if (exit_interrupts > 0) {
    fflush(NULL);
    raise(SIGINT);
  }
}

/* At the process's end (atexit, os.exit included, and a child's end):
** join_children, then this process's entries in the registry of holders
** go, as the objects' own drops do not run (a child's _exit skips the Lua
** state's close; exit() skips it unless os.exit(code, true)). Not at a
** Lua state's close: another state in this process may hold objects. */
static void exit_hook(void) {
  join_children();
  mp_holders_forget_all();
}

/* At a Lua state's close the table's memory goes too (another state may
** start children later); at the process's end it need not: freeing it
** would be one more page written by every child on its way out. */
static int l_exit_hook_gc(lua_State *L) {
  (void)L;
  join_children();
  if (live_owner == getpid()) live_release();
  return 0;
}

/* ---------------------------------------------------------------------
** The child side of a fork
** --------------------------------------------------------------------- */

/* What every child of mproc does first: it has no children of its own
** yet, its stdout is line-buffered so nothing printed is lost when it is
** terminated, and its stdin is /dev/null, as with Python's fork start. */
static void mp_after_fork_child(void) {
  nlive = 0;
  if (mp_interrupt_held) {   /* forked inside core.without_interrupt */
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, SIGINT);
    sigprocmask(SIG_UNBLOCK, &s, NULL);
    mp_interrupt_held = 0;
  }
  live_owner = getpid();
  if (my_sentinel_w >= 0) { close(my_sentinel_w); my_sentinel_w = -1; }
  setvbuf(stdout, NULL, _IOLBF, BUFSIZ);
  if (devnull_fd >= 0) dup2(devnull_fd, STDIN_FILENO);
  /* clearing writes stdin's FILE, a page the child would copy: only when
  ** there is something to clear (the _unlocked tests are inline in glibc:
  ** no code to fault in; the child has one thread) */
  if (feof_unlocked(stdin) || ferror_unlocked(stdin)) clearerr(stdin);
}

/* Drops lua.c's Ctrl-C hook (on L and the main thread) that a SIGINT to
** the parent set before the fork: it is the parent's, and would fire here,
** in the child, as core.fork returns. Here, not in time.c: the child runs
** it, and beside l_fork it is code the child has faulted in already. */
static void forget_interrupt(lua_State *L) {
  lua_State *M;
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
  M = lua_tothread(L, -1);
  lua_pop(L, 1);
  if (mp_is_ctrl_c_hook(L)) lua_sethook(L, NULL, 0, 0);
  if (M != NULL && mp_is_ctrl_c_hook(M)) lua_sethook(M, NULL, 0, 0);
}

/* Checks what core.child_main and core.fork take at idx: f, then msgh
** (nil or a function). 1 if a handler is given. */
static int check_child_fn(lua_State *L, int idx) {
  luaL_checktype(L, idx, LUA_TFUNCTION);
  if (lua_isnoneornil(L, idx + 1)) return 0;
  luaL_checktype(L, idx + 1, LUA_TFUNCTION);
  return 1;
}

/* The error at the top reached no message handler (Lua calls none for a
** memory error): msgh, at idx, is called on it now, so it is reported as
** any other. 1 if msgh gave an exit code, which replaces the error. */
static int handle_late(lua_State *L, int idx) {
  lua_pushvalue(L, idx);
  lua_insert(L, -2);
  return lua_pcall(L, 1, 1, 0) == LUA_OK && lua_isinteger(L, -1);
}

/* In the child: the stack from first on is [msgh, f, args...]; calls
** f(args...) under msgh (nil: none). f returns the exit code (an integer;
** nothing or nil: 0), or what to run next: g, args... (g anything else,
** called with those args under msgh, at f's level; it exits 0). Either
** way the call is made from C, so every function the child runs is one
** level below core.fork: the child writes one CallInfo, not two or three
** (each a heap page it copies). LUA_OK or the error status. */
static int call_child(lua_State *L, int first, int msgh) {
  int h = msgh ? first : 0, t;
  int status = lua_pcall(L, lua_gettop(L) - first - 1, LUA_MULTRET, h);
  if (status != LUA_OK) return status;
  t = lua_type(L, first + 1);  /* LUA_TNONE when f returned nothing */
  if (t == LUA_TNONE || t == LUA_TNIL || lua_isinteger(L, first + 1)) return LUA_OK;
  if ((status = lua_pcall(L, lua_gettop(L) - first - 1, 0, h)) == LUA_OK)
    lua_pushinteger(L, 0);
  return status;
}

/* In the child: the stack from first on is [f, msgh, args...]; runs
** f(args...) under the message handler msgh (nil: none), as call_child
** says, then exits with the code it gives; if it raised, with the integer
** msgh made of the error (the handler has reported it), else 1 and the
** error printed here. Either way after the child's own exit hook. With a
** handler, f need not call xpcall: one call level less for the child to
** write. lua_pcall, not pcallk: a yield inside f cannot leave the child. */
static void run_child(lua_State *L, int first, int msgh) {
  int code = 1;
  lua_settop(L, lua_gettop(L) < first + 1 ? first + 1 : lua_gettop(L));
  lua_pushvalue(L, first);   /* [f, msgh, args] -> [msgh, f, args] */
  lua_pushvalue(L, first + 1);
  lua_replace(L, first);
  lua_replace(L, first + 1);
  if (call_child(L, first, msgh) == LUA_OK) {
    code = lua_isinteger(L, first + 1) ? (int)lua_tointeger(L, first + 1) : 0;
  } else if (msgh && (lua_isinteger(L, -1) || handle_late(L, first))) {
    code = (int)lua_tointeger(L, -1);
  } else {
    const char *msg = lua_tostring(L, -1);
    fprintf(stderr, "mproc: child %ld: %s\n", (long)getpid(),
            msg ? msg : "(error object is not a string)");
  }
  exit_hook();
  fflush(NULL);
  _exit(code & 0xff);
}

/* core.child_main(f, msgh, ...): in a child forked by core.fork(daemon),
** runs f(...) under msgh and exits (run_child); never returns. */
static int l_child_main(lua_State *L) {
  run_child(L, 1, check_child_fn(L, 1));
  return 0;
}

/* ---------------------------------------------------------------------
** mproc.Child handles
** --------------------------------------------------------------------- */

static mp_child *check_child(lua_State *L) {
  return (mp_child *)mp_checkudata(L, 1, CHILD_MT);
}

static int exitcode_of(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return -WTERMSIG(status);
  return 0;
}

static void mark_reaped(mp_child *c, int status) {
  c->status = status;
  c->reaped = 1;
  live_remove(c->pid);
}

/* c ended and was reaped elsewhere: by the kernel when SIGCHLD is ignored
** (or SA_NOCLDWAIT is set), or by someone's waitpid(-1). Its status is
** lost; like Python's subprocess, mproc reports 0. */
static void mark_gone(mp_child *c) { mark_reaped(c, 0); }

/* Reaps c if it has ended; blocking waits until it has. 1: reaped. */
/* Whether the sentinel fd says the child ended (a pidfd: it exited; a
** pipe: its write end, which only the child held, is closed). */
static int sentinel_ended(int fd) {
  struct pollfd p;
  int r;
  p.fd = fd;
  p.events = POLLIN;
  p.revents = 0;
  do r = poll(&p, 1, 0); while (r < 0 && errno == EINTR);
  return r != 0;
}

/* ECHILD: not a child of this process, or reaped elsewhere. A handle a
** sibling or a grandchild inherited asks the sentinel whether the child
** still runs (it did take that for an end: is_alive() false and kill() a
** no-op on a running sibling); the exit status is its parent's alone. */
static int child_reap(mp_child *c, int blocking) {
  int st;
  pid_t r;
  if (c->reaped) return 1;
  r = mp_waitpid(c->pid, &st, blocking ? 0 : WNOHANG);
  if (r == c->pid) { mark_reaped(c, st); return 1; }
  if (r < 0 && errno == ECHILD) {
    if (c->fd >= 0 && !sentinel_ended(c->fd)) return 0;
    mark_gone(c);
    return 1;
  }
  return 0;
}

/* Waits for the sentinel to become readable until deadline, or one
** slice, or a signal. 1: ready. */
static int wait_readable(int fd, double deadline) {
  struct pollfd p;
  p.fd = fd;
  p.events = POLLIN;
  p.revents = 0;
  return poll(&p, 1, mp_poll_ms(mp_slice_deadline(deadline))) > 0;
}

static int push_status(lua_State *L, mp_child *c) {
  lua_pushinteger(L, exitcode_of(c->status));
  return 1;
}

/* child:poll() -> exitcode, or nil while it runs */
static int m_child_poll(lua_State *L) {
  mp_child *c = check_child(L);
  if (child_reap(c, 0)) return push_status(L, c);
  lua_pushnil(L);
  return 1;
}

/* Sleeps step seconds, or less when the deadline comes sooner. */
static void nap_until(double deadline, double step) {
  double left = deadline - mp_monotonic();
  struct timespec ts;
  if (left <= 0) return;
  ts = mp_timespec(left < step ? left : step);
  nanosleep(&ts, NULL);
}

/* child:wait([timeout]) -> exitcode, or nil, "timeout" */
static int m_child_wait(lua_State *L) {
  mp_child *c = check_child(L);
  double deadline = mp_opt_deadline(L, 2);
  if (c->reaped) return push_status(L, c);
  for (;;) {  /* no descriptor (a spawned child without pidfd): poll the pid */
    if (c->fd >= 0) wait_readable(c->fd, deadline);
    else nap_until(mp_slice_deadline(deadline), 0.005);
    if (child_reap(c, 0)) return push_status(L, c);
    if (deadline >= 0 && mp_poll_ms(deadline) == 0) break;
    mp_interrupt_point(L);
  }
  lua_pushnil(L);
  lua_pushliteral(L, "timeout");
  return 2;
}

/* Sends sig to c unless it has ended: through its pidfd where it has one
** (which cannot name another process), else by pid once a WNOHANG reap
** said it still runs. 0, or -1 with errno. */
static int child_kill(mp_child *c, int sig) {
  if (c->reaped) return 0;
  if (use_pidfd && c->fd >= 0) {
    if (pidfd_send_signal(c->fd, sig) == 0 || errno == ESRCH) return 0;
    return -1;
  }
  if (child_reap(c, 0)) return 0;
  return kill(c->pid, sig) == 0 || errno == ESRCH ? 0 : -1;
}

/* child:signal(sig) -> true; a child that ended is not signalled (its pid
** may belong to another process by now). */
static int m_child_signal(lua_State *L) {
  mp_child *c = check_child(L);
  int sig = (int)luaL_checkinteger(L, 2);
  if (child_kill(c, sig) < 0) return mp_fail(L, "cannot signal child");
  lua_pushboolean(L, 1);
  return 1;
}

static int m_child_fileno(lua_State *L) {
  mp_child *c = check_child(L);
  lua_pushinteger(L, c->fd);
  return 1;
}

static int m_child_pid(lua_State *L) {
  lua_pushinteger(L, check_child(L)->pid);
  return 1;
}

/* __gc, __close and close(): never blocks. A child still running stays in
** the live table, for the exit hook to wait for. */
static int m_child_close(lua_State *L) {
  mp_child *c = check_child(L);
  if (c->fd >= 0) { close(c->fd); c->fd = -1; }
  if (c->pid > 0) child_reap(c, 0);
  return 0;
}

static int m_child_tostring(lua_State *L) {
  mp_child *c = check_child(L);
  if (c->reaped)
    lua_pushfstring(L, "mproc.Child (pid %d, exitcode %d)", (int)c->pid,
                    exitcode_of(c->status));
  else
    lua_pushfstring(L, "mproc.Child (pid %d)", (int)c->pid);
  return 1;
}

/* ---------------------------------------------------------------------
** core.fork
** --------------------------------------------------------------------- */

/* Whether the kernel reaps children as they end (SIGCHLD ignored, or
** SA_NOCLDWAIT): a quick child could then be gone, and its pid reused,
** before the parent opens a pidfd for it. */
static int children_autoreaped(void) {
  struct sigaction sa;
  if (sigaction(SIGCHLD, NULL, &sa) < 0) return 0;
  return sa.sa_handler == SIG_IGN || (sa.sa_flags & SA_NOCLDWAIT) != 0;
}

/* In the child: waits at the gate until the parent holds a pidfd for us
** (it closes its end); a byte instead means the parent could not watch
** us, and we leave at once. */
static void pass_gate(int gate[2]) {
  char b;
  ssize_t r;
  if (gate[0] < 0) return;
  close(gate[1]);
  while ((r = read(gate[0], &b, 1)) < 0 && errno == EINTR)
    ;
  close(gate[0]);
  if (r > 0) _exit(127);
}

/* In the parent: lets the child at the gate go on (or, with stop, end). */
static void open_gate(int gate[2], int stop) {
  if (gate[1] < 0) return;
  if (stop && write(gate[1], "x", 1) < 0) { /* the child has ended */ }
  close(gate[1]);
  gate[1] = -1;
}

/* Gives c its sentinel: a pidfd where the kernel has them, else the read
** end of the pipe. 0, or -1 with errno (ESRCH: c was reaped already). */
static int open_sentinel_parent(mp_child *c, int pipe_r) {
  if (use_pidfd) {
    c->fd = pidfd_open(c->pid);
    return c->fd < 0 ? -1 : 0;
  }
  c->fd = pipe_r;
  return 0;
}

/* The fork happened but the child cannot be watched: it must not run on
** unseen. A child held at the gate is told to end; any other is still
** ours unreaped (the kernel does not reap it), so its pid is safe to kill. */
static int fork_unwatched(lua_State *L, mp_child *c, int gate[2]) {
  int e = errno;
  if (gate[1] >= 0) {
    open_gate(gate, 1);
    mark_gone(c);
  } else {
    kill(c->pid, SIGKILL);
    child_reap(c, 1);
  }
  errno = e;
  return mp_fail(L, "cannot open a pidfd for the child");
}

/* Forks; the child gets 0 and its pipe ends set up. With children reaped
** by the kernel, the child waits at a gate until the parent has its pidfd
** (gate[1], -1 otherwise, is the parent's end then). */
static pid_t fork_child(int fds[2], int gate[2]) {
  pid_t pid;
  fflush(NULL);
  pid = fork();
  if (pid < 0) {
    int e = errno, i;
    for (i = 0; i < 2; i++) {
      if (fds[i] >= 0) close(fds[i]);
      if (gate[i] >= 0) close(gate[i]);
    }
    errno = e;
    return pid;
  }
  if (pid == 0) {
    pass_gate(gate);
    /* first close what a parent's sentinel pipe left us (ours is new),
    ** then keep our own write end for as long as we live */
    mp_after_fork_child();
    if (fds[0] >= 0) { close(fds[0]); my_sentinel_w = fds[1]; }
    return 0;
  }
  if (fds[1] >= 0) close(fds[1]);
  if (gate[0] >= 0) close(gate[0]);
  return pid;
}

/* In the parent, before the fork: pushes math.randomseed, the global one
** as a Lua caller would find it (or nil), for the child to reseed with:
** looked up there, its name would be code and data (strcmp, core.so's
** strings) for the child to fault in. */
static void push_reseed(lua_State *L) {
  if (lua_getglobal(L, "math") == LUA_TTABLE) lua_getfield(L, -1, "randomseed");
  else lua_pushnil(L);
  lua_remove(L, -2);
}

/* In the child: f(pid, clock in nanoseconds), f the function push_reseed
** left at the top (else nothing), so that siblings and the parent draw apart.
** Called from here, at the level the child's work runs at (call_child):
** from Lua it would be a level deeper, a CallInfo more to write; and the
** pid and clock cost nothing the fork has not touched already (cell.c's
** handler read the clock). Pops f. */
static void reseed_random(lua_State *L) {
  struct timespec ts;
  if (lua_type(L, -1) != LUA_TFUNCTION) { lua_pop(L, 1); return; }
  clock_gettime(CLOCK_MONOTONIC, &ts);
  lua_pushinteger(L, getpid());
  lua_pushinteger(L, (lua_Integer)ts.tv_sec * 1000000000 + ts.tv_nsec);
  if (lua_pcall(L, 2, 0, 0) != LUA_OK) lua_pop(L, 1);
}

/* Exchanges the values of box.here[k] and box[k] for each name k in the
** list box.view (here, box and the list at those indexes), skipping those
** that are equal or that either lacks. core.fork calls it just before the
** fork, and in the parent again as the fork returns: the child is forked
** with box's view of its own state in box.here (the Lua layer's current
** process, its parent, its children...), and writes no page for it: the
** parent wrote that one already (every page a child writes is copied). No
** Lua code runs meanwhile: box.here has no metatable (the Lua layer's),
** the keys exist, nothing is allocated. Set, not raw set: lua_rawset
** writes a table's header too, a page more. */
static void swap_view(lua_State *L, int box, int here, int keys) {
  lua_Integer i, n = (lua_Integer)lua_rawlen(L, keys);
  for (i = 1; i <= n; i++) {
    lua_rawgeti(L, keys, i);        /* k */
    lua_pushvalue(L, -1);
    lua_gettable(L, box);           /* k, v */
    lua_pushvalue(L, -2);
    lua_gettable(L, here);          /* k, v, old */
    if (lua_isnil(L, -1) || lua_isnil(L, -2) || lua_rawequal(L, -1, -2)) {
      lua_pop(L, 3);
      continue;
    }
    lua_pushvalue(L, -3);
    lua_insert(L, -2);              /* k, v, k, old */
    lua_settable(L, box);           /* box[k] = old */
    lua_settable(L, here);          /* here[k] = v */
  }
}

/* Pushes box.here and box.view when box (at 2) has both (1), else nothing. */
static int view_of(lua_State *L) {
  if (!lua_istable(L, 2)) return 0;
  if (lua_getfield(L, 2, "here") == LUA_TTABLE) {
    if (lua_getfield(L, 2, "view") == LUA_TTABLE) return 1;
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  return 0;
}

/* In the child of core.fork, the stack [daemon, box, f?, msgh?, args...,
** handle, randomseed]: runs f if given (never returns), else returns false. */
static int fork_child_side(lua_State *L, int run, int msgh) {
  forget_interrupt(L);
  reseed_random(L);
  if (run) {
    lua_pop(L, 1);   /* the handle: [daemon, box, f, msgh, args...] */
    run_child(L, 3, msgh);
  }
  lua_pushboolean(L, 0);
  return 1;
}

/* In the parent of core.fork, the stack [..., handle c, randomseed]:
** records and watches child pid; returns the handle and the pid. */
static int fork_parent_side(lua_State *L, mp_child *c, pid_t pid, int fds[2], int gate[2]) {
  lua_pop(L, 1);   /* randomseed */
  c->pid = pid;
  live_add(pid, c->daemon);
  if (lua_istable(L, 2)) { lua_pushvalue(L, -1); lua_setfield(L, 2, "child"); }
  if (open_sentinel_parent(c, fds[0]) < 0) {
    if (errno != ESRCH) return fork_unwatched(L, c, gate);
    mark_gone(c);  /* reaped elsewhere already: never signal its pid */
  }
  open_gate(gate, 0);
  lua_pushinteger(L, pid);
  return 2;
}

/* core.fork([daemon], [box]) -> child handle and its pid in the parent;
** false in the child, math.random reseeded (reseed_random). core.fork(
** daemon, box, f, msgh, ...) -> the same in the parent; the child does not
** return but runs f(...) as core.child_main does (call_child: f may return
** what to run next): from here, not from a Lua caller, it writes no frame
** of that caller. With box.here and box.view tables, the child is forked
** with box's fields named in box.view set in box.here (swap_view), the
** parent keeps its own. The
** parent's handle is also left in box.child (box a table): lua.c's Ctrl-C
** hook may fire as this returns, and the caller can still find it. A
** child that has ended and been reaped before the parent could watch it
** gives a handle that reports it ended (exitcode 0: the status is lost). */
static int l_fork(lua_State *L) {
  int daemon = lua_toboolean(L, 1);
  int run = !lua_isnoneornil(L, 3), msgh = run && check_child_fn(L, 3);
  int fds[2] = {-1, -1}, gate[2] = {-1, -1}, view;
  pid_t pid;
  mp_child *c;
  if (!run) lua_settop(L, 2);
  c = (mp_child *)lua_newuserdatauv(L, sizeof *c, 0);
  c->pid = 0; c->fd = -1; c->status = 0; c->reaped = 0; c->daemon = daemon;
  luaL_setmetatable(L, CHILD_MT);
  push_reseed(L);    /* [..., handle, randomseed] */
  if (live_reserve() < 0) return mp_fail(L, "cannot fork");
  if (!use_pidfd && mp_cloexec_pipe(fds) < 0) return mp_fail(L, "cannot fork");
  if (use_pidfd && children_autoreaped() && mp_cloexec_pipe(gate) < 0)
    return mp_fail(L, "cannot fork");
  if ((view = view_of(L)) != 0) swap_view(L, 2, lua_gettop(L) - 1, lua_gettop(L));
  pid = fork_child(fds, gate);
  if (view) {   /* the parent's own, back */
    if (pid != 0) swap_view(L, 2, lua_gettop(L) - 1, lua_gettop(L));
    lua_pop(L, 2);
  }
  if (pid == 0) return fork_child_side(L, run, msgh);
  if (pid < 0) return mp_fail(L, "cannot fork");
  return fork_parent_side(L, c, pid, fds, gate);
}

/* ---------------------------------------------------------------------
** Handles for children spawned elsewhere (spawn.c).  They stay out of the
** live table: Python does not wait for Popen children at exit.
** --------------------------------------------------------------------- */

/* Pushes a blank handle (pid 0, no sentinel), made before the child is. */
void mp_child_push(lua_State *L) {
  mp_child *c = (mp_child *)lua_newuserdatauv(L, sizeof *c, 0);
  c->pid = 0; c->fd = -1; c->status = 0; c->reaped = 0; c->daemon = 0;
  luaL_setmetatable(L, CHILD_MT);
}

/* Gives the handle at idx its pid and, where there are pidfds, a sentinel.
** A child that cannot have one is still waited for by pid. */
void mp_child_attach(lua_State *L, int idx, pid_t pid) {
  mp_child *c = (mp_child *)mp_checkudata(L, idx, CHILD_MT);
  c->pid = pid;
  if (use_pidfd) c->fd = pidfd_open(pid);
}

/* ---------------------------------------------------------------------
** Process-wide functions
** --------------------------------------------------------------------- */

/* core.getpid(): the pid kept, where a pthread_atfork handler forgets it
** in every child (a fork by any library, not only mproc's), so asking costs
** no system call: the pool asks it on every call (a forked copy refuses
** to run). glibc removes a library's fork handlers when it is unloaded;
** elsewhere the pid is asked each time. */
#if MP_LINUX && defined(__GLIBC__)
static pid_t kept_pid = 0;
static int pid_forgotten_at_fork = 0;
static void forget_pid(void) { kept_pid = 0; }
static pid_t current_pid(void) {
  if (!pid_forgotten_at_fork) return getpid();
  if (kept_pid == 0) kept_pid = getpid();
  return kept_pid;
}
static void keep_pid(void) {
  if (!pid_forgotten_at_fork && pthread_atfork(NULL, NULL, forget_pid) == 0)
    pid_forgotten_at_fork = 1;
}
#else
static pid_t current_pid(void) { return getpid(); }
static void keep_pid(void) {}
#endif

static int l_getpid(lua_State *L) {
  lua_pushinteger(L, current_pid());
  return 1;
}

static int l_getppid(lua_State *L) {
  lua_pushinteger(L, getppid());
  return 1;
}

static int l_cpu_count(lua_State *L) {
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  lua_pushinteger(L, n > 0 ? n : 1);
  return 1;
}

long mp_process_cpus(void) {
  long n = affinity_cpus();
  if (n <= 0) n = sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? n : 1;
}

/* core.process_cpu_count() -> the CPUs this process may use; cpu_count()
** where the system cannot tell */
static int l_process_cpu_count(lua_State *L) {
  lua_pushinteger(L, mp_process_cpus());
  return 1;
}

/* core.kill(pid, sig) -> true, or nil, message, errno */
static int l_kill(lua_State *L) {
  pid_t pid = (pid_t)luaL_checkinteger(L, 1);
  int sig = (int)luaL_checkinteger(L, 2);
  if (kill(pid, sig) < 0) return mp_fail(L, "cannot signal process");
  lua_pushboolean(L, 1);
  return 1;
}

/* core.poll({fd, ...}, [timeout]) -> {index, ...} of the ready ones */
static int l_poll(lua_State *L) {
  lua_Integer i, n, k = 0;
  struct pollfd *p;
  double deadline;
  int r;
  luaL_checktype(L, 1, LUA_TTABLE);
  deadline = mp_opt_deadline(L, 2);
  n = luaL_len(L, 1);
  /* a __len can say anything: n * sizeof *p must not wrap around */
  luaL_argcheck(L, n >= 0 && n <= INT_MAX, 1, "too many descriptors");
  p = (struct pollfd *)lua_newuserdatauv(L, (size_t)(n ? n : 1) * sizeof *p, 0);
  for (i = 0; i < n; i++) {
    lua_geti(L, 1, i + 1);
    p[i].fd = (int)luaL_checkinteger(L, -1);
    luaL_argcheck(L, p[i].fd >= 0, 1, "descriptor is closed");
    p[i].events = POLLIN;
    p[i].revents = 0;
    lua_pop(L, 1);
  }
  while ((r = poll(p, (nfds_t)n, mp_poll_ms(mp_slice_deadline(deadline)))) == 0 ||
         (r < 0 && errno == EINTR)) {
    if (deadline >= 0 && mp_poll_ms(deadline) == 0) { r = 0; break; }
    mp_interrupt_point(L);
  }
  if (r < 0) return mp_fail(L, "cannot poll");
  lua_createtable(L, r, 0);
  for (i = 0; i < n; i++) {
    if (p[i].revents & POLLNVAL)
      return luaL_error(L, "descriptor %d is not open", p[i].fd);
    if (p[i].revents) {
      lua_pushinteger(L, i + 1);
      lua_rawseti(L, -2, ++k);
    }
  }
  return 1;
}

static const luaL_Reg child_methods[] = {
  {"poll", m_child_poll},
  {"wait", m_child_wait},
  {"signal", m_child_signal},
  {"fileno", m_child_fileno},
  {"pid", m_child_pid},
  {"close", m_child_close},
  {NULL, NULL}
};

static const luaL_Reg child_meta[] = {
  {"__gc", m_child_close},
  {"__close", m_child_close},
  {"__tostring", m_child_tostring},
  {NULL, NULL}
};

static const luaL_Reg proc_funcs[] = {
  {"fork", l_fork},
  {"child_main", l_child_main},
  {"getpid", l_getpid},
  {"getppid", l_getppid},
  {"cpu_count", l_cpu_count},
  {"process_cpu_count", l_process_cpu_count},
  {"kill", l_kill},
  {"poll", l_poll},
  {NULL, NULL}
};

static void open_devnull(void) {
  if (devnull_fd < 0) devnull_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
}

static void probe_pidfd(void) {
  int fd = pidfd_open(getpid());
  /* MPROC_NO_PIDFD=1 takes the pipe path, as systems without pidfd do:
  ** the specs test it that way on Linux */
  use_pidfd = MP_HAVE_PIDFD && fd >= 0 && getenv("MPROC_NO_PIDFD") == NULL;
  if (fd >= 0) close(fd);
}

/* The exit hook runs at exit() (os.exit included) and when the Lua state
** closes, whichever comes first; the second run finds nothing to do. */
static void install_exit_hook(lua_State *L) {
  static int registered = 0;
  if (!registered && atexit(exit_hook) == 0) registered = 1;
  if (live_owner == 0) live_owner = getpid();
  keep_pid();
  /* once per Lua state: the module may be loaded again (busted insulates
  ** each spec file), and the old hook, collected, would join every child
  ** in the middle of the program */
  mp_on_state_close(L, "mproc.exit_hook", l_exit_hook_gc);
}

/* ---------------------------------------------------------------------
** Signals, by the platform's numbers: core.signals {SIGTERM = 15, ...}
** and core.signal_names {[15] = "SIGTERM", ...}, both from this one list
** (a number's name is its first in the list: SIGABRT, not SIGIOT), and
** core.NSIG (numbers are below it). The Lua layer uses no number of its own.
** --------------------------------------------------------------------- */
#define SIG(s) {#s, s}
static const struct { const char *name; int num; } signal_list[] = {
  SIG(SIGHUP), SIG(SIGINT), SIG(SIGQUIT), SIG(SIGILL), SIG(SIGTRAP),
  SIG(SIGABRT), SIG(SIGBUS), SIG(SIGFPE), SIG(SIGKILL), SIG(SIGUSR1),
  SIG(SIGSEGV), SIG(SIGUSR2), SIG(SIGPIPE), SIG(SIGALRM), SIG(SIGTERM),
  SIG(SIGCHLD), SIG(SIGCONT), SIG(SIGSTOP), SIG(SIGTSTP), SIG(SIGTTIN),
  SIG(SIGTTOU), SIG(SIGURG), SIG(SIGXCPU), SIG(SIGXFSZ), SIG(SIGVTALRM),
  SIG(SIGPROF), SIG(SIGSYS),
#ifdef SIGWINCH
  SIG(SIGWINCH),
#endif
#ifdef SIGIO
  SIG(SIGIO),
#endif
#ifdef SIGPOLL
  SIG(SIGPOLL),
#endif
#ifdef SIGPWR
  SIG(SIGPWR),
#endif
#ifdef SIGSTKFLT
  SIG(SIGSTKFLT),
#endif
#ifdef SIGEMT
  SIG(SIGEMT),
#endif
#ifdef SIGINFO
  SIG(SIGINFO),
#endif
#ifdef SIGIOT
  SIG(SIGIOT),
#endif
};

static void open_signals(lua_State *L) {
  size_t i, n = sizeof signal_list / sizeof signal_list[0];
  lua_createtable(L, 0, (int)n);
  lua_createtable(L, 0, (int)n);
  for (i = 0; i < n; i++) {
    lua_pushinteger(L, signal_list[i].num);
    lua_setfield(L, -3, signal_list[i].name);
    if (lua_rawgeti(L, -1, signal_list[i].num) == LUA_TNIL) {
      lua_pushstring(L, signal_list[i].name);
      lua_rawseti(L, -3, signal_list[i].num);
    }
    lua_pop(L, 1);
  }
  lua_setfield(L, -3, "signal_names");
  lua_setfield(L, -2, "signals");
  lua_pushinteger(L, NSIG);
  lua_setfield(L, -2, "NSIG");
}

void mp_open_proc(lua_State *L) {
  mp_type(L, CHILD_MT, child_meta, child_methods, NULL);
  probe_pidfd();
  open_devnull();
  install_exit_hook(L);
  luaL_setfuncs(L, proc_funcs, 0);
  open_signals(L);
}
