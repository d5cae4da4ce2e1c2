"""Process state as an explicit table of legal transitions.

Every process (a container's init or an exec) is in one of the containerd task states. An
operation is legal only if ``(state, op)`` is in ``TRANSITIONS``; the value is the state after
it. Anything else raises: ``kill`` of a stopped process is NotFound ("process already
finished", which ``ctr`` and CRI expect); every other illegal move is FailedPrecondition,
naming both the state and the operation. ``exit`` is the kernel's word, not a request: it is
legal from every live state.
"""

from __future__ import annotations

import enum

from runwasm.shim.common.errors import FailedPreconditionError, NotFoundError


class State(enum.IntEnum):
    # values are containerd.v1.types.Status
    CREATED = 1
    RUNNING = 2
    STOPPED = 3
    PAUSED = 4
    DELETED = 100  # not a containerd status: the process is gone from the shim


class Op(enum.Enum):
    START = "start"
    KILL = "kill"
    EXIT = "exit"
    DELETE = "delete"
    PAUSE = "pause"
    RESUME = "resume"
    EXEC = "exec"  # add an exec process (checked on the init's state)
    UPDATE = "update"


S, Op_ = State, Op
TRANSITIONS: dict[tuple[State, Op], State] = {
    (S.CREATED, Op_.START): S.RUNNING,
    (S.CREATED, Op_.KILL): S.CREATED,
    (S.CREATED, Op_.EXIT): S.STOPPED,
    (S.CREATED, Op_.DELETE): S.DELETED,
    (S.CREATED, Op_.EXEC): S.CREATED,
    (S.CREATED, Op_.UPDATE): S.CREATED,
    (S.RUNNING, Op_.KILL): S.RUNNING,
    (S.RUNNING, Op_.EXIT): S.STOPPED,
    (S.RUNNING, Op_.PAUSE): S.PAUSED,
    (S.RUNNING, Op_.EXEC): S.RUNNING,
    (S.RUNNING, Op_.UPDATE): S.RUNNING,
    (S.PAUSED, Op_.RESUME): S.RUNNING,
    (S.PAUSED, Op_.KILL): S.PAUSED,
    (S.PAUSED, Op_.EXIT): S.STOPPED,
    (S.PAUSED, Op_.UPDATE): S.PAUSED,
    (S.STOPPED, Op_.DELETE): S.DELETED,
}


def transition(state: State, op: Op, what: str) -> State:
    """The state after ``op``; raises NotFound/FailedPrecondition when illegal."""
    nxt = TRANSITIONS.get((state, op))
    if nxt is not None:
        return nxt
    if op is Op.KILL and state in (State.STOPPED, State.DELETED):
        raise NotFoundError(f"{what}: process already finished")
    if state is State.DELETED:
        raise NotFoundError(f"{what}: process deleted")
    raise FailedPreconditionError(
        f"{what}: invalid state transition: {state.name.lower()} -> {op.value}")
