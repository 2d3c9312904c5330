"""``leashed doctor``: prove the leash on this machine, live, scenario by scenario.

For each available scenario a sacrificial parent starts leashed children and grandchildren,
is SIGKILLed, and what it left alive is counted (by a marker in the environment) and timed.
"""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
import textwrap
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import __version__, _procfs
from ._console import say
from ._platform import IS_LINUX, capabilities

MARKER_VAR = "LEASHED_DOCTOR_MARKER"
DOCTOR_GRACE_S = 0.5
READY_TIMEOUT_S = 10.0
REAP_TIMEOUT_S = 5.0
#: The doctor's scenarios, in order, and the mechanism each one proves.
SCENARIOS = {
    "direct": "direct",
    "tree": "supervisor",
    "grace": "supervisor",
    "guardian": "guardian",
}

#: The sacrificial parent: spawns leashed children (one of them from a worker thread that
#: exits at once, the case PDEATHSIG alone gets wrong), says "ready", waits to be killed.
_PARENT_CODE = textwrap.dedent(
    """
    import sys, threading, time
    import leashed

    scenario, grace = sys.argv[1], float(sys.argv[2])
    TREE = "sleep 300 & sleep 300 & (setsid sleep 300 &); wait"
    GRACE = "sleep 300 & (trap '' TERM; exec sleep 300) & wait"
    procs = []
    def spawn(argv, **options):
        procs.append(leashed.Popen(argv, **options))
    if scenario in ("direct", "guardian"):
        options = {"mechanism": "guardian"} if scenario == "guardian" else {}
        spawn(["sleep", "300"], **options)
        spawn(["sleep", "300"], **options)
        worker = threading.Thread(target=spawn, args=(["sleep", "300"],), kwargs=options)
        worker.start()
        worker.join()
    elif scenario == "tree":
        spawn(["sh", "-c", TREE], tree=True, mechanism="supervisor")
    elif scenario == "grace":
        spawn(["sh", "-c", GRACE], tree=True, grace=grace, mechanism="supervisor")
    print("ready", flush=True)
    time.sleep(300)
    """
)

#: Per scenario: (processes expected in total, of which `sleep`s), the parent not counted.
_EXPECTED = {
    "direct": (3, 3),
    "guardian": (6, 3),  # three targets and their three guardians
    "tree": (6, 3),  # front, supervisor, sh, two sleeps and a setsid'd sleep
    "grace": (5, 2),  # front, supervisor, sh, a sleep and a sleep that ignores SIGTERM
}

_SHORT_DESCRIPTION = {
    "direct": "children, one spawned by a thread that exits",
    "guardian": "children, one spawned by a thread that exits",
    "tree": "sh with 2 sleeps and a setsid'd sleep",
    "grace": "sh with a sleep and a TERM-ignoring sleep",
}


@dataclass
class ScenarioResult:
    """What the doctor saw for one scenario."""

    name: str
    available: bool
    mechanism: str
    how: str
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
            "name": self.name,
            "available": self.available,
            "ok": self.ok,
            "mechanism": self.mechanism,
            "how": self.how,
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
    """Run every available scenario live; print a table (or JSON); 0 only if nothing survived."""
    caps = capabilities()
    if not IS_LINUX:
        return _cannot_prove(
            "leashed doctor finds the processes it started through /proc, which this platform "
            f"({sys.platform}) lacks; see leashed.capabilities() for what it guarantees",
            as_json=as_json,
        )
    if caps["helper"]["error"] is not None:
        return _cannot_prove(caps["helper"]["error"], as_json=as_json)
    mechanisms: dict[str, dict[str, Any]] = caps["mechanisms"]
    results = []
    for name, mechanism in SCENARIOS.items():
        info = mechanisms.get(mechanism)
        if info is None:
            continue
        result = ScenarioResult(
            name=name,
            available=bool(info["available"]),
            mechanism=mechanism,
            how=str(info["how"]),
            whole_tree=bool(info["whole_tree"]) and name != "direct" and name != "guardian",
            scenario=_scenario(name),
            notes=list(info.get("notes", [])),
        )
        if result.available:
            _prove(result)
        results.append(result)
    ok = all(r.ok for r in results) and any(r.available for r in results)
    if as_json:
        print(json.dumps(_report(caps, results, ok), indent=2))
    else:
        print(_table(caps, results, ok))
    return 0 if ok else 1


def _cannot_prove(message: str, *, as_json: bool) -> int:
    """Say why no scenario can run here; exit status 1."""
    if as_json:
        print(json.dumps({"ok": False, "platform": sys.platform, "error": message}))
    else:
        say(message)
    return 1


def _scenario(name: str) -> str:
    """What the scenario called ``name`` starts, in a few words."""
    _total, sleeps = _EXPECTED.get(name, (0, 0))
    if name in ("direct", "guardian"):
        return f"{sleeps} sleep {_SHORT_DESCRIPTION[name]}"
    return _SHORT_DESCRIPTION.get(name, "")


def _prove(result: ScenarioResult) -> None:
    """Start the sacrificial parent, SIGKILL it once all is running, time the clean-up."""
    marker = uuid.uuid4().hex
    expected_total, expected_sleeps = _EXPECTED[result.name]
    result.expected = expected_total
    grace = DOCTOR_GRACE_S if result.name == "grace" else 0.0
    parent = subprocess.Popen(
        [sys.executable, "-c", _PARENT_CODE, result.name, str(grace)],
        env=_parent_env(marker),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        result.error = _wait_ready(parent)
        if result.error is None:
            result.started = _wait_started(marker, parent.pid, expected_total, expected_sleeps)
            if result.started < expected_total:
                result.error = f"only {result.started} of {expected_total} processes started"
        started_at = time.monotonic()
        parent.kill()
        parent.wait()
        survivors = _wait_gone(marker, REAP_TIMEOUT_S + grace)
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
        _procfs.kill_marked(MARKER_VAR, marker)


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


def _wait_started(marker: str, parent: int, total: int, sleeps: int) -> int:
    """Wait until every expected process runs; return how many marked processes there are."""

    def all_started() -> list[int]:
        pids = _procfs.pids_with_env(MARKER_VAR, marker, exclude={parent})
        asleep = sum(1 for pid in pids if _procfs.command_name(pid) == "sleep")
        return pids if len(pids) >= total and asleep >= sleeps else []

    _procfs.poll_until(all_started, READY_TIMEOUT_S, interval=0.005)
    return len(_procfs.pids_with_env(MARKER_VAR, marker, exclude={parent}))


def _wait_gone(marker: str, timeout: float) -> list[int]:
    """The marked processes still alive after ``timeout`` (empty as soon as none is)."""
    _procfs.poll_until(
        lambda: not _procfs.pids_with_env(MARKER_VAR, marker), timeout, interval=0.002
    )
    return _procfs.pids_with_env(MARKER_VAR, marker)


def _report(caps: dict[str, Any], results: list[ScenarioResult], ok: bool) -> dict[str, Any]:
    return {
        "ok": ok,
        "leashed": __version__,
        "platform": caps["platform"],
        "helper": caps["helper"],
        "direct_path": caps.get("direct_path"),
        "grace_s": DOCTOR_GRACE_S,
        "scenarios": [r.as_dict() for r in results],
    }


def _heading(caps: dict[str, Any]) -> list[str]:
    """The table's first lines: versions, the helper, how the direct mechanism spawns."""
    helper = caps.get("helper") or {}
    return [
        f"leashed {__version__} on {caps['platform']}, leashed-helper "
        f"{helper.get('version') or '-'} {helper.get('build') or ''} "
        f"({helper.get('path') or 'not installed'})".replace("  ", " "),
        f"direct mechanism spawns: {caps.get('direct_path') or 'preexec_fn fallback'}",
        "each scenario: a parent process starts leashed processes, is SIGKILLed, and we count "
        "what is left",
        "",
    ]


def _table(caps: dict[str, Any], results: list[ScenarioResult], ok: bool) -> str:
    lines = _heading(caps)
    header = [
        "scenario",
        "mechanism",
        "processes",
        "survivors",
        "time to reap",
        "processes started",
    ]
    rows = [header]
    for r in results:
        if not r.available:
            rows.append(
                [
                    r.name,
                    r.mechanism,
                    "-",
                    "-",
                    "unavailable",
                    "; ".join(r.notes) or "not offered on this machine",
                ]
            )
            continue
        reap = f"{r.reap_ms:.1f} ms" if r.reap_ms is not None else "-"
        if r.survivors:
            reap = f"> {REAP_TIMEOUT_S + (DOCTOR_GRACE_S if r.name == 'grace' else 0):g} s"
        scenario = r.scenario
        if r.name == "grace":
            scenario += f" (grace {DOCTOR_GRACE_S:g} s)"
        if r.error:
            scenario = f"ERROR: {r.error}"
        rows.append(
            [
                r.name,
                r.mechanism,
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
    lines += ["", _verdict(results, ok)]
    return "\n".join(lines)


def _verdict(results: list[ScenarioResult], ok: bool) -> str:
    """The table's last line: OK, or FAIL naming what survived."""
    tested = [r for r in results if r.available]
    if ok:
        return (
            f"OK: nothing survived its SIGKILLed parent in {len(tested)} of {len(results)} "
            "scenarios" + ("" if len(tested) == len(results) else " (the others are unavailable)")
        )
    bad = [r.name for r in tested if not r.ok]
    total = sum(len(r.survivors) for r in tested)
    return f"FAIL: {', '.join(bad) or 'no scenario could be tested'}" + (
        f": {total} process(es) outlived their parent (killed since)" if total else ""
    )
