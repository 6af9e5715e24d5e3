#!/bin/sh
# run-tests.sh — every test suite, one summary. Called by `make test` (after
# deps and build). Suites:
#   unit         cmocka unit tests (meson test)            build/
#   integration  pytest: real chokepointd, real Postfix     build/
#   asan-unit    unit tests under ASan+UBSan                build-asan/
#   asan-integ   pytest against the ASan+UBSan daemon       build-asan/
#   fuzz-replay  libFuzzer targets replay their corpora     build-fuzz/
# Ends with one line "N passed, N failed" (tests across all suites; a suite
# that cannot run at all counts as one failure).
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

pytest_run() { # builddir, name
    CHOKEPOINT_BUILD=$(pwd)/$1 $PY -m pytest -v -p no:cacheprovider \
        --junitxml="$OUT/$2.xml" tests/integration
}

suite layering sh scripts/check-includes.sh
suite unit meson_unit build unit
cp build/meson-logs/unit.json "$OUT/unit.json" 2>/dev/null
suite integration pytest_run build integration

# Sanitizer run: a separate build, the same tests.
if make -s asan >"$OUT/asan-build.log" 2>&1; then
    export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:halt_on_error=1
    export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
    export LSAN_OPTIONS=suppressions=$(pwd)/tests/fuzz/lsan.supp:print_suppressions=0
    suite asan-unit meson_unit build-asan asan-unit
    cp build-asan/meson-logs/asan-unit.json "$OUT/asan-unit.json" 2>/dev/null
    export CHOKEPOINT_SANITIZED=1
    suite asan-integ pytest_run build-asan asan-integ
    unset ASAN_OPTIONS UBSAN_OPTIONS LSAN_OPTIONS CHOKEPOINT_SANITIZED
else
    cat "$OUT/asan-build.log"
    echo 1 > "$OUT/asan-build.rc"
fi

suite fuzz-replay make -s fuzz-replay

$PY scripts/summarize-tests.py "$OUT"
