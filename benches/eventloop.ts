/**
 * Event-loop responsiveness while training: the largest gap of a 10 ms timer over RUNS runs of
 * fit + predict on a small CNN, and the training throughput, so the cost of keeping the main
 * thread free is measured in the same run. `npx tsx benches/eventloop.ts [runs]`.
 */
import { conv2d, dense, flatten, getNumThreads, maxPooling2d, sequential, tensor } from "../index.ts";

const runs = Number(process.argv[2] ?? 20);

function makeData(n: number) {
  const x = new Float32Array(n * 28 * 28);
  for (let i = 0; i < x.length; i++) x[i] = Math.sin(i * 12.9898) * 0.5 + 0.5;
  const y = new Float32Array(n);
  for (let i = 0; i < n; i++) y[i] = i % 10;
  return { x: tensor(x, [n, 28, 28, 1]), y: tensor(y, [n]) };
}

const model = sequential(
  [
    conv2d({ filters: 16, kernelSize: 3, activation: "relu", inputShape: [28, 28, 1] }),
    maxPooling2d({ poolSize: 2 }),
    flatten(),
    dense({ units: 10, activation: "softmax" }),
  ],
  { seed: 1 },
);
model.compile({ optimizer: "adam", loss: "sparseCategoricalCrossentropy" });
const { x, y } = makeData(1024);

let worst = 0;
let samples = 0;
let trainMs = 0;
const perRun: number[] = [];
for (let r = 0; r < runs; r++) {
  let last = performance.now();
  let maxGap = 0;
  const timer = setInterval(() => {
    const now = performance.now();
    maxGap = Math.max(maxGap, now - last);
    last = now;
  }, 10);
  const t0 = performance.now();
  await model.fit(x, y, { epochs: 1, batchSize: 32, verbose: 0 });
  trainMs += performance.now() - t0;
  samples += 1024;
  await model.predict(x, { batchSize: 256 });
  clearInterval(timer);
  perRun.push(Math.round(maxGap));
  worst = Math.max(worst, maxGap);
}
console.log(`threads ${getNumThreads()}; largest timer gap per run (ms): ${perRun.join(" ")}`);
console.log(
  `largest gap ${worst.toFixed(1)} ms over ${runs} runs; training ${((samples / trainMs) * 1000).toFixed(0)} samples/s`,
);
