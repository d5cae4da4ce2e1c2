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
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

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


# --- will a profile leave a runtime the syscalls it needs? -------------------------------------

ALLOWING = frozenset({"SCMP_ACT_ALLOW", "SCMP_ACT_LOG"})


class Need(Protocol):
    """A syscall some runtime code makes after the filter is loaded (see ``unmet``)."""

    @property
    def name(self) -> str: ...
    @property
    def args(self) -> Mapping[int, int]: ...
    @property
    def enosys_fallback(self) -> Need | None: ...


def _cond_matches(cond: Mapping[str, Any], args: Mapping[int, int]) -> bool | None:
    index = int(cond.get("index", 0))
    if index not in args:
        return None
    v, want, two = args[index], int(cond.get("value", 0)), int(cond.get("valueTwo", 0))
    op = cond.get("op", "")
    results = {"SCMP_CMP_EQ": v == want, "SCMP_CMP_NE": v != want, "SCMP_CMP_LT": v < want,
               "SCMP_CMP_LE": v <= want, "SCMP_CMP_GT": v > want, "SCMP_CMP_GE": v >= want,
               "SCMP_CMP_MASKED_EQ": (v & want) == two}
    return results.get(str(op))


def action_for(doc: Mapping[str, Any], name: str, args: Mapping[int, int]) -> tuple[str, int | None] | None:
    """(action, errnoRet) the profile ``doc`` takes for ``name`` called with ``args``; None when
    a conditional rule tests an argument not in ``args`` (the outcome is not known)."""
    unknown = False
    for rule in doc.get("syscalls") or []:
        if not isinstance(rule, Mapping) or name not in (rule.get("names") or []):
            continue
        results = [_cond_matches(c, args) for c in rule.get("args") or []]
        if any(r is None for r in results):
            unknown = True
        elif all(results):
            return str(rule.get("action", "")), rule.get("errnoRet")
    if unknown:
        return None
    return str(doc.get("defaultAction", "")), doc.get("defaultErrnoRet")


def _known_here(name: str) -> bool:
    try:
        import pyseccomp as sc
    except (ImportError, OSError):
        return True
    return int(sc.resolve_syscall(sc.Arch.NATIVE, name)) >= 0


def unmet(doc: Mapping[str, Any], needs: Iterable[Need]) -> list[str]:
    """The needs ``doc`` does not allow, each as ``"name (action)"``; syscalls that do not exist
    on this architecture are skipped. A need answered ENOSYS is met if its fallback is."""
    out: list[str] = []
    for need in needs:
        if not _known_here(need.name):
            continue
        act = action_for(doc, need.name, need.args)
        if act is not None and act[0] in ALLOWING:
            continue
        fallback = need.enosys_fallback
        if (act is not None and act[0] == "SCMP_ACT_ERRNO" and act[1] == errno.ENOSYS and fallback is not None
                and not unmet(doc, [fallback])):
            continue
        shown = "depends on arguments runwasm cannot predict" if act is None else (
            act[0] if act[1] is None else f"{act[0]} errno {act[1]}")
        if act is not None and act[0] == "SCMP_ACT_ERRNO" and act[1] == errno.ENOSYS and fallback is not None:
            shown += f", and its fallback {fallback.name} is not allowed either"
        out.append(f"{need.name} ({shown})")
    return out
