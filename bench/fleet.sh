#!/bin/sh
# bench/fleet.sh — fleet mode (store.backend: redis) against the do-nothing
# upper bound and the embedded store, side by side in one run: the policy
# load of bench/run.sh (shared/bench/policy-load.c, whole transactions,
# zipf over the accounts) on
#   bound        shared/bench/policy-upper-bound.c
#   embedded     chokepointd, SQLite store (the default)
#   redis        chokepointd, accounts in a redis-server on loopback TCP
#   redis-2      two chokepointd sharing that redis-server, each with half
#                the connections (two load generators at once; rps summed)
#   redis-tls    one chokepointd, the same redis-server over TLS
#                (rediss://, its TLS port; a CA made here with openssl)
# Redis is filled with ACCOUNTS accounts first (as the decisions write
# them), so bytes per account is measured on a full population.
#
# Prints per case: rps, ratio to the bound, p99, and for the Redis cases
# the Redis CPU per 1,000 decisions and Redis memory per account; a last
# line per connection count
#   fleet conns=C bound=B embedded=E redis=R redis2=R2 ratio=R/B ...
#
#   redis-null   (CEILING=1) one chokepointd built once more with a
#                decide.lua that reads Redis's clock and returns a constant
#                answer (every account empty, nothing learned): the same
#                daemon, connection and round trip with no work in Redis,
#                the most one daemon that waits on Redis for each decision
#                can reach on this machine, whatever the script does
#   redis-min    (CEILING=1) the same with a decide.lua that also reads
#                the account's record, writes its counters and sets its
#                expiry (HMGET, HSET, PEXPIRE), and decides nothing: the
#                least any script that meters an account costs
# Knobs: CONNS="8 32" ACCOUNTS=1000000 DURATION=10 WARMUP=2 DIST=zipf:1.0
# REPEAT=1 (runs per case, median kept) REDIS_PORT=16379 (TLS: +1)
# CEILING=0
set -eu
cd "$(dirname "$0")/.."
ROOT=$(pwd)
SHARED=${SHARED:-$ROOT/../shared/bench}
[ -d "$SHARED" ] || SHARED=/work/shared/bench
CONNS=${CONNS:-"8 32"}
ACCOUNTS=${ACCOUNTS:-1000000}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
DIST=${DIST:-zipf:1.0}
REPEAT=${REPEAT:-1}
REDIS_PORT=${REDIS_PORT:-16379}
OUT=$ROOT/bench/out/fleet
BIN=$ROOT/bench/out/bin
mkdir -p "$BIN" "$OUT"
rm -f "$OUT"/*.sock
cc -O2 -pthread -o "$BIN/policy-load" "$SHARED/policy-load.c"
cc -O2 -pthread -o "$BIN/policy-upper-bound" "$SHARED/policy-upper-bound.c"
CHOKEPOINTD=${CHOKEPOINTD:-build/chokepointd}
[ -x build/chokepointd ] || ninja -C build
command -v redis-server >/dev/null ||
    { echo "fleet.sh: redis-server is not installed (sh scripts/deps.sh)" >&2; exit 1; }

# the ceiling cases' daemons: this tree with another decide.lua
variant() { # name -> the binary in VARIANT; decide.lua on stdin
    vs=$ROOT/bench/out/$1-src
    rm -rf "$vs"
    mkdir -p "$vs"
    tar --exclude=./build --exclude='./build-*' --exclude=./bench/out \
        --exclude=./.git -cf - . | tar -C "$vs" -xf -
    cat > "$vs/src/store/lua/decide.lua"
    ( cd "$vs" && meson setup build >/dev/null &&
      ninja -C build chokepointd >/dev/null )
    VARIANT=$vs/build/chokepointd
}
NULLD="" MIND=""
if [ "${CEILING:-0}" = 1 ]; then
    variant null <<'LUA'
-- bench/fleet.sh's null decision: Redis's clock read, a constant answer
redis.call('TIME')
return {0, 0, 0, 0, 0, -1, 0, 0, 0, {}, '', ''}
LUA
    NULLD=$VARIANT
    variant min <<'LUA'
-- bench/fleet.sh's least metering: the clock, the account's record read
-- (its states and bench/classes.yaml's counters), its counters written,
-- its expiry set; a constant answer
redis.call('TIME')
local k = KEYS[1]
redis.call('HMGET', k, 'st', 'ss', 'rp', 'es', 'et', 'ev', 'nw', 't', 'dm',
  's:messages/1h', 's:messages/1d', 's:recipients/1h', 's:domains/1h',
  's:bytes/1d')
redis.call('HSET', k, 't', '1', 'dm', '0 0 0 0 0 0 0 0 0', 's:messages/1h',
  '1', 's:messages/1d', '1', 's:recipients/1h', '1', 's:domains/1h', '1',
  's:bytes/1d', '1')
redis.call('PEXPIRE', k, ARGV[7])
return {0, 0, 0, 0, 0, -1, 0, 0, 0, {}, '', ''}
LUA
    MIND=$VARIANT
fi

PIDS=""
cleanup() {
    for p in $PIDS; do kill "$p" 2>/dev/null || true; done
}
trap cleanup EXIT INT TERM

write_config() { # name backend
    if [ "$2" = redis ]; then
        store="  backend: redis
  redis: redis://127.0.0.1:$REDIS_PORT"
    elif [ "$2" = redis-tls ]; then
        store="  backend: redis
  redis: rediss://127.0.0.1:$((REDIS_PORT + 1))
  redis_tls_ca: $OUT/tls/ca.crt"
    else
        store=""
    fi
    cat > "$OUT/$1.yaml" <<YAML
daemon:
  listen: [unix:$OUT/$1.sock]
  admin_socket: $OUT/$1-admin.sock
  log: stderr
  log_level: info
protocol:
  max_connections: 1000
store:
  path: $OUT/$1.db
  checkpoint_interval: 5s
$store
YAML
    cat bench/classes.yaml >> "$OUT/$1.yaml"
    rm -f "$OUT/$1.db" "$OUT/$1.db-wal" "$OUT/$1.db-shm" "$OUT/$1.db.lock"
}

wait_started() { # log sock
    i=0
    while { [ ! -S "$2" ] || ! grep -q " started: " "$1" 2>/dev/null; } &&
        [ $i -lt 1200 ]; do sleep 0.05; i=$((i + 1)); done
}

field() { echo "$2" | tr ' ' '\n' | sed -n "s/^$1=//p"; }
median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
rcli() { redis-cli -p "$REDIS_PORT" "$@"; }

load() { # sock conns
    "$BIN/policy-load" -s "unix:$1" -c "$2" -u "$ACCOUNTS" -k "$DIST" \
        -d "$DURATION" -w "$WARMUP" -m 2>/dev/null | tail -1
}

start_cp() { # name [binary] -> pid in CP
    rm -f "$OUT/$1.log"
    "${2:-$CHOKEPOINTD}" -c "$OUT/$1.yaml" 2>"$OUT/$1.log" &
    CP=$!
    PIDS="$PIDS $CP"
    wait_started "$OUT/$1.log" "$OUT/$1.sock"
}

run_one() { # name [binary]: one daemon under the load of $c connections;
    # the load's last line in `line`
    start_cp "$1" "${2:-}"
    line=$(load "$OUT/$1.sock" "$c")
    kill "$CP"; wait "$CP" 2>/dev/null || true
    [ "$(field errors "$line")" = 0 ] || echo "WARNING: errors: $line"
    grep -h "local copy" "$OUT/$1.log" | head -2 | sed 's/^/  /' || true
}

# ---- the Redis server, filled with ACCOUNTS accounts as decide.lua
# writes them (a hash of levels, the time, the domain ring; the ring as
# the text of earlier versions, which it reads: redis-cli's inline
# commands carry no NUL, and the packed ring is 17 bytes longer) ----
rm -f "$OUT/dump.rdb"
# a CA and a certificate for 127.0.0.1: the TLS port of the same server
mkdir -p "$OUT/tls"
( cd "$OUT/tls" &&
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=bench-ca \
      -keyout ca.key -out ca.crt &&
  openssl req -newkey rsa:2048 -nodes -subj /CN=redis -keyout redis.key \
      -out redis.csr &&
  echo "subjectAltName=IP:127.0.0.1" > ext.cnf &&
  openssl x509 -req -in redis.csr -CA ca.crt -CAkey ca.key \
      -CAcreateserial -days 2 -out redis.crt -extfile ext.cnf
) >/dev/null 2>&1
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" \
    --appendonly no --dir "$OUT" --logfile "$OUT/redis-server.log" \
    --tls-port $((REDIS_PORT + 1)) --tls-cert-file "$OUT/tls/redis.crt" \
    --tls-key-file "$OUT/tls/redis.key" --tls-ca-cert-file "$OUT/tls/ca.crt" \
    --tls-auth-clients no &
REDIS=$!
PIDS="$REDIS"
i=0
until rcli ping >/dev/null 2>&1 || [ $i -gt 100 ]; do sleep 0.05; i=$((i + 1)); done
mem0=$(rcli info memory | sed -n 's/^used_memory:\([0-9]*\).*/\1/p')
now=$(($(date +%s) * 1000))
awk -v n="$ACCOUNTS" -v now="$now" 'BEGIN {
    for (i = 0; i < n; i++) {
        k = sprintf("cp:{u:u%07d@customers.example.net}", i)
        printf "HSET %s t %d dm \"0 0 0 0 0 0 0 0 0\" s:messages/1h 0 s:messages/1d 0 s:recipients/1h 0 s:domains/1h 0 s:bytes/1d 0\r\n", k, now
        printf "PEXPIRE %s 172800000\r\n", k
    } }' | rcli --pipe >/dev/null
mem1=$(rcli info memory | sed -n 's/^used_memory:\([0-9]*\).*/\1/p')
bpa=$(( (mem1 - mem0) / ACCOUNTS ))
echo "redis: $(rcli dbsize) keys, $bpa bytes per account (used_memory)"

write_config embedded sqlite
write_config redis redis
write_config redis2 redis
write_config redis-tls redis-tls
write_config redis-null redis
write_config redis-min redis

for c in $CONNS; do
    ub_all="" em_all="" re_all="" r2_all="" p99e="" p99r="" p99r2="" cpu=""
    tl_all="" p99t="" nu_all="" p99n="" mi_all="" p99m=""
    r=0
    while [ $r -lt "$REPEAT" ]; do
        r=$((r + 1))
        rm -f "$OUT/ub.sock"
        "$BIN/policy-upper-bound" -s "unix:$OUT/ub.sock" 2>/dev/null &
        ub=$!
        PIDS="$REDIS $ub"
        i=0; while [ ! -S "$OUT/ub.sock" ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i + 1)); done
        line=$(load "$OUT/ub.sock" "$c")
        kill "$ub"; wait "$ub" 2>/dev/null || true
        ub_all="$ub_all $(field rps "$line")"

        run_one embedded
        em_all="$em_all $(field rps "$line")"
        p99e="$p99e $(field p99_us "$line")"

        start_cp redis
        t0=$(cpu_ticks "$REDIS")
        line=$(load "$OUT/redis.sock" "$c")
        t1=$(cpu_ticks "$REDIS")
        kill "$CP"; wait "$CP" 2>/dev/null || true
        rps=$(field rps "$line")
        [ "$(field errors "$line")" = 0 ] || echo "WARNING: errors: $line"
        grep -h "local copy" "$OUT/redis.log" | head -2 | sed 's/^/  /' || true
        re_all="$re_all $rps"
        p99r="$p99r $(field p99_us "$line")"
        # ticks are 1/100 s; decisions in the window: rps x (warm-up + run)
        cpu="$cpu $(awk -v t="$((t1 - t0))" -v r="$rps" -v d="$((DURATION + WARMUP))" \
            'BEGIN { printf "%.1f", t * 10 / (r * d / 1000) }')"

        start_cp redis
        cpa=$CP
        start_cp redis2
        cpb=$CP
        half=$(( (c + 1) / 2 ))
        load "$OUT/redis.sock" "$half" > "$OUT/la.out" &
        la=$!
        load "$OUT/redis2.sock" "$half" > "$OUT/lb.out"
        wait "$la"
        kill "$cpa" "$cpb"; wait "$cpa" "$cpb" 2>/dev/null || true
        ra=$(field rps "$(cat "$OUT/la.out")")
        rb=$(field rps "$(cat "$OUT/lb.out")")
        r2_all="$r2_all $(awk -v a="$ra" -v b="$rb" 'BEGIN { printf "%.1f", a + b }')"
        p99r2="$p99r2 $(field p99_us "$(cat "$OUT/la.out")")"

        run_one redis-tls
        tl_all="$tl_all $(field rps "$line")"
        p99t="$p99t $(field p99_us "$line")"

        if [ -n "$NULLD" ]; then
            run_one redis-null "$NULLD"
            nu_all="$nu_all $(field rps "$line")"
            p99n="$p99n $(field p99_us "$line")"
            run_one redis-min "$MIND"
            mi_all="$mi_all $(field rps "$line")"
            p99m="$p99m $(field p99_us "$line")"
        fi
    done
    m() { echo $1 | tr ' ' '\n' | median; }
    ub=$(m "$ub_all"); em=$(m "$em_all"); re=$(m "$re_all"); r2=$(m "$r2_all")
    tl=$(m "$tl_all")
    ratio() { awk -v a="$1" -v b="$ub" 'BEGIN { printf "%.2f", a / b }'; }
    nul=""
    [ -z "$NULLD" ] || nul=" redis_null=$(m "$nu_all") ratio_redis_null=$(ratio "$(m "$nu_all")") p99_redis_null_us=$(m "$p99n") redis_min=$(m "$mi_all") ratio_redis_min=$(ratio "$(m "$mi_all")") p99_redis_min_us=$(m "$p99m")"
    echo "fleet conns=$c bound=$ub embedded=$em ratio_embedded=$(ratio "$em") p99_embedded_us=$(m "$p99e") redis=$re ratio_redis=$(ratio "$re") p99_redis_us=$(m "$p99r") redis_cpu_ms_per_1000=$(m "$cpu") redis2=$r2 ratio_redis2=$(ratio "$r2") p99_redis2_us=$(m "$p99r2") redis_tls=$tl ratio_redis_tls=$(ratio "$tl") p99_redis_tls_us=$(m "$p99t")$nul redis_bytes_per_account=$bpa"
done
mem2=$(rcli info memory | sed -n 's/^used_memory:\([0-9]*\).*/\1/p')
echo "redis after the runs: $(rcli dbsize) keys, $(( (mem2 - mem0) / $(rcli dbsize) )) bytes per key"
