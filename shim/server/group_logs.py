"""Route a node server's log records to the ``log`` FIFO of the group they concern.

containerd reads each bundle's ``log`` FIFO (shim-protocol.md §16) and prints it with that
shim's namespace and id. A node server (``shim/server/node.py``) hosts many groups, so its root
handler is a ``GroupLogRouter``: a record goes to the FIFO of the group named by the context
variable ``current`` (set in every task of a group: its ttrpc server, connections, handlers and
event publisher inherit it), formatted with the group's namespace and id; a record with no group
(the shared reaper's callbacks, node start-up and exit) goes to fd 2, the FIFO of the first
group; when that group is done while others remain, fd 2 becomes the oldest remaining group's
FIFO (so tracebacks of last resort still reach a reader), and the fallback takes its fields.
"""

from __future__ import annotations

import contextvars
import logging
import os

from runwasm.shim.common.naming import RUNTIME_NAME
from runwasm.shim.common.tracing import TraceIdFilter
from runwasm.shim.server.logs import FdHandler, LogfmtFormatter, lean_records

current: contextvars.ContextVar[str] = contextvars.ContextVar("runwasm_group", default="")


def _handler(fd: int, namespace: str, container_id: str) -> FdHandler:
    handler = FdHandler(fd)
    handler.setFormatter(LogfmtFormatter({"runtime": RUNTIME_NAME, "namespace": namespace, "id": container_id}))
    return handler


class GroupLogRouter(logging.Handler):
    """The root handler of a node server."""

    def __init__(self, fallback_group: str, namespace: str, container_id: str) -> None:
        super().__init__()
        self.fallback = _handler(2, namespace, container_id)
        self.fallback_group = fallback_group
        self.groups: dict[str, FdHandler] = {}
        self._fields: dict[str, tuple[str, str]] = {}
        self.addFilter(TraceIdFilter())

    def add(self, group: str, fd: int, namespace: str, container_id: str, *, debug: bool = False) -> None:
        """Records of ``group`` go to ``fd`` (the caller keeps it open until ``remove``); ``debug``
        (the group's runtime option ``Debug``): its debug records too."""
        if fd >= 0:
            handler = _handler(fd, namespace, container_id)
            handler.setLevel(logging.DEBUG if debug else self.fallback.level)
            self.groups[group] = handler
            self._fields[group] = (namespace, container_id)
            if debug:
                logging.getLogger().setLevel(logging.DEBUG)

    def remove(self, group: str) -> None:
        """Forget ``group`` (before its fd is closed); fd 2 moves on if it was the group's."""
        self.groups.pop(group, None)
        self._fields.pop(group, None)
        if group != self.fallback_group:
            return
        for other, handler in self.groups.items():
            try:
                os.dup2(handler.fd, 2)
            except OSError:
                continue
            level = self.fallback.level
            self.fallback = _handler(2, *self._fields[other])
            self.fallback.setLevel(level)
            self.fallback_group = other
            return

    def emit(self, record: logging.LogRecord) -> None:
        handler = self.groups.get(current.get()) or self.fallback
        if record.levelno >= handler.level:
            handler.emit(record)


def install(first_group: str, *, debug: bool, namespace: str, container_id: str) -> GroupLogRouter:
    """Make a ``GroupLogRouter`` the only root handler; fd 2 is ``first_group``'s FIFO."""
    lean_records()
    root = logging.getLogger()
    root.handlers.clear()
    router = GroupLogRouter(first_group, namespace, container_id)
    root.addHandler(router)
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    router.fallback.setLevel(root.level)
    logging.raiseExceptions = False
    return router
