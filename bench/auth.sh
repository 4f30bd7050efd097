#!/usr/bin/env bash
# Cost of authentication on the request path: manifest GETs (c64) against
# berth without auth, with a bearer token from its token service, and with
# Basic credentials on every request (checked once, then cached). Rounds are
# interleaved so that drift of a shared machine hits every case alike.
#
#   bench/auth.sh [ROUNDS] [SECONDS]      (uses target/.../release binaries)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-3}"
dur="${2:-10}"
bin=target/x86_64-unknown-linux-gnu/release
berth="$bin/berth"
bench="$bin/berth-bench"
[ -x "$berth" ] && [ -x "$bench" ] || { echo "build first: cargo build --release -p berth -p berth-bench" >&2; exit 2; }

work="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

# A user of the htpasswd file, bcrypt at htpasswd's default cost (apache2-utils).
command -v htpasswd >/dev/null || { echo "needs htpasswd (apt-get install apache2-utils)" >&2; exit 2; }
htpasswd -cbB "$work/htpasswd" bench bench-pw 2>/dev/null

declare -A pid=()
start() { # name, extra args... -> sets addr
  local name="$1"; shift
  mkdir -p "$work/$name"
  # berth=info: the line with the bound address; the access log (berth::access) stays off.
  "$berth" serve --listen 127.0.0.1:0 --log "warn,berth=info,berth::access=warn" --log-format json \
    --no-self-image --data "$work/$name" "$@" >/dev/null 2>"$work/$name.log" &
  pids+=($!)
  pid[$name]=$!
  addr=""
  for _ in $(seq 1 100); do
    addr="$(grep -so '"addr":"[^"]*"' "$work/$name.log" | head -1 | cut -d'"' -f4 || true)"
    [ -n "$addr" ] && return
    sleep 0.1
  done
  echo "$name did not start: $(cat "$work/$name.log")" >&2
  exit 1
}

start anon; a_anon="$addr"
start token --htpasswd "$work/htpasswd" --token --token-expiry-secs 3600; a_token="$addr"
start basic --htpasswd "$work/htpasswd"; a_basic="$addr"
basic="Basic $(printf 'bench:bench-pw' | base64)"
token="$(curl -fsS -H "Authorization: $basic" \
  "http://$a_token/token?service=berth&scope=repository:bench/load:pull,push" | sed 's/.*"token":"\([^"]*\)".*/\1/')"

declare -A auth=([anon]="" [token]="Bearer $token" [basic]="$basic")
declare -A url=([anon]="http://$a_anon" [token]="http://$a_token" [basic]="http://$a_basic")
for s in anon token basic; do
  BERTH_BENCH_AUTHORIZATION="${auth[$s]}" "$bench" run --url "${url[$s]}" --workload pull-manifest --setup-only >/dev/null
done
for r in $(seq 1 "$rounds"); do
  for s in anon token basic; do
    line="$(BERTH_BENCH_AUTHORIZATION="${auth[$s]}" "$bench" run --json --no-setup --url "${url[$s]}" \
      --workload pull-manifest -c 64 -d "$dur" --warmup --server-pid "${pid[$s]}")"
    echo "$line" | python3 -c "
import json, sys
d = json.load(sys.stdin)
n = max(d['requests'], 1)
server = d['server']['cpu_s'] / n * 1e6
client = d['client_cpu_s'] / n * 1e6
print('round $r %-5s %6d req/s  server CPU %5.2f us/req  client %5.2f us/req  p99 %6.2f ms  errors %d' % (
    '$s', d['requests_per_s'], server, client, d['latency']['p99_ms'], d['errors']))"
  done
done
