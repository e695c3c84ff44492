#!/usr/bin/env bash
# The whole test suite on a fresh machine (Rust toolchain, gcc, Python 3.11, pip): installs what the
# tests need, then runs them. `.ci/run` calls this.
set -euo pipefail
cd "$(dirname "$0")/.."

# (The wgpu and cuda backends' issues add their installs here: mesa-vulkan-drivers, the NVRTC wheel.)

export RUST_BACKTRACE=1
cargo build --release --locked --all-targets
cargo test --release --locked 2>&1 | tee target/test.log
# Benchmarks compile and run once in smoke mode (no timing asserted).
cargo bench --locked --bench runtime -- --batch 2 --steps 1 --prompts 2 --layers 2
# One closing line over every test binary (cargo prints one per binary, the last being doc-tests).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed/) p += $(i-1); if ($i ~ /^failed/) f += $(i-1) } }
     END { printf "tests: %d passed, %d failed\n", p, f }' target/test.log
