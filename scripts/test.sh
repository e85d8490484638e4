#!/usr/bin/env bash
# Sets up (packages, Release build) and runs every test through ctest.
# Usage: scripts/test.sh [extra ctest arguments, e.g. -R unit]
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
scripts/setup.sh
build_dir=${BUILD_DIR:-build}
built=$(date +%s)
echo "test: build took $((built - start)) s"
# The tests start real servers on loopback; run them one at a time so that
# timing-sensitive end-to-end checks do not compete for the two cores.
ctest --test-dir "$build_dir" --output-on-failure --timeout 300 "$@"
echo "test: tests took $(($(date +%s) - built)) s"
