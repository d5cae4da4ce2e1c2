"""google.rpc codes and RpcError."""

from __future__ import annotations

import pytest

from runwasm.shim.ttrpc.status import Code, RpcError


def test_codes_match_google_rpc() -> None:
    from google.rpc import code_pb2

    assert {c.name: c.value for c in Code} == {
        name: code_pb2.Code.Value(name) for name in code_pb2.Code.keys()
    }


def test_rpc_error_str_is_message() -> None:
    err = RpcError(Code.NOT_FOUND, "container not created: not found")
    assert str(err) == "container not created: not found"
    assert err.code is Code.NOT_FOUND
    assert err.message == "container not created: not found"
    assert repr(err) == "RpcError(NOT_FOUND, 'container not created: not found')"


def test_rpc_error_refuses_ok() -> None:
    with pytest.raises(ValueError, match="non-OK"):
        RpcError(Code.OK, "fine")


@pytest.mark.parametrize(("wire", "code"), [(0, Code.OK), (5, Code.NOT_FOUND), (16, Code.UNAUTHENTICATED), (17, Code.UNKNOWN), (-1, Code.UNKNOWN)])
def test_from_wire(wire: int, code: Code) -> None:
    assert Code.from_wire(wire) is code
