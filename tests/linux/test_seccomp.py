"""``linux.seccomp.unmet``: whether a profile leaves a runtime the syscalls it needs (pure)."""

from __future__ import annotations

from typing import Any

from runwasm.linux.seccomp import action_for, unmet
from runwasm.wasm.confine import RUNTIME_SYSCALLS, THREAD_CLONE_FLAGS, SyscallNeed

NS_MASK = 2114060288  # Docker's clone rule: no CLONE_NEW* flag
THREADS = SyscallNeed("clone3", enosys_fallback=SyscallNeed("clone", {0: THREAD_CLONE_FLAGS}))


def profile(default: str, *rules: dict[str, Any], errno_ret: int | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {"defaultAction": default, "syscalls": list(rules)}
    if errno_ret is not None:
        doc["defaultErrnoRet"] = errno_ret
    return doc


def test_allow_by_default_meets_everything() -> None:
    assert unmet(profile("SCMP_ACT_ALLOW"), RUNTIME_SYSCALLS) == []


def test_denied_syscalls_are_named_with_their_action() -> None:
    doc = profile("SCMP_ACT_ALLOW", {"names": ["mmap", "futex"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1},
                  {"names": ["write"], "action": "SCMP_ACT_KILL_PROCESS"})
    assert unmet(doc, RUNTIME_SYSCALLS) == ["mmap (SCMP_ACT_ERRNO errno 1)", "futex (SCMP_ACT_ERRNO errno 1)",
                                            "write (SCMP_ACT_KILL_PROCESS)"]


def test_log_counts_as_allowed() -> None:
    assert unmet(profile("SCMP_ACT_LOG"), [SyscallNeed("mmap")]) == []


def test_enosys_clone3_falls_back_to_a_thread_clone() -> None:
    enosys = {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}
    docker_clone = {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
                    "args": [{"index": 0, "value": NS_MASK, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]}
    assert unmet(profile("SCMP_ACT_ERRNO", enosys, docker_clone), [THREADS]) == []
    # EPERM is not a reason for glibc to fall back
    eperm = {**enosys, "errnoRet": 1}
    assert unmet(profile("SCMP_ACT_ERRNO", eperm, docker_clone), [THREADS]) == ["clone3 (SCMP_ACT_ERRNO errno 1)"]
    # a clone rule that only allows namespace-creating clones does not help
    ns_only = {**docker_clone, "args": [{"index": 0, "value": NS_MASK, "valueTwo": NS_MASK, "op": "SCMP_CMP_MASKED_EQ"}]}
    assert unmet(profile("SCMP_ACT_ERRNO", enosys, ns_only), [THREADS]) == [
        "clone3 (SCMP_ACT_ERRNO errno 38, and its fallback clone is not allowed either)"]


def test_rule_on_an_argument_runwasm_cannot_predict_is_unmet() -> None:
    doc = profile("SCMP_ACT_ERRNO", {"names": ["mmap"], "action": "SCMP_ACT_ALLOW",
                                     "args": [{"index": 2, "value": 1, "op": "SCMP_CMP_EQ"}]})
    assert action_for(doc, "mmap", {}) is None
    assert unmet(doc, [SyscallNeed("mmap")]) == ["mmap (depends on arguments runwasm cannot predict)"]


def test_syscalls_unknown_on_this_architecture_are_skipped() -> None:
    assert unmet(profile("SCMP_ACT_KILL"), [SyscallNeed("no_such_syscall_here")]) == []
