#!/usr/bin/env bash
# Builds the Solana program to target/deploy/psyche_coordinator.so without Solana's
# platform-tools (which cannot be downloaded here):
#   Debian's rustc-web (LLVM 22) compiles the program to LLVM bitcode for bpfel-unknown-none,
#   against the prebuilt core/alloc/compiler_builtins of libstd-rust-web-dev-bpf, and
#   sbpf-linker 0.1.9 (built once against llvm-22-dev, cached under ~/.cache/psyche) links that
#   bitcode into an SBPF v0 ELF.
# Why this route, what else was tried, timings: docs/decisions/0001-sbf-toolchain.md.
# Users with the official toolchain can instead run `cargo build-sbf` in programs/psyche-coordinator.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PROGRAM_DIR="$ROOT/programs/psyche-coordinator"
CACHE="${PSYCHE_CACHE:-$HOME/.cache/psyche}"
SBPF_LINKER_VERSION="0.1.9"
SBPF_LINKER_ROOT="$CACHE/sbpf-linker-$SBPF_LINKER_VERSION"
SBPF_LINKER="$SBPF_LINKER_ROOT/bin/sbpf-linker"
LLVM_PREFIX_DIR="/usr/lib/llvm-22"
RUSTC_BIN="/usr/bin/rustc"
CARGO_BIN="/usr/bin/cargo"
BPF_SYSROOT_LIB="/usr/lib/rustlib/bpfel-unknown-none/lib"
JOBS="${PSYCHE_BUILD_JOBS:-2}"

die() {
  echo "build-sbf: $*" >&2
  exit 1
}

[ -x "$RUSTC_BIN" ] || die "missing $RUSTC_BIN (Debian rustc-web); run scripts/install-system-deps.sh"
[ -x "$CARGO_BIN" ] || die "missing $CARGO_BIN (Debian cargo-web); run scripts/install-system-deps.sh"
[ -x "$LLVM_PREFIX_DIR/bin/llvm-config" ] ||
  die "missing LLVM 22 ($LLVM_PREFIX_DIR/bin/llvm-config; Debian llvm-22-dev); run scripts/install-system-deps.sh"
command -v python3 >/dev/null || die "python3 is needed to list the Solana syscalls"
compgen -G "$BPF_SYSROOT_LIB/libcore-*.rlib" >/dev/null ||
  die "missing prebuilt core for bpfel-unknown-none in $BPF_SYSROOT_LIB (Debian libstd-rust-web-dev-bpf)"

# 1. sbpf-linker, built once. --no-default-features drops the rustc-LLVM proxy; the
#    upstream-gallery-22 feature links the system's libLLVM 22 (LLVM_PREFIX tells bpf-linker's
#    build script where it is).
if [ ! -x "$SBPF_LINKER" ]; then
  mkdir -p "$CACHE/logs"
  log="$CACHE/logs/sbpf-linker-build.log"
  echo "build-sbf: installing sbpf-linker $SBPF_LINKER_VERSION into $SBPF_LINKER_ROOT (a few minutes; log: $log)"
  start=$(date +%s)
  if ! LLVM_PREFIX="$LLVM_PREFIX_DIR" RUSTC="$RUSTC_BIN" \
    CARGO_TARGET_DIR="$CACHE/sbpf-linker-target" \
    "$CARGO_BIN" install sbpf-linker --version "$SBPF_LINKER_VERSION" --locked \
    --no-default-features --features upstream-gallery-22 \
    --root "$SBPF_LINKER_ROOT" -j "$JOBS" >"$log" 2>&1; then
    tail -n 20 "$log" >&2
    die "cargo install sbpf-linker $SBPF_LINKER_VERSION failed (see $log)"
  fi
  echo "build-sbf: sbpf-linker installed in $(($(date +%s) - start)) s"
fi

# 2. The program.
echo "build-sbf: building programs/psyche-coordinator for SBF"
start=$(date +%s)
cd "$PROGRAM_DIR"
"$CARGO_BIN" fetch --locked -q ||
  die "cargo fetch --locked failed for programs/psyche-coordinator; if its Cargo.lock is out of date (e.g. crates/coordinator gained a dependency), run \`cargo update --workspace\` in programs/psyche-coordinator and commit the lock file"

# Syscalls must be "exported": bpf-linker internalizes every symbol not in its export list,
# declarations included, and LLVM then deletes the arguments of the (now internal) syscall
# declarations, so calls like sol_log_(ptr, len) are emitted with no arguments set up. Exported,
# they stay external and sbpf-linker turns them into SBPF v0 syscall relocations. The names
# come from the sources of the solana-define-syscall version(s) this build resolves.
syscalls=$(RUSTC="$RUSTC_BIN" "$CARGO_BIN" metadata --format-version 1 --locked \
  --filter-platform bpfel-unknown-none 2>/dev/null | python3 -c '
import json, os, re, sys
names = set()
for pkg in json.load(sys.stdin)["packages"]:
    if pkg["name"] == "solana-define-syscall":
        src = os.path.join(os.path.dirname(pkg["manifest_path"]), "src", "definitions.rs")
        names.update(re.findall(r"fn ([a-z_][a-z0-9_]*)", open(src).read()))
print(",".join(sorted(names)))
') || die "could not list the Solana syscalls (cargo metadata / python3 failed)"
[ -n "$syscalls" ] || die "found no solana-define-syscall in the program's dependencies to list syscalls"

# The linker is set for the bpfel target only, so build scripts and proc macros still build for
# the host. --deploy=false stops sbpf-linker from writing its own ./target/deploy copy relative
# to the working directory; the artifact is copied below.
RUSTC="$RUSTC_BIN" \
  CARGO_TARGET_DIR="$ROOT/target/sbf" \
  CARGO_TARGET_BPFEL_UNKNOWN_NONE_LINKER="$SBPF_LINKER" \
  CARGO_TARGET_BPFEL_UNKNOWN_NONE_RUSTFLAGS="-C link-arg=--deploy=false -C link-arg=--export=$syscalls" \
  "$CARGO_BIN" build --release --locked --target bpfel-unknown-none -j "$JOBS" ||
  die "cargo build of programs/psyche-coordinator for bpfel-unknown-none failed (errors above)"
cd "$ROOT"

artifact="$ROOT/target/sbf/bpfel-unknown-none/release/libpsyche_coordinator.so"
[ -s "$artifact" ] || die "the build produced no $artifact"
mkdir -p "$ROOT/target/deploy"
cp "$artifact" "$ROOT/target/deploy/psyche_coordinator.so"
echo "build-sbf: target/deploy/psyche_coordinator.so ($(stat -c %s "$ROOT/target/deploy/psyche_coordinator.so") bytes) in $(($(date +%s) - start)) s"
