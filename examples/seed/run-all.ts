/**
 * Runs the four seed listings in sequence (`npm run seed`): the three small ones first (seconds
 * each), then the ~710M-parameter CNN (about half a minute and ~11 GB). Set SKIP_CNN=1 to leave
 * the CNN out on a small machine.
 */
import { main as attention } from "./attention.ts";
import { main as cnn } from "./cnn.ts";
import { seconds } from "./common.ts";
import { main as gan } from "./gan.ts";
import { main as rnn } from "./rnn.ts";

const timings: [string, number][] = [];
for (const [name, run] of [
  ["rnn", () => rnn()],
  ["attention", () => attention()],
  ["gan", () => gan()],
  ...(process.env.SKIP_CNN === "1" ? [] : [["cnn", () => cnn()] as const]),
] as const) {
  const t0 = performance.now();
  await run();
  timings.push([name, seconds(t0)]);
}
console.log(`seed listings: ${timings.map(([n, s]) => `${n} ${s.toFixed(1)} s`).join(", ")}`);
