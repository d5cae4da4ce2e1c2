"""``after_exec_sets``: the capability sets a Wasm guest ends with, as a runc process has them
after execve of a binary without file capabilities (capabilities(7))."""

from __future__ import annotations

import pytest

from runwasm.oci.runtime_spec import Capabilities, Process, User
from runwasm.shim.spawn.wasm_workload import after_exec_sets

KILL, NET_BIND, DAC = 1 << 5, 1 << 10, 1 << 1


def proc(uid: int, caps: Capabilities | None, nnp: bool = False) -> Process:
    return Process(args=("/x.wasm",), user=User(uid=uid, gid=uid), capabilities=caps, no_new_privileges=nnp)


@pytest.mark.parametrize(("p", "expected"), [
    (proc(0, None), None),  # root without capabilities in the spec keeps everything
    (proc(1000, None), (0, 0, 0)),
    # root: inheritable | bounding | ambient, effective = permitted
    (proc(0, Capabilities(bounding=("CAP_KILL", "CAP_NET_BIND_SERVICE"), permitted=("CAP_KILL",))),
     (KILL | NET_BIND, KILL | NET_BIND, 0)),
    # ... but noNewPrivileges never lets it grow past the permitted set it had
    (proc(0, Capabilities(bounding=("CAP_KILL", "CAP_NET_BIND_SERVICE"), permitted=("CAP_KILL",)), nnp=True),
     (KILL, KILL, 0)),
    # non-root: only what is ambient (and ambient needs permitted and inheritable)
    (proc(65534, Capabilities(bounding=("CAP_KILL",), effective=("CAP_KILL",), permitted=("CAP_KILL",))), (0, 0, 0)),
    (proc(65534, Capabilities(effective=("CAP_KILL",), permitted=("CAP_KILL", "CAP_NET_BIND_SERVICE"),
                              inheritable=("CAP_KILL", "CAP_DAC_OVERRIDE"),
                              ambient=("CAP_KILL", "CAP_DAC_OVERRIDE"))),
     (KILL, KILL, KILL | DAC)),
])
def test_after_exec_sets(p: Process, expected: tuple[int, int, int] | None) -> None:
    assert after_exec_sets(p) == expected
