"""``delete``'s Linux part: release what a dead server's Linux container left (cgroups, mounts)."""

from __future__ import annotations

import logging
from pathlib import Path

from runwasm.shim.common.statefile import BundleState

log = logging.getLogger(__name__)


def destroy_recorded(bundle: Path, state: BundleState) -> None:
    from runwasm.linux.errors import LinuxError, NotFoundError
    from runwasm.linux.executor import LinuxContainer

    try:
        LinuxContainer.load(bundle).destroy()
    except NotFoundError:
        return  # already cleaned up by the server
    except LinuxError as err:
        log.warning("failed to clean up Linux container %r: %s", state.id, err)
