"""A network namespace wired to the host by a veth pair, for the standalone harness (``--net``).

::

    h = create_netns_with_veth("rw-web", "169.254.77.1", "169.254.77.2", 30)
    spec["linux"]["namespaces"].append({"type": "network", "path": h.path})   # /run/netns/rw-web
    ... the host reaches a server in the container at h.ns_ip ...
    h.close()                                                                  # idempotent

What it builds (pyroute2 0.9, imported lazily: the import alone takes ~0.3 s):

1. ``/run/netns/NAME``, a bind mount of a new network namespace (``pyroute2.netns.create``;
   like iproute2 it makes ``/run/netns`` a shared mount point first, when it is not one yet);
2. a veth pair: ``rwh-<name>`` on the host with ``host_ip/prefixlen``, and its peer moved into
   the namespace, renamed ``eth0`` there, with ``ns_ip/prefixlen``; both up, and ``lo`` up in
   the namespace. No default route and no forwarding: only the two ends of the pair can talk.

Addresses must be link-local (169.254.0.0/16) or private (RFC 1918) and distinct, in the same
``/prefixlen`` network. Loopback addresses cannot be used on a veth (the kernel drops
127.0.0.0/8 packets arriving from a non-loopback device), so "loopback-range" is read as "never
routed off the machine". On any failure everything made so far is removed again.

``close()`` deletes the veth pair (the peer goes with it), the namespace's bind mount and file,
and the ``/run/netns`` mount point when ``create`` made it and no other namespace uses it.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from runwasm.linux import syscalls
from runwasm.linux.errors import AlreadyExistsError, InvalidArgumentError, SetupError

log = logging.getLogger(__name__)

NETNS_DIR = Path("/run/netns")
NS_IFNAME = "eth0"
_IFNAMSIZ = 15


def _is_mountpoint(path: Path) -> bool:
    target = str(path)
    try:
        text = Path("/proc/self/mountinfo").read_text()
    except OSError:
        return False
    return any(line.split()[4] == target for line in text.splitlines())


@dataclass
class NetnsHandle:
    """A namespace made by ``create_netns_with_veth``; ``close()`` removes all of it."""

    name: str
    host_ifname: str
    host_ip: str
    ns_ip: str
    prefixlen: int
    made_netns_mount: bool
    closed: bool = False

    @property
    def path(self) -> str:
        """The namespace path for ``linux.namespaces[].path`` (type ``network``)."""
        return str(NETNS_DIR / self.name)

    def close(self) -> None:
        """Delete the veth pair, the namespace and (when we made it and it is unused) the
        ``/run/netns`` mount. Idempotent; raises SetupError naming what could not be removed."""
        if self.closed:
            return
        from pyroute2 import IPRoute, netns

        failures: list[str] = []
        with IPRoute() as ipr:
            idx = ipr.link_lookup(ifname=self.host_ifname)
            if idx:
                try:
                    ipr.link("del", index=idx[0])
                except Exception as err:  # pyroute2 raises NetlinkError (an OSError) or others
                    failures.append(f"veth {self.host_ifname!r}: {err}")
        if os.path.exists(self.path):
            try:
                netns.remove(self.name)
            except Exception as err:
                failures.append(f"netns {self.path!r}: {err}")
        if self.made_netns_mount:
            _drop_netns_mount()
        self.closed = not failures
        if failures:
            raise SetupError(f"failed to remove network namespace {self.name!r}: {'; '.join(failures)}")

    def __enter__(self) -> NetnsHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _drop_netns_mount() -> None:
    try:
        if any(NETNS_DIR.iterdir()):
            return  # another namespace still lives there
        if _is_mountpoint(NETNS_DIR):
            syscalls.umount2(str(NETNS_DIR), syscalls.MNT_DETACH)
        NETNS_DIR.rmdir()
    except OSError as err:
        log.warning("failed to remove %r: %s", str(NETNS_DIR), err)


def _check_addresses(host_ip: str, ns_ip: str, prefixlen: int) -> None:
    try:
        host = ipaddress.IPv4Address(host_ip)
        ns = ipaddress.IPv4Address(ns_ip)
    except ValueError as err:
        raise InvalidArgumentError(f"failed to create veth pair: {err}") from err
    if not 8 <= prefixlen <= 30:
        raise InvalidArgumentError(f"failed to create veth pair: prefix length must be 8..30, got {prefixlen}")
    for ip in (host, ns):
        if ip.is_loopback or not (ip.is_link_local or ip.is_private):
            raise InvalidArgumentError(f"failed to create veth pair: {str(ip)!r} must be a link-local "
                                       "(169.254.0.0/16) or private address, never loopback or routable")
    net = ipaddress.IPv4Network(f"{host}/{prefixlen}", strict=False)
    if ns not in net or host == ns or host in (net.network_address, net.broadcast_address) \
            or ns in (net.network_address, net.broadcast_address):
        raise InvalidArgumentError(f"failed to create veth pair: {host_ip!r} and {ns_ip!r} must be two "
                                   f"distinct host addresses of one /{prefixlen} network")


def create_netns_with_veth(name: str, host_ip: str, ns_ip: str, prefixlen: int = 30) -> NetnsHandle:
    """Create ``/run/netns/NAME`` joined to the host by a veth pair (see the module docstring).

    Raises InvalidArgumentError (bad name/addresses), AlreadyExistsError (the namespace or the
    host interface exists), SetupError (netlink or mount failure; nothing is left behind)."""
    if not name or "/" in name or name in (".", "..") or len(name) > 64:
        raise InvalidArgumentError(f"failed to create network namespace {name!r}: invalid name")
    _check_addresses(host_ip, ns_ip, prefixlen)
    host_if = f"rwh-{name}"[:_IFNAMSIZ]
    peer_if = f"rwp-{name}"[:_IFNAMSIZ]
    if (NETNS_DIR / name).exists():
        raise AlreadyExistsError(f"failed to create network namespace {name!r}: {str(NETNS_DIR / name)!r} exists")
    if Path(f"/sys/class/net/{host_if}").exists():
        raise AlreadyExistsError(f"failed to create veth pair for {name!r}: interface {host_if!r} exists")

    from pyroute2 import IPRoute, netns

    made_mount = not _is_mountpoint(NETNS_DIR)
    h = NetnsHandle(name, host_if, host_ip, ns_ip, prefixlen, made_mount)
    try:
        netns.create(name)
        with IPRoute() as ipr:
            ipr.link("add", ifname=host_if, kind="veth", peer=peer_if)
            (host_idx,) = ipr.link_lookup(ifname=host_if)
            (peer_idx,) = ipr.link_lookup(ifname=peer_if)
            ipr.link("set", index=peer_idx, net_ns_fd=name)
            ipr.addr("add", index=host_idx, address=host_ip, prefixlen=prefixlen)
            ipr.link("set", index=host_idx, state="up")
        with IPRoute(netns=name) as nsr:
            (lo,) = nsr.link_lookup(ifname="lo")
            nsr.link("set", index=lo, state="up")
            (idx,) = nsr.link_lookup(ifname=peer_if)
            nsr.link("set", index=idx, ifname=NS_IFNAME)
            nsr.addr("add", index=idx, address=ns_ip, prefixlen=prefixlen)
            nsr.link("set", index=idx, state="up")
    except Exception as err:
        try:
            h.close()
        except SetupError as cleanup_err:
            log.warning("%s", cleanup_err)
        if isinstance(err, AlreadyExistsError | InvalidArgumentError):
            raise
        raise SetupError(f"failed to create network namespace {name!r} with veth {host_if!r}: {err}") from err
    log.info("network namespace %s: %s/%d (host %s) <-> %s/%d (%s)", h.path, host_ip, prefixlen, host_if,
             ns_ip, prefixlen, NS_IFNAME)
    return h
