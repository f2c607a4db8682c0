rockspec_format = "3.0"
package = "mproc"
version = "scm-1"
source = {
  url = "git+https://github.com/mproc-lua/mproc.git",
  branch = "main",
}
description = {
  summary = "Python's multiprocessing and subprocess for Lua 5.4, on a native fork/pipe core",
  detailed = [[
Process, Pool, Queue, Pipe, locks, shared values and subprocess
(call/run/Popen), after Python's multiprocessing and subprocess, on a C core
that forks, spawns with vfork and keeps its shared objects in robust
process-shared memory: a process killed at any instant corrupts no queue and
wedges no lock, and a pool worker that dies fails only its own tasks.
Linux only (glibc or musl): it needs robust process-shared mutexes.
]],
  homepage = "https://github.com/mproc-lua/mproc",
  license = "MIT",
}
supported_platforms = { "linux" }
dependencies = {
  "lua >= 5.4, < 5.5",
}
build = {
  type = "builtin",
  modules = {
    ["mproc.core"] = {
      sources = {
        "src/auxlib.c",
        "src/codec.c",
        "src/cell.c",
        "src/conn.c",
        "src/core.c",
        "src/error.c",
        "src/dict.c",
        "src/fd.c",
        "src/holders.c",
        "src/list.c",
        "src/modpath.c",
        "src/proc.c",
        "src/queue.c",
        "src/sharedctypes.c",
        "src/pool.c",
        "src/shm.c",
        "src/spawn.c",
        "src/store.c",
        "src/sync.c",
        "src/time.c",
      },
      libraries = { "pthread", "m" },
    },
    ["mproc"] = "lua/mproc/init.lua",
    ["mproc.process"] = "lua/mproc/process.lua",
    ["mproc.subprocess"] = "lua/mproc/subprocess.lua",
    ["mproc.sharedctypes"] = "lua/mproc/sharedctypes.lua",
    ["mproc.sync"] = "lua/mproc/sync.lua",
    ["mproc.pool"] = "lua/mproc/pool.lua",
    ["mproc.futures"] = "lua/mproc/futures.lua",
    ["mproc.queue"] = "lua/mproc/queue.lua",
    ["mproc.connection"] = "lua/mproc/connection.lua",
    ["mproc.util"] = "lua/mproc/util.lua",
    ["mproc.managers"] = "lua/mproc/managers.lua",
  },
  copy_directories = { "docs" },
}
