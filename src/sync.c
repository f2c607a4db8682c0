/*
** sync.c: Lock, RLock, Semaphore, Event, Condition and Barrier in shared
** memory, for mproc.core. Each object is a cell (cell.c) made before fork
** and inherited; the Lua layer (lua/mproc/sync.lua) adds argument
** defaults, guards, wait_for and the Barrier's action.
**
** Robustness: every mutex is a robust one (shm.c). A Lock or RLock whose
** holder died is taken over by the next acquire, which returns
** true, "owner died". Waiters of a Condition or Barrier, and the holders
** of an owned Semaphore, each hold an "alive" mutex of their own slot while
** they wait or hold: a slot whose alive mutex reports EOWNERDEAD belongs to
** a dead process and is reaped, so a dead waiter never swallows a notify
** (one killed notified, before its wait returned, passes it on), a dead party breaks a Barrier instead of wedging it, and the units of a
** dead holder come back. Waiting is on a futex sequence word, never on a
** pthread_cond_t; waiters that must notice deaths look every POLL_S.
*/
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <string.h>

#include "mproc.h"

#define LOCK_MT MP_LOCK_MT
#define RLOCK_MT MP_RLOCK_MT
#define SEM_MT "mproc.Semaphore"
#define EVENT_MT "mproc.Event"
#define COND_MT "mproc.Condition"
#define BARRIER_MT "mproc.Barrier"

#define POLL_S 0.05
/* Limits, exported on core for sync.lua, which checks the users' arguments
** against them (core.SEM_MAX_VALUE, core.SEM_MAX_HOLDERS,
** core.BARRIER_MAX_PARTIES); here they bound what is allocated. */
#define SEM_MAX_VALUE INT_MAX   /* 2^31-1 */
#define SEM_HOLDERS 1024   /* at most, for an owned Semaphore */
#define BARRIER_PARTIES 10000
#define COND_SLOTS 48

#define LOAD(p) __atomic_load_n((p), __ATOMIC_SEQ_CST)
#define STORE(p, v) __atomic_store_n((p), (v), __ATOMIC_SEQ_CST)
/* A lock's owner word changes only under its mutex, which orders it; the
** others read it only to show it: no full fence (an xchg on x86) needed. */
#define STORE_OWNER(p, v) __atomic_store_n((p), (v), __ATOMIC_RELAXED)

/* ---------------------------------------------------------------------
** Shared helpers
** --------------------------------------------------------------------- */

static void init_mutex(lua_State *L, pthread_mutex_t *m) {
  int r = mp_mutex_init(m);
  if (r) luaL_error(L, "cannot make a shared mutex: %s", strerror(r));
}

/* acquire([block], [timeout]) arguments from idx: 0 for a try, else a
** deadline (-1: none) */
static double block_deadline(lua_State *L, int idx, int *block) {
  if (lua_gettop(L) < idx) { *block = 1; return -1; }  /* the common case */
  luaL_argexpected(L, lua_isnoneornil(L, idx) || lua_isboolean(L, idx), idx,
                   "boolean");
  *block = lua_isnoneornil(L, idx) || lua_toboolean(L, idx);
  return *block ? mp_opt_deadline(L, idx + 1) : 0;
}

static int passed(double deadline) {
  return deadline >= 0 && mp_monotonic() >= deadline;
}

/* The sooner of deadline and the next look for dead peers. */
static double poll_deadline(double deadline) {
  double p = mp_monotonic() + POLL_S;
  return (deadline < 0 || p < deadline) ? p : deadline;
}

static int push_taken(lua_State *L, int ok, int died) {
  lua_pushboolean(L, ok);
  if (!ok || !died) return 1;
  lua_pushliteral(L, "owner died");
  return 2;
}

/* Locks an object's own mutex; notes a holder that died inside. */
static void enter(pthread_mutex_t *m, int *died) {
  int d = 0;
  mp_mutex_lock(NULL, m, -1, &d);
  if (d && died) *died = 1;
}

/* ---------------------------------------------------------------------
** Slots: a process waiting in (or holding) an object holds its slot's
** robust "alive" mutex, so its death is seen by the others.
** --------------------------------------------------------------------- */
enum { W_FREE, W_WAITING, W_SIGNALLED, W_BROKEN, W_LEADER };

typedef struct {
  uint64_t who;
  uint32_t state, ticket;
  pthread_mutex_t alive;
} wslot;

static int slots_init(lua_State *L, wslot *w, size_t n) {
  size_t i;
  for (i = 0; i < n; i++) init_mutex(L, &w[i].alive);
  return 0;
}

/* A free slot, now ours, or -1. */
static int slot_take(wslot *w, int n) {
  int i;
  for (i = 0; i < n; i++) {
    if (w[i].state != W_FREE) continue;
    if (mp_mutex_trylock(&w[i].alive, NULL) != 0) continue;
    w[i].who = mp_self();
    return i;
  }
  return -1;
}

static void wslot_free(wslot *s) {
  s->state = W_FREE;
  s->who = 0;
  mp_mutex_unlock(&s->alive);
}

/* Frees s and returns 1 when its process has died (0: alive or free). */
static int slot_reap(wslot *s) {
  if (s->state == W_FREE || s->who == mp_self()) return 0;
  if (mp_mutex_trylock(&s->alive, NULL) != 0) return 0;
  wslot_free(s);
  return 1;
}

/* ---------------------------------------------------------------------
** Lock and RLock
** --------------------------------------------------------------------- */

typedef struct {
  pthread_mutex_t m;
  uint64_t owner;   /* mp_self() of the holder, 0: none */
  uint32_t count;   /* recursion depth */
  uint32_t recursive;
} lock_body;

static int new_lock(lua_State *L, const char *mt, int type) {
  mp_handle *h = mp_handle_new(L, mt, 0);
  lock_body *b = (lock_body *)mp_handle_alloc(L, h, sizeof *b, type);
  init_mutex(L, &b->m);
  b->recursive = type == MP_T_RLOCK;
  return 1;
}

static int l_Lock(lua_State *L) { return new_lock(L, LOCK_MT, MP_T_LOCK); }
static int l_RLock(lua_State *L) { return new_lock(L, RLOCK_MT, MP_T_RLOCK); }

/* 0 when taken (then *died tells), else ETIMEDOUT/EBUSY or an error.
** Ctrl-C may strike while it waits (nothing is taken then). */
static int lock_take(lua_State *L, lock_body *b, int block, double deadline,
                     int *died) {
  int r;
  uint64_t me = mp_self();
  *died = 0;
  if (LOAD(&b->owner) == me) {
    if (b->recursive) { b->count++; return 0; }
    if (!block) return EBUSY;
    if (deadline < 0) return EDEADLK;
    while (mp_seq_wait(&b->count, b->count, deadline) == 0) mp_interrupt_point(L);
    return ETIMEDOUT;
  }
  r = block ? mp_mutex_lock(L, &b->m, deadline, died) : mp_mutex_trylock(&b->m, died);
  if (r) return r;
  STORE_OWNER(&b->owner, me);
  b->count = 1;
  return 0;
}

/* 0, or -1 when this process does not hold it. */
static int lock_give(lock_body *b, int all) {
  if (LOAD(&b->owner) != mp_self()) return -1;
  if (!all && --b->count > 0) return 0;
  b->count = 0;
  STORE_OWNER(&b->owner, 0);
  mp_mutex_unlock(&b->m);
  return 0;
}

static int lock_acquire(lua_State *L, lock_body *b) {
  int block, died, r;
  double deadline = block_deadline(L, 2, &block);
  r = lock_take(L, b, block, deadline, &died);
  if (r == 0) return push_taken(L, 1, died);
  if (r == ETIMEDOUT || r == EBUSY) return push_taken(L, 0, 0);
  if (r == EDEADLK)
    return luaL_error(L, "acquire: this process already holds the Lock "
                      "(it would wait for ever)");
  return luaL_error(L, "acquire: %s", strerror(r));
}

static int lock_release(lua_State *L, lock_body *b, const char *what) {
  if (lock_give(b, 0) < 0)
    return luaL_error(L, "release: the %s is not held by this process", what);
  return 0;
}

static int lock_tostring(lua_State *L, const char *mt) {
  mp_handle *h = (mp_handle *)mp_checkudata(L, 1, mt);
  lock_body *b;
  uint64_t owner;
  if (h->cell == NULL) return lua_pushfstring(L, "%s (closed)", mt), 1;
  b = (lock_body *)MP_CELL_BODY(h->cell);
  owner = LOAD(&b->owner);
  if (owner == 0) lua_pushfstring(L, "%s (unlocked)", mt);
  else lua_pushfstring(L, "%s (held by pid %d)", mt, (int)(owner >> 32));
  return 1;
}

/* Dropping the last handle of a Lock this process holds lets it go;
** closing: __close (mp_handle_close), else __gc (mp_handle_drop). See the
** handle lifecycle in cell.c. */
static int lock_gc(lua_State *L, const char *mt, int closing) {
  mp_handle *h = (mp_handle *)mp_checkudata(L, 1, mt);
  if (mp_handle_sole(h)) lock_give((lock_body *)MP_CELL_BODY(h->cell), 1);
  if (closing) mp_handle_close(h);
  else mp_handle_drop(h);
  return 0;
}

static int m_lock_acquire(lua_State *L) { return lock_acquire(L, mp_handle_body(L, 1, LOCK_MT)); }
static int m_rlock_acquire(lua_State *L) { return lock_acquire(L, mp_handle_body(L, 1, RLOCK_MT)); }
static int m_lock_release(lua_State *L) { return lock_release(L, mp_handle_body(L, 1, LOCK_MT), "Lock"); }
static int m_rlock_release(lua_State *L) { return lock_release(L, mp_handle_body(L, 1, RLOCK_MT), "RLock"); }
static int m_lock_tostring(lua_State *L) { return lock_tostring(L, LOCK_MT); }
static int m_rlock_tostring(lua_State *L) { return lock_tostring(L, RLOCK_MT); }
static int m_lock_gc(lua_State *L) { return lock_gc(L, LOCK_MT, 0); }
static int m_rlock_gc(lua_State *L) { return lock_gc(L, RLOCK_MT, 0); }
static int m_lock_close(lua_State *L) { return lock_gc(L, LOCK_MT, 1); }
static int m_rlock_close(lua_State *L) { return lock_gc(L, RLOCK_MT, 1); }
static int m_lock_send(lua_State *L) { return mp_handle_send(L, LOCK_MT); }
static int m_rlock_send(lua_State *L) { return mp_handle_send(L, RLOCK_MT); }

/* held() -> whether this process holds it (Python's RLock._is_owned) */
static int lock_held(lua_State *L, lock_body *b) {
  lua_pushboolean(L, LOAD(&b->owner) == mp_self());
  return 1;
}

static int m_lock_held(lua_State *L) { return lock_held(L, mp_handle_body(L, 1, LOCK_MT)); }
static int m_rlock_held(lua_State *L) { return lock_held(L, mp_handle_body(L, 1, RLOCK_MT)); }

static int l_lock_recv(lua_State *L) {
  mp_handle_recv(L, MP_T_LOCK, LOCK_MT, 0);
  return 1;
}

static int l_rlock_recv(lua_State *L) {
  mp_handle_recv(L, MP_T_RLOCK, RLOCK_MT, 0);
  return 1;
}

static mp_handle *test_lock(lua_State *L, int idx) {
  mp_handle *h = (mp_handle *)luaL_testudata(L, idx, LOCK_MT);
  return h != NULL ? h : (mp_handle *)luaL_testudata(L, idx, RLOCK_MT);
}

/* The cell of the Lock or RLock at idx, NULL if it is none; raises if it
** is closed. */
mp_cell *mp_test_lock(lua_State *L, int idx) {
  mp_handle *h = test_lock(L, idx);
  if (h == NULL) return NULL;
  if (h->cell == NULL) luaL_argerror(L, idx, "the Lock is closed");
  return h->cell;
}

/* ---------------------------------------------------------------------
** Semaphore and BoundedSemaphore
** --------------------------------------------------------------------- */

typedef struct {
  uint64_t who;
  uint32_t count, pad;
  pthread_mutex_t alive;
} holder;

typedef struct {
  pthread_mutex_t m;
  uint32_t seq, waiters; /* waiters: a hint (see event_body) */
  int64_t value, max;   /* max < 0: unbounded */
  int64_t init;         /* an owned one: value + the holders' counts */
  uint32_t owned, nholders;
  holder h[];           /* nholders, when owned */
} sem_body;

/* core.Semaphore(value, max, owned, [holders]): max < 0 for no bound; an
** owned one has room for that many holders at once (default 1). The value
** is checked by sync.lua (0..SEM_MAX_VALUE); the holders, which it clamps to
** SEM_HOLDERS, here: they size the cell. */
static int l_Semaphore(lua_State *L) {
  lua_Integer v = luaL_checkinteger(L, 1), max = luaL_checkinteger(L, 2);
  int owned = lua_toboolean(L, 3);
  lua_Integer n = owned ? luaL_optinteger(L, 4, 1) : 0, i;
  mp_handle *h;
  sem_body *b;
  luaL_argcheck(L, !owned || (n >= 1 && n <= SEM_HOLDERS), 4,
                lua_pushfstring(L, "holders must be in 1..%d", SEM_HOLDERS));
  h = mp_handle_new(L, SEM_MT, 0);
  b = (sem_body *)mp_handle_alloc(L, h, sizeof *b + (size_t)n * sizeof(holder), MP_T_SEM);
  init_mutex(L, &b->m);
  for (i = 0; i < n; i++) init_mutex(L, &b->h[i].alive);
  b->value = b->init = v;
  b->max = max;
  b->owned = (uint32_t)owned;
  b->nholders = (uint32_t)n;
  return 1;
}

static holder *sem_mine(sem_body *b) {
  uint32_t i;
  for (i = 0; i < b->nholders; i++)
    if (b->h[i].who == mp_self()) return &b->h[i];
  return NULL;
}

/* Records a unit taken by this process; 0 when no slot is free. */
static int sem_record(sem_body *b) {
  holder *me = sem_mine(b);
  uint32_t i;
  if (me != NULL) { me->count++; return 1; }
  for (i = 0; i < b->nholders; i++) {
    if (b->h[i].who != 0 || mp_mutex_trylock(&b->h[i].alive, NULL)) continue;
    b->h[i].who = mp_self();
    b->h[i].count = 1;
    return 1;
  }
  return 0;
}

/* Gives back the units of dead holders; 1 if any. */
static int sem_reap(sem_body *b) {
  uint32_t i;
  int any = 0;
  for (i = 0; i < b->nholders; i++) {
    holder *o = &b->h[i];
    if (o->who == 0 || o->who == mp_self()) continue;
    if (mp_mutex_trylock(&o->alive, NULL) != 0) continue;
    b->value += o->count;
    o->who = 0;
    o->count = 0;
    mp_mutex_unlock(&o->alive);
    any = 1;
  }
  return any;
}

/* An owned Semaphore's value, from the holders' counts: a process killed
** anywhere between recording itself and counting the unit leaves nothing
** to repair. */
static void sem_recount(sem_body *b) {
  uint32_t i;
  int64_t held = 0;
  for (i = 0; i < b->nholders; i++) {
    if (b->h[i].who == 0) b->h[i].count = 0;
    held += b->h[i].count;
  }
  b->value = b->init - held;
}

/* Whether a slot that could not be taken holds no unit: free but with its
** alive mutex still locked, or recorded with a count of 0. Either way its
** process died inside acquire or release (a live one does neither outside
** the mutex), and the kernel has not yet let go of its alive mutex. The
** slot is reaped soon: wait, do not raise. */
static int sem_dying(sem_body *b) {
  uint32_t i;
  for (i = 0; i < b->nholders; i++)
    if (b->h[i].who == 0 || b->h[i].count == 0) return 1;
  return 0;
}

/* 1 taken, 0 no unit free (for now), -1 a unit but no room to record its
** holder. */
static int sem_try(sem_body *b) {
  if (b->owned) sem_recount(b);
  if (b->value <= 0) return 0;
  if (b->owned && !sem_record(b)) return sem_dying(b) ? 0 : -1;
  b->value--;
  return 1;
}

/* Locks the Semaphore's mutex (owned: recounted when a process died in). */
static void sem_enter(sem_body *b, int *died) {
  int d = 0;
  enter(&b->m, &d);
  if (d && died) *died = 1;
  if (d && b->owned) sem_recount(b);
}

static int m_sem_acquire(lua_State *L) {
  sem_body *b = (sem_body *)mp_handle_body(L, 1, SEM_MT);
  int block, died = 0, ok;
  double deadline = block_deadline(L, 2, &block);
  sem_enter(b, &died);
  for (;;) {
    uint32_t seen;
    if ((ok = sem_try(b)) > 0) break;
    if (b->owned && sem_reap(b)) { died = 1; continue; }
    if (ok < 0 || !block || passed(deadline)) break;
    seen = LOAD(&b->seq);
    b->waiters++;
    mp_mutex_unlock(&b->m);
    mp_seq_wait(&b->seq, seen, b->owned ? poll_deadline(deadline) : deadline);
    sem_enter(b, &died);
    b->waiters--;
    if (mp_interrupt_pending(L)) {
      mp_mutex_unlock(&b->m);
      mp_interrupt_point(L);
      sem_enter(b, &died);
    }
  }
  mp_mutex_unlock(&b->m);
  if (ok < 0)
    return luaL_error(L, "acquire: too many processes hold the Semaphore (at most %d)",
                      (int)b->nholders);
  return push_taken(L, ok, died);
}

static const char *sem_give(sem_body *b) {
  if (b->max >= 0 && b->value >= b->max)
    return "release: the BoundedSemaphore is released too many times";
  if (b->owned) {
    holder *me = sem_mine(b);
    if (me == NULL) return "release: this process holds no unit of the Semaphore";
    if (--me->count == 0) {
      me->who = 0;
      mp_mutex_unlock(&me->alive);
    }
  }
  b->value++;
  if (b->waiters) mp_seq_wake(&b->seq);
  return NULL;
}

static int m_sem_release(lua_State *L) {
  sem_body *b = (sem_body *)mp_handle_body(L, 1, SEM_MT);
  const char *err;
  sem_enter(b, NULL);
  err = sem_give(b);
  mp_mutex_unlock(&b->m);
  if (err) return luaL_error(L, "%s", err);
  return 0;
}

/* The value a survivor should see: an owned Semaphore's units held by
** dead processes are given back first (a read must not report the last
** state of a killed holder). */
static int64_t sem_value(sem_body *b) {
  int64_t v;
  if (!b->owned) return LOAD(&b->value);
  sem_enter(b, NULL);
  if (sem_reap(b) && b->waiters) mp_seq_wake(&b->seq);
  v = b->value;
  mp_mutex_unlock(&b->m);
  return v;
}

static int m_sem_get_value(lua_State *L) {
  sem_body *b = (sem_body *)mp_handle_body(L, 1, SEM_MT);
  lua_pushinteger(L, (lua_Integer)sem_value(b));
  return 1;
}

static const char *sem_kind(sem_body *b) {
  return b->max >= 0 ? "mproc.BoundedSemaphore" : "mproc.Semaphore";
}

static int m_sem_tostring(lua_State *L) {
  mp_handle *h = (mp_handle *)mp_checkudata(L, 1, SEM_MT);
  sem_body *b;
  if (h->cell == NULL) return lua_pushliteral(L, "mproc.Semaphore (closed)"), 1;
  b = (sem_body *)MP_CELL_BODY(h->cell);
  lua_pushfstring(L, "%s (value %d%s)", sem_kind(b), (int)sem_value(b),
                  b->owned ? ", owned" : "");
  return 1;
}

/* Units this process holds go back when its last handle goes. */
static int m_sem_gc(lua_State *L) {
  mp_handle *h = (mp_handle *)mp_checkudata(L, 1, SEM_MT);
  if (mp_handle_sole(h)) {
    sem_body *b = (sem_body *)MP_CELL_BODY(h->cell);
    holder *me;
    sem_enter(b, NULL);
    if ((me = sem_mine(b)) != NULL) {
      b->value += me->count;
      me->count = 0;
      me->who = 0;
      mp_mutex_unlock(&me->alive);
      if (b->waiters) mp_seq_wake(&b->seq);
    }
    mp_mutex_unlock(&b->m);
  }
  mp_handle_drop(h);
  return 0;
}

static int m_sem_send(lua_State *L) { return mp_handle_send(L, SEM_MT); }

static int l_sem_recv(lua_State *L) {
  mp_handle_recv(L, MP_T_SEM, SEM_MT, 0);
  return 1;
}

/* ---------------------------------------------------------------------
** Event
** --------------------------------------------------------------------- */

/* waiters only spares set() a futex wake when nobody waits. A process
** killed while waiting leaves it counted for good: every set() (release(),
** for a Semaphore) then makes one wake call with no one to wake, which
** costs a system call and is otherwise harmless. */
typedef struct { uint32_t flag, seq, waiters; } event_body;

static int l_Event(lua_State *L) {
  mp_handle *h = mp_handle_new(L, EVENT_MT, 0);
  mp_handle_alloc(L, h, sizeof(event_body), MP_T_EVENT);
  return 1;
}

static int m_event_set(lua_State *L) {
  event_body *b = (event_body *)mp_handle_body(L, 1, EVENT_MT);
  STORE(&b->flag, 1);
  if (LOAD(&b->waiters)) mp_seq_wake(&b->seq);
  else __atomic_add_fetch(&b->seq, 1, __ATOMIC_SEQ_CST);
  return 0;
}

static int m_event_clear(lua_State *L) {
  STORE(&((event_body *)mp_handle_body(L, 1, EVENT_MT))->flag, 0);
  return 0;
}

static int m_event_is_set(lua_State *L) {
  lua_pushboolean(L, LOAD(&((event_body *)mp_handle_body(L, 1, EVENT_MT))->flag));
  return 1;
}

static int m_event_wait(lua_State *L) {
  event_body *b = (event_body *)mp_handle_body(L, 1, EVENT_MT);
  double deadline = mp_opt_deadline(L, 2);
  int set = 0;
  if (LOAD(&b->flag)) return lua_pushboolean(L, 1), 1;
  __atomic_add_fetch(&b->waiters, 1, __ATOMIC_SEQ_CST);
  for (;;) {
    uint32_t seen = LOAD(&b->seq);
    if ((set = LOAD(&b->flag)) != 0) break;
    if (mp_seq_wait(&b->seq, seen, deadline) == ETIMEDOUT) {
      set = LOAD(&b->flag);
      break;
    }
    if (mp_interrupt_pending(L)) {
      __atomic_sub_fetch(&b->waiters, 1, __ATOMIC_SEQ_CST);
      mp_interrupt_point(L);
      __atomic_add_fetch(&b->waiters, 1, __ATOMIC_SEQ_CST);
    }
  }
  __atomic_sub_fetch(&b->waiters, 1, __ATOMIC_SEQ_CST);
  lua_pushboolean(L, set);
  return 1;
}

static int m_event_tostring(lua_State *L) {
  mp_handle *h = (mp_handle *)mp_checkudata(L, 1, EVENT_MT);
  if (h->cell == NULL) return lua_pushliteral(L, "mproc.Event (closed)"), 1;
  lua_pushstring(L, LOAD(&((event_body *)MP_CELL_BODY(h->cell))->flag)
                    ? "mproc.Event (set)" : "mproc.Event (clear)");
  return 1;
}

static int m_event_gc(lua_State *L) { return mp_handle_gc(L, EVENT_MT); }
static int m_event_send(lua_State *L) { return mp_handle_send(L, EVENT_MT); }

static int l_event_recv(lua_State *L) {
  mp_handle_recv(L, MP_T_EVENT, EVENT_MT, 0);
  return 1;
}

/* ---------------------------------------------------------------------
** Condition: its lock (a Lock or RLock handle) is user value 1
** --------------------------------------------------------------------- */

typedef struct {
  pthread_mutex_t m;
  uint32_t seq, next_ticket;
  wslot w[COND_SLOTS];
} cond_body;

/* core.Condition(lock) */
static int l_Condition(lua_State *L) {
  mp_cell *lk = mp_test_lock(L, 1);
  mp_handle *h;
  cond_body *b;
  luaL_argexpected(L, lk != NULL, 1, "mproc.Lock or mproc.RLock");
  h = mp_handle_new(L, COND_MT, 1);
  b = (cond_body *)mp_handle_alloc(L, h, sizeof *b, MP_T_COND);
  init_mutex(L, &b->m);
  slots_init(L, b->w, COND_SLOTS);
  mp_cell_set_lock(h->cell, lk);
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, -2, 1);
  return 1;
}

static lock_body *cond_lock(lua_State *L, const char *fname) {
  mp_handle *h;
  lock_body *lk;
  lua_getiuservalue(L, 1, 1);
  h = test_lock(L, -1);
  lua_pop(L, 1);   /* the Condition's user value keeps it */
  if (h == NULL || h->cell == NULL)
    luaL_error(L, "%s: the Condition's lock is closed", fname);
  lk = (lock_body *)MP_CELL_BODY(h->cell);
  if (LOAD(&lk->owner) != mp_self())
    luaL_error(L, "%s: the Condition's lock is not held by this process", fname);
  return lk;
}

static void cond_reap(cond_body *b);
static int cond_pick(cond_body *b, lua_Integer n);

/* Waits in slot s until notified or deadline; 1 when notified (the slot
** is kept, W_SIGNALLED, until the caller has the lock back: see
** cond_reap), -1 when an interrupt is pending (the slot is given up all
** the same). Looks for dead waiters every POLL_S. */
static int cond_sleep(lua_State *L, cond_body *b, wslot *s, double deadline) {
  int ok;
  enter(&b->m, NULL);
  for (;;) {
    uint32_t seen;
    cond_reap(b);
    if (s->state == W_SIGNALLED) { ok = 1; break; }
    if (passed(deadline)) { ok = 0; break; }
    if (mp_interrupt_pending(L)) { ok = -1; break; }
    seen = LOAD(&b->seq);
    mp_mutex_unlock(&b->m);
    mp_seq_wait(&b->seq, seen, poll_deadline(deadline));
    enter(&b->m, NULL);
  }
  if (ok != 1) wslot_free(s);
  mp_mutex_unlock(&b->m);
  return ok;
}

/* Takes lk back after a notify, holding slot s meanwhile (a process
** killed here passes the notify on: cond_reap), then frees s: the notify
** is this wait's. Ctrl-C striking first gives the notify on to the next
** waiter, then takes the lock as any wait (where the interrupt fires). */
static void cond_retake(lua_State *L, cond_body *b, lock_body *lk, wslot *s,
                        int *died) {
  int r;
  while ((r = lock_take(NULL, lk, 1, mp_slice_deadline(-1), died)) == ETIMEDOUT &&
         !mp_interrupt_pending(L))
    ;
  enter(&b->m, NULL);
  wslot_free(s);
  if (r != 0) cond_pick(b, 1);
  mp_mutex_unlock(&b->m);
  if (r != 0) lock_take(L, lk, 1, -1, died);
}

static int m_cond_wait(lua_State *L) {
  cond_body *b = (cond_body *)mp_handle_body(L, 1, COND_MT);
  double deadline = mp_opt_deadline(L, 2);
  lock_body *lk = cond_lock(L, "wait");
  uint32_t depth;
  int i, ok, died = 0;
  enter(&b->m, NULL);
  i = slot_take(b->w, COND_SLOTS);
  if (i >= 0) {
    b->w[i].state = W_WAITING;
    b->w[i].ticket = b->next_ticket++;
  }
  mp_mutex_unlock(&b->m);
  if (i < 0)
    return luaL_error(L, "wait: too many processes wait on the Condition "
                      "(at most %d)", COND_SLOTS);
  depth = lk->count;
  lock_give(lk, 1);
  ok = cond_sleep(L, b, &b->w[i], deadline);
  if (ok == 1) cond_retake(L, b, lk, &b->w[i], &died);
  else lock_take(L, lk, 1, -1, &died);
  lk->count = depth;
  if (ok < 0) {   /* the lock is held again, as after any wait */
    mp_interrupt_point(L);
    ok = 1;       /* no interrupt after all (another hook): a spurious wake */
  }
  lua_pushboolean(L, ok);
  if (!died) return 1;
  lua_pushliteral(L, "owner died");
  return 2;
}

/* Marks up to n waiters signalled, oldest first; the count marked. */
static int cond_pick(cond_body *b, lua_Integer n) {
  int i, k = 0;
  while (k < n) {
    wslot *best = NULL;
    for (i = 0; i < COND_SLOTS; i++) {
      wslot *s = &b->w[i];
      if (s->state == W_WAITING &&
          (best == NULL || (int32_t)(s->ticket - best->ticket) < 0))
        best = s;
    }
    if (best == NULL) break;
    best->state = W_SIGNALLED;
    k++;
  }
  if (k) mp_seq_wake(&b->seq);
  return k;
}

/* Frees the slots of dead waiters. One that died notified, before its wait
** returned (asleep, or taking the lock back), passes its notify on to the
** oldest waiter left: a notify is lost only with a process that got out
** of wait. Called with b->m held, by notifiers and by every waiter each
** POLL_S (a notify may be the last one for a long time). */
static void cond_reap(cond_body *b) {
  int i, owed = 0;
  for (i = 0; i < COND_SLOTS; i++) {
    uint32_t st = b->w[i].state;
    if (slot_reap(&b->w[i]) && st == W_SIGNALLED) owed++;
  }
  if (owed) cond_pick(b, owed);
}

/* Signals up to n waiters, oldest first; reaps dead ones first. */
static int cond_signal(cond_body *b, lua_Integer n) {
  cond_reap(b);
  return cond_pick(b, n);
}

static int cond_notify(lua_State *L, cond_body *b, lua_Integer n, const char *fname) {
  cond_lock(L, fname);
  enter(&b->m, NULL);
  cond_signal(b, n);
  mp_mutex_unlock(&b->m);
  return 0;
}

static int m_cond_notify(lua_State *L) {
  cond_body *b = (cond_body *)mp_handle_body(L, 1, COND_MT);   /* self first: cond.notify(5) */
  lua_Integer n = luaL_optinteger(L, 2, 1);
  luaL_argcheck(L, n >= 0, 2, "n must be >= 0");
  return cond_notify(L, b, n, "notify");
}

static int m_cond_notify_all(lua_State *L) {
  return cond_notify(L, (cond_body *)mp_handle_body(L, 1, COND_MT), COND_SLOTS, "notify_all");
}

static int m_cond_get_lock(lua_State *L) {
  mp_handle_body(L, 1, COND_MT);
  lua_getiuservalue(L, 1, 1);
  return 1;
}

static int m_cond_tostring(lua_State *L) {
  mp_handle *h = (mp_handle *)mp_checkudata(L, 1, COND_MT);
  cond_body *b;
  int i, n = 0;
  if (h->cell == NULL) return lua_pushliteral(L, "mproc.Condition (closed)"), 1;
  b = (cond_body *)MP_CELL_BODY(h->cell);
  enter(&b->m, NULL);
  cond_reap(b);   /* a killed waiter waits no more */
  for (i = 0; i < COND_SLOTS; i++) n += b->w[i].state == W_WAITING;
  mp_mutex_unlock(&b->m);
  lua_pushfstring(L, "mproc.Condition (%d waiting)", n);
  return 1;
}

static int m_cond_gc(lua_State *L) { return mp_handle_gc(L, COND_MT); }
static int m_cond_send(lua_State *L) { return mp_handle_send(L, COND_MT); }

static int l_cond_recv(lua_State *L) {
  mp_handle_recv(L, MP_T_COND, COND_MT, 1);   /* its lock is user value 1 */
  return 1;
}

/* ---------------------------------------------------------------------
** Barrier: the action (a Lua function or nil) is user value 1
** --------------------------------------------------------------------- */

typedef struct {
  pthread_mutex_t m;
  uint32_t seq, parties, count, gen, broken, nslots;
  double timeout;   /* default for wait, < 0: none */
  wslot w[];        /* 2 * parties: room for the next round while one drains */
} barrier_body;

/* core.Barrier(parties, action, timeout) */
static int l_Barrier(lua_State *L) {
  lua_Integer n = luaL_checkinteger(L, 1);
  double t = luaL_optnumber(L, 3, -1);
  mp_handle *h;
  barrier_body *b;
  /* the allocation's bound; mproc.Barrier checks the user's parties */
  luaL_argcheck(L, n >= 1 && n <= BARRIER_PARTIES, 1, "parties out of range");
  luaL_argcheck(L, t == t, 3, "timeout is not a number (nan)");
  h = mp_handle_new(L, BARRIER_MT, 1);
  b = mp_handle_alloc(L, h, sizeof *b + 2 * (size_t)n * sizeof(wslot), MP_T_BARRIER);
  init_mutex(L, &b->m);
  slots_init(L, b->w, 2 * (size_t)n);
  b->parties = (uint32_t)n;
  b->nslots = 2 * (uint32_t)n;
  b->timeout = t < 0 || t > 1e9 ? -1 : t;
  lua_pushvalue(L, 2);
  lua_setiuservalue(L, -2, 1);
  return 1;
}

/* Breaks the round: every party in it returns "broken". */
static void barrier_break(barrier_body *b) {
  uint32_t i;
  for (i = 0; i < b->nslots; i++)
    if (b->w[i].state == W_WAITING || b->w[i].state == W_LEADER)
      b->w[i].state = W_BROKEN;
  b->broken = 1;
  b->count = 0;
  b->gen++;
  mp_seq_wake(&b->seq);
}

/* Reaps dead parties; 1 if one died inside the current round. */
static int barrier_reap(barrier_body *b) {
  uint32_t i;
  int in_round = 0;
  for (i = 0; i < b->nslots; i++) {
    uint32_t st = b->w[i].state;
    if (slot_reap(&b->w[i]) && (st == W_WAITING || st == W_LEADER)) in_round = 1;
  }
  return in_round;
}

/* Sleeps (unlocking m) until something changes or deadline. */
static void barrier_nap(barrier_body *b, double deadline) {
  uint32_t seen = LOAD(&b->seq);
  mp_mutex_unlock(&b->m);
  mp_seq_wait(&b->seq, seen, poll_deadline(deadline));
  enter(&b->m, NULL);
}

/* A slot in the current round (waiting while the last one drains), -1
** when the barrier is broken (a party of the round died: it breaks now),
** -2 when deadline passes first or -3 when an interrupt is pending (the
** party never joined a round: nothing breaks). */
static int barrier_join(lua_State *L, barrier_body *b, double deadline) {
  for (;;) {
    int i;
    if (b->broken) return -1;
    if (barrier_reap(b)) { barrier_break(b); return -1; }
    if (b->count < b->parties && (i = slot_take(b->w, (int)b->nslots)) >= 0)
      return i;
    if (passed(deadline)) return -2;
    if (mp_interrupt_pending(L)) return -3;
    barrier_nap(b, deadline);
  }
}

/* 0 released, 1 broken, 2 timed out, 4 interrupted (both break the
** barrier, as an exception inside Python's Barrier.wait does). */
static int barrier_sleep(lua_State *L, barrier_body *b, wslot *s, double deadline) {
  int r;
  for (;;) {
    if (s->state == W_SIGNALLED) { r = 0; break; }
    if (s->state == W_BROKEN) { r = 1; break; }
    if (passed(deadline)) { barrier_break(b); r = 2; break; }
    if (mp_interrupt_pending(L)) { barrier_break(b); r = 4; break; }
    if (barrier_reap(b)) { barrier_break(b); continue; }
    barrier_nap(b, deadline);
  }
  wslot_free(s);
  return r;
}

static double barrier_deadline(lua_State *L, barrier_body *b) {
  if (!lua_isnoneornil(L, 2)) return mp_opt_deadline(L, 2);
  return b->timeout < 0 ? -1 : mp_monotonic() + b->timeout;
}

/* core.barrier_arrive(b, [timeout]) -> index, is_last | nil, "broken" | nil, "timeout" */
static int l_barrier_arrive(lua_State *L) {
  barrier_body *b = (barrier_body *)mp_handle_body(L, 1, BARRIER_MT);
  double deadline = barrier_deadline(L, b);
  uint32_t idx;
  int i, r;
  enter(&b->m, NULL);
  if ((i = barrier_join(L, b, deadline)) < 0) {
    mp_mutex_unlock(&b->m);
    if (i == -3) mp_interrupt_point(L);
    lua_pushnil(L);
    lua_pushstring(L, i == -1 ? "broken" : "timeout");
    return 2;
  }
  idx = b->count++;
  b->w[i].ticket = b->gen;
  b->w[i].state = b->count == b->parties ? W_LEADER : W_WAITING;
  r = b->w[i].state == W_LEADER ? 3 : barrier_sleep(L, b, &b->w[i], deadline);
  mp_mutex_unlock(&b->m);
  if (r == 4) { mp_interrupt_point(L); r = 1; }
  if (r == 1 || r == 2) {
    lua_pushnil(L);
    lua_pushstring(L, r == 1 ? "broken" : "timeout");
    return 2;
  }
  lua_pushinteger(L, idx);
  lua_pushboolean(L, r == 3);
  return 2;
}

/* core.barrier_release(b, ok): the last party, after the action, lets the round go.
** true, or false when the barrier broke meanwhile (or ok is false). */
static int l_barrier_release(lua_State *L) {
  barrier_body *b = (barrier_body *)mp_handle_body(L, 1, BARRIER_MT);
  int ok = lua_toboolean(L, 2);
  uint32_t i, k = b->nslots;
  enter(&b->m, NULL);
  for (i = 0; i < b->nslots && k == b->nslots; i++)
    if (b->w[i].who == mp_self() &&
        (b->w[i].state == W_LEADER || b->w[i].state == W_BROKEN))
      k = i;
  if (k == b->nslots) {
    mp_mutex_unlock(&b->m);
    return luaL_error(L, "release: this process is not the last party of a round");
  }
  if (b->w[k].state == W_BROKEN) ok = 0;
  else if (!ok || barrier_reap(b)) { barrier_break(b); ok = 0; }
  else {
    for (i = 0; i < b->nslots; i++)
      if (b->w[i].state == W_WAITING && b->w[i].ticket == b->gen)
        b->w[i].state = W_SIGNALLED;
    b->count = 0;
    b->gen++;
    mp_seq_wake(&b->seq);
  }
  wslot_free(&b->w[k]);
  mp_mutex_unlock(&b->m);
  lua_pushboolean(L, ok);
  return 1;
}

static int m_barrier_reset(lua_State *L) {
  barrier_body *b = (barrier_body *)mp_handle_body(L, 1, BARRIER_MT);
  enter(&b->m, NULL);
  barrier_break(b);
  b->broken = 0;
  mp_mutex_unlock(&b->m);
  return 0;
}

static int m_barrier_abort(lua_State *L) {
  barrier_body *b = (barrier_body *)mp_handle_body(L, 1, BARRIER_MT);
  enter(&b->m, NULL);
  barrier_break(b);
  mp_mutex_unlock(&b->m);
  return 0;
}

static int l_barrier_action(lua_State *L) {
  mp_handle_body(L, 1, BARRIER_MT);
  lua_getiuservalue(L, 1, 1);
  return 1;
}

/* Breaks the round if a party of it died, as its next wait would: what a
** survivor reads (n_waiting, broken) is then the truth, not the last state
** of a killed party. */
static void barrier_look(barrier_body *b) {
  enter(&b->m, NULL);
  if (!b->broken && barrier_reap(b)) barrier_break(b);
  mp_mutex_unlock(&b->m);
}

/* Fields parties, n_waiting, broken; methods from upvalue 1. */
static int m_barrier_index(lua_State *L) {
  barrier_body *b = (barrier_body *)mp_handle_body(L, 1, BARRIER_MT);
  const char *k = lua_tostring(L, 2);
  if (k != NULL && strcmp(k, "parties") == 0) lua_pushinteger(L, b->parties);
  else if (k != NULL && strcmp(k, "n_waiting") == 0) {
    barrier_look(b);
    lua_pushinteger(L, LOAD(&b->broken) ? 0 : LOAD(&b->count));
  }
  else if (k != NULL && strcmp(k, "broken") == 0) {
    barrier_look(b);
    lua_pushboolean(L, LOAD(&b->broken));
  }
  else {
    lua_pushvalue(L, 2);
    lua_rawget(L, lua_upvalueindex(1));
  }
  return 1;
}

static int m_barrier_tostring(lua_State *L) {
  mp_handle *h = (mp_handle *)mp_checkudata(L, 1, BARRIER_MT);
  barrier_body *b;
  if (h->cell == NULL) return lua_pushliteral(L, "mproc.Barrier (closed)"), 1;
  b = (barrier_body *)MP_CELL_BODY(h->cell);
  barrier_look(b);
  if (LOAD(&b->broken))
    lua_pushfstring(L, "mproc.Barrier (parties %d, broken)", (int)b->parties);
  else
    lua_pushfstring(L, "mproc.Barrier (parties %d, waiting %d)", (int)b->parties,
                    (int)LOAD(&b->count));
  return 1;
}

static int m_barrier_gc(lua_State *L) { return mp_handle_gc(L, BARRIER_MT); }
static int m_barrier_send(lua_State *L) { return mp_handle_send(L, BARRIER_MT); }

/* A received Barrier has no action: functions do not travel. */
static int l_barrier_recv(lua_State *L) {
  mp_handle_recv(L, MP_T_BARRIER, BARRIER_MT, 1);
  return 1;
}

/* ---------------------------------------------------------------------
** Registration
** --------------------------------------------------------------------- */

static const luaL_Reg lock_methods[] = {
  {"acquire", m_lock_acquire}, {"release", m_lock_release}, {"held", m_lock_held},
  {NULL, NULL}
};
static const luaL_Reg rlock_methods[] = {
  {"acquire", m_rlock_acquire}, {"release", m_rlock_release}, {"held", m_rlock_held},
  {NULL, NULL}
};
static const luaL_Reg sem_methods[] = {
  {"acquire", m_sem_acquire}, {"release", m_sem_release},
  {"get_value", m_sem_get_value}, {NULL, NULL}
};
static const luaL_Reg event_methods[] = {
  {"set", m_event_set}, {"clear", m_event_clear}, {"is_set", m_event_is_set},
  {"wait", m_event_wait}, {NULL, NULL}
};
static const luaL_Reg cond_methods[] = {
  {"wait", m_cond_wait}, {"notify", m_cond_notify},
  {"notify_all", m_cond_notify_all}, {"get_lock", m_cond_get_lock}, {NULL, NULL}
};
static const luaL_Reg barrier_methods[] = {
  {"reset", m_barrier_reset}, {"abort", m_barrier_abort}, {NULL, NULL}
};

static const luaL_Reg lock_meta[] = {
  {"__tostring", m_lock_tostring}, {"__gc", m_lock_gc}, {"__close", m_lock_close},
  {"__mproc_send", m_lock_send}, {"__mproc_recv", l_lock_recv}, {NULL, NULL}
};
static const luaL_Reg rlock_meta[] = {
  {"__tostring", m_rlock_tostring}, {"__gc", m_rlock_gc}, {"__close", m_rlock_close},
  {"__mproc_send", m_rlock_send}, {"__mproc_recv", l_rlock_recv}, {NULL, NULL}
};
static const luaL_Reg sem_meta[] = {
  {"__tostring", m_sem_tostring}, {"__gc", m_sem_gc}, {"__close", m_sem_gc},
  {"__mproc_send", m_sem_send}, {"__mproc_recv", l_sem_recv}, {NULL, NULL}
};
static const luaL_Reg event_meta[] = {
  {"__tostring", m_event_tostring}, {"__gc", m_event_gc}, {"__close", m_event_gc},
  {"__mproc_send", m_event_send}, {"__mproc_recv", l_event_recv}, {NULL, NULL}
};
static const luaL_Reg cond_meta[] = {
  {"__tostring", m_cond_tostring}, {"__gc", m_cond_gc}, {"__close", m_cond_gc},
  {"__mproc_send", m_cond_send}, {"__mproc_recv", l_cond_recv}, {NULL, NULL}
};
static const luaL_Reg barrier_meta[] = {
  {"__tostring", m_barrier_tostring}, {"__gc", m_barrier_gc}, {"__close", m_barrier_gc},
  {"__mproc_send", m_barrier_send}, {"__mproc_recv", l_barrier_recv}, {NULL, NULL}
};

/* Methods see their metatable as upvalue 1 (mp_type). */
static const struct {
  const char *name;
  const luaL_Reg *meta, *methods;
  lua_CFunction index;   /* NULL: the methods table */
} types[] = {
  {LOCK_MT, lock_meta, lock_methods, NULL},
  {RLOCK_MT, rlock_meta, rlock_methods, NULL},
  {SEM_MT, sem_meta, sem_methods, NULL},
  {EVENT_MT, event_meta, event_methods, NULL},
  {COND_MT, cond_meta, cond_methods, NULL},
  {BARRIER_MT, barrier_meta, barrier_methods, m_barrier_index},
};

static const luaL_Reg sync_funcs[] = {
  {"Lock", l_Lock}, {"RLock", l_RLock}, {"Semaphore", l_Semaphore},
  {"Event", l_Event}, {"Condition", l_Condition}, {"Barrier", l_Barrier},
  /* private to sync.lua's Barrier:wait */
  {"barrier_arrive", l_barrier_arrive}, {"barrier_release", l_barrier_release},
  {"barrier_action", l_barrier_action},
  {NULL, NULL}
};

void mp_open_sync(lua_State *L) {
  size_t i;
  mp_cell_init(L);
  for (i = 0; i < sizeof types / sizeof types[0]; i++)
    mp_type(L, types[i].name, types[i].meta, types[i].methods, types[i].index);
  luaL_setfuncs(L, sync_funcs, 0);
  lua_pushinteger(L, SEM_MAX_VALUE);
  lua_setfield(L, -2, "SEM_MAX_VALUE");
  lua_pushinteger(L, SEM_HOLDERS);
  lua_setfield(L, -2, "SEM_MAX_HOLDERS");
  lua_pushinteger(L, BARRIER_PARTIES);
  lua_setfield(L, -2, "BARRIER_MAX_PARTIES");
}
