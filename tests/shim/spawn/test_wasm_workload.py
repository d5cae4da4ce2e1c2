"""``after_exec_sets``: the capability sets a Wasm guest ends with, as a runc process has them
after execve of a binary without file capabilities (capabilities(7)); ``join_cgroup``, how the
workload enters its task cgroup."""

from __future__ import annotations

from pathlib import Path

import pytest

from runwasm.linux.errors import SetupError
from runwasm.oci.runtime_spec import Capabilities, Process, User
from runwasm.shim.spawn.wasm_workload import after_exec_sets, join_cgroup

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


def test_join_cgroup_writes_itself_into_every_procs_file(tmp_path: Path) -> None:
    files = [tmp_path / "a.procs", tmp_path / "b.procs"]
    for f in files:
        f.write_text("")
    join_cgroup([str(f) for f in files])
    assert [f.read_text() for f in files] == ["0", "0"]


def test_a_cgroup_the_kernel_refuses_is_a_setup_error_naming_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "gone" / "cgroup.procs"
    with pytest.raises(SetupError, match=f"failed to join cgroup: writing to '{missing}': .errno 2."):
        join_cgroup([str(missing)])
