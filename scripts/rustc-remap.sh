#!/bin/sh
# The rustc wrapper of this workspace (`build.rustc-wrapper` in
# .cargo/config.toml): cargo runs `rustc-remap.sh RUSTC ARGS...` for every
# crate it compiles, and this adds the flags that keep where the build ran out
# of the binary, so that one commit gives one berth binary, byte for byte, in
# any directory and for any user (and so one self-image digest).
#
# rustc writes source paths into panic messages and debug info. cargo gives
# it workspace files relative to the workspace root but the root itself as
# the working directory, and dependencies by absolute path under CARGO_HOME
# (~/.cargo/registry/src/...). Both are remapped to fixed prefixes that still
# say what the file is:
#   <workspace>     -> /build/berth  (workspace files stay relative: crates/berth/src/...)
#   <CARGO_HOME>    -> /cargo        (/cargo/registry/src/index.crates.io-.../tokio-1.x/src/...)
# The standard library's paths are /rustc/<commit>/... already.
#
# Only what goes into the compiled output is remapped (--remap-path-scope=object):
# compiler messages keep the real paths, which editors open.
#
# The paths are absolute and differ per checkout, so they cannot be written in
# config.toml's rustflags (no variables there); cargo 1.95's own answer,
# the `trim-paths` profile option, is not stable yet. Cargo does not fingerprint
# a wrapper: after changing what this script adds, also change the target's
# rustflags in .cargo/config.toml, or built dependencies keep the old paths.
#
# A RUSTC_WRAPPER in the environment (sccache) replaces this one; builds made
# that way are not reproducible across directories.
root=$(CDPATH= cd -- "$(dirname -- "$0")/.." && pwd -P)
set -- "$@" --remap-path-scope=object --remap-path-prefix="$root=/build/berth"
# rustc applies the last matching prefix: CARGO_HOME comes after the
# workspace, so that a CARGO_HOME inside the workspace (some CI caches) maps to
# /cargo. cargo uses CARGO_HOME as spelled (symlinks unresolved): map that
# spelling, and the resolved one too.
cargo_home=${CARGO_HOME:-${HOME:+$HOME/.cargo}}
if [ -n "$cargo_home" ] && [ -d "$cargo_home" ]; then
  set -- "$@" --remap-path-prefix="$cargo_home=/cargo"
  resolved=$(CDPATH= cd -- "$cargo_home" && pwd -P)
  [ "$resolved" = "$cargo_home" ] || set -- "$@" --remap-path-prefix="$resolved=/cargo"
fi
# Generated sources (a build script's OUT_DIR, include!d) live in the target
# directory, which may be outside the workspace (CARGO_TARGET_DIR): map it to
# where it would be inside. Last, so that it wins over the prefixes above.
if [ -n "${CARGO_TARGET_DIR:-}" ] && [ -d "$CARGO_TARGET_DIR" ]; then
  target=$(CDPATH= cd -- "$CARGO_TARGET_DIR" && pwd -P)
  set -- "$@" --remap-path-prefix="$target=/build/berth/target"
  [ "$target" = "$CARGO_TARGET_DIR" ] || set -- "$@" --remap-path-prefix="$CARGO_TARGET_DIR=/build/berth/target"
fi
exec "$@"
