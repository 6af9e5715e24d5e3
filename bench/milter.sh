#!/bin/sh
# bench/milter.sh — messages/s through chokepointd's milter against the
# do-nothing milter (bench/milter-bound.c), side by side in one run, on a
# unix socket, with the same load (bench/milter-load.c: a 2 kB body per
# message, 3 in 4 of them one of 8 campaign texts, 1,000 logins). For
# each connection count it prints the bound's line, chokepointd's, and
#   milter conns=C msgs_per_s=X bound=Y ratio=X/Y p99_us=Z
# The daemon runs the shipped content settings without a mail log (so
# no text becomes spam: every message is fingerprinted, counted and
# answered CONTINUE), on its embedded store.
# Knobs: CONNS="1 8" DURATION=8 WARMUP=2 REPEAT=1 (the median is kept).
set -eu
cd "$(dirname "$0")/.."
ROOT=$(pwd)
CONNS=${CONNS:-"1 8"}
DURATION=${DURATION:-8}
WARMUP=${WARMUP:-2}
REPEAT=${REPEAT:-1}
OUT=$ROOT/bench/out/milter
BIN=$ROOT/bench/out/bin
CHOKEPOINTD=${CHOKEPOINTD:-build/chokepointd}
mkdir -p "$OUT" "$BIN"
[ -x build/chokepointd ] || ninja -C build
cc -O2 -pthread -o "$BIN/milter-load" bench/milter-load.c
cc -O2 -pthread -o "$BIN/milter-bound" bench/milter-bound.c
cat > "$OUT/chokepoint.yaml" <<EOC
daemon:
  listen: [unix:$OUT/policy.sock]
  admin_socket: $OUT/admin.sock
  log: stderr
  log_level: warning
store:
  path: $OUT/state.db
classes:
  residential:
    limits:
      - { metric: messages, window: 1h, max: 100000 }
  unauthenticated:
    limits:
      - { metric: messages, window: 1h, max: 100 }
content:
  milter: unix:$OUT/milter.sock
EOC

median() { sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
field() { sed -n "s/.* $1=\([0-9.]*\).*/\1/p"; }

for c in $CONNS; do
    : > "$OUT/bound.txt"; : > "$OUT/cpd.txt"
    r=0
    while [ $r -lt "$REPEAT" ]; do
        "$BIN/milter-bound" "$OUT/bound.sock" & pid=$!
        sleep 0.3
        "$BIN/milter-load" -s "$OUT/bound.sock" -c "$c" -d "$DURATION" \
            -w "$WARMUP" | tee -a "$OUT/bound.txt"
        kill "$pid"; wait "$pid" 2>/dev/null || true
        rm -f "$OUT/state.db"*
        "$CHOKEPOINTD" -c "$OUT/chokepoint.yaml" 2>"$OUT/cpd.log" & pid=$!
        i=0; while [ ! -S "$OUT/milter.sock" ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done
        "$BIN/milter-load" -s "$OUT/milter.sock" -c "$c" -d "$DURATION" \
            -w "$WARMUP" | tee -a "$OUT/cpd.txt"
        kill "$pid"; wait "$pid" 2>/dev/null || true
        r=$((r+1))
    done
    b=$(field msgs_per_s < "$OUT/bound.txt" | median)
    x=$(field msgs_per_s < "$OUT/cpd.txt" | median)
    p=$(field p99_us < "$OUT/cpd.txt" | median)
    echo "milter conns=$c msgs_per_s=$x bound=$b ratio=$(echo "$x $b" | awk '{printf "%.2f", $1/$2}') p99_us=$p"
done
