#!/usr/bin/env bash
# The whole test suite on a fresh machine (Rust toolchain, gcc, Python 3.11, pip): installs what the
# tests need, then runs them. `.ci/run` calls this.
set -euo pipefail
cd "$(dirname "$0")/.."

# The wgpu tests run every shader on Mesa's CPU Vulkan driver (lavapipe).
if ! dpkg -s mesa-vulkan-drivers libvulkan1 >/dev/null 2>&1; then
    SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq mesa-vulkan-drivers libvulkan1 >/dev/null
fi
# Mesa prints a warning per adapter probe on a headless machine without it.
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"

export RUST_BACKTRACE=1
cargo build --release --locked --all-targets
cargo test --release --locked 2>&1 | tee target/test.log
# Benchmarks compile and run once in smoke mode (no timing asserted).
cargo bench --locked --bench runtime -- --batch 2 --steps 1 --prompts 2 --layers 2
# One closing line over every test binary (cargo prints one per binary, the last being doc-tests).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed/) p += $(i-1); if ($i ~ /^failed/) f += $(i-1) } }
     END { printf "tests: %d passed, %d failed\n", p, f }' target/test.log
