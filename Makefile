# mproc: Python's multiprocessing and subprocess for Lua 5.4.
# `make demo` and `make test` install what is missing (make deps) first.

LUA      ?= lua5.4
LUA_INC  ?= /usr/include/lua5.4
CC       ?= cc
CFLAGS   ?= -O2 -g
WERROR   ?=
WARN      = -Wall -Wextra $(WERROR)
LIBS      = -lpthread -lm
DEB_PKGS  = lua5.4 liblua5.4-dev lua-busted luarocks lua-luv lua-cqueues

SRC   = $(wildcard src/*.c)
HDR   = $(wildcard src/*.h)
# PORTABLE=1 builds every non-Linux fallback on Linux (no futex, memfd,
# mremap, pidfd, eventfd, epoll, close_range, PDEATHSIG, pipe2, ...) into
# build-portable/, so `make test PORTABLE=1` tests them.
PORTABLE ?=
ifneq ($(PORTABLE),)
BUILD   = build-portable
PORTDEF = -DMP_PORTABLE
PORTENV = MPROC_PORTABLE=1
else
BUILD   = build
PORTDEF =
PORTENV =
endif
# Calls into Lua's API through the GOT, not the PLT: the codec makes a few
# hundred per message (6% of a table's round trip). Only where the compiler
# takes the flag without a warning.
NOPLT := $(shell $(CC) -Werror -fno-plt -x c -c /dev/null -o /dev/null 2>/dev/null && echo -fno-plt)
SO    = $(BUILD)/mproc/core.so
ASAN_SO = build-asan/mproc/core.so
SANITIZE = -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer

# Specs and examples use the tree, not an installed copy.
LUAENV = LUA=$(LUA) $(PORTENV) LUA_PATH_5_4='./lua/?.lua;./lua/?/init.lua;./spec/?.lua;./?.lua;;' \
         LUA_CPATH_5_4='./$(1)/?.so;;'
BUSTED = $(LUA) "$$(command -v busted)"
EXAMPLES = $(sort $(wildcard examples/tutorial/*.lua))

.PHONY: all deps demo test asan bench lint clean fuzz rock

all: $(SO)

$(SO): $(SRC) $(HDR)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(NOPLT) $(PORTDEF) $(WARN) -fPIC -shared -fvisibility=hidden -I$(LUA_INC) \
	  -o $@ $(SRC) $(LDFLAGS) $(LIBS)

$(ASAN_SO): $(SRC) $(HDR)
	@mkdir -p $(@D)
	$(CC) -O1 -g $(WARN) $(SANITIZE) -fPIC -shared -I$(LUA_INC) -o $@ $(SRC) $(LIBS)

# Installs the distribution packages that are missing; does nothing when
# all are present.
deps:
	@missing=; for p in $(DEB_PKGS); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  sudo=; [ "$$(id -u)" = 0 ] || sudo=sudo; \
	  echo "make deps: installing$$missing"; \
	  $$sudo apt-get update -qq && \
	  $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

demo: deps
	@$(MAKE) --no-print-directory all
	@for f in $(EXAMPLES); do \
	  echo "== $$f"; $(call LUAENV,$(BUILD)) $(LUA) $$f || exit 1; done

# Each spec file runs in a busted of its own, two at a time, and spec/run.lua
# sums them up in one busted summary line. With BUSTED_ARGS (files, busted
# options), one busted runs what they name, as before.
test: deps
	@$(MAKE) --no-print-directory all
	$(call LUAENV,$(BUILD)) $(if $(BUSTED_ARGS),$(BUSTED) $(BUSTED_ARGS),$(LUA) spec/run.lua $(BUILD)/spec-times)

# The specs again, with the core built under AddressSanitizer and UBSan.
asan: deps $(ASAN_SO)
	$(call LUAENV,build-asan) LD_PRELOAD="$$($(CC) -print-file-name=libasan.so)" \
	  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:handle_segv=0:handle_sigbus=0:handle_abort=0:handle_sigfpe=0 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  MPROC_ASAN=1 $(BUSTED) $(BUSTED_ARGS)

bench: deps all
	@$(call LUAENV,build) sh bench/run

lint:
	luacheck lua spec examples bench

# A LuaRocks source rock of the commit checked out, made offline; it
# installs anywhere with `luarocks --lua-version=5.4 install <rock>`.
rock:
	@sh tools/pack-rock rockspec/mproc-0.1.0-1.rockspec build/rock

clean:
	rm -rf build build-asan build-portable

# The decoder under libFuzzer (clang, -fsanitize=fuzzer): FUZZ_TIME seconds,
# seeded with fuzz/seeds.lua; findings land in build/fuzz/.
FUZZ_TIME ?= 60
FUZZ_EXE   = build/fuzz/decode_fuzz
$(FUZZ_EXE): fuzz/decode_fuzz.c src/codec.c src/modpath.c src/error.c src/auxlib.c $(HDR)
	@mkdir -p $(@D)
	clang -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
	  -I$(LUA_INC) -o $@ fuzz/decode_fuzz.c src/codec.c src/modpath.c src/error.c src/auxlib.c -llua5.4 -lm

fuzz: $(FUZZ_EXE) all
	@mkdir -p build/fuzz/corpus build/fuzz/seeds
	@$(call LUAENV,build) $(LUA) fuzz/seeds.lua build/fuzz/seeds
	$(FUZZ_EXE) -max_total_time=$(FUZZ_TIME) -max_len=4096 -timeout=10 \
	  -artifact_prefix=build/fuzz/ -print_final_stats=1 build/fuzz/corpus build/fuzz/seeds
