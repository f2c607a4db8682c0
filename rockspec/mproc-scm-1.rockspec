rockspec_format = "3.0"
package = "mproc"
version = "scm-1"
source = {
  url = "git+file:///dev/null",
}
description = {
  summary = "Python's multiprocessing and subprocess for Lua 5.4, on a native fork/pipe core",
  license = "MIT",
}
dependencies = {
  "lua >= 5.4, < 5.5",
}
build = {
  type = "builtin",
  modules = {
    ["mproc.core"] = {
      sources = {
        "src/codec.c",
        "src/cell.c",
        "src/conn.c",
        "src/core.c",
        "src/fd.c",
        "src/proc.c",
        "src/queue.c",
        "src/sharedctypes.c",
        "src/pool.c",
        "src/shm.c",
        "src/spawn.c",
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
    ["mproc.queue"] = "lua/mproc/queue.lua",
    ["mproc.connection"] = "lua/mproc/connection.lua",
    ["mproc.util"] = "lua/mproc/util.lua",
  },
}
