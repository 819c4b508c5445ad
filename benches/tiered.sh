#!/usr/bin/env bash
# Tiered-mode targets (docs/performance.md), measured in one run on this machine:
#
# 1. GET served from L1 in tiered mode vs GET on a standalone Strata: redis-benchmark
#    -t get -c 50 -r 1000 (1000 keys, all in L1), P1 and P16, servers pinned to core 1 and the
#    client to core 0, rounds interleaved; ratio of medians (target >= 0.9).
# 2. GET that misses L1 and hits L2, one client: p50 latency through Strata (l1.max_entries = 1,
#    100 000 keys, so nearly every GET misses L1) vs redis-benchmark straight against the
#    upstream (target <= 2x). The upstream runs on core 1 like the Strata instances and the
#    client on core 0, so both paths cross between the cores the same number of times.
# 3. Invalidation delay: a write acknowledged through instance A (or straight on the upstream)
#    until instance B, which had the old value in L1, serves the new one; p50 / p99 over
#    N_INVAL writes (target p99 <= 10 ms).
#
# Usage: benches/tiered.sh [rounds=3]   (prints markdown tables; raw data in bench-results/tiered)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
N_P1=${N_P1:-100000}
N_P16=${N_P16:-1000000}
N_INVAL=${N_INVAL:-2000}
OUT=${OUT:-bench-results/tiered}
mkdir -p "$OUT"

cargo build --release --bins >/dev/null
STRATA=$PWD/target/release/strata

. benches/lib.sh
trap kill_started EXIT

start_upstream
SOLO=$(free_port); TIER=$(free_port); MISS=$(free_port); B=$(free_port)
start_strata "$SOLO"
start_strata "$TIER" STRATA_L2_URL="redis://127.0.0.1:$UP" STRATA_L1_MAX_ENTRIES=2000
start_strata "$MISS" STRATA_L2_URL="redis://127.0.0.1:$UP" STRATA_L1_MAX_ENTRIES=1
start_strata "$B" STRATA_L2_URL="redis://127.0.0.1:$UP"
sleep 1

# 1. L1 hits vs standalone.
for port in "$SOLO" "$TIER"; do
  redis-benchmark -p "$port" -t set -c 50 -n 20000 -r 1000 -d 100 -q >/dev/null 2>&1
done
: > "$OUT/l1.csv"
for round in $(seq "$ROUNDS"); do
  for server in standalone tiered; do
    port=$SOLO; [ "$server" = tiered ] && port=$TIER
    for p in 1 16; do
      n=$N_P1; [ "$p" = 16 ] && n=$N_P16
      # Warm L1 of the tiered instance (a GET of each key fills it).
      taskset -c 0 redis-benchmark -p "$port" -t get -c 50 -n 20000 -r 1000 -d 100 -q >/dev/null 2>&1
      taskset -c 0 redis-benchmark -p "$port" -t get -c 50 -n "$n" -P "$p" -r 1000 -d 100 --csv -q 2>/dev/null \
        | tail -n +2 | sed "s/^/$round,$server,$p,/" >> "$OUT/l1.csv"
    done
  done
done

# 2. L1 miss, L2 hit, one client: p50 through Strata vs straight to the upstream.
redis-benchmark -p "$UP" -t set -c 50 -n 200000 -r 100000 -d 100 -q >/dev/null 2>&1
: > "$OUT/miss.csv"
for round in $(seq "$ROUNDS"); do
  for server in upstream strata; do
    port=$UP; [ "$server" = strata ] && port=$MISS
    taskset -c 0 redis-benchmark -p "$port" -t get -c 1 -n 20000 -r 100000 -d 100 --csv -q 2>/dev/null \
      | tail -n +2 | sed "s/^/$round,$server,/" >> "$OUT/miss.csv"
  done
done

# 3. Invalidation delay, through A (the tiered instance) and straight on the upstream.
python3 - "$TIER" "$B" "$UP" "$N_INVAL" > "$OUT/inval.txt" <<'PY'
import socket, sys, time

def conn(port):
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s, s.makefile("rb")

def cmd(c, *args):
    s, f = c
    out = b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)
    s.sendall(out)
    line = f.readline()
    if line[:1] == b"$":
        n = int(line[1:])
        if n < 0:
            return None
        data = f.read(n + 2)[:-2]
        return data
    return line.strip()

a, b, up, n = (conn(int(sys.argv[1])), conn(int(sys.argv[2])), conn(int(sys.argv[3])), int(sys.argv[4]))
for via, writer in (("instance A", a), ("upstream", up)):
    delays = []
    for i in range(n):
        key = b"inv:%d" % (i % 50)
        old, new = b"old%d" % i, b"new%d" % i
        cmd(writer, b"SET", key, old)
        while cmd(b, b"GET", key) != old:  # B caches the old value
            pass
        cmd(writer, b"SET", key, new)
        t0 = time.perf_counter()
        while cmd(b, b"GET", key) != new:
            pass
        delays.append((time.perf_counter() - t0) * 1000)
    delays.sort()
    p = lambda q: delays[min(len(delays) - 1, int(q * len(delays)))]
    print(f"{via},{p(0.5):.3f},{p(0.99):.3f},{delays[-1]:.3f}")
PY

python3 - "$OUT" <<'PY'
import csv, statistics, sys
out = sys.argv[1]
rows = list(csv.reader(open(f"{out}/l1.csv")))
by = {}
for r in rows:
    rnd, server, p, test, rps = r[0], r[1], r[2], r[3], float(r[4])
    by.setdefault((p, server), []).append((rps, float(r[9])))
print("| test | pipeline | standalone rps | tiered (L1 hit) rps | ratio | standalone p99 ms | tiered p99 ms |")
print("|---|---|---|---|---|---|---|")
for p in ("1", "16"):
    s = by[(p, "standalone")]; t = by[(p, "tiered")]
    ms, mt = statistics.median(x[0] for x in s), statistics.median(x[0] for x in t)
    print(f"| GET | {p} | {ms:,.0f} | {mt:,.0f} | {mt/ms:.2f} | {statistics.median(x[1] for x in s):.3f} | {statistics.median(x[1] for x in t):.3f} |")
rows = list(csv.reader(open(f"{out}/miss.csv")))
p50 = {}
for r in rows:
    p50.setdefault(r[1], []).append(float(r[6]))
u, s = statistics.median(p50["upstream"]), statistics.median(p50["strata"])
print()
print("| GET at 1 client | p50 ms |")
print("|---|---|")
print(f"| straight to the upstream | {u:.3f} |")
print(f"| through Strata, L1 miss + L2 hit | {s:.3f} |")
print(f"| ratio | {s/u:.2f} |")
print()
print("| invalidation delay (write ack on one side → new value served by instance B) | p50 ms | p99 ms | max ms |")
print("|---|---|---|---|")
for line in open(f"{out}/inval.txt"):
    via, a, b, c = line.strip().split(",")
    print(f"| write through {via} | {a} | {b} | {c} |")
PY
