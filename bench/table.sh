#!/usr/bin/env bash
# Prints the comparison table from the JSON lines written by bench/compare.sh:
# the median over rounds of each metric per server, and the ratios
# berth/distribution and berth/nginx, and for the metrics on/off pair
# berth-metrics against berth-nometrics (the same server but for --metrics off). "lower" marks metrics where lower is better.
set -euo pipefail
results="${1:?usage: table.sh results.jsonl}"

jq -rs '
def median: map(select(. != null)) | sort | if length == 0 then null else .[(length - 1) / 2 | floor] end;
def fmt: if . == null then "-" elif . >= 100 then (. + 0.5 | floor | tostring)
  elif . >= 10 then ((. * 10 + 0.5 | floor) / 10 | tostring) else ((. * 1000 + 0.5 | floor) / 1000 | tostring) end;
def ratio($a; $b): if $a == null or $b == null or $b == 0 then "-" else (($a / $b * 100 + 0.5 | floor) / 100 | tostring) + "x" end;
def norm: {case, target, m: {
    "req/s": .requests_per_s,
    "blobs/s": (if (.workload // "" | startswith("push")) then .ops_per_s else null end),
    "MB/s": .mb_per_s,
    "p50 ms (lower)": .latency.p50_ms,
    "p99 ms (lower)": .latency.p99_ms,
    "server CPU s/GB (lower)": (if (.server|type) == "object" then .server.cpu_s_per_gb else null end),
    "server peak RSS MiB (lower)": (if (.server|type) == "object" then .server.rss_peak_kib / 1024 else null end),
    "client CPU cores": .client_cpu_cores,
    "errors": .errors,
    "ms (lower)": .startup_ms,
    "MiB (lower)": (if .rss_kib then .rss_kib / 1024 else null end)
  }};
def metrics($c):
  if $c == "startup" then ["ms (lower)"]
  elif ($c | test("RSS")) then ["MiB (lower)"]
  elif ($c | test("^disk")) then ["MB/s"]
  elif ($c | test("manifest|HEAD|1KiB blob GET")) then ["req/s", "p50 ms (lower)", "p99 ms (lower)", "client CPU cores"]
  elif ($c | test("GET")) then ["MB/s", "p99 ms (lower)", "server CPU s/GB (lower)", "server peak RSS MiB (lower)", "client CPU cores"]
  elif ($c | test("1KiB push")) then ["blobs/s", "p50 ms (lower)", "p99 ms (lower)"]
  else ["MB/s", "server CPU s/GB (lower)", "server peak RSS MiB (lower)"] end;
map(norm) as $rows
| (reduce $rows[].case as $c ([]; if index([$c]) then . else . + [$c] end)) as $cases
| ["case", "metric", "berth", "distribution", "nginx", "berth/dist", "berth/nginx", "metrics off", "on/off"],
  ($cases[] as $c
   | metrics($c)[] as $m
   | ($rows | map(select(.case == $c))) as $r
   | (if $c | test("^disk") then "disk" elif $c | test("on/off") then "berth-metrics" else "berth" end) as $main
   | ([$r[] | select(.target == $main) | .m[$m]] | median) as $b
   | ([$r[] | select(.target == "distribution") | .m[$m]] | median) as $d
   | ([$r[] | select(.target == "nginx") | .m[$m]] | median) as $n
   | ([$r[] | select(.target == "berth-nometrics") | .m[$m]] | median) as $o
   | [$c, $m, ($b | fmt), ($d | fmt), ($n | fmt), ratio($b; $d), ratio($b; $n), ($o | fmt), ratio($b; $o)]),
  (["berth", "distribution", "nginx"] as $s
   | ["all workloads", "errors (sum)"] + [$s[] as $x | [$rows[] | select(.target == $x) | .m.errors // 0] | add | tostring] + ["", ""]
     + [[$rows[] | select(.target == "berth-nometrics") | .m.errors // 0] | add // 0 | tostring, ""])
| @tsv' "$results" | column -t -s $'\t'

# berth's variants (authentication, TLS), each against plain berth in the same
# rounds; berth-nometrics against berth-metrics, its twin with the metrics on.
if jq -e -s 'any(.[]; (.target // "") | startswith("berth-"))' "$results" >/dev/null; then
  echo
  jq -rs '
def median: map(select(. != null)) | sort | if length == 0 then null else .[(length - 1) / 2 | floor] end;
def spread: map(select(. != null)) | if length == 0 then "-" else "\(min | floor)-\(max | floor)" end;
def fmt: if . == null then "-" elif . >= 100 then (. + 0.5 | floor | tostring) else ((. * 100 + 0.5 | floor) / 100 | tostring) end;
def ratio($a; $b): if $a == null or $b == null or $b == 0 then "-" else (($a / $b * 100 + 0.5 | floor) / 100 | tostring) + "x" end;
def metric: if (.case | test("manifest|HEAD")) then {name: "req/s", v: .requests_per_s}
  else {name: "MB/s", v: .mb_per_s} end;
. as $all
| [$all[] | select((.target // "") | startswith("berth-") and . != "berth-metrics")] as $vs
| ($vs | map([.case, .target]) | unique) as $pairs
| ["case", "variant", "metric", "berth", "variant", "variant/berth", "berth range", "variant range", "variant server CPU/GB or us/req"],
  ($pairs[] as [$c, $t]
   | (if $t == "berth-nometrics" then "berth-metrics" else "berth" end) as $base
   | ($all | map(select(.case == $c and .target == $base))) as $b
   | ($all | map(select(.case == $c and .target == $t))) as $v
   | ($b[0] | metric | .name) as $m
   | ([$b[] | metric | .v] | median) as $bm
   | ([$v[] | metric | .v] | median) as $vm
   | ([$v[] | if $m == "req/s" then (.server.cpu_s / ([.requests, 1] | max) * 1e6) else .server.cpu_s_per_gb end] | median) as $cpu
   | ([$b[] | if $m == "req/s" then (.server.cpu_s / ([.requests, 1] | max) * 1e6) else .server.cpu_s_per_gb end] | median) as $bcpu
   | [$c, $t, $m, ($bm | fmt), ($vm | fmt), ratio($vm; $bm), ([$b[] | metric | .v] | spread), ([$v[] | metric | .v] | spread),
      "\($cpu | fmt) (berth \($bcpu | fmt))"])
| @tsv' "$results" | column -t -s $'\t'
fi
