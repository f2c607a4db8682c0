/*
** mproc.h: what the C files of mproc.core share.
** Only luaopen_mproc_core leaves the shared object; the functions declared
** here are hidden from the dynamic symbol table with MP_HIDDEN.
*/
#ifndef MPROC_H
#define MPROC_H

#include <pthread.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "lua.h"
#include "lauxlib.h"

/* Names. mp_name: shared between files, declared here (MP_HIDDEN), grouped
** below by the file that defines it. In a file, static: l_name is a
** function of the module table (core.name, private ones included, such as
** core.barrier_arrive, which take the object); m_type_name a method or
** metamethod of a C type; TYPE_MT the type's metatable name "mproc.Type";
** other helpers type_verb or verb, lower case, types too (no CamelCase).
** Each file registers its types with mp_type and its functions in its
** mp_open_x, which core.c calls in turn. */

/* Platform: MP_LINUX is 1 on Linux, 0 elsewhere and when MP_PORTABLE is
** defined (make PORTABLE=1), which builds every non-Linux fallback here so
** that the specs test them. Each file's platform choices test it in one
** block near its top. */
#if defined(__linux__) && !defined(MP_PORTABLE)
#define MP_LINUX 1
#else
#define MP_LINUX 0
#endif

/* MP_HOT marks a function of a shared container's every read or write: GCC
** places them together (.text.hot), so they do not evict one another from
** the instruction cache (store.c's and dict.c's, spread out, cost a Dict
** write ~15% for a 1.4% rise in instructions). */
#if defined(__GNUC__) || defined(__clang__)
#define MP_HIDDEN __attribute__((visibility("hidden")))
#define MP_EXPORT __attribute__((visibility("default")))
#define MP_HOT __attribute__((hot))
#else
#define MP_HIDDEN
#define MP_EXPORT
#define MP_HOT
#endif

/* Each file's functions into the module table on the top (core.c). */
MP_HIDDEN void mp_open_auxlib(lua_State *L);
MP_HIDDEN void mp_open_fd(lua_State *L);
MP_HIDDEN void mp_open_proc(lua_State *L);
MP_HIDDEN void mp_open_time(lua_State *L);
MP_HIDDEN void mp_open_pool(lua_State *L);
MP_HIDDEN void mp_open_codec(lua_State *L);
MP_HIDDEN void mp_open_sync(lua_State *L);
MP_HIDDEN void mp_open_sharedctypes(lua_State *L);
MP_HIDDEN void mp_open_queue(lua_State *L);
MP_HIDDEN void mp_open_conn(lua_State *L);
MP_HIDDEN void mp_open_dict(lua_State *L);
MP_HIDDEN void mp_open_list(lua_State *L);
MP_HIDDEN void mp_open_store(lua_State *L);
MP_HIDDEN void mp_open_spawn(lua_State *L);   /* core.spawn, core.communicate */
MP_HIDDEN void mp_open_holders(lua_State *L); /* the registry, no functions */

/* auxlib.c: the one way to define a C type, and the one way to check one.
** mp_type registers the metatable tname (again, should the module be
** loaded again): the metamethods in meta; the methods (if any) in a table
** that is its __methods and its __index, unless index, a closure over that
** table, is its __index. Every function in meta and methods has the
** metatable as upvalue 1. The Lua layer extends a type only through
** core.interpose (auxlib.c); functions private to it are core functions
** taking the object (core.barrier_arrive(b)), never methods.
** mp_checkudata is luaL_checkudata, with a cheaper path for the hot
** methods: self (idx 1) in a function mp_type registered is checked against
** the function's upvalue 1 first, with no look-up in the registry. So a
** function registered for a type checks its self as that type only. */
MP_HIDDEN void mp_type(lua_State *L, const char *tname, const luaL_Reg *meta,
                       const luaL_Reg *methods, lua_CFunction index);
static inline void *mp_checkudata(lua_State *L, int idx, const char *tname) {
  void *p = lua_touserdata(L, idx);
  if (idx == 1 && p != NULL && lua_getmetatable(L, 1)) {
    int same = lua_rawequal(L, -1, lua_upvalueindex(1));
    lua_pop(L, 1);
    if (same) return p;
  }
  return luaL_checkudata(L, idx, tname);
}

/* auxlib.c: gc runs when the Lua state closes (a sentinel named name). */
MP_HIDDEN void mp_on_state_close(lua_State *L, const char *name, lua_CFunction gc);
/* auxlib.c: a receiver (__mproc_recv) loads the Lua module that adds its
** type's Lua methods, if this process has not loaded it yet. */
MP_HIDDEN void mp_require_layer(lua_State *L, const char *module);
/* auxlib.c: returns nil, "what: strerror(errno)", errno: the
** expected-failure shape. */
MP_HIDDEN int mp_fail(lua_State *L, const char *what);
/* error.c: misuse at the user's line. mp_where pushes "file:line: " of the
** first frame above the running C function outside mproc's Lua files ("" if
** it is a C function); mp_error raises like luaL_error with that position. */
MP_HIDDEN void mp_where(lua_State *L);
MP_HIDDEN int mp_error(lua_State *L, const char *fmt, ...);

/* time.c: clocks and deadlines, in seconds as doubles */
MP_HIDDEN double mp_monotonic(void);
MP_HIDDEN double mp_walltime(void);
/* Milliseconds left until deadline (<0: none) for poll(), rounded up. */
MP_HIDDEN int mp_poll_ms(double deadline);
/* Deadline for a Lua timeout argument at idx: none/nil gives -1. */
MP_HIDDEN double mp_opt_deadline(lua_State *L, int idx);
/* Blocking waits go in slices of at most MP_SLICE seconds, calling
** mp_interrupt_point between them while holding nothing: it lets a pending
** hook (lua.c's Ctrl-C) raise there. mp_slice_deadline is the sooner of
** deadline (<0: none) and the end of the next slice. */
#define MP_SLICE 0.05
MP_HIDDEN double mp_slice_deadline(double deadline);
MP_HIDDEN void mp_interrupt_point(lua_State *L);
/* Set while core.without_interrupt blocks SIGINT that the user had not:
** children forked or spawned meanwhile unblock it. A
** variable, not a call: proc.c's forked child reads it on its fast path. */
MP_HIDDEN extern int mp_interrupt_held;
/* Whether a hook is set, that mp_interrupt_point would let run: waits that
** hold something (a slot, a count) give it up first. */
MP_HIDDEN int mp_interrupt_pending(lua_State *L);
/* Whether L's hook is the one lua.c sets on Ctrl-C (every event, count 1:
** its signature). Inline: proc.c's forked child asks it too, and a call
** into time.c's code would be one more stretch of code for it to fault in. */
#define MP_CTRL_C_MASK (LUA_MASKCALL | LUA_MASKRET | LUA_MASKLINE | LUA_MASKCOUNT)
static inline int mp_is_ctrl_c_hook(lua_State *L) {
  return lua_gethook(L) != NULL && lua_gethookmask(L) == MP_CTRL_C_MASK &&
         lua_gethookcount(L) == 1;
}
/* Whether the value at idx is lua.c's Ctrl-C error ("interrupted!", maybe
** after a position, as util.lua's is_interrupt tells): a decode it cut
** short failed for no fault of the bytes, which are to be kept. */
MP_HIDDEN int mp_is_interrupt(lua_State *L, int idx);
/* Seconds (a duration or a point on a clock) as a timespec. */
MP_HIDDEN struct timespec mp_timespec(double seconds);

/* fd.c: pipe2(O_CLOEXEC) and socketpair(AF_UNIX, SOCK_STREAM|SOCK_CLOEXEC)
** or their equivalents; a 1 MiB pipe buffer if possible */
MP_HIDDEN int mp_cloexec_pipe(int fds[2]);
MP_HIDDEN int mp_cloexec_socketpair(int sv[2]);
MP_HIDDEN void mp_grow_pipe(int fd);
/* fd.c: shared files (memfd, else an unlinked temporary file), and opening
** one that another live process holds (/proc/<pid>/fd/<n>, Linux only). */
#define MP_HAVE_PROC_FD MP_LINUX
MP_HIDDEN int mp_shared_file(const char *name);
MP_HIDDEN int mp_open_held(pid_t pid, int fd, uint64_t dev, uint64_t ino);
/* fd.c: why a receive found no holder. clear before its attempts; note
** a failure (1 if it is a shortage of ours: EMFILE, ENFILE, ENOMEM, and
** the receive stops); short: the shortage noted, or 0; why, after: pushes
** the reason and returns 1 unless it is that no holder is left. */
MP_HIDDEN void mp_held_clear(void);
MP_HIDDEN int mp_held_note(int e);
MP_HIDDEN int mp_held_short(void);
MP_HIDDEN int mp_held_denied(pid_t pid, int fd);
MP_HIDDEN int mp_held_why(lua_State *L, pid_t pid, int fd, pid_t mpid, int mfd);
MP_HIDDEN void mp_push_unreached(lua_State *L, pid_t pid, int fd, pid_t mpid, int mfd);
MP_HIDDEN uint64_t mp_random64(void);
/* holders.c: the tree-wide registry of processes that hold a shared file
** (Linux; a no-op elsewhere). add when this process makes or attaches one
** (aux: a queue's notifier, else -1), drop before closing it. reach, when
** a token's own candidates failed, calls try(arg, pid, fd, aux) for each
** registered holder and then for every process of our user at each known
** number, until one returns 0 (try opens with mp_open_held and checks the
** content; aux -1: not known); 0 if one did. find_held: the number at
** which process pid holds dev:ino, or -1. forget_all, at exit: this
** process's entries go. */
typedef int (*mp_holder_try)(void *arg, pid_t pid, int fd, int aux);
MP_HIDDEN void mp_holders_add(int fd, int aux, uint64_t dev, uint64_t ino);
MP_HIDDEN void mp_holders_drop(int fd);
MP_HIDDEN void mp_holders_forget_all(void);
MP_HIDDEN int mp_find_held(pid_t pid, uint64_t dev, uint64_t ino);
MP_HIDDEN int mp_holders_reach(uint64_t dev, uint64_t ino, const int known[][2], int nknown,
                               mp_holder_try try, void *arg);
/* fd.c: a descriptor made readable when an object may be ready, for event
** loops: signal makes it readable, drain unreadable. -1 when closed. reach
** opens one another live process holds (Linux only). */
typedef struct { int rfd, wfd; } mp_notifier;
MP_HIDDEN int mp_notifier_open(mp_notifier *n);
MP_HIDDEN int mp_notifier_reach(mp_notifier *n, pid_t pid, int fd, uint64_t dev, uint64_t ino);
MP_HIDDEN void mp_notifier_signal(mp_notifier *n);
MP_HIDDEN void mp_notifier_drain(mp_notifier *n);
MP_HIDDEN void mp_notifier_close(mp_notifier *n);

/* shm.c: anonymous shared segments (inherited by fork), robust
** process-shared mutexes, and wait/wake on a 32-bit sequence word. */
MP_HIDDEN void *mp_shm_alloc(size_t size);
MP_HIDDEN void *mp_shm_reserve(size_t size);
MP_HIDDEN void mp_shm_free(void *p, size_t size);
MP_HIDDEN int mp_mutex_init(pthread_mutex_t *m);
MP_HIDDEN int mp_mutex_lock(lua_State *L, pthread_mutex_t *m, double deadline,
                            int *owner_died);
MP_HIDDEN int mp_mutex_trylock(pthread_mutex_t *m, int *owner_died);
MP_HIDDEN void mp_mutex_unlock(pthread_mutex_t *m);
MP_HIDDEN int mp_seq_wait(uint32_t *seq, uint32_t seen, double deadline);
MP_HIDDEN void mp_seq_wake(uint32_t *seq);
MP_HIDDEN void mp_seq_wake_one(uint32_t *seq);

/* cell.c: cells of shared memory for sync objects and shared values, and
** the userdata handles that point at them. */
typedef struct mp_cell {
  uint32_t magic;
  uint16_t type;
  uint8_t cls;            /* size class, 255: a mapping of its own */
  uint8_t shared;         /* bits: 1 sent (never recycled), 2 a lock in use */
  uint32_t gen;           /* bumped on reuse: stale tokens do not match */
  uint32_t lock_gen;      /* the lock that goes with it (Condition, Value): */
  uint64_t lock_off;      /* its offset in its region, */
  uint64_t size;          /* (header and body, in bytes) */
  uint64_t lock_origin;   /* and that region's origin (cell.c), 0: none */
} mp_cell;                /* 40 bytes; the body follows */
#define MP_CELL_BODY(c) ((void *)((c) + 1))

typedef struct {
  mp_cell *cell;          /* NULL once dropped */
  unsigned epoch;         /* fork epoch when made */
  pid_t creator;          /* pid that made the cell, 0: received */
  int counted;            /* its cell is a Value/Array's own mapping, whose
                          ** region counts our handles (cell.c) */
  const void *meta;       /* its metatable, for the methods' quick check */
} mp_handle;

/* mp_cell.type, and the metatables of the locks cell.c gives a received
** Condition or Value */
enum { MP_T_LOCK = 1, MP_T_RLOCK, MP_T_SEM, MP_T_EVENT, MP_T_COND,
       MP_T_BARRIER, MP_T_VALUE, MP_T_ARRAY };
#define MP_LOCK_MT "mproc.Lock"
#define MP_RLOCK_MT "mproc.RLock"

MP_HIDDEN void mp_cell_init(lua_State *L);
MP_HIDDEN uint64_t mp_self(void);
MP_HIDDEN mp_cell *mp_cell_alloc(size_t body, int type);
MP_HIDDEN void mp_handle_bind(mp_handle *h, mp_cell *cell, int creator);
MP_HIDDEN int mp_handle_sole(const mp_handle *h);
MP_HIDDEN void mp_handle_drop(mp_handle *h);
MP_HIDDEN void mp_handle_close(mp_handle *h);
MP_HIDDEN void mp_push_token(lua_State *L, mp_cell *cell);
MP_HIDDEN void mp_cell_set_lock(mp_cell *cell, mp_cell *lock);
MP_HIDDEN mp_cell *mp_cell_lock(mp_cell *cell);
/* cell.c: handle userdata, alike for every type (mt is "mproc.Name") */
MP_HIDDEN mp_handle *mp_handle_new(lua_State *L, const char *mt, int nuv);
MP_HIDDEN void *mp_handle_alloc(lua_State *L, mp_handle *h, size_t body, int type);
MP_HIDDEN void mp_handle_closed(lua_State *L, const char *mt);
/* The body of the handle of type mt at idx; raises if it is closed. The
** hot paths' check: for self in a method mp_type registered, not even the
** metatable is pushed and compared: a full userdata the size of a handle
** that names the method's metatable (upvalue 1) as its own is one
** (lua_rawlen is 0 for a light one, so h->meta is read in bounds). */
static inline void *mp_handle_body(lua_State *L, int idx, const char *mt) {
  mp_handle *h = (mp_handle *)lua_touserdata(L, idx);
  if (idx != 1 || h == NULL || lua_rawlen(L, 1) != sizeof *h ||
      h->meta != lua_topointer(L, lua_upvalueindex(1)))
    h = (mp_handle *)luaL_checkudata(L, idx, mt);
  if (h->cell == NULL) mp_handle_closed(L, mt);
  return MP_CELL_BODY(h->cell);
}
MP_HIDDEN int mp_handle_gc(lua_State *L, const char *mt);
MP_HIDDEN int mp_handle_send(lua_State *L, const char *mt);
MP_HIDDEN mp_handle *mp_handle_adopt(lua_State *L, mp_cell *cell, const char *mt, int nuv);
MP_HIDDEN mp_handle *mp_handle_recv(lua_State *L, int type, const char *mt, int nuv);

/* sync.c: what sharedctypes.c needs of locks */
MP_HIDDEN mp_cell *mp_test_lock(lua_State *L, int idx);


/* codec.c: Lua values to bytes and back (format and trust notes there).
** mp_encode encodes the value at idx; its bytes are p[0] (n[0] bytes)
** followed by p[1] (n[1] bytes: a top-level string's own bytes, so a big
** string is copied once, by the caller).  It pushes one value that keeps
** both alive while it stays on the stack.  Raises "cannot send ...".
** mp_decode decodes n bytes at p: pushes the value and returns 1, or pushes
** a message and returns 0; it never raises (a failing __mproc_recv or an
** allocation failure is returned as a message too).  functions = 0 refuses
** bytecode (for bytes from less trusted sources, and the fuzz target). */
typedef struct mp_bytes {
  const char *p[2];
  size_t n[2];
} mp_bytes;
MP_HIDDEN void mp_encode(lua_State *L, int idx, mp_bytes *out);
MP_HIDDEN int mp_decode(lua_State *L, const char *p, size_t n);
MP_HIDDEN int mp_decode_opt(lua_State *L, const char *p, size_t n, int functions);
/* mp_decode_status decodes like mp_decode but raises nothing, not even for
** want of memory (a top-level string too is made under the protected
** call): returns LUA_OK with the value pushed, or the failure's status
** (LUA_ERRMEM: out of memory) with its error object pushed, which may not
** be a string. */
MP_HIDDEN int mp_decode_status(lua_State *L, const char *p, size_t n);
/* mp_table_nodes: the bytes of the hash part of the table at idx (*n of
** them), where its non-integer keys and their values live; NULL where
** Lua's table layout is not the one codec.c knows. */
MP_HIDDEN const void *mp_table_nodes(lua_State *L, int idx, size_t *n);
/* modpath.c: the codec's index object -> { module, key1, ... } of what
** package.loaded reaches. mp_modpath_index pushes it (rebuilt when
** package.loaded changed), mp_modpath_rebuild pushes a fresh one;
** mp_modpath_valid: whether the path at -1 still leads to the value at
** idx; mp_modpath_find pushes the path the index at ix has for the value
** at idx and returns 1 if it is valid, else pushes nothing. */
MP_HIDDEN void mp_modpath_index(lua_State *L);
MP_HIDDEN void mp_modpath_rebuild(lua_State *L);
MP_HIDDEN int mp_modpath_valid(lua_State *L, int idx);
MP_HIDDEN int mp_modpath_find(lua_State *L, int ix, int idx);
/* mp_modpath_filter: the index's filter (at idx): an object whose pointer
** p gives mp_modpath_maybe 0 is not in the index. */
MP_HIDDEN const unsigned char *mp_modpath_filter(lua_State *L, int idx, size_t *mask);
static inline uint64_t mp_modpath_hash(const void *p) {
  return ((uint64_t)(uintptr_t)p >> 3) * 0x9e3779b97f4a7c15u;
}
/* Two bits an object, from two parts of one hash (mask < 2^20). */
static inline int mp_modpath_maybe(const unsigned char *bits, size_t mask, const void *p) {
  uint64_t h = mp_modpath_hash(p);
  size_t a = (size_t)(h >> 32) & mask, b = (size_t)(h >> 12) & mask;
  return (bits[a >> 3] >> (a & 7)) & (bits[b >> 3] >> (b & 7)) & 1;
}

/* proc.c: mproc.Child handles for spawned children (spawn.c), kept out of
** the exit hook's live table; push before spawning, attach after. */
MP_HIDDEN void mp_child_push(lua_State *L);
MP_HIDDEN void mp_child_attach(lua_State *L, int idx, pid_t pid);
/* proc.c: waitpid(pid, status, flags), looping on EINTR */
MP_HIDDEN pid_t mp_waitpid(pid_t pid, int *status, int flags);
/* proc.c: the CPUs this process may run on (its affinity where the system
** tells, else those online), at least 1 */
MP_HIDDEN long mp_process_cpus(void);

/* store.c: the shared store under Dict, List and Namespace (dict.c,
** list.c): a memfd with a robust lock, a growing heap of blocks, and
** transactions undone by an undo log when a holder dies (see store.c).
** Data offsets below MP_STORE_HEAP are the store's own. */
typedef struct mp_store mp_store;
typedef struct {
  uint64_t bump;          /* top of the heap */
  uint64_t a_off, a_cap;  /* the container's tables, as it likes */
  uint64_t b_off, b_cap;
  uint64_t n, count;
  uint64_t r_off, r_cap, r_n;  /* the table of stores its values name */
  uint64_t r_gen;              /* bumped when one of their counts falls to 0 */
} mp_store_state;
typedef struct { uint64_t log_n; mp_store_state st; int npunch; } mp_store_mark_t;
#define MP_STORE_HEAP 1024
enum { MP_STORE_DICT = 1, MP_STORE_LIST, MP_STORE_NAMESPACE };
MP_HIDDEN mp_store *mp_store_new(int kind);
MP_HIDDEN void mp_store_ref(mp_store *s);
MP_HIDDEN void mp_store_release(mp_store *s);
MP_HIDDEN int mp_store_lock(lua_State *L, mp_store *s);
MP_HIDDEN void mp_store_unlock(mp_store *s);
MP_HIDDEN void mp_store_fail(mp_store *s, const mp_store_mark_t *m);
MP_HIDDEN void mp_store_mark(mp_store *s, mp_store_mark_t *m);
MP_HIDDEN void mp_store_undo(mp_store *s, const mp_store_mark_t *m);
MP_HIDDEN int mp_store_room(mp_store *s, uint64_t n);
MP_HIDDEN void mp_store_put(mp_store *s, uint64_t off, uint64_t v);
MP_HIDDEN int mp_store_alloc(mp_store *s, uint64_t n, uint64_t *off);
MP_HIDDEN void mp_store_free(mp_store *s, uint64_t off);
MP_HIDDEN void mp_store_reset(mp_store *s);
MP_HIDDEN void mp_store_emptied(mp_store *s);
MP_HIDDEN int mp_store_clear(lua_State *L, const char *mt);
MP_HIDDEN int mp_store_method(lua_State *L);
MP_HIDDEN mp_store_state *mp_store_st(mp_store *s);
MP_HIDDEN char *mp_store_data(mp_store *s);
MP_HIDDEN uint64_t mp_store_seed(mp_store *s);
MP_HIDDEN int mp_store_held(mp_store *s);
MP_HIDDEN int mp_store_locked(lua_State *L, mp_store *s);
MP_HIDDEN uint64_t mp_store_block_size(mp_store *s, uint64_t off);
/* Log entries an mp_store_alloc, an mp_store_free, mp_store_reset take. */
#define MP_STORE_ALLOC_LOG 3
#define MP_STORE_FREE_LOG 3
#define MP_STORE_RESET_LOG 80
/* A process-wide scratch buffer for bytes copied out under a lock: taken
** (or a new one) with room for n bytes, given back when decoded. */
typedef struct { char *p; size_t cap; } mp_buf;
MP_HIDDEN int mp_buf_take(mp_buf *b, size_t n);
MP_HIDDEN void mp_buf_give(mp_buf *b);
/* Userdata on a store, alike for the three types (mt is "mproc.Name") */
MP_HIDDEN mp_store *mp_store_check(lua_State *L, int idx, const char *mt);
MP_HIDDEN mp_store *mp_store_test(lua_State *L, int idx, const char *mt);
MP_HIDDEN mp_store *mp_store_make(lua_State *L, const char *mt, int kind);
MP_HIDDEN int mp_store_gc(lua_State *L, const char *mt);
MP_HIDDEN int mp_store_send(lua_State *L, const char *mt);
MP_HIDDEN int mp_store_recv(lua_State *L, const char *mt, int kind);
MP_HIDDEN int mp_store_eq(lua_State *L, const char *mt);
MP_HIDDEN int mp_store_raise(lua_State *L, const char *what, int e);
MP_HIDDEN mp_store *mp_store_lock_or_raise(lua_State *L, mp_store *s, const char *mt);
/* A value copied out under the lock (n bytes at data offset off), decoded
** after it; from: the store it was read from, which keeps what it names. */
#define MP_STORE_SMALL 512
typedef struct { char small[MP_STORE_SMALL]; mp_buf buf; const char *p; size_t n; } mp_vcopy;
MP_HIDDEN int mp_store_copy_out(mp_store *s, uint64_t off, uint64_t n, mp_vcopy *c);
MP_HIDDEN void mp_store_push_copy(lua_State *L, mp_vcopy *c, mp_store *from, const char *mt);
MP_HIDDEN void mp_store_decoding(mp_store *from);
MP_HIDDEN void mp_store_unlock_taken(mp_store *s, uint32_t nref);
MP_HIDDEN void mp_store_push_taken(lua_State *L, mp_vcopy *c, mp_store *s, uint32_t nref,
                                   const char *mt);
/* References: a value stored in a container names the stores it holds as
** ids (MP_STORE_ID bytes each) at the end of its record, counted in the
** container's table (crash-safe, in the same transaction); this process
** keeps each named store mapped while it keeps the container. */
#define MP_STORE_ID 24
#define MP_STORE_REFS_LOG(n) ((uint64_t)(n) + MP_STORE_ALLOC_LOG + MP_STORE_FREE_LOG)
MP_HIDDEN int mp_store_encoding(void);
MP_HIDDEN uint32_t mp_store_encode(lua_State *L, mp_store *into, int idx, mp_bytes *b,
                                   const char **ids);
MP_HIDDEN int mp_store_refs_add(mp_store *s, const char *ids, uint32_t n);
MP_HIDDEN void mp_store_refs_drop(mp_store *s, const char *ids, uint32_t n);
MP_HIDDEN void mp_store_keep_ids(mp_store *s, const char *ids, uint32_t n);
typedef struct { uint64_t *seen; uint64_t n; const char *why; } mp_store_tally_t;
MP_HIDDEN void mp_store_tally(mp_store *s, mp_store_tally_t *t, const char *ids, uint32_t n);
/* The kinds' own checks and snapshots, for core.store_check/_snapshot */
MP_HIDDEN const char *mp_dict_check_table(mp_store *s, mp_store_tally_t *t);
MP_HIDDEN const char *mp_list_check_array(mp_store *s, mp_store_tally_t *t);
MP_HIDDEN void mp_dict_snapshot(lua_State *L, mp_store *s, const char *mt);
MP_HIDDEN void mp_list_snapshot(lua_State *L, mp_store *s);

#endif
