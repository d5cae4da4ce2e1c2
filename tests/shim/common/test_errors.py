"""The one table from error classes to google.rpc codes (shim-protocol.md §12)."""

from __future__ import annotations

import importlib

import pytest

from runwasm.oci.runtime_spec import SpecError
from runwasm.shim.common import errors as se
from runwasm.shim.ttrpc.status import Code
from runwasm.wasm import errors as we

SHIM_EXPECTED: dict[type[BaseException], int] = {
    se.ShimError: Code.UNKNOWN,
    se.NotFoundError: Code.NOT_FOUND,
    se.AlreadyExistsError: Code.ALREADY_EXISTS,
    se.InvalidArgumentError: Code.INVALID_ARGUMENT,
    se.RootfsPlanError: Code.INVALID_ARGUMENT,
    se.FailedPreconditionError: Code.FAILED_PRECONDITION,
    se.UnimplementedError: Code.UNIMPLEMENTED,
    se.UnavailableError: Code.UNAVAILABLE,
}


def _subclasses(cls: type) -> list[type]:
    out: list[type] = [cls]
    subs: list[type] = cls.__subclasses__()
    for sub in subs:
        out += _subclasses(sub)
    return out


def test_every_shim_error_class_is_listed() -> None:
    # imported here so the set never depends on test order
    from runwasm.shim.server.image_module import ImageModuleError
    from runwasm.shim.server.process import WorkloadSetupError

    # their status is per instance: what the workload reported (tested in test_process.py), the
    # status of containerd's error while reading the image
    assert set(_subclasses(se.ShimError)) - {WorkloadSetupError, ImageModuleError} == set(SHIM_EXPECTED)


@pytest.mark.parametrize(("cls", "code"), list(SHIM_EXPECTED.items()), ids=lambda v: getattr(v, "__name__", str(v)))
def test_shim_error_codes(cls: type[BaseException], code: int) -> None:
    got, _ = se.to_status(cls("boom"))
    assert got == code


def test_codes_agree_with_ttrpc_code_enum() -> None:
    for name, value in se.STATUS_CODES.items():
        assert Code[name.upper()] == value


@pytest.mark.parametrize(("err", "message"), [
    (se.NotFoundError("container 'c' not created"), "container 'c' not created: not found"),
    (se.AlreadyExistsError("container 'c'"), "container 'c': already exists"),
    (se.InvalidArgumentError("bad"), "bad: invalid argument"),
    (se.FailedPreconditionError("running"), "running: failed precondition"),
    (se.UnimplementedError("checkpoint"), "checkpoint: not implemented"),
    (se.UnavailableError("zygote gone"), "zygote gone: unavailable"),
    (se.NotFoundError("process already finished: not found"), "process already finished: not found"),
    (RuntimeError("kaboom"), "kaboom"),
    (RuntimeError(), "RuntimeError"),
])
def test_errdefs_suffix(err: BaseException, message: str) -> None:
    assert se.to_status(err)[1] == message


def test_unknown_and_special_classes() -> None:
    assert se.to_status(ValueError("x"))[0] == Code.UNKNOWN
    assert se.to_status(SpecError("bad spec"))[0] == Code.INVALID_ARGUMENT
    assert se.to_status(TimeoutError())[0] == Code.DEADLINE_EXCEEDED


def test_foreign_status_attribute() -> None:
    class Foreign(Exception):
        status = "permission_denied"

    class Bogus(Exception):
        status = "no_such_status"

    assert se.to_status(Foreign("x"))[0] == Code.PERMISSION_DENIED
    assert se.to_status(Bogus("x"))[0] == Code.UNKNOWN


@pytest.mark.parametrize("cls", _subclasses(we.WasmError), ids=lambda c: c.__name__)
def test_wasm_errors_map_to_known_code(cls: type[Exception]) -> None:
    code, _ = se.to_status(cls("x"))
    assert code != Code.UNKNOWN
    assert code == se.STATUS_CODES[cls.status]  # type: ignore[attr-defined]


def _linux_classes() -> list[type]:
    try:
        mod = importlib.import_module("runwasm.linux.errors")
    except ImportError:
        return []
    return _subclasses(mod.LinuxError)


@pytest.mark.parametrize("cls", _linux_classes(), ids=lambda c: c.__name__)
def test_linux_errors_map_to_known_code(cls: type[Exception]) -> None:
    code, _ = se.to_status(cls("x"))
    assert code != Code.UNKNOWN
    assert code == se.STATUS_CODES[cls.status]  # type: ignore[attr-defined]


def test_linux_errors_importable() -> None:
    assert len(_linux_classes()) >= 5


@pytest.mark.parametrize(("kind", "code"), [
    ("ExportNotFoundError", Code.INVALID_ARGUMENT), ("InvalidModuleError", Code.INVALID_ARGUMENT),
    ("ModuleNotFoundInRootfsError", Code.NOT_FOUND), ("LinkError", Code.FAILED_PRECONDITION),
    ("NotFoundError", Code.NOT_FOUND), ("SpecError", Code.INVALID_ARGUMENT), ("Whatever", Code.UNKNOWN),
])
def test_workload_reported_error_kinds(kind: str, code: int) -> None:
    """A workload reports only its error's class name; the per-instance status must be honoured."""
    from runwasm.shim.server.process import WorkloadSetupError, _status_for_kind

    err = WorkloadSetupError("container 'c': set-up failed", _status_for_kind(kind))
    assert se.to_status(err)[0] == code


def test_a_full_disk_is_resource_exhausted() -> None:
    import errno

    assert se.to_status(OSError(errno.ENOSPC, "no space"))[0] == se.RESOURCE_EXHAUSTED
    assert se.to_status(OSError(errno.EIO, "io"))[0] == se.STATUS_CODES["unknown"]
