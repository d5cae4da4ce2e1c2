"""``linux.seccomp``: the spec's filter compiled with libseccomp (pyseccomp) and loaded.

Loaded as late as possible: right before execve when noNewPrivileges is set (then the filter
needs no privilege and the fewest of our own syscalls run under it), otherwise before the
capability drop (loading without NO_NEW_PRIVS needs CAP_SYS_ADMIN). ``compile_filter`` runs
during set-up so a bad profile is reported before ``ready``; ``load`` only installs it.
Unknown syscall names are skipped (runc does the same: profiles list syscalls of newer kernels).
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Mapping
from typing import Any

from runwasm.linux.errors import InvalidArgumentError, SetupError, UnavailableError

log = logging.getLogger(__name__)

_ARCHES = {
    "SCMP_ARCH_X86": "X86", "SCMP_ARCH_X86_64": "X86_64", "SCMP_ARCH_X32": "X32", "SCMP_ARCH_ARM": "ARM",
    "SCMP_ARCH_AARCH64": "AARCH64", "SCMP_ARCH_RISCV64": "RISCV64", "SCMP_ARCH_S390X": "S390X",
    "SCMP_ARCH_PPC64LE": "PPC64LE",
}
_OPS = {"SCMP_CMP_NE": "NE", "SCMP_CMP_LT": "LT", "SCMP_CMP_LE": "LE", "SCMP_CMP_EQ": "EQ",
        "SCMP_CMP_GE": "GE", "SCMP_CMP_GT": "GT", "SCMP_CMP_MASKED_EQ": "MASKED_EQ"}
# the actions _action understands (the runtime-spec features document lists them)
ACTIONS = ("SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD",
           "SCMP_ACT_LOG", "SCMP_ACT_TRACE", "SCMP_ACT_TRAP")
ARCHES = tuple(_ARCHES)
OPERATORS = tuple(_OPS)


def _action(sc: Any, name: str, errno_ret: int | None, where: str) -> int:
    if name in ("SCMP_ACT_KILL", "SCMP_ACT_KILL_THREAD"):
        return int(sc.KILL_THREAD)
    if name == "SCMP_ACT_KILL_PROCESS":
        return int(sc.KILL_PROCESS)
    if name == "SCMP_ACT_ALLOW":
        return int(sc.ALLOW)
    if name == "SCMP_ACT_LOG":
        return int(sc.LOG)
    if name == "SCMP_ACT_TRAP":
        return int(sc.TRAP)
    if name == "SCMP_ACT_ERRNO":
        return int(sc.ERRNO(errno.EPERM if errno_ret is None else errno_ret))
    if name == "SCMP_ACT_TRACE":
        return int(sc.TRACE(errno.EPERM if errno_ret is None else errno_ret))
    raise InvalidArgumentError(f"failed to compile {where}: unsupported action {name!r}")


def compile_filter(doc: Mapping[str, Any]) -> Any:
    """Build (not load) the filter; raises InvalidArgumentError naming the JSON path."""
    try:
        import pyseccomp as sc
    except (ImportError, OSError) as err:
        raise UnavailableError(f"failed to load libseccomp: {err}") from err
    default = _action(sc, str(doc.get("defaultAction", "")), doc.get("defaultErrnoRet"), "linux.seccomp.defaultAction")
    flt = sc.SyscallFilter(default)
    # the filter must not be refused for our own no_new_privs state: we set NNP ourselves
    flt.set_attr(sc.Attr.CTL_NNP, 0)
    for arch in doc.get("architectures") or []:
        if arch not in _ARCHES:
            raise InvalidArgumentError(f"failed to compile linux.seccomp.architectures: unknown {arch!r}")
        a = getattr(sc.Arch, _ARCHES[arch])
        if not flt.exist_arch(a):
            flt.add_arch(a)
    for i, rule in enumerate(doc.get("syscalls") or []):
        where = f"linux.seccomp.syscalls[{i}]"
        if not isinstance(rule, dict):
            raise InvalidArgumentError(f"failed to compile {where}: expected an object, got {rule!r}")
        action = _action(sc, str(rule.get("action", "")), rule.get("errnoRet"), f"{where}.action")
        if action == default:
            continue
        args = []
        for j, a in enumerate(rule.get("args") or []):
            op = _OPS.get(a.get("op", ""))
            if op is None:
                raise InvalidArgumentError(f"failed to compile {where}.args[{j}]: unknown op {a.get('op')!r}")
            args.append(sc.Arg(int(a.get("index", 0)), getattr(sc, op), int(a.get("value", 0)),
                               int(a.get("valueTwo", 0))))
        for name in rule.get("names") or []:
            try:
                flt.add_rule(action, name, *args)
            except OSError as err:
                if err.errno in (errno.EDOM, errno.EFAULT, errno.EINVAL):  # unknown to libseccomp
                    log.debug("seccomp: skipping syscall %r: %s", name, err)
                    continue
                raise InvalidArgumentError(f"failed to compile {where} syscall {name!r}: {err}") from err
            except ValueError:
                log.debug("seccomp: skipping unknown syscall %r", name)
    return flt


def load(flt: Any) -> None:
    try:
        flt.load()
    except OSError as err:
        raise SetupError(f"failed to load the seccomp filter: [errno {err.errno}] {err.strerror}") from err
