#!/usr/bin/env node
// The `cortex-nn` command. Runs the compiled build (dist/, made by `npm run build:ts` and
// shipped by `npm pack`); in a source checkout without dist/, it runs the TypeScript sources,
// which needs a TypeScript loader: `node --import tsx bin/cortex-nn.mjs ...`.
import { existsSync } from "node:fs";

const built = new URL("../dist/src/serving/cli.js", import.meta.url);
const entry = existsSync(built) ? built : new URL("../src/serving/cli.ts", import.meta.url);
const { runCli } = await import(entry.href);
// exit explicitly: nothing else should keep the process alive once the server has stopped.
process.exit(await runCli(process.argv.slice(2)));
