#!/usr/bin/env bash
# Throughput, latency and memory of Strata against redis-server, measured side by side in the
# same run on this machine (see docs/performance.md for how to read the result).
#
# - Both servers are pinned to core 1, redis-benchmark to core 0 (taskset), so each server
#   gets one core; rounds are interleaved (Redis, Strata, Redis, Strata, ...) and medians of
#   the rounds are reported, because a single round on a shared 2-core machine swings a lot.
# - Throughput: `redis-benchmark -t set,get,incr,mset,hset -c 50 -r 100000 -d 100` at
#   pipeline 1 and 16. Memory: 1 000 000 keys of 100-byte values loaded through
#   `redis-cli --pipe`, RSS growth per key.
#
# Usage: benches/resp.sh [rounds=3]   (writes bench-results/ and prints a markdown table)
#   TESTS=all runs redis-benchmark's whole default suite (no -t); MEMORY=0 skips the memory part;
#   OUT=dir keeps results apart; N_P1 / N_P16 / KEYS set the request and key counts.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
TESTS=${TESTS:-set,get,incr,mset,hset}
N_P1=${N_P1:-100000}
N_P16=${N_P16:-1000000}
KEYS=${KEYS:-1000000}
OUT=${OUT:-bench-results}
MEMORY=${MEMORY:-1}
mkdir -p "$OUT"

cargo build --release --bins >/dev/null
STRATA=$PWD/target/release/strata

. benches/lib.sh
rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }

RPORT=$(free_port); SPORT=$(free_port)
taskset -c 1 redis-server --port "$RPORT" --bind 127.0.0.1 --save '' --appendonly no \
  --daemonize no --logfile /dev/null & RPID=$!
STRATA_HTTP_LISTEN='""' STRATA_LOG_LEVEL=warn taskset -c 1 "$STRATA" --port "$SPORT" >/dev/null 2>&1 & SPID=$!
cleanup() { kill "$RPID" "$SPID" 2>/dev/null || true; }
trap cleanup EXIT
wait_port "$RPORT"; wait_port "$SPORT"

: > "$OUT/throughput.csv"
for round in $(seq "$ROUNDS"); do
  for server in redis strata; do
    port=$RPORT; [ "$server" = strata ] && port=$SPORT
    for p in 1 16; do
      n=$N_P1; [ "$p" = 16 ] && n=$N_P16
      redis-cli -p "$port" flushall >/dev/null
      suite=(-t "$TESTS"); [ "$TESTS" = all ] && suite=()
      taskset -c 0 redis-benchmark -p "$port" "${suite[@]}" -c 50 -n "$n" -P "$p" -r 100000 -d 100 --csv -q 2>/dev/null \
        | tail -n +2 | sed "s/^/$round,$server,$p,/" >> "$OUT/throughput.csv"
    done
  done
done

if [ "$MEMORY" = 0 ]; then : > "$OUT/memory.csv"; fi
# Memory: RSS growth for KEYS keys of 100-byte values, loaded with redis-cli --pipe.
[ "$MEMORY" = 0 ] || python3 - "$KEYS" > "$OUT/load.resp" <<'PY'
import sys
n = int(sys.argv[1]); v = b"x" * 100; w = sys.stdout.buffer
for i in range(n):
    k = b"key:%012d" % i
    w.write(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$100\r\n%s\r\n" % (len(k), k, v))
PY
# Fresh processes for the memory test, so allocator state from the throughput runs is not
# counted (or reused) on either side.
kill "$RPID" "$SPID" 2>/dev/null || true
wait "$RPID" "$SPID" 2>/dev/null || true
taskset -c 1 redis-server --port "$RPORT" --bind 127.0.0.1 --save '' --appendonly no \
  --daemonize no --logfile /dev/null & RPID=$!
STRATA_HTTP_LISTEN='""' STRATA_LOG_LEVEL=warn taskset -c 1 "$STRATA" --port "$SPORT" >/dev/null 2>&1 & SPID=$!
wait_port "$RPORT"; wait_port "$SPORT"
mem_line() {
  local name=$1 port=$2 pid=$3
  local before after
  before=$(rss_kb "$pid")
  redis-cli -p "$port" --pipe < "$OUT/load.resp" > "$OUT/pipe-$name.txt"
  after=$(rss_kb "$pid")
  echo "$name,$before,$after,$(redis-cli -p "$port" dbsize)"
}
[ "$MEMORY" = 0 ] || { mem_line redis "$RPORT" "$RPID"; mem_line strata "$SPORT" "$SPID"; } > "$OUT/memory.csv"

python3 - "$OUT" "$KEYS" <<'PY'
import csv, statistics, sys
out, keys = sys.argv[1], int(sys.argv[2])
rows = {}
for r in csv.reader(open(f"{out}/throughput.csv")):
    rnd, server, p, test, rps, avg, mn, p50, p95, p99, mx = r
    test = test.strip()
    rows.setdefault((test, p, server), []).append((float(rps), float(p99)))
print("| test | pipeline | Redis rps | Strata rps | ratio | Redis p99 ms | Strata p99 ms |")
print("|---|---|---|---|---|---|---|")
for (test, p, server) in sorted(k for k in rows if k[2] == "redis"):
    r = rows[(test, p, "redis")]; s = rows.get((test, p, "strata"), [(0, 0)])
    rr = statistics.median(x[0] for x in r); sr = statistics.median(x[0] for x in s)
    rp = statistics.median(x[1] for x in r); sp = statistics.median(x[1] for x in s)
    print(f"| {test} | {p} | {rr:,.0f} | {sr:,.0f} | {sr/rr:.2f} | {rp:.3f} | {sp:.3f} |")
print()
print("| server | RSS before (KiB) | RSS after (KiB) | keys | bytes per key |")
print("|---|---|---|---|---|")
for name, before, after, n in csv.reader(open(f"{out}/memory.csv")):
    per = (int(after) - int(before)) * 1024 / keys
    print(f"| {name} | {before} | {after} | {n} | {per:.0f} |")
PY
