#!/usr/bin/env bash
# Builds everything (scripts/setup.sh), then runs the benchmarks that
# docs/benchmarks.md reports, on loopback. Sections (SECTIONS, default all,
# in this order):
#
#   iamat    IAMAT throughput, latency and server CPU time per request of
#            five servers at each depth of DEPTHS over CONNECTIONS
#            connections:
#              node      herd-node as a one-server herd, "log_messages": false
#              node-log  the same with "log_messages": true
#              node-iothread  node with "io_threads": 1 (sockets on a thread
#                        of their own, the layout before io_threads 0)
#              epoll     epoll-reference, the machine's ceiling (replies not
#                        validated)
#              asyncio   bench/asyncio_herd.py, stdlib asyncio
#            -> bench/results/<server>-d<depth>.json
#   sweep    throughput against requests in flight per connection: node
#            (log off), epoll and asyncio at each depth of SWEEP_DEPTHS,
#            shorter runs -> bench/results/sweep-<server>-d<depth>.json and
#            the plot docs/bench-throughput.png (scripts/plot_bench.py)
#   pairs    the depth-1 bar on PAIR_ROUNDS alternating pairs: epoll and node
#            (log off) one after the other under the same herd-bench command
#            (CONNECTIONS connections, depth 1, DURATION s after 1 s), each
#            round's node share of throughput and CPU per reply, and their
#            medians: one run's ratio moves with the machine's load, the
#            median of pairs much less (scripts/ab.sh does the rounds)
#            -> bench/results/pairs-d1.json
#   whatsat  WHATSAT through the node to places-stub (20 results a page,
#            about 37 KB a body): herd-bench with WHATSAT_CONNECTIONS
#            connections, bound 5; then the stub alone under wrk at the same
#            concurrency and the URL the node asks for. What the node adds =
#            node WHATSAT p50/p99 - stub-alone p50/p99.
#            Pinning: the node on SERVER_CPU; places-stub and herd-bench on
#            BENCH_CPU; for the stub-alone run wrk takes the node's core, so
#            the stub's own figures are its best case and the difference an
#            upper bound. The node's busiest metrics second (its own view
#            of the upstream latency) is kept too, and places-cut-bench's
#            cost of cutting one such body against a Boost.JSON parse and
#            serialize of it (on the node's core).
#            -> bench/results/whatsat.json (+ whatsat-wrk.txt, wrk's output)
#   flood    the five-server herd of config/herd.json on free ports
#            (FLOOD_NODE_THREADS scheduler threads each, nothing pinned,
#            peer secret set, Places endpoint a closed port): FLOOD_SAMPLES
#            propagation samples every FLOOD_INTERVAL_MS (an IAMAT to
#            FLOOD_ORIGIN until the other four answer WHATSAT with it), once
#            on an idle herd and once under a background load of FLOOD_RATE
#            IAMAT/s (herd-bench --rate over FLOOD_CONNECTIONS connections
#            spread over all five, at most 16 in flight per connection; the
#            samples start after its 1 s warm-up). The achieved rate and
#            every node's busiest metrics second are kept.
#            -> bench/results/flood-idle.json, flood-load.json
#   scaling  node IAMAT throughput at depth 16 with --threads of
#            SCALING_THREADS over SCALING_CONNECTIONS connections, with the
#            node's busiest metrics line (metrics_interval_s 1: busy_ms per
#            actor kind; util = their sum / (1 s x threads)) and each of its
#            threads' share of a core over the run, so the limit can be read
#            off. By default node and herd-bench are unpinned (on 2 cores
#            they share both). On a larger machine, SCALING_NODE_CPUS (a
#            list such as 0-7) pins a node of t threads to the first t CPUs
#            of the list and SCALING_BENCH_CPUS pins herd-bench (give it
#            BENCH_THREADS threads); epoll-reference then runs once on the
#            first node CPU as the one-core ceiling
#            -> bench/results/scaling-t<n>.json (+ scaling-epoll.json)
#   memory   bench/memory.py (on BENCH_CPU; the server on SERVER_CPU, a fresh
#            one per measurement): RSS per idle connection (MEMORY_IDLE of
#            them; then again after one IAMAT each) and per stored client
#            (MEMORY_CLIENTS) of the node, and per idle connection of asyncio
#            -> bench/results/memory-<server>-<what>.json
#
# herd-bench runs on core BENCH_CPU and the server on core SERVER_CPU
# (taskset; nothing is pinned on a one-core machine) unless a section says
# otherwise. The server's CPU time per request is its utime+stime from
# /proc/<pid>/stat, read just before and just after the herd-bench run,
# divided by every reply of the run (warm-up and drain included).
#
# Writes bench/results/machine.json (the machine), one JSON file per run, and
# bench/results/summary.json (every section that ran), and prints a summary
# table. Exit status 1 when a run failed or had errors.
#
# Settings (environment), with defaults:
#   SECTIONS ("iamat sweep whatsat flood scaling memory")
#   DURATION (5) and WARMUP (2): seconds per run of iamat, whatsat, scaling
#   CONNECTIONS (64), DEPTHS ("1 16"),
#   SERVERS ("node node-log node-iothread epoll asyncio")
#   NODE_THREADS (1: the node gets one core, so one scheduler thread)
#   NODE_SHARDS (unset: the config's registry_shards)
#   NODE_REGISTRY_BACKLOG (unset: the config's limits.max_registry_backlog)
#   NODE_PRELOAD (unset): a library the iamat, sweep and scaling nodes run
#     with in LD_PRELOAD, such as another malloc (libtcmalloc_minimal.so.4)
#   SWEEP_DEPTHS ("1 2 4 8 16 32"), SWEEP_SERVERS ("node epoll asyncio"),
#   SWEEP_DURATION (3), SWEEP_WARMUP (1), PAIR_ROUNDS (10)
#   WHATSAT_CONNECTIONS (32), STUB_RESULTS (20), STUB_THREADS (1): the
#     stand-in's I/O threads (it runs with herd-bench, on BENCH_CPU)
#   FLOOD_RATE (20000), FLOOD_SAMPLES (200), FLOOD_INTERVAL_MS (20),
#   FLOOD_ORIGIN (Clark), FLOOD_CONNECTIONS (20), FLOOD_NODE_THREADS (1)
#   SCALING_THREADS ("1 2 4"), SCALING_CONNECTIONS (CONNECTIONS),
#   SCALING_NODE_CPUS and SCALING_BENCH_CPUS (unset: unpinned)
#   BENCH_THREADS (1): herd-bench's event-loop threads in every load run
#   RESULTS_DIR (bench/results): where the JSON files go
#   MEMORY_IDLE (10000), MEMORY_CLIENTS (1000000)
#   BENCH_CPU (0), SERVER_CPU (1), BUILD_DIR (build), SKIP_BUILD=1 to skip
#   scripts/setup.sh, NO_PLOT=1 to skip the plot.
# wrk (whatsat) and python3-matplotlib (the plot) are installed with apt-get
# when missing. The defaults take about 6 minutes after the build (iamat 1,
# sweep 1.5, pairs 2.2, whatsat 0.25, flood 0.3, scaling 0.4, memory 0.3).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

all_sections="iamat sweep pairs whatsat flood scaling memory"
sections=${SECTIONS:-$all_sections}
duration=${DURATION:-5}
warmup=${WARMUP:-2}
connections=${CONNECTIONS:-64}
depths=${DEPTHS:-1 16}
servers=${SERVERS:-node node-log node-iothread epoll asyncio}
node_threads=${NODE_THREADS:-1}
sweep_depths=${SWEEP_DEPTHS:-1 2 4 8 16 32}
sweep_servers=${SWEEP_SERVERS:-node epoll asyncio}
sweep_duration=${SWEEP_DURATION:-3}
sweep_warmup=${SWEEP_WARMUP:-1}
pair_rounds=${PAIR_ROUNDS:-10}
whatsat_connections=${WHATSAT_CONNECTIONS:-32}
stub_results=${STUB_RESULTS:-20}
stub_threads=${STUB_THREADS:-1}
flood_rate=${FLOOD_RATE:-20000}
flood_samples=${FLOOD_SAMPLES:-200}
flood_interval=${FLOOD_INTERVAL_MS:-20}
flood_origin=${FLOOD_ORIGIN:-Clark}
flood_connections=${FLOOD_CONNECTIONS:-20}
flood_node_threads=${FLOOD_NODE_THREADS:-1}
scaling_threads=${SCALING_THREADS:-1 2 4}
scaling_connections=${SCALING_CONNECTIONS:-$connections}
scaling_node_cpus=${SCALING_NODE_CPUS:-}
scaling_bench_cpus=${SCALING_BENCH_CPUS:-}
bench_threads=${BENCH_THREADS:-1}
node_env=()
[[ -n ${NODE_PRELOAD:-} ]] && node_env=(env "LD_PRELOAD=$NODE_PRELOAD")
memory_idle=${MEMORY_IDLE:-10000}
memory_clients=${MEMORY_CLIENTS:-1000000}
bench_cpu=${BENCH_CPU:-0}
server_cpu=${SERVER_CPU:-1}
build=${BUILD_DIR:-build}
results=${RESULTS_DIR:-bench/results}

for s in $sections; do
  [[ " $all_sections " == *" $s "* ]] ||
    { echo "bench: unknown section \"$s\" ($all_sections)" >&2; exit 2; }
done
want() { [[ " $sections " == *" $1 "* ]]; }

[[ ${SKIP_BUILD:-0} == 1 ]] || scripts/setup.sh
for bin in herd-node herd-bench epoll-reference places-stub places-cut-bench; do
  [[ -x $build/$bin ]] || { echo "bench: $build/$bin is missing" >&2; exit 1; }
done

pin_ok=0
if (($(nproc) >= 2)) && command -v taskset >/dev/null; then
  pin_ok=1
else
  echo "bench: fewer than 2 cores (or no taskset): not pinning" >&2
fi
# pin CPU: the taskset prefix for core CPU, or nothing.
pin() {
  if ((pin_ok)); then echo "taskset -c $1"; fi
}
clk_tck=$(getconf CLK_TCK)
# memory opens 10,000 connections per process.
ulimit -Sn "$(ulimit -Hn)" 2>/dev/null || true

sudo_cmd=()
[[ $(id -u) -eq 0 ]] || sudo_cmd=(sudo)
# apt_ensure PACKAGE: installs a Debian package when it is missing.
apt_ensure() {
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed" &&
    return 0
  echo "bench: installing $1" >&2
  export DEBIAN_FRONTEND=noninteractive
  "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "$1" \
    >>"$tmp/apt.log" 2>&1 ||
    { "${sudo_cmd[@]}" apt-get update -qq >>"$tmp/apt.log" 2>&1 &&
      "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "$1" \
        >>"$tmp/apt.log" 2>&1; } ||
    { tail -n 20 "$tmp/apt.log" >&2; return 1; }
}

tmp=$(mktemp -d /tmp/herd-bench.XXXXXX)
# Every background process this script starts, so that it can stop them.
pids=()
# stop_pid PID: SIGTERM, up to 5 s, then SIGKILL.
stop_pid() {
  local pid=$1 rest=() p
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 50); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  for p in "${pids[@]}"; do [[ $p == "$pid" ]] || rest+=("$p"); done
  pids=("${rest[@]}")
}
# shellcheck disable=SC2317 # (the EXIT trap)
cleanup() {
  local p
  for p in "${pids[@]}"; do stop_pid "$p"; done
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start_bg OUTFILE CMD...: runs CMD in the background; sets bg_pid.
start_bg() {
  local out=$1
  shift
  "$@" >"$out" 2>&1 &
  bg_pid=$!
  pids+=("$bg_pid")
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

# "TID TICKS COMM" per thread of process $1 (utime + stime in clock ticks).
thread_ticks() {
  local t stat rest comm
  for t in /proc/"$1"/task/*; do
    stat=$(<"$t/stat") 2>/dev/null || continue
    rest=${stat##*) }
    read -ra f <<<"$rest"
    comm=${stat#*(}
    echo "${t##*/} $((f[11] + f[12])) ${comm%)*}"
  done
}

# node_config OUT PORTS LOG METRICS_S ENDPOINT: config/herd.json with the
# servers on PORTS (comma-separated; one port: Clark alone, no links),
# "log_messages" LOG, "metrics_interval_s" METRICS_S and the Places endpoint
# ENDPOINT ("-": unchanged).
node_config() {
  python3 - config/herd.json "$@" <<'PY'
import json, os, sys
src, out, ports, log, metrics, endpoint = sys.argv[1:7]
cfg = json.load(open(src))
ports = [int(p) for p in ports.split(",")]
names = list(cfg["servers"])
if len(ports) == 1:
    name = "Clark" if "Clark" in names else names[0]
    cfg["servers"] = {name: {"host": "127.0.0.1", "port": ports[0]}}
    cfg["links"] = []
else:
    assert len(ports) == len(names), "one port per server"
    cfg["servers"] = {n: {"host": "127.0.0.1", "port": p}
                      for n, p in zip(names, ports)}
cfg["log_messages"] = log == "true"
if os.environ.get("NODE_SHARDS"):
    cfg["registry_shards"] = int(os.environ["NODE_SHARDS"])
if os.environ.get("NODE_REGISTRY_BACKLOG"):
    cfg.setdefault("limits", {})["max_registry_backlog"] = int(
        os.environ["NODE_REGISTRY_BACKLOG"])
cfg["metrics_interval_s"] = int(metrics)
if endpoint != "-":
    cfg.setdefault("places", {})["endpoint"] = endpoint
    cfg["places"]["timeout_ms"] = 5000
json.dump(cfg, open(out, "w"), indent=2)
PY
}

# The busiest metrics line (highest in_per_s) of a node's log, or null;
# with "last" as $2, the last one (cumulative counters at the end).
busiest_metrics() {
  python3 - "$1" "${2:-busiest}" <<'PY'
import json, sys
best = None
last = sys.argv[2] == "last"
try:
    for line in open(sys.argv[1], errors="replace"):
        i = line.find('{"metrics"')
        if i < 0:
            continue
        try:
            m = json.loads(line[i:])["metrics"]
        except ValueError:
            continue
        if (best is None or last
                or m.get("in_per_s", 0) > best.get("in_per_s", 0)):
            best = m
except OSError:
    pass
print(json.dumps(best))
PY
}

# start_server KIND SERVER_PIN [METRICS_S]: starts server KIND (node
# node-log epoll asyncio) in the background; sets server_pid, port and
# server_log (the node's log file).
server_pid=
start_server() {
  local kind=$1 spin=$2 metrics=${3:-0}
  local -a p
  read -ra p <<<"$spin"
  case $kind in
  node | node-log | node-iothread)
    port=$(free_port)
    local logs=false io_threads=0
    [[ $kind == node-log ]] && logs=true
    [[ $kind == node-iothread ]] && io_threads=1
    rm -rf "$tmp/logs-$kind"
    mkdir -p "$tmp/logs-$kind"
    node_config "$tmp/$kind.json" "$port" "$logs" "$metrics" -
    server_log=$tmp/logs-$kind/Clark.log
    start_bg "$tmp/$kind.out" "${p[@]}" "${node_env[@]}" "$build/herd-node" Clark \
      --config "$tmp/$kind.json" --log-dir "$tmp/logs-$kind" \
      --threads "$node_threads" --io-threads "$io_threads"
    server_pid=$bg_pid
    wait_port "$port" || { echo "bench: herd-node did not start:" >&2; cat "$tmp/$kind.out" >&2; exit 1; }
    ;;
  epoll)
    start_bg "$tmp/$kind.out" "${p[@]}" "$build/epoll-reference" --port 0
    server_pid=$bg_pid
    port=$(port_from "$tmp/$kind.out") || { echo "bench: $kind did not start:" >&2; cat "$tmp/$kind.out" >&2; exit 1; }
    ;;
  asyncio)
    start_bg "$tmp/$kind.out" "${p[@]}" python3 bench/asyncio_herd.py \
      --port 0 --name Ref
    server_pid=$bg_pid
    port=$(port_from "$tmp/$kind.out") || { echo "bench: $kind did not start:" >&2; cat "$tmp/$kind.out" >&2; exit 1; }
    ;;
  *)
    echo "bench: unknown server \"$kind\" (node node-log node-iothread epoll asyncio)" >&2
    exit 2
    ;;
  esac
}

failed=0
# bench_failed WHAT RC ERRFILE: records and shows a failed run.
bench_failed() {
  failed=1
  echo "bench: $1 failed (exit status $2):" >&2
  [[ -f $3 ]] && head -c 2000 "$3" >&2
  return 0
}

# load_run SECTION KIND DEPTH DURATION WARMUP FILE SERVER_PIN BENCH_PIN
#          [METRICS_S]: one herd-bench load run of KIND at DEPTH over
# CONNECTIONS connections; writes FILE (the RESULT line, the server's CPU
# time, the pinning and, with METRICS_S, the node's busiest metrics line)
# and lists it under SECTION.
load_run() {
  local section=$1 kind=$2 depth=$3 dur=$4 warm=$5 file=$6 spin=$7 bpin=$8
  local metrics=${9:-0}
  local -a b extra=()
  read -ra b <<<"$bpin"
  [[ $kind == epoll ]] && extra=(--no-validate)
  start_server "$kind" "$spin" "$metrics"
  echo "bench: $section: $kind, depth $depth, $connections connections," \
    "${warm} s + ${dur} s" >&2
  local before after rc=0 t0 t1 threads_before='' threads_after=''
  [[ $metrics != 0 ]] && threads_before=$(thread_ticks "$server_pid")
  t0=$(date +%s.%N)
  before=$(cpu_ticks "$server_pid")
  "${b[@]}" "$build/herd-bench" --target "127.0.0.1:$port" \
    --connections "$connections" --depth "$depth" --duration "$dur" \
    --warmup "$warm" --threads "$bench_threads" "${extra[@]}" \
    >"$tmp/out" 2>"$tmp/err" || rc=$?
  after=$(cpu_ticks "$server_pid")
  t1=$(date +%s.%N)
  [[ $metrics != 0 ]] && threads_after=$(thread_ticks "$server_pid")
  stop_server_now
  local m=null
  [[ $metrics != 0 ]] && m=$(busiest_metrics "$server_log")
  [[ $rc == 0 ]] || bench_failed "herd-bench for $kind, depth $depth" "$rc" "$tmp/err"
  local result
  result=$(sed -n 's/^RESULT //p' "$tmp/out")
  if [[ -z $result ]]; then
    failed=1
    echo "bench: no RESULT line for $kind, depth $depth" >&2
    return 0
  fi
  python3 - "$result" "$kind" "$((after - before))" "$clk_tck" "$bpin" \
    "$spin" "$node_threads" "$m" "$threads_before" "$threads_after" \
    "$(python3 -c 'import sys; print(float(sys.argv[2]) - float(sys.argv[1]))' "$t0" "$t1")" \
    >"$file" <<'PY'
import json, sys, time
r = json.loads(sys.argv[1])
ticks, hz = int(sys.argv[3]), int(sys.argv[4])
r["server"] = sys.argv[2]
r["server_cpu_s"] = ticks / hz
total = r.get("total_requests") or 0
r["server_cpu_us_per_req"] = round(ticks / hz * 1e6 / total, 3) if total else None
r["bench_pinning"] = sys.argv[5] or "unpinned"
r["server_pinning"] = sys.argv[6] or "unpinned"
if r["server"].startswith("node"):
    r["node_threads"] = int(sys.argv[7])
m = json.loads(sys.argv[8])
if m is not None:
    r["metrics"] = m
    busy = {k: a.get("busy_ms", 0) for k, a in m.get("actors", {}).items()}
    r["busy_ms"] = busy
    denom = m.get("interval_s", 0) * 1000 * int(sys.argv[7])
    r["scheduler_utilization"] = (round(sum(busy.values()) / denom, 3)
                                  if denom else None)
if sys.argv[9] and sys.argv[10]:
    # Each thread's share of one core over the run, busiest first.
    def parse(text):
        out = {}
        for line in text.splitlines():
            tid, ticks, comm = line.split(" ", 2)
            out[tid] = (int(ticks), comm)
        return out
    b, a, secs = parse(sys.argv[9]), parse(sys.argv[10]), float(sys.argv[11])
    shares = sorted(((a[t][0] - b.get(t, (0, ""))[0]) / hz / secs, a[t][1])
                    for t in a)
    r["thread_core_shares"] = [{"thread": c, "core_share": round(x, 2)}
                               for x, c in reversed(shares)]
r["date"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
print(json.dumps(r))
PY
  echo "$file" >>"$tmp/list-$section"
}

stop_server_now() {
  [[ -n $server_pid ]] && stop_pid "$server_pid"
  server_pid=
}

mkdir -p "$results"
python3 - >"$results/machine.json" <<'PY'
import json, os, platform
cpu = "unknown"
try:
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
except OSError:
    pass
mem = 0
try:
    for line in open("/proc/meminfo"):
        if line.startswith("MemTotal:"):
            mem = int(line.split()[1]) / 1024 / 1024
except OSError:
    pass
osname = ""
try:
    for line in open("/etc/os-release"):
        if line.startswith("PRETTY_NAME="):
            osname = line.split("=", 1)[1].strip().strip('"')
except OSError:
    pass
print(json.dumps({"cpu": cpu, "cores": os.cpu_count(),
                  "memory_gib": round(mem, 1), "kernel": platform.release(),
                  "os": osname}))
PY

# -- iamat --------------------------------------------------------------------
if want iamat; then
  for server in $servers; do
    for depth in $depths; do
      load_run iamat "$server" "$depth" "$duration" "$warmup" \
        "$results/$server-d$depth.json" "$(pin "$server_cpu")" \
        "$(pin "$bench_cpu")"
    done
  done
fi

# -- sweep --------------------------------------------------------------------
if want sweep; then
  rm -f "$results"/sweep-*.json
  for server in $sweep_servers; do
    for depth in $sweep_depths; do
      load_run sweep "$server" "$depth" "$sweep_duration" "$sweep_warmup" \
        "$results/sweep-$server-d$depth.json" "$(pin "$server_cpu")" \
        "$(pin "$bench_cpu")"
    done
  done
fi

# -- pairs --------------------------------------------------------------------
if want pairs; then
  rm -f "$results/pairs-d1.json"
  echo "bench: pairs: epoll and node alternating, depth 1, $pair_rounds rounds" >&2
  rc=0
  ROUNDS=$pair_rounds DURATION=$duration WARMUP=1 LOG=false THREADS=$node_threads \
    BUILD_DIR=$build SERVER_CPU=$server_cpu BENCH_CPU=$bench_cpu \
    AB_JSON="$results/pairs-d1.json" \
    scripts/ab.sh epoll "$build/herd-node" -- --connections "$connections" \
    --depth 1 >"$tmp/pairs.out" 2>&1 || rc=$?
  if [[ $rc == 0 && -s $results/pairs-d1.json ]]; then
    echo "$results/pairs-d1.json" >>"$tmp/list-pairs"
  else
    bench_failed "pairs (scripts/ab.sh)" "$rc" "$tmp/pairs.out"
  fi
fi

# -- whatsat ------------------------------------------------------------------
if want whatsat; then
  read -ra spin <<<"$(pin "$server_cpu")"
  read -ra bpin <<<"$(pin "$bench_cpu")"
  stub_url_path=/maps/api/place/nearbysearch/json
  rm -f "$tmp/stub.port"
  start_bg "$tmp/stub.out" "${bpin[@]}" "$build/places-stub" --port 0 \
    --port-file "$tmp/stub.port" --results "$stub_results" \
    --threads "$stub_threads"
  stub_pid=$bg_pid
  for _ in $(seq 200); do [[ -s $tmp/stub.port ]] && break; sleep 0.05; done
  [[ -s $tmp/stub.port ]] || { echo "bench: places-stub did not start:" >&2; cat "$tmp/stub.out" >&2; exit 1; }
  stub_port=$(<"$tmp/stub.port")
  port=$(free_port)
  rm -rf "$tmp/logs-whatsat"
  mkdir -p "$tmp/logs-whatsat"
  node_config "$tmp/whatsat.json" "$port" false 1 \
    "http://127.0.0.1:$stub_port$stub_url_path"
  GOOGLE_PLACES_API_KEY=bench-key start_bg "$tmp/whatsat-node.out" \
    "${spin[@]}" "$build/herd-node" Clark --config "$tmp/whatsat.json" \
    --log-dir "$tmp/logs-whatsat" --threads "$node_threads"
  server_pid=$bg_pid
  wait_port "$port" || { echo "bench: herd-node did not start:" >&2; cat "$tmp/whatsat-node.out" >&2; exit 1; }
  echo "bench: whatsat: node -> places-stub, $whatsat_connections" \
    "connections, ${warmup} s + ${duration} s" >&2
  rc=0
  before=$(cpu_ticks "$server_pid")
  "${bpin[@]}" "$build/herd-bench" --target "127.0.0.1:$port" \
    --connections "$whatsat_connections" --mix iamat=0,whatsat=1 --bound 5 \
    --threads "$bench_threads" \
    --duration "$duration" --warmup "$warmup" >"$tmp/out" 2>"$tmp/err" || rc=$?
  after=$(cpu_ticks "$server_pid")
  stop_server_now
  [[ $rc == 0 ]] || bench_failed "herd-bench WHATSAT" "$rc" "$tmp/err"
  node_metrics=$(busiest_metrics "$tmp/logs-whatsat/Clark.log")
  node_metrics_last=$(busiest_metrics "$tmp/logs-whatsat/Clark.log" last)
  node_result=$(sed -n 's/^RESULT //p' "$tmp/out")
  [[ -n $node_result ]] || { failed=1; node_result=null; echo "bench: no RESULT line for WHATSAT" >&2; }

  wrk_url="http://127.0.0.1:$stub_port$stub_url_path?location=34.068930,-118.445127&radius=10000&key=bench-key"
  : >"$results/whatsat-wrk.txt"
  if command -v wrk >/dev/null || apt_ensure wrk; then
    echo "bench: whatsat: places-stub alone under wrk, $whatsat_connections" \
      "connections, ${duration} s" >&2
    rc=0
    "${spin[@]}" wrk -t1 -c"$whatsat_connections" -d"${duration}s" \
      --timeout 10s --latency "$wrk_url" >"$results/whatsat-wrk.txt" \
      2>&1 || rc=$?
    [[ $rc == 0 ]] || bench_failed "wrk" "$rc" "$results/whatsat-wrk.txt"
  else
    failed=1
    echo "bench: wrk could not be installed: no stub-alone figures" >&2
  fi
  # The node's own share of a WHATSAT: cutting one of these bodies, against
  # a Boost.JSON parse + serialize of it (places-cut-bench, on the node's
  # core).
  cut_result=null
  if python3 -c 'import sys, urllib.request; open(sys.argv[2], "wb").write(urllib.request.urlopen(sys.argv[1], timeout=10).read())' \
    "$wrk_url" "$tmp/body.json" 2>"$tmp/err"; then
    echo "bench: whatsat: cutting one body, places-cut-bench" >&2
    rc=0
    "${spin[@]}" "$build/places-cut-bench" "$tmp/body.json" --bound 5 \
      >"$tmp/cut.out" 2>"$tmp/err" || rc=$?
    [[ $rc == 0 ]] || bench_failed "places-cut-bench" "$rc" "$tmp/err"
    cut_result=$(sed -n 's/^RESULT //p' "$tmp/cut.out")
    [[ -n $cut_result ]] || cut_result=null
  else
    bench_failed "fetching a body from places-stub" 1 "$tmp/err"
  fi
  stop_pid "$stub_pid"
  python3 - "$node_result" "$results/whatsat-wrk.txt" "$wrk_url" \
    "$((after - before))" "$clk_tck" "${spin[*]:-unpinned}" \
    "${bpin[*]:-unpinned}" "$whatsat_connections" "$stub_results" \
    "$node_metrics" "$node_metrics_last" "$cut_result" \
    >"$results/whatsat.json" <<'PY'
import json, re, sys, time
node = json.loads(sys.argv[1])
text = open(sys.argv[2], errors="replace").read()
unit = {"us": 1, "ms": 1e3, "s": 1e6, "m": 60e6}

def dur_us(v):
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", v)
    return round(float(m.group(1)) * unit[m.group(2)], 1) if m else None

stub = None
pct = dict(re.findall(r"^\s+(50|75|90|99)%\s+(\S+)\s*$", text, re.M))
rps = re.search(r"^Requests/sec:\s+([\d.]+)", text, re.M)
if pct and rps:
    total = re.search(r"^\s+(\d+) requests in ([\d.]+\w+)", text, re.M)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), "
                     r"timeout (\d+)", text)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    stub = {"tool": "wrk -t1 --latency", "url": sys.argv[3].replace(
                "key=bench-key", "key=REDACTED"),
            "connections": int(sys.argv[8]),
            "throughput": float(rps.group(1)),
            "requests": int(total.group(1)) if total else None,
            "p50_us": dur_us(pct.get("50", "")),
            "p75_us": dur_us(pct.get("75", "")),
            "p90_us": dur_us(pct.get("90", "")),
            "p99_us": dur_us(pct.get("99", "")),
            "errors": (sum(int(x) for x in sock.groups()) if sock else 0)
                      + (int(non2xx.group(1)) if non2xx else 0)}
ticks, hz = int(sys.argv[4]), int(sys.argv[5])
out = {"node": node, "stub_alone": stub,
       "node_pinning": sys.argv[6], "bench_pinning": sys.argv[7],
       "stub_pinning": sys.argv[7], "wrk_pinning": sys.argv[6],
       "stub_results_per_page": int(sys.argv[9]),
       "node_metrics": json.loads(sys.argv[10]),
       "node_metrics_last": json.loads(sys.argv[11]),
       "cut": json.loads(sys.argv[12]),
       "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
if node:
    total = node.get("total_requests") or 0
    node["server_cpu_s"] = ticks / hz
    node["server_cpu_us_per_req"] = (round(ticks / hz * 1e6 / total, 3)
                                     if total else None)
if node and stub and stub["p50_us"] is not None and stub["p99_us"] is not None:
    out["node_adds_p50_us"] = round(node["p50_us"] - stub["p50_us"], 1)
    out["node_adds_p99_us"] = round(node["p99_us"] - stub["p99_us"], 1)
print(json.dumps(out))
PY
  echo "$results/whatsat.json" >>"$tmp/list-whatsat"
fi

# -- flood --------------------------------------------------------------------
if want flood; then
  mapfile -t names < <(python3 -c 'import json; print("\n".join(json.load(open("config/herd.json"))["servers"]))')
  [[ " ${names[*]} " == *" $flood_origin "* ]] ||
    { echo "bench: FLOOD_ORIGIN \"$flood_origin\" is not in config/herd.json" >&2; exit 2; }
  # flood_once TAG RATE: a fresh herd, propagation samples, RATE background
  # IAMAT/s (0: none) -> flood-TAG.json.
  flood_once() {
    local tag=$1 rate=$2 ports=() herd_pids=() i
    for i in "${!names[@]}"; do ports+=("$(free_port)"); done
    local closed
    closed=$(free_port)
    node_config "$tmp/flood.json" "$(IFS=,; echo "${ports[*]}")" false 1 \
      "http://127.0.0.1:$closed/maps/api/place/nearbysearch/json"
    rm -rf "$tmp/logs-flood"
    mkdir -p "$tmp/logs-flood"
    for i in "${!names[@]}"; do
      HERD_PEER_SECRET=bench-secret GOOGLE_PLACES_API_KEY=bench-key \
        start_bg "$tmp/flood-${names[$i]}.out" "$build/herd-node" \
        "${names[$i]}" --config "$tmp/flood.json" --log-dir "$tmp/logs-flood" \
        --threads "$flood_node_threads"
      herd_pids+=("$bg_pid")
    done
    local origin targets=() all=()
    for i in "${!names[@]}"; do
      wait_port "${ports[$i]}" || { echo "bench: ${names[$i]} did not start:" >&2; cat "$tmp/flood-${names[$i]}.out" >&2; exit 1; }
      all+=(--target "127.0.0.1:${ports[$i]}")
      if [[ ${names[$i]} == "$flood_origin" ]]; then
        origin=127.0.0.1:${ports[$i]}
      else
        targets+=(--target "127.0.0.1:${ports[$i]}")
      fi
    done
    # The links are up once one sample goes all the way (3 tries, 5 s each).
    local ready=0
    for _ in 1 2 3; do
      if "$build/herd-bench" --propagation --origin "$origin" "${targets[@]}" \
        --samples 1 >/dev/null 2>&1; then
        ready=1
        break
      fi
    done
    ((ready)) || echo "bench: flood: the herd did not connect within 15 s" >&2
    local load_pid='' lrc=0 prc=0
    if ((rate > 0)); then
      # Long enough to cover every sample; the propagation run starts after
      # the warm-up second.
      local load_s=$(((flood_samples * flood_interval + 999) / 1000 + 2))
      echo "bench: flood: $rate IAMAT/s over ${#names[@]} servers," \
        "$flood_connections connections, 1 s + $load_s s" >&2
      start_bg "$tmp/flood-load.out" "$build/herd-bench" "${all[@]}" \
        --connections "$flood_connections" --depth 16 --rate "$rate" \
        --warmup 1 --duration "$load_s"
      load_pid=$bg_pid
      sleep 1.2
    fi
    echo "bench: flood ($tag): $flood_samples samples from $flood_origin," \
      "every $flood_interval ms" >&2
    "$build/herd-bench" --propagation --origin "$origin" "${targets[@]}" \
      --samples "$flood_samples" --interval-ms "$flood_interval" \
      >"$tmp/prop.out" 2>"$tmp/prop.err" || prc=$?
    [[ $prc == 0 ]] || bench_failed "propagation ($tag)" "$prc" "$tmp/prop.err"
    local load_result=null
    if [[ -n $load_pid ]]; then
      wait "$load_pid" || lrc=$?
      local rest=() p
      for p in "${pids[@]}"; do [[ $p == "$load_pid" ]] || rest+=("$p"); done
      pids=("${rest[@]}")
      [[ $lrc == 0 ]] || bench_failed "background load" "$lrc" "$tmp/flood-load.out"
      load_result=$(sed -n 's/^RESULT //p' "$tmp/flood-load.out")
      [[ -n $load_result ]] || { failed=1; load_result=null; }
    fi
    kill -TERM "${herd_pids[@]}" 2>/dev/null || true
    for i in "${!herd_pids[@]}"; do stop_pid "${herd_pids[$i]}"; done
    local metrics=()
    for i in "${!names[@]}"; do
      metrics+=("$(busiest_metrics "$tmp/logs-flood/${names[$i]}.log")")
    done
    local prop
    prop=$(sed -n 's/^RESULT //p' "$tmp/prop.out")
    [[ -n $prop ]] || { failed=1; prop=null; }
    python3 - "$tag" "$rate" "$flood_origin" "$prop" "$load_result" \
      "${metrics[@]}" >"$results/flood-$tag.json" <<'PY'
import json, sys, time
tag, rate, origin, prop, load = sys.argv[1:6]
print(json.dumps({
    "case": tag, "background_rate": int(rate), "origin": origin,
    "propagation": json.loads(prop), "background_load": json.loads(load),
    "busiest_metrics": [json.loads(m) for m in sys.argv[6:]],
    "pinning": "unpinned", "date": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                 time.gmtime())}))
PY
    echo "$results/flood-$tag.json" >>"$tmp/list-flood"
  }
  flood_once idle 0
  flood_once load "$flood_rate"
fi

# -- scaling ------------------------------------------------------------------
if want scaling; then
  rm -f "$results"/scaling-t*.json "$results"/scaling-epoll.json
  saved_threads=$node_threads saved_connections=$connections
  connections=$scaling_connections
  # first_cpus LIST N: the first N CPUs of a list such as 0-3,8 (as 0,1,2).
  first_cpus() {
    python3 - "$1" "$2" <<'PY'
import sys
cpus = []
for part in sys.argv[1].split(","):
    lo, _, hi = part.partition("-")
    cpus += range(int(lo), int(hi or lo) + 1)
n = int(sys.argv[2])
if n > len(cpus):
    sys.exit("bench: SCALING_NODE_CPUS has fewer than %d CPUs" % n)
print(",".join(map(str, cpus[:n])))
PY
  }
  scaling_bpin=""
  [[ -n $scaling_bench_cpus ]] && scaling_bpin="taskset -c $scaling_bench_cpus"
  for t in $scaling_threads; do
    node_threads=$t
    spin=""
    if [[ -n $scaling_node_cpus ]]; then
      spin="taskset -c $(first_cpus "$scaling_node_cpus" "$t")" || exit 2
    fi
    load_run scaling node 16 "$duration" "$warmup" \
      "$results/scaling-t$t.json" "$spin" "$scaling_bpin" 1
  done
  if [[ -n $scaling_node_cpus ]]; then
    load_run scaling epoll 16 "$duration" "$warmup" \
      "$results/scaling-epoll.json" \
      "taskset -c $(first_cpus "$scaling_node_cpus" 1)" "$scaling_bpin"
  fi
  node_threads=$saved_threads connections=$saved_connections
fi

# -- memory -------------------------------------------------------------------
if want memory; then
  read -ra bpin <<<"$(pin "$bench_cpu")"
  # memory_run KIND WHAT MEMORY_ARGS...: a fresh server, bench/memory.py.
  memory_run() {
    local kind=$1 what=$2 rc=0
    shift 2
    start_server "$kind" "$(pin "$server_cpu")"
    echo "bench: memory: $kind, $what" >&2
    "${bpin[@]}" python3 bench/memory.py --port "$port" --pid "$server_pid" \
      --name "$kind" "$@" >"$tmp/mem.out" 2>"$tmp/mem.err" || rc=$?
    stop_server_now
    [[ $rc == 0 ]] || { bench_failed "memory.py ($kind, $what)" "$rc" "$tmp/mem.err"; return 0; }
    local r
    r=$(sed -n 's/^RESULT //p' "$tmp/mem.out")
    [[ -n $r ]] || { failed=1; return 0; }
    python3 -c 'import json, sys; r = json.loads(sys.argv[1]); r["what"] = sys.argv[2]; print(json.dumps(r))' \
      "$r" "$what" >"$results/memory-$kind-$what.json"
    echo "$results/memory-$kind-$what.json" >>"$tmp/list-memory"
  }
  rm -f "$results"/memory-*.json
  memory_run node idle --idle "$memory_idle"
  memory_run node hello --idle "$memory_idle" --hello
  memory_run node clients --idle 0 --clients "$memory_clients"
  memory_run asyncio idle --idle "$memory_idle"
fi

# -- plot ---------------------------------------------------------------------
if want sweep && [[ ${NO_PLOT:-0} != 1 ]] && [[ -s $tmp/list-sweep ]]; then
  if apt_ensure python3-matplotlib; then
    # The Debian package is for the system interpreter.
    plot_py=python3
    python3 -c 'import matplotlib' 2>/dev/null || plot_py=/usr/bin/python3
    "$plot_py" scripts/plot_bench.py --results "$results" \
      --out docs/bench-throughput.png || { failed=1; echo "bench: plot failed" >&2; }
  else
    failed=1
    echo "bench: python3-matplotlib could not be installed: no plot" >&2
  fi
fi

# -- summary ------------------------------------------------------------------
python3 - "$results/summary.json" "$results/machine.json" "$tmp" \
  "$all_sections" <<'PY'
import json, os, sys
out, machine_file, tmp, order = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4].split()
machine = json.load(open(machine_file))
summary = {"machine": machine}
for s in order:
    lst = os.path.join(tmp, "list-" + s)
    if os.path.exists(lst):
        summary[s] = [json.load(open(f)) for f in open(lst).read().split()]
json.dump(summary, open(out, "w"), indent=1)

def f(v, fmt="%.1f"):
    return "-" if v is None else fmt % v

print()
print("machine: %s, %d cores, %.0f GiB, %s" % (
    machine["cpu"], machine["cores"], machine["memory_gib"], machine["kernel"]))
for s in ("iamat", "sweep", "scaling"):
    runs = summary.get(s)
    if not runs:
        continue
    print()
    print("%s (IAMAT)" % s)
    print("%-13s %3s %5s %5s %11s %9s %9s %9s %6s %9s %6s" % (
        "server", "thr", "conns", "depth", "req/s", "p50 us", "p99 us",
        "p99.9 us", "errors", "cpu us/r", "util"))
    for r in runs:
        print("%-13s %3s %5d %5d %11.0f %9.1f %9.1f %9.1f %6d %9s %6s" % (
            r["server"], r.get("node_threads", "-"), r["connections"],
            r["depth"], r["throughput"], r["p50_us"], r["p99_us"],
            r["p999_us"], r["errors"], f(r["server_cpu_us_per_req"], "%.2f"),
            f(r.get("scheduler_utilization"), "%.2f")))
    if s == "scaling":
        for r in runs:
            busy = r.get("busy_ms") or {}
            top = sorted(busy.items(), key=lambda kv: -kv[1])[:4]
            print("  threads %s: busiest second busy_ms %s" % (
                r.get("node_threads"),
                ", ".join("%s %.0f" % kv for kv in top) or "-"))
            shares = r.get("thread_core_shares") or []
            print("             thread core shares %s" % (
                ", ".join("%.2f %s" % (t["core_share"], t["thread"])
                          for t in shares[:6]) or "-"))
for p in summary.get("pairs", []):
    ab = p.get("b_over_a") or {}
    tp, cpu = ab.get("throughput") or [], ab.get("cpu_us_per_reply") or []
    if tp:
        print()
        print("pairs (depth 1, epoll then node, %d alternating rounds)" % len(tp))
        print("  node / epoll throughput: median %.2f (%.2f-%.2f); "
              "CPU per reply: median %.2f (%.2f-%.2f)" % (
                  ab["median_throughput"], min(tp), max(tp),
                  ab["median_cpu_us_per_reply"], min(cpu), max(cpu)))
        m = p["medians"]
        print("  medians: epoll %.0f/s %.2f us, node %.0f/s %.2f us" % (
            m[0]["throughput"], m[0]["cpu_us_per_reply"],
            m[1]["throughput"], m[1]["cpu_us_per_reply"]))
for w in summary.get("whatsat", []):
    print()
    print("whatsat (node %s; stub, herd-bench %s)" % (
        w["node_pinning"], w["bench_pinning"]))
    n, st = w["node"], w["stub_alone"]
    print("%-22s %9s %9s %9s %6s" % ("", "req/s", "p50 us", "p99 us",
                                     "errors"))
    if n:
        print("%-22s %9.0f %9.1f %9.1f %6d" % (
            "node WHATSAT (bound 5)", n["throughput"], n["p50_us"],
            n["p99_us"], n["errors"]))
    if st:
        print("%-22s %9.0f %9s %9s %6d" % (
            "stub alone (wrk)", st["throughput"], f(st["p50_us"]),
            f(st["p99_us"]), st["errors"]))
    if "node_adds_p50_us" in w:
        print("%-22s %9s %9.1f %9.1f" % ("node adds", "",
                                         w["node_adds_p50_us"],
                                         w["node_adds_p99_us"]))
    pl = (w.get("node_metrics") or {}).get("places")
    end = (w.get("node_metrics_last") or {}).get("places") or pl
    if pl:
        print("upstream as the node saw it (busiest second): p50 %.2f ms, "
              "p99 %.2f ms; %d calls, %d errors, %d timeouts by the last line" % (
                  pl["p50_ms"], pl["p99_ms"], end["calls"], end["errors"],
                  end["timeouts"]))
    cut = w.get("cut")
    if cut:
        print("cutting one %d-byte body to bound %d: %.1f us; Boost.JSON "
              "parse + serialize: %.1f us (%.1fx)" % (
                  cut["body_bytes"], cut["bound"], cut["cut_us"],
                  cut["dom_us"], cut["dom_over_cut"]))
fl = summary.get("flood")
if fl:
    print()
    print("flood (propagation to all of the other four)")
    print("%-6s %12s %12s %9s %9s %9s %7s" % (
        "case", "target IAM/s", "sent IAM/s", "p50 us", "p99 us", "max us",
        "errors"))
    for r in fl:
        p, l = r["propagation"] or {}, r["background_load"] or {}
        print("%-6s %12d %12s %9s %9s %9s %7s" % (
            r["case"], r["background_rate"], f(l.get("send_rate"), "%.0f"),
            f(p.get("p50_us")), f(p.get("p99_us")), f(p.get("max_us")),
            p.get("errors", "-")))
mem = summary.get("memory")
if mem:
    print()
    print("memory (RSS growth)")
    for r in mem:
        if "bytes_per_idle_connection" in r:
            print("  %-8s %d idle connections%s: %d bytes each" % (
                r["server"], r["idle_connections"],
                " after one IAMAT each" if r.get("hello") else "",
                r["bytes_per_idle_connection"]))
        if "bytes_per_client" in r:
            print("  %-8s %d stored clients: %d bytes each" % (
                r["server"], r["clients"], r["bytes_per_client"]))
print()
print("node = one-server herd; epoll = epoll-reference (replies counted, not "
      "validated); cpu = server utime+stime per reply; util = busy_ms summed "
      "over actor kinds / (interval x threads), busiest metrics second")
PY
exit "$failed"
