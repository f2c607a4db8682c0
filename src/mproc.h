/*
** mproc.h: what the C files of mproc.core share.
** Only luaopen_mproc_core leaves the shared object; the functions declared
** here are hidden from the dynamic symbol table with MP_HIDDEN.
*/
#ifndef MPROC_H
#define MPROC_H

#include <sys/types.h>

#include "lua.h"
#include "lauxlib.h"

#if defined(__GNUC__) || defined(__clang__)
#define MP_HIDDEN __attribute__((visibility("hidden")))
#define MP_EXPORT __attribute__((visibility("default")))
#else
#define MP_HIDDEN
#define MP_EXPORT
#endif

/* Each concern registers its functions into the module table on the top. */
MP_HIDDEN void mp_open_proc(lua_State *L);
MP_HIDDEN void mp_open_time(lua_State *L);

/* time.c: clocks and deadlines, in seconds as doubles */
MP_HIDDEN double mp_monotonic(void);
MP_HIDDEN double mp_walltime(void);
/* Milliseconds left until deadline (<0: none) for poll(), rounded up. */
MP_HIDDEN int mp_poll_ms(double deadline);
/* Deadline for a Lua timeout argument at idx: none/nil gives -1. */
MP_HIDDEN double mp_opt_deadline(lua_State *L, int idx);

/* Returns nil, "what: strerror(errno)", errno: the expected-failure shape. */
MP_HIDDEN int mp_fail(lua_State *L, const char *what);

/* proc.c: the fork path other concerns (pool workers) build on */
MP_HIDDEN void mp_after_fork_child(void);

#endif
