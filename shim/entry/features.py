"""The runtime-spec features document (``features.md``) that ``-info`` returns in
``RuntimeInfo.features``, as ``runc features`` prints it for the runc shim.

containerd decides from it what it may put in a spec for this runtime: its CRI enables recursive
read-only mounts (``rro``) only when ``mountOptions`` lists it. The lists are literal copies of
the tables the code uses (``runwasm.linux.mounts.KNOWN_OPTIONS``, ``linux.capabilities.NAMES``,
``linux.seccomp.ACTIONS/ARCHES/OPERATORS``), kept here because importing those modules costs
hundreds of ms (ctypes' libc lookup); ``tests/shim/entry/test_features.py`` checks they are equal, so
the document says what runwasm honours and nothing more:

- ``apparmor``, ``selinux``, ``intelRdt``, ``mountExtensions.idmap``: not enabled (runwasm does
  not apply AppArmor profiles, SELinux labels, RDT classes or id-mapped mounts);
- ``cgroup.systemd``: false (SystemdCgroup is refused, see shim/common/options.py);
- ``seccomp`` flags (``SECCOMP_FILTER_FLAG_*``): none known or supported;
- namespaces: the ones the Linux executor creates and joins (no ``time``: timeOffsets are not
  applied).

Light imports only: ``-info`` runs once per shim (containerd caches it).
"""

from __future__ import annotations

import json
from typing import Any

from runwasm.shim.common.version import VERSION

TYPE_URL = "types.containerd.io/opencontainers/runtime-spec/1/features/Features"
OCI_VERSION_MIN = "1.0.0"
OCI_VERSION_MAX = "1.0.2"
HOOKS = ("prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop")
NAMESPACES = ("cgroup", "ipc", "mount", "network", "pid", "user", "uts")


MOUNT_OPTIONS = (
    "acl", "async", "atime", "bind", "defaults", "dev", "diratime", "dirsync", "exec", "iversion", "lazytime",
    "loud", "mand", "noacl", "noatime", "nodev", "nodiratime", "noexec", "noiversion", "nolazytime", "nomand",
    "norelatime", "nostrictatime", "nosuid", "nosymfollow", "private", "ratime", "rbind", "rdev", "rdiratime",
    "relatime", "remount", "rexec", "rnoatime", "rnodev", "rnodiratime", "rnoexec", "rnorelatime",
    "rnostrictatime", "rnosuid", "rnosymfollow", "ro", "rprivate", "rrelatime", "rro", "rrw", "rshared",
    "rslave", "rstrictatime", "rsuid", "rsymfollow", "runbindable", "rw", "shared", "silent", "slave",
    "strictatime", "suid", "symfollow", "sync", "unbindable",
)
CAPABILITIES = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT",
    "CAP_SYS_NICE", "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
    "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN",
    "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
)
SECCOMP_ACTIONS = ("SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS",
                   "SCMP_ACT_KILL_THREAD", "SCMP_ACT_LOG", "SCMP_ACT_TRACE", "SCMP_ACT_TRAP")
SECCOMP_ARCHES = ("SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM", "SCMP_ARCH_PPC64LE", "SCMP_ARCH_RISCV64", "SCMP_ARCH_S390X",
                  "SCMP_ARCH_X32", "SCMP_ARCH_X86", "SCMP_ARCH_X86_64")
SECCOMP_OPERATORS = ("SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_LE", "SCMP_CMP_LT",
                     "SCMP_CMP_MASKED_EQ", "SCMP_CMP_NE")


def features() -> dict[str, Any]:
    return {
        "ociVersionMin": OCI_VERSION_MIN,
        "ociVersionMax": OCI_VERSION_MAX,
        "hooks": list(HOOKS),
        "mountOptions": list(MOUNT_OPTIONS),
        "linux": {
            "namespaces": list(NAMESPACES),
            "capabilities": list(CAPABILITIES),
            "cgroup": {"v1": True, "v2": True, "systemd": False, "systemdUser": False, "rdma": False},
            "seccomp": {"enabled": True, "actions": list(SECCOMP_ACTIONS), "operators": list(SECCOMP_OPERATORS),
                        "archs": list(SECCOMP_ARCHES), "knownFlags": [], "supportedFlags": []},
            "apparmor": {"enabled": False},
            "selinux": {"enabled": False},
            "intelRdt": {"enabled": False},
            "mountExtensions": {"idmap": {"enabled": False}},
        },
        "annotations": {"io.containerd.runwasm.v1.version": VERSION},
    }


def encode() -> bytes:
    """The document as compact JSON (what containerd's typeurl unmarshals for this type URL)."""
    return json.dumps(features(), separators=(",", ":")).encode()
