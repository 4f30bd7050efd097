#!/usr/bin/env bash
# How costs grow with the size of the registry: berth against CNCF distribution
# (Debian's docker-registry, filesystem storage) on the same data directory,
# grown through several sizes (bench/scale-fill.py writes it directly in
# distribution's layout, which berth serves as it is). At each size, one server
# at a time (never both on the directory at once):
#   - startup: exec to the first 200 on /v2/ (berth-bench startup), 3 starts,
#     then idle RSS and the CPU time the process spent by itself after the
#     start, until it went idle;
#   - bench/scale-client.py: _catalog?n=100 first and deep page, tags/list of
#     one big repository (n=100 first and deep page, unpaged), manifest GET by
#     tag there (p50 of repeated requests), then 1 KiB blob + manifest pushes
#     and their pulls.
# Writes one JSON object per figure to --out (bench/scale-last-run.jsonl);
# bench/scale-plot.sh turns that into the plots under bench/scale/.
#
#   bench/scale.sh [--stages "R:T:B ..."] [--out FILE] [--bin DIR] [--keep]
#
# A stage R:T:B means R repositories, T tags in scale/big, B blobs on disk;
# the default is "1000:100:10000 10000:1000:100000 100000:10000:500000
# 200000:20000:1000000" (~10 GB of disk at the end, a blob costing ~8 KiB
# here, its directory and its file).
# --bin is where the release berth and berth-bench are (default
# ${CARGO_TARGET_DIR:-target}/x86_64-unknown-linux-gnu/release; build them
# with `cargo build --release -p berth -p berth-bench`).
# Timed phases wait while /tmp/quiet-bench.lock exists and hold
# /tmp/scale-bench.lock while they run (shared machine etiquette).
# Needs: docker-registry, jq, curl, python3 (installed with apt-get when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh
export PATH="/usr/sbin:/sbin:$PATH"

stages="1000:100:10000 10000:1000:100000 100000:10000:500000 200000:20000:1000000"
out="bench/scale-last-run.jsonl"
bin="${CARGO_TARGET_DIR:-target}/x86_64-unknown-linux-gnu/release"
keep=0
while [ $# -gt 0 ]; do
  case "$1" in
    --stages) stages="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --bin) bin="$2"; shift 2 ;;
    --keep) keep=1; shift ;;
    *) echo "usage: $0 [--stages \"R:T:B ...\"] [--out FILE] [--bin DIR] [--keep]" >&2; exit 2 ;;
  esac
done

log() { printf '== %s\n' "$*" >&2; }

need=()
command -v docker-registry >/dev/null || need+=(docker-registry)
command -v jq >/dev/null || need+=(jq)
command -v curl >/dev/null || need+=(curl)
command -v python3 >/dev/null || need+=(python3)
if ((${#need[@]})); then
  log "installing ${need[*]}"
  sudo_cmd=""
  [ "$(id -u)" = 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -q --no-install-recommends "${need[@]}"
fi

berth="$bin/berth"
bench="$bin/berth-bench"
if [ ! -x "$berth" ] || [ ! -x "$bench" ]; then echo "no berth/berth-bench in $bin (see --bin)" >&2; exit 2; fi

work="$(mktemp -d /tmp/berth-scale.XXXXXX)"
data="$work/data"
mkdir -p "$data"
server_pid=""
locked=0

cleanup() {
  stop_pid "$server_pid"
  [ "$locked" = 0 ] || rm -f /tmp/scale-bench.lock
  if [ "$keep" = 1 ]; then log "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port="$("$bench" free-port)"
url="http://127.0.0.1:$port"
distribution_config "$work/distribution.yml" "$data" "127.0.0.1:$port"

server_cmd() {
  case "$1" in
    berth) echo "$berth serve --listen 127.0.0.1:$port --data $data --log warn --no-self-image" ;;
    distribution) echo "docker-registry serve $work/distribution.yml" ;;
  esac
}

# CPU time (ms) a process has used so far.
cpu_ms() { awk -v hz="$(getconf CLK_TCK)" '{print int(($14 + $15) * 1000 / hz)}' "/proc/$1/stat"; }

machine="$(nproc) cores, $(awk '/model name/ {sub(/.*: /, ""); print; exit}' /proc/cpuinfo), $(free -g | awk '/Mem:/ {print $2}') GiB RAM, kernel $(uname -r), $(df -T "$work" | awk 'NR == 2 {print $2}')"
log "machine: $machine; work dir $work; results $out"
: >"$out"
jq -nc --arg m "$machine" --arg d "$(date -u +%FT%TZ)" --arg v "$("$berth" --version)" \
  --arg dv "$(docker-registry --version)" '{case:"machine", machine:$m, date:$d, berth:$v, distribution:$dv}' >>"$out"

for stage in $stages; do
  IFS=: read -r repos tags blobs <<<"$stage"
  log "filling: $repos repositories, $tags tags, $blobs blobs"
  t0=$(date +%s)
  nice -n 19 ionice -c 3 python3 bench/scale-fill.py "$data" --repos "$repos" --tags "$tags" --blobs "$blobs" >/dev/null
  sync
  log "  filled in $(($(date +%s) - t0)) s; $(df -h "$data" | awk 'NR == 2 {print $4}') left on the disk"
  for s in berth distribution; do
    while [ -e /tmp/quiet-bench.lock ]; do sleep 30; done
    touch /tmp/scale-bench.lock
    locked=1
    sizes=(--argjson repos "$repos" --argjson tags "$tags" --argjson blobs "$blobs")
    for r in 1 2 3; do
      # Page the executable in first: measure the start, not the disk.
      cat "$berth" "$(command -v docker-registry)" >/dev/null
      # shellcheck disable=SC2046
      line="$("$bench" startup --json --url "$url" --pid-file "$work/pid" --log "$work/$s.log" --timeout 120 -- $(server_cmd "$s"))"
      server_pid="$(cat "$work/pid")"
      echo "$line" | jq -c --arg s "$s" --argjson r "$r" "${sizes[@]}" \
        '{server:$s, case:"startup", repos:$repos, tags:$tags, blobs:$blobs, round:$r, ms:.startup_ms}' >>"$out"
      if [ "$r" -lt 3 ]; then
        stop_pid "$server_pid"
        server_pid=""
      fi
    done
    # Idle: what the process holds, and what it did by itself after the start
    # (background work that grows with the directory shows here): CPU time
    # 3 s after the start, then again once it has stopped growing (no more
    # than one clock tick in 2 s; at most 5 minutes), which is also when the
    # requests below start, so that they do not share the cores with it.
    sleep 3
    c3="$(cpu_ms "$server_pid")"
    rss3="$(awk '$1 == "VmRSS:" {print $2}' "/proc/$server_pid/status")"
    prev=-100
    t_idle=3
    while c="$(cpu_ms "$server_pid")" && [ $((c - prev)) -gt 10 ] && [ "$t_idle" -lt 300 ]; do
      prev="$c"
      sleep 2
      t_idle=$((t_idle + 2))
    done
    jq -nc --arg s "$s" "${sizes[@]}" --argjson k "$rss3" --argjson c3 "$c3" --argjson c "$c" --argjson t "$t_idle" \
      --argjson hwm "$(awk '$1 == "VmHWM:" {print $2}' "/proc/$server_pid/status")" \
      '{server:$s, case:"idle", repos:$repos, tags:$tags, blobs:$blobs, rss_kib:$k, cpu_ms_first_3s:$c3,
        cpu_ms_until_idle:$c, idle_after_s:$t, peak_rss_kib:$hwm}' >>"$out"
    python3 bench/scale-client.py "$url" --server "$s" --repos "$repos" --tags "$tags" --blobs "$blobs" >>"$out"
    stop_pid "$server_pid"
    server_pid=""
    rm -f /tmp/scale-bench.lock
    locked=0
    jq -r --arg s "$s" --argjson r "$repos" 'select(.server == $s and .repos == $r and .case != "startup")
      | "  \($s): \(.case): " + (if .p50_ms then "p50 \(.p50_ms * 1000 | floor / 1000) ms" else "RSS \(.rss_kib) KiB, CPU \(.cpu_ms_first_3s) ms" end)
      + (if .ops_per_s then ", \(.ops_per_s | floor) ops/s" else "" end)' "$out" >&2
  done
done
log "done: $out (plots: bench/scale-plot.sh $out)"
