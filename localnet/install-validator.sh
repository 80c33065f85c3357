#!/usr/bin/env bash
# Installs solana-test-validator (Agave, pinned) from crates.io into a cache outside the clone.
# The official release installer cannot run here, so this builds it from source once (tens of
# minutes on 2 cores: see docs/decisions/0001-sbf-toolchain.md); a later run is a no-op.
set -euo pipefail

VERSION="3.1.12"
CACHE="${PSYCHE_CACHE:-$HOME/.cache/psyche}"
ROOT_DIR="$CACHE/validator-$VERSION"
BIN="$ROOT_DIR/bin/solana-test-validator"
LOG="$CACHE/logs/validator-build.log"

die() {
  echo "install-validator: $*" >&2
  exit 1
}

if [ -x "$BIN" ]; then
  echo "install-validator: $BIN is present ($("$BIN" --version 2>/dev/null || echo "version unknown"))"
  exit 0
fi

command -v cargo >/dev/null || die "cargo is not on PATH; run scripts/install-system-deps.sh"
command -v clang >/dev/null || die "clang is missing (RocksDB's bindings need it); run scripts/install-system-deps.sh"
command -v protoc >/dev/null || echo "install-validator: note: protoc not on PATH; the build uses the vendored one if it can"

mkdir -p "$CACHE/logs"
echo "install-validator: building agave-validator $VERSION (solana-test-validator) into $ROOT_DIR"
echo "install-validator: this takes a long time on a small machine; progress below, full log in $LOG"
start=$(date +%s)
# PSYCHE_BUILD_JOBS caps cargo's parallelism on a shared machine (default: cargo's own).
jobs=()
[ -n "${PSYCHE_BUILD_JOBS:-}" ] && jobs=(-j "$PSYCHE_BUILD_JOBS")
# `time` output goes to the log as well, so build times can be read back from it.
set +e
{
  # opt-level 1 and no debug info: the test validator is idle most of the time, and this cuts
  # the fresh-machine build (the longest step of `make test`); PSYCHE_VALIDATOR_OPT overrides.
  time CARGO_TARGET_DIR="$CACHE/validator-target" \
    CARGO_PROFILE_RELEASE_OPT_LEVEL="${PSYCHE_VALIDATOR_OPT:-1}" CARGO_PROFILE_RELEASE_DEBUG=false \
    cargo install agave-validator \
    --version "$VERSION" --bin solana-test-validator --locked --root "$ROOT_DIR" "${jobs[@]}"
} 2>&1 | tee "$LOG" | grep --line-buffered -E '^\s*(Compiling|Installing|Installed|Finished|error)|^real'
status=${PIPESTATUS[0]}
set -e
[ "$status" -eq 0 ] || die "cargo install agave-validator $VERSION failed (exit $status); see $LOG"
[ -x "$BIN" ] || die "the build finished but $BIN is missing; see $LOG"
echo "install-validator: installed $BIN in $(($(date +%s) - start)) s"
