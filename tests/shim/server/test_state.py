"""The explicit state table: every (state, op) pair."""

from __future__ import annotations

import itertools

import pytest

from runwasm.shim.common.errors import FailedPreconditionError, NotFoundError
from runwasm.shim.server.state import TRANSITIONS, Op, State, transition

S = State
# the table as the spec reads (shim-protocol.md §9.2), written out independently of state.py
EXPECTED: dict[tuple[State, Op], State] = {
    (S.CREATED, Op.START): S.RUNNING,
    (S.CREATED, Op.KILL): S.CREATED,
    (S.CREATED, Op.EXIT): S.STOPPED,
    (S.CREATED, Op.DELETE): S.DELETED,
    (S.CREATED, Op.EXEC): S.CREATED,
    (S.CREATED, Op.UPDATE): S.CREATED,
    (S.RUNNING, Op.KILL): S.RUNNING,
    (S.RUNNING, Op.EXIT): S.STOPPED,
    (S.RUNNING, Op.PAUSE): S.PAUSED,
    (S.RUNNING, Op.EXEC): S.RUNNING,
    (S.RUNNING, Op.UPDATE): S.RUNNING,
    (S.PAUSED, Op.RESUME): S.RUNNING,
    (S.PAUSED, Op.KILL): S.PAUSED,
    (S.PAUSED, Op.EXIT): S.STOPPED,
    (S.PAUSED, Op.UPDATE): S.PAUSED,
    (S.STOPPED, Op.DELETE): S.DELETED,
}
ALL = list(itertools.product(State, Op))


def test_table_matches_spec() -> None:
    assert TRANSITIONS == EXPECTED


def test_status_values_are_containerd_status() -> None:
    assert (S.CREATED, S.RUNNING, S.STOPPED, S.PAUSED) == (1, 2, 3, 4)


@pytest.mark.parametrize(("state", "op"), ALL, ids=[f"{s.name}-{o.value}" for s, o in ALL])
def test_every_pair(state: State, op: Op) -> None:
    if (state, op) in EXPECTED:
        assert transition(state, op, "container 'c'") is EXPECTED[(state, op)]
        return
    if state is S.DELETED or (state is S.STOPPED and op is Op.KILL):
        with pytest.raises(NotFoundError) as nf:
            transition(state, op, "container 'c'")
        assert "container 'c'" in str(nf.value)
        if op is Op.KILL:
            assert "process already finished" in str(nf.value)
        return
    with pytest.raises(FailedPreconditionError) as fp:
        transition(state, op, "container 'c'")
    msg = str(fp.value)
    assert state.name.lower() in msg
    assert op.value in msg
    assert "container 'c'" in msg


def test_exit_legal_from_every_live_state() -> None:
    for s in (S.CREATED, S.RUNNING, S.PAUSED):
        assert transition(s, Op.EXIT, "p") is S.STOPPED
