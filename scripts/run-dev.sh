#!/bin/sh
# run-dev.sh — `make run`: run chokepointd in the foreground on the shipped
# example configuration (etc/chokepoint.yaml) with the embedded store.
#
# As root it prepares the directories the example names (/run/chokepoint,
# /var/lib/chokepoint) and installs etc/customers.map as
# /etc/chokepoint/customers.map if there is none yet. Otherwise it runs a
# copy of the example with those paths moved under RUN_DIR.
set -eu
BUILD=${1:-build}
RUN_DIR=${2:-/tmp/chokepoint-run}
cd "$(dirname "$0")/.."
CONFIG=etc/chokepoint.yaml

if [ "$(id -u)" = 0 ]; then
    # the daemon creates /run/chokepoint and /var/lib/chokepoint itself
    # (0750, given to daemon.user) and drops to that user
    id -u chokepoint >/dev/null 2>&1 ||
        useradd --system --user-group --no-create-home \
            --home-dir /var/lib/chokepoint --shell /usr/sbin/nologin chokepoint
    # it reads mail.log for delivery evidence when delivery.log is set
    getent group adm >/dev/null && usermod -aG adm chokepoint
    mkdir -p /etc/chokepoint
    [ -e /etc/chokepoint/customers.map ] ||
        install -m 0644 etc/customers.map /etc/chokepoint/customers.map
else
    # not root: no user to drop to, everything under RUN_DIR
    mkdir -p "$RUN_DIR"
    [ -e "$RUN_DIR/customers.map" ] || cp etc/customers.map "$RUN_DIR/"
    sed -e "s#/run/chokepoint#$RUN_DIR#g" \
        -e "s#/var/lib/chokepoint#$RUN_DIR#g" \
        -e "s#/etc/chokepoint#$RUN_DIR#g" \
        -e "/^  user: /d" etc/chokepoint.yaml \
        > "$RUN_DIR/chokepoint.yaml"
    CONFIG=$RUN_DIR/chokepoint.yaml
fi
"$BUILD/chokepointd" --check -c "$CONFIG"
echo "chokepointd: running in the foreground on $CONFIG (Ctrl-C stops it)."
echo "Try: $BUILD/chokepoint -s <admin socket> status"
exec "$BUILD/chokepointd" -c "$CONFIG"
