#!/usr/bin/env bash
# RATE throughput against INCR on the same Strata (issue 7's targets), measured in one run:
#
# 1. L1 mode (standalone Strata): `RATE bench:<k> 100 1` vs `INCR bench:<k>` (target: RATE
#    >= 0.8x INCR).
# 2. Through L2 (a tiered Strata in front of redis-server): RATE runs one Lua script on the
#    upstream per call, INCR is relayed (target: RATE >= 0.5x INCR).
#
# redis-benchmark with 50 clients over 10 000 random keys (-r), pipeline 1 and 16; every RATE
# call is admitted (a few calls per key per second against a limit of 100 per second), so the
# log of each key is written on every call. Servers pinned to core 1, the client to core 0,
# rounds interleaved (INCR, RATE, INCR, RATE); ratio of medians. On a shared machine the
# client (parsing RATE's five-integer replies) or other jobs often limit the rate before the
# server does, so the server-side CPU time per request (Strata, plus redis-server through L2,
# from /proc/<pid>/stat) is reported too: its ratio is the cost ratio when the server is the
# bottleneck.
#
# Usage: benches/rate.sh [rounds=3]   (prints a markdown table; raw data in bench-results/rate)
# Builds with cargo into $CARGO_TARGET_DIR (default target/).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
N_P1=${N_P1:-100000}
N_P16=${N_P16:-500000}
OUT=${OUT:-bench-results/rate}
mkdir -p "$OUT"

cargo build --release --bins >/dev/null
STRATA=${CARGO_TARGET_DIR:-$PWD/target}/release/strata

. benches/lib.sh
trap kill_started EXIT

start_upstream
SOLO=$(free_port); TIER=$(free_port)
start_strata "$SOLO"; SOLO_PID=$LAST_PID
start_strata "$TIER" STRATA_L2_URL="redis://127.0.0.1:$UP"; TIER_PID=$LAST_PID
# CPU time (clock ticks, user + system) of the given processes.
ticks() { local t=0; for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo "$t"; }
HZ=$(getconf CLK_TCK)
sleep 1
# The tiered instance is in L2 mode (not falling back).
redis-cli -p "$TIER" RATE warm 100 1 >/dev/null
redis-cli -p "$TIER" INFO ratelimit | grep -q 'rate_limiter_mode:l2' || { echo "tiered Strata is not in L2 mode" >&2; exit 1; }

: > "$OUT/runs.csv"
for round in $(seq "$ROUNDS"); do
  for mode in l1 l2; do
    port=$SOLO; procs=("$SOLO_PID")
    [ "$mode" = l2 ] && { port=$TIER; procs=("$TIER_PID" "$UP_PID"); }
    for p in 1 16; do
      n=$N_P1; [ "$p" = 16 ] && n=$N_P16
      for cmd in incr rate; do
        if [ "$cmd" = incr ]; then args=(INCR "bench:__rand_int__"); else args=(RATE "bench:__rand_int__" 100 1); fi
        t0=$(ticks "${procs[@]}")
        line=$(taskset -c 0 redis-benchmark -p "$port" -c 50 -n "$n" -P "$p" -r 10000 --csv -q "${args[@]}" 2>/dev/null | tail -n +2)
        t1=$(ticks "${procs[@]}")
        us=$(python3 -c "print(($t1 - $t0) * 1e6 / $HZ / $n)")
        echo "$round,$mode,$p,$cmd,$us,$line" >> "$OUT/runs.csv"
      done
    done
  done
done
redis-cli -p "$SOLO" INFO ratelimit > "$OUT/info-l1.txt"
redis-cli -p "$TIER" INFO ratelimit > "$OUT/info-l2.txt"

python3 - "$OUT" <<'PY'
import csv, statistics, sys
out = sys.argv[1]
by, cpu = {}, {}
for r in csv.reader(open(f"{out}/runs.csv")):
    rnd, mode, p, cmd, us, rps = r[0], r[1], r[2], r[3], float(r[4]), float(r[6])
    by.setdefault((mode, p, cmd), []).append(rps)
    cpu.setdefault((mode, p, cmd), []).append(us)
med = statistics.median
print("| mode | pipeline | INCR rps | RATE rps | RATE / INCR | target | server CPU µs/op INCR | RATE | INCR / RATE cost |")
print("|---|---|---|---|---|---|---|---|---|")
for mode, target in (("l1", 0.8), ("l2", 0.5)):
    for p in ("1", "16"):
        i, r = med(by[(mode, p, "incr")]), med(by[(mode, p, "rate")])
        ci, cr = med(cpu[(mode, p, "incr")]), med(cpu[(mode, p, "rate")])
        ok = "met" if r / i >= target else "not met"
        label = "L1 (standalone)" if mode == "l1" else "through L2"
        print(f"| {label} | {p} | {i:,.0f} | {r:,.0f} | {r/i:.2f} | >= {target} ({ok}) | {ci:.2f} | {cr:.2f} | {ci/cr:.2f} |")
PY
