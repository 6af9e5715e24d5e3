# chokepoint — top-level commands (Meson + Ninja underneath).
#
#   make deps    install the Debian packages needed (idempotent; root)
#   make         build into build/
#   make run     deps + build + run chokepointd on etc/chokepoint-dev.yaml
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

.PHONY: all deps build run test unit integration asan fuzz-build fuzz-replay \
        fuzz bench clean check-includes

all: build

deps:
	sh scripts/deps.sh

$(BUILD)/build.ninja:
	meson setup $(BUILD) --werror

build: $(BUILD)/build.ninja
	ninja -C $(BUILD)

run: deps build
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
	src/util/parse.c src/util/inet.c src/util/hmap.c
# the daemon itself (fuzz_daemon_*: a real chokepointd in the fuzzer)
FUZZ_DAEMON = $(wildcard src/daemon/*.c)
# the engine and what it needs (fuzz_engine, fuzz_restore)
FUZZ_ENGINE = src/core/engine.c src/core/config.c src/core/custmap.c \
	src/core/policy.c src/core/notice.c src/core/identity.c \
	src/core/meter.c src/core/evidence.c src/core/lifecycle.c \
	src/core/fingerprint.c src/core/explain.c src/store/memstore.c \
	src/util/yamlwalk.c src/util/agemap.c src/util/tagset.c

fuzz-build:
	mkdir -p $(FUZZ_BUILD)
	clang $(FUZZ_CFLAGS) -o $(FUZZ_BUILD)/fuzz_policy \
	    tests/fuzz/fuzz_policy.c src/core/policy.c $(FUZZ_UTIL) -lxxhash -lm
	clang $(FUZZ_CFLAGS) -o $(FUZZ_BUILD)/fuzz_milter \
	    tests/fuzz/fuzz_milter.c src/core/milter.c $(FUZZ_UTIL) -lxxhash -lm
	clang $(FUZZ_CFLAGS) -o $(FUZZ_BUILD)/fuzz_fingerprint \
	    tests/fuzz/fuzz_fingerprint.c src/core/fingerprint.c $(FUZZ_UTIL) \
	    -lxxhash -lm
	clang $(FUZZ_CFLAGS) -o $(FUZZ_BUILD)/fuzz_config \
	    tests/fuzz/fuzz_custmap.c src/core/config.c src/core/custmap.c \
	    src/core/policy.c src/core/notice.c src/util/yamlwalk.c $(FUZZ_UTIL) \
	    -lfyaml -lxxhash -lm
	clang $(FUZZ_CFLAGS) -o $(FUZZ_BUILD)/fuzz_maillog \
	    tests/fuzz/fuzz_maillog.c src/core/maillog.c $(FUZZ_UTIL) -lxxhash -lm
	clang $(FUZZ_CFLAGS) -o $(FUZZ_BUILD)/fuzz_notice \
	    tests/fuzz/fuzz_notice.c src/core/notice.c $(FUZZ_UTIL) -lxxhash -lm
	clang $(FUZZ_CFLAGS) -o $(FUZZ_BUILD)/fuzz_evidence \
	    tests/fuzz/fuzz_evidence.c src/core/evidence.c src/core/config.c \
	    src/core/custmap.c src/core/policy.c src/core/notice.c \
	    src/util/yamlwalk.c $(FUZZ_UTIL) -lfyaml -lxxhash -lm
	clang $(FUZZ_CFLAGS) -o $(FUZZ_BUILD)/fuzz_engine \
	    tests/fuzz/fuzz_engine.c $(FUZZ_ENGINE) $(FUZZ_UTIL) \
	    -lfyaml -lxxhash -lm
	clang $(FUZZ_CFLAGS) -o $(FUZZ_BUILD)/fuzz_restore \
	    tests/fuzz/fuzz_restore.c src/store/sqlite.c $(FUZZ_ENGINE) \
	    $(FUZZ_UTIL) -lsqlite3 -lfyaml -lxxhash -lm

	for t in conn milter admin logfollow; do \
	    T=$$(echo $$t | tr a-z A-Z); \
	    clang $(FUZZ_CFLAGS) -DCP_NO_MAIN -DCP_VERSION='"fuzz"' \
	        -DFUZZ_TARGET=FUZZ_$$T -o $(FUZZ_BUILD)/fuzz_daemon_$$t \
	        tests/fuzz/fuzz_daemon.c $(FUZZ_DAEMON) src/store/sqlite.c \
	        $(FUZZ_ENGINE) src/core/maillog.c src/core/milter.c \
	        src/util/ratelog.c $(FUZZ_UTIL) -luv -lcurl -lcares -lsqlite3 \
	        -lfyaml -lxxhash -lm -lpthread || exit 1; \
	done

# libFuzzer targets abort on leaks; third-party leaks are suppressed there
export LSAN_OPTIONS = suppressions=$(CURDIR)/tests/fuzz/lsan.supp:print_suppressions=0

fuzz-replay: fuzz-build
	$(FUZZ_BUILD)/fuzz_policy -runs=0 tests/fuzz/corpus/policy
	$(FUZZ_BUILD)/fuzz_milter -runs=0 tests/fuzz/corpus/milter
	$(FUZZ_BUILD)/fuzz_fingerprint -runs=0 tests/fuzz/corpus/fingerprint
	$(FUZZ_BUILD)/fuzz_config -runs=0 tests/fuzz/corpus/config
	$(FUZZ_BUILD)/fuzz_maillog -runs=0 tests/fuzz/corpus/maillog
	$(FUZZ_BUILD)/fuzz_notice -runs=0 tests/fuzz/corpus/notice
	$(FUZZ_BUILD)/fuzz_evidence -runs=0 tests/fuzz/corpus/evidence
	$(FUZZ_BUILD)/fuzz_engine -runs=0 tests/fuzz/corpus/engine
	$(FUZZ_BUILD)/fuzz_restore -runs=0 tests/fuzz/corpus/restore
	for t in conn milter admin logfollow; do \
	    $(FUZZ_BUILD)/fuzz_daemon_$$t -runs=0 tests/fuzz/corpus/daemon_$$t \
	        || exit 1; \
	done

fuzz: fuzz-build
	mkdir -p $(FUZZ_BUILD)/corpus-policy $(FUZZ_BUILD)/corpus-config
	$(FUZZ_BUILD)/fuzz_policy -max_total_time=$(FUZZ_SECONDS) \
	    $(FUZZ_BUILD)/corpus-policy tests/fuzz/corpus/policy
	mkdir -p $(FUZZ_BUILD)/corpus-milter
	$(FUZZ_BUILD)/fuzz_milter -max_total_time=$(FUZZ_SECONDS) \
	    $(FUZZ_BUILD)/corpus-milter tests/fuzz/corpus/milter
	mkdir -p $(FUZZ_BUILD)/corpus-fingerprint
	$(FUZZ_BUILD)/fuzz_fingerprint -max_total_time=$(FUZZ_SECONDS) \
	    $(FUZZ_BUILD)/corpus-fingerprint tests/fuzz/corpus/fingerprint
	$(FUZZ_BUILD)/fuzz_config -max_total_time=$(FUZZ_SECONDS) \
	    $(FUZZ_BUILD)/corpus-config tests/fuzz/corpus/config
	mkdir -p $(FUZZ_BUILD)/corpus-maillog
	$(FUZZ_BUILD)/fuzz_maillog -max_total_time=$(FUZZ_SECONDS) \
	    $(FUZZ_BUILD)/corpus-maillog tests/fuzz/corpus/maillog
	mkdir -p $(FUZZ_BUILD)/corpus-notice
	$(FUZZ_BUILD)/fuzz_notice -max_total_time=$(FUZZ_SECONDS) \
	    $(FUZZ_BUILD)/corpus-notice tests/fuzz/corpus/notice
	mkdir -p $(FUZZ_BUILD)/corpus-evidence
	$(FUZZ_BUILD)/fuzz_evidence -max_total_time=$(FUZZ_SECONDS) \
	    $(FUZZ_BUILD)/corpus-evidence tests/fuzz/corpus/evidence
	mkdir -p $(FUZZ_BUILD)/corpus-engine
	$(FUZZ_BUILD)/fuzz_engine -max_total_time=$(FUZZ_SECONDS) \
	    $(FUZZ_BUILD)/corpus-engine tests/fuzz/corpus/engine
	mkdir -p $(FUZZ_BUILD)/corpus-restore
	$(FUZZ_BUILD)/fuzz_restore -max_total_time=$(FUZZ_SECONDS) \
	    $(FUZZ_BUILD)/corpus-restore tests/fuzz/corpus/restore
	for t in conn milter admin logfollow; do \
	    mkdir -p $(FUZZ_BUILD)/corpus-daemon_$$t; \
	    $(FUZZ_BUILD)/fuzz_daemon_$$t -max_total_time=$(FUZZ_SECONDS) \
	        $(FUZZ_BUILD)/corpus-daemon_$$t tests/fuzz/corpus/daemon_$$t \
	        || exit 1; \
	done

bench: deps build
	sh bench/run.sh

check-includes:
	sh scripts/check-includes.sh

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(FUZZ_BUILD)
