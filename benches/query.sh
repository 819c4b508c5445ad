#!/usr/bin/env bash
# QUERY targets (docs/performance.md), measured in one run on this machine against a real
# PostgreSQL 15 (a primary the script starts in a temp dir; reads go to it, as to a replica):
#
# 1. A point read served from Strata's QUERY cache vs Strata's own GET: redis-benchmark
#    -c 50, P1 and P16, same key every time (always a hit), with the RESP reply and with
#    FORMAT JSON; ratio of medians (target >= 0.9), and the client's CPU per request.
#    A control for the reply's shape: HSCAN of a one-field hash, whose reply is five objects
#    like a one-row hit's, against GET, on Strata and on a redis-server started beside it;
#    where the client bounds the rate, Redis's own five-object reply falls behind its GET
#    as far.
#    Plus Strata's CPU per hit (utime+stime of the process over a fixed number of hits) vs
#    PostgreSQL's backend CPU per prepared point SELECT (pgbench -M prepared over the same
#    number, the postmaster's reaped children's CPU): target Strata <= 1/5 of PostgreSQL.
# 2. A heavy read (join + aggregate over 200 000 rows) from the cache vs run directly by
#    pgbench: throughput ratio (target >= 100).
# 3. QUERY ... NOCACHE point read at 1 client vs the direct prepared query (pgbench -c 1
#    -M prepared, per-transaction log): p50 latency ratio (target <= 1.3). Also measured with
#    one client for both sides (benches/latency.rs: blocking sockets, the statement prepared
#    once, every request timed to the ns), so the two sides differ only in what answers them.
#
# Servers run on core 1, clients on core 0. Usage: benches/query.sh [rounds=3]
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
N_HIT=${N_HIT:-200000}
N_HIT16=${N_HIT16:-2000000} # at P16 (about 2 s a run; 200 000 would be over in a fifth of one)
N_CPU=${N_CPU:-100000}
N_ONE=${N_ONE:-20000}
OUT=${OUT:-bench-results/query}
SECTIONS=${SECTIONS:-hits,cpu,heavy,one}
want() { [[ ",$SECTIONS," == *",$1,"* ]]; }
mkdir -p "$OUT"
PGBIN=/usr/lib/postgresql/15/bin

cargo build --release --bins >/dev/null
STRATA=$PWD/target/release/strata
LATENCY=$(cargo bench --bench latency --no-run --message-format=json 2>/dev/null | python3 -c '
import json, sys
for m in map(json.loads, sys.stdin):
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "latency" and m.get("executable"):
        print(m["executable"])')

. benches/lib.sh
as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

DIR=$(mktemp -d /tmp/strata-bench-pg.XXXXXX)
[ "$(id -u)" -eq 0 ] && chown postgres "$DIR"
PGPORT=$(free_port)
cleanup() {
  kill_started
  as_pg "$PGBIN/pg_ctl" -D "$DIR/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$DIR"
}
trap cleanup EXIT

as_pg "$PGBIN/initdb" -D "$DIR/data" -U postgres --auth=trust >/dev/null
as_pg taskset -c 1 "$PGBIN/pg_ctl" -D "$DIR/data" -l "$DIR/pg.log" -w \
  -o "-p $PGPORT -k $DIR -c listen_addresses=127.0.0.1 -c max_connections=200 -c shared_buffers=256MB -c fsync=off" start >/dev/null
PSQL=(psql -h 127.0.0.1 -p "$PGPORT" -U postgres -d postgres -q -v ON_ERROR_STOP=1)
"${PSQL[@]}" <<'SQL'
CREATE TABLE items (id int PRIMARY KEY, cat int NOT NULL, price numeric NOT NULL, v text NOT NULL);
INSERT INTO items SELECT i, i % 50, (i % 997) / 10.0, md5(i::text) FROM generate_series(1, 100000) i;
CREATE TABLE orders (id int PRIMARY KEY, item int NOT NULL REFERENCES items, qty int NOT NULL);
INSERT INTO orders SELECT i, 1 + (i * 7919) % 100000, 1 + i % 5 FROM generate_series(1, 200000) i;
VACUUM ANALYZE;
SQL
POINT='SELECT v FROM items WHERE id = $1'
HEAVY='SELECT i.cat, count(*) AS n, sum(o.qty * i.price) AS total FROM orders o JOIN items i ON i.id = o.item GROUP BY i.cat ORDER BY i.cat'

SP=$(free_port)
env STRATA_HTTP_LISTEN='""' STRATA_LOG_LEVEL=warn \
  STRATA_DATABASE_PRIMARY_URL="postgres://postgres@127.0.0.1:$PGPORT/postgres" \
  STRATA_RATE_QUERY_PER_USER=off STRATA_RATE_QUERY_GLOBAL=off \
  taskset -c 1 "$STRATA" --port "$SP" >/dev/null 2>&1 &
STRATA_PID=$!
pids+=($STRATA_PID)
wait_port "$SP"
start_upstream # the control's redis-server (port $UP)
for port in "$SP" "$UP"; do
  redis-cli -p "$port" SET k "$(head -c 32 /dev/zero | tr '\0' x)" >/dev/null
  redis-cli -p "$port" HSET h v "$(head -c 32 /dev/zero | tr '\0' x)" >/dev/null
done
redis-cli -p "$SP" QUERY "$POINT" ARGS 1 42 >/dev/null
redis-cli -p "$SP" QUERY "$HEAVY" >/dev/null

cpu_ticks() { awk '{print $14 + $15 + $16 + $17}' "/proc/$1/stat"; }
HZ=$(getconf CLK_TCK)
PM_PID=$(head -1 "$DIR/data/postmaster.pid")

# 1. Hits vs GET. A hit in RESP is a nested array (column names, then the row), which costs
#    redis-benchmark's reply parser about three times what a GET's bulk string does; the same
#    hit as FORMAT JSON is one bulk string. The client's CPU per request (user + system, from
#    /usr/bin/time) shows which side bounds each row.
bench_hits() { # $1 label, $2 pipeline, rest: the command (to Strata, or to $PORT)
  local label=$1 p=$2; shift 2
  local rps n=$N_HIT
  [ "$p" = 1 ] || n=$N_HIT16
  rps=$(/usr/bin/time -o "$DIR/time" -f '%U %S' taskset -c 0 redis-benchmark -p "${PORT:-$SP}" -c 50 -n "$n" -P "$p" --csv -q "$@" 2>/dev/null \
    | tail -n +2 | python3 -c 'import csv,sys; print(next(csv.reader(sys.stdin))[1])')
  echo "$round,$label,$p,$rps,$(awk -v n="$n" '{print ($1 + $2) * 1e6 / n}' "$DIR/time")" >> "$OUT/hits.csv"
}
want hits && : > "$OUT/hits.csv"
want hits && for round in $(seq "$ROUNDS"); do
  for p in 1 16; do
    bench_hits get "$p" GET k
    bench_hits query "$p" QUERY "$POINT" ARGS 1 42
    bench_hits query_json "$p" QUERY "$POINT" ARGS 1 42 FORMAT JSON
    bench_hits hscan "$p" HSCAN h 0
    PORT=$UP bench_hits redis_get "$p" GET k
    PORT=$UP bench_hits redis_hscan "$p" HSCAN h 0
  done
done
cat > "$DIR/point.sql" <<'SQL'
\set id random(1, 100000)
SELECT v FROM items WHERE id = :id;
SQL
# CPU per hit vs CPU per direct prepared point SELECT.
if want cpu; then
before=$(cpu_ticks "$STRATA_PID")
taskset -c 0 redis-benchmark -p "$SP" -c 50 -n "$N_CPU" -P 16 -q QUERY "$POINT" ARGS 1 42 >/dev/null 2>&1
after=$(cpu_ticks "$STRATA_PID")
strata_us=$(python3 -c "print(($after - $before) / $HZ / $N_CPU * 1e6)")
before=$(cpu_ticks "$PM_PID")
taskset -c 0 pgbench -h 127.0.0.1 -p "$PGPORT" -U postgres -n -M prepared -c 8 -j 1 -t $((N_CPU / 8)) -f "$DIR/point.sql" postgres >/dev/null 2>&1
sleep 1
after=$(cpu_ticks "$PM_PID")
pg_us=$(python3 -c "print(($after - $before) / $HZ / $N_CPU * 1e6)")
echo "$strata_us,$pg_us" > "$OUT/cpu.csv"
fi

# 2. Heavy read: cached vs direct.
echo "$HEAVY;" > "$DIR/heavy.sql"
want heavy && : > "$OUT/heavy.csv"
want heavy && for round in $(seq "$ROUNDS"); do
  direct=$(taskset -c 0 pgbench -h 127.0.0.1 -p "$PGPORT" -U postgres -n -M prepared -c 2 -j 1 -T 5 -f "$DIR/heavy.sql" postgres 2>/dev/null \
    | awk '/^tps/ {print $3; exit}')
  cached=$(taskset -c 0 redis-benchmark -p "$SP" -c 50 -n 50000 --csv -q QUERY "$HEAVY" 2>/dev/null | tail -n +2 \
    | python3 -c 'import csv,sys; print(next(csv.reader(sys.stdin))[1])')
  echo "$round,$direct,$cached" >> "$OUT/heavy.csv"
done

# 3. NOCACHE point read at one client: p50 through Strata vs direct prepared.
want one && : > "$OUT/one.csv"
want one && for round in $(seq "$ROUNDS"); do
  s=$(taskset -c 0 redis-benchmark -p "$SP" -c 1 -n "$N_ONE" -r 100000 --csv -q QUERY "$POINT" ARGS 1 __rand_int__ NOCACHE 2>/dev/null \
    | tail -n +2 | python3 -c 'import csv,sys; print(next(csv.reader(sys.stdin))[4])')
  rm -f "$DIR"/pgbench_log.*
  (cd "$DIR" && taskset -c 0 pgbench -h 127.0.0.1 -p "$PGPORT" -U postgres -n -M prepared -c 1 -t "$N_ONE" -l -f "$DIR/point.sql" postgres >/dev/null 2>&1)
  d=$(cat "$DIR"/pgbench_log.* | awk '{print $3}' | sort -n | awk '{a[NR]=$1} END {print a[int(NR/2)+1] / 1000}')
  # The same client on both sides: p50 in µs, first field of its output.
  lat_s=$(taskset -c 0 "$LATENCY" resp "$SP" "$N_ONE" "$POINT" | cut -d, -f1)
  lat_d=$(taskset -c 0 "$LATENCY" pg "$PGPORT" "$N_ONE" "$POINT" | cut -d, -f1)
  echo "$round,$s,$d,$lat_s,$lat_d" >> "$OUT/one.csv"
done

python3 - "$OUT" "$SECTIONS" <<'PY'
import csv, statistics, sys
out, sections = sys.argv[1], sys.argv[2].split(",")
rows = lambda name: list(csv.reader(open(f"{out}/{name}")))
if "hits" in sections:
    by, cl = {}, {}
    for r in rows("hits.csv"):
        by.setdefault((r[1], r[2]), []).append(float(r[3]))
        cl.setdefault((r[1], r[2]), []).append(float(r[4]))
    med = statistics.median
    print("| point read | pipeline | GET rps | QUERY hit rps | ratio | client CPU µs/req GET / hit |")
    print("|---|---|---|---|---|---|")
    for label, name in (("query", "RESP reply"), ("query_json", "FORMAT JSON")):
        for p in ("1", "16"):
            g, q = med(by[("get", p)]), med(by[(label, p)])
            print(f"| {name} | {p} | {g:,.0f} | {q:,.0f} | {q/g:.2f} | {med(cl[('get', p)]):.2f} / {med(cl[(label, p)]):.2f} |")
    print()
    print("| same-shape control | pipeline | GET rps | HSCAN h 0 rps | ratio | client CPU µs/req GET / HSCAN |")
    print("|---|---|---|---|---|---|")
    for server, g, h in (("Strata", "get", "hscan"), ("redis-server", "redis_get", "redis_hscan")):
        for p in ("1", "16"):
            gr, hr = med(by[(g, p)]), med(by[(h, p)])
            print(f"| {server} | {p} | {gr:,.0f} | {hr:,.0f} | {hr/gr:.2f} | {med(cl[(g, p)]):.2f} / {med(cl[(h, p)]):.2f} |")
    print()
    print("| QUERY hit (RESP) / Strata's HSCAN h 0, same reply shape | " + " | ".join(
        f"P{p}: {med(by[('query', p)]) / med(by[('hscan', p)]):.2f}" for p in ("1", "16")) + " |")
    print()
if "cpu" in sections:
    s, pg = (float(x) for x in rows("cpu.csv")[0])
    print("| CPU per point read | µs |")
    print("|---|---|")
    print(f"| Strata, QUERY cache hit (P16) | {s:.2f} |")
    print(f"| PostgreSQL backends, prepared SELECT (pgbench) | {pg:.2f} |")
    print(f"| ratio Strata / PostgreSQL | {s/pg:.3f} |")
    print()
if "heavy" in sections:
    r = rows("heavy.csv")
    d, c = statistics.median(float(x[1]) for x in r), statistics.median(float(x[2]) for x in r)
    print("| heavy read (join + aggregate, 200k rows) | per second |")
    print("|---|---|")
    print(f"| direct (pgbench, 2 clients) | {d:,.1f} |")
    print(f"| QUERY served from the cache (50 clients) | {c:,.0f} |")
    print(f"| ratio | {c/d:,.0f} |")
    print()
if "one" in sections:
    r = rows("one.csv")
    s, d = statistics.median(float(x[1]) for x in r), statistics.median(float(x[2]) for x in r)
    print("| point read at 1 client, p50 | ms |")
    print("|---|---|")
    print(f"| direct prepared (pgbench -M prepared) | {d:.3f} |")
    print(f"| QUERY ... NOCACHE through Strata | {s:.3f} |")
    print(f"| ratio | {s/d:.2f} |")
    print()
    ls, ld = statistics.median(float(x[3]) for x in r), statistics.median(float(x[4]) for x in r)
    print("| same client (benches/latency.rs), p50 | µs |")
    print("|---|---|")
    print(f"| direct prepared | {ld:.1f} |")
    print(f"| QUERY ... NOCACHE through Strata | {ls:.1f} |")
    print(f"| ratio | {ls/ld:.2f} |")
PY
