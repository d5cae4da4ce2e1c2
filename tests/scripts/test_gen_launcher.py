"""The generated shim launcher: an isolated interpreter without `site` that still finds runwasm."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _generate(dest: Path) -> str:
    subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_launcher.py"), str(dest)], check=True,
                   capture_output=True)
    return dest.read_text()


def test_launcher_runs_the_shim_under_python_IS(tmp_path: Path) -> None:
    dest = tmp_path / "containerd-shim-runwasm-v1"
    text = _generate(dest)
    assert text.splitlines()[0] == f"#!{sys.executable} -IS"
    out = subprocess.run([str(dest), "-v"], capture_output=True, text=True, check=True, env={"PATH": "/usr/bin:/bin"})
    assert "Runtime:  io.containerd.runwasm.v1" in out.stdout


def test_launcher_imports_neither_site_nor_heavy_modules_for_delete(tmp_path: Path) -> None:
    dest = tmp_path / "containerd-shim-runwasm-v1"
    _generate(dest)
    probe = tmp_path / "probe.py"
    # run the launcher's code in-process, then report what got imported
    probe.write_text(
        "import runpy, sys\n"
        "sys.argv = [sys.argv[1], '-v']\n"
        "try:\n"
        "    runpy.run_path(sys.argv[0], run_name='__main__')\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(sorted(m for m in ('site', 'asyncio', 'google.protobuf', 'wasmtime') if m in sys.modules),"
        " sys.flags.no_site, file=sys.stderr)\n")
    res = subprocess.run([sys.executable, "-IS", str(probe), str(dest)], capture_output=True, text=True, check=True,
                         env={"PATH": "/usr/bin:/bin", "RUNWASM_TEMPLATE": "off"})
    assert res.stderr.strip().splitlines()[-1] == "[] 1"
