"""``process.rlimits`` and ``process.oomScoreAdj``.

Both before the identity switch and capability drop: raising a hard limit needs
CAP_SYS_RESOURCE, and so does lowering oom_score_adj.
"""

from __future__ import annotations

import os
import resource

from runwasm.linux.errors import InvalidArgumentError, SetupError
from runwasm.oci.runtime_spec import Rlimit

_NAMES = {n: getattr(resource, n) for n in dir(resource) if n.startswith("RLIMIT_")}


def set_rlimits(rlimits: tuple[Rlimit, ...]) -> None:
    for i, rl in enumerate(rlimits):
        if rl.type not in _NAMES:
            raise InvalidArgumentError(f"failed to apply process.rlimits[{i}]: unknown type {rl.type!r}")
        # 2**64-1 is RLIM_INFINITY in the spec
        soft = resource.RLIM_INFINITY if rl.soft >= 2**63 - 1 else rl.soft
        hard = resource.RLIM_INFINITY if rl.hard >= 2**63 - 1 else rl.hard
        try:
            resource.setrlimit(_NAMES[rl.type], (soft, hard))
        except (OSError, ValueError) as err:
            raise SetupError(f"failed to apply process.rlimits[{i}] {rl.type} soft={rl.soft} hard={rl.hard}: {err}") from err


def set_oom_score_adj(value: int | None) -> None:
    if value is None:
        return
    try:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write(str(value))
    except OSError as err:
        raise SetupError(f"failed to write process.oomScoreAdj = {value}: [errno {err.errno}] "
                         f"{os.strerror(err.errno or 0)}") from err
