#!/usr/bin/env bash
# The main job: run a Wasm module and an OCI image through the real shim binary with the
# standalone harness (`runwasm run` plays containerd's part; no containerd daemon involved).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
W=fixtures/build/wasm
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "Wasm module, containerd 2.3 bootstrap protocol: runwasm run $W/hello.wasm"
$BIN/runwasm run --show-events "$W/hello.wasm"

step "Wasm module, legacy start protocol (containerd 1.6-2.2), args and env"
$BIN/runwasm run --legacy -e GREETING=hi "$W/argsenv.wasm" -- one two

step "Exit status propagates: exit7.wasm"
set +e; $BIN/runwasm run "$W/exit7.wasm"; code=$?; set -e
echo "exit status: $code"

if [ -x scripts/demo-image.sh ]; then
  bash scripts/demo-image.sh
fi
