// Builds the two JavaScript entry points of the package from the TypeScript sources:
//   dist/       ES modules and declarations (tsc), for `import`;
//   dist/cjs/   one CommonJS bundle (esbuild) with its own declaration tree (tsc), for `require`.
// dist/cjs/package.json says "type": "commonjs", so Node and TypeScript read both the bundle
// and its .d.ts files as CommonJS. The napi loader (crates/node/binding.cjs) stays outside
// both: each build reaches it through ../ paths (src/native.ts), so one addon instance serves
// import and require alike.
import { execFileSync } from "node:child_process";
import { copyFileSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
import { build } from "esbuild";

const tsc = (project) => execFileSync("npx", ["tsc", "-p", project], { stdio: "inherit" });

rmSync("dist", { recursive: true, force: true });
tsc("tsconfig.build.json");
tsc("tsconfig.cjs.json");
mkdirSync("dist/cjs", { recursive: true });
writeFileSync("dist/cjs/package.json", `${JSON.stringify({ type: "commonjs" }, null, 2)}\n`);
for (const dir of ["dist/crates/node", "dist/cjs/crates/node"]) {
  mkdirSync(dir, { recursive: true });
  copyFileSync("crates/node/binding.d.ts", `${dir}/binding.d.ts`);
}

// CommonJS has no import.meta: the bundle gets the file URL from __filename instead.
await build({
  entryPoints: ["index.ts"],
  outfile: "dist/cjs/index.js",
  bundle: true,
  platform: "node",
  format: "cjs",
  target: "node18",
  define: { "import.meta.url": "__cortexModuleUrl" },
  banner: { js: 'const __cortexModuleUrl = require("node:url").pathToFileURL(__filename).href;' },
  logLevel: "warning",
});
