/**
 * Child process of hostile.test.ts: saves two different models (2 and 3 layers) to the same
 * directory, alternately and forever, printing "saved" after each, until the parent kills it.
 */
import { dense, sequential } from "../../index.ts";

const dir = process.argv[2];
const models = [
  sequential([dense({ units: 64, inputShape: [32] }), dense({ units: 3 })], { seed: 1 }),
  sequential([dense({ units: 128, inputShape: [32] }), dense({ units: 16 }), dense({ units: 5 })], { seed: 2 }),
];
for (let i = 0; ; i++) {
  await models[i % 2].save(dir);
  process.stdout.write("saved\n");
}
