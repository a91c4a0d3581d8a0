// CommonJS consumer: `require` from the installed tarball.
const { checkPredict } = require("./check.cjs");

checkPredict(require("cortex-nn"), "cjs require").catch((e) => {
  console.error(e);
  process.exit(1);
});
