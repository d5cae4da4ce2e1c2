"""The per-container mount table: every mount and directory made for a rootfs, recorded
*before* it is made, so that ``undo`` can take it all down again, also after a crash.

File: ``<state_dir>/<container id>.json`` = ``{"mounts": [target, ...], "dirs": [...],
"trees": [...]}`` in creation order. ``undo`` unmounts in reverse order (not-mounted is fine),
then removes ``trees`` (whole trees we created) and ``dirs`` (only if empty), then the file.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
from pathlib import Path

from runwasm.oci.errors import InvalidArgumentError, UnavailableError
from runwasm.oci.mounts import syscalls

log = logging.getLogger(__name__)


class MountTable:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.mounts: list[str] = []
        self.dirs: list[str] = []
        self.trees: list[str] = []
        self.info: dict[str, str] = {}

    @classmethod
    def load(cls, path: Path) -> MountTable:
        table = cls(path)
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise InvalidArgumentError(f"failed to load mount table {str(path)!r}: {err}") from err
        table.mounts = [str(x) for x in data.get("mounts", [])]
        table.dirs = [str(x) for x in data.get("dirs", [])]
        table.trees = [str(x) for x in data.get("trees", [])]
        table.info = {str(k): str(v) for k, v in data.get("info", {}).items()}
        return table

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w") as fh:
            json.dump({"mounts": self.mounts, "dirs": self.dirs, "trees": self.trees, "info": self.info}, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)

    def will_mount(self, target: Path) -> None:
        self.mounts.append(str(target))
        self.save()

    def made_dir(self, path: Path) -> Path:
        """mkdir ``path`` (and record it) if it does not exist yet; return it."""
        if not path.exists():
            self.dirs.append(str(path))
            self.save()
            path.mkdir(parents=True)
        return path

    def made_tree(self, path: Path) -> None:
        self.trees.append(str(path))
        self.save()

    def undo(self) -> list[str]:
        """Unmount and remove everything recorded; return the targets unmounted.

        Raises:
            UnavailableError: a mount could not be removed (busy); the table is kept.
        """
        done = []
        failed = []
        for target in reversed(self.mounts):
            try:
                syscalls.umount(target)
                done.append(target)
            except OSError as err:
                if err.errno in (errno.EINVAL, errno.ENOENT):
                    continue  # never mounted, or already gone
                if err.errno == errno.EBUSY:
                    try:
                        syscalls.umount(target, detach=True)
                        done.append(target)
                        log.warning("lazily unmounted busy %s", target)
                        continue
                    except OSError as err2:
                        err = err2
                failed.append(f"{target}: {err}")
        if failed:
            raise UnavailableError(f"failed to unmount rootfs mounts: {'; '.join(failed)}")
        for tree in reversed(self.trees):
            shutil.rmtree(tree, ignore_errors=True)
        for d in reversed(self.dirs):
            try:
                os.rmdir(d)
            except FileNotFoundError:
                pass
            except OSError as err:
                if err.errno == errno.ENOTEMPTY:
                    shutil.rmtree(d, ignore_errors=True)
                else:
                    log.warning("failed to remove %s: %s", d, err)
        self.path.unlink(missing_ok=True)
        return done
