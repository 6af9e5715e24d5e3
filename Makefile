# chokepoint — top-level commands (Meson + Ninja underneath).
#
#   make deps    install the Debian packages the tests need too (root)
#   make         build into build/
#   make run     the packages running needs + build + run chokepointd on
#                etc/chokepoint.yaml (as root: dropping to user chokepoint)
#   make test    deps + build + every test suite (unit, integration with real
#                Postfix, ASan/UBSan run, fuzz-corpus replay); ends with
#                "N passed, N failed"
#   make bench   policy throughput vs the do-nothing bound and the peers
#   make fuzz    run the fuzz targets for FUZZ_SECONDS each (default 60)

BUILD ?= build
ASAN_BUILD ?= build-asan
FUZZ_BUILD ?= build-fuzz
FUZZ_SECONDS ?= 60
RUN_DIR ?= /tmp/chokepoint-run

.PHONY: all deps deps-run build run test unit integration asan fuzz-build fuzz-replay \
        fuzz bench clean check-includes

# a target whose command fails leaves no half-written file behind
.DELETE_ON_ERROR:

all: build

deps:
	sh scripts/deps.sh

deps-run:
	sh scripts/deps.sh run

$(BUILD)/build.ninja:
	meson setup $(BUILD) --werror

build: $(BUILD)/build.ninja
	ninja -C $(BUILD)

run: deps-run build
	sh scripts/run-dev.sh $(BUILD) $(RUN_DIR)

test: deps build
	sh scripts/run-tests.sh

unit: build
	meson test -C $(BUILD) --print-errorlogs

integration: build
	/usr/bin/python3 -m pytest -v tests/integration

$(ASAN_BUILD)/build.ninja:
	meson setup $(ASAN_BUILD) --werror -Db_sanitize=address,undefined \
	    -Db_lundef=false -Dbuildtype=debugoptimized

asan: $(ASAN_BUILD)/build.ninja
	ninja -C $(ASAN_BUILD)

FUZZ_CFLAGS = -g -O1 -fsanitize=fuzzer,address,undefined \
	-fno-sanitize-recover=undefined -D_GNU_SOURCE -std=c17 -Isrc
FUZZ_UTIL = src/util/msg.c src/util/xalloc.c src/util/strbuf.c \
	src/util/parse.c src/util/inet.c src/util/hmap.c src/util/redisurl.c \
	src/util/tlspem.c
# every target: build-fuzz/fuzz_NAME replays tests/fuzz/corpus/NAME
FUZZ_NAMES = policy milter fingerprint config maillog notice evidence engine \
	restore redisurl daemon_conn daemon_milter daemon_admin daemon_logfollow
# the daemon itself (fuzz_daemon_*: a real chokepointd in the fuzzer)
FUZZ_DAEMON = $(wildcard src/daemon/*.c)
# the engine and what it needs (fuzz_engine, fuzz_restore)
FUZZ_ENGINE = src/core/engine.c src/core/queued.c src/core/content.c \
	src/core/reply.c src/core/config.c src/core/custmap.c \
	src/core/policy.c src/core/notice.c src/core/identity.c \
	src/core/meter.c src/core/evidence.c src/core/lifecycle.c \
	src/core/fingerprint.c src/core/explain.c src/store/memstore.c \
	src/util/yamlwalk.c src/util/agemap.c src/util/tagset.c
# the SQLite store (fuzz_restore, fuzz_daemon_*)
FUZZ_SQLITE = $(wildcard src/store/sqlite*.c)

# one file target each (make -j builds them side by side); rebuilt when
# any source, the fuzz drivers or this Makefile changed
FUZZ_BINS = $(FUZZ_NAMES:%=$(FUZZ_BUILD)/fuzz_%)
FUZZ_DEPS = $(wildcard src/*/*.c src/*/*.h tests/fuzz/*.c tests/fuzz/*.h) \
	Makefile

fuzz-build: $(FUZZ_BINS)

$(FUZZ_BINS): | $(FUZZ_BUILD)
$(FUZZ_BUILD):
	mkdir -p $(FUZZ_BUILD)

$(FUZZ_BUILD)/fuzz_policy: $(FUZZ_DEPS)
	clang $(FUZZ_CFLAGS) -o $@ \
	    tests/fuzz/fuzz_policy.c src/core/policy.c $(FUZZ_UTIL) -lxxhash -lssl -lcrypto -lm
$(FUZZ_BUILD)/fuzz_milter: $(FUZZ_DEPS)
	clang $(FUZZ_CFLAGS) -o $@ \
	    tests/fuzz/fuzz_milter.c src/core/milter.c $(FUZZ_UTIL) -lxxhash -lssl -lcrypto -lm
$(FUZZ_BUILD)/fuzz_fingerprint: $(FUZZ_DEPS)
	clang $(FUZZ_CFLAGS) -o $@ \
	    tests/fuzz/fuzz_fingerprint.c src/core/fingerprint.c $(FUZZ_UTIL) \
	    -lxxhash -lssl -lcrypto -lm
$(FUZZ_BUILD)/fuzz_config: $(FUZZ_DEPS)
	clang $(FUZZ_CFLAGS) -o $@ \
	    tests/fuzz/fuzz_custmap.c src/core/config.c src/core/custmap.c \
	    src/core/policy.c src/core/notice.c src/util/yamlwalk.c $(FUZZ_UTIL) \
	    -lfyaml -lxxhash -lssl -lcrypto -lm
$(FUZZ_BUILD)/fuzz_redisurl: $(FUZZ_DEPS)
	clang $(FUZZ_CFLAGS) -o $@ \
	    tests/fuzz/fuzz_redisurl.c $(FUZZ_UTIL) -lxxhash -lssl -lcrypto -lm
$(FUZZ_BUILD)/fuzz_maillog: $(FUZZ_DEPS)
	clang $(FUZZ_CFLAGS) -o $@ \
	    tests/fuzz/fuzz_maillog.c src/core/maillog.c $(FUZZ_UTIL) -lxxhash -lssl -lcrypto -lm
$(FUZZ_BUILD)/fuzz_notice: $(FUZZ_DEPS)
	clang $(FUZZ_CFLAGS) -o $@ \
	    tests/fuzz/fuzz_notice.c src/core/notice.c src/core/config.c \
	    src/core/custmap.c src/core/policy.c src/util/yamlwalk.c \
	    $(FUZZ_UTIL) -lfyaml -lxxhash -lssl -lcrypto -lm
$(FUZZ_BUILD)/fuzz_evidence: $(FUZZ_DEPS)
	clang $(FUZZ_CFLAGS) -o $@ \
	    tests/fuzz/fuzz_evidence.c src/core/evidence.c src/core/config.c \
	    src/core/custmap.c src/core/policy.c src/core/notice.c \
	    src/util/yamlwalk.c $(FUZZ_UTIL) -lfyaml -lxxhash -lssl -lcrypto -lm
$(FUZZ_BUILD)/fuzz_engine: $(FUZZ_DEPS)
	clang $(FUZZ_CFLAGS) -o $@ \
	    tests/fuzz/fuzz_engine.c $(FUZZ_ENGINE) $(FUZZ_UTIL) \
	    -lfyaml -lxxhash -lssl -lcrypto -lm
$(FUZZ_BUILD)/fuzz_restore: $(FUZZ_DEPS)
	clang $(FUZZ_CFLAGS) -o $@ \
	    tests/fuzz/fuzz_restore.c $(FUZZ_SQLITE) $(FUZZ_ENGINE) \
	    $(FUZZ_UTIL) -lsqlite3 -lfyaml -lxxhash -lssl -lcrypto -lm
# the Redis store's Lua scripts, as meson embeds them (lua_NAME, each
# src/store/lua/NAME.lua)
REDIS_LUA := $(wildcard src/store/lua/*.lua)
$(FUZZ_BUILD)/redis_lua.h: $(REDIS_LUA) scripts/embed.py | $(FUZZ_BUILD)
	python3 scripts/embed.py $@ \
	    $(foreach f,$(REDIS_LUA),lua_$(basename $(notdir $(f)))=$(f))
# fuzz_daemon_{conn,milter,admin,logfollow}: FUZZ_TARGET=FUZZ_CONN, ...
$(FUZZ_BUILD)/fuzz_daemon_%: $(FUZZ_DEPS) $(FUZZ_BUILD)/redis_lua.h
	clang $(FUZZ_CFLAGS) -I$(FUZZ_BUILD) -DCP_NO_MAIN -DCP_VERSION='"fuzz"' \
	    -DFUZZ_TARGET=FUZZ_$$(echo $* | tr a-z A-Z) -o $@ \
	    tests/fuzz/fuzz_daemon.c $(FUZZ_DAEMON) $(FUZZ_SQLITE) \
	    src/store/redis.c src/store/tlsrelay.c $(FUZZ_ENGINE) src/core/maillog.c src/core/milter.c \
	    src/util/ratelog.c $(FUZZ_UTIL) -luv -lcurl -lcrypto -lcares -lsqlite3 \
	    -lhiredis -lssl -lfyaml -lxxhash -lcrypto -lm -lpthread

# libFuzzer targets abort on leaks; third-party leaks are suppressed there
export LSAN_OPTIONS = suppressions=$(CURDIR)/tests/fuzz/lsan.supp:print_suppressions=0

fuzz-replay: fuzz-build
	for t in $(FUZZ_NAMES); do \
	    $(FUZZ_BUILD)/fuzz_$$t -runs=0 tests/fuzz/corpus/$$t || exit 1; \
	done

fuzz: fuzz-build
	for t in $(FUZZ_NAMES); do \
	    mkdir -p $(FUZZ_BUILD)/corpus-$$t; \
	    $(FUZZ_BUILD)/fuzz_$$t -max_total_time=$(FUZZ_SECONDS) \
	        $(FUZZ_BUILD)/corpus-$$t tests/fuzz/corpus/$$t || exit 1; \
	done

bench: deps build
	sh bench/run.sh

check-includes:
	sh scripts/check-includes.sh

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(FUZZ_BUILD)
