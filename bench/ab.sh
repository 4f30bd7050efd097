#!/usr/bin/env bash
# Compares two berth builds (or one build with two sets of flags) on one
# berth-bench workload: starts both (--no-self-image, data of their own),
# runs the workload against A and B in turns (A B B A A B ...: each goes
# first in half the rounds), and prints each round, the medians, the spread
# and the ratio B/A. For "did this change make it faster", side by side on
# the same noisy machine, instead of comparing with a number from another run.
#
#   bench/ab.sh [--rounds N] [--a BIN] [--b BIN] [--a-args ARGS] [--b-args ARGS] -- BENCH-RUN-ARGS...
#
# e.g. bench/ab.sh --a /tmp/berth-old --rounds 5 -- --workload push-monolithic --size 1GiB -n 1
# BIN defaults to the release build; ARGS are extra `berth serve` flags.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh
bin="${CARGO_TARGET_DIR:-target}/x86_64-unknown-linux-gnu/release"
rounds=5 a="$bin/berth" b="$bin/berth" a_args="" b_args=""
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds="$2"; shift 2 ;;
    --a) a="$2"; shift 2 ;;
    --b) b="$2"; shift 2 ;;
    --a-args) a_args="$2"; shift 2 ;;
    --b-args) b_args="$2"; shift 2 ;;
    --) shift; break ;;
    *) echo "usage: $0 [--rounds N] [--a BIN] [--b BIN] [--a-args ARGS] [--b-args ARGS] -- BENCH-RUN-ARGS..." >&2; exit 2 ;;
  esac
done
[ $# -gt 0 ] || { echo "$0: give berth-bench run arguments after --" >&2; exit 2; }
bench="$bin/berth-bench"
work="$(mktemp -d /tmp/berth-ab.XXXXXX)"
declare -A pid url
cleanup() {
  for s in A B; do stop_pid "${pid[$s]:-}"; done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start() { # start NAME BIN ARGS
  local port
  port="$("$bench" free-port)"
  mkdir -p "$work/data-$1"
  # shellcheck disable=SC2086
  "$2" serve --listen "127.0.0.1:$port" --data "$work/data-$1" --log warn --no-self-image $3 >"$work/$1.log" 2>&1 &
  pid[$1]=$!
  url[$1]="http://127.0.0.1:$port"
  for _ in $(seq 1 100); do curl -s -o /dev/null "${url[$1]}/v2/" && return 0; sleep 0.1; done
  echo "$1 did not start: $(cat "$work/$1.log")" >&2
  exit 1
}
start A "$a" "$a_args"
start B "$b" "$b_args"
# Pull workloads need their data first.
case "$*" in *pull-*|*head-*|*get-tag*)
  for s in A B; do "$bench" run --url "${url[$s]}" "$@" --setup-only >/dev/null; done ;;
esac

results="$work/results.jsonl"
for r in $(seq 1 "$rounds"); do
  order="A B"
  [ $((r % 2)) = 1 ] || order="B A"
  for s in $order; do
    case "$*" in *push-*) sync ;; esac
    line="$("$bench" run --json --no-setup --url "${url[$s]}" "$@" --server-pid "${pid[$s]}")"
    echo "$line" | jq -c --arg s "$s" --argjson r "$r" '. + {side:$s, round:$r}' >>"$results"
    echo "$line" | jq -r --arg s "$s" --argjson r "$r" \
      '"round \($r) \($s): \(.requests_per_s|floor) req/s, \(.mb_per_s|floor) MB/s, p99 \(.latency.p99_ms) ms, server CPU \(.server.cpu_s) s, errors \(.errors)"'
  done
done
jq -rs '
def median: sort | .[(length - 1) / 2 | floor];
def side($s): map(select(.side == $s));
def stats(f): "median \(map(f) | median | . * 10 | floor / 10), range \(map(f) | min | floor)-\(map(f) | max | floor)";
(side("A")) as $a | (side("B")) as $b
| "A: req/s \($a | stats(.requests_per_s)); MB/s \($a | stats(.mb_per_s))",
  "B: req/s \($b | stats(.requests_per_s)); MB/s \($b | stats(.mb_per_s))",
  "B/A: req/s \(($b | map(.requests_per_s) | median) / ($a | map(.requests_per_s) | median) * 100 | floor / 100)x, MB/s \(if ($a | map(.mb_per_s) | median) > 0 then (($b | map(.mb_per_s) | median) / ($a | map(.mb_per_s) | median) * 100 | floor / 100 | tostring) + "x" else "-" end)"
' "$results"
