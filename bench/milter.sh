#!/bin/sh
# bench/milter.sh — messages/s through chokepointd's milter against the
# do-nothing milter (bench/milter-bound.c), side by side in one run, on a
# unix socket, with the same load (bench/milter-load.c: a 2 kB body per
# message, 3 in 4 of them one of 8 campaign texts, 1,000 logins). For
# each connection count it prints the bound's line, chokepointd's, and
#   milter conns=C msgs_per_s=X bound=Y ratio=X/Y p99_us=Z
# The daemon runs the shipped content settings without a mail log (so
# no text becomes spam: every message is fingerprinted, counted and
# answered CONTINUE), on its embedded store; and again in fleet mode, on
# a redis-server on loopback (the campaign table shared: one script of 8
# bands per message), with Redis's CPU per message:
#   milter-fleet conns=C msgs_per_s=X ratio=X/Y p99_us=Z redis_cpu_us_per_msg=R
# Knobs: CONNS="1 8" DURATION=8 WARMUP=2 REPEAT=1 (the median is kept)
# REDIS_PORT=16390 (FLEET=0: no fleet case).
set -eu
cd "$(dirname "$0")/.."
ROOT=$(pwd)
CONNS=${CONNS:-"1 8"}
DURATION=${DURATION:-8}
WARMUP=${WARMUP:-2}
REPEAT=${REPEAT:-1}
FLEET=${FLEET:-1}
REDIS_PORT=${REDIS_PORT:-16390}
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

# fleet mode: the same, its store in Redis
sed "s|^  path: $OUT/state.db|  path: $OUT/state.db\\n  backend: redis\\n  redis: redis://127.0.0.1:$REDIS_PORT\\n  fleet_host: 1|" \
    "$OUT/chokepoint.yaml" | sed 's/\\n/\n/g' > "$OUT/fleet.yaml"
REDIS=""
if [ "$FLEET" = 1 ] && command -v redis-server >/dev/null; then
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" \
        --appendonly no --dir "$OUT" --logfile "$OUT/redis.log" & REDIS=$!
    trap 'kill $REDIS 2>/dev/null || true' EXIT INT TERM
    i=0; until redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 || [ $i -gt 100 ]; do sleep 0.05; i=$((i+1)); done
fi
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

median() { sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
field() { sed -n "s/.* $1=\([0-9.]*\).*/\1/p"; }

for c in $CONNS; do
    : > "$OUT/bound.txt"; : > "$OUT/cpd.txt"; : > "$OUT/fleet.txt"; : > "$OUT/rcpu.txt"
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
        if [ -n "$REDIS" ]; then
            redis-cli -p "$REDIS_PORT" flushall >/dev/null
            rm -f "$OUT/state.db"*
            "$CHOKEPOINTD" -c "$OUT/fleet.yaml" 2>"$OUT/fleet.log" & pid=$!
            i=0; while ! grep -q "decisions are shared" "$OUT/fleet.log" && [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done
            t0=$(cpu_ticks "$REDIS")
            line=$("$BIN/milter-load" -s "$OUT/milter.sock" -c "$c" -d "$DURATION" \
                -w "$WARMUP")
            t1=$(cpu_ticks "$REDIS")
            echo "$line" | tee -a "$OUT/fleet.txt"
            # ticks are 1/100 s over warm-up and run
            echo "$line" | field msgs_per_s | awk -v t="$((t1 - t0))" \
                -v d="$((DURATION + WARMUP))" \
                '{ printf "%.1f\n", t * 10000 / ($1 * d) }' >> "$OUT/rcpu.txt"
            kill "$pid"; wait "$pid" 2>/dev/null || true
        fi
        r=$((r+1))
    done
    b=$(field msgs_per_s < "$OUT/bound.txt" | median)
    x=$(field msgs_per_s < "$OUT/cpd.txt" | median)
    p=$(field p99_us < "$OUT/cpd.txt" | median)
    echo "milter conns=$c msgs_per_s=$x bound=$b ratio=$(echo "$x $b" | awk '{printf "%.2f", $1/$2}') p99_us=$p"
    if [ -n "$REDIS" ]; then
        x=$(field msgs_per_s < "$OUT/fleet.txt" | median)
        p=$(field p99_us < "$OUT/fleet.txt" | median)
        echo "milter-fleet conns=$c msgs_per_s=$x ratio=$(echo "$x $b" | awk '{printf "%.2f", $1/$2}') p99_us=$p redis_cpu_us_per_msg=$(median < "$OUT/rcpu.txt")"
    fi
done
