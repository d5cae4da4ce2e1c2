"""A minimal protobuf wire-format reader/writer for the short-lived entry points.

``start``, ``delete`` and ``-info`` run once per container; importing the protobuf runtime
costs tens of milliseconds, so those paths decode ``BootstrapParams`` and encode
``BootstrapResult``/``DeleteResponse``/``RuntimeInfo`` with this module instead. The long-lived
server uses the generated classes in ``runwasm.shim.api``; tests check both agree byte for byte.

Decoding is strict in the way Go's ``proto.Unmarshal`` is: a bad tag, an invalid wire type, a
truncated varint or length, or a known field with the wrong wire type is a ``WireError``.
Unknown fields are skipped.
"""

from __future__ import annotations

from collections.abc import Iterator

VARINT, I64, LEN, SGROUP, EGROUP, I32 = 0, 1, 2, 3, 4, 5


class WireError(ValueError):
    """The bytes are not a valid protobuf message of the expected shape."""


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise WireError("truncated varint")
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise WireError("varint too long")


def fields(data: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """Yield (field number, wire type, value) for each field; values of LEN are bytes."""
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        num, wt = key >> 3, key & 7
        if num == 0:
            raise WireError("field number 0")
        if wt == VARINT:
            v, pos = _varint(data, pos)
            yield num, wt, v
        elif wt == LEN:
            n, pos = _varint(data, pos)
            if pos + n > len(data):
                raise WireError("truncated length-delimited field")
            yield num, wt, data[pos : pos + n]
            pos += n
        elif wt == I64:
            if pos + 8 > len(data):
                raise WireError("truncated fixed64")
            yield num, wt, int.from_bytes(data[pos : pos + 8], "little")
            pos += 8
        elif wt == I32:
            if pos + 4 > len(data):
                raise WireError("truncated fixed32")
            yield num, wt, int.from_bytes(data[pos : pos + 4], "little")
            pos += 4
        else:
            raise WireError(f"unsupported wire type {wt}")


def expect_str(num: int, wt: int, value: int | bytes) -> str:
    if wt != LEN or not isinstance(value, bytes):
        raise WireError(f"field {num}: expected a string, got wire type {wt}")
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError as err:
        raise WireError(f"field {num}: invalid UTF-8") from err


def expect_bytes(num: int, wt: int, value: int | bytes) -> bytes:
    if wt != LEN or not isinstance(value, bytes):
        raise WireError(f"field {num}: expected bytes, got wire type {wt}")
    return value


def expect_int(num: int, wt: int, value: int | bytes, *, signed: bool = False) -> int:
    if wt != VARINT or not isinstance(value, int):
        raise WireError(f"field {num}: expected a varint, got wire type {wt}")
    if signed and value >= 1 << 63:
        value -= 1 << 64
    return value


# --- encoding -----------------------------------------------------------------------------------


def enc_varint(value: int) -> bytes:
    if value < 0:
        value += 1 << 64
    out = bytearray()
    while True:
        b = value & 0x7F
        value >>= 7
        if value:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def enc_int(num: int, value: int) -> bytes:
    """A varint field; zero is omitted (proto3)."""
    return enc_varint(num << 3 | VARINT) + enc_varint(value) if value else b""


def enc_bytes(num: int, value: bytes, *, keep_empty: bool = False) -> bytes:
    """A length-delimited field; empty is omitted unless keep_empty (proto3 message presence)."""
    if not value and not keep_empty:
        return b""
    return enc_varint(num << 3 | LEN) + enc_varint(len(value)) + value


def enc_str(num: int, value: str) -> bytes:
    return enc_bytes(num, value.encode())


def enc_timestamp(num: int, seconds: int, nanos: int) -> bytes:
    """A google.protobuf.Timestamp sub-message (always present, even when zero)."""
    return enc_bytes(num, enc_int(1, seconds) + enc_int(2, nanos), keep_empty=True)


def enc_any(num: int, type_url: str, value: bytes) -> bytes:
    return enc_bytes(num, enc_str(1, type_url) + enc_bytes(2, value), keep_empty=True)


def dec_any(data: bytes) -> tuple[str, bytes]:
    """Decode a google.protobuf.Any into (type_url, value)."""
    type_url, value = "", b""
    for num, wt, v in fields(data):
        if num == 1:
            type_url = expect_str(num, wt, v)
        elif num == 2:
            value = expect_bytes(num, wt, v)
    return type_url, value
