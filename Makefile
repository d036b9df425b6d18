# Makefile - the entry point on a fresh clone.  It installs missing
# dependencies (contrib/deps.sh), runs autoreconf and configure into a build
# directory on first use, then hands every target to the automake build.
#
#   make            build reactord and reactorctl (in build/)
#   make run        build and start the embedded default (conf/reactor.conf):
#                   reactord with a private redis-server on 127.0.0.1:50051
#                   and the config's local workers (workers.local: 2)
#   make run WORKERS=N
#                   the same with N local workers instead (0: none, for
#                   outside workers only); the config file is not edited
#                   (reactord --workers N)
#   make check      every test (unit + integration)
#   make check SANITIZE=1   the same in an ASan+UBSan build (build-san/)
#   make fuzz [FUZZ_TIME=60] [FUZZ=h2 json ...]
#                   build the libFuzzer targets with clang (build-fuzz/) and
#                   run each for FUZZ_TIME seconds (fuzz/run.sh)
#   make install [PREFIX=/usr/local] [DESTDIR=...]
#                   the programs and man pages, the config where reactord
#                   looks without -c (PREFIX/etc/reactor/reactor.conf, kept
#                   if present), the systemd unit and its sysusers.d and
#                   tmpfiles.d snippets (PREFIX/lib/...)
#
# Automake's generated Makefile lives in the build directory, so this file
# and the generated one never collide.

PREFIX ?= /usr/local
SANITIZE ?=
ifeq ($(SANITIZE),1)
BUILD ?= build-san
CONFIGURE_FLAGS += --enable-sanitizers
else
BUILD ?= build
endif
CFLAGS ?= -O2 -g
RUN_CONF ?= $(CURDIR)/conf/reactor.conf
WORKERS ?=

.PHONY: all check run install uninstall clean distclean deps bench fuzz

all: $(BUILD)/Makefile
	@$(MAKE) --no-print-directory -C $(BUILD)

check: $(BUILD)/Makefile
	@$(MAKE) --no-print-directory -C $(BUILD) check || \
		{ cat $(BUILD)/test-suite.log 2>/dev/null | tail -n 200; exit 1; }

run: all
	cd $(BUILD) && exec ./reactord -c $(RUN_CONF) $(if $(WORKERS),--workers $(WORKERS))

# The prefix is compiled in (reactord's default config path,
# PREFIX/etc/reactor/reactor.conf) and written into the systemd unit, so a
# PREFIX other than the one configured reconfigures and rebuilds reactord
# rather than installing a binary that looks elsewhere.
install: $(BUILD)/Makefile
	@if [ "$$(sed -n 's/^prefix = //p' $(BUILD)/Makefile)" != "$(PREFIX)" ]; then \
		cd $(BUILD) && ../configure --prefix=$(PREFIX) CFLAGS="$(CFLAGS)" $(CONFIGURE_FLAGS) && \
		rm -f src/cmd/reactord/*.o; fi
	@$(MAKE) --no-print-directory -C $(BUILD) install DESTDIR=$(DESTDIR)

uninstall: $(BUILD)/Makefile
	@$(MAKE) --no-print-directory -C $(BUILD) uninstall prefix=$(PREFIX) DESTDIR=$(DESTDIR)

deps:
	sh contrib/deps.sh

# Dependencies first: a fresh Debian machine has none of them.
.deps-ok: contrib/deps.sh
	@sh contrib/deps.sh
	@touch $@

configure: configure.ac Makefile.am .deps-ok
	autoreconf -fi

$(BUILD)/Makefile: configure Makefile.am
	@mkdir -p $(BUILD)
	cd $(BUILD) && ../configure --prefix=$(PREFIX) CFLAGS="$(CFLAGS)" $(CONFIGURE_FLAGS)

# Fuzzing: its own clang build directory, out of all/check.
FUZZ_BUILD ?= build-fuzz
FUZZ_TIME ?= 60
FUZZ ?=
FUZZ_CFLAGS ?= -O1 -g -fsanitize=fuzzer-no-link,address,undefined \
	-fno-sanitize-recover=all -fno-omit-frame-pointer

fuzz: $(FUZZ_BUILD)/Makefile
	@$(MAKE) --no-print-directory -C $(FUZZ_BUILD) fuzz-targets
	@sh fuzz/run.sh $(FUZZ_BUILD) $(FUZZ_TIME) $(FUZZ)

$(FUZZ_BUILD)/Makefile: configure Makefile.am
	@mkdir -p $(FUZZ_BUILD)
	cd $(FUZZ_BUILD) && ../configure CC=clang CFLAGS="$(FUZZ_CFLAGS)"

clean:
	-@for d in build build-san $(FUZZ_BUILD); do [ -f $$d/Makefile ] && $(MAKE) -C $$d clean; done; true

distclean:
	rm -rf build build-san build-fuzz autom4te.cache build-aux configure config.h.in config.h.in~ \
		aclocal.m4 Makefile.in .deps-ok

bench: all
	@echo "benchmarks: see contrib/bench/*.sh"
