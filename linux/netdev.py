"""``linux.netDevices``: host network interfaces moved into the container's network namespace.

The init runs this right after it joined or created its namespaces: it holds a handle on the
runtime's network namespace (opened before ``namespaces.join``), goes back there, moves each
interface into the container's namespace under its new name (one RTM_NEWLINK carrying both
IFLA_NET_NS_FD and IFLA_IFNAME, so the name never clashes in the wrong namespace) and returns.
A missing interface, a name taken in the container, or a new user namespace (whose root may not
enter the runtime's network namespace) is a SetupError naming the device; nothing is skipped.
pyroute2 is imported only when the spec has netDevices (the import alone costs ~0.3 s).
"""

from __future__ import annotations

import os

from runwasm.linux import syscalls as sc
from runwasm.linux.errors import SetupError
from runwasm.oci.spec_sched import NetDevice


def move(devices: tuple[NetDevice, ...], runtime_netns: int) -> None:
    """Move ``devices`` from the network namespace ``runtime_netns`` (an fd) into the calling
    process's current one; the caller stays in its namespace."""
    if not devices:
        return
    from pyroute2 import IPRoute

    target = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            sc.setns(runtime_netns, sc.CLONE_NEWNET)
        except OSError as err:
            raise SetupError(f"failed to apply linux.netDevices: cannot enter the runtime's network namespace "
                             f"to take {[d.host_name for d in devices]} from it: [errno {err.errno}] "
                             f"{os.strerror(err.errno or 0)}") from err
        try:
            with IPRoute() as ipr:
                for d in devices:
                    found = ipr.link_lookup(ifname=d.host_name)
                    if not found:
                        raise SetupError(f"failed to apply linux.netDevices[{d.host_name!r}]: no such interface "
                                         "in the runtime's network namespace")
                    try:
                        ipr.link("set", index=found[0], net_ns_fd=target, ifname=d.name)
                    except Exception as err:  # noqa: BLE001 - pyroute2's NetlinkError and OSError
                        raise SetupError(f"failed to apply linux.netDevices[{d.host_name!r}] (name {d.name!r}): "
                                         f"moving it into the container's network namespace: {err}") from err
        finally:
            sc.setns(target, sc.CLONE_NEWNET)
    finally:
        os.close(target)
