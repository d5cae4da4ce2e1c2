"""The critest score: ginkgo's JUnit report read into passed/failed/skipped spec names, and the
specs one handler fails that the other passes (no daemon involved)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.cri.critest import Score, parse_junit, regressions, render

REPORT = """<?xml version="1.0" encoding="UTF-8"?>
<testsuites tests="5" failures="2">
  <testsuite name="CRI validation" tests="5">
    <testcase name="[BeforeSuite]" classname="CRI validation" status="passed" time="0"></testcase>
    <testcase name="[It] [k8s.io] A should pass" classname="CRI validation" status="passed" time="1"></testcase>
    <testcase name="[It] [k8s.io] B should fail" classname="CRI validation" status="failed" time="1">
      <failure message="boom" type="failed">boom</failure></testcase>
    <testcase name="[It] [k8s.io] C times out" classname="CRI validation" status="timedout" time="9"></testcase>
    <testcase name="[It] [k8s.io] D is skipped" classname="CRI validation" status="skipped" time="0">
      <skipped message="skipped"></skipped></testcase>
  </testsuite>
</testsuites>
"""


def test_junit_report_becomes_a_score(tmp_path: Path) -> None:
    p = tmp_path / "junit.xml"
    p.write_text(REPORT)
    s = parse_junit("runwasm", p)
    assert s.passed == ("[It] [k8s.io] A should pass",)  # suite nodes are not specs
    assert s.failed == ("[It] [k8s.io] B should fail", "[It] [k8s.io] C times out")
    assert s.skipped == ("[It] [k8s.io] D is skipped",)
    assert s.counts == "1 passed, 2 failed, 1 skipped"


def test_a_failed_suite_node_counts_as_a_failure(tmp_path: Path) -> None:
    p = tmp_path / "junit.xml"
    p.write_text(REPORT.replace('name="[BeforeSuite]" classname="CRI validation" status="passed"',
                                'name="[BeforeSuite]" classname="CRI validation" status="failed"'))
    assert "[BeforeSuite]" in parse_junit("runc", p).failed


def test_an_unknown_status_is_an_error(tmp_path: Path) -> None:
    p = tmp_path / "junit.xml"
    p.write_text(REPORT.replace('status="skipped"', 'status="weird"'))
    with pytest.raises(ValueError, match="weird"):
        parse_junit("runc", p)


def test_regressions_are_specs_failed_here_and_passed_there() -> None:
    ours = Score("runwasm", ("a",), ("b", "c"), ("d",))
    theirs = Score("runc", ("b", "a"), ("c",), ("d",))
    assert regressions(ours, theirs) == ["b"]
    table = render([ours, theirs], "title")
    assert "runwasm          1       2        1" in table
    assert "failed on runwasm but passed on runc (1):\n  - b" in table
