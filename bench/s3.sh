#!/usr/bin/env bash
# berth on S3 against CNCF distribution 2.8.2 (Debian's docker-registry, its
# `s3` driver) on the same Ceph RGW, side by side: each on a prefix of its own
# in one bucket, the same berth-bench workloads run against each in turns
# (each goes first in half the rounds), medians and spread, ratios, and the
# peak RSS of each server. Then how berth's throughput changes from one
# replica to three on one prefix (manifest GETs by tag, one client per
# replica). Everything it starts it stops again, by PID.
#
#   bench/s3.sh [--rounds N] [--quick] [--only REGEX] [--replicas-only] [--catalog-only [--repos N]]
#
# --only REGEX: only the workloads whose name matches (then no replicas part).
#
# --catalog-only: instead, N repositories (default 10,000) pushed into berth
# (one blob, then cross-repository mounts), distribution started on the same
# prefix, and the time of `_catalog?n=100` (first page and one from the
# middle) on each, interleaved.
#
# Needs Ceph RGW: with AWS_ENDPOINT_URL etc. set (the export lines of
# scripts/s3/start-ceph-rgw.sh) it uses that one, else it starts one and
# stops it at the end. --quick shrinks the sizes and durations.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh
export PATH="$HOME/.cargo/bin:/usr/sbin:/sbin:$PATH"

rounds=3 quick=0 replicas_only=0 catalog_only=0 repos=10000 only=""
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds="$2"; shift 2 ;;
    --quick) quick=1; shift ;;
    --replicas-only) replicas_only=1; shift ;;
    --catalog-only) catalog_only=1; shift ;;
    --repos) repos="$2"; shift 2 ;;
    --only) only="$2"; shift 2 ;;
    *) echo "usage: $0 [--rounds N] [--quick] [--only REGEX] [--replicas-only] [--catalog-only [--repos N]]" >&2; exit 2 ;;
  esac
done
log() { printf '== %s\n' "$*" >&2; }

bin="${CARGO_TARGET_DIR:-target}/x86_64-unknown-linux-gnu/release"
bench="$bin/berth-bench"
[ -x "$bin/berth" ] && [ -x "$bench" ] || { echo "build first: cargo build --release -p berth -p berth-bench" >&2; exit 2; }
work="$(mktemp -d /tmp/berth-s3bench.XXXXXX)"
declare -A pid url
started_ceph=""
cleanup() {
  for p in "${pid[@]}"; do stop_pid "$p"; done
  [ -z "$started_ceph" ] || bash scripts/s3/stop-ceph-rgw.sh >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ -z "${AWS_ENDPOINT_URL:-}" ]; then
  log "starting Ceph RGW"
  started_ceph=1
  eval "$(bash scripts/s3/start-ceph-rgw.sh)"
fi
bucket="${S3_TEST_BUCKET:-${AWS_BUCKET:?the bucket: S3_TEST_BUCKET}}"
run_id="bench-$(date +%s)-$$"

start_berth() { # NAME PREFIX
  local port
  port="$("$bench" free-port)"
  "$bin/berth" serve --listen "127.0.0.1:$port" --storage "s3://$bucket/$2" --s3-endpoint "$AWS_ENDPOINT_URL" \
    --data "$work/data-$1" --log warn --no-self-image --gc-interval 0 >"$work/$1.log" 2>&1 &
  pid[$1]=$!
  url[$1]="http://127.0.0.1:$port"
  wait_up "$1"
}

start_distribution() { # NAME PREFIX
  local port
  port="$("$bench" free-port)"
  cat >"$work/$1.yml" <<YAML
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  s3:
    region: ${AWS_REGION:-us-east-1}
    regionendpoint: $AWS_ENDPOINT_URL
    bucket: $bucket
    rootdirectory: /$2
    v4auth: true
    secure: false
    chunksize: 5242880
  redirect:
    disable: true
  cache:
    blobdescriptor: inmemory
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:$port
YAML
  # distribution 2.8.2 panics at start when AWS_CA_BUNDLE is set (see README);
  # its credentials come from its environment, never the file.
  env -u AWS_CA_BUNDLE REGISTRY_STORAGE_S3_ACCESSKEY="$AWS_ACCESS_KEY_ID" \
    REGISTRY_STORAGE_S3_SECRETKEY="$AWS_SECRET_ACCESS_KEY" \
    docker-registry serve "$work/$1.yml" >"$work/$1.log" 2>&1 &
  pid[$1]=$!
  url[$1]="http://127.0.0.1:$port"
  wait_up "$1"
}

wait_up() {
  for _ in $(seq 1 200); do curl -s -o /dev/null "${url[$1]}/v2/" && return 0; sleep 0.1; done
  echo "$1 did not start: $(cat "$work/$1.log")" >&2
  exit 1
}

rss_mib() { awk '/VmHWM/ {printf "%.0f", $2 / 1024}' "/proc/$1/status"; }

if [ "$catalog_only" = 1 ]; then
  prefix="$run_id-catalog"
  start_berth berth "$prefix"
  log "pushing $repos repositories into berth"
  blob="catalog bench"
  digest="sha256:$(printf '%s' "$blob" | sha256sum | cut -d' ' -f1)"
  curl -sf -o /dev/null -X POST --data-binary "$blob" -H 'content-type: application/octet-stream' \
    "${url[berth]}/v2/cat/r00000/blobs/uploads/?digest=$digest"
  seq -f '%05g' 1 $((repos - 1)) | xargs -P 32 -I{} curl -sf -o /dev/null -X POST \
    "${url[berth]}/v2/cat/r{}/blobs/uploads/?mount=$digest&from=cat/r00000"
  start_distribution distribution "$prefix"
  middle="$(printf 'cat/r%05d' $((repos / 2)))"
  : >"$work/catalog.tsv"
  for r in $(seq 1 "$rounds"); do
    order="berth distribution"
    [ $((r % 2)) = 0 ] && order="distribution berth"
    for s in $order; do
      for page in first middle; do
        q="n=100"
        [ "$page" = middle ] && q="n=100&last=$middle"
        # distribution walks the whole bucket for a page from the middle
        # (minutes with 10,000 repositories): capped at 10 minutes.
        t="$(curl -sf --max-time 600 -o "$work/page.json" -w '%{time_total}' "${url[$s]}/v2/_catalog?$q")"
        [ "$(jq '.repositories | length' "$work/page.json")" = 100 ] || { echo "$s: not a page of 100" >&2; exit 1; }
        printf '%s\t%s\t%s\n' "$s" "$page" "$t" >>"$work/catalog.tsv"
      done
    done
  done
  echo "| _catalog?n=100, $repos repositories (Ceph RGW, $rounds rounds) | median ms | range ms |"
  echo "|---|---:|---:|"
  for s in berth distribution; do
    for page in first middle; do
      mapfile -t v < <(awk -F'\t' -v s="$s" -v p="$page" '$1 == s && $2 == p {printf "%.1f\n", $3 * 1000}' "$work/catalog.tsv" | sort -n)
      echo "| $s, $page page | ${v[$(( (${#v[@]} - 1) / 2 ))]} | ${v[0]}-${v[-1]} |"
    done
  done
  exit 0
fi

if [ "$quick" = 1 ]; then
  big=16MiB small_n=200 secs=5
else
  big=256MiB small_n=1000 secs=10
fi
# name | berth-bench run arguments
workloads=(
  "manifest GET by tag|--workload get-tag --size 1KiB -c 8 -d $secs"
  "manifest HEAD by tag|--workload head-tag --size 1KiB -c 8 -d $secs"
  "1 KiB blob push|--workload push-monolithic --size 1KiB -c 8 -n $small_n"
  "$big blob push|--workload push-monolithic --size $big -c 1 -n 2"
  "$big blob pull|--workload pull-blob --size $big -c 2 -d $secs --discard"
)

if [ "$replicas_only" = 0 ]; then
log "berth and distribution on s3://$bucket/$run_id-*"
start_berth berth "$run_id-berth"
start_distribution distribution "$run_id-distribution"
results="$work/results.jsonl"
for w in "${workloads[@]}"; do
  name="${w%%|*}"
  [ -z "$only" ] || [[ "$name" =~ $only ]] || continue
  # shellcheck disable=SC2206
  args=(${w#*|})
  case "${args[*]}" in *pull-*|*-tag*)
    for s in berth distribution; do "$bench" run --url "${url[$s]}" "${args[@]}" --setup-only >/dev/null; done ;;
  esac
  for r in $(seq 1 "$rounds"); do
    order="berth distribution"
    [ $((r % 2)) = 1 ] || order="distribution berth"
    for s in $order; do
      setup=(--no-setup)
      case "${args[*]}" in *push-*) setup=() ;; esac
      line="$("$bench" run --json "${setup[@]}" --url "${url[$s]}" "${args[@]}" --server-pid "${pid[$s]}")"
      echo "$line" | jq -c --arg s "$s" --arg w "$name" --argjson r "$r" '. + {server:$s, workload:$w, round:$r}' >>"$results"
      echo "$line" | jq -r --arg s "$s" --arg w "$name" --argjson r "$r" \
        '"\($w) round \($r) \($s): \(.requests_per_s|floor) req/s, \(.mb_per_s|floor) MB/s, p99 \(.latency.p99_ms) ms, errors \(.errors)"' >&2
    done
  done
done
rss_berth=$(rss_mib "${pid[berth]}")
rss_dist=$(rss_mib "${pid[distribution]}")

echo
echo "| workload (Ceph RGW, medians of $rounds) | berth | distribution | berth / distribution |"
echo "|---|---:|---:|---:|"
jq -rs '
def median: sort | .[(length - 1) / 2 | floor];
# Bytes for the big blobs, requests for the rest (a fast server moves many
# MB/s of small manifests too, which is not what those rows compare).
def bytes: .workload | test("MiB");
def rate: if bytes then .mb_per_s else .requests_per_s end;
def unit: if bytes then "MB/s" else "req/s" end;
group_by(.workload)[]
| (map(select(.server == "berth"))) as $b | (map(select(.server == "distribution"))) as $d
| ($b | map(rate) | median) as $bm | ($d | map(rate) | median) as $dm
| "| \(.[0].workload) | \($bm | floor) \($b[0] | unit) (\($b | map(rate) | min | floor)-\($b | map(rate) | max | floor)) | \($dm | floor) (\($d | map(rate) | min | floor)-\($d | map(rate) | max | floor)) | \(if $dm > 0 then ($bm / $dm * 100 | floor / 100 | tostring) + "x" else "-" end) |"
' "$results"
echo "| peak RSS | ${rss_berth} MiB | ${rss_dist} MiB | $(awk -v a="$rss_berth" -v b="$rss_dist" 'BEGIN {printf "%.2fx", a / b}') |"

for s in berth distribution; do stop_pid "${pid[$s]}"; unset "pid[$s]"; done
fi

# Replicas: 1, then 3 berths on one prefix, one client per replica, manifest
# GETs by tag; throughput summed.
[ -z "$only" ] || exit 0
log "replicas"
prefix="$run_id-replicas"
for i in 1 2 3; do start_berth "replica$i" "$prefix"; done
"$bench" run --url "${url[replica1]}" --workload get-tag --size 1KiB --setup-only >/dev/null
for n in 1 3; do
  for r in $(seq 1 "$rounds"); do
    : >"$work/rep.jsonl"
    clients=()
    for i in $(seq 1 "$n"); do
      "$bench" run --json --no-setup --url "${url[replica$i]}" --workload get-tag --size 1KiB -c 4 -d "$secs" >>"$work/rep.jsonl" &
      clients+=($!)
    done
    # The clients only: a bare `wait` would wait for the servers too.
    wait "${clients[@]}"
    jq -s --argjson n "$n" --argjson r "$r" '{replicas:$n, round:$r, req_s:(map(.requests_per_s) | add)}' "$work/rep.jsonl" -c >>"$work/replicas.jsonl"
  done
done
echo
echo "| replicas (get-tag, one client of 4 connections each) | req/s median | range |"
echo "|---|---:|---:|"
jq -rs '
def median: sort | .[(length - 1) / 2 | floor];
group_by(.replicas)[] | "| \(.[0].replicas) | \(map(.req_s) | median | floor) | \(map(.req_s) | min | floor)-\(map(.req_s) | max | floor) |"
' "$work/replicas.jsonl"
# What the run wrote stays under s3://$bucket/$run_id-* (a Ceph this
# script started is removed whole when it stops).
