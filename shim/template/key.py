"""Where an installation's template listens, and how a template notices it is out of date.

Several installations of runwasm (checkouts, venvs) may run on one node at once; each must only
ever use its OWN template. The socket name is therefore keyed on the installation: the
environment (the venv), the directory ``runwasm`` is imported from, and the version. The directory is
``/run/runwasm`` (``$RUNWASM_TEMPLATE_DIR`` overrides it, e.g. for tests), created 0700; the
socket is 0600 and the template checks the peer's uid (SO_PEERCRED).

A template also watches its code on disk (``code_identity``: path, mtime and size of every
``.py`` file of the installation): when it changes (an upgrade, a ``git pull`` in an editable
checkout) the template removes its socket and exits, so later execs launch a fresh one. That
check runs in the template between requests, never on the exec path.

Imported by the launcher: stdlib C modules only (no ``hashlib``, ``json``, ``socket``).
"""

from __future__ import annotations

import os
import sys
import zlib

DEFAULT_DIR = "/run/runwasm"
ENV_DIR = "RUNWASM_TEMPLATE_DIR"
ENV_SWITCH = "RUNWASM_TEMPLATE"  # "off": never use or launch a template
TEMPLATE_ACTION = "_runwasm_template"  # never an action word containerd sends
ENV_FORKED_BY = "RUNWASM_FORKED_BY_TEMPLATE"  # in a forked server's environment: the template's pid


# the namespaces a forked server inherits from the template: a launcher in other ones (a
# containerd in its own network namespace, say) must not be served by it, or host-network,
# host-IPC and host-PID pods would land in the template's namespaces instead of the caller's
NAMESPACES = ("mnt", "net", "ipc", "uts", "pid", "cgroup", "user")


def namespaces() -> str:
    """This process's namespace identities (``kind=dev:ino`` per kind, comma-joined); a kind the
    kernel does not have is left out."""
    out = []
    for kind in NAMESPACES:
        try:
            st = os.stat(f"/proc/self/ns/{kind}")
        except OSError:
            continue
        out.append(f"{kind}={st.st_dev}:{st.st_ino}")
    return ",".join(out)


def enabled(env: dict[str, str] | os._Environ[str]) -> bool:
    return env.get(ENV_SWITCH, "") != "off"


def package_path() -> list[str]:
    """The directory holding ``runwasm``'s subpackages (the checkout of an editable install)."""
    import runwasm.shim

    return [os.path.dirname(os.path.dirname(os.path.realpath(runwasm.shim.__file__)))]


def install_key() -> str:
    """A short stable name for this installation (environment + package dir + version)."""
    from runwasm.shim.common.version import REVISION, VERSION

    env_dir = os.path.dirname(os.path.dirname(sys.executable))  # the venv (sys.prefix needs `site`)
    text = "\0".join([env_dir, *package_path(), VERSION, REVISION])
    return f"{zlib.crc32(text.encode()):08x}{zlib.adler32(text.encode()):08x}"


def directory(env: dict[str, str] | os._Environ[str]) -> str:
    return env.get(ENV_DIR) or DEFAULT_DIR


def socket_path(env: dict[str, str] | os._Environ[str]) -> str:
    return os.path.join(directory(env), f"template-{install_key()}.sock")


def pid_path(sock_path: str) -> str:
    return sock_path.removesuffix(".sock") + ".pid"


def lock_path(sock_path: str) -> str:
    return sock_path.removesuffix(".sock") + ".lock"


def code_identity() -> int:
    """A checksum of (path, mtime, size) of every ``.py`` file of the installation."""
    entries: list[str] = []

    def walk(d: str) -> None:
        try:
            it = list(os.scandir(d))
        except OSError:
            return
        for e in it:
            if e.is_dir(follow_symlinks=False):
                if e.name != "__pycache__":
                    walk(e.path)
            elif e.name.endswith(".py"):
                try:
                    st = e.stat()
                except OSError:
                    continue
                entries.append(f"{e.path}\0{st.st_mtime_ns}\0{st.st_size}")

    for root in package_path():
        for sub in ("shim", "wasm", "oci", "linux"):
            walk(os.path.join(root, sub))
    entries.sort()
    return zlib.crc32("\n".join(entries).encode())
