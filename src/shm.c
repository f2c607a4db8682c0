/*
** shm.c: shared memory and the waits built on it, for the objects that
** live across processes (queues, locks, shared values).
** Segments are anonymous shared mappings: inherited by fork, gone when the
** last process that maps them ends, so none can leak past the processes.
** Mutexes are process-shared and robust: a holder killed by a signal does
** not wedge the others; the next locker learns of it (EOWNERDEAD).
** Waiting is a futex on a sequence word that every change bumps and that
** wakes all waiters: a waiter that dies takes no wake-up with it, which a
** pthread_cond_t in shared memory cannot promise.
*/
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "mproc.h"

/* ---------------------------------------------------------------------
** Portability: futex on Linux; elsewhere waits poll the word every ms.
** pthread_mutex_clocklock (glibc 2.30) takes the monotonic clock;
** elsewhere the deadline is turned into a CLOCK_REALTIME one.
** --------------------------------------------------------------------- */
#if MP_LINUX
#include <linux/futex.h>
#include <sys/syscall.h>
#define MP_HAVE_FUTEX 1
#else
#define MP_HAVE_FUTEX 0
#endif

#if defined(__GLIBC__) && !defined(MP_PORTABLE) && \
    (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 30))
#define MP_HAVE_CLOCKLOCK 1
#else
#define MP_HAVE_CLOCKLOCK 0
#endif

/* Robust process-shared mutexes have no fallback: without them a process
** killed holding a lock would wedge every other. macOS has none. */
#if defined(__APPLE__)
#error "mproc needs robust process-shared mutexes (pthread_mutexattr_setrobust), which macOS lacks; mproc runs on Linux (see README.md, Platforms)"
#endif

#ifndef MAP_ANONYMOUS
#define MAP_ANONYMOUS MAP_ANON
#endif
#ifndef MAP_NORESERVE
#define MAP_NORESERVE 0
#endif

/* ---------------------------------------------------------------------
** Segments
** --------------------------------------------------------------------- */

static void *shm_map(size_t size, int flags) {
  void *p = mmap(NULL, size, PROT_READ | PROT_WRITE,
                 MAP_SHARED | MAP_ANONYMOUS | flags, -1, 0);
  return p == MAP_FAILED ? NULL : p;
}

/* A zeroed shared segment, or NULL (errno set). */
void *mp_shm_alloc(size_t size) {
  return shm_map(size, 0);
}

/* The same with no swap reserved up front (MAP_NORESERVE where it
** exists): for big regions of which little may ever be touched. */
void *mp_shm_reserve(size_t size) {
  return shm_map(size, MAP_NORESERVE);
}

void mp_shm_free(void *p, size_t size) {
  if (p != NULL) munmap(p, size);
}

/* ---------------------------------------------------------------------
** Robust process-shared mutexes
** --------------------------------------------------------------------- */

int mp_mutex_init(pthread_mutex_t *m) {
  pthread_mutexattr_t a;
  int r = pthread_mutexattr_init(&a);
  if (r) return r;
  r = pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
  if (!r) r = pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
  if (!r) r = pthread_mutex_init(m, &a);
  pthread_mutexattr_destroy(&a);
  return r;
}

static int timed_lock(pthread_mutex_t *m, double deadline) {
  struct timespec ts;
#if MP_HAVE_CLOCKLOCK
  ts = mp_timespec(deadline);
  return pthread_mutex_clocklock(m, CLOCK_MONOTONIC, &ts);
#else
  ts = mp_timespec(mp_walltime() + (deadline - mp_monotonic()));
  return pthread_mutex_timedlock(m, &ts);
#endif
}

/* r, the result of locking m, with EOWNERDEAD turned into 0: the previous
** holder died holding m, which is made consistent again and is the
** caller's; *owner_died (if not NULL) tells which. */
static int recover(pthread_mutex_t *m, int r, int *owner_died) {
  if (owner_died) *owner_died = 0;
  if (r == EOWNERDEAD) {
    pthread_mutex_consistent(m);
    if (owner_died) *owner_died = 1;
    r = 0;
  }
  return r;
}

/* Locks m before deadline (<0: none). 0 when locked, ETIMEDOUT, or another
** error. *owner_died is set when the previous holder died holding it; the
** mutex is then made consistent again and the caller holds it.
** The wait goes in slices, each a fresh try on the mutex word: a wake-up
** lost with a waiter that died right after it was woken then costs one
** slice, not the rest of time. With L, Ctrl-C may strike between slices,
** where nothing is held (see mp_interrupt_point). */
/* Tries on a held mutex before sleeping: a holder running on another
** processor usually lets go within a critical section's time, and a sleep
** and wake-up cost two system calls and a context switch each way (the
** 2-process counter: 0.48 us an increment without this). Bounded, as
** glibc's adaptive mutexes are: where the holder is not running, the
** spin costs about a microsecond. None on one processor. */
#define SPIN_TRIES 100

static int spin_trylock(pthread_mutex_t *m) {
  static int ncpu;
  int i, r = EBUSY;
  if (ncpu == 0) ncpu = mp_process_cpus() > 1 ? 2 : 1;   /* pinned to one: no spin */
  for (i = 0; ncpu > 1 && i < SPIN_TRIES && r == EBUSY; i++) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
    r = pthread_mutex_trylock(m);
  }
  return r;
}

int mp_mutex_lock(lua_State *L, pthread_mutex_t *m, double deadline,
                  int *owner_died) {
  int r = pthread_mutex_trylock(m);
  if (r == EBUSY) r = spin_trylock(m);
  while (r == EBUSY) {
    if (deadline >= 0 && mp_monotonic() >= deadline) { r = ETIMEDOUT; break; }
    r = timed_lock(m, mp_slice_deadline(deadline));
    if (r != ETIMEDOUT) break;
    r = EBUSY;
    if (L != NULL) mp_interrupt_point(L);
  }
  return recover(m, r, owner_died);
}

/* The same without waiting: EBUSY when someone holds m. */
int mp_mutex_trylock(pthread_mutex_t *m, int *owner_died) {
  return recover(m, pthread_mutex_trylock(m), owner_died);
}

void mp_mutex_unlock(pthread_mutex_t *m) {
  pthread_mutex_unlock(m);
}

/* ---------------------------------------------------------------------
** Wait and wake on a sequence word
** --------------------------------------------------------------------- */

/* Waits until *seq differs from seen, a wake-up, a signal, the end of
** one slice (MP_SLICE) or deadline. Callers re-check their condition and
** call mp_interrupt_point before they wait again: a return is only a hint.
** 0, or ETIMEDOUT once the deadline has passed. */
int mp_seq_wait(uint32_t *seq, uint32_t seen, double deadline) {
  double left = mp_slice_deadline(deadline) - mp_monotonic();
  if (left > 0) {
#if MP_HAVE_FUTEX
    struct timespec rel = mp_timespec(left);
    syscall(SYS_futex, seq, FUTEX_WAIT, seen, &rel, NULL, 0);
#else
    struct timespec ms = {0, 1000000L};
    if (__atomic_load_n(seq, __ATOMIC_ACQUIRE) == seen) nanosleep(&ms, NULL);
#endif
  }
  return (deadline >= 0 && mp_monotonic() >= deadline) ? ETIMEDOUT : 0;
}

/* Bumps *seq and wakes up to n processes waiting on it. */
static void seq_wake(uint32_t *seq, int n) {
  __atomic_add_fetch(seq, 1, __ATOMIC_RELEASE);
#if MP_HAVE_FUTEX
  syscall(SYS_futex, seq, FUTEX_WAKE, n, NULL, NULL, 0);
#else
  (void)n;
#endif
}

/* Bumps *seq and wakes every process waiting on it. */
void mp_seq_wake(uint32_t *seq) { seq_wake(seq, INT_MAX); }

/* Bumps *seq and wakes one process waiting on it: for a word whose every
** waiter re-checks after any bump, when one new item needs one taker. */
void mp_seq_wake_one(uint32_t *seq) { seq_wake(seq, 1); }
