"""One CRI-enabled private containerd per flavour (1.6 and 2.3.4) per session, with the stand-in
images (pause, busybox, a Wasm module in a linux image) imported into ``k8s.io``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fixtures.images import busybox_image, files_image, single_file_image
from tests.conftest import built_fixture
from tests.integration.cri.crid import CRICTL_MISSING, PAUSE_REF, CriContainerd, crictl_binary
from tests.integration.daemon import CONTAINERD23_MISSING, containerd23_bin, containerd_binary

BUSYBOX_REF = "docker.io/library/busybox:latest"
WASM_REF = "docker.io/library/wasmhello:latest"
SPIN_REF = "docker.io/library/wasmspin:latest"
MEMHOG_REF = "docker.io/library/wasmmemhog:latest"
# a long-running module (the entrypoint) and commands to exec next to it, plus a file that is no module
EXEC_REF = "docker.io/library/wasmexec:latest"
EXEC_MODULES = ("sleep", "hello", "exit7", "argsenv", "readfile")


def import_stand_in_images(daemon: CriContainerd, images: Path) -> None:
    """Build the stand-in images into ``images`` and import them into ``daemon``'s k8s.io."""
    pause = built_fixture("linux", "pause")
    tars = [single_file_image(images / "pause.tar", PAUSE_REF, "pause", pause.read_bytes(), ["/pause"]),
            busybox_image(images / "busybox.tar", BUSYBOX_REF)]
    for ref, area, name in ((WASM_REF, "wasm", "hello"), (SPIN_REF, "wasm", "spin"),
                            (MEMHOG_REF, "linux", "memhog")):
        module = built_fixture(area, f"{name}.wasm")
        tars.append(single_file_image(images / f"{name}.tar", ref, f"{name}.wasm", module.read_bytes(),
                                      [f"/{name}.wasm"]))
    files = {f"{m}.wasm": built_fixture("wasm", f"{m}.wasm").read_bytes() for m in EXEC_MODULES}
    files["notes.txt"] = b"not a module\n"
    tars.append(files_image(images / "exec.tar", EXEC_REF, files, ["/sleep.wasm"], env=["IMAGE_ENV=from-image"]))
    for tar in tars:
        daemon.ctr("images", "import", str(tar))


@pytest.fixture(scope="session", params=["1.6", "2.3"], ids=["cri16", "cri23"])
def cri(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[CriContainerd]:
    flavour: str = request.param
    if flavour == "1.6" and containerd_binary() is None:
        pytest.skip("containerd binary not found on PATH (install Debian's containerd: scripts/install-system.sh)")
    if flavour == "2.3" and containerd23_bin() is None:
        pytest.skip(CONTAINERD23_MISSING)
    if crictl_binary() is None:
        pytest.skip(CRICTL_MISSING)
    images = tmp_path_factory.mktemp(f"cri-images-{flavour}")
    with CriContainerd(flavour) as daemon:
        import_stand_in_images(daemon, images)
        yield daemon
    assert daemon.killed_leftovers == [], f"shim processes had to be killed: {daemon.killed_leftovers}"
    assert daemon.leftovers() == []
    assert daemon.cri_leftovers() == []
