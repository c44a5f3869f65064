#!/usr/bin/env bash
# Runs the README's test command, `cargo test --workspace --all-features`, several times in a
# row while `stress-ng --cpu N` keeps N CPU workers busy, and fails unless every run passes: a
# test's verdict must not depend on how busy the machine is (ADR 0006).
#
# usage: scripts/stress-test.sh [RUNS] [CPU_WORKERS]     (defaults: 3 runs, 2 workers)
#
# - Installs stress-ng from the distribution's packages (apt-get) when it is missing.
# - Builds the tests first, without the load (the runs measure tests, not the compiler); the
#   runs then rebuild nothing.
# - Like CI, requires PostgreSQL and Redis (STEADFAST_REQUIRE_SERVICES=1, DATABASE_URL,
#   REDIS_URL; override them in the environment), so that no test skips.
# - Logs every run under $STRESS_LOG_DIR (default target/stress-test in the build directory)
#   and prints one line per run: duration, tests passed / failed / ignored, load average.
set -euo pipefail
cd "$(dirname "$0")/.."

runs="${1:-3}"
workers="${2:-2}"
export STEADFAST_REQUIRE_SERVICES="${STEADFAST_REQUIRE_SERVICES:-1}"
export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}"
export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"
export CARGO_TERM_COLOR=never
target_dir="${CARGO_TARGET_DIR:-target}"
log_dir="${STRESS_LOG_DIR:-$target_dir/stress-test}"
mkdir -p "$log_dir"

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

if ! command -v stress-ng >/dev/null; then
  echo "==> installing stress-ng (apt-get)"
  if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y stress-ng; then
    as_root apt-get update
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y stress-ng
  fi
fi
echo "==> $(stress-ng --version 2>&1 | head -n1); $(nproc) CPUs; $(cargo --version)"

echo "==> building the tests (no load yet)"
cargo test --workspace --all-features --no-run 2>&1 | tail -n 1

stress_pid=""
stop_stress() {
  if [ -n "$stress_pid" ] && kill -0 "$stress_pid" 2>/dev/null; then
    kill "$stress_pid" 2>/dev/null || true
    wait "$stress_pid" 2>/dev/null || true
  fi
}
trap stop_stress EXIT

echo "==> stress-ng --cpu $workers (until the runs end)"
stress-ng --cpu "$workers" --timeout 6h --metrics-brief >"$log_dir/stress-ng.log" 2>&1 &
stress_pid=$!
sleep 5 # let the load average climb before the first run

failed_runs=0
summary=()
for i in $(seq 1 "$runs"); do
  log="$log_dir/run-$i.log"
  start=$(date +%s)
  if cargo test --workspace --all-features >"$log" 2>&1; then status=passed; else
    status=FAILED
    failed_runs=$((failed_runs + 1))
  fi
  secs=$(($(date +%s) - start))
  counts=$(awk '/^test result:/ {p += $4; f += $6; ig += $8; b += 1}
                END {printf "%d passed, %d failed, %d ignored in %d harnesses (test binaries and doc-tests)", p, f, ig, b}' "$log")
  line="run $i: $status in ${secs}s; $counts; load average $(cut -d' ' -f1-3 /proc/loadavg)"
  summary+=("$line")
  echo "$line"
  if [ "$status" = FAILED ]; then
    grep -E '^(test .* FAILED|---- |failures:|error)' "$log" | head -n 40 || true
  fi
done

stop_stress
stress_pid=""
echo "==> stress-ng: $(grep -E 'cpu ' "$log_dir/stress-ng.log" | tail -n1 | tr -s ' ')"
echo "==> summary (logs in $log_dir)"
printf '%s\n' "${summary[@]}"
if [ "$failed_runs" -gt 0 ]; then
  echo "==> $failed_runs of $runs runs failed under load" >&2
  exit 1
fi
echo "==> all $runs runs passed under stress-ng --cpu $workers"
