"""cri-tools' ``critest`` v1.36 against a private containerd with CRI, on handler ``runwasm`` and
handler ``runc`` of the same daemon, scores side by side (``make critest``)::

    python -m tests.integration.cri.critest [--flavour 2.3|1.6] [--handler H ...] [--focus RE] [--keep DIR]

Logs and JUnit reports go to ``build/critest/`` (or ``--keep DIR``).

Everything lives in the daemon's private network namespace (``CriContainerd``): a Debian
``docker-registry`` on 127.0.0.1:5000 there serves the stand-in images (``critest_images``),
containerd reaches it through ``hosts.toml`` mirrors for ``gcr.io`` and ``registry.k8s.io`` (critest
always pulls by name), the CNI chain adds ``portmap`` for the host-port specs, and ``critest``
itself runs there (it dials pod IPs, 127.0.0.1 host ports and the streaming server).

``critest`` comes from ``$RUNWASM_CRITEST`` (default ``../shared/tools/cri-tools-1.36.0/bin/critest``).
Each run's ginkgo JUnit report gives the score: passed / failed / skipped specs and the names of
the failing ones.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from fixtures.images import files_image, single_file_image
from tests.integration.cri.crid import NETNS_DIR, PAUSE_REF, CriContainerd
from tests.integration.cri.critest_images import build_all
from tests.integration.daemon import REPO, DaemonError

CRITEST_ENV = "RUNWASM_CRITEST"
CRITEST_MISSING = f"critest not found (set ${CRITEST_ENV}; default ../shared/tools/cri-tools-1.36.0/bin/critest)"
REGISTRY_ADDR = "127.0.0.1:5000"  # inside the daemon's private network namespace: nothing else binds there
MIRRORED = ("gcr.io", "registry.k8s.io", "k8s.gcr.io", "docker.io")
# the Image Identifier Consistency specs pull pause:3.9 from two registries and remove it by id:
# a stand-in distinct from the pinned sandbox image, or that removal takes the sandbox image too
PAUSE39_REFS = ("registry.k8s.io/pause:3.9", "k8s.gcr.io/pause:3.9", "gcr.io/pause:3.9")
FAILED_STATES = {"failed", "panicked", "interrupted", "timedout", "aborted"}


def critest_binary() -> Path | None:
    p = Path(os.environ.get(CRITEST_ENV) or REPO.parent / "shared" / "tools" / "cri-tools-1.36.0" / "bin" / "critest")
    return p if p.is_file() else None


@dataclass(frozen=True)
class Score:
    """One critest run: spec names by outcome."""

    handler: str
    passed: tuple[str, ...]
    failed: tuple[str, ...]
    skipped: tuple[str, ...]

    @property
    def counts(self) -> str:
        return f"{len(self.passed)} passed, {len(self.failed)} failed, {len(self.skipped)} skipped"


def parse_junit(handler: str, report: Path) -> Score:
    """Spec outcomes from a ginkgo v2 JUnit report (testcases named ``[It] ...``; suite nodes
    such as ``[BeforeSuite]`` are counted as specs only when they fail, since then nothing ran)."""
    passed: list[str] = []
    failed: list[str] = []
    skipped: list[str] = []
    for case in ET.parse(report).getroot().iter("testcase"):
        name = case.get("name", "")
        status = case.get("status", "")
        if not status:
            status = ("failed" if case.find("failure") is not None or case.find("error") is not None
                      else "skipped" if case.find("skipped") is not None else "passed")
        spec = name.startswith("[It]")
        if status in FAILED_STATES:
            failed.append(name)
        elif not spec:
            continue
        elif status in ("skipped", "pending"):
            skipped.append(name)
        elif status == "passed":
            passed.append(name)
        else:
            raise ValueError(f"{report}: testcase {name!r} has unknown status {status!r}")
    return Score(handler, tuple(sorted(passed)), tuple(sorted(failed)), tuple(sorted(skipped)))


class NetnsRegistry:
    """Debian's ``docker-registry`` on ``REGISTRY_ADDR`` inside a network namespace, with its own
    storage under ``base``; images are pushed with ``skopeo`` run in the same namespace."""

    def __init__(self, netns: str, base: Path) -> None:
        self.netns = NETNS_DIR / netns
        self.dir = base / "registry"
        self.dir.mkdir()
        self.proc: subprocess.Popen[bytes] | None = None

    def _in_ns(self, *argv: str) -> list[str]:
        return ["nsenter", f"--net={self.netns}", *argv]

    def start(self, timeout: float = 30.0) -> None:
        binary = shutil.which("docker-registry")
        if binary is None:
            raise DaemonError("docker-registry not installed (scripts/install-system.sh)")
        cfg = self.dir / "config.yml"
        cfg.write_text("version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n"
                       f"    rootdirectory: {self.dir}/data\n  delete:\n    enabled: true\n"
                       f"http:\n  addr: {REGISTRY_ADDR}\n")
        with open(self.dir / "registry.log", "ab") as log:
            self.proc = subprocess.Popen(self._in_ns(binary, "serve", str(cfg)), stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        probe = (f"import urllib.request; urllib.request.urlopen('http://{REGISTRY_ADDR}/v2/', timeout=2)")
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise DaemonError(f"docker-registry exited with {self.proc.returncode}: {self.log_tail()}")
            if subprocess.run(self._in_ns(sys.executable, "-c", probe), capture_output=True).returncode == 0:
                return
            if time.monotonic() > deadline:
                raise DaemonError(f"docker-registry did not answer on {REGISTRY_ADDR} in {timeout}s: {self.log_tail()}")
            time.sleep(0.1)

    def log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return (self.dir / "registry.log").read_text(errors="replace")[-3000:]
        return ""

    def push(self, archive: Path, ref: str) -> None:
        """Push an OCI layout tarball as ``ref`` (``host/path:tag``; the host part is dropped:
        every mirrored host resolves to this one registry), digests kept."""
        path = ref.split("/", 1)[1]
        res = subprocess.run(self._in_ns("skopeo", "copy", "--quiet", "--preserve-digests", "--dest-tls-verify=false",
                                         f"oci-archive:{archive}", f"docker://{REGISTRY_ADDR}/{path}"),
                             capture_output=True, text=True, timeout=300)
        if res.returncode != 0:
            raise DaemonError(f"skopeo push of {archive} as {ref} failed: {res.stderr.strip()}")

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None


class CritestContainerd(CriContainerd):
    """``CriContainerd`` plus registry mirrors (``hosts.toml`` per mirrored host) and ``portmap``."""

    def _write_config(self) -> None:
        super()._write_config()
        certs = self.dir / "certs.d"
        for host in MIRRORED:
            (certs / host).mkdir(parents=True)
            (certs / host / "hosts.toml").write_text(
                f'server = "https://{host}"\n[host."http://{REGISTRY_ADDR}"]\n  capabilities = ["pull", "resolve"]\n')
        table = ('[plugins."io.containerd.cri.v1.images".registry]' if self.flavour == "2.3"
                 else '[plugins."io.containerd.grpc.v1.cri".registry]')
        with self.config.open("a") as f:
            f.write(f'\n{table}\n  config_path = "{certs}"\n')
        conflist = next((self.dir / "cni").glob("*.conflist"))
        doc = json.loads(conflist.read_text())
        doc["plugins"].append({"type": "portmap", "capabilities": {"portMappings": True}})
        conflist.write_text(json.dumps(doc))


def _built(name: str) -> Path:
    path = REPO / "fixtures" / "build" / "linux" / name
    if not path.exists():
        raise DaemonError(f"fixture {path} is missing: run `make fixtures`")
    return path


@contextlib.contextmanager
def critest_daemon(flavour: str, work: Path) -> Iterator[CritestContainerd]:
    """A started ``CritestContainerd`` whose registry serves every stand-in image; the sandbox
    (pause) image is imported and pinned."""
    images = work / "images"
    images.mkdir()
    built = build_all(images, _built("nnp"), _built("nginx"))
    pause = _built("pause").read_bytes()
    pause_tar = single_file_image(images / "pause.tar", PAUSE_REF, "pause", pause, ["/pause"])
    pause39_tar = files_image(images / "pause39.tar", PAUSE39_REFS[0], {"pause": pause, "pause-3.9": b"3.9\n"},
                              ["/pause"])
    with CritestContainerd(flavour) as daemon:
        registry = NetnsRegistry(daemon.netns, daemon.dir)
        try:
            registry.start()
            for tar, refs in [*built, (pause39_tar, PAUSE39_REFS)]:
                for ref in refs:
                    registry.push(tar, ref)
            daemon.ctr("images", "import", str(pause_tar))
            yield daemon
        finally:
            registry.close()


def run_critest(daemon: CriContainerd, handler: str, out: Path, focus: str | None = None,
                timeout: float = 3600.0) -> Score:
    """``critest`` on ``handler`` in the daemon's network namespace; output and JUnit report in ``out``."""
    binary = critest_binary()
    if binary is None:
        raise DaemonError(CRITEST_MISSING)
    out.mkdir(parents=True, exist_ok=True)
    report = out / f"junit-{handler}.xml"
    endpoint = f"unix://{daemon.address}"
    argv = ["nsenter", f"--net={NETNS_DIR / daemon.netns}", str(binary), "--runtime-endpoint", endpoint,
            "--image-endpoint", endpoint, "--runtime-handler", handler, "--ginkgo.no-color",
            f"--ginkgo.junit-report={report}", "--ginkgo.timeout=2h"]
    if focus:
        argv.append(f"--ginkgo.focus={focus}")
    with open(out / f"critest-{handler}.log", "wb") as log:
        proc = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=out,
                              env=daemon.env(), timeout=timeout, check=False)
    if not report.exists():
        raise DaemonError(f"critest ({handler}) exited with {proc.returncode} and wrote no report; "
                          f"see {out / f'critest-{handler}.log'}")
    daemon.remove_all_pods()
    return parse_junit(handler, report)


def render(scores: Sequence[Score], title: str) -> str:
    """The side-by-side table and the failing specs of each handler."""
    lines = [title, f"{'handler':<10} {'passed':>7} {'failed':>7} {'skipped':>8}"]
    lines += [f"{s.handler:<10} {len(s.passed):>7} {len(s.failed):>7} {len(s.skipped):>8}" for s in scores]
    for s in scores:
        lines.append(f"\nfailed on {s.handler} ({len(s.failed)}):")
        lines += [f"  - {name}" for name in s.failed] or ["  (none)"]
    if len(scores) == 2:
        a, b = scores
        worse = regressions(a, b)
        lines.append(f"\nfailed on {a.handler} but passed on {b.handler} ({len(worse)}):")
        lines += [f"  - {name}" for name in worse] or ["  (none)"]
    return "\n".join(lines)


def regressions(candidate: Score, reference: Score) -> list[str]:
    """Specs ``candidate`` fails that ``reference`` passes."""
    return sorted(set(candidate.failed) & set(reference.passed))


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="make critest", description=__doc__.split("\n\n")[0])
    ap.add_argument("--flavour", choices=("2.3", "1.6"), default="2.3")
    ap.add_argument("--handler", action="append", help="runtime handler(s), default runwasm and runc")
    ap.add_argument("--focus", help="ginkgo focus regexp (a subset of the specs)")
    ap.add_argument("--keep", type=Path, help="directory for the logs and JUnit reports (default: build/critest)")
    args = ap.parse_args(argv)
    if critest_binary() is None:
        print(f"critest: skipped: {CRITEST_MISSING}")
        return 0
    from tests.integration.daemon import CONTAINERD23_MISSING, containerd23_bin, containerd_binary

    if args.flavour == "2.3" and containerd23_bin() is None:
        print(f"critest: skipped: {CONTAINERD23_MISSING}")
        return 0
    if args.flavour == "1.6" and containerd_binary() is None:
        print("critest: skipped: containerd 1.6 not on PATH (scripts/install-system.sh)")
        return 0
    handlers = args.handler or ["runwasm", "runc"]
    work = Path(tempfile.mkdtemp(prefix="rwcritest-"))
    out = args.keep or REPO / "build" / "critest"
    scores: list[Score] = []
    # the daemon's runwasm shims use a warm template of their own, stopped at the end (as the test
    # suite's and make demo's), so the run leaves no process behind
    from runwasm.shim.template import key, process

    template_dir = Path(tempfile.mkdtemp(prefix="rwt-", dir="/run" if os.geteuid() == 0 else None))
    os.environ[key.ENV_DIR] = str(template_dir)
    try:
        with critest_daemon(args.flavour, work) as daemon:
            for handler in handlers:
                print(f"critest: running on handler {handler} (containerd {args.flavour}); log: "
                      f"{out / f'critest-{handler}.log'}", flush=True)
                scores.append(run_critest(daemon, handler, out, args.focus))
                print(f"critest: {handler}: {scores[-1].counts}", flush=True)
    finally:
        process.stop_templates(str(template_dir))
        shutil.rmtree(template_dir, ignore_errors=True)
    version = "2.3.4" if args.flavour == "2.3" else "1.6"
    print()
    print(render(scores, f"critest v1.36 on containerd {version} (private netns, stand-in images)"))
    print(f"\nlogs and JUnit reports: {out}")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
