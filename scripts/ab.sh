#!/usr/bin/env bash
# Same-machine A/B of herd-node builds: runs each binary in turn, ROUNDS
# times, under one herd-bench command, and prints per round each binary's
# replies per second (the measured window) and its CPU time per reply
# (utime + stime from /proc over the whole herd-bench run, divided by every
# reply). This is how the before/after comparisons in docs/benchmarks.md
# were measured: build the commit before a change into another directory
# (git worktree add ../before HASH~1 && cmake -S ../before -B ../before/build
# -G Ninja -DCMAKE_BUILD_TYPE=Release && ninja -C ../before/build herd-node),
# then compare the two herd-node binaries.
#
# Usage: scripts/ab.sh NODE_BIN... [-- HERD_BENCH_ARGS...]
#   e.g. scripts/ab.sh ../before/build/herd-node build/herd-node \
#          -- --depth 16 --clients 200000
# The name `epoll` instead of a binary runs the minimal epoll reference
# (BUILD_DIR/epoll-reference; its fixed replies are counted, not validated),
# so `ROUNDS=10 scripts/ab.sh epoll build/herd-node` checks the depth-1 bar
# over ten alternating pairs. After the rounds it prints each one's median,
# and for two, the median over the rounds of B's throughput and CPU time per
# reply as a share of A's.
# Settings (environment), with defaults:
#   ROUNDS (3), LOG (false: the nodes' log_messages), THREADS (1),
#   SERVER_CPU (1) and BENCH_CPU (0) for taskset (nothing pinned on a
#   one-core machine), DURATION (3) and WARMUP (1) seconds,
#   STUB_RESULTS (unset: no places-stub; set, e.g. 20, for a WHATSAT mix:
#   a places-stub with that many results runs on BENCH_CPU),
#   BUILD_DIR (build): where herd-bench and places-stub are,
#   AB_JSON (unset): a file to write the rounds and medians to, as JSON.
# herd-bench's own defaults apply unless the arguments after -- override
# them (64 connections, depth 1, IAMAT only).
# The nodes get a minimal config (one server, no links, metrics off), so an
# older build that lacks a newer config key still starts.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

nodes=()
while (($#)) && [[ $1 != -- ]]; do
  nodes+=("$1")
  shift
done
[[ ${1:-} == -- ]] && shift
bench_args=("$@")
((${#nodes[@]})) || { echo "usage: scripts/ab.sh NODE_BIN... [-- HERD_BENCH_ARGS...]" >&2; exit 2; }
for b in "${nodes[@]}"; do
  [[ $b == epoll || -x $b ]] || { echo "ab: $b is not an executable" >&2; exit 2; }
done

rounds=${ROUNDS:-3}
log=${LOG:-false}
threads=${THREADS:-1}
duration=${DURATION:-3}
warmup=${WARMUP:-1}
build=${BUILD_DIR:-build}
pin_server_and_bench

tmp_dir_and_pids

endpoint=
if [[ -n ${STUB_RESULTS:-} ]]; then
  "${bpin[@]}" "$build/places-stub" --port 0 --port-file "$tmp/stub.port" \
    --results "$STUB_RESULTS" >"$tmp/stub.out" 2>&1 &
  pids+=($!)
  for _ in $(seq 200); do [[ -s $tmp/stub.port ]] && break; sleep 0.05; done
  [[ -s $tmp/stub.port ]] || { echo "ab: places-stub did not start" >&2; exit 1; }
  endpoint="http://127.0.0.1:$(<"$tmp/stub.port")/maps/api/place/nearbysearch/json"
fi

clk_tck=$(getconf CLK_TCK)
for r in $(seq "$rounds"); do
  line="round $r:"
  for i in "${!nodes[@]}"; do
    port=$(free_port)
    python3 - "$tmp/c.json" "$port" "$log" "$endpoint" <<'PY'
import json, sys
out, port, log, endpoint = sys.argv[1:5]
cfg = {"servers": {"Clark": {"host": "127.0.0.1", "port": int(port)}},
       "links": [], "log_messages": log == "true", "metrics_interval_s": 0}
if endpoint:
    cfg["places"] = {"endpoint": endpoint}
json.dump(cfg, open(out, "w"))
PY
    rm -rf "$tmp/logs"
    extra=()
    if [[ ${nodes[$i]} == epoll ]]; then
      "${spin[@]}" "$build/epoll-reference" --port "$port" >"$tmp/node.out" 2>&1 &
      extra=(--no-validate)
    else
      GOOGLE_PLACES_API_KEY=${GOOGLE_PLACES_API_KEY:-ab-key} "${spin[@]}" \
        "${nodes[$i]}" Clark --config "$tmp/c.json" --log-dir "$tmp/logs" \
        --threads "$threads" >"$tmp/node.out" 2>&1 &
    fi
    node=$!
    pids+=("$node")
    wait_port "$port" || { echo "ab: ${nodes[$i]} did not start:" >&2; cat "$tmp/node.out" >&2; exit 1; }
    before=$(cpu_ticks "$node")
    rc=0
    "${bpin[@]}" "$build/herd-bench" --target "127.0.0.1:$port" \
      --duration "$duration" --warmup "$warmup" "${extra[@]}" "${bench_args[@]}" \
      >"$tmp/bench.out" 2>"$tmp/bench.err" || rc=$?
    after=$(cpu_ticks "$node")
    kill "$node"
    wait "$node" 2>/dev/null || true
    [[ $rc == 0 ]] || { echo "ab: herd-bench failed ($rc) against ${nodes[$i]}:" >&2; cat "$tmp/bench.err" >&2; exit 1; }
    line+=$(python3 - "$tmp/bench.out" "$before" "$after" "$clk_tck" "$i" "$r" "$tmp/rounds" <<'PY'
import json, sys
path, before, after, tck, i, r, table = sys.argv[1:8]
res = None
for l in open(path):
    if l.startswith("RESULT "):
        res = json.loads(l[7:])
cpu_us = (int(after) - int(before)) / int(tck) * 1e6 / res["total_requests"]
with open(table, "a") as t:
    t.write("%s %s %f %f\n" % (r, i, res["throughput"], cpu_us))
print(" %s: %.0f/s %.2f us" % ("AB"[int(i)] if int(i) < 2 else i,
                                 res["throughput"], cpu_us), end="")
PY
)
  done
  echo "$line"
done
echo "binaries: $(for i in "${!nodes[@]}"; do printf '%s=%s ' "$(python3 -c "print('AB'[$i] if $i < 2 else $i)")" "${nodes[$i]}"; done)"
python3 - "$tmp/rounds" "${AB_JSON:-}" "${nodes[@]}" -- "${bench_args[@]}" <<'PY'
import json, statistics, sys, time
rows = [l.split() for l in open(sys.argv[1])]
out_file = sys.argv[2]
rest = sys.argv[3:]
names = rest[:rest.index("--")]
args = rest[rest.index("--") + 1:]
runs = {}
for r, i, tp, cpu in rows:
    runs.setdefault(int(i), {})[int(r)] = (float(tp), float(cpu))
name = lambda i: "AB"[i] if i < 2 else str(i)
for i in sorted(runs):
    v = runs[i].values()
    print("median %s: %.0f/s %.2f us" % (name(i), statistics.median(t for t, _ in v),
                                         statistics.median(c for _, c in v)))
report = {"binaries": names, "herd_bench_args": args,
          "rounds": [[{"throughput": runs[i][r][0], "cpu_us_per_reply": runs[i][r][1]}
                      for i in sorted(runs)] for r in sorted(runs[0])],
          "medians": [{"throughput": statistics.median(t for t, _ in runs[i].values()),
                       "cpu_us_per_reply": statistics.median(c for _, c in runs[i].values())}
                      for i in sorted(runs)],
          "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
if len(runs) == 2:
    a, b = runs[0], runs[1]
    tp = [b[r][0] / a[r][0] for r in a if r in b]
    cpu = [b[r][1] / a[r][1] for r in a if r in b]
    print("B against A, round by round: throughput %s (median %.2f), "
          "CPU per reply %s (median %.2f)" % (
              " ".join("%.2f" % x for x in tp), statistics.median(tp),
              " ".join("%.2f" % x for x in cpu), statistics.median(cpu)))
    report["b_over_a"] = {"throughput": tp, "cpu_us_per_reply": cpu,
                          "median_throughput": statistics.median(tp),
                          "median_cpu_us_per_reply": statistics.median(cpu)}
if out_file:
    json.dump(report, open(out_file, "w"), indent=1)
PY
