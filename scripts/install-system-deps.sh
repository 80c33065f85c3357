#!/usr/bin/env bash
# Installs the Debian 12 packages the build needs (only the missing ones; needs root or sudo).
set -euo pipefail
pkgs=(
  curl python3 python3-venv build-essential pkg-config libssl-dev libudev-dev clang libclang-dev protobuf-compiler cmake
  # the WAN tests (tests/wan): network namespaces, tc and nftables
  iproute2 nftables
  # the dashboard's browser test (tests/dashboard): headless Chromium
  chromium
  # SBF toolchain: Debian's rustc-web (1.96, LLVM 22) with prebuilt core/alloc for bpfel
  rustc-web cargo-web libstd-rust-web-dev-bpf rust-web-src llvm-22-dev lld-22 libpolly-22-dev libzstd-dev
)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "[system-deps] all present"
  exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo
echo "[system-deps] installing: ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
