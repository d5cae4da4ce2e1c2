"""runwasm.shim.common.lazy_imports: protobuf's pure-Python message module is not run under upb,
and messages still work (fresh interpreters: the test process imported protobuf long ago)."""

from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = """
import sys
from runwasm.shim.common import lazy_imports
if sys.argv[1] == "lazy":
    lazy_imports.install()
import datetime
from google.protobuf import any_pb2, timestamp_pb2
from google.protobuf.internal import api_implementation
from runwasm.shim.api.runtime.task.v3 import shim_pb2 as pb
ran = "google.protobuf.text_format" in sys.modules  # python_message's own import, once it ran
req = pb.CreateTaskRequest(id="c1", bundle="/b")
req.rootfs.add(type="bind", source="/s", options=["rbind", "ro"])
packed = any_pb2.Any()
packed.Pack(req)
ts = timestamp_pb2.Timestamp()
ts.FromDatetime(datetime.datetime(2026, 12, 2, tzinfo=datetime.timezone.utc))
back = pb.CreateTaskRequest()
assert packed.Unpack(back) and back == req and ts.seconds == 1796169600
assert 'id: "c1"' in str(back)  # text format: imported on first use
from google.protobuf.internal import python_message
assert python_message.GeneratedProtocolMessageType  # a lazy module runs at its first attribute access
print(api_implementation.Type(), ran)
"""


def _probe(mode: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
    return out.stdout.split()


def test_python_message_is_not_run_under_upb() -> None:
    impl, ran_eager = _probe("eager")
    if impl != "upb":
        pytest.skip(f"protobuf runs its {impl!r} implementation here, which uses python_message at import")
    assert ran_eager == "True"  # without install, descriptor_pool's import runs it (and text_format)
    assert _probe("lazy") == ["upb", "False"]
