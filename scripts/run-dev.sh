#!/bin/sh
# run-dev.sh — `make run`: run chokepointd in the foreground on the shipped
# example configuration (etc/chokepoint.yaml) with the embedded store.
#
# As root it prepares what the example names: the user chokepoint, the
# decision log's directory /var/log/chokepoint, and /etc/chokepoint/
# customers.map (etc/customers.map, if there is none yet); the daemon
# creates /run/chokepoint, /var/lib/chokepoint and the policy socket's
# directory /var/spool/postfix/chokepoint itself, then drops to
# chokepoint. Without Postfix there is no /var/spool/postfix: it then runs
# a copy of the example (in RUN_DIR) whose policy socket is
# /run/chokepoint/policy.sock. Not root: a copy with every path moved
# under RUN_DIR.
set -eu
BUILD=${1:-build}
RUN_DIR=${2:-/tmp/chokepoint-run}
cd "$(dirname "$0")/.."
CONFIG=etc/chokepoint.yaml
SPOOL=/var/spool/postfix

if [ "$(id -u)" = 0 ]; then
    id -u chokepoint >/dev/null 2>&1 ||
        useradd --system --user-group --no-create-home \
            --home-dir /var/lib/chokepoint --shell /usr/sbin/nologin chokepoint
    # it reads mail.log for delivery evidence when delivery.log is set
    getent group adm >/dev/null && usermod -aG adm chokepoint
    mkdir -p /etc/chokepoint
    [ -e /etc/chokepoint/customers.map ] ||
        install -m 0644 etc/customers.map /etc/chokepoint/customers.map
    [ -d /var/log/chokepoint ] ||
        install -d -o chokepoint -g chokepoint -m 0750 /var/log/chokepoint
    if [ ! -d "$SPOOL" ]; then
        echo "run-dev: no $SPOOL (Postfix is not installed): the policy" \
            "socket is /run/chokepoint/policy.sock"
        mkdir -p "$RUN_DIR"
        sed -e "s#unix:$SPOOL/chokepoint/#unix:/run/chokepoint/#" \
            etc/chokepoint.yaml > "$RUN_DIR/chokepoint.yaml"
        CONFIG=$RUN_DIR/chokepoint.yaml
    fi
else
    # not root: no user to drop to, everything under RUN_DIR
    mkdir -p "$RUN_DIR"
    [ -e "$RUN_DIR/customers.map" ] || cp etc/customers.map "$RUN_DIR/"
    sed -e "s#$SPOOL/chokepoint#$RUN_DIR#g" \
        -e "s#/run/chokepoint#$RUN_DIR#g" \
        -e "s#/var/lib/chokepoint#$RUN_DIR#g" \
        -e "s#/var/log/chokepoint#$RUN_DIR#g" \
        -e "s#/etc/chokepoint#$RUN_DIR#g" \
        -e "/^  user: /d" etc/chokepoint.yaml \
        > "$RUN_DIR/chokepoint.yaml"
    CONFIG=$RUN_DIR/chokepoint.yaml
fi
"$BUILD/chokepointd" --check -c "$CONFIG"
echo "chokepointd: running in the foreground on $CONFIG (Ctrl-C stops it)."
echo "Try: $BUILD/chokepoint -s <admin socket> status"
exec "$BUILD/chokepointd" -c "$CONFIG"
