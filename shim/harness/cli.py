"""``runwasm``: the standalone harness and image tools.

    runwasm run [--legacy] [--trace] [--env K=V] [--dir HOST:GUEST] [--id ID] MODULE_OR_BUNDLE [-- ARGS...]
    runwasm image pack-wasm|import|ls|rm|inspect|convert|mount|umount ...
    runwasm stress [-n N] [-p P] [--full | --containerd ADDRESS [--namespace NS]] [MODULE]

``run`` plays containerd's part around the real shim binary and exits with the task's status.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _run(ns: argparse.Namespace) -> int:
    from runwasm.oci.errors import OciError
    from runwasm.shim.common.errors import ShimError
    from runwasm.shim.harness import bundle as bundlemod
    from runwasm.shim.harness.driver import Harness, run_task, runtime_options
    from runwasm.shim.ttrpc.status import RpcError

    cid = ns.id or f"run-{uuid.uuid4().hex[:12]}"
    env = list(ns.env or [])
    try:
        from runwasm.shim.common.ids import validate_id

        validate_id(cid, "container id (--id)")
        dirs = [bundlemod.parse_dir(d) for d in ns.dir or []]
    except ShimError as err:
        print(f"runwasm: {err}", file=sys.stderr)
        return 2
    try:
        kind, target = classify_target(ns.target)
    except ShimError as err:
        print(f"runwasm: {err}", file=sys.stderr)
        return 125
    if ns.verify and kind != "image":
        print(f"runwasm: --verify applies to images in the store, and {ns.target!r} is a file or bundle"
              " (signatures name image digests)", file=sys.stderr)
        return 2

    tracer = None
    if ns.trace:
        from runwasm.shim.harness.cli_trace import RunTrace

        tracer = RunTrace(f"runwasm run {ns.target}")

    async def main() -> int:
        async with Harness(legacy=ns.legacy, keep=ns.keep) as h:
            if tracer is not None:
                tracer.configure(h)
            bundle = h.new_bundle(cid)
            release = net = None
            loop = asyncio.get_running_loop()
            task = asyncio.current_task()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, lambda: task.cancel() if task else None)
            try:  # everything prepared from here on is released in the finally, also on failure
                if kind == "bundle":
                    bundlemod.adopt_bundle(bundle, target, ns.args, env)
                elif kind == "module":
                    bundlemod.make_wasm_bundle(bundle, target, ns.args, env, dirs)
                elif kind == "export":  # FILE#export
                    path, _, export = ns.target.partition("#")
                    bundlemod.make_wasm_bundle(bundle, Path(path).expanduser().resolve(), ns.args, env, dirs,
                                               export=export)
                else:  # an image reference in runwasm's store
                    release = await asyncio.to_thread(_image_bundle, ns, bundle, cid, env, dirs)
                # pyroute2's synchronous API runs its own event loop: keep it off ours
                net = await asyncio.to_thread(_join_new_netns, bundle, cid) if ns.net else None
                options = runtime_options(config_path=os.path.abspath(ns.runtime_config)) if ns.runtime_config else None
                result = await run_task(h, cid, bundle, options=options, stdin=0)
            except asyncio.CancelledError:
                print(f"runwasm: interrupted; task {cid} was killed and deleted", file=sys.stderr)
                return 130
            finally:
                if net is not None:
                    await asyncio.to_thread(net.close)
                if release is not None:
                    await asyncio.to_thread(release)
                if ns.show_events:
                    for env_ in h.events.envelopes:
                        print(f"event {env_.topic} {env_.event.type_url}", file=sys.stderr)
                if ns.keep:
                    print(f"runwasm: state kept in {h.root}", file=sys.stderr)
            return result.exit_status

    failure = ""
    try:
        code = asyncio.run(main())
    except (ShimError, OciError, RuntimeError, OSError, RpcError) as err:
        from runwasm.oci.image_cli import user_message

        print(f"runwasm: {user_message(err)}", file=sys.stderr)
        failure, code = str(err), 125
    if tracer is not None:
        print(tracer.finish(failure or (f"exit status {code}" if code else "")), file=sys.stderr)
    return code


def classify_target(text: str) -> tuple[str, Path]:
    """What ``runwasm run TARGET`` names: ``("bundle", dir)``, ``("module", file)``,
    ``("export", Path(text))`` (``FILE#export`` of an existing module file) or
    ``("image", Path(text))`` (a reference for the image store).

    A target that exists is a bundle directory or a module file. A missing one that looks like a
    path (starts with ``.``, ``~`` or ``/``, ends in ``.wasm``/``.wat``, or has a ``/`` and is not a
    valid reference) is a missing file, so ``./hello.wsam`` is "no such file", not a bad reference;
    anything else (``hello``, ``demo/hello:1``) is looked up in the image store.

    Raises:
        NotFoundError: "no such file: TARGET".
    """
    from runwasm.oci.errors import InvalidArgumentError as BadReference
    from runwasm.oci.reference import Reference
    from runwasm.shim.common.errors import NotFoundError

    path = Path(text).expanduser()
    if path.is_dir():
        return "bundle", path
    if path.exists():
        return "module", path
    file_part, sep, export = text.partition("#")
    if sep and export and Path(file_part).expanduser().is_file():
        return "export", path
    missing = NotFoundError(f"no such file: {text}")
    if text.startswith((".", "~", "/")) or text.endswith((".wasm", ".wat")):
        raise missing
    if "/" in text:
        try:
            Reference.parse(text)
        except BadReference:
            raise missing from None
    return "image", path


def _image_bundle(ns: argparse.Namespace, bundle: Path, cid: str, env: list[str],
                  dirs: list[tuple[str, str]]) -> Callable[[], None]:
    """Prepare the rootfs of image ``ns.target`` from the store at ``<bundle>/rootfs``; returns
    the function that releases it (unmounts)."""
    from runwasm.oci import steps
    from runwasm.oci.image_cli import open_stores, store_root
    from runwasm.oci.mounts.rootfs import prepare_rootfs
    from runwasm.shim.harness import bundle as bundlemod

    root = store_root(ns)
    store, images = open_stores(root)
    image: Any = ns.target
    policy = _verify_policy(ns, root)
    if policy is not None:  # verify, then use the verified descriptor (not the name) from here on
        from runwasm.oci.verify.local import verified_target

        with steps.step("image.verify", **{"runwasm.image.name": ns.target}):
            image = verified_target(policy, store, images, ns.target)
    with steps.step("image.mount", **{"runwasm.image.name": ns.target}) as attrs:
        handle = prepare_rootfs(store, image, bundle / "rootfs", cid, mode=ns.rootfs_mode)
        attrs["runwasm.rootfs.method"] = handle.method
    try:
        cfg = handle.image.config.config
        args = bundlemod.image_process(cfg.entrypoint, cfg.cmd, ns.args) if not handle.wasm_modules or \
            cfg.entrypoint or cfg.cmd or ns.args else ["/module.wasm"]
        if handle.wasm_modules:
            _place_wasm_layer(handle.wasm_modules[-1], handle.rootfs, args[0])
        bundlemod.make_image_bundle(bundle, args, cfg.env, env, cfg.working_dir, cfg.user, dirs)
    except BaseException:
        handle.release()
        raise
    logging.getLogger(__name__).info("rootfs of %s prepared via %s", ns.target, handle.method)
    return handle.release


def _verify_policy(ns: argparse.Namespace, root: Path) -> Any:
    """The signature policy for an image run: ``--verify``, else ``<root>/verify-policy.toml``."""
    from runwasm.oci.verify.local import policy_for

    return policy_for(root, ns.verify)


def _place_wasm_layer(blob: Path, rootfs: Path, arg0: str) -> None:
    """A Wasm-artifact image (module in an ``application/wasm`` layer, as runwasi's images are):
    put the module where ``args[0]`` names it in the (writable) rootfs, unless a file is there."""
    import shutil

    from runwasm.wasm.detect import parse_entrypoint

    path, _export = parse_entrypoint(arg0)
    target = rootfs / path.lstrip("/")
    if not path.startswith("/") or target.is_symlink() or target.exists():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(blob, target)


def _join_new_netns(bundle: Path, cid: str) -> Any:
    """Create a network namespace with a veth pair to the host and make the container join it.

    Addresses are a random link-local /30 (169.254.x.y), on the veth pair only."""
    import json
    import random

    from runwasm.linux.network import create_netns_with_veth

    x, y = random.randint(1, 254), random.randrange(0, 256, 4)
    handle = create_netns_with_veth(f"rw{uuid.uuid4().hex[:9]}", f"169.254.{x}.{y + 1}", f"169.254.{x}.{y + 2}", 30)
    try:
        path = bundle / "config.json"
        spec = json.loads(path.read_text())
        lin = spec.setdefault("linux", {})
        lin["namespaces"] = [n for n in lin.get("namespaces", []) if n.get("type") != "network"]
        lin["namespaces"].append({"type": "network", "path": handle.path})
        path.write_text(json.dumps(spec, indent=2))
    except BaseException:
        handle.close()
        raise
    print(f"runwasm: container {cid} network: {handle.ns_ip} (host side {handle.host_ip})", file=sys.stderr)
    return handle


def _compile(ns: argparse.Namespace) -> int:
    """``runwasm compile``: warm the node's compile cache ahead of time (same key as the shim)."""
    import json

    from runwasm.shim.common.errors import InvalidArgumentError
    from runwasm.shim.common.options import parse_toml
    from runwasm.wasm.cache import CompileCache
    from runwasm.wasm.engine import engine_fingerprint, make_engine
    from runwasm.wasm.errors import WasmError

    try:
        opts = parse_toml(Path(ns.runtime_config).read_text(), ns.runtime_config).options \
            if ns.runtime_config else None
        sandbox = opts.wasm_sandbox if opts else None
        cache_dir = ns.cache_dir or (opts.wasm_cache_dir if opts else None)
        loaded = CompileCache(make_engine(sandbox), cache_dir, fingerprint=engine_fingerprint(sandbox)).load(
            Path(ns.module).read_bytes())
    except (OSError, WasmError, InvalidArgumentError) as err:  # the options' errors name the key
        print(f"runwasm: {err}", file=sys.stderr)
        return 1
    print(json.dumps({"module": ns.module, "flavour": loaded.flavour, "source": loaded.source,
                      "path": str(loaded.path) if loaded.path else None}))
    return 0


def _stress(ns: argparse.Namespace) -> int:
    from runwasm.shim.harness import stress

    module = Path(ns.module) if ns.module else Path(__file__).resolve().parents[2] / "fixtures" / "build" / "wasm" / "hello.wasm"
    if not module.is_file():
        print(f"runwasm: stress: module {str(module)!r} not found (build fixtures with `make fixtures` or name one)",
              file=sys.stderr)
        return 2
    try:
        if ns.containerd:
            if ns.full:
                raise ValueError("--full is the harness's stand-in for containerd's execs; with --containerd "
                                 "containerd runs them itself")
            from runwasm.shim.harness.stress_containerd import run_stress_containerd

            result = run_stress_containerd(ns.containerd, ns.namespace, module, ns.n, ns.p, runtime=ns.runtime)
        else:
            result = asyncio.run(stress.run_stress(module, ns.n, ns.p, full=ns.full))
    except (ValueError, stress.StressError) as err:
        print(f"runwasm: stress: {err}", file=sys.stderr)
        return 2
    print(stress.report(result))
    return 1 if result.failures else 0


def _snapshotter(ns: argparse.Namespace) -> int:
    from runwasm.shim.snapshotter.daemon import DEFAULT_ADDRESS, DEFAULT_ROOT, serve

    if not ns.debug:
        logging.getLogger().setLevel(logging.INFO)
    return serve(Path(ns.root or DEFAULT_ROOT), Path(ns.address or DEFAULT_ADDRESS), diff=not ns.no_diff,
                 containerd_address=ns.containerd_address)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="runwasm", description="WebAssembly-first containerd shim: tools and harness")
    p.add_argument("--debug", action="store_true", help="verbose logging")
    from runwasm.shim.common.version import REVISION, VERSION

    p.add_argument("--version", action="version", version=f"runwasm {VERSION} (revision {REVISION})")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a .wasm/.wat module or an OCI bundle through the real shim binary")
    run.add_argument("--legacy", action="store_true", help="use the pre-2.3 start protocol (flags, plain address)")
    run.add_argument("--env", "-e", action="append", metavar="K=V", help="environment for the task")
    run.add_argument("--dir", action="append", metavar="HOST:GUEST", help="make a host directory visible")
    run.add_argument("--id", help="container id (default: random)")
    run.add_argument("--keep", action="store_true", help="keep the harness state directory")
    run.add_argument("--runtime-config", metavar="TOML",
                     help="runtime options file, passed like ctr --runtime-config-path (see README)")
    run.add_argument("--net", action="store_true",
                     help="give the container its own network namespace with a veth pair to the host")
    run.add_argument("--show-events", action="store_true", help="print the events the shim published")
    run.add_argument("--trace", action="store_true",
                     help="print the span tree of this run (shim RPCs, workload steps) as a waterfall; "
                          "no collector needed")
    run.add_argument("--root", help="image store root (default $RUNWASM_ROOT or /var/lib/runwasm)")
    run.add_argument("--rootfs-mode", default="auto", choices=("auto", "erofs", "dirs", "flat"),
                     help="how an image's rootfs is assembled (default: the best the kernel allows)")
    run.add_argument("--verify", metavar="POLICY",
                     help="run an image only if this signature policy accepts it (default: the store's"
                          " <root>/verify-policy.toml when present)")
    run.add_argument("target", help="a .wasm or .wat file, a bundle directory with config.json, or an image "
                                    "reference in the store (runwasm image import)")
    run.add_argument("args", nargs=argparse.REMAINDER, help="arguments for the task (after --)")
    run.set_defaults(func=_run)
    comp = sub.add_parser("compile", help="compile a module into the node's compile cache ahead of the first run")
    comp.add_argument("--runtime-config", metavar="TOML", help="runtime options whose Wasm* keys and WasmCacheDir "
                                                              "to compile for (as the shim would)")
    comp.add_argument("--cache-dir", help="cache directory (default: WasmCacheDir, $RUNWASM_WASM_CACHE or "
                                          "/var/lib/runwasm/wasm-cache)")
    comp.add_argument("module", help="a .wasm module or component, or .wat text")
    comp.set_defaults(func=_compile)
    stress = sub.add_parser("stress", help="task throughput through ONE shim (the harness plays containerd)")
    stress.add_argument("-n", type=int, default=200, help="tasks to run (default 200)")
    stress.add_argument("-p", type=int, default=8, help="tasks in flight at once (default 8)")
    stress.add_argument("--full", action="store_true",
                        help="also run `shim start`/`shim delete` per task, as containerd does per container")
    stress.add_argument("--containerd", metavar="ADDRESS",
                        help="go through this containerd's gRPC API (Containers/Tasks services) instead of the "
                             "harness; the shim is the runtime named by --runtime")
    stress.add_argument("--namespace", default="runwasm-stress", help="containerd namespace (with --containerd)")
    stress.add_argument("--runtime", default="io.containerd.runwasm.v1", help="runtime name (with --containerd)")
    stress.add_argument("module", nargs="?", help="the .wasm to run (default: the built hello.wasm fixture)")
    stress.set_defaults(func=_stress)
    snap = sub.add_parser("snapshotter", help="serve containerd's Snapshots and Diff APIs with EROFS layers"
                                              " (a proxy plugin: see docs/examples/runwasm-snapshotter.service)")
    snap.add_argument("--root", default=None, help="state directory (default /var/lib/runwasm-snapshotter)")
    snap.add_argument("--address", default=None,
                      help="unix socket to serve (default /run/runwasm-snapshotter/snapshotter.sock)")
    snap.add_argument("--containerd-address", default="/run/containerd/containerd.sock",
                      help="containerd's gRPC socket, read by the Diff service for layer blobs")
    snap.add_argument("--no-diff", action="store_true", help="serve only the Snapshots service")
    snap.set_defaults(func=_snapshotter)
    try:
        from runwasm.oci.image_cli import add_image_commands
    except ImportError:  # pragma: no cover - the oci package is part of the distribution
        pass
    else:
        add_image_commands(sub)
    return p


def _user_errors() -> tuple[type[BaseException], ...]:
    """Errors that are about the user's input or machine, not runwasm bugs (those keep their
    traceback): every package's error base, spec errors and OS errors."""
    from runwasm.oci.errors import OciError
    from runwasm.oci.runtime_spec import SpecError
    from runwasm.shim.common.errors import ShimError

    return (ShimError, OciError, SpecError, OSError)


USER_ERRORS = _user_errors()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    ns = parser.parse_args(argv)
    if getattr(ns, "args", None) and ns.args[:1] == ["--"]:
        ns.args = ns.args[1:]
    logging.basicConfig(level=logging.DEBUG if ns.debug else logging.WARNING, format="runwasm: %(message)s")
    try:
        if ns.command in ("run", "snapshotter"):
            code: int = ns.func(ns)
        else:  # image commands: a span per command when OTEL_* configures traces
            from runwasm.shim.harness.cli_trace import traced_command

            code = traced_command(f"{ns.command} {getattr(ns, 'image_command', '') or ''}".strip(),
                                  lambda: ns.func(ns))
        sys.stdout.flush()
    except KeyboardInterrupt:
        print("runwasm: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `runwasm image ls | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except USER_ERRORS as err:  # a command's own failure the handler did not word: still one line
        from runwasm.oci.image_cli import user_message

        print(f"runwasm: {user_message(err)}", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    raise SystemExit(main())
