#!/bin/sh
# deps.sh — install the Debian packages chokepoint needs. Idempotent:
# packages already installed are skipped, and apt-get runs only when
# something is missing. Run as root on Debian 12.
#   sh scripts/deps.sh run   what building and running need (make run)
#   sh scripts/deps.sh       that, and what the tests and benchmarks use:
#                            cmocka, Postfix, swaks, rbldnsd, miltertest,
#                            debhelper, lintian, ... (make test)
set -eu
MODE=${1:-all}

BUILD="meson ninja-build pkg-config gcc
       libuv1-dev libsqlite3-dev libfyaml-dev libxxhash-dev
       libcurl4-openssl-dev libssl-dev libc-ares-dev zlib1g-dev
       libhiredis-dev"
# the tests: unit (cmocka), integration (Postfix, ...), fuzz (clang), and
# the package test (dpkg-buildpackage, debhelper, lintian, mandoc)
RUNTEST="libcmocka-dev clang libclang-rt-14-dev python3 python3-pytest python3-pytest-xdist python3-jsonschema sqlite3 postfix swaks sasl2-bin
         libsasl2-modules procps rbldnsd miltertest redis-server redis-tools
         openssl
         build-essential dpkg-dev debhelper fakeroot lintian mandoc man-db"

missing=""
[ "$MODE" = run ] && RUNTEST=""
for p in $BUILD $RUNTEST ${EXTRA_PKGS:-}; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed"; then
        missing="$missing $p"
    fi
done
if [ -z "$missing" ]; then
    echo "deps: all packages present"
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "deps: missing packages:$missing (run as root: make deps)" >&2
    exit 1
fi
echo "deps: installing$missing"
# Postfix asks a debconf question on install; answer it ("no configuration":
# the tests write their own private main.cf and never touch the system one).
[ -n "$RUNTEST" ] &&
    echo "postfix postfix/main_mailer_type select No configuration" |
    debconf-set-selections
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing
