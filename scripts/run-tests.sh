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
#                (tests/integration/conftest.py, test_sim.py)
#   fuzz-replay  libFuzzer targets replay their corpora     build-fuzz/
#
# How it fits the day on two cores:
#   * the ASan and fuzz builds run in the background (niced) while unit
#     and integration run against build/ (mostly waiting on sockets and
#     Postfix);
#   * pytest runs on both cores (pytest-xdist -n 2 --dist loadgroup: the
#     tests that share a module-scoped Postfix or simulation stay on one
#     worker); the `serial` tests (latency measured against a bound) run
#     after, alone, once the background builds are done;
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

# The other builds, in the background while build/ is tested.
background_builds() {
    if nice -n 10 make -s asan >"$OUT/asan-build.log" 2>&1; then
        echo 0 >"$OUT/asan-build.status"
    else
        echo 1 >"$OUT/asan-build.status"
    fi
    if nice -n 10 make -s -j2 fuzz-build >"$OUT/fuzz-build.log" 2>&1; then
        echo 0 >"$OUT/fuzz-build.status"
    else
        echo 1 >"$OUT/fuzz-build.status"
    fi
}
background_builds &
BUILDS=$!

suite layering sh scripts/check-includes.sh
suite unit meson_unit build unit
cp build/meson-logs/unit.json "$OUT/unit.json" 2>/dev/null
suite integration pytest_run build integration "not serial" "$XDIST"
wait $BUILDS
suite integration.serial pytest_run build integration.serial "serial"

# Sanitizer run: a separate build, the unit tests and the integration
# tests on small scenarios.
if [ "$(cat "$OUT/asan-build.status")" = 0 ]; then
    export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:halt_on_error=1
    export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
    export LSAN_OPTIONS=suppressions=$(pwd)/tests/fuzz/lsan.supp:print_suppressions=0
    suite asan-unit meson_unit build-asan asan-unit
    cp build-asan/meson-logs/asan-unit.json "$OUT/asan-unit.json" 2>/dev/null
    export CHOKEPOINT_SANITIZED=1
    suite asan-integ pytest_run build-asan asan-integ \
        "not week and not serial" "$XDIST"
    suite asan-integ.serial pytest_run build-asan asan-integ.serial \
        "serial and not week"
    unset ASAN_OPTIONS UBSAN_OPTIONS LSAN_OPTIONS CHOKEPOINT_SANITIZED
else
    cat "$OUT/asan-build.log"
    echo 1 > "$OUT/asan-build.rc"
fi

if [ "$(cat "$OUT/fuzz-build.status")" = 0 ]; then
    suite fuzz-replay make -s fuzz-replay
else
    cat "$OUT/fuzz-build.log"
    echo 1 > "$OUT/fuzz-build.rc"
fi

$PY scripts/summarize-tests.py "$OUT"
