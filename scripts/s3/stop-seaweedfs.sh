#!/usr/bin/env bash
# Stop the SeaweedFS started by start-seaweedfs.sh, by the pid in its pid file only, and wait for it to exit.
DIR=${SEAWEED_DIR:-/tmp/seaweedfs-s3}
[ -f "$DIR.pid" ] || exit 0
p=$(cat "$DIR.pid")
kill "$p" 2>/dev/null || true
for i in $(seq 1 40); do kill -0 "$p" 2>/dev/null || { rm -f "$DIR.pid"; exit 0; }; sleep 0.25; done
kill -9 "$p" 2>/dev/null || true
rm -f "$DIR.pid"
