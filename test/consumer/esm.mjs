// ESM consumer: `import` from the installed tarball.
import * as lib from "cortex-nn";
import { checkPredict } from "./check.cjs";

await checkPredict(lib, "esm import");
