"""A private containerd with CRI enabled, in a network namespace of its own, driven with ``crictl``.

``CriContainerd`` extends the integration tier's ``Containerd``: the same private root, state,
sockets and clean-up, plus

- CRI enabled, with the runwasm runtime entry taken verbatim from ``docs/examples/`` (the file
  the README shows) and the plumbing a private daemon needs: a CNI bridge config in its own dir,
  the stand-in pause image pinned as the sandbox image, ``restrict_oom_score_adj = true`` (this VM
  refuses a negative oom_score_adj even for root), the streaming server on 127.0.0.1 with a free
  port, NRI off unless asked for (``nri=True``, 2.3 only: its socket then is ``<dir>/nri.sock``
  with empty private plugin dirs, for an external test plugin, ``nri_plugin.py``);
- the daemon started in a private network namespace (``nsenter --net``, not ``ip netns exec``,
  which would remount /sys and hide the cgroup hierarchies from the shims), so pod networks,
  the bridge and the streaming server never touch the host's network; ``crictl`` runs there too;
- ``crictl`` from ``$RUNWASM_CRICTL`` (default ``../shared/tools/cri-tools-1.36.0/bin/crictl``).

The stand-in images are imported into the ``k8s.io`` namespace under the names the pods use.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

from tests.integration.daemon import REPO, Containerd, CtrResult, DaemonError

EXAMPLES = REPO / "docs" / "examples"
CRICTL_ENV = "RUNWASM_CRICTL"
PAUSE_REF = "registry.k8s.io/pause:3.10.2"
K8S_NS = "k8s.io"
NETNS_DIR = Path("/var/run/netns")
CNI_BIN = Path("/usr/lib/cni")


def crictl_binary() -> Path | None:
    p = Path(os.environ.get(CRICTL_ENV) or REPO.parent / "shared" / "tools" / "cri-tools-1.36.0" / "bin" / "crictl")
    return p if p.is_file() else None


CRICTL_MISSING = (f"crictl not found (set ${CRICTL_ENV}; default ../shared/tools/cri-tools-1.36.0/bin/crictl)")


SANDBOX_API_HANDLER = "runwasm-sandbox"


OPTIONS_PATH = "/etc/runwasm/runwasm-options.toml"  # what the 1.x snippet's ConfigPath names


def runtime_snippet(flavour: str, directory: Path) -> str:
    """The README's containerd config snippets for this containerd major version (2.x: the
    ``runwasm`` runtime and the Sandbox API one, ``runwasm-sandbox``). For 1.x, whose CRI passes
    only ``ConfigPath`` of the options table on, the README's options file is written into
    ``directory`` and the snippet's ``ConfigPath`` points there."""
    if flavour != "2.3":
        (directory / "runwasm-options.toml").write_text((EXAMPLES / "runwasm-options.toml").read_text())
        snippet = (EXAMPLES / "containerd-1.x-config.toml").read_text()
        assert OPTIONS_PATH in snippet, "the 1.x snippet no longer names the options file"
        return snippet.replace(OPTIONS_PATH, f"{directory}/runwasm-options.toml")
    return "\n".join((EXAMPLES / name).read_text()
                     for name in ("containerd-2.x-config.toml", "containerd-2.x-sandbox-api.toml"))


NETWORK_HANDLER = "runwasm-net"


def network_handler(flavour: str, directory: Path) -> str:
    """A test-only handler, ``runwasm-net``: the README's runwasm runtime with ``WasmNetwork = true``
    (2.x: in the ``options`` table, passed to the shim as ``ConfigBody``; 1.x: in the options file
    ``ConfigPath`` names, the README's plus that key)."""
    if flavour == "2.3":
        snippet = (EXAMPLES / "containerd-2.x-config.toml").read_text()
    else:
        (directory / "runwasm-net.toml").write_text((EXAMPLES / "runwasm-options.toml").read_text()
                                                    + "WasmNetwork = true\n")
        snippet = (EXAMPLES / "containerd-1.x-config.toml").read_text().replace(
            OPTIONS_PATH, f"{directory}/runwasm-net.toml")
    snippet = snippet.replace(".runtimes.runwasm]", f".runtimes.{NETWORK_HANDLER}]")
    snippet = snippet.replace(".runtimes.runwasm.options]", f".runtimes.{NETWORK_HANDLER}.options]").rstrip("\n")
    return snippet + ("\n    WasmNetwork = true\n" if flavour == "2.3" else "\n")


class CriContainerd(Containerd):
    """containerd (1.6 or 2.3) with CRI, in a private network namespace."""

    def __init__(self, flavour: str, *, nri: bool = False) -> None:
        if nri and flavour != "2.3":
            raise DaemonError(f"NRI (v0.2+, external plugins over ttrpc) needs containerd 2.x, not {flavour}")
        self.nri = nri
        tag = hashlib.sha256(f"{os.getpid()}-{flavour}-{nri}".encode()).hexdigest()[:8]
        self.netns = f"rwcri-{tag}"
        self.bridge = f"rwcri{tag[:6]}"
        super().__init__(namespace=K8S_NS, flavour=flavour)
        # pods get this cgroup parent, as the kubelet always gives one (CRI's pod stats need it);
        # unique, so that close() removes only ours (other daemons use the k8s.io namespace too)
        self.cgroup_name = f"rwcri-{tag}"
        self.crictl = crictl_binary()
        if self.crictl is None:
            raise DaemonError(CRICTL_MISSING)
        self.log_dir = self.dir / "pods"
        self.log_dir.mkdir()
        self.pod_netns: set[str] = set()  # network namespace files CRI made for our pods

    @property
    def nri_socket(self) -> str:
        return str(self.dir / "nri.sock")

    # --- configuration ----------------------------------------------------------------------

    def _write_config(self) -> None:
        d = self.dir
        self.fifo_dir.mkdir()
        cni = d / "cni"
        cni.mkdir()
        if self.nri:
            (d / "nri-plugins").mkdir()
            (d / "nri-conf").mkdir()
        (cni / "10-runwasm-test.conflist").write_text(json.dumps({
            "cniVersion": "1.0.0", "name": "runwasm-test",
            "plugins": [{"type": "bridge", "bridge": self.bridge, "isGateway": True, "ipMasq": False,
                         "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.250.0.0/24"}]],
                                  "dataDir": str(d / "ipam")}},
                        {"type": "loopback"}]}))
        common = (f'root = "{d}/root"\nstate = "{d}/state"\n'
                  f'[grpc]\n  address = "{self.address}"\n'
                  f'[ttrpc]\n  address = "{self.ttrpc_address}"\n'
                  f'[plugins."io.containerd.internal.v1.opt"]\n  path = "{d}/opt"\n')
        if self.flavour == "2.3":
            nri = ('[plugins."io.containerd.nri.v1.nri"]\n  disable = false\n'
                   f'  socket_path = "{d}/nri.sock"\n  plugin_path = "{d}/nri-plugins"\n'
                   f'  plugin_config_path = "{d}/nri-conf"\n  plugin_registration_timeout = "30s"\n'
                   '  plugin_request_timeout = "30s"\n') if self.nri else ""
            disabled = "" if self.nri else 'disabled_plugins = ["io.containerd.nri.v1.nri"]\n'
            plumbing = ('version = 3\n' + disabled + common + nri
                        + '[plugins."io.containerd.grpc.v1.cri"]\n  disable_tcp_service = true\n'
                        '  stream_server_address = "127.0.0.1"\n  stream_server_port = "0"\n'
                        f'[plugins."io.containerd.cri.v1.images".pinned_images]\n  sandbox = "{PAUSE_REF}"\n'
                        '[plugins."io.containerd.cri.v1.runtime"]\n  restrict_oom_score_adj = true\n'
                        f'[plugins."io.containerd.cri.v1.runtime".cni]\n  bin_dirs = ["{CNI_BIN}"]\n'
                        f'  conf_dir = "{cni}"\n')
        else:
            plumbing = ('version = 2\n' + common
                        + f'[plugins."io.containerd.grpc.v1.cri"]\n  sandbox_image = "{PAUSE_REF}"\n'
                        '  restrict_oom_score_adj = true\n  disable_tcp_service = true\n'
                        '  stream_server_address = "127.0.0.1"\n  stream_server_port = "0"\n'
                        f'[plugins."io.containerd.grpc.v1.cri".cni]\n  bin_dir = "{CNI_BIN}"\n'
                        f'  conf_dir = "{cni}"\n'
                        # what a stock 1.6 config already has; listing any runtime replaces the default map
                        '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]\n'
                        '  runtime_type = "io.containerd.runc.v2"\n')
        self.config.write_text(plumbing + "\n" + runtime_snippet(self.flavour, d) + "\n"
                               + network_handler(self.flavour, d))

    # --- lifecycle --------------------------------------------------------------------------

    def _popen_argv(self, binary: str) -> list[str]:
        return ["nsenter", f"--net={NETNS_DIR / self.netns}", binary, "--config", str(self.config)]

    def start(self, timeout: float = 30.0) -> None:
        """Start the daemon and wait until CRI answers too (after a restart CRI recovers its
        state after the daemon's own services are up, and says "server is not initialized yet")."""
        if not (NETNS_DIR / self.netns).exists():
            subprocess.run(["ip", "netns", "add", self.netns], check=True, capture_output=True)
            subprocess.run(["ip", "-n", self.netns, "link", "set", "lo", "up"], check=True, capture_output=True)
        super().start(timeout)
        deadline = time.monotonic() + timeout
        while True:
            res = self.crictl_run("version", check=False, timeout=timeout)
            if res.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise DaemonError(f"CRI did not answer `crictl version` in {timeout}s: {res.output}\n"
                                  f"{self.log_tail()}")
            time.sleep(0.1)

    def close(self) -> None:
        with contextlib.suppress(DaemonError):
            self.remove_all_pods()
        super().close()
        subprocess.run(["ip", "netns", "del", self.netns], capture_output=True, check=False)

    def remove_all_pods(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.crictl_run("rmp", "-f", "-a", check=False)

    def cri_leftovers(self) -> list[str]:
        """Network namespaces CRI created for our pods and not removed (besides ``leftovers()``);
        only ours, recorded at ``runp``: CRI daemons of other sessions make theirs in the same dir."""
        return [f"netns {n}" for n in sorted(self.pod_netns) if os.path.lexists(n)]

    def _record_pod_netns(self, pod: str) -> None:
        doc = json.loads(self.crictl_run("inspectp", pod).stdout)
        info = doc.get("info") or {}
        for ns in (info.get("runtimeSpec") or {}).get("linux", {}).get("namespaces", []):
            if ns.get("type") == "network" and ns.get("path"):
                self.pod_netns.add(ns["path"])
        if doc.get("netns"):  # a Sandbox API pod (no pause spec): runwasm's verbose SandboxStatus info
            self.pod_netns.add(doc["netns"])

    # --- crictl -----------------------------------------------------------------------------

    def crictl_run(self, *args: str, check: bool = True, timeout: float = 90.0,
                   stdin: str | None = None) -> CtrResult:
        """``crictl ARGS`` against this daemon, run in its network namespace (the streaming server
        for exec/attach listens on 127.0.0.1 there)."""
        conf = self.dir / "crictl.yaml"
        if not conf.exists():
            conf.write_text(f"runtime-endpoint: unix://{self.address}\nimage-endpoint: unix://{self.address}\n"
                            "timeout: 60\npull-image-on-create: false\n")
        argv = ["nsenter", f"--net={NETNS_DIR / self.netns}", str(self.crictl), "--config", str(conf), *args]
        env = self.env()
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env,
                                  input=stdin, stdin=None if stdin is not None else subprocess.DEVNULL)
        except subprocess.TimeoutExpired as err:
            raise DaemonError(f"`crictl {' '.join(args)}` timed out after {timeout}s") from err
        res = CtrResult(tuple(args), proc.returncode, proc.stdout, proc.stderr)
        if check and proc.returncode != 0:
            raise DaemonError(f"`crictl {' '.join(args)}` failed with {proc.returncode}: {res.output.strip()}\n"
                              f"{self.log_tail(20)}")
        if args[:1] == ("runp",) and proc.returncode == 0:
            self._record_pod_netns(proc.stdout.strip())
        return res

    def write_json(self, name: str, doc: dict[str, Any]) -> Path:
        p = self.dir / name
        p.write_text(json.dumps(doc))
        return p
