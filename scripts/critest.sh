#!/usr/bin/env bash
# make critest: cri-tools' critest v1.36 against a private containerd 2.3.4 with CRI, on handler
# runwasm and handler runc of the same daemon, both scores printed side by side.
# Needs root (network namespace, mounts, cgroups). Arguments go to tests/integration/cri/critest.py
# (--flavour 1.6, --handler H, --focus REGEXP, --keep DIR). critest from $RUNWASM_CRITEST
# (default ../shared/tools/cri-tools-1.36.0/bin/critest), containerd 2.3.4 from
# $RUNWASM_CONTAINERD23_BIN; skipped with the reason when either is absent.
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python -m tests.integration.cri.critest "$@"
