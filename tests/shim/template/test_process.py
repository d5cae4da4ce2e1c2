"""The template's imports (``shim/template/process.py``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_asyncio_is_imported_without_ssl_which_stays_importable() -> None:
    """asyncio would map libssl and libcrypto into the template and every process forked from
    it; ``ssl`` itself must still import for code that wants it (the registry client)."""
    code = """
import sys
from runwasm.shim.template import process
process.import_asyncio_without_tls()
import asyncio, asyncio.base_events, asyncio.sslproto
assert "ssl" not in sys.modules, "ssl was imported"
assert asyncio.base_events.ssl is None and asyncio.sslproto.ssl is None
maps = open("/proc/self/maps").read()
assert "libssl" not in maps, "libssl is mapped"
import ssl
assert ssl.OPENSSL_VERSION
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
