// TypeScript consumer compiled as CommonJS: checks the `require` condition's declarations.
import { dense, sequential, tensor } from "cortex-nn";

async function main(): Promise<void> {
  const model = sequential([dense({ units: 1, inputShape: [2] })]);
  model.setWeights([tensor([2, 3], [2, 1]), tensor([1], [1])]);
  const y = await model.predict(tensor([1, 1], [1, 2]));
  if (Math.abs(y.data[0] - 6) > 1e-5) throw new Error(`cts: predict gave ${y.data[0]}, want 6`);
  console.log("ts (CommonJS .cts): predict ok");
}
void main();
