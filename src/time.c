/*
** time.c: clocks, deadlines and sleep for mproc.core.
** Every timeout in mproc is a deadline on the monotonic clock, so a wait
** that is interrupted by a signal resumes with the time that is left.
**
** Interrupts: lua.c answers Ctrl-C by setting a hook that raises
** "interrupted!" at the next Lua instruction, which a wait inside C never
** reaches. So every blocking wait in mproc is cut into slices of at most
** MP_SLICE seconds (futex and mutex waits are restarted by the kernel
** after a signal; poll and sleep return EINTR), and between slices, where
** it holds nothing, calls mp_interrupt_point, which runs a Lua function
** when a hook is set so that the hook fires there.
*/
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <string.h>
#include <time.h>

#include "mproc.h"

/* macOS has no clock_nanosleep: sleep relative, recomputing what is left. */
#if defined(__APPLE__) || defined(MP_PORTABLE)
#define MP_HAVE_CLOCK_NANOSLEEP 0
#else
#define MP_HAVE_CLOCK_NANOSLEEP 1
#endif

/* The empty Lua function that mp_interrupt_point calls. */
static const char noop_key = 0;

static double timespec_seconds(const struct timespec *ts) {
  return (double)ts->tv_sec + (double)ts->tv_nsec / 1e9;
}

struct timespec mp_timespec(double s) {
  struct timespec ts;
  double whole = floor(s);
  ts.tv_sec = (time_t)whole;
  ts.tv_nsec = (long)((s - whole) * 1e9);
  if (ts.tv_nsec >= 1000000000L) { ts.tv_sec++; ts.tv_nsec -= 1000000000L; }
  return ts;
}

double mp_monotonic(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return timespec_seconds(&ts);
}

double mp_walltime(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return timespec_seconds(&ts);
}

int mp_poll_ms(double deadline) {
  double left;
  if (deadline < 0) return -1;
  left = deadline - mp_monotonic();
  if (left <= 0) return 0;
  if (left > 2e6) return 2000000000;
  return (int)ceil(left * 1000.0);
}

/* Longer than this is for ever: it keeps deadlines within what a time_t
** and an int of milliseconds can hold (math.huge included). */
#define MP_FOREVER 1e9

double mp_opt_deadline(lua_State *L, int idx) {
  double t;
  if (lua_isnoneornil(L, idx)) return -1;
  luaL_checktype(L, idx, LUA_TNUMBER);  /* not "1": the Lua layer refuses it too */
  t = (double)lua_tonumber(L, idx);
  luaL_argcheck(L, t == t, idx, "timeout is not a number (nan)");
  if (t < 0) t = 0;
  if (t > MP_FOREVER) return -1;
  return mp_monotonic() + t;
}

double mp_slice_deadline(double deadline) {
  double s = mp_monotonic() + MP_SLICE;
  return (deadline < 0 || s < deadline) ? s : deadline;
}

/* The hook set on L, or else lua.c's Ctrl-C hook on the main thread,
** moved to L when L is a coroutine: the interrupt is then raised (and
** caught, or not) once, in the coroutine that waits, as in a main thread
** that waits. */
static lua_Hook pending_hook(lua_State *L) {
  lua_State *M;
  lua_Hook h = lua_gethook(L);
  if (h != NULL) return h;
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
  M = lua_tothread(L, -1);
  lua_pop(L, 1);
  if (M == NULL || M == L || !mp_is_ctrl_c_hook(M)) return NULL;
  h = lua_gethook(M);
  lua_sethook(M, NULL, 0, 0);
  lua_sethook(L, h, MP_CTRL_C_MASK, 1);
  return h;
}

/* mp_is_interrupt: see mproc.h. */
int mp_is_interrupt(lua_State *L, int idx) {
  static const char tail[] = "interrupted!";
  const size_t tn = sizeof tail - 1;
  const char *s, *nl;
  size_t n;
  if (lua_type(L, idx) != LUA_TSTRING) return 0;
  s = lua_tolstring(L, idx, &n);
  if ((nl = memchr(s, '\n', n)) != NULL) n = (size_t)(nl - s);
  if (n < tn || memcmp(s + n - tn, tail, tn) != 0) return 0;
  return n == tn || (n >= tn + 2 && memcmp(s + n - tn - 2, ": ", 2) == 0);
}

int mp_interrupt_pending(lua_State *L) {
  return pending_hook(L) != NULL;
}

void mp_interrupt_point(lua_State *L) {
  if (pending_hook(L) == NULL) return;
  lua_rawgetp(L, LUA_REGISTRYINDEX, &noop_key);
  lua_call(L, 0, 0);
}

/* Sleeps until the monotonic clock reaches deadline, or for one slice. */
static void sleep_slice(double deadline) {
  double until = mp_slice_deadline(deadline);
#if MP_HAVE_CLOCK_NANOSLEEP
  struct timespec ts = mp_timespec(until);
  clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
#else
  double left = until - mp_monotonic();
  if (left > 0) {
    struct timespec ts = mp_timespec(left);
    nanosleep(&ts, NULL);
  }
#endif
}

static int l_sleep(lua_State *L) {
  double s, deadline;
  luaL_checktype(L, 1, LUA_TNUMBER);
  s = (double)lua_tonumber(L, 1);
  luaL_argcheck(L, s == s && s >= 0, 1, "seconds must be a number >= 0");
  deadline = s > MP_FOREVER ? -1 : mp_monotonic() + s;
  while (deadline < 0 || mp_monotonic() < deadline) {
    sleep_slice(deadline);
    mp_interrupt_point(L);
  }
  return 0;
}

static int l_time(lua_State *L) {
  lua_pushnumber(L, (lua_Number)mp_walltime());
  return 1;
}

static int l_monotonic(lua_State *L) {
  lua_pushnumber(L, (lua_Number)mp_monotonic());
  return 1;
}

/* core.without_interrupt(f, ...): f(...) with SIGINT blocked, so that
** lua.c's Ctrl-C hook is not set, and cannot fire, while f runs: what f
** does (the pool handing results to their jobs) is done whole or, when
** the hook was set before, not begun. A Ctrl-C meanwhile is delivered as
** the mask comes back, and raised as this returns. f must not wait.
** mp_interrupt_held says SIGINT is blocked by this alone (the user had it
** unblocked): a process started meanwhile (f's code may require a module
** that starts one) is given SIGINT back, as its parent will have it. */
MP_HIDDEN int mp_interrupt_held = 0;

static int l_without_interrupt(lua_State *L) {
  sigset_t block, old;
  int st, was = mp_interrupt_held;
  luaL_checktype(L, 1, LUA_TFUNCTION);
  sigemptyset(&block);
  sigaddset(&block, SIGINT);
  sigprocmask(SIG_BLOCK, &block, &old);
  if (!sigismember(&old, SIGINT)) mp_interrupt_held = 1;
  st = lua_pcall(L, lua_gettop(L) - 1, LUA_MULTRET, 0);
  mp_interrupt_held = was;
  sigprocmask(SIG_SETMASK, &old, NULL);
  if (st != LUA_OK) return lua_error(L);
  return lua_gettop(L);
}

static const luaL_Reg time_funcs[] = {
  {"sleep", l_sleep},
  {"without_interrupt", l_without_interrupt},
  {"time", l_time},
  {"monotonic", l_monotonic},
  {NULL, NULL}
};

void mp_open_time(lua_State *L) {
  luaL_setfuncs(L, time_funcs, 0);
  luaL_loadbuffer(L, "return", 6, "=(a wait in mproc)");
  lua_rawsetp(L, LUA_REGISTRYINDEX, &noop_key);
}
