#!/usr/bin/env bash
# GPU benchmark on a bare GPU machine (no Rust, no npm there), following ../shared/gpu/README.md.
#
#   bash benches/gpu.sh prepare     here: builds the addon, the kernel bench binary and a
#                                   bundled JS bench into .device/ (git-ignored), and packs
#                                   Node + the Vulkan loader with ../shared/gpu/pack.sh
#   . .device/on-device.sh && bash benches/gpu.sh run      on the GPU machine (carry .device
#                                   and the .node addon); JSON lines go to $OUT/gpu-bench.jsonl
#
# The kernel bench (GEMM 4096^3 / 8192^3, conv2d) is cortex-wgpu's `gpu_bench` example; the
# model bench (convnet train at batch 1024, inference at batch 8192, ratios to the H200 PyTorch
# anchors) is benches/gpu_bench.ts. Copy the lines into benches/RESULTS.md with the device name.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

case "${1:-}" in
prepare)
  npm run build
  cargo build --release -p cortex-wgpu --example gpu_bench
  bash ../shared/gpu/pack.sh
  mkdir -p .device
  cp target/release/examples/gpu_bench .device/gpu_bench
  # One ESM file with the TypeScript bench and the library; the addon stays a separate file,
  # loaded from crates/node/ as in a checkout.
  npx esbuild benches/gpu_bench.ts --bundle --platform=node --format=esm --target=node20 \
    --outfile=.device/gpu_bench.mjs --external:'*.node' --log-level=warning
  ;;
run)
  out="${OUT:-.}/gpu-bench.jsonl"
  nvidia-smi --query-gpu=name,driver_version --format=csv,noheader || true
  .device/gpu_bench | tee -a "$out"
  node .device/gpu_bench.mjs | tee -a "$out"
  ;;
*)
  echo "usage: bash benches/gpu.sh prepare|run" >&2
  exit 2
  ;;
esac
