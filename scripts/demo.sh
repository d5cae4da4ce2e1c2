#!/usr/bin/env bash
# The main job: run a Wasm module and an OCI image through the real shim binary with the
# standalone harness (`runwasm run` plays containerd's part; no containerd daemon involved).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
W=fixtures/build/wasm
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
# The shims of this demo use a warm template of their own (shim/template/), stopped at the end,
# so the demo leaves no process running on the machine.
RUNWASM_TEMPLATE_DIR="$(mktemp -d /run/runwasm-demo.XXXXXX)"
export RUNWASM_TEMPLATE_DIR
stop_template() {
  $BIN/python -c 'import sys; from runwasm.shim.template.process import stop_templates; stop_templates(sys.argv[1])' \
    "$RUNWASM_TEMPLATE_DIR" || true
  rm -rf "$RUNWASM_TEMPLATE_DIR"
}
trap stop_template EXIT

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
