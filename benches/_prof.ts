import { input, model, multiHeadAttention, layerNormalization, add, tensor, sequential, dense } from "../index.ts";
const which = process.argv[2] ?? "attention";
const batch = Number(process.argv[3] ?? 1);
let m;
let sample: number[];
if (which === "attention") {
  const x = input({ shape: [128, 256] });
  const att = multiHeadAttention({ numHeads: 8, keyDim: 32 }).apply([x, x]);
  m = model({ inputs: x, outputs: layerNormalization({ epsilon: 1e-5 }).apply(add().apply([x, att])) });
  sample = [128, 256];
} else {
  m = sequential([dense({ units: 256, activation: "leakyRelu", inputShape: [100] }), dense({ units: 256, activation: "leakyRelu" }), dense({ units: 256, activation: "leakyRelu" }), dense({ units: 784, activation: "tanh" })]);
  sample = [100];
}
const shape = [batch, ...sample];
const data = Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, (_, i) => Math.sin(i * 0.013));
const x = tensor(data, shape);
for (let i = 0; i < 50; i++) await m.predict(x, { batchSize: batch });
const secs = Number(process.argv[4] ?? 5);
const t0 = performance.now();
let n = 0;
const times: number[] = [];
while (performance.now() - t0 < secs * 1000) { const a = performance.now(); await m.predict(x, { batchSize: batch }); times.push(performance.now() - a); n++; }
times.sort((a, b) => a - b);
console.log(which, batch, "median ms", times[n >> 1].toFixed(4), "n", n);
