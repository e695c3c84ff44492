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

# cuda backend: g++ builds the CUDA emulator (build.rs), and NVRTC from its PyPI wheel compiles every
# kernel for sm_80/sm_90 in tests/cuda_nvrtc.rs (no GPU or CUDA toolkit needed).
if ! command -v g++ >/dev/null && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    apt-get install -y --no-install-recommends g++ >/dev/null || { apt-get update >/dev/null && apt-get install -y --no-install-recommends g++ >/dev/null; }
fi
nvrtc_wheel="nvidia-cuda-nvrtc-cu12==12.9.*"
pip_install() { PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check "$@"; }
# (A Debian-managed Python refuses plain installs (PEP 668); the wheel only adds a shared library.)
pip_install "$nvrtc_wheel" || pip_install --break-system-packages "$nvrtc_wheel" \
    || echo "!!!!!!!! could not install $nvrtc_wheel: the NVRTC compile tests will skip (and fail under CI=true) !!!!!!!!"
if NVRTC_LIB="$(python3 -c 'import nvidia.cuda_nvrtc as m, os; print(os.path.join(list(m.__path__)[0], "lib"))' 2>/dev/null)"; then
    export LD_LIBRARY_PATH="$NVRTC_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi

export RUST_BACKTRACE=1
cargo build --release --locked --all-targets
cargo test --release --locked 2>&1 | tee target/test.log
# Benchmarks compile and run once in smoke mode (no timing asserted).
cargo bench --locked --bench runtime -- --batch 2 --steps 1 --prompts 2 --layers 2
cargo bench --locked --bench runtime -- --backend cuda-emu --batch 2 --steps 1 --prompts 2 --layers 2
# One closing line over every test binary (cargo prints one per binary, the last being doc-tests).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed/) p += $(i-1); if ($i ~ /^failed/) f += $(i-1) } }
     END { printf "tests: %d passed, %d failed\n", p, f }' target/test.log
