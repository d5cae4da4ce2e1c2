"""Stand-ins for the images cri-tools' ``critest`` v1.36 pulls, built from Debian's static busybox
and two tiny static C programs (``fixtures/linux``), as OCI layout tarballs.

critest always pulls its images by name (``PullPublicImage``; no pull policy to tolerate a
pre-imported image), so ``critest.py`` pushes these to a registry that containerd reaches through
``hosts.toml`` mirrors. What the specs inspect is reproduced (names from cri-tools
``pkg/validate/consts.go``, ``security_context_linux.go``, ``networking.go``):

- the ``test-image-user-*`` images' ``User`` (uid 1002, ``www-data``, ``1003:users``,
  ``www-data:www-data``), reported by ImageStatus as Uid/Username;
- ``test-image-predefined-group``: ``User 1000`` whose ``/etc/group`` puts uid 1000 in group
  50000 (SupplementalGroupsPolicy Merge adds it, Strict must not);
- ``test-image-tags:1/2/3`` one image under three tags; every other name its own image;
- ``nginx:1.14-2``: a process named ``nginx`` (``fixtures/linux/nginx.c``) whose pid 1 command
  line says "master process", writing ``/var/run/nginx.pid``, serving port 80 with busybox
  ``httpd``; ``hostnet-nginx-<arch>`` the same on port 12003;
- ``httpd:2.4.39-4``: busybox ``httpd`` on port 80 after logging Apache's
  ``Command line: 'httpd -D FOREGROUND'``;
- busybox with its applets as hard links (as in the real image: masking ``/bin/ls`` must not
  mask busybox), plus ``pgrep`` and ``ipcs -m`` scripts, which Debian's busybox-static lacks;
- ``nonewprivs:1.3``: a setuid-root program printing ``Effective uid: N``.

``test-image-digest@sha256:9700f9a2...`` names a digest of the upstream image that no stand-in
can have; that spec fails on every handler alike.
"""

from __future__ import annotations

import io
import platform
import subprocess
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from fixtures.images import GOARCH, write_image

BUSYBOX = Path("/bin/busybox")
STAGING = "gcr.io/k8s-staging-cri-tools/"
E2E = "registry.k8s.io/e2e-test-images/"
ARCH = GOARCH.get(platform.machine(), platform.machine())
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PASSWD = ("root:x:0:0:root:/root:/bin/sh\nwww-data:x:33:33:www-data:/var/www:/bin/sh\n"
          "user-defined-in-image:x:1000:1000::/home/user-defined-in-image:/bin/sh\n"
          "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
GROUP = ("root:x:0:\nwww-data:x:33:\nusers:x:100:\nuser-defined-in-image:x:1000:\n"
         "group-defined-in-image:x:50000:user-defined-in-image\nnogroup:x:65534:\n")
UNREACHABLE = (f"{STAGING}test-image-digest@sha256:"
               "9700f9a2f5bf2c45f2f605a0bd3bce7cf37420ec9d3ed50ac2758413308766bf")


@dataclass(frozen=True)
class StandIn:
    """One image: the refs it is pushed under, its extra files (path -> (bytes, mode)) and config."""

    refs: tuple[str, ...]
    config: dict[str, object]
    files: dict[str, tuple[bytes, int]] = field(default_factory=dict)


def _info(name: str, kind: bytes, size: int = 0, mode: int = 0o755, link: str = "") -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.type, ti.size, ti.mode, ti.linkname, ti.mtime = kind, size, mode, link, 0
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = "root"
    return ti


PGREP = b"""#!/bin/sh
# critest stand-in for pgrep (Debian's busybox-static has none): pids whose name contains $1
found=1
for d in /proc/[0-9]*; do
  read -r name < "$d/comm" 2>/dev/null || continue
  case "$name" in *"$1"*) echo "${d#/proc/}"; found=0 ;; esac
done
exit $found
"""
IPCS = b"""#!/bin/sh
# critest stand-in for `ipcs -m` (Debian's busybox-static has none): the SysV shared memory
# segments of this IPC namespace, as the kernel lists them (key, shmid, ...)
cat /proc/sysvipc/shm
"""
HTTPD = b"""#!/bin/sh
# critest stand-in for e2e's httpd image: Apache's start-up line, then busybox httpd on port 80
echo "[mpm_event:notice] AH00489: Apache/2.4.39 (Unix) configured -- resuming normal operations"
echo "[core:notice] AH00094: Command line: 'httpd -D FOREGROUND'"
exec httpd -f -p 80 -h /usr/local/apache2/htdocs
"""


def busybox_rootfs(extra: dict[str, tuple[bytes, int]]) -> bytes:
    """A layer: busybox with every applet hard-linked in /bin, passwd/group above, the usual
    dirs, ``pgrep``/``ipcs`` scripts, plus ``extra`` files (parent dirs made 0755)."""
    applets = subprocess.run([str(BUSYBOX), "--list"], check=True, capture_output=True, text=True).stdout.split()
    files = {"etc/passwd": (PASSWD.encode(), 0o644), "etc/group": (GROUP.encode(), 0o644),
             "bin/busybox": (BUSYBOX.read_bytes(), 0o755), "usr/bin/pgrep": (PGREP, 0o755),
             "usr/bin/ipcs": (IPCS, 0o755), **extra}
    dirs = {"bin", "dev", "etc", "proc", "sys", "tmp", "root", "var", "run", "usr", "usr/bin", "home",
            "home/user-defined-in-image", "var/www"}
    for name in files:
        parts = name.split("/")[:-1]
        dirs.update("/".join(parts[:i]) for i in range(1, len(parts) + 1))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d in sorted(dirs):
            tar.addfile(_info(d, tarfile.DIRTYPE, mode=0o1777 if d == "tmp" else 0o755))
        for name, (data, mode) in sorted(files.items()):
            tar.addfile(_info(name, tarfile.REGTYPE, size=len(data), mode=mode), io.BytesIO(data))
        for a in sorted(set(applets) - {"busybox"}):
            if f"bin/{a}" not in files:
                tar.addfile(_info(f"bin/{a}", tarfile.LNKTYPE, link="bin/busybox"))
    return buf.getvalue()


def _nginx(nginx: Path, port: int) -> tuple[dict[str, object], dict[str, tuple[bytes, int]]]:
    return ({"Env": [PATH_ENV], "Entrypoint": ["/usr/sbin/nginx", str(port)], "ExposedPorts": {f"{port}/tcp": {}},
             "StopSignal": "SIGQUIT"},
            {"usr/share/nginx/html/index.html": (b"<h1>Welcome to nginx!</h1>\n", 0o644),
             "usr/sbin/nginx": (nginx.read_bytes(), 0o755), "var/run/.keep": (b"", 0o644)})


def stand_ins(nnp: Path, nginx: Path) -> list[StandIn]:
    """Every image critest v1.36 pulls (but the pinned digest); ``nnp``, ``nginx``: the built
    setuid probe and nginx stand-in (``fixtures/linux``)."""
    sh = {"Env": [PATH_ENV], "Cmd": ["sh"]}
    nginx_cfg, nginx_files = _nginx(nginx, 80)
    host_cfg, host_files = _nginx(nginx, 12003)
    httpd_cfg = {"Env": [PATH_ENV], "Cmd": ["httpd-foreground"], "ExposedPorts": {"80/tcp": {}}}
    httpd_files = {"usr/local/bin/httpd-foreground": (HTTPD, 0o755),
                   "usr/local/apache2/htdocs/index.html": (b"<html><body><h1>It works!</h1></body></html>\n", 0o644)}
    images = [
        *[StandIn((ref,), sh) for ref in (f"{E2E}busybox:1.29-2", f"{STAGING}test-image-latest:latest",
                                          f"{STAGING}test-image-tag:test", f"{STAGING}test-image-tag:all",
                                          *[f"{STAGING}test-image-{n}:latest" for n in (1, 2, 3)])],
        StandIn(tuple(f"{STAGING}test-image-tags:{n}" for n in (1, 2, 3)), sh),
        StandIn((f"{STAGING}test-image-user-uid:latest",), {**sh, "User": "1002"}),
        StandIn((f"{STAGING}test-image-user-username:latest",), {**sh, "User": "www-data"}),
        StandIn((f"{STAGING}test-image-user-uid-group:latest",), {**sh, "User": "1003:users"}),
        StandIn((f"{STAGING}test-image-user-username-group:latest",), {**sh, "User": "www-data:www-data"}),
        StandIn((f"{STAGING}test-image-predefined-group:latest",), {**sh, "User": "1000"}),
        StandIn((f"{E2E}nginx:1.14-2",), nginx_cfg, nginx_files),
        StandIn((f"{E2E}httpd:2.4.39-4",), httpd_cfg, httpd_files),
        StandIn((f"{STAGING}hostnet-nginx-{ARCH}:latest",), host_cfg, host_files),
        StandIn((f"{E2E}nonewprivs:1.3",), {"Env": [PATH_ENV], "Entrypoint": ["/usr/local/bin/nnp"]},
                {"usr/local/bin/nnp": (nnp.read_bytes(), 0o4755)}),
    ]
    return images


def build_all(out_dir: Path, nnp: Path, nginx: Path) -> list[tuple[Path, tuple[str, ...]]]:
    """Write one OCI layout tarball per stand-in into ``out_dir``; returns (tarball, refs)."""
    out: list[tuple[Path, tuple[str, ...]]] = []
    for i, img in enumerate(stand_ins(nnp, nginx)):
        # the Image Manager specs expect each name to be its own image (RepoTags == [name]): a
        # file naming the refs makes every stand-in distinct
        files = {**img.files, "etc/stand-in": ("\n".join(img.refs).encode() + b"\n", 0o644)}
        tar = write_image(out_dir / f"critest-{i}.tar", img.refs[0], busybox_rootfs(files), img.config,
                          "linux", ARCH)
        out.append((tar, img.refs))
    return out
