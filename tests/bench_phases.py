"""Where the time of one ``ctr run --rm`` goes: a per-phase timeline, runwasm against runc.

Run: ``.venv/bin/python -m tests.bench_phases [N] [--flavour 1.6|2.3]`` (root, ``perf`` on PATH).
A private containerd with ``[debug] level = "debug"`` and a private warm template; after two
warm-ups, N interleaved runs each of hello.wasm via runwasm, busybox ``/bin/true`` via runc and
via runwasm. ``perf record -k mono -a`` of the scheduler's exec/fork/exit tracepoints gives
every process boundary (containerd's ``shim start``/``shim delete`` execs and their exits, the
template's forks, runc's execs, the workload); the shim's own debug log lines (one per RPC as it
arrives, on the bundle's log FIFO, copied into containerd's log) and containerd's give the
RPCs. Each run's events are printed relative to the moment ``ctr`` was exec'd, then the median
of each named phase over the N runs. No figure is asserted; the machine is shared, so compare
the cases of one run, never absolute times across runs.
"""

from __future__ import annotations

import datetime
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WASM = ROOT / "fixtures" / "build" / "wasm"
EVENT = re.compile(r"^\s*(?P<comm>.+?)\s+(?P<pid>\d+)/(?P<tid>\d+)\s+(?P<ts>[\d.]+):\s+sched:(?P<kind>\w+):\s+(?P<rest>.*)$")
LOGTIME = re.compile(r'time="([^"]+)"')


def _mono_offset() -> float:
    """wall clock - CLOCK_MONOTONIC (to put log lines on perf's -k mono time line)."""
    return time.time() - time.monotonic()


def _parse_perf(path: str) -> list[tuple[float, str, int, str, str]]:
    out = subprocess.run(["perf", "script", "-F", "comm,pid,tid,time,event,trace", "-i", path], capture_output=True, text=True).stdout
    events = []
    for line in out.splitlines():
        m = EVENT.match(line)
        if m:
            if m["kind"] == "sched_process_exit" and m["pid"] != m["tid"]:
                continue  # a thread
            events.append((float(m["ts"]), m["kind"], int(m["pid"]), m["comm"].strip(), m["rest"]))
    return events


def _log_lines(path: Path, offset: float, since: int) -> tuple[list[tuple[float, str]], int]:
    data = path.read_bytes()
    lines = []
    for line in data[since:].decode("utf-8", "replace").splitlines():
        m = LOGTIME.search(line)
        if not m:
            continue
        stamp = m[1].replace("Z", "+00:00")
        if "." in stamp:  # Go prints nanoseconds: fromisoformat takes at most microseconds
            head, frac = stamp.split(".", 1)
            digits = re.match(r"\d+", frac)
            assert digits is not None
            stamp = f"{head}.{digits[0][:6].ljust(6, '0')}{frac[len(digits[0]):]}"
        wall = datetime.datetime.fromisoformat(stamp).timestamp()
        msg = re.search(r'msg="((?:[^"\\]|\\.)*)"', line)
        lines.append((wall - offset, (msg[1] if msg else line)[:110]))
    return lines, len(data)


BOUNDARIES = (  # (name, pattern for runwasm, pattern for runc); each the first match after the previous one
    ("shim start exec", r"^exec .*containerd-shim-run.* \(start\)", None),
    ("shim start exit", r"^exit .*\(start\)", None),
    ("Create begins", r"^log Create ", r"^exec .*/runc "),
    ("TaskCreate forwarded", r"^log event forwarded", None),
    ("Start begins", r"^log Start ", r"^exec .*/runc "),
    ("guest exited", r"^log container .* exited with status", r"^exit true\["),
    ("TaskExit forwarded", r"^log event forwarded", None),
    ("Delete begins", r"^log Delete ", r"^exec .*/runc "),
    ("shim delete exec", r"^exec .*containerd-shim-run.* \(delete\)", None),
    ("shim delete exit", r"^exit .*\(delete\)", None),
    ("ctr exit", r"^exit ctr\[", None),
)
PHASES = ("containerd before `shim start` (container record, snapshot)", "`shim start` exec to exit",
          "start answered -> Create arrives", "Create (until TaskCreate is forwarded)", "-> Start arrives",
          "Start and the guest, until it exits", "exit -> TaskExit forwarded", "-> Delete arrives",
          "Delete, Shutdown -> `shim delete` exec", "`shim delete` exec to exit",
          "containerd after `shim delete` (snapshot, records), ctr exits")


def _phases(timeline: list[tuple[float, str]], runc: bool) -> list[float] | None:
    """The phase durations (PHASES, ms) of one run, or None when a boundary is missing."""
    marks = [0.0]
    i = 0
    forwarded = any(text.startswith("log event forwarded") for _t, text in timeline)  # 1.6 logs them, 2.3 not
    for _name, pat, runc_pat in BOUNDARIES:
        pattern = runc_pat if runc and runc_pat else pat
        if pattern == r"^log event forwarded" and not forwarded:
            marks.append(marks[-1])  # the phase is merged into the next one
            continue
        while i < len(timeline) and not re.search(pattern, timeline[i][1]):
            i += 1
        if i == len(timeline):
            return None
        marks.append(timeline[i][0])
        i += 1
    return [b - a for a, b in zip(marks, marks[1:], strict=False)]


def main() -> None:
    from fixtures.images import busybox_image
    from runwasm.shim.template import key, process
    from tests.integration.daemon import RUNC_RUNTIME, RUNWASM_RUNTIME, Containerd
    from tests.integration.images import pack_wasm_image

    if shutil.which("perf") is None:
        print("bench_phases: `perf` not found (Debian: linux-perf): it records the exec/fork/exit tracepoints")
        return
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    n = int(args[0]) if args else 5
    flavour = "2.3" if "--flavour=2.3" in sys.argv[1:] else "1.6"
    tpl_dir = tempfile.mkdtemp(prefix="rwp-", dir="/run")
    os.environ[key.ENV_DIR] = tpl_dir
    perf_out = os.path.join(tpl_dir, "perf.data")
    try:
        with Containerd(namespace=f"rwph{os.getpid()}", flavour=flavour,
                        extra_config='[debug]\n  level = "debug"\n') as d, tempfile.TemporaryDirectory() as tmp:
            wasm_ref = pack_wasm_image(WASM / "hello.wasm", Path(tmp) / "hello.tar", "runwasm.bench/hello:1")
            d.ctr("images", "import", "--all-platforms", str(Path(tmp) / "hello.tar"))
            bb_ref = "runwasm.bench/busybox:1"
            busybox_image(Path(tmp) / "busybox.tar", bb_ref)
            d.ctr("images", "import", str(Path(tmp) / "busybox.tar"))
            env = d.env()
            cases = [("runwasm hello.wasm", wasm_ref, RUNWASM_RUNTIME, ()),
                     ("runc busybox /bin/true", bb_ref, RUNC_RUNTIME, ("/bin/true",)),
                     ("runwasm busybox /bin/true", bb_ref, RUNWASM_RUNTIME, ("/bin/true",)),
                     ("runwasm hello.wasm, no template", wasm_ref, RUNWASM_RUNTIME, ())]
            seq = 0
            for _ in range(2):
                for _name, ref, runtime, cargs in cases:
                    seq += 1
                    subprocess.run(d.ctr_argv(*d.run_args(ref, f"w{seq}", *cargs, runtime=runtime)), env=env,
                                   capture_output=True, timeout=60)
            perf = subprocess.Popen(["perf", "record", "-q", "-k", "mono", "-a", "-o", perf_out, "-e",
                                     "sched:sched_process_exec,sched:sched_process_fork,sched:sched_process_exit"],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1.0)
            offset = _mono_offset()
            runs: list[tuple[str, float, float, int]] = []
            templates: set[int] = {int(Path(tpl_dir, f).read_text()) for f in os.listdir(tpl_dir)
                                   if f.endswith(".pid")}
            log_at = d.log_path.stat().st_size
            for _ in range(n):
                for name, ref, runtime, cargs in cases:
                    seq += 1
                    if name.endswith("no template"):  # the first container after boot
                        process.stop_templates(tpl_dir)
                    t0 = time.monotonic()
                    p = subprocess.Popen(d.ctr_argv(*d.run_args(ref, f"r{seq}", *cargs, runtime=runtime)), env=env,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    p.wait(60)
                    t1 = time.monotonic()
                    if name.endswith("no template"):
                        time.sleep(3.0)  # the new template's imports
                    templates.update(int(Path(tpl_dir, f).read_text()) for f in os.listdir(tpl_dir)
                                     if f.endswith(".pid"))
                    runs.append((name, t0, t1, p.pid))
                    time.sleep(0.3)
            time.sleep(0.5)
            perf.send_signal(2)
            perf.wait(30)
            logs, _ = _log_lines(d.log_path, offset, log_at)
            events = _parse_perf(perf_out)
            tpl = sorted(templates)
            cd_pid = d.proc.pid if d.proc else 0
            print(f"containerd {flavour}, n={n}; template pids {tpl}, containerd pid {cd_pid}")
            per_case: dict[str, list[list[float]]] = {}
            shown: set[str] = set()
            for name, t0, t1, ctr_pid in runs:
                tl = _timeline(events, logs, t0, t1, ctr_pid, cd_pid, tpl)
                if name not in shown:
                    shown.add(name)
                    print(f"\n--- {name}: {(t1 - t0) * 1000:.1f} ms")
                    for t, text in tl:
                        print(f"  {t:8.1f}  {text}")
                row = _phases(tl, runc="runc" in name)
                if row is not None:
                    per_case.setdefault(name, []).append(row)
            names = list(per_case)
            print(f"\nmedian phase durations, ms (containerd {flavour}; runs with every boundary seen: "
                  + ", ".join(f"{len(per_case[k])}" for k in names) + ")")
            print("| phase | " + " | ".join(names) + " |")
            print("|---|" + "---|" * len(names))
            for j, phase in enumerate(PHASES):
                print(f"| {phase} | " + " | ".join(f"{statistics.median(r[j] for r in per_case[k]):.1f}"
                                                 for k in names) + " |")
            print("| total (ctr exec to exit) | " + " | ".join(
                f"{statistics.median(sum(r) for r in per_case[k]):.1f}" for k in names) + " |")
    finally:
        process.stop_templates(tpl_dir)
        shutil.rmtree(tpl_dir, ignore_errors=True)


def _timeline(events: list[tuple[float, str, int, str, str]], logs: list[tuple[float, str]], t0: float, t1: float,
              ctr_pid: int, cd_pid: int, tpl: list[int]) -> list[tuple[float, str]]:
    """The events of one run between t0 and t1: processes descended from ctr, containerd or the
    template (threads and other helpers' processes left out), plus the log lines."""
    roots = {ctr_pid, cd_pid, *tpl}
    tree: set[int] = set(roots)
    shim_action: dict[int, str] = {}
    parent: dict[int, int] = {}
    names: dict[int, str] = {}
    out: list[tuple[float, str]] = []
    starts = 0
    for ts, kind, pid, comm, rest in events:
        if ts < t0 - 0.005 or ts > t1 + 0.005:
            if kind == "sched_process_fork" and pid in tree:  # keep the tree complete
                child = int(re.search(r"child_pid=(\d+)", rest)[1])  # type: ignore[index]
                tree.add(child)
            continue
        rel = (ts - t0) * 1000
        if kind == "sched_process_fork":
            child = int(re.search(r"child_pid=(\d+)", rest)[1])  # type: ignore[index]
            if pid in tree:
                tree.add(child)
                parent[child] = pid
                cc = re.search(r"child_comm=(\S+)", rest)[1]  # type: ignore[index]
                if pid in tpl or pid in names or comm.startswith(("runc", "python")):
                    label = "workload" if names.get(pid) == "zygote-mid" else ""
                    if pid in tpl:
                        names[child] = "template-child"
                    elif names.get(pid) == "template-child":
                        names[child] = "fork_server mid"
                    elif names.get(pid) == "fork_server mid":
                        names[child] = "server"
                    elif names.get(pid) == "server" and "zygote" not in names.values():
                        names[child] = "zygote"
                    elif names.get(pid) == "zygote":
                        names[child] = "zygote-mid"
                    out.append((rel, f"fork {comm}[{pid}]({names.get(pid, '')}) -> {cc}[{child}]"
                                     f"({names.get(child, label)})"))
        elif kind == "sched_process_exec" and pid in tree:
            fn = re.search(r"filename=(\S+)", rest)[1]  # type: ignore[index]
            if "containerd-shim" in fn and pid not in shim_action:
                if parent.get(pid) == cd_pid:
                    starts += 1
                    shim_action[pid] = "start" if starts == 1 else "delete"
                else:
                    shim_action[pid] = "server"
            if "containerd-shim" in fn and pid in shim_action:
                fn += f" ({shim_action[pid]})"
            out.append((rel, f"exec {fn} [{pid}]"))
        elif kind == "sched_process_exit" and pid in tree:
            if comm in ("containerd",) or (comm.startswith("containerd-shim") and pid not in shim_action
                                           and names.get(pid) is None):
                continue  # threads
            label = f" ({shim_action[pid]})" if pid in shim_action else f" ({names[pid]})" if pid in names else ""
            out.append((rel, f"exit {comm}[{pid}]{label}"))
    for ts, msg in logs:
        if t0 - 0.005 <= ts <= t1 + 0.005:
            out.append(((ts - t0) * 1000, f"log {msg}"))
    out.sort()
    return out


if __name__ == "__main__":
    main()
