#!/usr/bin/env bash
# Runs what README.md tells a newcomer to type, exactly as written, so that the
# README cannot drift from the code (its run command once failed and no test
# noticed):
#   run    - the "Run the registry" command: started from the repository root,
#            must answer GET /v2/ on 127.0.0.1:5000, then is stopped.
#   using  - the "Using it" section, top to bottom, in a scratch directory,
#            with the release binary on PATH (the README's install step puts
#            the same binary there); needs docker, curl and skopeo.
# Both listen on port 5000, as the README says; the script refuses to start
# when something else holds it.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
which=${1:-all}

log() { printf '\n== %s\n' "$*"; }

port_free() {
  ! (exec 3<>/dev/tcp/127.0.0.1/5000) 2>/dev/null
}

require_free_port() {
  if ! port_free; then
    echo "port 5000 is in use; the README's commands need it" >&2
    exit 1
  fi
}

# The first ```sh block after the line that starts with $1.
block_after() {
  awk -v start="$1" '
    index($0, start) == 1 { found = 1; next }
    found && /^```sh/ { inside = 1; next }
    inside && /^```/ { exit }
    inside { print }
  ' README.md
}

wait_for_v2() {
  local pid=$1
  for _ in $(seq 1 600); do
    curl -fs http://127.0.0.1:5000/v2/ >/dev/null 2>&1 && return 0
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.5
  done
  return 1
}

run_command() {
  local cmd
  cmd=$(block_after "Run the registry")
  [ -n "$cmd" ] || { echo "README has no run command after 'Run the registry'" >&2; exit 1; }
  log "README run command: $cmd"
  require_free_port
  local had_data=""
  [ -e data ] && had_data=1
  local out
  out=$(mktemp)
  # Its own process group, so stopping it stops cargo and berth alike.
  setsid bash -c "$cmd" >"$out" 2>&1 &
  local pid=$!
  if ! wait_for_v2 "$pid"; then
    cat "$out" >&2
    kill -- -"$pid" 2>/dev/null || true
    echo "the README's run command did not serve /v2/ on 127.0.0.1:5000" >&2
    exit 1
  fi
  echo "serving: $(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:5000/v2/) from /v2/"
  kill -INT -- -"$pid"
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL -- -"$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  grep -q "berth stopped" "$out" || { cat "$out" >&2; echo "berth did not stop cleanly on SIGINT" >&2; exit 1; }
  rm -f "$out"
  [ -n "$had_data" ] || rm -rf data
}

using_section() {
  local script
  script=$(awk '/<!-- using-it:start -->/{f=1;next} /<!-- using-it:end -->/{f=0} f' README.md | grep -v '^```')
  [ -n "$script" ] || { echo "README has no 'Using it' block" >&2; exit 1; }
  log "README 'Using it', top to bottom"
  require_free_port
  local bin="$root/target/x86_64-unknown-linux-gnu/release"
  [ -x "$bin/berth" ] || cargo build --release -p berth
  local dir
  dir=$(mktemp -d)
  # Whatever the block leaves running (its `berth serve &`) goes when we do.
  (
    cd "$dir"
    export PATH="$bin:$PATH"
    # -e: every line must succeed; the block's own `kill %1` ends the server.
    setsid bash -euo pipefail -c "$script" </dev/null
  ) >"$dir/out.log" 2>&1 || {
    grep -v '"berth::access"\|INFO client=' "$dir/out.log" | tail -40 >&2
    pkill -f "berth serve --data ./data" 2>/dev/null || true
    echo "README 'Using it' failed (output above; scratch dir $dir)" >&2
    exit 1
  }
  grep -v 'INFO client=' "$dir/out.log" | tail -8
  for _ in $(seq 1 50); do port_free && break; sleep 0.2; done
  port_free || { echo "the 'Using it' server is still listening after its kill" >&2; exit 1; }
  docker rmi -f 127.0.0.1:5000/berth:latest 127.0.0.1:5000/team/app:1 >/dev/null 2>&1 || true
  rm -rf "$dir"
}

case "$which" in
  run) run_command ;;
  using) using_section ;;
  all) run_command; using_section ;;
  *) echo "usage: $0 [run|using|all]" >&2; exit 2 ;;
esac
