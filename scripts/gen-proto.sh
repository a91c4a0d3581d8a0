#!/usr/bin/env bash
# Regenerates the committed protobuf types of crates/formats from the official schemas with
# prost-build: `scripts/gen-proto.sh onnx` (crates/formats/proto/onnx.proto, copied unmodified
# from the onnx Python package) or `scripts/gen-proto.sh tensorboard` (Event, Summary,
# HistogramProto and their imports under crates/formats/proto/tensorboard/, copied unmodified from
# TensorBoard 2.21.0 keeping their directories so imports resolve). The schemas are compiled by
# protox (a pure-Rust protobuf compiler), so neither this script nor the build needs protoc; the
# build only compiles the committed output with the `prost` crate. Keep prost-build's minor
# version equal to the `prost` dependency in crates/formats/Cargo.toml. Needs crates.io the first
# time; set CARGO_TARGET_DIR to reuse a build between runs.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
case "${1:-}" in
onnx)
    PROTO_DIR="$ROOT/crates/formats/proto"
    ENTRY="onnx.proto"
    OUT="$ROOT/crates/formats/src/onnx/generated/onnx.rs"
    GENERATED="onnx.rs"
    ;;
tensorboard)
    PROTO_DIR="$ROOT/crates/formats/proto/tensorboard"
    ENTRY="tensorboard/compat/proto/event.proto"
    OUT="$ROOT/crates/formats/src/tensorboard/generated/tensorboard.rs"
    GENERATED="tensorboard.rs"
    ;;
*)
    echo "usage: scripts/gen-proto.sh onnx|tensorboard" >&2
    exit 2
    ;;
esac
PROST_BUILD_VERSION=0.14.6
PROTOX_VERSION=0.10.0

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/src" "$WORK/out"
cat >"$WORK/Cargo.toml" <<TOML
[package]
name = "cortex-proto-gen"
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
    let (proto_dir, entry, out_dir) = (&args[1], &args[2], &args[3]);
    let fds = protox::compile([entry], [proto_dir]).expect("compile the schema and its imports");
    prost_build::Config::new()
        .out_dir(out_dir)
        .compile_fds(fds)
        .expect("generate Rust from the schema");
}
RS

cargo run --quiet --manifest-path "$WORK/Cargo.toml" -- "$PROTO_DIR" "$ENTRY" "$WORK/out"

{
    echo "// Generated from ${PROTO_DIR#"$ROOT/"}/$ENTRY (and its imports) by scripts/gen-proto.sh $1"
    echo "// with prost-build $PROST_BUILD_VERSION (schema compiled by protox $PROTOX_VERSION). Do not edit: rerun the script."
    cat "$WORK/out/$GENERATED"
} >"$OUT"
echo "wrote $OUT"
