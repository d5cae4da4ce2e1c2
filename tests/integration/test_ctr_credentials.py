"""A Wasm task under ``ctr run`` with containerd's default capabilities and its own default seccomp
profile (``--seccomp``), with and without noNewPrivileges: the workload takes them and runs."""

from __future__ import annotations

import pytest

from tests.integration.daemon import Containerd

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("extra", [("--seccomp",), ("--seccomp", "--allow-new-privs")], ids=["nnp", "no-nnp"])
def test_containerd_default_seccomp_profile_leaves_wasmtime_what_it_needs(
        containerd: Containerd, wasm_images: dict[str, str], extra: tuple[str, ...]) -> None:
    res = containerd.run(wasm_images["hello"], f"seccomp{len(extra)}", extra=extra)
    assert (res.returncode, res.stdout) == (0, "hello from wasm\n"), res.output
