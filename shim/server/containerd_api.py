"""A small synchronous gRPC client of containerd's metadata and content services.

Used by the shim server only, and only when a container's module has to come from its image
(``shim/server/image_module.py``): importing this module imports ``grpc``, which ``start``, ``delete``
and ``-info`` never do. Calls carry the namespace in the ``containerd-namespace`` metadata key,
as containerd's own clients do, and a deadline; failures become the shim's errors with the
method, the object and containerd's message:

- ``NOT_FOUND`` -> ``NotFoundError``; ``ALREADY_EXISTS`` -> ``AlreadyExistsError``; ``UNAVAILABLE``/``DEADLINE_EXCEEDED`` -> ``UnavailableError``;
  anything else -> ``ShimError`` with the status name.

``read_bytes`` verifies that what containerd streamed hashes to the digest asked for.
``write_blob`` streams a blob in (Content.Write: WRITE chunks, then COMMIT with the expected
digest), under a lease (``lease``) so that GC cannot take it before something references it;
``update_labels`` sets chosen labels of a blob (Content.Update, field paths ``labels.<key>``;
an empty value removes the label, as containerd does). ``write_stream`` is ``write_blob`` for a
file of known digest and size (layers); ``put_image`` creates or replaces an image record
(Images.Create, then Images.Update when the name exists). The harness uses these for
``runwasm image pull-containerd`` / ``push-containerd`` (``shim/harness/containerd_images.py``).
"""

from __future__ import annotations

import contextlib
import datetime
import io
import logging
import os
from collections.abc import Iterator
from typing import IO, Any

import grpc
from google.protobuf import field_mask_pb2

from runwasm.oci.digest import Digest
from runwasm.oci.errors import DigestMismatchError
from runwasm.oci.image import Descriptor
from runwasm.shim.api.services.containers.v1 import containers_pb2
from runwasm.shim.api.services.content.v1 import content_pb2
from runwasm.shim.api.services.images.v1 import images_pb2
from runwasm.shim.api.services.leases.v1 import leases_pb2
from runwasm.shim.common.errors import (
    AlreadyExistsError,
    InvalidArgumentError,
    NotFoundError,
    ShimError,
    UnavailableError,
)

log = logging.getLogger(__name__)

NAMESPACE_KEY = "containerd-namespace"
DEFAULT_TIMEOUT = 30.0
LEASE_KEY = "containerd-lease"
MAX_BLOB = 1 << 30
WRITE_CHUNK = 1 << 20
LEASE_EXPIRE = datetime.timedelta(hours=1)
"""A lease outlives a shim killed mid-write by at most this long (``containerd.io/gc.expire``)."""


def grpc_target(address: str) -> str:
    """containerd's gRPC address (a socket path, or ``unix://PATH``) as a grpc target."""
    if address.startswith("unix://"):
        address = address[len("unix://"):]
    if not address.startswith("/"):
        raise InvalidArgumentError(f"invalid containerd gRPC address {address!r}: expected a unix socket path")
    return "unix:" + address


class ContainerdClient:
    """One channel to containerd in one namespace. Not thread-safe beyond what grpc is."""

    def __init__(self, address: str, namespace: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.address = address
        self.namespace = namespace
        self.timeout = timeout
        self._channel = grpc.insecure_channel(grpc_target(address), options=[
            ("grpc.max_receive_message_length", 64 << 20)])
        self._metadata = ((NAMESPACE_KEY, namespace),)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> ContainerdClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _error(self, err: grpc.RpcError, what: str) -> ShimError:
        code = err.code() if isinstance(err, grpc.Call) else None
        detail = err.details() if isinstance(err, grpc.Call) else str(err)
        msg = f"failed to {what} (containerd {self.address!r}, namespace {self.namespace!r}): {detail}"
        if code == grpc.StatusCode.NOT_FOUND:
            return NotFoundError(msg)
        if code == grpc.StatusCode.ALREADY_EXISTS:
            return AlreadyExistsError(msg)
        if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            return UnavailableError(msg)
        return ShimError(f"{msg} ({code.name if code else 'no status'})")

    def unary(self, method: str, request: Any, response_type: Any, what: str,
               metadata: tuple[tuple[str, str], ...] = ()) -> Any:
        call = self._channel.unary_unary(method, request_serializer=lambda m: m.SerializeToString(),
                                         response_deserializer=response_type.FromString)
        try:
            return call(request, timeout=self.timeout, metadata=self._metadata + metadata)
        except grpc.RpcError as err:
            raise self._error(err, what) from err

    def container_image(self, container_id: str) -> str:
        """The image reference recorded on container ``container_id`` ("" when it has none)."""
        resp = self.unary("/containerd.services.containers.v1.Containers/Get",
                           containers_pb2.GetContainerRequest(id=container_id),
                           containers_pb2.GetContainerResponse, f"get container {container_id!r}")
        return str(resp.container.image)

    def image_target(self, name: str) -> Descriptor:
        """The target descriptor (index or manifest) of image ``name``."""
        resp = self.unary("/containerd.services.images.v1.Images/Get", images_pb2.GetImageRequest(name=name),
                           images_pb2.GetImageResponse, f"get image {name!r}")
        t = resp.image.target
        digest = Digest.parse(t.digest)  # an oci InvalidArgumentError naming the text
        return Descriptor(t.media_type, digest, int(t.size), dict(t.annotations))

    def info_labels(self, digest: Digest) -> dict[str, str]:
        """The labels of blob ``digest`` (raises NotFoundError when it is not in the store)."""
        resp = self.unary("/containerd.services.content.v1.Content/Info",
                           content_pb2.InfoRequest(digest=str(digest)), content_pb2.InfoResponse,
                           f"stat content {str(digest)!r}")
        return dict(resp.info.labels)

    def read_bytes(self, digest: Digest, max_size: int = MAX_BLOB) -> bytes:
        """The whole blob ``digest``, verified against it."""
        call = self._channel.unary_stream("/containerd.services.content.v1.Content/Read",
                                          request_serializer=lambda m: m.SerializeToString(),
                                          response_deserializer=content_pb2.ReadContentResponse.FromString)
        h = digest.hasher()
        chunks: list[bytes] = []
        size = 0
        try:
            for msg in call(content_pb2.ReadContentRequest(digest=str(digest)), timeout=self.timeout,
                            metadata=self._metadata):
                data = bytes(msg.data)
                size += len(data)
                if size > max_size:
                    raise InvalidArgumentError(f"failed to read content {str(digest)!r}: larger than {max_size} bytes")
                h.update(data)
                chunks.append(data)
        except grpc.RpcError as err:
            raise self._error(err, f"read content {str(digest)!r}") from err
        got = Digest.from_hasher(h)
        if got != digest:
            raise DigestMismatchError(f"failed to read content {str(digest)!r}: containerd sent bytes hashing to {str(got)!r}")
        return b"".join(chunks)

    def stream(self, digest: Digest) -> Iterator[bytes]:
        """The chunks of blob ``digest`` as containerd sends them; after the last one, raises
        DigestMismatchError unless they hash to ``digest``. No deadline (layers may be large)."""
        call = self._channel.unary_stream("/containerd.services.content.v1.Content/Read",
                                          request_serializer=lambda m: m.SerializeToString(),
                                          response_deserializer=content_pb2.ReadContentResponse.FromString)
        h = digest.hasher()
        try:
            for msg in call(content_pb2.ReadContentRequest(digest=str(digest)), metadata=self._metadata):
                data = bytes(msg.data)
                h.update(data)
                yield data
        except grpc.RpcError as err:
            raise self._error(err, f"read content {str(digest)!r}") from err
        got = Digest.from_hasher(h)
        if got != digest:
            raise DigestMismatchError(f"failed to read content {str(digest)!r}: containerd sent bytes hashing to {str(got)!r}")

    @contextlib.contextmanager
    def lease(self, purpose: str) -> Iterator[str]:
        """A lease (``Leases.Create``, expiring after ``LEASE_EXPIRE``) for the block; deleted after it."""
        expire = datetime.datetime.now(datetime.UTC) + LEASE_EXPIRE
        lease_id = f"runwasm-{purpose}-{os.getpid()}-{os.urandom(4).hex()}"
        self.unary("/containerd.services.leases.v1.Leases/Create",
                    leases_pb2.CreateRequest(id=lease_id, labels={
                        "containerd.io/gc.expire": expire.strftime("%Y-%m-%dT%H:%M:%SZ")}),
                    leases_pb2.CreateResponse, f"create lease {lease_id!r}")
        try:
            yield lease_id
        finally:
            try:
                self.unary("/containerd.services.leases.v1.Leases/Delete", leases_pb2.DeleteRequest(id=lease_id),
                            empty_response(), f"delete lease {lease_id!r}")
            except ShimError as err:  # what it holds is referenced by then, or unwanted; it expires anyway
                log.warning("%s (it expires by itself within %s)", err, LEASE_EXPIRE)

    def write_blob(self, data: bytes, ref: str, lease_id: str, labels: dict[str, str] | None = None) -> Digest:
        """Store ``data`` (Content.Write under lease ``lease_id``); returns its digest. A blob that
        is already there is success (containerd answers ALREADY_EXISTS; ``labels`` are then not set)."""
        digest = Digest.of_bytes(data)
        call = self._channel.stream_stream("/containerd.services.content.v1.Content/Write",
                                           request_serializer=lambda m: m.SerializeToString(),
                                           response_deserializer=content_pb2.WriteContentResponse.FromString)

        def requests() -> Iterator[content_pb2.WriteContentRequest]:
            total = len(data)
            for off in range(0, total, WRITE_CHUNK):
                yield content_pb2.WriteContentRequest(action=content_pb2.WRITE, ref=ref, total=total,
                                                      expected=str(digest), offset=off,
                                                      data=data[off:off + WRITE_CHUNK])
            yield content_pb2.WriteContentRequest(action=content_pb2.COMMIT, ref=ref, total=total,
                                                  expected=str(digest), offset=total, labels=labels or {})

        what = f"write content {str(digest)!r} (ref {ref!r})"
        try:
            # one more second per MiB: a 100 MB artifact on a loaded node must not hit the deadline
            timeout = self.timeout + len(data) / WRITE_CHUNK
            for resp in call(requests(), timeout=timeout, metadata=self._metadata + ((LEASE_KEY, lease_id),)):
                if resp.action == content_pb2.COMMIT and resp.digest and resp.digest != str(digest):
                    raise DigestMismatchError(f"failed to {what}: containerd committed {resp.digest!r}")
        except grpc.RpcError as err:
            if isinstance(err, grpc.Call) and err.code() == grpc.StatusCode.ALREADY_EXISTS:
                return digest
            raise self._error(err, what) from err
        return digest

    def write_stream(self, src: IO[bytes], digest: Digest, size: int, ref: str, lease_id: str,
                     labels: dict[str, str] | None = None) -> None:
        """Stream ``size`` bytes of ``src`` as blob ``digest`` (Content.Write under ``lease_id``);
        containerd checks size and digest on COMMIT. Already there: success (labels not set)."""
        call = self._channel.stream_stream("/containerd.services.content.v1.Content/Write",
                                           request_serializer=lambda m: m.SerializeToString(),
                                           response_deserializer=content_pb2.WriteContentResponse.FromString)

        def requests() -> Iterator[content_pb2.WriteContentRequest]:
            off = 0
            while chunk := src.read(WRITE_CHUNK):
                yield content_pb2.WriteContentRequest(action=content_pb2.WRITE, ref=ref, total=size,
                                                      expected=str(digest), offset=off, data=chunk)
                off += len(chunk)
            yield content_pb2.WriteContentRequest(action=content_pb2.COMMIT, ref=ref, total=size,
                                                  expected=str(digest), offset=off, labels=labels or {})

        what = f"write content {str(digest)!r} (ref {ref!r})"
        try:
            for resp in call(requests(), timeout=self.timeout + size / WRITE_CHUNK,
                             metadata=self._metadata + ((LEASE_KEY, lease_id),)):
                if resp.action == content_pb2.COMMIT and resp.digest and resp.digest != str(digest):
                    raise DigestMismatchError(f"failed to {what}: containerd committed {resp.digest!r}")
        except grpc.RpcError as err:
            if isinstance(err, grpc.Call) and err.code() == grpc.StatusCode.ALREADY_EXISTS:
                return
            raise self._error(err, what) from err

    def put_image(self, name: str, target: Descriptor, lease_id: str) -> None:
        """Create image ``name`` pointing at ``target``, or point the existing record at it."""
        from runwasm.shim.api.types import descriptor_pb2

        image = images_pb2.Image(name=name, target=descriptor_pb2.Descriptor(
            media_type=target.media_type, digest=str(target.digest), size=target.size,
            annotations=dict(target.annotations)))
        md = ((LEASE_KEY, lease_id),)
        try:
            self.unary("/containerd.services.images.v1.Images/Create", images_pb2.CreateImageRequest(image=image),
                        images_pb2.CreateImageResponse, f"create image {name!r}", md)
        except AlreadyExistsError:
            self.unary("/containerd.services.images.v1.Images/Update",
                        images_pb2.UpdateImageRequest(image=image, update_mask=field_mask_pb2.FieldMask(
                            paths=["target"])), images_pb2.UpdateImageResponse, f"update image {name!r}", md)

    def update_labels(self, digest: Digest, labels: dict[str, str]) -> dict[str, str]:
        """Set exactly ``labels`` on blob ``digest`` (others untouched); returns all its labels."""
        info = content_pb2.Info(digest=str(digest), labels={k: v for k, v in labels.items() if v})
        mask = field_mask_pb2.FieldMask(paths=[f"labels.{k}" for k in labels])
        resp = self.unary("/containerd.services.content.v1.Content/Update",
                           content_pb2.UpdateRequest(info=info, update_mask=mask), content_pb2.UpdateResponse,
                           f"update labels of content {str(digest)!r}")
        return dict(resp.info.labels)


def empty_response() -> Any:
    from google.protobuf import empty_pb2

    return empty_pb2.Empty


class ChunkReader(io.RawIOBase):
    """A read-only file over an iterator of byte chunks (containerd's Content.Read stream)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buf = b""

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        while not self._buf:
            nxt = next(self._chunks, None)
            if nxt is None:
                return 0
            self._buf = nxt
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n
