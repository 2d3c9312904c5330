"""``leashed doctor``: prove the leash on this machine, live, mode by mode.

For each available mode a sacrificial parent starts leashed children and grandchildren,
is SIGKILLed, and what it left alive is counted (by a marker in the environment) and timed.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import __version__
from ._cli import _say, _state
from ._options import IS_LINUX

MARKER_VAR = "LEASHED_DOCTOR_MARKER"
DOCTOR_GRACE_S = 0.5
READY_TIMEOUT_S = 10.0
REAP_TIMEOUT_S = 5.0
MODE_ORDER = ("direct", "tree", "grace", "guardian")

#: The sacrificial parent: spawns leashed children (one of them from a worker thread that
#: exits at once, the case PDEATHSIG alone gets wrong), says "ready", waits to be killed.
_PARENT_CODE = textwrap.dedent(
    """
    import sys, threading, time
    import leashed

    mode, grace = sys.argv[1], float(sys.argv[2])
    TREE = "sleep 300 & sleep 300 & (setsid sleep 300 &); wait"
    GRACE = "sleep 300 & (trap '' TERM; exec sleep 300) & wait"
    procs = []
    def spawn(argv, **options):
        procs.append(leashed.Popen(argv, **options))
    if mode in ("direct", "guardian"):
        options = {"mechanism": "guardian"} if mode == "guardian" else {}
        spawn(["sleep", "300"], **options)
        spawn(["sleep", "300"], **options)
        worker = threading.Thread(target=spawn, args=(["sleep", "300"],), kwargs=options)
        worker.start()
        worker.join()
    elif mode == "tree":
        spawn(["sh", "-c", TREE], tree=True)
    elif mode == "grace":
        spawn(["sh", "-c", GRACE], tree=True, grace=grace)
    print("ready", flush=True)
    time.sleep(300)
    """
)

#: Per mode: (processes expected in total, of which `sleep`s), the parent not counted.
_EXPECTED = {
    "direct": (3, 3),
    "guardian": (6, 3),  # three targets and their three guardians
    "tree": (5, 3),  # supervisor, sh, two sleeps and a setsid'd sleep
    "grace": (4, 2),  # supervisor, sh, a sleep and a sleep that ignores SIGTERM
}

_SHORT_DESCRIPTION = {
    "direct": "children, one spawned by a thread that exits",
    "guardian": "children, one spawned by a thread that exits",
    "tree": "sh with 2 sleeps and a setsid'd sleep",
    "grace": "sh with a sleep and a TERM-ignoring sleep",
}


@dataclass
class ModeResult:
    """What the doctor saw for one mode."""

    mode: str
    available: bool
    mechanism: str
    whole_tree: bool
    scenario: str
    started: int = 0
    expected: int = 0
    survivors: list[int] = field(default_factory=list)
    reap_ms: float | None = None
    error: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        if not self.available:
            return True
        return self.error is None and not self.survivors

    def as_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "available": self.available,
            "ok": self.ok,
            "mechanism": self.mechanism,
            "whole_tree": self.whole_tree,
            "scenario": self.scenario,
            "processes_started": self.started,
            "processes_expected": self.expected,
            "survivors": len(self.survivors),
            "survivor_pids": self.survivors,
            "time_to_reap_ms": None if self.reap_ms is None else round(self.reap_ms, 1),
            "error": self.error,
            "notes": self.notes,
        }


def doctor(*, as_json: bool = False) -> int:
    """Run every available mode live; print a table (or JSON); 0 only if nothing survived."""
    from ._capabilities import capabilities

    caps = capabilities()
    if not IS_LINUX:
        message = (
            "leashed doctor finds the processes it started through /proc, which this platform "
            f"({sys.platform}) lacks; see leashed.capabilities() for what it guarantees"
        )
        if as_json:
            print(json.dumps({"ok": False, "platform": sys.platform, "error": message}))
        else:
            _say(message)
        return 1
    modes: dict[str, dict[str, Any]] = caps["modes"]
    results = []
    for name in [m for m in MODE_ORDER if m in modes] + [m for m in modes if m not in MODE_ORDER]:
        info = modes[name]
        result = ModeResult(
            mode=name,
            available=bool(info["available"]),
            mechanism=str(info["mechanism"]),
            whole_tree=bool(info["whole_tree"]),
            scenario=_scenario(name),
            notes=list(info.get("notes", [])),
        )
        if result.available and name in _EXPECTED:
            _prove(result)
        elif result.available:
            result.error = "no live test for this mode"
        results.append(result)
    ok = all(r.ok for r in results) and any(r.available for r in results)
    if as_json:
        print(json.dumps(_report(caps, results, ok), indent=2))
    else:
        print(_table(caps, results, ok))
    return 0 if ok else 1


def _scenario(mode: str) -> str:
    _total, sleeps = _EXPECTED.get(mode, (0, 0))
    if mode in ("direct", "guardian"):
        return f"{sleeps} sleep {_SHORT_DESCRIPTION[mode]}"
    return _SHORT_DESCRIPTION.get(mode, "")


def _prove(result: ModeResult) -> None:
    """Start the sacrificial parent, SIGKILL it once all is running, time the clean-up."""
    marker = uuid.uuid4().hex
    needle = f"{MARKER_VAR}={marker}".encode()
    expected_total, expected_sleeps = _EXPECTED[result.mode]
    result.expected = expected_total
    grace = DOCTOR_GRACE_S if result.mode == "grace" else 0.0
    parent = subprocess.Popen(
        [sys.executable, "-c", _PARENT_CODE, result.mode, str(grace)],
        env=_parent_env(marker),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        result.error = _wait_ready(parent)
        if result.error is None:
            result.started = _wait_started(needle, parent.pid, expected_total, expected_sleeps)
            if result.started < expected_total:
                result.error = f"only {result.started} of {expected_total} processes started"
        started_at = time.monotonic()
        parent.kill()
        parent.wait()
        survivors = _wait_gone(needle, REAP_TIMEOUT_S + grace)
        if survivors:
            result.survivors = survivors
        elif result.error is None:
            result.reap_ms = (time.monotonic() - started_at) * 1000.0
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        for stream in (parent.stdout, parent.stderr):
            if stream is not None:
                stream.close()
        _kill_marked(needle)


def _parent_env(marker: str) -> dict[str, str]:
    env = dict(os.environ)
    env[MARKER_VAR] = marker
    package_root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    return env


def _wait_ready(parent: subprocess.Popen[bytes]) -> str | None:
    """None once the parent printed "ready", else what went wrong."""
    assert parent.stdout is not None and parent.stderr is not None
    with selectors.DefaultSelector() as selector:
        selector.register(parent.stdout, selectors.EVENT_READ)
        if not selector.select(READY_TIMEOUT_S):
            return f"the test parent was not ready after {READY_TIMEOUT_S:g} s"
    line = parent.stdout.readline()
    if line.strip() == b"ready":
        return None
    parent.kill()
    parent.wait()
    lines = parent.stderr.read().decode(errors="replace").strip().splitlines()
    return f"the test parent failed: {lines[-1] if lines else f'exit {parent.returncode}'}"


def _wait_started(needle: bytes, parent: int, total: int, sleeps: int) -> int:
    """Wait until every expected process runs; return how many marked processes there are."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        pids = _marked(needle, exclude=parent)
        asleep = sum(1 for pid in pids if _comm(pid) == "sleep")
        if (len(pids) >= total and asleep >= sleeps) or time.monotonic() >= deadline:
            return len(pids)
        time.sleep(0.005)


def _wait_gone(needle: bytes, timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while True:
        left = _marked(needle)
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.002)


def _kill_marked(needle: bytes) -> None:
    """SIGKILL what is left, by pid, re-checking the marker through a pidfd first."""
    for _round in range(20):
        pids = _marked(needle)
        if not pids:
            return
        for pid in pids:
            _kill_if_marked(pid, needle)
        time.sleep(0.05)


def _kill_if_marked(pid: int, needle: bytes) -> None:
    if not sys.platform.startswith("linux"):
        return  # the doctor runs on Linux only: it finds its processes through /proc
    try:
        pidfd: int | None = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    except OSError:  # no pidfd on this kernel: the marker check is the identity check
        pidfd = None
    try:
        if not _has_marker(pid, needle):
            return
        if pidfd is not None:
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)
    except OSError:
        pass
    finally:
        if pidfd is not None:
            os.close(pidfd)


def _marked(needle: bytes, exclude: int | None = None) -> list[int]:
    """Live (not zombie) processes whose environment holds ``needle``."""
    own = os.getpid()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        if pid in (own, exclude):
            continue
        if _has_marker(pid, needle) and _state(pid) not in ("Z", "X", None):
            found.append(pid)
    return found


def _has_marker(pid: int, needle: bytes) -> bool:
    try:
        return needle in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _report(caps: dict[str, Any], results: list[ModeResult], ok: bool) -> dict[str, Any]:
    return {
        "ok": ok,
        "leashed": __version__,
        "platform": caps["platform"],
        "helper": caps["helper"],
        "grace_s": DOCTOR_GRACE_S,
        "modes": [r.as_dict() for r in results],
    }


def _short_mechanism(mechanism: str) -> str:
    return mechanism.split(":", 1)[0].strip()


def _table(caps: dict[str, Any], results: list[ModeResult], ok: bool) -> str:
    helper = caps.get("helper") or {}
    lines = [
        f"leashed {__version__} on {caps['platform']}, leashed-helper "
        f"{helper.get('version') or '-'} {helper.get('build') or ''} "
        f"({helper.get('path') or 'not installed'})".replace("  ", " "),
        "each mode: a parent process starts leashed processes, is SIGKILLed, and we count "
        "what is left",
        "",
    ]
    header = ["mode", "mechanism", "processes", "survivors", "time to reap", "scenario"]
    rows = [header]
    for r in results:
        if not r.available:
            rows.append(
                [
                    r.mode,
                    _short_mechanism(r.mechanism),
                    "-",
                    "-",
                    "unavailable",
                    "; ".join(r.notes) or "not offered on this machine",
                ]
            )
            continue
        reap = f"{r.reap_ms:.1f} ms" if r.reap_ms is not None else "-"
        if r.survivors:
            reap = f"> {REAP_TIMEOUT_S + (DOCTOR_GRACE_S if r.mode == 'grace' else 0):g} s"
        scenario = r.scenario
        if r.mode == "grace":
            scenario += f" (grace {DOCTOR_GRACE_S:g} s)"
        if r.error:
            scenario = f"ERROR: {r.error}"
        rows.append(
            [
                r.mode,
                _short_mechanism(r.mechanism),
                str(r.started),
                str(len(r.survivors)),
                reap,
                scenario,
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    right = {2, 3, 4}
    for row in rows:
        cells = [
            row[i].rjust(widths[i]) if i in right else row[i].ljust(widths[i])
            for i in range(len(widths))
        ]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    lines.append("")
    tested = [r for r in results if r.available]
    if ok:
        lines.append(
            f"OK: nothing survived its SIGKILLed parent in {len(tested)} of {len(results)} "
            "modes" + ("" if len(tested) == len(results) else " (the others are unavailable)")
        )
    else:
        bad = [r.mode for r in tested if not r.ok]
        total = sum(len(r.survivors) for r in tested)
        lines.append(
            f"FAIL: {', '.join(bad) or 'no mode could be tested'}"
            + (f": {total} process(es) outlived their parent (killed since)" if total else "")
        )
    return "\n".join(lines)
