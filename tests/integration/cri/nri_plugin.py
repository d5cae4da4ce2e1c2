"""A test NRI plugin: connects to a runtime's NRI socket and adjusts containers at creation.

NRI (containerd's Node Resource Interface, ``github.com/containerd/nri`` v0.12.0 in containerd
2.3.4) runs two ttrpc connections over one unix socket the plugin dials, multiplexed by NRI's
``pkg/net/multiplex``: every chunk on the socket is ``conn id (u32 BE) | length (u32 BE) |
bytes``; conn 1 carries the ``nri.pkg.api.v1alpha1.Plugin`` service (the plugin serves it, the
runtime calls), conn 2 the ``Runtime`` service (the plugin calls ``RegisterPlugin`` on it).
Each conn's bytes are a ttrpc stream (``runwasm.shim.ttrpc.frame``); one ttrpc frame is sent as
one mux chunk.

The sequence: connect, ``RegisterPlugin(name, index)``; the runtime then calls ``Configure``
(answered with the event mask: CreateContainer only), ``Synchronize`` (no updates), and
``CreateContainer`` for every container created, answered with ``adjust(request)``, the test's
choice of ``ContainerAdjustment`` (None: no change). Other Plugin methods are answered with an
empty message; unknown ones with UNIMPLEMENTED.

It runs on a thread of the test process (blocking sockets), so the test can change what it
adjusts between containers and read what it was asked (``requests``).
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Callable

from runwasm.shim.api.nri import api_pb2 as nri
from runwasm.shim.api.ttrpc import ttrpc_pb2
from runwasm.shim.ttrpc.frame import Decoder, Frame, MessageType, encode_frame

PLUGIN_CONN, RUNTIME_CONN = 1, 2
_MUX = struct.Struct(">II")
PLUGIN_SERVICE = "nri.pkg.api.v1alpha1.Plugin"
RUNTIME_SERVICE = "nri.pkg.api.v1alpha1.Runtime"
UNIMPLEMENTED = 12

Adjuster = Callable[[nri.CreateContainerRequest], "nri.ContainerAdjustment | None"]

# Plugin methods: request type, response type
_METHODS: dict[str, tuple[type, type]] = {
    "Configure": (nri.ConfigureRequest, nri.ConfigureResponse),
    "Synchronize": (nri.SynchronizeRequest, nri.SynchronizeResponse),
    "Shutdown": (nri.Empty, nri.Empty),
    "CreateContainer": (nri.CreateContainerRequest, nri.CreateContainerResponse),
    "StateChange": (nri.StateChangeEvent, nri.Empty),
}


def event_mask(*events: int) -> int:
    """NRI's subscription mask: bit ``event - 1`` for each event."""
    mask = 0
    for e in events:
        mask |= 1 << (e - 1)
    return mask


class NriError(RuntimeError):
    """The plugin could not connect or register."""


class NriPlugin:
    """One external NRI plugin connection; ``start`` registers it, ``close`` hangs up."""

    def __init__(self, socket_path: str, adjust: Adjuster, name: str = "runwasm-test", index: str = "50") -> None:
        self.socket_path = socket_path
        self.adjust = adjust
        self.name, self.index = name, index
        self.requests: list[nri.CreateContainerRequest] = []
        self.errors: list[str] = []
        self.configured = threading.Event()
        self._sock: socket.socket | None = None
        self._wlock = threading.Lock()
        self._decoders = {PLUGIN_CONN: Decoder(), RUNTIME_CONN: Decoder()}
        self._registered = threading.Event()
        self._register_status: ttrpc_pb2.Response | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ------------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(self.socket_path)
        except OSError as err:
            sock.close()
            raise NriError(f"failed to connect to NRI socket {self.socket_path!r}: {err}") from err
        self._sock = sock
        self._thread = threading.Thread(target=self._read_loop, name=f"nri-{self.name}", daemon=True)
        self._thread.start()
        req = nri.RegisterPluginRequest(plugin_name=self.name, plugin_idx=self.index)
        call = ttrpc_pb2.Request(service=RUNTIME_SERVICE, method="RegisterPlugin", payload=req.SerializeToString())
        self._send(RUNTIME_CONN, encode_frame(1, MessageType.REQUEST, call.SerializeToString()))
        if not self._registered.wait(timeout):
            raise NriError(f"RegisterPlugin got no answer in {timeout}s; errors: {self.errors}")
        status = self._register_status.status if self._register_status is not None else None
        if status is not None and status.code != 0:
            raise NriError(f"RegisterPlugin refused: code {status.code}: {status.message}")
        if not self.configured.wait(timeout):
            raise NriError(f"the runtime did not call Configure in {timeout}s; errors: {self.errors}")

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._sock.close()
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> NriPlugin:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- wire -----------------------------------------------------------------------------

    def _send(self, conn: int, data: bytes) -> None:
        assert self._sock is not None
        with self._wlock:
            self._sock.sendall(_MUX.pack(conn, len(data)) + data)

    def _recv_exact(self, n: int) -> bytes | None:
        assert self._sock is not None
        buf = bytearray()
        while len(buf) < n:
            try:
                chunk = self._sock.recv(n - len(buf))
            except OSError:
                return None
            if not chunk:
                return None
            buf += chunk
        return bytes(buf)

    def _read_loop(self) -> None:
        while True:
            head = self._recv_exact(_MUX.size)
            if head is None:
                return
            conn, length = _MUX.unpack(head)
            body = self._recv_exact(length)
            if body is None:
                return
            decoder = self._decoders.get(conn)
            if decoder is None:
                self.errors.append(f"data on unexpected mux conn {conn}")
                continue
            decoder.feed(body)
            for event in decoder:
                if not isinstance(event, Frame):
                    self.errors.append(f"oversized frame on conn {conn}")
                elif conn == RUNTIME_CONN and event.type == MessageType.RESPONSE:
                    self._register_status = ttrpc_pb2.Response.FromString(event.payload)
                    self._registered.set()
                elif conn == PLUGIN_CONN and event.type == MessageType.REQUEST:
                    self._serve(event)

    def _serve(self, frame: Frame) -> None:
        call = ttrpc_pb2.Request.FromString(frame.payload)
        resp = ttrpc_pb2.Response()
        types = _METHODS.get(call.method) if call.service == PLUGIN_SERVICE else None
        if types is None:
            resp.status.code = UNIMPLEMENTED
            resp.status.message = f"{call.service}/{call.method} is not implemented by the test plugin"
        else:
            try:
                resp.payload = self._answer(call.method, types[0].FromString(call.payload)).SerializeToString()
            except Exception as err:  # noqa: BLE001 - reported to the runtime and kept for the test
                self.errors.append(f"{call.method}: {type(err).__name__}: {err}")
                resp.status.code = 2
                resp.status.message = f"test plugin failed: {err}"
        self._send(PLUGIN_CONN, encode_frame(frame.stream_id, MessageType.RESPONSE, resp.SerializeToString()))

    def _answer(self, method: str, req: object) -> object:
        if method == "Configure":
            self.configured.set()
            return nri.ConfigureResponse(events=event_mask(nri.CREATE_CONTAINER))
        if method == "Synchronize":
            return nri.SynchronizeResponse()
        if method == "CreateContainer":
            assert isinstance(req, nri.CreateContainerRequest)
            self.requests.append(req)
            adjustment = self.adjust(req)
            return nri.CreateContainerResponse(adjust=adjustment) if adjustment is not None else nri.CreateContainerResponse()
        return nri.Empty()
