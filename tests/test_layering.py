"""Package imports go one way: shim -> {wasm, linux, oci}; wasm -> oci; linux -> oci; oci -> none."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ALLOWED = {
    "shim": {"shim", "wasm", "linux", "oci"},
    "wasm": {"wasm", "oci"},
    "linux": {"linux", "oci"},
    "oci": {"oci"},
}


def _imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    out: set[str] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        for name in names:
            parts = name.split(".")
            if parts[0] == "runwasm" and len(parts) > 1:
                out.add(parts[1])
    return out


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_go_one_way(package: str) -> None:
    bad = []
    for path in sorted((ROOT / package).rglob("*.py")):
        if "api" in path.relative_to(ROOT / package).parts[:1]:
            continue  # generated protobuf modules
        extra = _imported_packages(path) - ALLOWED[package]
        if extra:
            bad.append(f"{path.relative_to(ROOT)} imports runwasm.{', runwasm.'.join(sorted(extra))}")
    assert not bad, "layering violations:\n" + "\n".join(bad)


def test_start_delete_info_paths_import_light() -> None:
    """The per-container entry points must not pull in wasmtime, protobuf, grpc, otel, pyroute2."""
    import subprocess
    import sys

    code = (
        "import sys, runwasm.shim.__main__ as m, runwasm.shim.entry.start, runwasm.shim.entry.delete, runwasm.shim.entry.info;"
        "heavy=[n for n in ('wasmtime','google.protobuf','grpc','opentelemetry','pyroute2','zstandard') "
        "if n in sys.modules]; print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"heavy modules imported on the start/delete/-info path: {out.stdout}"
