"""Capabilities: bounding, effective, permitted, inheritable, ambient (``process.capabilities``).

Order inside ``apply`` and relative to the identity switch (``identity.py``):
1. ``drop_bounding`` while still root with CAP_SETPCAP (dropping needs it);
2. ``keep_caps`` (PR_SET_KEEPCAPS) so setuid to non-root keeps the permitted set;
3. identity switch (setgroups/setgid/setuid);
4. ``set_sets`` capset(E, P, I) (after setuid, which cleared effective);
5. ``raise_ambient`` last: ambient raise needs the cap in both permitted and inheritable.
"""

from __future__ import annotations

import errno

from runwasm.linux import syscalls as sc
from runwasm.linux.errors import InvalidArgumentError, SetupError
from runwasm.oci.runtime_spec import Capabilities

NAMES = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT",
    "CAP_SYS_NICE", "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
    "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN",
    "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
)
NUMBERS = {name: i for i, name in enumerate(NAMES)}


def last_cap() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except OSError:
        return len(NAMES) - 1


def mask_of(names: tuple[str, ...], field: str) -> int:
    """Bit mask of capability names; an unknown name is an InvalidArgumentError naming the field."""
    m = 0
    for n in names:
        if n not in NUMBERS:
            raise InvalidArgumentError(f"failed to apply process.capabilities.{field}: unknown capability {n!r}")
        m |= 1 << NUMBERS[n]
    return m


def drop_bounding(caps: Capabilities) -> None:
    keep = mask_of(caps.bounding, "bounding")
    for i in range(last_cap() + 1):
        if not keep & (1 << i):
            try:
                sc.prctl(sc.PR_CAPBSET_DROP, i)
            except OSError as err:
                if err.errno == errno.EINVAL:  # the running kernel does not know this cap
                    continue
                raise SetupError(f"failed to drop {NAMES[i] if i < len(NAMES) else i} from the bounding set: "
                                 f"[errno {err.errno}] {err.strerror}") from err


def keep_caps() -> None:
    sc.prctl(sc.PR_SET_KEEPCAPS, 1)


def set_sets(caps: Capabilities) -> None:
    eff = mask_of(caps.effective, "effective")
    perm = mask_of(caps.permitted, "permitted")
    inh = mask_of(caps.inheritable, "inheritable")
    try:
        sc.capset(eff, perm, inh)
    except OSError as err:
        raise SetupError(f"failed to set capabilities (effective={eff:#x} permitted={perm:#x} "
                         f"inheritable={inh:#x}): [errno {err.errno}] {err.strerror}") from err


def raise_ambient(caps: Capabilities) -> None:
    sc.prctl(sc.PR_CAP_AMBIENT, sc.PR_CAP_AMBIENT_CLEAR_ALL)
    for name in caps.ambient:
        num = NUMBERS.get(name)
        if num is None:
            raise InvalidArgumentError(f"failed to apply process.capabilities.ambient: unknown capability {name!r}")
        try:
            sc.prctl(sc.PR_CAP_AMBIENT, sc.PR_CAP_AMBIENT_RAISE, num)
        except OSError as err:
            # runc ignores this too: ambient needs the cap in permitted and inheritable
            if err.errno != errno.EPERM:
                raise SetupError(f"failed to raise ambient {name}: [errno {err.errno}] {err.strerror}") from err
