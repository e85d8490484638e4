#!/usr/bin/env bash
# Where a server's CPU time per request goes, by shared object (the kernel,
# herd-node, libcaf, libc, ...): runs SERVER (node: herd-node as a one-server
# herd with log_messages off, one thread; epoll: epoll-reference) on
# SERVER_CPU under herd-bench on BENCH_CPU, records it with `perf record -p`
# for SECONDS at FREQ samples a second once the load is steady, and divides
# each object's samples (times 1/FREQ) by the replies in that window. This
# is how docs/benchmarks.md splits the depth-1 cost into kernel and user
# time; run it for both servers one after the other.
#
# Usage: scripts/profile.sh node|epoll [SECONDS]
# Settings (environment), with defaults: DEPTH (1), CONNECTIONS (64),
#   FREQ (4000), SERVER_CPU (1), BENCH_CPU (0), BUILD_DIR (build),
#   PERF_DATA (unset: a temporary file; set it to keep the recording).
# Installs linux-perf with apt-get when perf is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

kind=${1:-}
seconds=${2:-2}
[[ $kind == node || $kind == epoll ]] ||
  { echo "usage: scripts/profile.sh node|epoll [SECONDS]" >&2; exit 2; }
depth=${DEPTH:-1}
connections=${CONNECTIONS:-64}
freq=${FREQ:-4000}
build=${BUILD_DIR:-build}
pin_server_and_bench

if ! command -v perf >/dev/null; then
  sudo_cmd=()
  [[ $(id -u) -eq 0 ]] || sudo_cmd=(sudo)
  export DEBIAN_FRONTEND=noninteractive
  "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends linux-perf >/dev/null ||
    { "${sudo_cmd[@]}" apt-get update -qq && \
      "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends linux-perf >/dev/null; }
fi

tmp_dir_and_pids
data=${PERF_DATA:-$tmp/perf.data}

port=$(free_port)
extra=()
if [[ $kind == epoll ]]; then
  "${spin[@]}" "$build/epoll-reference" --port "$port" >"$tmp/server.out" 2>&1 &
  extra=(--no-validate)
else
  python3 - "$tmp/c.json" "$port" <<'PY'
import json, sys
json.dump({"servers": {"Clark": {"host": "127.0.0.1", "port": int(sys.argv[2])}},
           "links": [], "log_messages": False, "metrics_interval_s": 0},
          open(sys.argv[1], "w"))
PY
  "${spin[@]}" "$build/herd-node" Clark --config "$tmp/c.json" \
    --log-dir "$tmp/logs" --threads 1 >"$tmp/server.out" 2>&1 &
fi
server=$!
pids+=("$server")
wait_port "$port" || { echo "profile: the server did not start:" >&2; cat "$tmp/server.out" >&2; exit 1; }

# The load runs 1 s of warm-up, then the recording (after another 0.5 s),
# then 1 s more, so the window sees steady load only.
"${bpin[@]}" "$build/herd-bench" --target "127.0.0.1:$port" \
  --connections "$connections" --depth "$depth" --warmup 1 \
  --duration "$(python3 -c "print($seconds + 1.5)")" "${extra[@]}" \
  >"$tmp/bench.out" 2>"$tmp/bench.err" &
bench=$!
pids+=("$bench")
sleep 1.5 # into the load's measured window; not a synchronization
perf record -q -F "$freq" -p "$server" -o "$data" -- sleep "$seconds" \
  >/dev/null 2>&1
wait "$bench" || { echo "profile: herd-bench failed:" >&2; cat "$tmp/bench.err" >&2; exit 1; }

perf report -i "$data" --no-children --sort dso --stdio -F sample,dso \
  2>/dev/null | grep -v '^#' | grep -v '^$' >"$tmp/dso.txt" || true
python3 - "$tmp/bench.out" "$tmp/dso.txt" "$seconds" "$freq" "$kind" <<'PY'
import json, sys
bench, dso, seconds, freq, kind = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
res = next(json.loads(l[7:]) for l in open(bench) if l.startswith("RESULT "))
replies = res["throughput"] * seconds
rows = []
for line in open(dso):
    parts = line.split(None, 1)
    if len(parts) == 2 and parts[0].isdigit():
        rows.append((int(parts[0]), parts[1].strip()))
per = lambda n: n / freq / replies * 1e9
total = sum(n for n, _ in rows)
kernel = sum(n for n, d in rows if d.startswith("[kernel"))
print("%s: %.0f replies/s; %.0f ns of CPU per reply: kernel %.0f, user %.0f"
      % (kind, res["throughput"], per(total), per(kernel), per(total - kernel)))
for n, d in sorted(rows, reverse=True):
    print("  %-28s %6.0f ns" % (d, per(n)))
PY
