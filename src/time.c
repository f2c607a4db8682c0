/*
** time.c: clocks, deadlines and sleep for mproc.core.
** Every timeout in mproc is a deadline on the monotonic clock, so a wait
** that is interrupted by a signal resumes with the time that is left.
*/
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <math.h>
#include <time.h>

#include "mproc.h"

/* macOS has no clock_nanosleep: sleep relative, recomputing what is left. */
#if defined(__APPLE__)
#define MP_HAVE_CLOCK_NANOSLEEP 0
#else
#define MP_HAVE_CLOCK_NANOSLEEP 1
#endif

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
  t = (double)luaL_checknumber(L, idx);
  luaL_argcheck(L, t == t, idx, "timeout is not a number (nan)");
  if (t < 0) t = 0;
  if (t > MP_FOREVER) return -1;
  return mp_monotonic() + t;
}

/* Sleeps until the monotonic clock reaches deadline, through signals. */
static void sleep_until(double deadline) {
#if MP_HAVE_CLOCK_NANOSLEEP
  struct timespec ts = mp_timespec(deadline);
  while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
    ;
#else
  double left;
  while ((left = deadline - mp_monotonic()) > 0) {
    struct timespec ts = mp_timespec(left);
    nanosleep(&ts, NULL);
  }
#endif
}

static int l_sleep(lua_State *L) {
  double s = (double)luaL_checknumber(L, 1);
  luaL_argcheck(L, s == s && s >= 0, 1, "seconds must be a number >= 0");
  while (s > MP_FOREVER) sleep_until(mp_monotonic() + MP_FOREVER);
  if (s > 0) sleep_until(mp_monotonic() + s);
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

static const luaL_Reg time_funcs[] = {
  {"sleep", l_sleep},
  {"time", l_time},
  {"monotonic", l_monotonic},
  {NULL, NULL}
};

void mp_open_time(lua_State *L) {
  luaL_setfuncs(L, time_funcs, 0);
}
