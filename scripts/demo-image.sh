#!/usr/bin/env bash
# Demo part 2: OCI images from runwasm's own store (EROFS layers + overlayfs), run through the
# real shim binary by the harness: a packed Wasm image (wasmtime) and a busybox image (the Linux
# namespace executor). Uses a private store under build/demo-store.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
export RUNWASM_ROOT="$PWD/build/demo-store"
mkdir -p build
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "Pack a Wasm module as an OCI image, import it into runwasm's store"
$BIN/runwasm image pack-wasm fixtures/build/wasm/hello.wasm -o build/hello-image.tar --name demo/hello:latest
$BIN/runwasm image import build/hello-image.tar
step "Run the Wasm image (rootfs: EROFS layer + overlay, task on wasmtime)"
$BIN/runwasm run demo/hello:latest

step "Build a busybox OCI image, import it, run a native entrypoint (Linux namespace executor)"
$BIN/python -m fixtures.images busybox build/busybox-image.tar demo/busybox:latest
$BIN/runwasm image import build/busybox-image.tar
$BIN/runwasm run demo/busybox:latest -- /bin/sh -c 'echo "hello from busybox: pid $$, hostname $(hostname)"'
$BIN/runwasm image ls
step "The demo's images stay in its own store, $RUNWASM_ROOT (not /var/lib/runwasm)"
echo "run them again with:  $BIN/runwasm run --root $RUNWASM_ROOT demo/hello"
echo "or:                   RUNWASM_ROOT=$RUNWASM_ROOT $BIN/runwasm image ls"
