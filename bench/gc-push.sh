#!/usr/bin/env bash
# Push throughput while garbage collection passes run (issue 13's target:
# less than 20% lost). One berth (release build) serves a copy of DIR, a
# data directory filled by bench/gc-scale.py (1,000 repositories, 110,000
# blobs: a pass takes seconds); the same push workload runs with no pass
# running and with passes back to back (POST /berth/v1/gc in a loop), in
# turns (each goes first in half the rounds), and the medians, spread and
# ratio are printed.
#
#   bench/gc-push.sh DIR [ROUNDS] -- BENCH-RUN-ARGS...
#
# e.g. bench/gc-push.sh /work/gcscale 5 -- --workload push-monolithic --size 1MiB -c 4 -n 600
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh
[ $# -ge 1 ] || { echo "usage: $0 DIR [ROUNDS] -- BENCH-RUN-ARGS..." >&2; exit 2; }
src="$1"; shift
rounds=5
if [ $# -gt 0 ] && [ "$1" != "--" ]; then rounds="$1"; shift; fi
[ "${1:-}" = "--" ] && shift
[ $# -gt 0 ] || set -- --workload push-monolithic --size 1MiB -c 4 -n 600
bin="${CARGO_TARGET_DIR:-target}/x86_64-unknown-linux-gnu/release"
bench="$bin/berth-bench"
work="$(mktemp -d /work/berth-gc-push.XXXXXX)"
pid="" loop=""
cleanup() {
  touch "$work/stop" 2>/dev/null || true
  [ -z "$loop" ] || stop_pid "$loop"
  stop_pid "$pid"
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "copying $src" >&2
cp -a "$src" "$work/data"
port="$("$bench" free-port)"
url="http://127.0.0.1:$port"
"$bin/berth" serve --listen "127.0.0.1:$port" --data "$work/data" --log warn --no-self-image \
  --gc-interval 0 --gc-grace 0s >"$work/berth.log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do curl -s -o /dev/null "$url/v2/" && break; sleep 0.1; done
# The first pass deletes the directory's unreferenced blobs; later ones
# mark and sweep the 100,000 that stay (and what the pushes left).
echo "first pass: $(curl -s -X POST "$url/berth/v1/gc" | jq -c '{blobs_deleted, duration_ms}')" >&2

passes() { # runs passes back to back until $work/stop exists; logs them in $work/passes
  while [ ! -e "$work/stop" ]; do
    curl -s -X POST "$url/berth/v1/gc" | jq -c '{blobs_deleted, duration_ms}' >>"$work/passes"
  done
}

results="$work/results.jsonl"
: >"$work/passes"
for r in $(seq 1 "$rounds"); do
  order="quiet gc"
  [ $((r % 2)) = 1 ] || order="gc quiet"
  for side in $order; do
    sync
    if [ "$side" = gc ]; then
      rm -f "$work/stop"
      passes &
      loop=$!
      sleep 1 # a pass is under way
    fi
    line="$("$bench" run --json --url "$url" "$@" --server-pid "$pid")"
    if [ -n "$loop" ]; then
      # The pass under way finishes (a pass outlives its client) before
      # the next round, which must run with none.
      touch "$work/stop"
      wait "$loop"
      loop=""
    fi
    echo "$line" | jq -c --arg s "$side" --argjson r "$r" '. + {side:$s, round:$r}' >>"$results"
    echo "$line" | jq -r --arg s "$side" --argjson r "$r" \
      '"round \($r) \($s): \(.requests_per_s|floor) pushes/s, \(.mb_per_s|floor) MB/s, p99 \(.latency.p99_ms) ms, server CPU \(.server.cpu_s) s, errors \(.errors)"'
  done
done
echo "passes during the gc rounds: $(wc -l <"$work/passes"), e.g. $(tail -1 "$work/passes")"
jq -rs '
def median: sort | .[(length - 1) / 2 | floor];
def side($s): map(select(.side == $s));
def stats(f): "median \(map(f) | median | . * 10 | floor / 10), range \(map(f) | min | floor)-\(map(f) | max | floor)";
(side("quiet")) as $a | (side("gc")) as $b
| "no pass:        MB/s \($a | stats(.mb_per_s)); p99 ms \($a | stats(.latency.p99_ms))",
  "passes running: MB/s \($b | stats(.mb_per_s)); p99 ms \($b | stats(.latency.p99_ms))",
  "with/without: \(($b | map(.mb_per_s) | median) / ($a | map(.mb_per_s) | median) * 100 | floor / 100)x"
' "$results"
