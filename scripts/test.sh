#!/usr/bin/env bash
# The README's test command after the build: every Rust test binary, then every vitest file.
# Both suites always run (one failing binary or suite hides nothing); the exit status is
# non-zero when either failed. Extra arguments go to vitest (.ci/run adds its reporters).
set -uo pipefail
cargo test --workspace --no-fail-fast
cargo_rc=$?
npx vitest run "$@"
vitest_rc=$?
echo "cargo test exit ${cargo_rc}, vitest exit ${vitest_rc}"
[ "$cargo_rc" -eq 0 ] && [ "$vitest_rc" -eq 0 ]
