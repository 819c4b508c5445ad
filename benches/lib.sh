# Helpers shared by the benchmark scripts (sourced, not run).

# A free TCP port on loopback.
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }

# Waits (10 s at most) until a RESP server answers PING on port $1.
wait_port() { for _ in $(seq 200); do redis-cli -p "$1" ping >/dev/null 2>&1 && return 0; sleep 0.05; done; echo "server on $1 did not start" >&2; exit 1; }

# Processes a script started; kill_started stops them (scripts call it from their EXIT trap).
pids=()
kill_started() { kill "${pids[@]}" 2>/dev/null || true; }

# Starts a redis-server on core 1 (the servers' core) on a free port; sets UP and UP_PID.
start_upstream() {
  UP=$(free_port)
  taskset -c 1 redis-server --port "$UP" --bind 127.0.0.1 --save '' --appendonly no --logfile /dev/null &
  UP_PID=$!
  pids+=($UP_PID)
  wait_port "$UP"
}

# Starts $STRATA on core 1 on port $1, with the environment assignments that follow (quiet, no
# HTTP listener); sets LAST_PID.
start_strata() {
  local port=$1; shift
  env STRATA_HTTP_LISTEN='""' STRATA_LOG_LEVEL=warn "$@" taskset -c 1 "$STRATA" --port "$port" >/dev/null 2>&1 &
  LAST_PID=$!
  pids+=($LAST_PID)
  wait_port "$port"
}
