#!/usr/bin/env bash
# Checks that the release binary is reproducible: builds this source tree a
# second time with the README's command, from a copy in another directory and
# with another CARGO_HOME and target directory, and compares the result byte
# for byte with the binary the first build left (test.sh's, or one built here
# if there is none). Equal binaries serve equal self images, so a berth built
# anywhere from this commit must serve the digest printed at the end.
#
#   bash scripts/reproducible.sh [BINARY]
#
# It costs one more release build. It fetches nothing (the second CARGO_HOME
# links the registry index and downloaded crates of the first), and it keeps
# its CARGO_HOME and target directory in target/reproducible/ and its copy of
# the source at a fixed path per checkout, so that a later run compiles again
# only what changed (cargo's fingerprints hold the crates' paths). Remove
# target/reproducible/ to rebuild everything there.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
root=$(pwd -P)
triple=x86_64-unknown-linux-gnu
first=${1:-$root/target/$triple/release/berth}

log() { printf '\n== %s\n' "$*"; }

if [ $# -eq 0 ] && [ ! -x "$first" ]; then
  log "cargo build --release (first build, in $root)"
  cargo build --release --locked
fi
[ -x "$first" ] || { echo "no binary at $first" >&2; exit 1; }

cargo_home=${CARGO_HOME:-$HOME/.cargo}
state=$root/target/reproducible
# The copy must not be below this checkout: cargo merges every .cargo/config.toml
# from the working directory up, and would add this tree's rustflags twice.
work=${TMPDIR:-/tmp}/berth-reproducible-$(printf %s "$root" | cksum | cut -d' ' -f1)
src=$work/elsewhere/berth
rm -rf "$work"
trap 'rm -rf "$work"' EXIT
mkdir -p "$src"
# The working tree as it is (tracked and new files, uncommitted changes
# included), with the files' times, which cargo compares with its last build.
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  # (--ignore-failed-read: a tracked file deleted in the working tree is left out.)
  git ls-files -z --cached --others --exclude-standard |
    tar -cf - --null --no-recursion --ignore-failed-read --files-from=- | tar -xf - -C "$src"
else
  tar -cf - --exclude=./target --exclude=./data . | tar -xf - -C "$src"
fi

# Another CARGO_HOME, as another user would have: the crate sources are
# unpacked again under its own path; the index and downloaded crates are shared.
home2=$state/cargo-home
mkdir -p "$home2/registry"
for d in registry/index registry/cache config.toml config; do
  if [ -e "$cargo_home/$d" ]; then ln -sfn "$cargo_home/$d" "$home2/$d"; fi
done

target2=$state/target
log "cargo build --release (second build, in $src, CARGO_HOME=$home2, target $target2)"
(cd "$src" && CARGO_HOME=$home2 CARGO_TARGET_DIR=$target2 cargo build --release --locked --offline)
second=$target2/$triple/release/berth

a=$(sha256sum "$first" | cut -d' ' -f1)
b=$(sha256sum "$second" | cut -d' ' -f1)
echo "first:  $a  $first"
echo "second: $b  $second"
if [ "$a" != "$b" ]; then
  echo "the two builds differ: the release binary is not reproducible" >&2
  # The usual cause is a path of the build machine; show the strings that differ.
  diff <(strings -n 8 "$first" | sort -u) <(strings -n 8 "$second" | sort -u) | head -20 >&2 || true
  exit 1
fi
echo "reproducible: self image digest $("$first" self-digest)"
