"""Publish task events to containerd, in order, surviving containerd restarts.

One ordered queue per server. A single worker sends each envelope with ttrpc
``containerd.services.events.ttrpc.v1.Events/Forward`` to containerd's ttrpc socket, with the
``containerd-namespace-ttrpc`` metadata and the W3C trace context of the request that caused
it (when tracing is on and there is one; ``runwasm.shim.common.tracing.outgoing``). Retries and drops
are counted (``runwasm.shim.server.otel_metrics``). On a broken connection (containerd restarting: EPIPE, refused) it
reconnects and retries the same event with a growing delay, so nothing is lost or reordered;
an event containerd rejects outright (a status error) is logged and dropped, as upstream does.
``close()`` drains what is queued (bounded by ``drain_timeout``) so the last TaskDelete gets out.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping

from google.protobuf.message import Message

from runwasm.shim.api.services.ttrpc.events.v1 import events_pb2
from runwasm.shim.api.types import event_pb2
from runwasm.shim.server import otel_metrics
from runwasm.shim.ttrpc.client import Client
from runwasm.shim.ttrpc.status import Code, RpcError

log = logging.getLogger(__name__)

SERVICE = "containerd.services.events.ttrpc.v1.Events"
TOPICS = {
    "TaskCreate": "/tasks/create", "TaskStart": "/tasks/start", "TaskExit": "/tasks/exit",
    "TaskDelete": "/tasks/delete", "TaskExecAdded": "/tasks/exec-added",
    "TaskExecStarted": "/tasks/exec-started", "TaskPaused": "/tasks/paused",
    "TaskResumed": "/tasks/resumed", "TaskOOM": "/tasks/oom", "TaskCheckpointed": "/tasks/checkpointed",
}
MAX_QUEUE = 2048


def envelope(namespace: str, event: Message, when_ns: int | None = None) -> event_pb2.Envelope:
    """Wrap an event in a containerd Envelope with a bare type URL (no type.googleapis.com/)."""
    env = event_pb2.Envelope()
    _fill_envelope(env, namespace, event, when_ns)
    return env


def _fill_envelope(env: event_pb2.Envelope, namespace: str, event: Message, when_ns: int | None) -> None:
    desc = event.DESCRIPTOR
    env.timestamp.FromNanoseconds(when_ns if when_ns is not None else time.time_ns())
    env.namespace = namespace
    env.topic = TOPICS[desc.name]
    env.event.type_url = desc.full_name
    env.event.value = event.SerializeToString()


class EventPublisher:
    def __init__(self, address: str, *, attempt_timeout: float = 5.0, drain_timeout: float = 5.0) -> None:
        self._address = address
        # (serialized ForwardRequest, its topic, its namespace, trace carrier)
        self._queue: asyncio.Queue[tuple[bytes, str, str, Mapping[str, str]]] = asyncio.Queue(MAX_QUEUE)
        self._attempt_timeout = attempt_timeout
        self._drain_timeout = drain_timeout
        self._client: Client | None = None
        self._worker: asyncio.Task[None] | None = None
        self.sent = 0

    def start(self) -> None:
        self._worker = asyncio.get_running_loop().create_task(self._run(), name="event-publisher")

    def publish(self, namespace: str, event: Message, trace: Mapping[str, str] | None = None) -> None:
        """Queue an event (never blocks; drops the oldest with an error log when full)."""
        if not self._address:
            log.debug("no containerd ttrpc address: event %s not sent", event.DESCRIPTOR.name)
            return
        if self._queue.full():
            _, dropped, _, _ = self._queue.get_nowait()
            log.error("event queue full (%d): dropped %s", MAX_QUEUE, dropped)
            otel_metrics.publish_drop(dropped)
        # serialized once, here: the Envelope is built inside the request (no copy into it)
        req = events_pb2.ForwardRequest()
        _fill_envelope(req.envelope, namespace, event, None)
        topic = req.envelope.topic
        self._queue.put_nowait((req.SerializeToString(), topic, namespace, dict(trace or {})))

    async def _send(self, payload: bytes, namespace: str, trace: Mapping[str, str]) -> None:
        if self._client is None:
            self._client = await Client.connect(self._address)
        md: dict[str, str] = {"containerd-namespace-ttrpc": namespace, **trace}
        await self._client.call(SERVICE, "Forward", payload, timeout=self._attempt_timeout, metadata=md)

    async def _drop_client(self) -> None:
        if self._client is not None:
            try:
                await self._client.close()
            except Exception:
                log.debug("closing the events client failed", exc_info=True)
            self._client = None

    async def _run(self) -> None:
        while True:
            payload, topic, namespace, trace = await self._queue.get()
            attempt = 0
            while True:
                try:
                    await self._send(payload, namespace, trace)
                    self.sent += 1
                    break
                except RpcError as err:
                    if err.code != Code.DEADLINE_EXCEEDED:
                        log.error("containerd rejected event %s: %s", topic, err)
                        otel_metrics.publish_drop(topic)
                        break
                    await self._retry_pause(topic, attempt := attempt + 1, err)
                except (OSError, TimeoutError) as err:
                    await self._retry_pause(topic, attempt := attempt + 1, err)
            self._queue.task_done()

    async def _retry_pause(self, topic: str, attempt: int, err: BaseException) -> None:
        """After a failed send (containerd away or not answering): drop the connection, back off."""
        await self._drop_client()
        otel_metrics.publish_retry(topic)
        if attempt == 1 or attempt % 20 == 0:
            log.warning("failed to publish %s (attempt %d): %s; retrying", topic, attempt, err)
        await asyncio.sleep(min(0.05 * attempt, 1.0))

    async def close(self) -> None:
        """Drain the queue (bounded by drain_timeout), then stop the worker."""
        if self._worker is None:
            return
        try:
            await asyncio.wait_for(self._queue.join(), self._drain_timeout)
        except TimeoutError:
            log.error("dropping %d undelivered events at shutdown", self._queue.qsize())
            otel_metrics.publish_drop("shutdown", self._queue.qsize())
        self._worker.cancel()
        try:
            await self._worker
        except asyncio.CancelledError:
            pass
        await self._drop_client()
