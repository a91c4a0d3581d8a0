#!/usr/bin/env bash
# GPU benchmark on a bare GPU machine (no Rust, no npm there), following ../shared/gpu/README.md.
#
#   bash benches/gpu.sh prepare     here: builds the addon, the kernel bench binary and a
#                                   bundled JS bench into .device/ (git-ignored), and packs
#                                   Node + the Vulkan loader with ../shared/gpu/pack.sh
#   . .device/on-device.sh && bash benches/gpu.sh run      on the GPU machine (carry .device
#                                   and the .node addon); JSON lines go to $OUT/gpu-bench.jsonl,
#                                   the GPU test suites' output to $OUT/gpu-tests.txt
#
# The kernel benches are cortex-wgpu's examples (`gpu_bench`: GEMM 1024^3 / 4096^3 / 8192^3 and
# conv2d; `lstm_bench` and `attention_bench` where present); the test binaries are the GPU
# kernel suite (fixtures included) and the GPU model suite, so conformance is checked on the
# real adapter in the same run. The model bench (convnet train at batch 1024, inference at batch 8192, ratios to the H200 PyTorch
# anchors) is benches/gpu_bench.ts. Copy the lines into benches/RESULTS.md with the device name.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

case "${1:-}" in
prepare)
  npm run build
  cargo build --release -p cortex-wgpu --examples
  bash ../shared/gpu/pack.sh
  mkdir -p .device/bench .device/tests
  for ex in crates/wgpu/examples/*.rs; do
    name=$(basename "$ex" .rs)
    strip -o ".device/bench/$name" "target/release/examples/$name"
  done
  # Test binaries (the test profile is optimised), stripped to keep the carried tree small.
  for t in "cortex-wgpu gpu" "cortex-core gpu_model"; do
    set -- $t
    bin=$(cargo test -p "$1" --test "$2" --no-run --message-format=json 2>/dev/null |
      node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{for(const l of s.split("\n")){try{const m=JSON.parse(l);if(m.executable&&m.target&&m.target.kind.includes("test"))console.log(m.executable)}catch{}}})')
    strip -o ".device/tests/$2" "$bin"
  done
  # One ESM file with the TypeScript bench and the library; the addon stays a separate file,
  # loaded from crates/node/ as in a checkout.
  npx esbuild benches/gpu_bench.ts --bundle --platform=node --format=esm --target=node20 \
    --outfile=.device/gpu_bench.mjs --external:'*.node' --log-level=warning
  ;;
run)
  out="${OUT:-.}/gpu-bench.jsonl"
  nvidia-smi --query-gpu=name,driver_version --format=csv,noheader || true
  tests="${OUT:-.}/gpu-tests.txt"
  # Each suite runs three times with parallel test threads and twice on one thread, so an
  # intermittent failure (a race) shows up, and shows whether it needs concurrency.
  for t in .device/tests/*; do
    for threads in "" "" "" 1 1; do
      echo "== $t ${threads:+--test-threads=$threads}" | tee -a "$tests"
      CORTEX_FIXTURES=test/fixtures/fixtures.json timeout 120 "$t" ${threads:+--test-threads=$threads} 2>&1 |
        grep -E '^test result|FAILED|panicked|max relative error' | tee -a "$tests" || true
    done
  done
  for b in .device/bench/*; do
    # BREAKDOWN=1: lstm_bench adds per-stage times.
    BREAKDOWN=1 timeout 180 "$b" | tee -a "$out" || echo "{\"failed\":\"$b\"}" | tee -a "$out"
  done
  # Stage profiles (stderr, see benches/gpu_bench.ts) also go to $OUT/gpu-profile.jsonl.
  timeout 240 node .device/gpu_bench.mjs 2> >(tee -a "${OUT:-.}/gpu-profile.jsonl" >&2) | tee -a "$out"
  ;;
*)
  echo "usage: bash benches/gpu.sh prepare|run" >&2
  exit 2
  ;;
esac
