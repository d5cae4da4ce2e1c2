"""The shim server's process set-up for tests that drive a real zygote and reaper.

Makes the calling process a child subreaper, so run it only in a process of its own (the tests
use ``python -c``), never in the pytest process.
"""

from __future__ import annotations

import asyncio

from runwasm.shim.common import nsutil
from runwasm.shim.server.reaper import Reaper
from runwasm.shim.spawn.zygote import Zygote


def server_side(preload: tuple[str, ...] = (), later: tuple[str, ...] = (), lazy: bool = False) -> tuple[Zygote, Reaper]:
    """Subreaper + started zygote (importing ``preload``, then ``later`` when idle; ``lazy``: at
    its first spawn) + a reaper installed on the running loop, as server_main does."""
    nsutil.set_child_subreaper()
    zygote = Zygote()
    zygote.start(preload, later=later, lazy=lazy)
    reaper = Reaper()
    reaper.install(asyncio.get_running_loop())
    return zygote, reaper
