#!/usr/bin/env bash
# Runs each fuzz target (fuzz/fuzz_targets) for a bounded time on its seed
# corpus (fuzz/corpus/<target>), with libFuzzer through cargo-fuzz. New inputs
# go to a scratch directory, so the committed seeds stay as they are. A crash
# fails the run; libFuzzer leaves the input in fuzz/artifacts/<target>/, and it
# belongs in a regression unit test next to the parser.
#
#   scripts/fuzz.sh                  every target, FUZZ_SECONDS (20) each
#   FUZZ_SECONDS=300 scripts/fuzz.sh manifest
#
# FUZZ_SANITIZER (default none): the fuzzed parsers are safe Rust, where what
# fuzzing finds is panics, overflows (checked: cargo-fuzz builds with debug
# assertions) and hangs; AddressSanitizer would double build and run time for
# nothing there. Set FUZZ_SANITIZER=address to use it anyway.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

seconds="${FUZZ_SECONDS:-20}"
sanitizer="${FUZZ_SANITIZER:-none}"
targets=(route reference digest range manifest tar_index auth_header scope htpasswd token upstream_challenge augment_rewrite)
if (($#)); then targets=("$@"); fi

# cargo-fuzz needs a nightly compiler; without one, stable's compiler is told
# to allow nightly flags.
toolchain=()
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  toolchain=(+nightly)
else
  export RUSTC_BOOTSTRAP=1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "== building the fuzz targets"
cargo "${toolchain[@]}" fuzz build -s "$sanitizer"
status=0
for t in "${targets[@]}"; do
  echo "== fuzz $t for ${seconds}s"
  mkdir -p "$work/$t"
  if ! cargo "${toolchain[@]}" fuzz run -s "$sanitizer" "$t" "$work/$t" "fuzz/corpus/$t" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 2>"$work/$t.log"; then
    tail -40 "$work/$t.log"
    echo "fuzz target $t failed: see fuzz/artifacts/$t/" >&2
    status=1
  else
    grep -E 'stat::number_of_executed_units|Done [0-9]+ runs' "$work/$t.log" | tail -1 || true
  fi
done
exit "$status"
