# retort -- plain Makefile, no configure step.
#
#   make            build everything into build/ (laid out like an install)
#   make deps       apt-get what is missing (does nothing when all is there);
#                   make deps-test adds the test tools (chromium, strace,
#                   python3-numpy)
#   make demo       deps + build + the Fashion-MNIST distillation
#   make test       deps + build + every test (prints "N passed, N failed")
#   make test SAN=1 the same under AddressSanitizer + UBSan, in build-san/
#   make bench      benchmarks (not tests)
#   make fuzz       libFuzzer on every parser, FUZZ_SECONDS each
#   make check-valgrind  the file-reader suites under valgrind, in build-vg/
#   make install    PREFIX=/usr/local DESTDIR=
#
# The build tree mirrors the install tree, so the built-in plugin folder is
# always <dir of libretort.so>/retort/plugins.

PREFIX  ?= /usr/local
DESTDIR ?=
CC      ?= cc
OPT     ?= -O2 -march=native
BUILD   ?= build
SAN     ?=

ifeq ($(SAN),1)
BUILD    := build-san
OPT      := -O1 -g -march=native
# float-cast-overflow: gcc's undefined group leaves it out (clang's has it).
SANFLAGS := -fsanitize=address,undefined,float-cast-overflow -fno-omit-frame-pointer \
            -fno-sanitize-recover=all
endif

PKGS     := lua5.4 openblas libcjson zlib
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   = $(shell pkg-config --libs openblas libcjson zlib 2>/dev/null)
LUA_LIBS   = $(shell pkg-config --libs lua5.4 2>/dev/null)

# -fno-math-errno lets sqrtf/expf vectorise (Adam's pass is 5x faster).
WARN     := -Wall -Wextra -Wno-unused-parameter $(if $(WERROR),-Werror)
BASEFLAGS = -std=c11 -D_GNU_SOURCE -g $(OPT) -fno-math-errno -fPIC $(WARN) $(SANFLAGS)
# The core's folders, lowest first (docs/architecture.md): a file may use
# its own folder and those before it.  Their private headers are found by
# name (-Icore/base ...); plugins see only core/ (the installed headers).
CORE_DIRS := base kernels io data train host
CORE_INC  := -Icore $(CORE_DIRS:%=-Icore/%)
CFLAGS_CORE = $(BASEFLAGS) $(CORE_INC) $(PKG_CFLAGS) -MMD -MP
CFLAGS_PLUG = $(BASEFLAGS) -Icore -MMD -MP
LDSAN     = $(SANFLAGS)

LIB      := $(BUILD)/lib/libretort.so
PLUGDIR  := $(BUILD)/lib/retort/plugins
LUAMOD   := $(BUILD)/lib/lua/5.4/retort.so
CLI      := $(BUILD)/bin/retort

# core/*.c: a file not yet in a folder still builds; tests/check_layout.sh
# fails until it is moved into one.
CORE_SRC := $(wildcard $(CORE_DIRS:%=core/%/*.c) core/*.c)
CORE_OBJ := $(CORE_SRC:%.c=$(BUILD)/obj/%.o)
LUA_SRC  := $(filter-out core/lua/main.c,$(wildcard core/lua/*.c))
LUA_OBJ  := $(LUA_SRC:%.c=$(BUILD)/obj/%.o) $(BUILD)/obj/gen/lualib.o
# util.lua first: the other chunks take rt.util when they load; then
# commands.lua, whose rt.command the cmd_*.lua files call as they load.
LUA_FIRST := scripts/retort/util.lua scripts/retort/commands.lua
LUA_LIB_FILES := $(LUA_FIRST) \
  $(filter-out $(LUA_FIRST),$(sort $(wildcard scripts/retort/*.lua)))
PLUG_SRC := $(wildcard plugins/teachers/*.c plugins/losses/*.c plugins/students/*.c)
PLUGINS  := $(addprefix $(PLUGDIR)/,$(notdir $(PLUG_SRC:.c=.so)))

TEST_SRC := $(wildcard tests/c/test_*.c)
TESTS    := $(TEST_SRC:tests/c/%.c=$(BUILD)/tests/%)
FIXT_SRC := $(wildcard tests/fixtures/*.c)
FIXTURES := $(FIXT_SRC:tests/fixtures/%.c=$(BUILD)/tests/fixtures/%.so)
# The out-of-tree example plugins, also built here with the plugins' flags.
EXAMPLES := $(BUILD)/examples/cosine_logits.so $(BUILD)/examples/margin_rank.so
BENCH_SRC := $(wildcard bench/*.c)
BENCHES  := $(BENCH_SRC:bench/%.c=$(BUILD)/bench/%)

# What building and running need; the tests need TEST_PKGS too (a browser
# for the report check, strace for I/O fault injection, Debian's numpy for
# the PyTorch-interop check): `make demo` does not pull them in.
DEPS_PKGS := build-essential pkg-config liblua5.4-dev lua5.4 libopenblas-dev \
             libcjson-dev zlib1g-dev dataset-fashion-mnist fortunes
TEST_PKGS := chromium strace python3-numpy valgrind
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: all deps deps-test demo test check bench fuzz install uninstall clean check-plugins check-valgrind
# The headers a plugin builds against, copied where retort.pc says they are
# (<prefix>/include/retort), in the build tree as in an install.
HEADERS  := core/rt_plugin.h core/retort.h core/rt_loss_kit.h core/rt_nn.h core/rt_nn_lm.h core/rt_nn_conv.h
# What a plugin compiles against: the ABI and the header-only kits.
PLUG_HDR := core/rt_plugin.h core/rt_loss_kit.h core/rt_nn.h core/rt_nn_lm.h core/rt_nn_conv.h $(wildcard plugins/*/*.h)
INCLUDES := $(HEADERS:core/%=$(BUILD)/include/retort/%)

all: $(LIB) $(PLUGINS) $(LUAMOD) $(CLI) $(BUILD)/lib/pkgconfig/retort.pc $(INCLUDES) $(EXAMPLES)

# Installs the packages of $(1) that are missing; nothing when all are there.
apt_missing = missing=""; for p in $(1); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "make: installing$$missing"; \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq $$missing; \
	fi

deps:
	@$(call apt_missing,$(DEPS_PKGS))

deps-test: deps
	@$(call apt_missing,$(TEST_PKGS))

# ---------------------------------------------------------------- the core
$(BUILD)/obj/core/%.o: core/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_CORE) -c $< -o $@

$(LIB): $(CORE_OBJ)
	@mkdir -p $(dir $@)
	$(CC) -shared -o $@ $^ $(LDSAN) $(PKG_LIBS) -ldl -lm -Wl,-soname,libretort.so

# ------------------------------------------------------------- the plugins
# Plugins link nothing but libc/libm: all else comes through rt_api.
# -z defs makes a stray reference to a core/Lua/BLAS symbol a link error.
define plugin_rule
$(PLUGDIR)/$(notdir $(1:.c=.so)): $(1) $(PLUG_HDR)
	@mkdir -p $$(dir $$@)
	$$(CC) $$(CFLAGS_PLUG) -shared -o $$@ $$< $$(LDSAN) -lm -Wl,-z,defs
endef
$(foreach s,$(PLUG_SRC),$(eval $(call plugin_rule,$(s))))

# ------------------------------------------------ Lua module and the command
$(BUILD)/gen/lualib.c: $(LUA_LIB_FILES) core/lua/embed.lua Makefile
	@mkdir -p $(dir $@)
	lua5.4 core/lua/embed.lua $@ $(LUA_LIB_FILES)

$(BUILD)/obj/gen/lualib.o: $(BUILD)/gen/lualib.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_CORE) -c $< -o $@

$(BUILD)/obj/core/lua/%.o: core/lua/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_CORE) -c $< -o $@

# The module does not link liblua: the interpreter that loads it provides it.
$(LUAMOD): $(LUA_OBJ) $(LIB)
	@mkdir -p $(dir $@)
	$(CC) -shared -o $@ $(LUA_OBJ) $(LDSAN) -L$(BUILD)/lib -lretort \
	  $(PKG_LIBS) -Wl,-rpath,'$$ORIGIN/../..'

$(CLI): $(BUILD)/obj/core/lua/main.o $(LUA_OBJ) $(LIB)
	@mkdir -p $(dir $@)
	$(CC) -o $@ $(BUILD)/obj/core/lua/main.o $(LUA_OBJ) $(LDSAN) \
	  -L$(BUILD)/lib -lretort $(LUA_LIBS) $(PKG_LIBS) -lm -Wl,-rpath,'$$ORIGIN/../lib' \
	  -Wl,-E

# pkg-config file for out-of-tree plugins; written again by install with the
# PREFIX given there, so the installed one always points at the install.
RT_VERSION_STR = $(shell sed -n 's/^\#define RT_VERSION "\(.*\)"/\1/p' core/retort.h)
write_pc = printf '%s\n' 'prefix=$(1)' 'libdir=$${prefix}/lib' \
	  'includedir=$${prefix}/include' 'plugindir=$${libdir}/retort/plugins' '' \
	  'Name: retort' 'Description: knowledge-distillation framework (plugin ABI)' \
	  'Version: $(RT_VERSION_STR)' 'Cflags: -I$${includedir}/retort' \
	  'Libs: -L$${libdir} -lretort' > $(2)

$(BUILD)/lib/pkgconfig/retort.pc: Makefile core/retort.h
	@mkdir -p $(dir $@)
	@$(call write_pc,$(abspath $(BUILD)),$@)

$(BUILD)/include/retort/%.h: core/%.h
	@mkdir -p $(dir $@)
	cp $< $@

# ------------------------------------------------------------------- tests
$(BUILD)/tests/%: tests/c/%.c tests/c/t.h $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_CORE) -Itests/c -o $@ $< $(LDSAN) -L$(BUILD)/lib -lretort \
	  $(PKG_LIBS) -lm -Wl,-rpath,'$$ORIGIN/../lib'

$(BUILD)/tests/fixtures/%.so: tests/fixtures/%.c $(PLUG_HDR)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_PLUG) -shared -o $@ $< $(LDSAN) -lm

$(BUILD)/bench/%: bench/%.c $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_CORE) -o $@ $< $(LDSAN) -L$(BUILD)/lib -lretort $(PKG_LIBS) \
	  -lm -Wl,-rpath,'$$ORIGIN/../lib'

# The out-of-tree example, built here with the same flags as the plugins.
$(BUILD)/examples/%.so: examples/custom_loss/%.c $(PLUG_HDR)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_PLUG) -shared -o $@ $< $(LDSAN) -lm -Wl,-z,defs

# png_marks: reads Chromium's screenshot for tests/check_report.sh.
PNG_MARKS := $(BUILD)/tests/png_marks
$(PNG_MARKS): tests/png_marks.c
	@mkdir -p $(dir $@)
	$(CC) $(BASEFLAGS) -o $@ $< $(LDSAN) -lz

check: all $(TESTS) $(FIXTURES) $(EXAMPLES) $(PNG_MARKS)
	@BUILD=$(BUILD) bash tests/run.sh

test: deps-test
	@$(MAKE) --no-print-directory check

# The file-reader suites (the malformed corpus among them) under valgrind.
# Built in build-vg without -march=native: valgrind stops with SIGILL at the
# AVX-512 instructions that -march=native emits on this machine.  Leaks
# count if definite or indirect (OpenBLAS keeps its threads' stacks).
VG_TESTS := test_corpus test_hardening test_safetensors test_idx
check-valgrind:
	@$(MAKE) --no-print-directory BUILD=build-vg OPT="-O1 -g" all $(VG_TESTS:%=build-vg/tests/%)
	@for t in $(VG_TESTS); do \
	  RETORT_TEST_BUILD=build-vg valgrind -q --error-exitcode=9 --leak-check=full \
	    --errors-for-leak-kinds=definite,indirect build-vg/tests/$$t || exit 1; done

check-plugins: $(PLUGINS)
	@BUILD=$(BUILD) bash tests/check_plugins.sh

demo: deps
	@$(MAKE) --no-print-directory all
	$(CLI) run scripts/recipes/fashion_mnist.lua $(ARGS)

bench: deps
	@$(MAKE) --no-print-directory all $(BENCHES)
	@for b in $(BENCHES); do $$b || exit 1; done

# -------------------------------------------------------------------- fuzz
# libFuzzer over the parsers (safetensors, IDX raw and gzip'd, plugin
# options JSON; clang + libclang-rt-14-dev), each for FUZZ_SECONDS, starting
# from tests/fuzz/seeds/NAME; the corpus grows in $(BUILD)/fuzz/corpus-NAME.
# UBSan does not recover: undefined behaviour is a finding, and any finding
# fails the target.
FUZZ_SECONDS ?= 30
FUZZERS := $(patsubst tests/fuzz/%.c,$(BUILD)/fuzz/%,$(wildcard tests/fuzz/*.c))
$(BUILD)/fuzz/%: tests/fuzz/%.c $(CORE_SRC) $(wildcard core/*.h core/*/*.h)
	@mkdir -p $(dir $@)
	clang -std=c11 -D_GNU_SOURCE -g -O1 -fno-math-errno -fsanitize=fuzzer,address,undefined \
	  -fno-sanitize-recover=all $(CORE_INC) $(PKG_CFLAGS) $< $(CORE_SRC) -o $@ $(PKG_LIBS) -ldl -lm

fuzz: $(FUZZERS)
	@for f in $(FUZZERS); do n=$$(basename $$f); mkdir -p $(BUILD)/fuzz/corpus-$$n; \
	  echo "fuzz $$n: $(FUZZ_SECONDS)s"; \
	  $$f -malloc_limit_mb=512 -timeout=2 -max_total_time=$(FUZZ_SECONDS) \
	    $(BUILD)/fuzz/corpus-$$n $$(ls -d tests/fuzz/seeds/$$n 2>/dev/null) > $(BUILD)/fuzz/$$n.log 2>&1 \
	    || { tail -n 40 $(BUILD)/fuzz/$$n.log; exit 1; }; \
	  tail -n 1 $(BUILD)/fuzz/$$n.log; done

# ----------------------------------------------------------------- install
install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib/retort/plugins \
	  $(DESTDIR)$(PREFIX)/lib/lua/5.4 $(DESTDIR)$(PREFIX)/include/retort \
	  $(DESTDIR)$(PREFIX)/lib/pkgconfig
	install -m 755 $(CLI) $(DESTDIR)$(PREFIX)/bin/retort
	install -m 755 $(LIB) $(DESTDIR)$(PREFIX)/lib/libretort.so
	install -m 755 $(PLUGINS) $(DESTDIR)$(PREFIX)/lib/retort/plugins/
	install -m 755 $(LUAMOD) $(DESTDIR)$(PREFIX)/lib/lua/5.4/retort.so
	install -m 644 $(HEADERS) $(DESTDIR)$(PREFIX)/include/retort/
	$(call write_pc,$(PREFIX),$(DESTDIR)$(PREFIX)/lib/pkgconfig/retort.pc)
	@# The command and the module find libretort by their rpath; ldconfig
	@# only refreshes the system cache, which only root may write.
	@if [ -z "$(DESTDIR)" ] && [ "$$(id -u)" = 0 ] && command -v ldconfig >/dev/null; then ldconfig; fi

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/bin/retort $(DESTDIR)$(PREFIX)/lib/libretort.so \
	  $(DESTDIR)$(PREFIX)/lib/lua/5.4/retort.so \
	  $(DESTDIR)$(PREFIX)/lib/pkgconfig/retort.pc
	rm -rf $(DESTDIR)$(PREFIX)/lib/retort $(DESTDIR)$(PREFIX)/include/retort

clean:
	rm -rf build build-san build-vg

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
