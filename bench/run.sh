#!/bin/sh
# bench/run.sh — policy decisions/s of chokepointd against the do-nothing
# upper bound (shared/bench/policy-upper-bound.c), side by side in one run,
# on a unix socket, for each connection count and account population.
#
# For every case it runs the bound, then chokepointd, with the same load
# (shared/bench/policy-load.c), and prints a last line
#   policy conns=C accounts=A rps=X bound_rps=Y ratio=X/Y p99_us=Z rss_mb=M
# The 1M-account population is written straight into the state database
# before chokepointd starts (so the run also measures restart time with 1M
# accounts: see "restored ... in N ms" in the output). rss_idle_mb is the
# daemon's memory right after start-up, before any request: the cost of
# idle accounts; rss_mb is after the run (active accounts carry evidence).
#
# Knobs (environment): CONNS="1 8 32" ACCOUNTS="1000 1000000" DURATION=10
# WARMUP=2 DIST=zipf:1.0 MODE=-m (whole transactions RCPT+DATA+EOM; set
# MODE= for RCPT-only requests) REPEAT=1 (runs per case; the median is kept)
# PEERS=1 also runs shared/bench/peers/run-peers.sh (postfwd,
# policyd-rate-limit) afterwards.
set -eu
cd "$(dirname "$0")/.."
ROOT=$(pwd)
SHARED=${SHARED:-$ROOT/../shared/bench}
[ -d "$SHARED" ] || SHARED=/work/shared/bench
CONNS=${CONNS:-"1 8 32"}
ACCOUNTS=${ACCOUNTS:-"1000 1000000"}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
DIST=${DIST:-zipf:1.0}
MODE=${MODE--m}
REPEAT=${REPEAT:-1}
OUT=$ROOT/bench/out
BIN=$OUT/bin
mkdir -p "$BIN"
rm -f "$OUT"/*.sock
cc -O2 -pthread -o "$BIN/policy-load" "$SHARED/policy-load.c"
cc -O2 -pthread -o "$BIN/policy-upper-bound" "$SHARED/policy-upper-bound.c"
CHOKEPOINTD=${CHOKEPOINTD:-build/chokepointd} # another binary: A/B runs
[ -x build/chokepointd ] || ninja -C build

SOCK=$OUT/policy.sock
UBSOCK=$OUT/ub.sock
PIDS=""
cleanup() {
    for p in $PIDS; do kill "$p" 2>/dev/null || true; done
}
trap cleanup EXIT INT TERM

write_config() { # db
    cat > "$OUT/bench.yaml" <<YAML
daemon:
  listen: [unix:$SOCK]
  admin_socket: $OUT/admin.sock
  log: stderr
  log_level: info
protocol:
  max_connections: 1000
store:
  path: $1
  checkpoint_interval: 5s
YAML
    cat bench/classes.yaml >> "$OUT/bench.yaml"
}

# Write `n` accounts u0000000@customers.example.net ... into a fresh db.
prefill() { # db n
    rm -f "$1" "$1-wal" "$1-shm"
    sqlite3 "$1" <<SQL
PRAGMA journal_mode=WAL;
CREATE TABLE meta(k TEXT PRIMARY KEY, v TEXT NOT NULL);
CREATE TABLE accounts(key TEXT PRIMARY KEY, t INTEGER NOT NULL,
                      data BLOB NOT NULL) WITHOUT ROWID;
INSERT INTO meta VALUES('slots',
  'messages/1h,messages/1d,recipients/1h,domains/1h,bytes/1d');
WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < $2 - 1)
INSERT INTO accounts
  SELECT printf('u:u%07d@customers.example.net', i),
         CAST(strftime('%s','now') AS INTEGER) * 1000, zeroblob(81) FROM n;
SQL
}

wait_sock() {
    i=0
    while [ ! -S "$1" ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i + 1)); done
}

# chokepointd binds its sockets before it reads the store: ready is its
# "started" line (at most 60 s)
wait_started() {
    wait_sock "$SOCK"
    i=0
    while ! grep -q " started: " "$OUT/chokepointd.log" 2>/dev/null &&
        [ $i -lt 1200 ]; do sleep 0.05; i=$((i + 1)); done
}

rss_mb() {
    awk '/VmRSS/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"
}

field() { # name line
    echo "$2" | tr ' ' '\n' | sed -n "s/^$1=//p"
}

load() { # target conns users
    "$BIN/policy-load" -s "$1" -c "$2" -u "$3" -k "$DIST" -d "$DURATION" \
        -w "$WARMUP" $MODE 2>/dev/null | tail -1
}

median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

for accts in $ACCOUNTS; do
    db=$OUT/state-$accts.db
    prefill "$db" "$accts"
    write_config "$db"
    for c in $CONNS; do
        ub_all="" cp_all="" p99_all=""
        r=0
        while [ $r -lt "$REPEAT" ]; do
            r=$((r + 1))
            rm -f "$UBSOCK"
            "$BIN/policy-upper-bound" -s "unix:$UBSOCK" 2>/dev/null &
            ub=$!
            PIDS="$ub"
            wait_sock "$UBSOCK"
            ubline=$(load "unix:$UBSOCK" "$c" "$accts")
            kill "$ub"; wait "$ub" 2>/dev/null || true
            ub_all="$ub_all $(field rps "$ubline")"

            # the previous run's queue ids (the load sends one per message)
            # would be restored too: rss_idle measures the accounts alone
            [ "$r" -eq 1 ] || sqlite3 "$db" "DELETE FROM queue_ids" 2>/dev/null || true
            # and so would the evidence the last clean stop stored (the
            # restart with it is measured once per case, below)
            sqlite3 "$db" "DELETE FROM evidence" 2>/dev/null || true
            "$CHOKEPOINTD" -c "$OUT/bench.yaml" 2>"$OUT/chokepointd.log" &
            cp=$!
            PIDS="$cp"
            wait_started
            idle=$(rss_mb "$cp")
            cpline=$(load "unix:$SOCK" "$c" "$accts")
            rss=$(rss_mb "$cp")
            kill "$cp"; wait "$cp" 2>/dev/null || true
            cp_all="$cp_all $(field rps "$cpline")"
            p99_all="$p99_all $(field p99_us "$cpline")"
            errs=$(field errors "$cpline")
            [ "$errs" = 0 ] || echo "WARNING: chokepointd run had errors: $cpline"
            grep -h "restored\|final checkpoint" "$OUT/chokepointd.log" | sed 's/^/  /'
        done
        # a restart that keeps the evidence the last clean stop stored
        "$CHOKEPOINTD" -c "$OUT/bench.yaml" 2>"$OUT/chokepointd.log" &
        cp=$!
        PIDS="$cp"
        wait_started
        echo "  restart with the stored evidence: rss_mb=$(rss_mb "$cp")"
        kill "$cp"; wait "$cp" 2>/dev/null || true
        grep -h "restored" "$OUT/chokepointd.log" | sed 's/^/    /'
        ubr=$(echo $ub_all | tr ' ' '\n' | median)
        cpr=$(echo $cp_all | tr ' ' '\n' | median)
        p99=$(echo $p99_all | tr ' ' '\n' | median)
        echo "  bound: $ubline"
        echo "  chokepointd: $cpline"
        ratio=$(awk -v a="$cpr" -v b="$ubr" 'BEGIN { printf "%.2f", a / b }')
        echo "policy conns=$c accounts=$accts rps=$cpr bound_rps=$ubr ratio=$ratio p99_us=$p99 rss_mb=$rss rss_idle_mb=$idle"
    done
done
[ "${PEERS:-0}" = 1 ] || exit 0

# ---- Peers: postfwd and policyd-rate-limit, over TCP as they serve it ----
# run-peers.sh starts each peer (and the TCP bound) per case and writes
# results.tsv; chokepointd is then run on TCP with the same load (RCPT-only
# requests, as the peers count at RCPT) and compared with the same bound.
PEER_WORK=$OUT/peers
PEER_LIST=${PEER_LIST:-"ub-tcp postfwd2 prl-memory"}
PEER_USERS=${PEER_USERS:-"1000 100000"}
rm -f "$PEER_WORK/results.tsv"
WORK=$PEER_WORK PEERS="$PEER_LIST" CONNS="$CONNS" USERS="$PEER_USERS" \
    DURATION=$DURATION WARMUP=$WARMUP DIST=$DIST \
    sh "$SHARED/peers/run-peers.sh" install bench
TCPPORT=10931
for u in $PEER_USERS; do
    prefill "$OUT/state-peers.db" "$u"
    write_config "$OUT/state-peers.db"
    sed -i "s#  listen: \[unix:$SOCK\]#  listen: [unix:$SOCK, 'inet:127.0.0.1:$TCPPORT']#" \
        "$OUT/bench.yaml"
    for c in $CONNS; do
        build/chokepointd -c "$OUT/bench.yaml" 2>"$OUT/chokepointd.log" &
        cp=$!
        PIDS="$cp"
        wait_started
        line=$("$BIN/policy-load" -s "127.0.0.1:$TCPPORT" -c "$c" -u "$u" \
            -k "$DIST" -d "$DURATION" -w "$WARMUP" 2>/dev/null | tail -1)
        kill "$cp"; wait "$cp" 2>/dev/null || true
        rps=$(field rps "$line")
        awk -F'\t' -v c="$c" -v u="$u" -v rps="$rps" -v p99="$(field p99_us "$line")" '
            $2 == c && $3 == u { r[$1] = $5; q[$1] = $7 }
            END {
                b = r["ub-tcp"]
                printf "peers conns=%s accounts=%s bound_tcp_rps=%s chokepointd_rps=%s ratio=%.2f p99_us=%s", c, u, b, rps, rps / b, p99
                for (p in r) if (p != "ub-tcp")
                    printf " %s_rps=%s %s_ratio=%.3f %s_p99_us=%s", p, r[p], p, r[p] / b, p, q[p]
                printf " chokepointd_vs_best_peer=%.1fx\n", rps / ((r["postfwd2"] > r["prl-memory"]) ? r["postfwd2"] : r["prl-memory"])
            }' "$PEER_WORK/results.tsv"
    done
done
