#!/usr/bin/env bash
# Smoke run of the benchmark, for CI: starts berth on 127.0.0.1 with an
# ephemeral port, runs every berth-bench workload for a moment with tiny sizes
# (pulls verify digests), and fails on any error. Timings are not judged.
set -euo pipefail
cd "$(dirname "$0")/.."

target_dir="${CARGO_TARGET_DIR:-target}"
bin="$target_dir/x86_64-unknown-linux-gnu/release"
# scripts/test.sh has built the release binaries already; build them if not.
if [ ! -x "$bin/berth" ] || [ ! -x "$bin/berth-bench" ]; then
  cargo build --release -p berth -p berth-bench
fi

work="$(mktemp -d /tmp/berth-smoke.XXXXXX)"
berth_pid=""
cleanup() {
  if [ -n "$berth_pid" ]; then
    kill "$berth_pid" 2>/dev/null || true
    wait "$berth_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

"$bin/berth" serve --listen 127.0.0.1:0 --data "$work/data" --log-format json --log info >"$work/berth.log" 2>&1 &
berth_pid=$!
addr=""
for _ in $(seq 1 100); do
  addr="$(sed -n 's/.*"addr":"\([0-9.:]*\)".*/\1/p' "$work/berth.log" | head -n1)"
  [ -n "$addr" ] && break
  kill -0 "$berth_pid" 2>/dev/null || { cat "$work/berth.log"; echo "berth exited" >&2; exit 1; }
  sleep 0.1
done
[ -n "$addr" ] || { cat "$work/berth.log"; echo "berth did not report its address" >&2; exit 1; }
url="http://$addr"
echo "berth (pid $berth_pid) on $url"

run() {
  local out
  # berth-bench exits non-zero when any operation failed.
  if ! out="$("$bin/berth-bench" run --url "$url" --server-pid "$berth_pid" --json "$@")"; then
    echo "$out"
    echo "berth-bench $* failed" >&2
    exit 1
  fi
  echo "$out" | grep -q '"errors":0,' || { echo "$out"; echo "errors in berth-bench $*" >&2; exit 1; }
  echo "$out" | grep -q '"ops":0,' && { echo "$out"; echo "no operations in berth-bench $*" >&2; exit 1; }
  echo "ok: $*"
}

run --workload push-monolithic --size 1KiB --requests 50 --concurrency 4
run --workload push-chunked --size 300KiB --chunk-size 64KiB --requests 4 --concurrency 2
run --workload push-streamed --size 300KiB --requests 4 --concurrency 2
run --workload pull-blob --size 1KiB --duration 0.5 --concurrency 8 --verify
run --workload pull-blob --size 1MiB --duration 0.5 --concurrency 2 --verify
# Big enough for berth's direct-I/O batches; chunks that end off block boundaries.
run --workload push-chunked --size 5MiB --chunk-size 1000001 --requests 2 --concurrency 1
run --workload pull-blob --size 5MiB --duration 0.5 --concurrency 2 --verify
# The client that lets the kernel drop the bodies (lengths are still checked).
run --workload pull-blob --size 5MiB --duration 0.5 --concurrency 2 --discard
run --workload pull-manifest --duration 0.5 --concurrency 8 --verify
run --workload head-tag --duration 0.5 --concurrency 8
run --workload get-tag --duration 0.5 --concurrency 8 --verify
run --workload head-blob --size 1KiB --duration 0.5 --concurrency 8
for mode in "" --direct; do
  # shellcheck disable=SC2086
  "$bin/berth-bench" disk-write --size 8MiB --path "$work/disk-write.tmp" --json $mode >/dev/null
  echo "ok: disk-write $mode"
done
echo "benchmark smoke run passed"
