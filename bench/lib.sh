# Shared by the benchmark scripts (sourced, not run).

# Stops a process we started (by PID) and waits until it is gone; kill -9
# after 10 s.
stop_pid() {
  local p="$1"
  [ -n "$p" ] || return 0
  kill "$p" 2>/dev/null || return 0
  for _ in $(seq 1 100); do
    [ -e "/proc/$p" ] || return 0
    # Reparented processes may linger as zombies until init reaps them.
    [ "$(awk '{print $3}' "/proc/$p/stat" 2>/dev/null)" = Z ] && return 0
    sleep 0.1
  done
  kill -9 "$p" 2>/dev/null || true
}

# Writes the configuration of CNCF distribution (Debian's docker-registry)
# as the benchmarks run it: filesystem storage under ROOT, listening on ADDR,
# per-request logging off (as berth runs with --log warn), deletes on, upload
# purging off (it would run during the measurements). Lines given as more
# arguments are appended (e.g. a proxy section).
#   distribution_config FILE ROOT ADDR [LINE...]
distribution_config() {
  local file="$1" root="$2" addr="$3"
  shift 3
  cat >"$file" <<YAML
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $root
  cache:
    blobdescriptor: inmemory
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: $addr
YAML
  local line
  for line in "$@"; do printf '%s\n' "$line" >>"$file"; done
}
