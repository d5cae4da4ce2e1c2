"""Run mypy over the packages under their installed names (runwasm.shim, runwasm.wasm, ...).

mypy cannot follow setuptools' editable-install finder, so this builds build/mypy/runwasm/
with symlinks to the four folders and checks that tree.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent


def main() -> int:
    tree = ROOT / "build" / "mypy" / "runwasm"
    tree.mkdir(parents=True, exist_ok=True)
    for name in ("shim", "wasm", "oci", "linux"):
        link = tree / name
        if not link.is_symlink():
            link.symlink_to(ROOT / name)
    env = dict(os.environ, MYPYPATH=str(tree.parent))
    cmd = [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"),
           "--explicit-package-bases", "--namespace-packages", "-p", "runwasm"]
    return subprocess.run(cmd, cwd=tree.parent, env=env).returncode


if __name__ == "__main__":
    raise SystemExit(main())
