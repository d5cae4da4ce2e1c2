"""Command-line parsing for the shim binary, following Go's ``flag`` package.

containerd builds argv as flags first, then an action word (``start``/``delete``), or a lone
``-info``/``-v``. Accepted forms: ``-name value``, ``-name=value``, ``--name value``; boolean
flags take no separate value but accept ``-debug=true``. Parsing stops at the first non-flag
word. Unknown flags are tolerated (ignored, with their value if they look like ``-x value``
for a known value flag of upstream's shim), so a newer containerd never breaks an older shim.
"""

from __future__ import annotations

from dataclasses import dataclass, field

_VALUE_FLAGS = {"namespace", "id", "address", "publish-binary", "bundle", "socket", "debug-socket"}
_BOOL_FLAGS = {"debug", "v", "version", "info"}


@dataclass(frozen=True, slots=True)
class Flags:
    """containerd's command line for the shim binary, parsed (flags before the action word)."""

    namespace: str = ""
    id: str = ""
    address: str = ""
    publish_binary: str = ""
    bundle: str = ""
    socket: str = ""
    debug: bool = False
    version: bool = False
    info: bool = False
    action: str = ""
    rest: tuple[str, ...] = ()
    unknown: tuple[str, ...] = field(default=())


def _truthy(text: str) -> bool:
    return text.lower() in ("1", "t", "true")


def parse(argv: list[str]) -> Flags:
    """Parse argv (without the program name)."""
    values: dict[str, str] = {}
    bools: dict[str, bool] = {}
    unknown: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            i += 1
            break
        if not arg.startswith("-") or arg == "-":
            break
        name = arg.lstrip("-")
        name, eq, inline = name.partition("=")
        if name in _BOOL_FLAGS:
            bools[name] = _truthy(inline) if eq else True
        elif name in _VALUE_FLAGS:
            if eq:
                values[name] = inline
            elif i + 1 < len(argv):
                i += 1
                values[name] = argv[i]
            else:
                unknown.append(arg)
        else:
            unknown.append(arg)
        i += 1
    rest = argv[i:]
    return Flags(
        namespace=values.get("namespace", ""),
        id=values.get("id", ""),
        address=values.get("address", ""),
        publish_binary=values.get("publish-binary", ""),
        bundle=values.get("bundle", ""),
        socket=values.get("socket", ""),
        debug=bools.get("debug", False),
        version=bools.get("v", False) or bools.get("version", False),
        info=bools.get("info", False),
        action=rest[0] if rest else "",
        rest=tuple(rest[1:]),
        unknown=tuple(unknown),
    )
