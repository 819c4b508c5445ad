#!/usr/bin/env bash
# Throughput, latency and memory of Strata against redis-server, measured side by side in the
# same run on this machine (see docs/performance.md for how to read the result).
#
# - Both servers are pinned to core 1, redis-benchmark to core 0 (taskset), so each server
#   gets one core; each test runs on one server right after the other (which one goes first
#   alternates from round to round) and medians of the rounds are reported, because a single
#   round on a shared 2-core machine swings a lot.
# - Throughput: `redis-benchmark -t set,get,incr,mset,hset -c 50 -r 100000 -d 100` at
#   pipeline 1 and 16, one redis-benchmark run per test. Memory: 1 000 000 keys of 100-byte
#   values loaded through `redis-cli --pipe`, RSS growth per key.
# - Next to each ratio: each server's CPU time per request and how busy the client was (its
#   CPU time over the wall time). A row whose client is busy close to 100 % measures the
#   client: both servers were waiting for it part of the time.
#
# Usage: benches/resp.sh [rounds=3]   (writes bench-results/ and prints a markdown table)
#   TESTS=all runs redis-benchmark's whole default suite; MEMORY=0 skips the memory part;
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

# One redis-benchmark run per test (the default suite's order; state carries over from one test
# to the next as in a single run), so each row gets its own CPU figures: the server's and the
# client's CPU time over the run (/proc ticks and /usr/bin/time), split between the rows of a
# run (LRANGE_* come with their LPUSH) by their share of its wall time.
SUITE=ping_inline,ping_mbulk,set,get,incr,lpush,rpush,lpop,rpop,sadd,hset,spop,zadd,zpopmin,lrange_100,lrange_300,lrange_500,lrange_600,mset
[ "$TESTS" = all ] || SUITE=$TESTS
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
HZ=$(getconf CLK_TCK)
: > "$OUT/throughput.csv"
# Each test runs on one server right after the other (which goes first alternates from round to
# round), so that both meet the machine in the same state: on a shared 2-core machine its speed
# drifts over minutes, and a whole suite on one server then on the other can catch a drift.
for round in $(seq "$ROUNDS"); do
  order="redis strata"; [ $((round % 2)) = 0 ] && order="strata redis"
  for p in 1 16; do
    n=$N_P1; [ "$p" = 16 ] && n=$N_P16
    redis-cli -p "$RPORT" flushall >/dev/null
    redis-cli -p "$SPORT" flushall >/dev/null
    for t in ${SUITE//,/ }; do
      for server in $order; do
        port=$RPORT; pid=$RPID; [ "$server" = strata ] && { port=$SPORT; pid=$SPID; }
        before=$(ticks "$pid")
        /usr/bin/time -f '%U %S' -o "$OUT/client-time" taskset -c 0 redis-benchmark -p "$port" -t "$t" \
          -c 50 -n "$n" -P "$p" -r 100000 -d 100 --csv -q 2>/dev/null | tail -n +2 > "$OUT/run.csv"
        after=$(ticks "$pid")
        python3 - "$OUT" "$round,$server,$p" "$n" "$(( (after - before) * 1000000 / HZ ))" <<'PY'
import csv, sys
out, prefix, n, server_us = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
u, s = map(float, open(f"{out}/client-time").read().split())
rows = list(csv.reader(open(f"{out}/run.csv")))
walls = [n / float(r[1]) for r in rows]
with open(f"{out}/throughput.csv", "a") as f:
    for r, w in zip(rows, walls):
        share = w / sum(walls)
        # server CPU µs per request, client CPU busy fraction of the row's wall time
        f.write(",".join([prefix] + [f'"{x}"' for x in r]
                         + [f"{server_us * share / n:.3f}", f"{(u + s) * share / w:.3f}"]) + "\n")
PY
      done
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
    rnd, server, p, test, rps, avg, mn, p50, p95, p99, mx, cpu, busy = r
    test = test.strip()
    rows.setdefault((test, p, server), []).append((float(rps), float(p99), float(cpu), float(busy)))
med = statistics.median
print("| test | pipeline | Redis rps | Strata rps | ratio | Redis p99 ms | Strata p99 ms "
      "| server CPU µs/req Redis / Strata | client busy Redis / Strata |")
print("|---|---|---|---|---|---|---|---|---|")
for (test, p, server) in sorted(k for k in rows if k[2] == "redis"):
    r = rows[(test, p, "redis")]; s = rows.get((test, p, "strata"), [(0, 0, 0, 0)])
    rr, sr = med(x[0] for x in r), med(x[0] for x in s)
    rp, sp = med(x[1] for x in r), med(x[1] for x in s)
    rc, sc = med(x[2] for x in r), med(x[2] for x in s)
    rb, sb = med(x[3] for x in r), med(x[3] for x in s)
    print(f"| {test} | {p} | {rr:,.0f} | {sr:,.0f} | {sr/rr:.2f} | {rp:.3f} | {sp:.3f} "
          f"| {rc:.2f} / {sc:.2f} | {rb:.0%} / {sb:.0%} |")
print()
print("| server | RSS before (KiB) | RSS after (KiB) | keys | bytes per key |")
print("|---|---|---|---|---|")
for name, before, after, n in csv.reader(open(f"{out}/memory.csv")):
    per = (int(after) - int(before)) * 1024 / keys
    print(f"| {name} | {before} | {after} | {n} | {per:.0f} |")
PY
