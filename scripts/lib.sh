# Shell helpers shared by the benchmark scripts (sourced, not run).

# A free TCP port on 127.0.0.1.
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

# Process $1's CPU time so far (utime + stime), in clock ticks.
cpu_ticks() {
  local stat rest
  stat=$(<"/proc/$1/stat")
  rest=${stat##*) }
  read -ra f <<<"$rest"
  echo $((f[11] + f[12]))
}

# Sets the arrays spin (the server's taskset prefix, SERVER_CPU, default 1)
# and bpin (herd-bench's, BENCH_CPU, default 0); both empty on one core.
pin_server_and_bench() {
  spin=() bpin=()
  if (($(nproc) > 1)); then
    spin=(taskset -c "${SERVER_CPU:-1}")
    bpin=(taskset -c "${BENCH_CPU:-0}")
  fi
}

# Makes a temporary directory ($tmp) and an empty list of started processes
# ($pids), and at exit kills those processes (by PID) and removes the
# directory.
tmp_dir_and_pids() {
  tmp=$(mktemp -d)
  pids=()
  trap _cleanup_tmp_and_pids EXIT
}
_cleanup_tmp_and_pids() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$tmp"
}
