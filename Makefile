# libsubsae — GNU make build. Everything is built out of tree into $(BUILD).
#
#   make            shared + static library, build/subsae.pc, build/bin/subsae
#                   (and build/bin/subsae-mpi when mpicc is found)
#   make check      installs missing Debian packages, builds, runs all tests
#   make demo       installs, builds, runs the main job on built-in data
#   make examples   the C and C++ examples into build/examples/
#   make sanitize   the test suite under AddressSanitizer + UBSan
#   make valgrind   the test suite under valgrind memcheck (no-fork mode)
#   make tsan       the threads test under ThreadSanitizer (also run by check)
#   make fuzz       libFuzzer harnesses, FUZZ_SECONDS each (needs clang)
#   make bench      speed, as ratios to the machine's own BLAS rate
#   make install PREFIX=... DESTDIR=...   /   make uninstall
#   make deps       installs the Debian packages that are missing

.DEFAULT_GOAL := all
SHELL := /bin/bash
.DELETE_ON_ERROR:

# ---- configuration (all overridable) --------------------------------
PREFIX      ?= /usr/local
EXEC_PREFIX ?= $(PREFIX)
LIBDIR      ?= $(EXEC_PREFIX)/lib
INCLUDEDIR  ?= $(PREFIX)/include
BINDIR      ?= $(EXEC_PREFIX)/bin
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig
DESTDIR     ?=
BUILD       ?= build
CFLAGS      ?= -O2 -g
LDFLAGS     ?=
WERROR      ?= -Werror
PYTHON      ?= /usr/bin/python3
SHARED_DATA ?= $(abspath ../shared)
V           ?= 0

# `make V=1` shows the full commands.
ifeq ($(V),0)
Q = @
say = @printf '  %-6s %s\n' $(1) $(2);
else
Q =
say =
endif

# ---- version: the header is the single source -----------------------
version_part = $(shell sed -n 's/^\#define SUBSAE_VERSION_$(1) \([0-9][0-9]*\).*/\1/p' include/subsae.h)
MAJOR   := $(call version_part,MAJOR)
MINOR   := $(call version_part,MINOR)
PATCH   := $(call version_part,PATCH)
VERSION := $(MAJOR).$(MINOR).$(PATCH)

# ---- dependencies ---------------------------------------------------
# pkg-config modules the library links against, and the Debian packages
# that provide everything `make check` uses (see `make deps`).
LIB_PKGS  := openblas lapacke jansson
TEST_PKGS := check
DEBIAN_PACKAGES := pkg-config libopenblas-openmp-dev liblapacke-dev \
                   libjansson-dev libdnnl-dev check python3-numpy abigail-tools gnuplot-nox \
                   openmpi-bin libopenmpi-dev

PKG_CFLAGS := $(shell pkg-config --cflags $(LIB_PKGS) 2>/dev/null)
# oneDNN (libdnnl-dev) ships no pkg-config file.
DNNL_LIBS  := -ldnnl
PKG_LIBS   := $(shell pkg-config --libs $(LIB_PKGS) 2>/dev/null) $(DNNL_LIBS)
JSON_LIBS    := $(shell pkg-config --libs jansson 2>/dev/null)
CHECK_CFLAGS := $(shell pkg-config --cflags $(TEST_PKGS) 2>/dev/null)
CHECK_LIBS   := $(shell pkg-config --libs $(TEST_PKGS) 2>/dev/null)

# ---- flags ----------------------------------------------------------
WARNINGS := -Wall -Wextra $(WERROR) -Wshadow -Wstrict-prototypes -Wvla
BASE_CFLAGS := -std=c11 -D_DEFAULT_SOURCE -D_FILE_OFFSET_BITS=64 $(WARNINGS) \
               -fopenmp -Iinclude $(PKG_CFLAGS)
LIB_CFLAGS  := $(BASE_CFLAGS) -fPIC -fvisibility=hidden -DSUBSAE_BUILDING_LIBRARY \
               -Ilib $(CFLAGS)
APP_CFLAGS  := $(BASE_CFLAGS) $(CFLAGS)
SYS_LIBS    := -fopenmp -lm -lpthread

# ---- products -------------------------------------------------------
SONAME     := libsubsae.so.$(MAJOR)
SHLIB      := $(BUILD)/libsubsae.so.$(VERSION)
STLIB      := $(BUILD)/libsubsae.a
PCFILE     := $(BUILD)/subsae.pc
STATIC_PCFILE := $(BUILD)/subsae-static.pc
CLI        := $(BUILD)/bin/subsae
TEST_RUNNER := $(BUILD)/tests/run_tests

LIB_SRCS  := $(sort $(wildcard lib/*.c))
LIB_OBJS  := $(LIB_SRCS:%.c=$(BUILD)/obj/%.o)
CLI_SRCS  := $(sort $(wildcard tools/*.c))
CLI_OBJS  := $(CLI_SRCS:%.c=$(BUILD)/obj/%.o)
TEST_SRCS := $(sort $(wildcard tests/*.c))
# The fuzz harness bodies (tests/fuzz/fuzz_*.c) are linked into the test
# runner too: `make check` replays the corpora through them.
FUZZ_SRCS := $(sort $(wildcard tests/fuzz/fuzz_*.c))
TEST_OBJS := $(TEST_SRCS:%.c=$(BUILD)/obj/%.o) $(FUZZ_SRCS:%.c=$(BUILD)/obj/%.o)
BENCH_SRCS := $(sort $(wildcard bench/*.c))
BENCH_BINS := $(BENCH_SRCS:bench/%.c=$(BUILD)/bin/bench_%)

.PHONY: all check check-run demo reproduce methods-unseen matryoshka-on-data bench examples install uninstall clean \
        sanitize deps ensure-deps tests check-abi abi-baseline fuzz fuzz-build fuzz-corpus \
        valgrind tsan tsan-run format

all: $(SHLIB) $(STLIB) $(PCFILE) $(STATIC_PCFILE) $(CLI)

# ---- subsae-mpi (optional): built when an MPI compiler wrapper is found --
# The train and rank subcommands of the CLI (the same objects) with an MPI
# main (tools/mpi/main.c) and the MPI adapter of the collective hook
# (examples/mpi/subsae_mpi.c); only these two files see mpi.h. The library
# itself never links MPI.
MPICC    ?= mpicc
HAVE_MPI := $(shell command -v $(MPICC) >/dev/null 2>&1 && echo yes)
MPI_CLI  := $(BUILD)/bin/subsae-mpi
MPI_TOOL_OBJS := $(patsubst %.c,$(BUILD)/obj/%.o,tools/cli.c tools/sae_cli.c tools/progress.c \
                   tools/dist.c tools/cmd_train.c tools/cmd_rank.c tools/plot.c tools/train_options.c \
                   tools/train_log.c tools/run_dir.c tools/run_record.c tools/interrupt.c)
MPI_OBJS := $(MPI_TOOL_OBJS) $(BUILD)/obj/mpi/main.o $(BUILD)/obj/mpi/subsae_mpi.o
ifeq ($(HAVE_MPI),yes)
all: $(MPI_CLI)
endif

$(BUILD)/obj/mpi/main.o: tools/mpi/main.c examples/mpi/subsae_mpi.h include/subsae.h \
                         $(wildcard tools/*.h) | $(BUILD)/obj/mpi
	$(call say,MPICC,$<)$(MPICC) $(APP_CFLAGS) -Iexamples/mpi -MMD -MP -c $< -o $@
$(BUILD)/obj/mpi/subsae_mpi.o: examples/mpi/subsae_mpi.c examples/mpi/subsae_mpi.h \
                               include/subsae.h | $(BUILD)/obj/mpi
	$(call say,MPICC,$<)$(MPICC) $(APP_CFLAGS) -MMD -MP -c $< -o $@

$(MPI_CLI): $(MPI_OBJS) $(SHLIB) | $(BUILD)/bin
	$(call say,LINK,$@)$(MPICC) $(LDFLAGS) -o $@ $(MPI_OBJS) -L$(BUILD) -lsubsae $(PKG_LIBS) -lm \
	    -Wl,-rpath,'$$ORIGIN/..:$$ORIGIN/../lib'

# ---- library --------------------------------------------------------
$(BUILD)/obj/lib/%.o: lib/%.c include/subsae.h $(wildcard lib/*.h) | $(BUILD)/obj/lib
	$(call say,CC,$<)$(CC) $(LIB_CFLAGS) -MMD -MP -c $< -o $@

$(SHLIB): $(LIB_OBJS) lib/libsubsae.map
	$(call say,LINK,$@)$(CC) -shared -Wl,-soname,$(SONAME) -Wl,--version-script=lib/libsubsae.map \
	    -Wl,--no-undefined $(LDFLAGS) -o $@ $(LIB_OBJS) $(PKG_LIBS) $(SYS_LIBS)
	$(Q)ln -sf libsubsae.so.$(VERSION) $(BUILD)/$(SONAME)
	$(Q)ln -sf $(SONAME) $(BUILD)/libsubsae.so

$(STLIB): $(LIB_OBJS)
	$(call say,AR,$@)rm -f $@ && $(AR) rcs $@ $^

# The .pc files are generated from pkgconfig/*.pc.in for a given prefix:
# subsae.pc (the shared library; --static adds the private dependencies)
# and subsae-static.pc (the archive by its path, for a static link when
# both libraries are installed).
define make_pc
sed -e 's|@PREFIX@|$(1)|' -e 's|@LIBDIR@|$(2)|' -e 's|@INCLUDEDIR@|$(3)|' \
    -e 's|@VERSION@|$(VERSION)|' pkgconfig/$(4).pc.in
endef

$(PCFILE): pkgconfig/subsae.pc.in include/subsae.h | $(BUILD)
	$(call say,GEN,$@)$(call make_pc,$(PREFIX),$(LIBDIR),$(INCLUDEDIR),subsae) > $@

$(STATIC_PCFILE): pkgconfig/subsae-static.pc.in include/subsae.h | $(BUILD)
	$(call say,GEN,$@)$(call make_pc,$(PREFIX),$(LIBDIR),$(INCLUDEDIR),subsae-static) > $@

# ---- command-line program (a client of the shared library only) ------
# It also links CBLAS/LAPACKE (PKG_LIBS, which include jansson): the
# benchmarks (`subsae bench`) measure the machine's own BLAS rates.
$(BUILD)/obj/tools/%.o: tools/%.c include/subsae.h $(wildcard tools/*.h) | $(BUILD)/obj/tools
	$(call say,CC,$<)$(CC) $(APP_CFLAGS) -MMD -MP -c $< -o $@

$(CLI): $(CLI_OBJS) $(SHLIB) | $(BUILD)/bin
	$(call say,LINK,$@)$(CC) $(LDFLAGS) -o $@ $(CLI_OBJS) -L$(BUILD) -lsubsae $(PKG_LIBS) -lm \
	    -Wl,-rpath,'$$ORIGIN/..:$$ORIGIN/../lib'

# ---- the model host (examples/llama: a client of the shared library) --
LLAMA      := $(BUILD)/bin/subsae-llama
LLAMA_SRCS := $(sort $(wildcard examples/llama/*.c))
LLAMA_OBJS := $(LLAMA_SRCS:%.c=$(BUILD)/obj/%.o)
all: $(LLAMA)

$(BUILD)/obj/examples/llama/%.o: examples/llama/%.c include/subsae.h $(wildcard examples/llama/*.h) | $(BUILD)/obj/examples/llama
	$(call say,CC,$<)$(CC) $(APP_CFLAGS) -MMD -MP -c $< -o $@

$(LLAMA): $(LLAMA_OBJS) $(SHLIB) | $(BUILD)/bin
	$(call say,LINK,$@)$(CC) $(LDFLAGS) -fopenmp -o $@ $(LLAMA_OBJS) -L$(BUILD) -lsubsae $(PKG_LIBS) -lm \
	    -Wl,-rpath,'$$ORIGIN/..:$$ORIGIN/../lib'

# ---- tests (Check; linked statically so they can reach internals) ---
$(BUILD)/obj/tests/%.o: tests/%.c include/subsae.h $(wildcard tests/*.h) $(wildcard lib/*.h) | $(BUILD)/obj/tests
	$(call say,CC,$<)$(CC) $(APP_CFLAGS) -Ilib $(CHECK_CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/obj/tests/fuzz/%.o: tests/fuzz/%.c include/subsae.h tests/fuzz/fuzz.h $(wildcard lib/*.h) | $(BUILD)/obj/tests/fuzz
	$(call say,CC,$<)$(CC) $(APP_CFLAGS) -Ilib -MMD -MP -c $< -o $@

$(TEST_RUNNER): $(TEST_OBJS) $(STLIB) | $(BUILD)/tests
	$(call say,LINK,$@)$(CC) $(LDFLAGS) -o $@ $(TEST_OBJS) $(STLIB) $(PKG_LIBS) $(CHECK_LIBS) $(SYS_LIBS)

tests: all examples $(TEST_RUNNER)

# The test programs find the build, the shared data and the tools through
# the environment, so that the same runner works for every build flavour.
TEST_ENV := SUBSAE_BUILD=$(abspath $(BUILD)) SUBSAE_SOURCE=$(CURDIR) \
            SUBSAE_SHARED=$(SHARED_DATA) SUBSAE_PYTHON=$(PYTHON) \
            $(if $(SUBSAE_SANITIZE),SUBSAE_SANITIZE=1) $(if $(SUBSAE_TSAN),SUBSAE_TSAN=1)

check: ensure-deps
	+$(MAKE) --no-print-directory check-run

check-run: tests
	$(TEST_ENV) $(TEST_RUNNER)

SANITIZE_FLAGS := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined \
                  -fno-sanitize-recover=all
sanitize: ensure-deps
	+$(MAKE) --no-print-directory BUILD=$(BUILD)/sanitize \
	    CFLAGS="$(SANITIZE_FLAGS)" LDFLAGS="-fsanitize=address,undefined" \
	    SUBSAE_SANITIZE=1 check-run

# ---- valgrind: the whole suite under memcheck --------------------------
# Check runs in no-fork mode (one process, so memcheck sees every test and
# every leak); SUBSAE_VALGRIND=1 lets the longest tests shrink their sizes.
# Programs the tests start (the CLI, make, python) are not traced. Known
# noise of OpenBLAS / libgomp thread pools is suppressed by
# tests/valgrind.supp (each entry says why).
VALGRIND ?= valgrind
VALGRIND_FLAGS := --tool=memcheck --error-exitcode=99 --leak-check=full \
                  --show-leak-kinds=definite,indirect,possible \
                  --errors-for-leak-kinds=definite,indirect,possible \
                  --suppressions=tests/valgrind.supp --num-callers=40 --child-silent-after-fork=yes
valgrind: ensure-deps
	@command -v $(VALGRIND) >/dev/null || $(MAKE) --no-print-directory deps DEBIAN_PACKAGES=valgrind
	+$(MAKE) --no-print-directory tests
	$(TEST_ENV) CK_FORK=no SUBSAE_VALGRIND=1 $(VALGRIND) $(VALGRIND_FLAGS) $(TEST_RUNNER)

# ---- ThreadSanitizer: the threads suite (tests/test_threads.c) -------
# Library and test built with -fsanitize=thread in $(BUILD)/tsan, in a
# runner of their own (harness + that suite only). libgomp is not
# instrumented, so its thread pool would give false reports: the test sets
# the library's (and OpenBLAS's) thread count to 1 under TSan
# (SUBSAE_TSAN=1) and OMP_NUM_THREADS=1 keeps libgomp from starting a pool;
# the concurrency under test is the callers' threads. `make check` runs it
# (tests/test_threads.c: tsan_clean).
TSAN_FLAGS  := -O1 -g -fno-omit-frame-pointer -fsanitize=thread
TSAN_RUNNER := $(BUILD)/tests/run_threads
TSAN_OBJS   := $(BUILD)/obj/tests/harness.o $(BUILD)/obj/tests/test_threads.o

$(TSAN_RUNNER): $(TSAN_OBJS) $(STLIB) | $(BUILD)/tests
	$(call say,LINK,$@)$(CC) $(LDFLAGS) -o $@ $(TSAN_OBJS) $(STLIB) $(PKG_LIBS) $(CHECK_LIBS) $(SYS_LIBS)

tsan:
	+$(Q)$(MAKE) --no-print-directory BUILD=$(BUILD)/tsan CFLAGS="$(TSAN_FLAGS)" \
	    LDFLAGS="-fsanitize=thread" SUBSAE_TSAN=1 tsan-run

tsan-run: $(TSAN_RUNNER)
	$(Q)$(TEST_ENV) OMP_NUM_THREADS=1 CK_FORK=no CK_VERBOSITY=normal \
	    TSAN_OPTIONS="halt_on_error=1 exitcode=66" $(TSAN_RUNNER)

# ---- fuzzing (libFuzzer; clang is needed here only, not by make check) --
# `make fuzz FUZZ_SECONDS=N [FUZZ_TARGETS="npy ..."]` builds one libFuzzer
# binary per harness with the library's sources compiled in, and runs each
# for N seconds from its seed corpus. New corpus entries go to a scratch
# directory under $(BUILD)/fuzz/new (kept between runs, never in the repo);
# crashes, leaks, timeouts and out-of-memory inputs are saved to
# tests/fuzz/crashes/<name>/ as reproducers, which `make check` replays.
FUZZ_CC      ?= clang-14
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?= npy safetensors sae_dir checkpoint
FUZZ_PACKAGES := clang-14 libclang-rt-14-dev
FUZZ_BUILD   := $(BUILD)/fuzz
FUZZ_FLAGS   := -g -O1 -fno-omit-frame-pointer -fsanitize=fuzzer,address,undefined \
                -fno-sanitize-recover=undefined
# No -fopenmp: clang's OpenMP runtime must not meet OpenBLAS's libgomp; the
# library's loops run serially (the fuzzers use one thread anyway) and its
# few omp_* calls (timers, thread ids) link against libgomp.
FUZZ_CFLAGS  := -std=c11 -D_DEFAULT_SOURCE -D_FILE_OFFSET_BITS=64 -Wall -Wno-unknown-pragmas \
                -Wno-source-uses-openmp -Wno-unused-variable -Wno-unused-function -Iinclude -Ilib -Itests/fuzz $(PKG_CFLAGS) $(FUZZ_FLAGS)
FUZZ_OBJS    := $(patsubst %.c,$(FUZZ_BUILD)/obj/%.o,$(LIB_SRCS) $(FUZZ_SRCS))
FUZZ_BINS    := $(FUZZ_TARGETS:%=$(FUZZ_BUILD)/fuzz_%)
.SECONDARY: $(FUZZ_OBJS)

$(FUZZ_BUILD)/obj/%.o: %.c include/subsae.h tests/fuzz/fuzz.h $(wildcard lib/*.h)
	@mkdir -p $(@D)
	$(call say,FUZZCC,$<)$(FUZZ_CC) $(FUZZ_CFLAGS) -c $< -o $@

$(FUZZ_BUILD)/fuzz_%: tests/fuzz/libfuzzer_main.c $(FUZZ_OBJS)
	$(call say,LINK,$@)$(FUZZ_CC) $(FUZZ_CFLAGS) -DFUZZ_TARGET=subsae_fuzz_$* -o $@ $< \
	    $(FUZZ_OBJS) $(PKG_LIBS) -lgomp -lm -lpthread

fuzz-build:
	@command -v $(FUZZ_CC) >/dev/null || $(MAKE) --no-print-directory deps DEBIAN_PACKAGES="$(FUZZ_PACKAGES)"
	+$(Q)$(MAKE) --no-print-directory $(FUZZ_BINS)

fuzz: fuzz-build
	@status=0; for t in $(FUZZ_TARGETS); do \
	    mkdir -p $(FUZZ_BUILD)/new/$$t tests/fuzz/crashes/$$t; \
	    echo "fuzz $$t for $(FUZZ_SECONDS) s (log: $(FUZZ_BUILD)/fuzz_$$t.log)"; \
	    $(FUZZ_BUILD)/fuzz_$$t -max_total_time=$(FUZZ_SECONDS) -timeout=10 -rss_limit_mb=2048 \
	        -print_final_stats=1 -artifact_prefix=tests/fuzz/crashes/$$t/ \
	        $(FUZZ_BUILD)/new/$$t tests/fuzz/corpus/$$t > $(FUZZ_BUILD)/fuzz_$$t.log 2>&1 \
	        || { status=1; echo "fuzz $$t: FINDING, reproducer in tests/fuzz/crashes/$$t/"; }; \
	    grep -E '^stat::number_of_executed_units|^stat::peak_rss_mb|cov: ' $(FUZZ_BUILD)/fuzz_$$t.log \
	        | tail -n 3 | sed "s/^/  $$t: /"; \
	done; exit $$status

# Rewrites the seed corpora (checked in) from tests/fuzz/make_corpus.c.
$(BUILD)/bin/fuzz_make_corpus: tests/fuzz/make_corpus.c $(BUILD)/obj/tests/fuzz/fuzz_common.o $(STLIB) | $(BUILD)/bin
	$(call say,LINK,$@)$(CC) $(APP_CFLAGS) -Ilib -Itests/fuzz -o $@ $< $(BUILD)/obj/tests/fuzz/fuzz_common.o \
	    $(STLIB) $(PKG_LIBS) $(SYS_LIBS)

fuzz-corpus: $(BUILD)/bin/fuzz_make_corpus
	$(BUILD)/bin/fuzz_make_corpus tests/fuzz/corpus

# ---- format: .clang-format applied to the library ---------------------
# clang-format 14 reads the expressions of `#pragma omp` lines as
# declarations and writes `(double)n *(double)m`; the sed puts the space
# back, so that formatting twice changes nothing.
format:
	clang-format -i lib/*.c lib/*.h
	sed -i -E '/num_threads|#pragma omp/ s/([A-Za-z0-9_)]) \*\(/\1 * (/g' lib/*.c

# ---- ABI gate: the checked-in baseline against a -g -Og build ---------
ABI_BASELINE := abi/libsubsae.abi
ABI_BUILD    := $(BUILD)/abi
ABI_LIB      := $(ABI_BUILD)/libsubsae.so.$(VERSION)

$(ABI_LIB): $(LIB_SRCS) $(wildcard lib/*.h) include/subsae.h lib/libsubsae.map
	+$(Q)$(MAKE) --no-print-directory BUILD=$(ABI_BUILD) CFLAGS="-g -Og" $(ABI_LIB)

check-abi: $(ABI_LIB)
	$(Q)abi/check-abi.sh $(ABI_BASELINE) $(ABI_LIB) include

abi-baseline: $(ABI_LIB)
	$(Q)abidw --headers-dir include --drop-private-types --no-corpus-path \
	    --out-file $(ABI_BASELINE) $(ABI_LIB)
	@echo "wrote $(ABI_BASELINE) from $(ABI_LIB)"

# ---- demo, examples, benchmarks -------------------------------------
demo: ensure-deps
	+$(MAKE) --no-print-directory all
	$(CLI) demo

# The reproduction report: every layer and site, the dead-feature experiment
# and, when MODEL exists, the loss recovered by the SAEs spliced into the
# model, into $(BUILD)/reproduce/report.md and spectra.png. With MODEL the
# data is recorded by subsae-llama; without it the files of DATA are used.
DATA  ?= $(SHARED_DATA)/data/stories260K
MODEL ?= $(DATA)/stories260K.bin
reproduce: ensure-deps
	+$(MAKE) --no-print-directory all
	$(PYTHON) tools/reproduce.py $(CLI) $(DATA) $(BUILD)/reproduce $(LLAMA) $(MODEL)

# Issue 18's recipe (Matryoshka, gated, skip transcoders) on fresh
# recordings of MODEL that no choice of ours was tuned on (5-10 minutes).
# METHODS_UNSEEN_FLAGS=--whole: the Matryoshka tables only, trained on
# every row and evaluated on them.
methods-unseen: ensure-deps
	+$(MAKE) --no-print-directory all
	$(PYTHON) tools/methods_unseen.py $(CLI) $(LLAMA) $(MODEL) $(METHODS_UNSEEN_FLAGS)

# Matryoshka BatchTopK against plain on each shared 16,384-row file of DATA,
# trained on the whole file and evaluated on it (about 3 minutes).
matryoshka-on-data: ensure-deps
	+$(MAKE) --no-print-directory all
	$(PYTHON) tools/matryoshka_on_data.py $(CLI) $(DATA)

$(BUILD)/bin/bench_%: bench/%.c $(STLIB) | $(BUILD)/bin
	$(call say,LINK,$@)$(CC) $(APP_CFLAGS) -Ilib -o $@ $< $(STLIB) $(PKG_LIBS) $(SYS_LIBS)

# The PyTorch peers of bench/peers.sh need python3-torch (large, so only
# `make bench` installs it); /usr/bin/time measures the peak memory.
BENCH_PACKAGES := python3-torch time

bench: ensure-deps
	+$(MAKE) --no-print-directory deps DEPS_PACKAGES="$(BENCH_PACKAGES)"
	+$(MAKE) --no-print-directory all
	$(CLI) bench all
	bench/peak_memory.sh $(BUILD)
	bench/peers.sh $(BUILD)

# The C and C++ examples, linked against the shared library (found at run
# time through an rpath to $(BUILD)); the C++ one only when $(CXX) exists.
# `make check` builds them and tests/test_examples.c runs them, together
# with the Rust and Python examples.
CXX         ?= g++
EXAMPLE_DIR := $(BUILD)/examples
EXAMPLE_BINS := $(EXAMPLE_DIR)/quickstart $(EXAMPLE_DIR)/stream
HAVE_CXX    := $(shell command -v $(CXX) >/dev/null 2>&1 && echo yes)
ifeq ($(HAVE_CXX),yes)
EXAMPLE_BINS += $(EXAMPLE_DIR)/cpp_example
endif
EXAMPLE_LINK := -L$(BUILD) -lsubsae -lm -Wl,-rpath,'$$ORIGIN/..'

examples: all $(EXAMPLE_BINS)

$(EXAMPLE_DIR)/%: examples/%.c include/subsae.h $(SHLIB) | $(EXAMPLE_DIR)
	$(call say,CC,$<)$(CC) -std=c11 $(WARNINGS) -Iinclude $(CFLAGS) $(LDFLAGS) -o $@ $< \
	    $(EXAMPLE_LINK)

$(EXAMPLE_DIR)/cpp_example: examples/cpp/example.cpp examples/cpp/subsae.hpp include/subsae.h \
                            $(SHLIB) | $(EXAMPLE_DIR)
	$(call say,CXX,$<)$(CXX) -std=c++17 -Wall -Wextra $(WERROR) -Wshadow -Iinclude -Iexamples/cpp $(CFLAGS) $(LDFLAGS) \
	    -o $@ $< $(EXAMPLE_LINK)

# ---- dependencies ---------------------------------------------------
# Installs the missing Debian packages: apt-get as root, sudo otherwise;
# when neither is possible it prints the exact command and fails.
DEPS_PACKAGES ?= $(DEBIAN_PACKAGES)
deps:
	@missing=""; \
	for p in $(DEPS_PACKAGES); do \
	    dpkg-query -W -f='$${Status}\n' "$$p" 2>/dev/null | grep -q '^install ok installed' \
	        || missing="$$missing $$p"; \
	done; \
	if [ -z "$$missing" ]; then echo "deps: all Debian packages present"; exit 0; fi; \
	cmd="apt-get install -y --no-install-recommends$$missing"; \
	if [ "$$(id -u)" = 0 ]; then sudo=""; \
	elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo="sudo"; \
	else echo "deps: missing packages:$$missing"; \
	     echo "deps: run as root:  apt-get update && $$cmd"; exit 1; fi; \
	echo "deps: installing$$missing"; \
	export DEBIAN_FRONTEND=noninteractive; \
	$$sudo $$cmd -q || { $$sudo apt-get update -q && $$sudo $$cmd -q; }

ensure-deps:
	@pkg-config --exists $(LIB_PKGS) $(TEST_PKGS) 2>/dev/null \
	    && $(foreach p,$(DEBIAN_PACKAGES),dpkg-query -W -f='$${Status}\n' $(p) 2>/dev/null | grep -q '^install ok installed' &&) true \
	    || $(MAKE) --no-print-directory deps

# ---- install --------------------------------------------------------
install: all
	install -d $(DESTDIR)$(LIBDIR) $(DESTDIR)$(INCLUDEDIR) $(DESTDIR)$(PKGCONFIGDIR) $(DESTDIR)$(BINDIR)
	install -m 644 include/subsae.h $(DESTDIR)$(INCLUDEDIR)/subsae.h
	install -m 644 examples/cpp/subsae.hpp $(DESTDIR)$(INCLUDEDIR)/subsae.hpp
	install -m 755 $(SHLIB) $(DESTDIR)$(LIBDIR)/libsubsae.so.$(VERSION)
	ln -sf libsubsae.so.$(VERSION) $(DESTDIR)$(LIBDIR)/$(SONAME)
	ln -sf $(SONAME) $(DESTDIR)$(LIBDIR)/libsubsae.so
	install -m 644 $(STLIB) $(DESTDIR)$(LIBDIR)/libsubsae.a
	$(call make_pc,$(PREFIX),$(LIBDIR),$(INCLUDEDIR),subsae) > $(DESTDIR)$(PKGCONFIGDIR)/subsae.pc
	$(call make_pc,$(PREFIX),$(LIBDIR),$(INCLUDEDIR),subsae-static) > \
	    $(DESTDIR)$(PKGCONFIGDIR)/subsae-static.pc
	install -m 755 $(CLI) $(DESTDIR)$(BINDIR)/subsae
	install -m 755 $(LLAMA) $(DESTDIR)$(BINDIR)/subsae-llama
	$(if $(wildcard $(MPI_CLI)),install -m 755 $(MPI_CLI) $(DESTDIR)$(BINDIR)/subsae-mpi)

uninstall:
	rm -f $(DESTDIR)$(INCLUDEDIR)/subsae.h $(DESTDIR)$(INCLUDEDIR)/subsae.hpp \
	      $(DESTDIR)$(LIBDIR)/libsubsae.so.$(VERSION) $(DESTDIR)$(LIBDIR)/$(SONAME) \
	      $(DESTDIR)$(LIBDIR)/libsubsae.so $(DESTDIR)$(LIBDIR)/libsubsae.a \
	      $(DESTDIR)$(PKGCONFIGDIR)/subsae.pc $(DESTDIR)$(PKGCONFIGDIR)/subsae-static.pc \
	      $(DESTDIR)$(BINDIR)/subsae \
	      $(DESTDIR)$(BINDIR)/subsae-mpi $(DESTDIR)$(BINDIR)/subsae-llama

clean:
	rm -rf $(BUILD)

$(BUILD) $(BUILD)/bin $(BUILD)/tests $(BUILD)/examples $(BUILD)/obj/lib $(BUILD)/obj/tools \
$(BUILD)/obj/tests $(BUILD)/obj/tests/fuzz $(BUILD)/obj/mpi $(BUILD)/obj/examples/llama:
	$(Q)mkdir -p $@

-include $(LIB_OBJS:.o=.d) $(CLI_OBJS:.o=.d) $(LLAMA_OBJS:.o=.d) $(TEST_OBJS:.o=.d) $(BUILD)/obj/mpi/main.d \
         $(BUILD)/obj/mpi/subsae_mpi.d
