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

from runwasm.shim.errors import FailedPreconditionError, NotFoundError


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


S, O = State, Op
TRANSITIONS: dict[tuple[State, Op], State] = {
    (S.CREATED, O.START): S.RUNNING,
    (S.CREATED, O.KILL): S.CREATED,
    (S.CREATED, O.EXIT): S.STOPPED,
    (S.CREATED, O.DELETE): S.DELETED,
    (S.CREATED, O.EXEC): S.CREATED,
    (S.CREATED, O.UPDATE): S.CREATED,
    (S.RUNNING, O.KILL): S.RUNNING,
    (S.RUNNING, O.EXIT): S.STOPPED,
    (S.RUNNING, O.PAUSE): S.PAUSED,
    (S.RUNNING, O.EXEC): S.RUNNING,
    (S.RUNNING, O.UPDATE): S.RUNNING,
    (S.PAUSED, O.RESUME): S.RUNNING,
    (S.PAUSED, O.KILL): S.PAUSED,
    (S.PAUSED, O.EXIT): S.STOPPED,
    (S.PAUSED, O.UPDATE): S.PAUSED,
    (S.STOPPED, O.DELETE): S.DELETED,
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
