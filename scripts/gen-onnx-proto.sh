#!/usr/bin/env bash
# Regenerates crates/formats/src/onnx/generated/onnx.rs (the ONNX exporter's protobuf types) from
# the official schema crates/formats/proto/onnx.proto with prost-build. The schema is compiled by
# protox (a pure-Rust protobuf compiler), so neither this script nor the repository's build needs
# protoc; the build itself only compiles the committed output with the `prost` crate.
#
# Run after replacing proto/onnx.proto with a newer official copy (keep prost-build's minor
# version equal to the `prost` dependency in crates/formats/Cargo.toml). Needs network access
# to crates.io the first time; set CARGO_TARGET_DIR to reuse a build between runs.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PROTO_DIR="$ROOT/crates/formats/proto"
OUT="$ROOT/crates/formats/src/onnx/generated/onnx.rs"
PROST_BUILD_VERSION=0.14.6
PROTOX_VERSION=0.10.0

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/src" "$WORK/out"
cat >"$WORK/Cargo.toml" <<TOML
[package]
name = "onnx-proto-gen"
version = "0.0.0"
edition = "2021"
publish = false

[dependencies]
prost-build = "=$PROST_BUILD_VERSION"
protox = "=$PROTOX_VERSION"

[workspace]
TOML
cat >"$WORK/src/main.rs" <<'RS'
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (proto_dir, out_dir) = (&args[1], &args[2]);
    let fds = protox::compile(["onnx.proto"], [proto_dir]).expect("compile onnx.proto");
    prost_build::Config::new()
        .out_dir(out_dir)
        .compile_fds(fds)
        .expect("generate Rust from onnx.proto");
}
RS

cargo run --quiet --manifest-path "$WORK/Cargo.toml" -- "$PROTO_DIR" "$WORK/out"

{
    echo "// Generated from crates/formats/proto/onnx.proto by scripts/gen-onnx-proto.sh with"
    echo "// prost-build $PROST_BUILD_VERSION (schema compiled by protox $PROTOX_VERSION). Do not edit: rerun the script."
    cat "$WORK/out/onnx.rs"
} >"$OUT"
echo "wrote $OUT"
