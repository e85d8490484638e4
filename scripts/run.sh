#!/usr/bin/env bash
# Sets up (packages, Release build) and runs the five-server herd of
# config/herd.json on 127.0.0.1:10000-10004 until Ctrl-C.
#
#   scripts/run.sh          set up, start the herd, wait for Ctrl-C
#   scripts/run.sh stop     stop a herd started by this script
#
# With GOOGLE_PLACES_API_KEY set, WHATSAT goes to Google. Without it, the
# project's local Places stand-in (places-stub) is started and used instead.
# Logs go to logs/<Server>.log. CONFIG=FILE runs another herd config.
set -euo pipefail
cd "$(dirname "$0")/.."
run_dir=run
pid_file=$run_dir/pids

stop_herd() {
  [[ -f $pid_file ]] || return 0
  while read -r pid name; do
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null && echo "stopped $name (pid $pid)"
    fi
  done <"$pid_file"
  rm -f "$pid_file"
}

if [[ ${1:-} == stop ]]; then
  stop_herd
  exit 0
fi

scripts/setup.sh
build=${BUILD_DIR:-build}
mkdir -p "$run_dir"
stop_herd # a herd left over from an earlier run

config=${CONFIG:-config/herd.json}
trap 'stop_herd; exit 0' INT TERM
: >"$pid_file"

if [[ -z ${GOOGLE_PLACES_API_KEY:-} ]]; then
  rm -f "$run_dir/stub.port"
  "$build/places-stub" --host 127.0.0.1 --port 0 \
    --port-file "$run_dir/stub.port" >"$run_dir/places-stub.out" 2>&1 &
  echo "$! places-stub" >>"$pid_file"
  for _ in $(seq 100); do
    [[ -s $run_dir/stub.port ]] && break
    sleep 0.05
  done
  stub_port=$(cat "$run_dir/stub.port")
  # The same herd, pointed at the stand-in.
  python3 - "$config" "$run_dir/herd.json" "$stub_port" <<'PY'
import json, sys
cfg = json.load(open(sys.argv[1]))
cfg.setdefault("places", {})["endpoint"] = (
    "http://127.0.0.1:%s/maps/api/place/nearbysearch/json" % sys.argv[3])
json.dump(cfg, open(sys.argv[2], "w"), indent=2)
PY
  config=$run_dir/herd.json
  export GOOGLE_PLACES_API_KEY=local-stub-key
  echo "no GOOGLE_PLACES_API_KEY: using the local Places stand-in on port $stub_port"
fi

mapfile -t servers < <(python3 -c '
import json, sys
for name, s in json.load(open(sys.argv[1]))["servers"].items():
    print(name, s["host"], s["port"])' "$config")

for entry in "${servers[@]}"; do
  read -r name host port <<<"$entry"
  "$build/herd-node" "$name" --config "$config" &
  echo "$! $name" >>"$pid_file"
  echo "started $name on $host:$port (log: logs/$name.log)"
done

read -r name host port <<<"${servers[0]}"
cat <<MSG

The herd is up. Try:
  printf 'IAMAT kiwi.cs.ucla.edu +34.068930-118.445127 %s\nWHATSAT kiwi.cs.ucla.edu 10 2\n' "\$(date +%s.%N)" | nc -N $host $port

Ctrl-C (or scripts/run.sh stop) stops everything this script started.
MSG
wait
