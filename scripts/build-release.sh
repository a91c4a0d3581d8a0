#!/usr/bin/env bash
# `npm run build:release [-- TARGET...]`: the release binaries for every napi.targets entry,
# cross-built on this x86_64 Linux machine with cargo-zigbuild (zig from PyPI's ziglang), into
# npm/<platform>/cortex-nn.<platform>.node, ready for `napi pre-publish`. It leaves
# crates/node alone (the development build of `npm run build`). The release, from a clean
# checkout: `npm ci && npm run build:release && CORTEX_RELEASE=1 npm publish` (prepublishOnly
# publishes the platform packages and fills optionalDependencies; scripts/prepack.sh keeps the
# main package free of binaries).
#   - glibc targets link against glibc 2.17 (zig's `<target>.2.17`), so they load on any
#     glibc >= 2.17; a plain `npm run build` on Debian 12 needs glibc 2.35.
#   - musl targets link musl dynamically (-crt-static), as Node on Alpine is.
# (napi's own `--use-napi-cross` needs a native helper that npm does not install here, and
# `napi build -x` cannot pass zig's glibc version suffix, so this calls cargo-zigbuild itself;
# the typings and loader come from the host build, `npm run build`, and are target-independent.)
# Installs what it lacks: rustup targets, ziglang (pip), cargo-zigbuild (cargo install).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(node -p 'require("./package.json").napi.targets.join("\n")')
fi

# napi's platform name of a Rust target triple (the suffix of the .node file and npm/ dir).
platform_of() {
  local arch="${1%%-*}" abi="${1##*-}"
  case "$arch" in x86_64) arch=x64 ;; aarch64) arch=arm64 ;; esac
  echo "linux-${arch}-${abi}"
}

for t in "${targets[@]}"; do
  rustup target list --installed | grep -qx "$t" || rustup target add "$t"
done
python3 -c 'import ziglang' 2>/dev/null || pip install --quiet ziglang
zig_bin="$(mktemp -d)"
trap 'rm -rf "$zig_bin"' EXIT
printf '#!/bin/sh\nexec python3 -m ziglang "$@"\n' >"$zig_bin/zig"
chmod +x "$zig_bin/zig"
export PATH="$zig_bin:$PATH"
command -v cargo-zigbuild >/dev/null || cargo install --locked cargo-zigbuild

for t in "${targets[@]}"; do
  case "$t" in
    *-linux-gnu) zig_target="${t}.2.17" flags="" ;;
    *-linux-musl) zig_target="$t" flags="-C target-feature=-crt-static" ;;
    *)
      echo "build-release: no recipe for ${t}" >&2
      exit 1
      ;;
  esac
  echo "=== ${t} (cargo zigbuild --target ${zig_target})"
  RUSTFLAGS="${flags}" cargo zigbuild --release -p cortex-node --target "$zig_target"
  platform="$(platform_of "$t")"
  cp "target/${t}/release/libcortex_node.so" "npm/${platform}/cortex-nn.${platform}.node"
  ls -la "npm/${platform}/cortex-nn.${platform}.node"
  # CI keeps target/ small (each target's build is ~0.5 GB): CORTEX_RELEASE_CLEAN=1 drops it.
  [ "${CORTEX_RELEASE_CLEAN:-0}" = 1 ] && rm -rf "target/${t}"
done
