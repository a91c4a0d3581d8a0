// On a GPU machine (benches/gpu.sh recipe, carried in .device/app with the tarballs installed):
// the zig-built glibc-2.17 binary, installed from the tarballs as a user gets it, finds the GPU
// through Vulkan and trains on it like the CPU. Not part of CI (lavapipe runs the GPU suites).
import { adam, dense, devices, sequential, tensor } from "cortex-nn";

console.log("adapters:", JSON.stringify(devices().map((d) => d.name)));
const make = () =>
  sequential([dense({ units: 16, activation: "tanh", inputShape: [8] }), dense({ units: 3 })], { seed: 3 });
const x = tensor(
  Float32Array.from({ length: 256 * 8 }, (_, i) => Math.sin(i * 0.37)),
  [256, 8],
);
const y = tensor(
  Float32Array.from({ length: 256 * 3 }, (_, i) => Math.cos(i * 0.11)),
  [256, 3],
);
const results = {};
for (const device of ["cpu", "gpu!"]) {
  const m = make();
  m.compile({ optimizer: adam({ learningRate: 1e-2 }), loss: "meanSquaredError", device });
  const h = await m.fit(x, y, { epochs: 3, batchSize: 64, verbose: 0, shuffle: false });
  results[device] = { device: m.device, loss: h.history.loss, pred: (await m.predict(x)).data };
}
const diff = results.cpu.pred.reduce((mx, v, i) => Math.max(mx, Math.abs(v - results["gpu!"].pred[i])), 0);
console.log(
  `gpu model device: ${results["gpu!"].device}; losses cpu ${results.cpu.loss.map((v) => v.toFixed(5))} gpu ${results["gpu!"].loss.map((v) => v.toFixed(5))}; max |pred diff| ${diff.toExponential(2)}`,
);
if (!(diff < 1e-3)) process.exit(1);
