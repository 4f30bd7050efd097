#!/usr/bin/env bash
# Runs every test of berth on a bare Debian machine: installs what is missing
# (apt packages, dockerd), starts dockerd if none is running and the S3
# engines (Ceph RGW, SeaweedFS) for the tests of the S3 backend, checks format
# and lints, runs all tests (unit, integration, real-client), a short smoke run
# of the benchmark, then stops what it started.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:/usr/local/bin:/usr/sbin:/sbin:$PATH"

log() { printf '\n== %s\n' "$*"; }

# docker-registry is CNCF distribution, the reference the compatibility tests
# serve berth's data directory with (and the reverse). podman needs no setup
# beyond its package: the tests give it its own vfs storage in a temp dir.
# chromium and chromium-driver run the web page's browser tests (web_page.rs).
apt_packages=(docker.io skopeo podman busybox-static docker-registry ca-certificates curl python3-venv chromium chromium-driver)
missing=()
for p in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  log "installing ${missing[*]}"
  sudo_cmd=""
  [ "$(id -u)" = 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -q
  # Packages must not start their daemons (dockerd, a docker-registry on
  # :5000): this script starts what it needs itself and stops it at the end.
  policy=/usr/sbin/policy-rc.d
  made_policy=""
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo_cmd tee "$policy" >/dev/null
    $sudo_cmd chmod +x "$policy"
    made_policy=1
  fi
  rc=0
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -q "${missing[@]}" || rc=$?
  [ -z "$made_policy" ] || $sudo_cmd rm -f "$policy"
  [ "$rc" = 0 ] || { echo "apt-get install failed ($rc)" >&2; exit "$rc"; }
fi

rustup component add rustfmt clippy >/dev/null 2>&1 || true

dockerd_pid=""
ceph_started=""
seaweedfs_started=""
cleanup() {
  if [ -n "$ceph_started" ]; then
    log "stopping Ceph RGW"
    bash scripts/s3/stop-ceph-rgw.sh || true
  fi
  if [ -n "$seaweedfs_started" ]; then
    log "stopping SeaweedFS"
    bash scripts/s3/stop-seaweedfs.sh || true
  fi
  if [ -n "$dockerd_pid" ]; then
    log "stopping dockerd (pid $dockerd_pid)"
    kill "$dockerd_pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$dockerd_pid" 2>/dev/null || break; sleep 0.2; done
  fi
}
trap cleanup EXIT

if ! docker info >/dev/null 2>&1; then
  log "starting dockerd"
  dockerd >/tmp/berth-test-dockerd.log 2>&1 &
  dockerd_pid=$!
  for _ in $(seq 1 120); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
  docker info >/dev/null 2>&1 || { tail -50 /tmp/berth-test-dockerd.log; echo "dockerd did not start" >&2; exit 1; }
fi

log "client versions (for the real-client tests)"
docker version --format 'docker client {{.Client.Version}}, engine {{.Server.Version}}'
skopeo --version
podman --version
docker-registry --version
chromium --version
chromedriver --version

log "cargo fmt --check"
cargo fmt --all -- --check

log "cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

log "cargo build --release (the static binary the self image packages)"
cargo build --release --workspace

log "reproducible build (a second build elsewhere gives the same binary)"
bash scripts/reproducible.sh

# What README.md tells a newcomer to type, exactly as written: the run
# command must serve /v2/, and "Using it" must run top to bottom.
bash scripts/readme-commands.sh all

# oras-py for clients_oras (a pinned virtualenv in target/python-clients).
bash scripts/python-clients.sh

# The S3 engines: the backend suite runs against both, berth's S3 tests on
# Ceph RGW. Each script prints the AWS_* exports for its engine; they are
# renamed per engine (BERTH_TEST_S3_<ENGINE>_*) so both can be used at once.
# With CI=true, a test that needs an engine fails when its variables are missing.
s3_exports() { # ENGINE EXPORT-LINES
  local engine=$1 lines=$2 get
  get() { sed -n "s/^export $1=//p" <<<"$lines"; }
  export "BERTH_TEST_S3_${engine}_ENDPOINT=$(get AWS_ENDPOINT_URL)"
  export "BERTH_TEST_S3_${engine}_BUCKET=$(get S3_TEST_BUCKET)"
  export "BERTH_TEST_S3_${engine}_ACCESS_KEY=$(get AWS_ACCESS_KEY_ID)"
  export "BERTH_TEST_S3_${engine}_SECRET_KEY=$(get AWS_SECRET_ACCESS_KEY)"
}
log "starting Ceph RGW (single node, 127.0.0.1:${CEPH_S3_PORT:-7480})"
ceph_started=1
# On a loaded machine a client's first command can reach the new monitor
# before it knows the cluster ("wrong fsid", EPERM): start again from nothing.
ceph_env=""
for attempt in 1 2 3; do
  ceph_env=$(bash scripts/s3/start-ceph-rgw.sh) && break
  echo "Ceph did not start (attempt $attempt); starting again" >&2
  ceph_env=""
  bash scripts/s3/stop-ceph-rgw.sh || true
done
[ -n "$ceph_env" ] || { echo "Ceph RGW did not start" >&2; exit 1; }
s3_exports CEPH "$ceph_env"
log "starting SeaweedFS (127.0.0.1:${SEAWEED_S3_PORT:-8333})"
seaweedfs_started=1
s3_exports SEAWEEDFS "$(bash scripts/s3/start-seaweedfs.sh)"

log "cargo test"
test_log=$(mktemp)
# Doc tests are left out (there are none); every other target runs.
test_status=0
cargo test --workspace --all-targets --no-fail-fast -- --test-threads=2 2>&1 | tee "$test_log" || test_status=$?
# The conformance and client suites again, with every server they start on
# Ceph RGW instead of a data directory (the binaries just built; each server
# on a prefix of its own): the registry API and the real clients on S3.
log "conformance and client suites on Ceph RGW (BERTH_TEST_STORAGE=s3)"
BERTH_TEST_STORAGE=s3 cargo test -p berth --no-fail-fast \
  --test conformance_pull --test conformance_push --test conformance_management --test conformance_discovery \
  --test clients_docker --test clients_skopeo --test clients_podman --test clients_oras \
  -- --test-threads=2 2>&1 | tee -a "$test_log" || test_status=$?
passed=$(grep -oE '^test result: [a-zA-Z]+\. [0-9]+ passed' "$test_log" | awk '{s += $4} END {print s + 0}')
failed=$(grep -oE '; [0-9]+ failed' "$test_log" | awk '{s += $2} END {print s + 0}')
rm -f "$test_log"
if [ "$test_status" != 0 ] || [ "$passed" = 0 ]; then
  echo "cargo test failed (status $test_status, $passed passed, $failed failed)" >&2
  exit 1
fi

# The parsers of network bytes, each fuzzed for a bounded time on its corpus
# (a first run on a fresh machine also installs cargo-fuzz and builds the targets).
log "fuzzing (${FUZZ_SECONDS:=10}s per target)"
FUZZ_SECONDS=$FUZZ_SECONDS bash scripts/fuzz.sh

if [ -f bench/smoke.sh ]; then
  log "benchmark smoke run"
  bash bench/smoke.sh
fi
log "all tests passed"
echo "tests: $passed passed, $failed failed"
