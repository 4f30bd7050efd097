#!/usr/bin/env bash
# Turns the JSON lines of bench/scale.sh into plots (SVG, gnuplot) and a
# Markdown table of the same figures, berth against distribution:
#
#   bench/scale-plot.sh [RESULTS.jsonl] [OUTDIR]
#
# defaults: bench/scale-last-run.jsonl, bench/scale. Writes OUTDIR/*.svg and
# OUTDIR/table.md. Nothing is typed in by hand: every point is a line of the
# results. Installs gnuplot-nox with apt-get when gnuplot is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
results="${1:-bench/scale-last-run.jsonl}"
outdir="${2:-bench/scale}"
mkdir -p "$outdir"

need=()
command -v gnuplot >/dev/null || need+=(gnuplot-nox)
command -v jq >/dev/null || need+=(jq)
if ((${#need[@]})); then
  sudo_cmd=""
  [ "$(id -u)" = 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -q --no-install-recommends "${need[@]}"
fi

# SCALE_PLOT_FORMAT=png for PNG files instead (pngcairo).
format="${SCALE_PLOT_FORMAT:-svg}"
case "$format" in
  svg) term="set terminal svg size 720,440 dynamic font 'sans,12' background '#ffffff'" ;;
  png) term="set terminal pngcairo size 720,440 font 'sans,10' background '#ffffff'" ;;
  *) echo "SCALE_PLOT_FORMAT must be svg or png" >&2; exit 2 ;;
esac
tmp="$(mktemp -d /tmp/berth-scale-plot.XXXXXX)"
trap 'rm -rf "$tmp"' EXIT

# series SERVER CASE XFIELD YEXPR: "x y" lines, sorted by x; startup is the
# median of its rounds.
series() {
  jq -rs --arg s "$1" --arg c "$2" --arg x "$3" "
    def median: sort | .[(length - 1) / 2 | floor];
    map(select(.server == \$s and .case == \$c))
    | group_by(.[\$x]) | map({x: .[0][\$x], y: (map($4) | median)})
    | sort_by(.x) | .[] | \"\(.x) \(.y)\"" "$results"
}

# plot NAME TITLE XLABEL YLABEL LOGY then "file|title|style" series lines.
plot() {
  local name="$1" title="$2" xlabel="$3" ylabel="$4" logy="$5"
  shift 5
  local parts=() spec file t style
  for spec in "$@"; do
    IFS='|' read -r file t style <<<"$spec"
    [ -s "$file" ] || continue
    parts+=("'$file' using 1:2 with linespoints $style title '$t'")
  done
  local joined
  joined="$(printf '%s, ' "${parts[@]}")"
  gnuplot <<GP
$term
set output '$outdir/$name.$format'
set title '$title'
set xlabel '$xlabel'
set ylabel '$ylabel'
set logscale x
$(if [ "$logy" = 1 ]; then echo "set logscale y"; echo "set key top left"; else echo "set yrange [0:*]"; echo "set key bottom right"; fi)
set grid
set termoption noenhanced
set format x '%.0s%c'
plot ${joined%, }
GP
}

b='lw 2 pt 7 lc rgb "#1f77b4"'
b2='lw 2 pt 5 dt 2 lc rgb "#1f77b4"'
b3='lw 2 pt 9 dt 3 lc rgb "#1f77b4"'
d='lw 2 pt 7 lc rgb "#d62728"'
d2='lw 2 pt 5 dt 2 lc rgb "#d62728"'
d3='lw 2 pt 9 dt 3 lc rgb "#d62728"'

for s in berth distribution; do
  series "$s" "catalog n=100 first page" repos .p50_ms >"$tmp/$s-cat-first"
  series "$s" "catalog n=100 deep page" repos .p50_ms >"$tmp/$s-cat-deep"
  series "$s" "tags n=100 first page" tags .p50_ms >"$tmp/$s-tags-first"
  series "$s" "tags n=100 deep page" tags .p50_ms >"$tmp/$s-tags-deep"
  series "$s" "tags unpaged" tags .p50_ms >"$tmp/$s-tags-all"
  series "$s" "manifest GET by tag" tags .p50_ms >"$tmp/$s-manifest"
  series "$s" startup blobs .ms >"$tmp/$s-startup"
  series "$s" idle blobs '.rss_kib / 1024' >"$tmp/$s-rss"
  series "$s" idle blobs '.cpu_ms_until_idle // .cpu_ms_first_3s' >"$tmp/$s-cpu"
  series "$s" "push 1KiB blob + manifest" blobs .ops_per_s >"$tmp/$s-push"
  series "$s" "pull manifest + 1KiB blob" blobs .ops_per_s >"$tmp/$s-pull"
done

plot catalog "GET /v2/_catalog?n=100 (p50, one request at a time)" "repositories" "ms" 1 \
  "$tmp/berth-cat-first|berth, first page|$b" "$tmp/berth-cat-deep|berth, deep page (last= near the end)|$b2" \
  "$tmp/distribution-cat-first|distribution, first page|$d" "$tmp/distribution-cat-deep|distribution, deep page|$d2"
plot tags "GET /v2/<big>/tags/list (p50)" "tags in the repository" "ms" 1 \
  "$tmp/berth-tags-first|berth, n=100 first page|$b" "$tmp/berth-tags-deep|berth, n=100 deep page|$b2" \
  "$tmp/berth-tags-all|berth, unpaged|$b3" \
  "$tmp/distribution-tags-first|distribution, n=100 first page (2.8 ignores n)|$d" \
  "$tmp/distribution-tags-deep|distribution, n=100 deep page|$d2" "$tmp/distribution-tags-all|distribution, unpaged|$d3"
plot manifest-get "GET /v2/<big>/manifests/<tag> (p50)" "tags in the repository" "ms" 1 \
  "$tmp/berth-manifest|berth|$b" "$tmp/distribution-manifest|distribution|$d"
plot startup "exec to first 200 on /v2/ (median of 3 starts)" "blobs on disk" "ms" 1 \
  "$tmp/berth-startup|berth|$b" "$tmp/distribution-startup|distribution|$d"
plot idle-rss "Idle RSS, 3 s after start" "blobs on disk" "MiB" 0 \
  "$tmp/berth-rss|berth|$b" "$tmp/distribution-rss|distribution|$d"
plot start-cpu "CPU the server spends by itself after the start, until idle" "blobs on disk (repositories grow 1:10 with them)" "ms of CPU" 1 \
  "$tmp/berth-cpu|berth|$b" "$tmp/distribution-cpu|distribution|$d"
plot push-pull "1 KiB blob + manifest: pushes and pulls per second (one client)" "blobs on disk" "operations/s" 1 \
  "$tmp/berth-push|berth, push (POST, PUT blob, PUT manifest)|$b" "$tmp/berth-pull|berth, pull (GET manifest, GET blob)|$b2" \
  "$tmp/distribution-push|distribution, push|$d" "$tmp/distribution-pull|distribution, pull|$d2"

# The table: one row per case and size (p50 ms, rates in ops/s), and how
# many times better berth is (distribution/berth for costs, berth/distribution
# for rates).
jq -rs '
def median: sort | .[(length - 1) / 2 | floor];
def fmt: if . == null then "-" elif . >= 100 then (. + 0.5 | floor | tostring)
  elif . >= 10 then ((. * 10 + 0.5 | floor) / 10 | tostring) else ((. * 1000 + 0.5 | floor) / 1000 | tostring) end;
def size: if .case | test("push|pull|startup|idle") then "\(.blobs) blobs (\(.repos) repos, \(.tags) tags)"
  elif .case | test("catalog") then "\(.repos) repositories"
  else "\(.tags) tags" end;
def rows: if .case == "startup" then [{case: "startup, exec to first 200 (ms)", v: .ms, rank: 7}]
  elif .case == "idle" then [{case: "idle RSS (MiB)", v: (.rss_kib / 1024), rank: 8}, {case: "CPU used by itself after the start, until idle (ms)", v: (.cpu_ms_until_idle // .cpu_ms_first_3s), rank: 9}]
  elif .ops_per_s then [{case: "\(.case) (ops/s)", v: .ops_per_s, rate: true, rank: (if .case | test("push") then 10 else 11 end)}]
  else .case as $c | [{case: "\(.case) p50 (ms)", v: .p50_ms,
         rank: (["catalog n=100 first page", "catalog n=100 deep page", "tags n=100 first page", "tags n=100 deep page",
                 "tags unpaged", "manifest GET by tag"] | index($c))}] end;
map(select(.server)) | map(. as $r | rows[] | . + {server: $r.server, size: ($r | size), order: [$r.repos, $r.tags, $r.blobs]})
| group_by([.rank, .order])
| (["| case | size | berth | distribution | berth better by |", "|---|---|--:|--:|--:|"] | .[]),
  (.[] | (map(select(.server == "berth") | .v) | if length > 0 then median else null end) as $b
       | (map(select(.server == "distribution") | .v) | if length > 0 then median else null end) as $d
       | "| \(.[0].case) | \(.[0].size) | \($b | fmt) | \($d | fmt) | "
         + (if $b == null or $d == null or $b == 0 or $d == 0 then "-"
            else (if .[0].rate then $b / $d else $d / $b end) | "\(if . >= 0.1 then (. * 100 + 0.5 | floor) / 100
                 else (. * 10000 + 0.5 | floor) / 10000 end)x" end) + " |")
' "$results" >"$outdir/table.md"
ls "$outdir"
