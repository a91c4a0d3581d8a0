#!/usr/bin/env bash
# Regenerates crates/formats/src/tensorboard/generated/tensorboard.rs (the TensorBoard event
# writer's protobuf types: Event, Summary, HistogramProto and what they import) from the official
# schemas under crates/formats/proto/tensorboard/tensorboard/compat/proto/ with prost-build. The
# schemas are compiled by protox (a pure-Rust protobuf compiler), so neither this script nor the
# repository's build needs protoc; the build itself only compiles the committed output with the
# `prost` crate.
#
# The .proto files are copied unmodified from TensorBoard (github.com/tensorflow/tensorboard,
# tag 2.21.0, tensorboard/compat/proto/), keeping their directory so their imports resolve. Run
# after replacing them with newer official copies (keep prost-build's minor version equal to the
# `prost` dependency in crates/formats/Cargo.toml). Needs network access to crates.io the first
# time; set CARGO_TARGET_DIR to reuse a build between runs.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PROTO_DIR="$ROOT/crates/formats/proto/tensorboard"
OUT="$ROOT/crates/formats/src/tensorboard/generated/tensorboard.rs"
PROST_BUILD_VERSION=0.14.6
PROTOX_VERSION=0.10.0

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/src" "$WORK/out"
cat >"$WORK/Cargo.toml" <<TOML
[package]
name = "tensorboard-proto-gen"
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
    let fds = protox::compile(["tensorboard/compat/proto/event.proto"], [proto_dir])
        .expect("compile event.proto and its imports");
    prost_build::Config::new()
        .out_dir(out_dir)
        .compile_fds(fds)
        .expect("generate Rust from event.proto");
}
RS

cargo run --quiet --manifest-path "$WORK/Cargo.toml" -- "$PROTO_DIR" "$WORK/out"

{
    echo "// Generated from crates/formats/proto/tensorboard/tensorboard/compat/proto/event.proto (and its"
    echo "// imports) by scripts/gen-tensorboard-proto.sh with prost-build $PROST_BUILD_VERSION (schema compiled by"
    echo "// protox $PROTOX_VERSION). Do not edit: rerun the script."
    cat "$WORK/out/tensorboard.rs"
} >"$OUT"
echo "wrote $OUT"
