"""``linux.sysctl``: written under the container's /proc/sys.

After pivot_root (so /proc is the container's procfs, whose net/ipc/uts entries belong to the
container's namespaces) and before any /proc/sys read-only path or capability drop.
"""

from __future__ import annotations

import os

from runwasm.linux.errors import InvalidArgumentError, SetupError


def apply(sysctl: dict[str, str]) -> None:
    for key, value in sysctl.items():
        rel = key.replace(".", "/")
        if ".." in rel.split("/") or rel.startswith("/"):
            raise InvalidArgumentError(f"failed to apply linux.sysctl[{key!r}]: invalid key")
        path = os.path.join("/proc/sys", rel)
        try:
            with open(path, "w") as f:
                f.write(value)
        except OSError as err:
            raise SetupError(f"failed to apply linux.sysctl[{key!r}] = {value!r} at {path!r}: "
                             f"[errno {err.errno}] {os.strerror(err.errno or 0)}") from err


def set_names(hostname: str, domainname: str) -> None:
    from runwasm.linux import syscalls as sc

    try:
        if hostname:
            sc.sethostname(hostname)
        if domainname:
            sc.setdomainname(domainname)
    except OSError as err:
        raise SetupError(f"failed to set hostname {hostname!r} / domainname {domainname!r}: "
                         f"[errno {err.errno}] {os.strerror(err.errno or 0)}") from err
