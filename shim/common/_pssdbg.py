"""TEMPORARY probe (not committed)."""
import os, sys
_base = None
def mark(tag: str) -> None:
    d = os.environ.get("RUNWASM_PSSDBG") or _dir
    if not d:
        return
    vals = {}
    with open("/proc/self/smaps_rollup") as f:
        for l in f:
            k, _, v = l.partition(":")
            if v.strip().endswith("kB"):
                vals[k] = int(v.split()[0])
    with open(os.path.join(d, f"{os.getpid()}.log"), "a") as f:
        f.write(f"{tag}: pd={vals['Private_Dirty']} pss={vals['Pss']} rss={vals['Rss']} mods={len(sys.modules)}\n")
def modules(tag: str) -> None:
    d = os.environ.get("RUNWASM_PSSDBG") or _dir
    if d:
        with open(os.path.join(d, f"{os.getpid()}.mods.{tag}"), "w") as f:
            f.write("\n".join(sorted(sys.modules)))
_dir = "/tmp/pssdbg"
