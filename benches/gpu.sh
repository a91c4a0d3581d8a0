#!/usr/bin/env bash
# GPU benchmark on a bare GPU machine (no Rust, no npm there), following ../shared/gpu/README.md.
#
#   bash benches/gpu.sh prepare     here: builds the addon, the kernel bench binary and a
#                                   bundled JS bench into .device/ (git-ignored), and packs
#                                   Node + the Vulkan loader with ../shared/gpu/pack.sh
#   . .device/on-device.sh && bash benches/gpu.sh run      on the GPU machine (carry .device
#                                   and the .node addon); JSON lines go to $OUT/gpu-bench.jsonl
#   . .device/on-device.sh && bash benches/gpu.sh test     the GPU test suites there; their
#                                   output goes to $OUT/gpu-tests.txt
#   . .device/on-device.sh && bash benches/gpu.sh attention   the attention bench 3 times
#                                   in fresh processes, to $OUT/gpu-attention.jsonl
#
# The kernel benches are cortex-wgpu's examples (`gpu_bench`: GEMM 1024^3 / 4096^3 / 8192^3 and
# conv2d; `lstm_bench` and `attention_bench` where present); the test binaries are the GPU
# kernel suite (fixtures included) and the GPU model suite, so conformance is checked on the
# real adapter in the same run. The model bench (convnet train at batch 1024, inference at batch 8192, ratios to the H200 PyTorch
# anchors) is benches/gpu_bench.ts. Copy the lines into benches/RESULTS.md with the device name.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# On the device: the bench and test binaries, unpacked once into .device/{bench,tests}.
unpack() {
  [ -d .device/bench ] || tar -C .device -xJf .device/bins.tar.xz
}

case "${1:-}" in
prepare)
  npm run build
  cargo build --release -p cortex-wgpu --examples
  bash ../shared/gpu/pack.sh
  rm -rf .device/bench .device/tests .device/bins.tar.xz
  mkdir -p .device/bench .device/tests
  for ex in crates/wgpu/examples/*.rs; do
    name=$(basename "$ex" .rs)
    strip -o ".device/bench/$name" "target/release/examples/$name"
  done
  # Test binaries (the test profile is optimised), stripped to keep the carried tree small.
  for t in "cortex-wgpu gpu" "cortex-core gpu_model" "cortex-core gpu_model_options" "cortex-core gpu_merge" "cortex-core gpu_bidirectional" "cortex-core gpu_masking"; do
    set -- $t
    bin=$(cargo test -p "$1" --test "$2" --no-run --message-format=json 2>/dev/null |
      node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{for(const l of s.split("\n")){try{const m=JSON.parse(l);if(m.executable&&m.target&&m.target.kind.includes("test"))console.log(m.executable)}catch{}}})')
    strip -o ".device/tests/$2" "$bin"
  done
  # The binaries travel xz-packed (the carried tree must stay under 64 MiB); `unpack` below
  # restores them on the device.
  tar -C .device -cJf .device/bins.tar.xz bench tests
  rm -rf .device/bench .device/tests
  # One ESM file with the TypeScript bench and the library; the addon stays a separate file,
  # loaded from crates/node/ as in a checkout.
  npx esbuild benches/gpu_bench.ts --bundle --platform=node --format=esm --target=node20 \
    --outfile=.device/gpu_bench.mjs --external:'*.node' --log-level=warning
  ;;
run)
  unpack
  # Benchmarks first (a time limit that cuts the run short still leaves them in $OUT).
  out="${OUT:-.}/gpu-bench.jsonl"
  nvidia-smi --query-gpu=name,driver_version --format=csv,noheader || true
  for b in .device/bench/*; do
    # BREAKDOWN=1: lstm_bench adds per-stage times.
    BREAKDOWN=1 timeout 180 "$b" | tee -a "$out" || echo "{\"failed\":\"$b\"}" | tee -a "$out"
  done
  # Stage profiles (stderr, see benches/gpu_bench.ts) also go to $OUT/gpu-profile.jsonl.
  timeout 240 node .device/gpu_bench.mjs 2> >(tee -a "${OUT:-.}/gpu-profile.jsonl" >&2) | tee -a "$out"
  # The same models through the layers' own code on GPU tensors (issue 15's one-tensor path),
  # in the same session: the figures that decide whether the planner stays.
  ENGINE=layers GPU_BENCH_PROFILE=0 timeout 240 node .device/gpu_bench.mjs | tee -a "$out" ||
    echo '{"failed":"gpu_bench.mjs ENGINE=layers"}' | tee -a "$out"
  # The same library bench under wgpu's full run-time checks, and with one queue submission
  # per kernel call: what each of those defaults is worth, measured in the same session.
  # GPU_BENCH_VARIANTS replaces that list (CORTEX_CONV_KERNEL=tile64: the first conv layer
  # as implicit GEMM + bias_add, as before the direct short-k kernel); QUICK=1 skips the
  # full-checks reruns of the LSTM and attention benches, for a short device budget.
  for variant in ${GPU_BENCH_VARIANTS-CORTEX_WGPU_CHECKS=full CORTEX_WGPU_RECORD=0}; do
    env "$variant" GPU_BENCH_PROFILE=0 timeout 150 node .device/gpu_bench.mjs | tee -a "$out" ||
      echo "{\"failed\":\"gpu_bench.mjs $variant\"}" | tee -a "$out"
  done
  [ "${QUICK:-0}" = 1 ] && exit 0
  for b in .device/bench/lstm_bench .device/bench/attention_bench; do
    CORTEX_WGPU_CHECKS=full timeout 120 "$b" | tee -a "$out" || true
  done
  ;;
attention)
  # The self-attention bench three times in fresh processes, with the GPU's clocks before
  # each: is a slow first forward figure a slow start (clocks, first use) or the kernels?
  unpack
  out="${OUT:-.}/gpu-attention.jsonl"
  for i in 1 2 3; do
    nvidia-smi --query-gpu=clocks.sm,clocks.mem,pstate --format=csv,noheader || true
    timeout 120 .device/bench/attention_bench | tee -a "$out" || echo '{"failed":"attention_bench"}' | tee -a "$out"
  done
  ;;
test)
  unpack
  # The GPU test suites on the real adapter: twice with parallel test threads (a race shows
  # up as an intermittent failure), once on one thread, and once with no run-time checks at
  # all (CORTEX_WGPU_CHECKS=none, which makes an out-of-range index undefined behaviour).
  tests="${OUT:-.}/gpu-tests.txt"
  for t in .device/tests/*; do
    for variant in "" "" "--test-threads=1" "CORTEX_WGPU_CHECKS=none"; do
      echo "== $t $variant" | tee -a "$tests"
      case "$variant" in
      CORTEX_*) cmd=(env "$variant" "$t") ;;
      *) cmd=("$t" $variant) ;;
      esac
      CORTEX_FIXTURES=test/fixtures/fixtures.json timeout 120 "${cmd[@]}" 2>&1 |
        grep -E '^test result|FAILED|panicked|max relative error' | tee -a "$tests" || true
    done
  done
  ;;
*)
  echo "usage: bash benches/gpu.sh prepare|run|test|attention" >&2
  exit 2
  ;;
esac
