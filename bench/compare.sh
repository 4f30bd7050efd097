#!/usr/bin/env bash
# Compares berth with CNCF distribution (Debian's docker-registry, filesystem
# storage) and nginx (nginx-light serving the same bytes as static files: the
# machine's ceiling) on 127.0.0.1. Runs the same berth-bench workloads against
# each, interleaved (A B C A B C ...) for several rounds, takes medians, samples
# RSS from /proc, measures exec-to-first-200 on /v2/, and prints one table of
# ratios. Everything it starts it stops again, by PID. Two more berths that
# differ only in `--metrics off` ("berth-metrics" and "berth-nometrics": both
# without the self image, on data of their own holding the same image) give
# the cost of the metrics: the "metrics on/off" case runs the same manifest
# GETs against both, alternating which goes first from round to round.
#
#   bench/compare.sh [--rounds N] [--quick] [--no-build] [--out DIR] [--only REGEX]
#
# --quick shrinks the sizes (10 MiB instead of 1 GiB, shorter runs) for a fast look;
# --no-build uses the release binaries already in $CARGO_TARGET_DIR (or target/);
# --only runs just the workloads whose names match REGEX (grep -E), e.g. 'push'.
# Variants of berth run in the same rounds on the rows that concern them, and are
# reported as ratios to plain berth: with a bearer token from its token service
# and with Basic credentials on every request (manifest GETs), and over TLS
# (10 MiB GETs, copying client: TLS cannot discard in the kernel).
# Needs: docker-registry, nginx-light, jq, htpasswd (apache2-utils), openssl
# (installed with apt-get when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh
export PATH="$HOME/.cargo/bin:/usr/sbin:/sbin:$PATH"

rounds=3
quick=0
build=1
out=""
only=""
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds="$2"; shift 2 ;;
    --quick) quick=1; shift ;;
    --no-build) build=0; shift ;;
    --out) out="$2"; shift 2 ;;
    --only) only="$2"; shift 2 ;;
    *) echo "usage: $0 [--rounds N] [--quick] [--no-build] [--out DIR] [--only REGEX]" >&2; exit 2 ;;
  esac
done

log() { printf '== %s\n' "$*" >&2; }

need=()
command -v docker-registry >/dev/null || need+=(docker-registry)
command -v nginx >/dev/null || need+=(nginx-light)
command -v jq >/dev/null || need+=(jq)
command -v curl >/dev/null || need+=(curl)
command -v htpasswd >/dev/null || need+=(apache2-utils)
command -v openssl >/dev/null || need+=(openssl)
if ((${#need[@]})); then
  log "installing ${need[*]}"
  sudo_cmd=""
  [ "$(id -u)" = 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -q --no-install-recommends "${need[@]}"
fi
# Debian starts a docker-registry service on :5000 on install; it is not ours
# and does not matter (we use our own ports), so it is left alone.

if [ "$build" = 1 ]; then
  log "building berth and berth-bench (release)"
  cargo build --release -q -p berth -p berth-bench
fi
bin="${CARGO_TARGET_DIR:-target}/x86_64-unknown-linux-gnu/release"
bench="$bin/berth-bench"

work="$(mktemp -d /tmp/berth-compare.XXXXXX)"
[ -n "$out" ] || out="$work/out"
mkdir -p "$out"
results="$out/results.jsonl"
: >"$results"

declare -A pid url extra
servers=(berth distribution nginx)
# berth with authentication or TLS (see the top); not in the startup and RSS rows.
variants=(berth-bearer berth-basic berth-tls berth-metrics berth-nometrics)


cleanup() {
  for s in "${servers[@]}" "${variants[@]}"; do stop_pid "${pid[$s]:-}"; done
  rm -rf "$work"/data-berth* "$work/data-distribution" "$work/static" "$work/dd.tmp" "$work/disk-write.tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_berth="$("$bench" free-port)"
port_distribution="$("$bench" free-port)"
port_nginx="$("$bench" free-port)"
url[berth]="http://127.0.0.1:$port_berth"
url[distribution]="http://127.0.0.1:$port_distribution"
url[nginx]="http://127.0.0.1:$port_nginx"
for v in "${variants[@]}"; do
  port="$("$bench" free-port)"
  url[$v]="http://127.0.0.1:$port"
  [ "$v" != berth-tls ] || url[$v]="https://localhost:$port"
  mkdir -p "$work/data-$v"
done

# A CA and a certificate for localhost (berth-tls), a bcrypt user at
# htpasswd's default cost (berth-bearer, berth-basic).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=bench CA" \
  -keyout "$work/ca.key" -out "$work/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=localhost" \
  -keyout "$work/tls.key" -out "$work/tls.csr" 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >"$work/tls.ext"
openssl x509 -req -in "$work/tls.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" -CAcreateserial -days 2 \
  -extfile "$work/tls.ext" -out "$work/tls.pem" 2>/dev/null
htpasswd -cbB "$work/htpasswd" bench bench-pw 2>/dev/null
mkdir -p "$work/data-berth" "$work/data-distribution" "$work/static/v2" "$work/nginx"

# Per-request logging is off for both registries: berth --log warn, distribution
# at level error with its access log disabled. nginx: access_log off.
distribution_config "$work/distribution.yml" "$work/data-distribution" "127.0.0.1:$port_distribution"

printf '{}' >"$work/static/v2/index.json"
cat >"$work/nginx.conf" <<NGINX
daemon off;
user root;
worker_processes auto;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log error;
events { worker_connections 4096; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 10000000;
  keepalive_timeout 120s;
  client_body_temp_path $work/nginx/body;
  proxy_temp_path $work/nginx/proxy;
  default_type application/octet-stream;
  server {
    listen 127.0.0.1:$port_nginx;
    root $work/static;
    location = /v2/ { default_type application/json; try_files /v2/index.json =404; }
  }
}
NGINX

server_cmd() {
  case "$1" in
    berth) echo "$bin/berth serve --listen 127.0.0.1:$port_berth --data $work/data-berth --log warn" ;;
    distribution) echo "docker-registry serve $work/distribution.yml" ;;
    nginx) echo "nginx -c $work/nginx.conf" ;;
    berth-*)
      local v="$1" a
      a="$bin/berth serve --listen 127.0.0.1:${url[$1]##*:} --data $work/data-$1 --log warn --no-self-image"
      case "$v" in
        berth-bearer) a="$a --htpasswd $work/htpasswd --token --token-expiry-secs 86400" ;;
        berth-basic) a="$a --htpasswd $work/htpasswd" ;;
        berth-tls) a="$a --tls-cert $work/tls.pem --tls-key $work/tls.key" ;;
        berth-nometrics) a="$a --metrics off" ;;
      esac
      echo "$a" ;;
  esac
}

# Starts a variant in the background and waits until /v2/ answers.
start_variant() {
  local v="$1"
  # shellcheck disable=SC2046
  $(server_cmd "$v") >"$work/$v.log" 2>&1 &
  pid[$v]=$!
  for _ in $(seq 1 100); do
    curl -s -o /dev/null --cacert "$work/ca.pem" "${url[$v]}/v2/" && return 0
    sleep 0.1
  done
  echo "$v did not start: $(cat "$work/$v.log")" >&2
  exit 1
}

# PIDs whose CPU and RSS count for a server: nginx's master and its workers.
server_pids() {
  local s="$1" p="${pid[$1]}"
  echo "$p"
  if [ "$s" = nginx ]; then
    for c in /proc/[0-9]*/stat; do
      awk -v pp="$p" '$4 == pp {print $1}' "$c" 2>/dev/null || true
    done
  fi
}

pid_args() { local a=(); for p in $(server_pids "$1"); do a+=(--server-pid "$p"); done; echo "${a[@]}"; }

rss_kib() { # sum of a status field (VmRSS, VmHWM) over a server's processes
  local total=0 v
  for p in $(server_pids "$1"); do
    v="$(awk -v f="$2:" '$1 == f {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)"
    total=$((total + ${v:-0}))
  done
  echo "$total"
}

start_server() { # start_server NAME ROUND -> records startup time
  local s="$1" r="$2" line
  # shellcheck disable=SC2046
  line="$("$bench" startup --json --url "${url[$s]}" --pid-file "$work/$s.pid" --log "$work/$s.log" -- $(server_cmd "$s"))"
  pid[$s]="$(cat "$work/$s.pid")"
  [ "$r" = 0 ] || echo "$line" | jq -c --arg s "$s" --argjson r "$r" '{case:"startup", target:$s, round:$r, startup_ms}' >>"$results"
}

machine="$(nproc) cores, $(awk '/model name/ {sub(/.*: /, ""); print; exit}' /proc/cpuinfo), $(free -g | awk '/Mem:/ {print $2}') GiB RAM, kernel $(uname -r)"
log "machine: $machine"
log "work dir: $work, results: $results"

log "startup: exec to first 200 on /v2/, 5 times each, interleaved"
for r in $(seq 1 5); do
  for s in "${servers[@]}"; do
    # This VM evicts clean page cache quickly: read each executable first, so
    # that the measurement is of start-up, not of paging in the binary.
    cat "$bin/berth" "$(command -v docker-registry)" "$(command -v nginx)" >/dev/null
    start_server "$s" "$r"
    sleep 0.2
    stop_pid "${pid[$s]}"
    pid[$s]=""
  done
done
for s in "${servers[@]}"; do start_server "$s" 0; done
for v in "${variants[@]}"; do start_variant "$v"; done
basic="Basic $(printf 'bench:bench-pw' | base64)"
token="$(curl -fsS -H "Authorization: $basic" \
  "${url[berth-bearer]}/token?service=berth&scope=repository:bench/load:pull,push" | jq -r .token)"
extra[berth-bearer]="--authorization Bearer\ $token"
extra[berth-basic]="--authorization Basic\ ${basic#Basic }"
extra[berth-tls]="--cacert $work/ca.pem"
# Idle means after start-up work has settled: berth packages its own image in
# the background right after start (1-4 s here); a request for that image
# waits until it is ready.
for s in berth; do
  curl -sf -o /dev/null --max-time 60 -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
    "${url[$s]}/v2/berth/manifests/latest" || log "$s: berth's self image did not become ready"
done
sleep 3
for s in "${servers[@]}"; do
  jq -nc --arg s "$s" --argjson k "$(rss_kib "$s" VmRSS)" '{case:"idle RSS", target:$s, round:0, rss_kib:$k}' >>"$results"
done

# Pulls are warmed up (each object fetched once, untimed) right before they
# are measured: the numbers are of serving from the page cache, not of the
# disk. (This VM's DAMON pages out memory idle for a few seconds, so data
# written minutes earlier may no longer be cached.)
if [ "$quick" = 1 ]; then
  big_pull=10MiB; big=10MiB; dur=2; small_n=300; big_push_n=5
else
  big_pull=1GiB; big=1GiB; dur=4; small_n=1000; big_push_n=1
fi

# name | servers | berth-bench arguments
cases=(
  "manifest GET c64|berth distribution nginx berth-bearer berth-basic|--workload pull-manifest -c 64 -d $dur --warmup"
  "manifest GET c64 metrics on/off|berth-metrics berth-nometrics|--workload pull-manifest -c 64 -d $dur --warmup"
  "GET tag c64|berth distribution nginx|--workload get-tag -c 64 -d $dur --warmup"
  "HEAD tag c64|berth distribution nginx|--workload head-tag -c 64 -d $dur --warmup"
  "1KiB blob GET c64|berth distribution nginx|--workload pull-blob --size 1KiB -c 64 -d $dur --warmup"
  "1KiB blob HEAD c64|berth distribution nginx|--workload head-blob --size 1KiB -c 64 -d $dur --warmup"
  "10MiB blob GET c8|berth distribution nginx berth-tls|--workload pull-blob --size 10MiB -c 8 -d $dur --warmup"
  "10MiB blob GET c64|berth distribution nginx|--workload pull-blob --size 10MiB -c 64 -d $dur --warmup"
  "$big_pull blob GET c1|berth distribution nginx|--workload pull-blob --size $big_pull -c 1 -n 4 --warmup"
  # The same pulls with a client that lets the kernel drop the bodies instead
  # of copying them: with the copying client the client needs as much of the
  # 2 cores as the servers, and bounds what is measured.
  "10MiB blob GET c8 discard|berth distribution nginx|--workload pull-blob --size 10MiB -c 8 -d $dur --warmup --discard"
  "10MiB blob GET c64 discard|berth distribution nginx|--workload pull-blob --size 10MiB -c 64 -d $dur --warmup --discard"
  "$big_pull blob GET c1 discard|berth distribution nginx|--workload pull-blob --size $big_pull -c 1 -n 4 --warmup --discard"
  "disk write $big incompressible+fdatasync|disk|disk-write --size $big"
  "disk write $big incompressible O_DIRECT+fdatasync|disk|disk-write --direct --size $big"
  "$big push monolithic c1|berth distribution|--workload push-monolithic --size $big -c 1 -n $big_push_n"
  "$big push 5MiB chunks c1|berth distribution|--workload push-chunked --size $big --chunk-size 5MiB -c 1 -n $big_push_n"
  "1KiB push x$small_n c8|berth distribution|--workload push-monolithic --size 1KiB -c 8 -n $small_n"
)
if [ -n "$only" ]; then
  selected=()
  for c in "${cases[@]}"; do
    if printf '%s\n' "${c%%|*}" | grep -Eq -- "$only"; then selected+=("$c"); fi
  done
  ((${#selected[@]})) || { echo "--only $only matches no workload" >&2; exit 2; }
  cases=("${selected[@]}")
fi

log "preparing pull data (pushed to both registries, written as files for nginx)"
declare -A prepared=()
for c in "${cases[@]}"; do
  IFS='|' read -r name targets args <<<"$c"
  case "$args" in *pull-*|*head-*|*get-tag*) ;; *) continue ;; esac
  args="${args/--warmup/}"
  args="${args/--discard/}"
  for s in $targets; do
    # The discarding pulls read the same data as the copying ones.
    [ -z "${prepared[$s $args]:-}" ] || continue
    prepared[$s $args]=1
    case "$s" in
      # shellcheck disable=SC2086
      nginx) "$bench" run --url "${url[nginx]}" $args --static-root "$work/static" ;;
      # (eval: a variant's arguments hold a quoted header value)
      *) eval "\"\$bench\" run --url \"${url[$s]}\" ${extra[$s]:-} $args --setup-only" ;;
    esac
  done
done
sync

# The disk baseline is for the pushes: only when a push or disk case runs.
disk_cases=0
for c in "${cases[@]}"; do case "$c" in *push-*|*"|disk|"*) disk_cases=1 ;; esac; done
[ "$disk_cases" = 1 ] && log "disk baseline: new-file write of zeros with fdatasync (dd; zeros may be compressed below the guest)"
for r in $(seq 1 "$rounds"); do
  [ "$disk_cases" = 1 ] || break
  rm -f "$work/dd.tmp"
  # dd reports "<bytes> bytes (...) copied, <secs> s, <rate>".
  secs="$(LC_ALL=C dd if=/dev/zero of="$work/dd.tmp" bs=1M count=1024 conv=fdatasync 2>&1 |
    sed -n 's/.*copied, \([0-9.e-]*\) s.*/\1/p')"
  rm -f "$work/dd.tmp"
  jq -nc --argjson r "$r" --argjson secs "$secs" \
    '{case:"disk dd zeros 1GiB+fdatasync", target:"disk", round:$r, mb_per_s:(1073741824 / $secs / 1e6)}' >>"$results"
done

log "running ${#cases[@]} workloads x $rounds rounds, interleaved"
for r in $(seq 1 "$rounds"); do
  for c in "${cases[@]}"; do
    IFS='|' read -r name targets args <<<"$c"
    # A pair measured against each other takes turns at going first.
    case "$name" in *"on/off"*) [ $((r % 2)) = 1 ] || targets="$(echo "$targets" | awk '{print $2, $1}')" ;; esac
    if [ "$targets" = disk ]; then
      sync
      # The disk's own rate, in the same rounds as the pushes it is compared with.
      # shellcheck disable=SC2086
      line="$("$bench" $args --path "$work/disk-write.tmp" --json)"
      echo "$line" | jq -c --arg c "$name" --argjson r "$r" '. + {case:$c, target:"disk", round:$r}' >>"$results"
      echo "$line" | jq -r --arg c "$name" --argjson r "$r" '"  round \($r) disk: \($c): \(.mb_per_s|floor) MB/s"' >&2
      continue
    fi
    for s in $targets; do
      # A push must not find the disk still busy writing back what the
      # previous run left dirty (distribution fsyncs nothing, so its 1 GiB
      # pushes leave seconds of writeback behind): that would be charged to
      # whichever server syncs next.
      case "$args" in *push-*) sync ;; esac
      # (eval: a variant's arguments hold a quoted header value)
      if ! line="$(eval "\"\$bench\" run --json --no-setup --url \"${url[$s]}\" ${extra[$s]:-} $args $(pid_args "$s")")"; then
        log "errors in '$name' against $s (round $r): $(echo "$line" | jq -c .first_errors 2>/dev/null)"
      fi
      echo "$line" | jq -c --arg c "$name" --arg s "$s" --argjson r "$r" '. + {case:$c, target:$s, round:$r}' >>"$results"
      echo "$line" | jq -r --arg c "$name" --arg s "$s" --argjson r "$r" \
        '"  round \($r) \($s): \($c): \(.requests_per_s|floor) req/s, \(.mb_per_s|floor) MB/s, p99 \(.latency.p99_ms) ms, errors \(.errors), client \(.client_cpu_cores*100|floor)% CPU"' >&2
    done
  done
done

for s in "${servers[@]}"; do
  jq -nc --arg s "$s" --argjson k "$(rss_kib "$s" VmHWM)" '{case:"peak RSS (VmHWM, whole run)", target:$s, round:0, rss_kib:$k}' >>"$results"
done

log "table"
bash bench/table.sh "$results" | tee "$out/table.txt"
echo
echo "machine: $machine"
echo "raw results: $results"
