// TypeScript consumer (ESM), type-checked strictly with module nodenext and skipLibCheck off,
// so every shipped declaration file is checked too. Uses a convnet, fit and predict.
import { adam, conv2d, dense, flatten, type History, type Model, sequential, type Tensor, tensor } from "cortex-nn";

const model: Model = sequential([
  conv2d({ filters: 2, kernelSize: 3, activation: "relu", inputShape: [5, 5, 1] }),
  flatten(),
  dense({ units: 3, activation: "softmax" }),
]);
model.compile({ optimizer: adam({ learningRate: 1e-2 }), loss: "sparseCategoricalCrossentropy" });
const x: Tensor = tensor(
  Float32Array.from({ length: 4 * 25 }, (_, i) => Math.sin(i)),
  [4, 5, 5, 1],
);
const labels: Tensor = tensor([0, 1, 2, 1], [4]);
const history: History = await model.fit(x, labels, { epochs: 2, batchSize: 2, verbose: 0 });
const y: Tensor = await model.predict(x);
const rowSums = [0, 1, 2, 3].map((r) => y.data.slice(r * 3, r * 3 + 3).reduce((a, b) => a + b, 0));
if (y.shape.join() !== "4,3" || rowSums.some((s) => Math.abs(s - 1) > 1e-5)) {
  throw new Error(`ts: predict gave shape ${y.shape} with row sums ${rowSums}`);
}
console.log(`ts (nodenext, strict): fit ${Object.keys(history.history).join(",")}; predict ok`);
