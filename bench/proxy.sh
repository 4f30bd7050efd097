#!/usr/bin/env bash
# The pull-through mirror side by side (issue 11's performance lines): a
# 100 MiB blob pulled from an upstream berth directly, through a berth mirror
# (cold: a fresh cache each round; warm: cached), and through CNCF
# distribution in proxy mode on the same upstream (cold and warm); then 50
# concurrent cold pulls of the blob through each mirror: how many fetches
# reached the upstream, and each client's rate against one uncontended cold
# pull. Rounds are interleaved; medians with ranges. Everything it starts it
# stops by PID.
#
#   bench/proxy.sh [ROUNDS] [MIB] [UPSTREAM_MB_S]   (uses target/.../release binaries)
#
# The concurrent pulls go to an upstream behind bench/throttle.py at
# UPSTREAM_MB_S (default 40) per connection, as far away as a real one: on
# 127.0.0.1 an unthrottled upstream is as fast as the mirror, and 50 clients
# would only measure how 2 cores share 50 streams. Against a throttled
# upstream a mirror that fans one fetch out serves every client at the
# upstream's rate (the target: >= 0.8x of one uncontended pull).
#
# Needs curl, docker-registry (Debian's CNCF distribution), jq.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh
rounds="${1:-3}"
mib="${2:-100}"
upstream_rate="${3:-40}"
clients=50
bin="${CARGO_TARGET_DIR:-target}/x86_64-unknown-linux-gnu/release"
berth="$bin/berth"
[ -x "$berth" ] || { echo "build first: cargo build --release -p berth" >&2; exit 2; }
for t in curl docker-registry jq; do
  command -v "$t" >/dev/null || { echo "needs $t" >&2; exit 2; }
done

work="$(mktemp -d /tmp/berth-proxy-bench.XXXXXX)"
pids=()
cleanup() {
  # Servers started inside $(start_berth ...) are not in `pids` (that ran in
  # a subshell), only in their .pid files.
  local p
  for p in "${pids[@]}" $(cat "$work"/*.pid 2>/dev/null); do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  for p in $(cat "$work"/*.pid 2>/dev/null); do
    for _ in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  done
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start_berth NAME ARGS... -> prints the address; the log holds every request.
start_berth() {
  local name="$1"; shift
  rm -rf "$work/$name"; mkdir -p "$work/$name"
  "$berth" serve --listen 127.0.0.1:0 --log-format json --log "warn,berth=info" \
    --no-self-image --data "$work/$name" "$@" >/dev/null 2>"$work/$name.log" &
  pids+=($!)
  echo $! >"$work/$name.pid"
  local addr=""
  for _ in $(seq 1 100); do
    addr="$(grep -so '"addr":"[^"]*"' "$work/$name.log" | head -1 | cut -d'"' -f4 || true)"
    [ -n "$addr" ] && break
    sleep 0.1
  done
  [ -n "$addr" ] || { echo "$name did not start: $(cat "$work/$name.log")" >&2; exit 1; }
  echo "$addr"
}

start_distribution() { # -> prints the address
  local port; port="$(free_port)"
  rm -rf "$work/dist-data"; mkdir -p "$work/dist-data"
  distribution_config "$work/dist.yml" "$work/dist-data" "127.0.0.1:$port" "proxy:" "  remoteurl: http://$upstream"
  docker-registry serve "$work/dist.yml" >"$work/dist.log" 2>&1 &
  pids+=($!)
  echo $! >"$work/dist.pid"
  for _ in $(seq 1 100); do
    curl -s -o /dev/null "http://127.0.0.1:$port/v2/" && break
    sleep 0.1
  done
  echo "127.0.0.1:$port"
}

stop() { local p; p="$(cat "$work/$1.pid")"; kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; }

# MB/s of one GET.
rate() { curl -s -o /dev/null -w '%{speed_download}\n' "$1" | awk '{printf "%.1f\n", $1 / 1e6}'; }

# Blob GETs the upstream answered with 200 (from its JSON request log).
upstream_fetches() {
  jq -r --arg p "/v2/$repo/blobs/$digest" 'select(.path == $p and .status == 200 and .method == "GET") | .path' \
    "$work/upstream.log" 2>/dev/null | wc -l
}

# The upstream and its blob (random bytes: nothing compresses them; the file
# stays for the local pushes below).
upstream="$(start_berth upstream)"
repo="bench/big"
head -c "$((mib << 20))" /dev/urandom >"$work/blob"
digest="sha256:$(sha256sum "$work/blob" | cut -d' ' -f1)"
code="$(curl -s -o /dev/null -w '%{http_code}' -X POST --data-binary @"$work/blob" \
  -H 'Content-Type: application/octet-stream' "http://$upstream/v2/$repo/blobs/uploads/?digest=$digest")"
[ "$code" = 201 ] || { echo "pushing the blob failed: $code" >&2; exit 1; }

# A local blob of the same size for the warm-against-local rows.
head -c "$((mib << 20))" /dev/urandom >"$work/local-blob"
local_digest="sha256:$(sha256sum "$work/local-blob" | cut -d' ' -f1)"

# The file of a blob in a berth's data directory, and dropping its pages
# from the page cache (posix_fadvise DONTNEED through dd; no root needed).
blob_file() { local hex="${2#sha256:}"; echo "$work/$1/docker/registry/v2/blobs/sha256/${hex:0:2}/$hex/data"; }
evict() { dd if="$1" iflag=nocache count=0 status=none; }

declare -A runs
add() { runs[$1]="${runs[$1]:-} $2"; }

# The mirror's reads of the cached blob and of the local one ($mirror is the
# round's mirror).
warm() { evict "$(blob_file mirror "$digest")"; add berth-warm "$(rate "http://$mirror/v2/up/$repo/blobs/$digest")"; }
local_read() {
  evict "$(blob_file mirror "$local_digest")"
  add local-first-read "$(rate "http://$mirror/v2/local/big/blobs/$local_digest")"
}
warm_again() { add berth-warm-again "$(rate "http://$mirror/v2/up/$repo/blobs/$digest")"; }
local_again() { add local-again "$(rate "http://$mirror/v2/local/big/blobs/$local_digest")"; }

for r in $(seq 1 "$rounds"); do
  add direct "$(rate "http://$upstream/v2/$repo/blobs/$digest")"
  mirror="$(start_berth mirror --upstream "up=http://$upstream")"
  add berth-cold "$(rate "http://$mirror/v2/up/$repo/blobs/$digest")"
  # Warm against local, each read first from the disk (its pages evicted),
  # then again from the page cache. The local blob has bytes of its own: the
  # same bytes pushed to the mirror would land on the cached blob's file
  # (one blob per digest), already read, and compare a disk read with a
  # page-cache read (what made the warm path look 0.5-0.7x of a local pull).
  curl -s -o /dev/null -X POST --data-binary @"$work/local-blob" -H 'Content-Type: application/octet-stream' \
    "http://$mirror/v2/local/big/blobs/uploads/?digest=$local_digest"
  # Which goes first alternates with the rounds.
  if ((r % 2)); then warm; local_read; warm_again; local_again; else local_read; warm; local_again; warm_again; fi
  stop mirror
  dist="$(start_distribution)"
  add dist-cold "$(rate "http://$dist/v2/$repo/blobs/$digest")"
  add dist-warm "$(rate "http://$dist/v2/$repo/blobs/$digest")"
  stop dist
  echo "round $r:$(for k in direct berth-cold berth-warm local-first-read berth-warm-again local-again dist-cold dist-warm; do printf ' %s %s' "$k" "${runs[$k]##* }"; done)" >&2
done

# 50 concurrent cold pulls through each mirror (one round each), from the
# throttled upstream; first one uncontended cold pull from it, the yardstick.
python3 bench/throttle.py 0 "$upstream" "$((upstream_rate * 1000000))" >"$work/throttle.port" &
pids+=($!)
for _ in $(seq 1 50); do [ -s "$work/throttle.port" ] && break; sleep 0.1; done
far="127.0.0.1:$(cat "$work/throttle.port")"
direct_far="$(rate "http://$far/v2/$repo/blobs/$digest")"
mirror="$(start_berth mirror --upstream "up=http://$far")"
solo="$(rate "http://$mirror/v2/up/$repo/blobs/$digest")"
stop mirror

concurrent() { # URL -> per-client MB/s, one per line
  local url="$1" i curls=()
  for i in $(seq 1 "$clients"); do
    curl -s -o /dev/null -w '%{speed_download} %{http_code}\n' "$url" >"$work/c.$i" &
    curls+=($!)
  done
  wait "${curls[@]}"
  for i in $(seq 1 "$clients"); do
    awk '$2 != 200 { print "client failed: " $0 > "/dev/stderr" } { printf "%.1f\n", $1 / 1e6 }' "$work/c.$i"
  done
}

before="$(upstream_fetches)"
mirror="$(start_berth mirror --upstream "up=http://$far")"
concurrent "http://$mirror/v2/up/$repo/blobs/$digest" >"$work/berth-50"
stop mirror
berth_fetches=$(($(upstream_fetches) - before))
before="$(upstream_fetches)"
upstream_direct="$upstream"; upstream="$far"
dist="$(start_distribution)"
upstream="$upstream_direct"
concurrent "http://$dist/v2/$repo/blobs/$digest" >"$work/dist-50"
stop dist
dist_fetches=$(($(upstream_fetches) - before))

median() { tr ' ' '\n' | sed '/^$/d' | sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
range() { tr ' ' '\n' | sed '/^$/d' | sort -n | awk 'NR==1{lo=$1} {hi=$1} END {print lo "-" hi}'; }
m() { echo "${runs[$1]}" | median; }

echo "== ${mib} MiB blob, $rounds rounds (median MB/s, range), 2-core machine"
printf '%-28s %10s %16s %10s\n' "case" "MB/s" "range" "ratio"
for k in direct berth-cold berth-warm local-first-read berth-warm-again local-again dist-cold dist-warm; do
  printf '%-28s %10s %16s %10s\n' "$k" "$(m "$k")" "$(echo "${runs[$k]}" | range)" \
    "$(awk -v a="$(m "$k")" -v b="$(m direct)" 'BEGIN {printf "%.2fx", a / b}')"
done
echo "== warm vs local pull: from the disk $(awk -v a="$(m berth-warm)" -v b="$(m local-first-read)" 'BEGIN {printf "%.2fx", a / b}'), from the page cache $(awk -v a="$(m berth-warm-again)" -v b="$(m local-again)" 'BEGIN {printf "%.2fx", a / b}')"
echo "== upstream at $upstream_rate MB/s per connection: direct $direct_far MB/s, one cold pull through berth $solo MB/s ($(awk -v a="$solo" -v b="$direct_far" 'BEGIN {printf "%.2fx", a / b}'))"
for s in berth dist; do
  f=berth_fetches; [ "$s" = dist ] && f=dist_fetches
  printf '%-28s upstream fetches %s, per-client MB/s median %s (range %s), vs one cold pull %s\n' \
    "$s: $clients concurrent cold" "${!f}" "$(median <"$work/$s-50")" "$(range <"$work/$s-50")" \
    "$(awk -v a="$(median <"$work/$s-50")" -v b="$solo" 'BEGIN {printf "%.2fx", a / b}')"
done
