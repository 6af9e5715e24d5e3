#!/bin/sh
# run-tests.sh — every test suite, one summary. Called by `make test` (after
# deps and build). Suites:
#   layering     the include layering check                 src/
#   unit         cmocka unit tests (meson test)             build/
#   integration  pytest: real chokepointd, real Postfix,    build/
#                every test
#   asan-unit    unit tests under ASan+UBSan                build-asan/
#   asan-integ   pytest against the ASan+UBSan daemon and   build-asan/
#                CLI, without the `week` tests (whole simulated weeks at
#                efficacy size, the golden reports: minutes each under
#                ASan); each has a small twin that runs here
#                (tests/integration/conftest.py, test_sim.py); and without
#                the `package` tests (the .deb: built from the tree,
#                installed and purged once, in the integration suite)
#   fuzz-replay  libFuzzer targets replay their corpora     build-fuzz/
#
# How it fits the day on two cores:
#   * the ASan and fuzz builds run in the background (niced, side by
#     side) while unit and integration run against build/ (mostly waiting
#     on sockets and Postfix);
#   * pytest runs on both cores (pytest-xdist -n 2 --dist loadgroup: the
#     tests that share a module-scoped Postfix or simulation stay on one
#     worker); the `serial` tests (latency measured against a bound) of
#     both passes run at the end, alone, once every build is done;
#   * no test has a deadline a busy machine can trip: waits poll up to a
#     hang guard (CHOKEPOINT_HANG_GUARD seconds, default 600).
# The long efficacy runs are in the efficacy table and benchmarks
# (sim/efficacy-table.py, bench/), not here.
#
# Ends with one line "N passed, N failed" (tests across all suites; a suite
# that cannot run at all counts as one failure). Results: build/test-results/
# (SUITE.rc and SUITE.json or SUITE.xml; SUITE.PART.* for a suite run in
# parts, counted as one suite).
set -u
cd "$(dirname "$0")/.."
OUT=build/test-results
rm -rf "$OUT"
mkdir -p "$OUT"
PY=/usr/bin/python3

suite() { # name, command...
    name=$1
    shift
    echo "=== $name: $*"
    "$@"
    rc=$?
    echo "$rc" > "$OUT/$name.rc"
    echo "=== $name: exit $rc"
}

meson_unit() { # builddir, name
    meson test -C "$1" --print-errorlogs --logbase "$2" ||
        return 1
}

# pytest on both cores when pytest-xdist is there (scripts/deps.sh);
# TEST_WORKERS sets how many
if $PY -c "import xdist" 2>/dev/null; then
    XDIST="-n ${TEST_WORKERS:-2} --dist loadgroup"
else
    echo "run-tests: no pytest-xdist, the integration tests run on one core"
    XDIST=""
fi

pytest_run() { # builddir, name, marker expression, [xdist options]
    # shellcheck disable=SC2086
    CHOKEPOINT_BUILD=$(pwd)/$1 $PY -m pytest -v -p no:cacheprovider \
        ${4:-} -m "$3" --junitxml="$OUT/$2.xml" tests/integration
    rc=$?
    [ $rc = 5 ] && rc=0 # every test deselected: nothing to run
    return $rc
}

# The other builds, in the background (niced) while build/ is tested:
# build NAME, status in OUT/NAME.status (0: built), log in OUT/NAME.log.
background_build() { # name, make target, make options...
    name=$1
    shift
    if nice -n 10 make -s "$@" >"$OUT/$name.log" 2>&1; then
        echo 0 >"$OUT/$name.status"
    else
        echo 1 >"$OUT/$name.status"
    fi
}
built() { # name, pid: wait for it; false (log shown, one failure) if failed
    wait "$2"
    [ "$(cat "$OUT/$1.status" 2>/dev/null)" = 0 ] && return 0
    cat "$OUT/$1.log"
    echo 1 >"$OUT/$1.rc"
    return 1
}
background_build asan-build asan &
ASAN_PID=$!
background_build fuzz-build fuzz-build -j2 &
FUZZ_PID=$!

suite layering sh scripts/check-includes.sh
suite unit meson_unit build unit
cp build/meson-logs/unit.json "$OUT/unit.json" 2>/dev/null
suite integration pytest_run build integration "not serial" "$XDIST"

# Sanitizer run: a separate build, the unit tests and the integration
# tests on small scenarios.
ASAN_OK=false
if built asan-build $ASAN_PID; then
    ASAN_OK=true
    export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:halt_on_error=1
    export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
    export LSAN_OPTIONS=suppressions=$(pwd)/tests/fuzz/lsan.supp:print_suppressions=0
    suite asan-unit meson_unit build-asan asan-unit
    cp build-asan/meson-logs/asan-unit.json "$OUT/asan-unit.json" 2>/dev/null
    export CHOKEPOINT_SANITIZED=1
    suite asan-integ pytest_run build-asan asan-integ \
        "not week and not serial and not package" "$XDIST"
    unset ASAN_OPTIONS UBSAN_OPTIONS LSAN_OPTIONS CHOKEPOINT_SANITIZED
fi

# Every build done: the serial tests (latency bounds) alone, then the
# fuzz corpora.
FUZZ_OK=false
built fuzz-build $FUZZ_PID && FUZZ_OK=true
suite integration.serial pytest_run build integration.serial "serial"
if $ASAN_OK; then
    export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:halt_on_error=1
    export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
    export LSAN_OPTIONS=suppressions=$(pwd)/tests/fuzz/lsan.supp:print_suppressions=0
    export CHOKEPOINT_SANITIZED=1
    suite asan-integ.serial pytest_run build-asan asan-integ.serial \
        "serial and not week and not package"
    unset ASAN_OPTIONS UBSAN_OPTIONS LSAN_OPTIONS CHOKEPOINT_SANITIZED
fi
$FUZZ_OK && suite fuzz-replay make -s fuzz-replay

$PY scripts/summarize-tests.py "$OUT"
