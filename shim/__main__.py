"""``containerd-shim-runwasm-v1``: dispatch on containerd's argv shapes.

``start``, ``delete`` and ``-info`` run once per container, so this module imports only the
stdlib and the small modules those paths need; the server (``_runwasm_serve``, an action word
containerd never sends) imports the rest lazily.
"""

from __future__ import annotations

import os
import sys


def _write(data: bytes) -> None:
    os.write(1, data) if len(data) < 65536 else sys.stdout.buffer.write(data)
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    from runwasm.shim.common import lazy_imports

    lazy_imports.install()  # before anything imports protobuf: the template's boot, the server
    if args == ["_runwasm_template"]:  # as client.launch spawns it: before `flags` (dataclasses),
        import gc  # which its dccache speeds up

        gc.disable()  # no collections during the template's boot (template_main enables them again)
        from runwasm.shim.template.process import template_main

        return template_main()
    from runwasm.shim.entry import flags as flagmod

    flags = flagmod.parse(args)
    if flags.action == "_runwasm_serve":
        from runwasm.shim.server.server_main import serve_main

        return serve_main()
    if flags.action == "_runwasm_template":  # shim/template/: the node-wide warm template
        from runwasm.shim.template.process import template_main

        return template_main()
    if flags.version:
        from runwasm.shim.common.naming import RUNTIME_NAME
        from runwasm.shim.common.version import REVISION, VERSION

        print(f"containerd-shim-runwasm-v1:\n  Version:  {VERSION}\n  Revision: {REVISION}\n  Runtime:  {RUNTIME_NAME}")
        return 0
    if flags.info:
        from runwasm.shim.entry import bootstrap, info

        _write(info.run(bootstrap.read_stdin()))
        return 0
    if flags.action == "start":
        from runwasm.shim.entry import bootstrap, start

        try:
            out, code = start.run(flags, bootstrap.read_stdin())
        except (start.StartError, OSError) as err:
            sys.stderr.write(f"runwasm: {err}\n")
            return 1
        _write(out)
        return code
    if flags.action == "delete":
        from runwasm.shim.entry import delete

        _write(delete.run(flags))
        return 0
    sys.stderr.write(
        f"runwasm: unknown action {flags.action!r}: expected start, delete, -info or -v "
        "(this binary is meant to be run by containerd)\n")
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
