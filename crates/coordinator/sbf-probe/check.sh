#!/usr/bin/env bash
# Link every coordinator-core transition for SBF (SBPF v0) with Debian's rustc and the
# sbpf-linker that scripts/build-sbf.sh installs. Exit 0 and print the .so size on success.
# The prebuilt compiler_builtins is passed explicitly: it provides memset/memcpy, which LLVM
# calls for large copies (the state's round and bloom filters).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
linker="${PSYCHE_CACHE:-$HOME/.cache/psyche}/sbpf-linker-0.1.9/bin/sbpf-linker"
[ -x "$linker" ] || { echo "sbf-probe: no $linker (run scripts/build-sbf.sh once)" >&2; exit 2; }
cb=$(ls /usr/lib/rustlib/bpfel-unknown-none/lib/libcompiler_builtins-*.rlib | head -1)
target="${CARGO_TARGET_DIR:-/tmp/psyche-sbf-probe}"
cd "$here"
RUSTC=/usr/bin/rustc CARGO_TARGET_DIR="$target" \
  CARGO_TARGET_BPFEL_UNKNOWN_NONE_LINKER="$linker" \
  CARGO_TARGET_BPFEL_UNKNOWN_NONE_RUSTFLAGS="-C link-arg=--deploy=false -C link-arg=$cb" \
  /usr/bin/cargo build --release --target bpfel-unknown-none -j 2
so="$target/bpfel-unknown-none/release/libpsyche_core_sbf_probe.so"
echo "sbf-probe: linked $(stat -c %s "$so") bytes: every core transition builds for SBPF v0"
