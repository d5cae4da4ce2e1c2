"""containerd filter expressions on snapshots."""

from __future__ import annotations

import pytest

from runwasm.oci.errors import InvalidArgumentError
from runwasm.oci.snapshotter.filters import compile_filters, parse_filter
from runwasm.oci.snapshotter.meta import Kind, Snapshot

A = Snapshot("ns/1/a", 1, Kind.COMMITTED, "", labels={"containerd.io/gc.root": "x", "k": "v"})
B = Snapshot("ns/2/b", 2, Kind.ACTIVE, "ns/1/a", labels={})


@pytest.mark.parametrize(("filters", "want"), [
    ([], ["ns/1/a", "ns/2/b"]),
    (["kind==committed"], ["ns/1/a"]),
    (["parent==ns/1/a"], ["ns/2/b"]),
    (["parent"], ["ns/2/b"]),
    (['labels."containerd.io/gc.root"'], ["ns/1/a"]),
    (["labels.k==v,kind==active"], []),
    (["labels.k==v", "kind==active"], ["ns/1/a", "ns/2/b"]),
    (["name~=b$"], ["ns/2/b"]),
    (["name!=ns/1/a"], ["ns/2/b"]),
    (['name=="ns/2/b"'], ["ns/2/b"]),
])
def test_matches(filters: list[str], want: list[str]) -> None:
    match = compile_filters(filters)
    assert [s.key for s in (A, B) if match(s)] == want


@pytest.mark.parametrize("bad", ["size==1", "name==a,", '"unterminated', "name~=(", "==x"])
def test_malformed_or_unknown_is_refused(bad: str) -> None:
    with pytest.raises(InvalidArgumentError, match="invalid filter"):
        compile_filters([bad])


def test_parse_selector_parts() -> None:
    sels = parse_filter('labels."a.b"==c,kind')
    assert [(s.path, s.op, s.value) for s in sels] == [(("labels", "a.b"), "==", "c"), (("kind",), "", "")]
