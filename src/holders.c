/*
** holders.c: the tree-wide registry of holders. A token names two holders
** of its object (the sender and the maker, pid:fd); when both have ended,
** other live processes may still hold the object: those that attached it
** through /proc (at a descriptor number of their own), and the
** descendants of any holder (which inherited the descriptor at the
** holder's number). The registry lets a receiver find them.
**
** It is a fixed table of (dev, ino, pid, fd, aux) entries in an anonymous
** shared mapping made when mproc.core is first loaded in a process that
** has none, so every forked descendant shares it (a process that execs a
** new Lua makes its own). A process adds an entry when it makes or
** attaches the shared file of a store, a queue or a cell region, and
** clears it when it closes that file; all of its entries go when it ends
** (mp_holders_forget_all, from proc.c's exit hook). A fork child does not copy its
** parent's entries (nothing happens at fork): the scan of /proc below
** finds the numbers it inherited.
**
** No lock: a slot is claimed by a CAS of its pid word from 0 to -pid, the
** other fields are written, then the pid is published. A process killed
** mid-write leaves -pid, a dead one its pid; both are reclaimed (kill(pid,
** 0) says ESRCH) when the table is full. Readers take an entry only if its
** pid reads the same before and after its fields, and every candidate is
** verified anyway: by inode (mp_open_held), then by the file's own nonce
** or origin (the caller's try). A full table costs only reach: the object
** works, it is not registered.
**
** Resolution (mp_holders_reach), after the token's own candidates failed:
** (a) every live entry for the file; (b) for each descriptor number known
** for it (the token's and the entries'), every process of our user listed
** in /proc. Linux only (MP_HAVE_PROC_FD); elsewhere all of this is a no-op.
*/
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mproc.h"

#if MP_HAVE_PROC_FD

#ifndef MP_HOLDERS_SLOTS     /* a small table, to test a full one by hand */
#define MP_HOLDERS_SLOTS 8192
#endif
#define NSLOTS MP_HOLDERS_SLOTS /* 256 KiB, touched only as far as used */
#define MAX_NUMBERS 16       /* descriptor numbers tried in step (b) */
#define FULL_PAUSE 1.0       /* seconds between reclaims of a full table */

typedef struct {
  int32_t pid;               /* >0 holder, <0 being written by -pid, 0 free */
  int32_t fd, aux;           /* its descriptor (and a queue's notifier) */
  int32_t pad;
  uint64_t dev, ino;
} h_entry;

typedef struct {
  uint32_t hi;               /* slots ever used: scans stop there */
  uint32_t hint;             /* a slot freed lately: claims start there */
  uint64_t pad[3];
  h_entry e[NSLOTS];
} h_table;

static h_table *table = NULL;
/* This process's entries by descriptor: mine[fd] = slot + 1. Valid only
** in mine_pid (a fork child's copy is its parent's, and dropped). */
static int *mine = NULL;
static int nmine = 0;
static pid_t mine_pid = 0;
static double full_since = -1;

#define LOAD(p) __atomic_load_n((p), __ATOMIC_RELAXED)
#define STORE(p, v) __atomic_store_n((p), (v), __ATOMIC_RELAXED)

static int cas_pid(int32_t *p, int32_t from, int32_t to) {
  return __atomic_compare_exchange_n(p, &from, to, 0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED);
}

/* mine, for this process: forgotten after a fork. */
static void mine_check(void) {
  pid_t self = getpid();
  if (self == mine_pid) return;
  if (mine != NULL) memset(mine, 0, (size_t)nmine * sizeof *mine);
  mine_pid = self;
}

static int mine_set(int fd, int slot) {
  if (fd >= nmine) {
    int n = fd < 64 ? 64 : 2 * fd;
    int *m = (int *)realloc(mine, (size_t)n * sizeof *m);
    if (m == NULL) return -1;
    memset(m + nmine, 0, (size_t)(n - nmine) * sizeof *m);
    mine = m;
    nmine = n;
  }
  mine[fd] = slot + 1;
  return 0;
}

/* ---------------------------------------------------------------------
** Claiming and freeing slots
** --------------------------------------------------------------------- */

/* A free slot, claimed for self (its pid word -self), or -1. */
static int find_free(int32_t self) {
  uint32_t hi = __atomic_load_n(&table->hi, __ATOMIC_ACQUIRE), k, start, h;
  start = hi ? LOAD(&table->hint) % hi : 0;
  for (k = 0; k < hi; k++) {
    uint32_t i = (start + k) % hi;
    if (LOAD(&table->e[i].pid) == 0 && cas_pid(&table->e[i].pid, 0, -self)) return (int)i;
  }
  while ((h = __atomic_load_n(&table->hi, __ATOMIC_ACQUIRE)) < NSLOTS)
    if (__atomic_compare_exchange_n(&table->hi, &h, h + 1, 0, __ATOMIC_ACQ_REL,
                                    __ATOMIC_RELAXED) &&
        cas_pid(&table->e[h].pid, 0, -self))
      return (int)h;
  return -1;
}

/* Frees the slots of dead processes (finished, killed, or killed while
** writing one); how many. */
static int reclaim_dead(void) {
  uint32_t hi = __atomic_load_n(&table->hi, __ATOMIC_ACQUIRE), i;
  int32_t last = 0, n = 0, last_dead = 0;
  for (i = 0; i < hi; i++) {
    int32_t p = LOAD(&table->e[i].pid), who = p < 0 ? -p : p;
    if (p == 0) continue;
    if (who != last) {
      last = who;
      last_dead = kill((pid_t)who, 0) < 0 && errno == ESRCH;
    }
    if (last_dead && cas_pid(&table->e[i].pid, p, 0)) n++;
  }
  return n;
}

static int claim(int32_t self) {
  int i = find_free(self);
  if (i >= 0) return i;
  if (full_since >= 0 && mp_monotonic() - full_since < FULL_PAUSE) return -1;
  if (reclaim_dead() > 0 && (i = find_free(self)) >= 0) { full_since = -1; return i; }
  full_since = mp_monotonic();
  return -1;
}

static void release_slot(int slot, int fd) {
  h_entry *e = &table->e[slot];
  if (LOAD(&e->fd) == fd && cas_pid(&e->pid, (int32_t)mine_pid, 0))
    STORE(&table->hint, (uint32_t)slot);
}

/* This process no longer holds a registered file as descriptor fd (it is
** about to close it). Nothing if fd was not registered by this process. */
void mp_holders_drop(int fd) {
  if (table == NULL || fd < 0) return;
  mine_check();
  if (fd >= nmine || mine[fd] == 0) return;
  release_slot(mine[fd] - 1, fd);
  mine[fd] = 0;
}

/* This process is ending: its entries go now rather than wait, dead, for
** a full table's reclaim (a child's _exit skips the Lua state's close,
** where each object would drop its own). By pid, not by mine: at exit()
** the Lua state may have freed mine before its objects dropped theirs.
** A process that never registered one (mine_pid is not ours: a fork child
** that made no object) has none: it reads nothing, not even the table's
** first page, which a child would fault in on its way out. */
void mp_holders_forget_all(void) {
  int32_t self = (int32_t)getpid(), p;
  uint32_t hi, i;
  if (table == NULL || mine_pid != (pid_t)self) return;
  hi = __atomic_load_n(&table->hi, __ATOMIC_ACQUIRE);
  for (i = 0; i < hi; i++)
    if (((p = LOAD(&table->e[i].pid)) == self || p == -self) && cas_pid(&table->e[i].pid, p, 0))
      STORE(&table->hint, i);
  if (mine != NULL && mine_pid == self) memset(mine, 0, (size_t)nmine * sizeof *mine);
}

/* This process holds the file dev:ino as descriptor fd (and, for a queue,
** its notifier as aux; else -1). Not registered when the table is full. */
void mp_holders_add(int fd, int aux, uint64_t dev, uint64_t ino) {
  int slot;
  h_entry *e;
  if (table == NULL || fd < 0) return;
  mp_holders_drop(fd);   /* a stale entry of ours at that number */
  if ((slot = claim((int32_t)mine_pid)) < 0) return;
  e = &table->e[slot];
  STORE(&e->dev, dev);
  STORE(&e->ino, ino);
  STORE(&e->fd, fd);
  STORE(&e->aux, aux);
  __atomic_store_n(&e->pid, (int32_t)mine_pid, __ATOMIC_RELEASE);
  if (mine_set(fd, slot) < 0) release_slot(slot, fd);
}

/* ---------------------------------------------------------------------
** Finding holders
** --------------------------------------------------------------------- */

typedef struct { int n; int fd[MAX_NUMBERS], aux[MAX_NUMBERS]; } numbers;

static void numbers_add(numbers *ns, int fd, int aux) {
  int i;
  if (fd < 0) return;
  for (i = 0; i < ns->n; i++)
    if (ns->fd[i] == fd && ns->aux[i] == aux) return;
  if (ns->n < MAX_NUMBERS) {
    ns->fd[ns->n] = fd;
    ns->aux[ns->n++] = aux;
  }
}

/* Entry i as it stood at one instant, if it names a holder of dev:ino;
** a torn read (the pid moved meanwhile) is skipped. */
static int entry_read(uint32_t i, uint64_t dev, uint64_t ino, h_entry *out) {
  h_entry *e = &table->e[i];
  out->pid = __atomic_load_n(&e->pid, __ATOMIC_ACQUIRE);
  if (out->pid <= 0) return 0;
  out->dev = LOAD(&e->dev);
  out->ino = LOAD(&e->ino);
  out->fd = LOAD(&e->fd);
  out->aux = LOAD(&e->aux);
  __atomic_thread_fence(__ATOMIC_ACQUIRE);
  return LOAD(&e->pid) == out->pid && out->dev == dev && out->ino == ino;
}

/* Step (a): each registered holder of dev:ino but us; gathers their
** numbers into ns. 0 when try reached one. */
static int reach_registered(uint64_t dev, uint64_t ino, numbers *ns, mp_holder_try try,
                            void *arg) {
  uint32_t hi = __atomic_load_n(&table->hi, __ATOMIC_ACQUIRE), i;
  int32_t self = (int32_t)getpid();
  h_entry e;
  for (i = 0; i < hi; i++) {
    if (!entry_read(i, dev, ino, &e)) continue;
    numbers_add(ns, e.fd, e.aux);
    if (e.pid != self && try(arg, (pid_t)e.pid, e.fd, e.aux) == 0) return 0;
  }
  return -1;
}

/* A directory entry's name as a number (a pid, a descriptor); -1 if it
** is not one. */
static long entry_number(const struct dirent *de) {
  char *end;
  long n = strtol(de->d_name, &end, 10);
  return *end == '\0' && end != de->d_name ? n : -1;
}

/* The next process of our user but us in /proc (d), or -1 at the end. */
static long next_process(DIR *d) {
  struct dirent *de;
  struct stat sb;
  char path[64];
  while ((de = readdir(d)) != NULL) {
    long pid = entry_number(de);
    if (pid <= 0 || pid == (long)getpid()) continue;
    snprintf(path, sizeof path, "/proc/%ld", pid);
    if (stat(path, &sb) == 0 && sb.st_uid == getuid()) return pid;
  }
  return -1;
}

/* Step (b), with ns: every other process of our user, at each number in
** ns. Step (c), with ns NULL: at every descriptor that is dev:ino. */
static int reach_any(const numbers *ns, uint64_t dev, uint64_t ino, mp_holder_try try,
                     void *arg) {
  DIR *d = opendir("/proc");
  long pid;
  int i, fd, found = -1;
  if (d == NULL) return -1;
  while (found != 0 && (pid = next_process(d)) > 0) {
    if (ns == NULL) {
      if ((fd = mp_find_held((pid_t)pid, dev, ino)) >= 0) found = try(arg, (pid_t)pid, fd, -1);
    } else {
      for (i = 0; i < ns->n && found != 0; i++)
        found = try(arg, (pid_t)pid, ns->fd[i], ns->aux[i]);
    }
  }
  closedir(d);
  return found;
}

/* The descriptor number at which process pid holds the file dev:ino, or
** -1: each link in /proc/<pid>/fd is stat'ed, none opened. */
int mp_find_held(pid_t pid, uint64_t dev, uint64_t ino) {
  char path[64];
  struct dirent *de;
  struct stat sb;
  DIR *d;
  long fd, found = -1;
  snprintf(path, sizeof path, "/proc/%d/fd", (int)pid);
  if ((d = opendir(path)) == NULL) return -1;
  while (found < 0 && (de = readdir(d)) != NULL) {
    if ((fd = entry_number(de)) < 0) continue;
    snprintf(path, sizeof path, "/proc/%d/fd/%ld", (int)pid, fd);
    if (stat(path, &sb) == 0 && (uint64_t)sb.st_dev == dev && (uint64_t)sb.st_ino == ino)
      found = fd;
  }
  closedir(d);
  return (int)found;
}

/* After a token's own candidates failed: any live process that holds the
** file dev:ino, tried with try(arg, pid, fd, aux) (which opens it with
** mp_open_held, checks its content and returns 0 if it is the object;
** aux is -1 when not known). known lists the token's nknown (fd, aux)
** pairs. 0 if one was reached. Steps (a) and (b) find what the registry
** and the inherited numbers tell; (c), every descriptor of every process
** of our user, the rest: a holder the full table did not register, one
** that moved the descriptor (dup2). */
int mp_holders_reach(uint64_t dev, uint64_t ino, const int known[][2], int nknown,
                     mp_holder_try try, void *arg) {
  numbers ns;
  int i;
  if (table == NULL || (dev == 0 && ino == 0)) return -1;
  ns.n = 0;
  for (i = 0; i < nknown; i++) numbers_add(&ns, known[i][0], known[i][1]);
  if (reach_registered(dev, ino, &ns, try, arg) == 0 || reach_any(&ns, dev, ino, try, arg) == 0)
    return 0;
  return reach_any(NULL, dev, ino, try, arg);
}

/* core.holders_dead() -> entries naming ended processes (finished, or
** killed while holding or writing one), for the fault spec. */
static int l_holders_dead(lua_State *L) {
  uint32_t hi = table ? __atomic_load_n(&table->hi, __ATOMIC_ACQUIRE) : 0, i;
  lua_Integer n = 0;
  for (i = 0; i < hi; i++) {
    int32_t p = LOAD(&table->e[i].pid);
    if (p != 0 && kill((pid_t)(p < 0 ? -p : p), 0) < 0 && errno == ESRCH) n++;
  }
  lua_pushinteger(L, n);
  return 1;
}

/* core.holders_reclaim() -> how many slots of ended processes were freed
** (what a full table does before giving up). */
static int l_holders_reclaim(lua_State *L) {
  lua_pushinteger(L, table ? reclaim_dead() : 0);
  return 1;
}

/* When the Lua state closes, mproc.core may be unloaded: the list of our
** entries goes (their files are closed by then; an entry left is stale
** and verified anyway). The table stays mapped: children may share it. */
static int mine_gc(lua_State *L) {
  (void)L;
  free(mine);
  mine = NULL;
  nmine = 0;
  return 0;
}

static void mine_sentinel(lua_State *L) {
  mp_on_state_close(L, "mproc.holders", mine_gc);
}

/* The table, once per process tree: a forked process has its parent's. */
void mp_open_holders(lua_State *L) {
  void *p;
  lua_pushcfunction(L, l_holders_dead);
  lua_setfield(L, -2, "holders_dead");
  lua_pushcfunction(L, l_holders_reclaim);
  lua_setfield(L, -2, "holders_reclaim");
  mine_sentinel(L);
  if (table != NULL) return;
  p = mmap(NULL, sizeof *table, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE,
           -1, 0);
  if (p != MAP_FAILED) table = (h_table *)p;   /* else: no registry, tokens only */
}

#else /* no /proc: objects reach only the processes that inherited them */

void mp_holders_add(int fd, int aux, uint64_t dev, uint64_t ino) {
  (void)fd; (void)aux; (void)dev; (void)ino;
}
void mp_holders_drop(int fd) { (void)fd; }
void mp_holders_forget_all(void) {}
int mp_holders_reach(uint64_t dev, uint64_t ino, const int known[][2], int nknown,
                     mp_holder_try try, void *arg) {
  (void)dev; (void)ino; (void)known; (void)nknown; (void)try; (void)arg;
  return -1;
}
int mp_find_held(pid_t pid, uint64_t dev, uint64_t ino) {
  (void)pid; (void)dev; (void)ino;
  return -1;
}
static int l_holders_zero(lua_State *L) {
  lua_pushinteger(L, 0);
  return 1;
}

void mp_open_holders(lua_State *L) {
  lua_pushcfunction(L, l_holders_zero);
  lua_setfield(L, -2, "holders_dead");
  lua_pushcfunction(L, l_holders_zero);
  lua_setfield(L, -2, "holders_reclaim");
}

#endif
