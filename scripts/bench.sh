#!/usr/bin/env bash
# Builds everything (scripts/setup.sh), then compares IAMAT throughput and
# latency of four servers under herd-bench on loopback:
#
#   node       herd-node as a one-server herd, "log_messages": false
#   node-log   the same with "log_messages": true
#   epoll      epoll-reference, the machine's ceiling (replies not validated)
#   asyncio    bench/asyncio_herd.py, stdlib asyncio
#
# at each depth of DEPTHS, over CONNECTIONS connections. herd-bench runs on
# core BENCH_CPU and the server on core SERVER_CPU (taskset; no pinning on a
# one-core machine). The server's CPU time per request is its utime+stime
# from /proc/<pid>/stat, read just before and just after the herd-bench run,
# divided by every reply of the run (warm-up and drain included).
#
# Prints one table and writes bench/results/<server>-d<depth>.json (the
# RESULT line of herd-bench plus the server's CPU figures) and
# bench/results/summary.json. Exit status 1 when a run failed or had errors.
#
# Settings (environment): DURATION (5) and WARMUP (2) seconds per run,
# CONNECTIONS (64), DEPTHS ("1 16"), SERVERS ("node node-log epoll asyncio"),
# NODE_THREADS (1: the node gets one core, so one scheduler thread),
# BENCH_CPU (0), SERVER_CPU (1), BUILD_DIR (build), SKIP_BUILD=1 to skip
# scripts/setup.sh. The defaults take about 1.5 minutes after the build.
set -euo pipefail
cd "$(dirname "$0")/.."

duration=${DURATION:-5}
warmup=${WARMUP:-2}
connections=${CONNECTIONS:-64}
depths=${DEPTHS:-1 16}
servers=${SERVERS:-node node-log epoll asyncio}
bench_cpu=${BENCH_CPU:-0}
server_cpu=${SERVER_CPU:-1}
build=${BUILD_DIR:-build}
results=bench/results

[[ ${SKIP_BUILD:-0} == 1 ]] || scripts/setup.sh
for bin in herd-node herd-bench epoll-reference; do
  [[ -x $build/$bin ]] || { echo "bench: $build/$bin is missing" >&2; exit 1; }
done

bench_pin=() server_pin=()
if (($(nproc) >= 2)) && command -v taskset >/dev/null; then
  bench_pin=(taskset -c "$bench_cpu")
  server_pin=(taskset -c "$server_cpu")
else
  echo "bench: fewer than 2 cores (or no taskset): not pinning" >&2
fi
clk_tck=$(getconf CLK_TCK)

tmp=$(mktemp -d /tmp/herd-bench.XXXXXX)
server_pid=
stop_server() {
  if [[ -n $server_pid ]]; then
    kill -TERM "$server_pid" 2>/dev/null || true
    for _ in $(seq 50); do
      kill -0 "$server_pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=
  fi
}
trap 'stop_server; rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Waits up to 10 s until 127.0.0.1:$1 accepts connections.
wait_port() {
  python3 - "$1" <<'PY'
import socket, sys, time
deadline = time.monotonic() + 10
while time.monotonic() < deadline:
    try:
        socket.create_connection(("127.0.0.1", int(sys.argv[1])), 0.2).close()
        sys.exit(0)
    except OSError:
        time.sleep(0.05)
sys.exit(1)
PY
}

# Waits up to 10 s for "...:PORT" on the first line of file $1; prints PORT.
port_from() {
  for _ in $(seq 200); do
    if [[ -s $1 ]]; then
      local port
      port=$(sed -n '1s/.*:\([0-9][0-9]*\)$/\1/p' "$1")
      [[ -n $port ]] && { echo "$port"; return 0; }
    fi
    sleep 0.05
  done
  return 1
}

# utime + stime of a process (all threads), in clock ticks.
cpu_ticks() {
  local stat rest
  stat=$(<"/proc/$1/stat")
  rest=${stat##*) }
  read -ra f <<<"$rest"
  echo $((f[11] + f[12]))
}

# Starts server $1 in the background; sets server_pid and port.
start_server() {
  case $1 in
  node | node-log)
    port=$(free_port)
    local logs=false
    [[ $1 == node-log ]] && logs=true
    mkdir -p "$tmp/logs-$1"
    python3 - config/herd.json "$tmp/$1.json" "$port" "$logs" <<'PY'
import json, sys
cfg = json.load(open(sys.argv[1]))
name = "Clark" if "Clark" in cfg["servers"] else next(iter(cfg["servers"]))
cfg["servers"] = {name: {"host": "127.0.0.1", "port": int(sys.argv[3])}}
cfg["links"] = []
cfg["log_messages"] = sys.argv[4] == "true"
json.dump(cfg, open(sys.argv[2], "w"), indent=2)
PY
    local name
    name=$(python3 -c 'import json, sys; print(next(iter(json.load(open(sys.argv[1]))["servers"])))' "$tmp/$1.json")
    "${server_pin[@]}" "$build/herd-node" "$name" --config "$tmp/$1.json" \
      --log-dir "$tmp/logs-$1" --threads "${NODE_THREADS:-1}" \
      >"$tmp/$1.out" 2>&1 &
    server_pid=$!
    wait_port "$port" || { echo "bench: herd-node did not start:" >&2; cat "$tmp/$1.out" >&2; exit 1; }
    ;;
  epoll)
    "${server_pin[@]}" "$build/epoll-reference" --port 0 >"$tmp/$1.out" 2>&1 &
    server_pid=$!
    port=$(port_from "$tmp/$1.out") || { echo "bench: $1 did not start:" >&2; cat "$tmp/$1.out" >&2; exit 1; }
    ;;
  asyncio)
    "${server_pin[@]}" python3 bench/asyncio_herd.py --port 0 --name Ref \
      >"$tmp/$1.out" 2>&1 &
    server_pid=$!
    port=$(port_from "$tmp/$1.out") || { echo "bench: $1 did not start:" >&2; cat "$tmp/$1.out" >&2; exit 1; }
    ;;
  *)
    echo "bench: unknown server \"$1\" (node node-log epoll asyncio)" >&2
    exit 2
    ;;
  esac
}

mkdir -p "$results"
failed=0
rows=()
for server in $servers; do
  for depth in $depths; do
    start_server "$server"
    extra=()
    [[ $server == epoll ]] && extra=(--no-validate)
    echo "bench: $server, depth $depth, $connections connections," \
      "${warmup} s + ${duration} s" >&2
    before=$(cpu_ticks "$server_pid")
    rc=0
    "${bench_pin[@]}" "$build/herd-bench" --target "127.0.0.1:$port" \
      --connections "$connections" --depth "$depth" --duration "$duration" \
      --warmup "$warmup" "${extra[@]}" >"$tmp/out" 2>"$tmp/err" || rc=$?
    after=$(cpu_ticks "$server_pid")
    stop_server
    rm -rf "$tmp/logs-$server"
    if [[ $rc != 0 ]]; then
      failed=1
      echo "bench: herd-bench exited with $rc for $server, depth $depth:" >&2
      head -c 2000 "$tmp/err" >&2
    fi
    result=$(sed -n 's/^RESULT //p' "$tmp/out")
    if [[ -z $result ]]; then
      failed=1
      echo "bench: no RESULT line for $server, depth $depth" >&2
      continue
    fi
    file=$results/$server-d$depth.json
    python3 - "$result" "$server" "$((after - before))" "$clk_tck" \
      "${bench_pin[*]:-}" "${server_pin[*]:-}" >"$file" <<'PY'
import json, sys, time
r = json.loads(sys.argv[1])
ticks, hz = int(sys.argv[3]), int(sys.argv[4])
r["server"] = sys.argv[2]
r["server_cpu_s"] = ticks / hz
total = r.get("total_requests") or 0
r["server_cpu_us_per_req"] = round(ticks / hz * 1e6 / total, 3) if total else None
r["bench_pinning"] = sys.argv[5]
r["server_pinning"] = sys.argv[6]
r["date"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
print(json.dumps(r))
PY
    rows+=("$file")
  done
done

python3 - "$results/summary.json" "${rows[@]}" <<'PY'
import json, sys
runs = [json.load(open(f)) for f in sys.argv[2:]]
json.dump(runs, open(sys.argv[1], "w"), indent=1)
print()
print("%-9s %5s %12s %10s %10s %10s %7s %12s" % (
    "server", "depth", "req/s", "p50 us", "p99 us", "p99.9 us", "errors",
    "cpu us/req"))
for r in runs:
    cpu = r["server_cpu_us_per_req"]
    print("%-9s %5d %12.0f %10.1f %10.1f %10.1f %7d %12s" % (
        r["server"], r["depth"], r["throughput"], r["p50_us"], r["p99_us"],
        r["p999_us"], r["errors"], "-" if cpu is None else "%.2f" % cpu))
print()
print("%d connections; node = one-server herd; epoll = epoll-reference "
      "(replies counted, not validated); cpu = server utime+stime per reply"
      % runs[0]["connections"] if runs else "no runs")
PY
exit "$failed"
