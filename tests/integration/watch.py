"""``ctr events`` in the background: collect event lines and wait for one."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from tests.integration.daemon import Containerd


@dataclass(frozen=True, slots=True)
class Event:
    namespace: str
    topic: str
    body: dict[str, Any]


@dataclass
class EventWatcher:
    """A running ``ctr events`` subscriber of one daemon; events of our namespace only."""

    daemon: Containerd
    events: list[Event] = field(default_factory=list)
    _cond: threading.Condition = field(default_factory=threading.Condition)
    _proc: subprocess.Popen[str] | None = None
    _thread: threading.Thread | None = None

    def __enter__(self) -> EventWatcher:
        self._proc = subprocess.Popen(self.daemon.ctr_argv("events"), stdout=subprocess.PIPE,
                                      stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, text=True,
                                      env=self.daemon.env())
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        time.sleep(0.3)  # let the subscription reach containerd before anything is published
        return self

    def _read(self) -> None:
        stream = self._proc.stdout if self._proc is not None else None
        if stream is None:
            return
        for line in stream:
            # "<date> <time> <tz> <tz> <namespace> <topic> <json>"
            head, sep, body = line.partition(" {")
            parts = head.split()
            if not sep or len(parts) < 2:
                continue
            try:
                doc = json.loads("{" + body)
            except ValueError:
                continue
            if parts[-2] == self.daemon.namespace:
                with self._cond:
                    self.events.append(Event(parts[-2], parts[-1], doc))
                    self._cond.notify_all()

    def wait_for(self, topic: str, container_id: str, timeout: float = 10.0) -> Event:
        """The first ``topic`` event for ``container_id``; AssertionError after ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for ev in self.events:
                    if ev.topic == topic and ev.body.get("container_id") == container_id:
                        return ev
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = [(e.topic, e.body.get("container_id")) for e in self.events]
                    raise AssertionError(f"no {topic} event for {container_id!r} in {timeout}s; saw {seen}")
                self._cond.wait(left)

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._thread is not None:
            self._thread.join(5)
