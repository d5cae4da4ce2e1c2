"""The runtime-spec features document (``features.md``) that ``-info`` returns in
``RuntimeInfo.features``, as ``runc features`` prints it for the runc shim.

containerd decides from it what it may put in a spec for this runtime: its CRI enables recursive
read-only mounts (``rro``) only when ``mountOptions`` lists it. Every entry is derived from the
tables the code itself uses (mount option words, capability names, seccomp actions/arches/
operators), so the document says what runwasm honours and nothing more:

- ``apparmor``, ``selinux``, ``intelRdt``, ``mountExtensions.idmap``: not enabled (runwasm does
  not apply AppArmor profiles, SELinux labels, RDT classes or id-mapped mounts);
- ``cgroup.systemd``: false (SystemdCgroup is refused, see shim/options.py);
- ``seccomp`` flags (``SECCOMP_FILTER_FLAG_*``): none known or supported;
- namespaces: the ones the Linux executor creates and joins (no ``time``: timeOffsets are not
  applied).

Light imports only: ``-info`` runs once per shim (containerd caches it).
"""

from __future__ import annotations

import json
from typing import Any

from runwasm.shim.version import VERSION

TYPE_URL = "types.containerd.io/opencontainers/runtime-spec/1/features/Features"
OCI_VERSION_MIN = "1.0.0"
OCI_VERSION_MAX = "1.0.2"
HOOKS = ("prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop")
NAMESPACES = ("cgroup", "ipc", "mount", "network", "pid", "user", "uts")


def features() -> dict[str, Any]:
    from runwasm.linux.capabilities import NAMES
    from runwasm.linux.mounts import KNOWN_OPTIONS
    from runwasm.linux.seccomp import ACTIONS, ARCHES, OPERATORS

    return {
        "ociVersionMin": OCI_VERSION_MIN,
        "ociVersionMax": OCI_VERSION_MAX,
        "hooks": list(HOOKS),
        "mountOptions": list(KNOWN_OPTIONS),
        "linux": {
            "namespaces": list(NAMESPACES),
            "capabilities": list(NAMES),
            "cgroup": {"v1": True, "v2": True, "systemd": False, "systemdUser": False, "rdma": False},
            "seccomp": {"enabled": True, "actions": sorted(ACTIONS), "operators": sorted(OPERATORS),
                        "archs": sorted(ARCHES), "knownFlags": [], "supportedFlags": []},
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
