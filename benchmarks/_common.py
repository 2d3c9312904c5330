"""Shared pieces of the leashed benchmarks: machine facts, parent RSS, markers, cleanup.

Every process a benchmark starts carries a unique marker in its environment
(``LEASHED_BENCH_MARKER=<run>-<n>``), inherited by the helper, the supervisor, the guardian
and the target. Processes are found by that marker in ``/proc`` and ended only by pid,
through a pidfd, after the marker was re-checked on that very pidfd's process.
"""

from __future__ import annotations

import ctypes
import json
import math
import os
import platform
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

REPO = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO / "benchmarks" / "results"
MARKER_ENV = "LEASHED_BENCH_MARKER"
PAGE = os.sysconf("SC_PAGE_SIZE")
PR_SET_CHILD_SUBREAPER = 36
_subreaper = False


def import_leashed() -> Any:
    """Import leashed: installed, or else from this checkout's src/ (development)."""
    try:
        import leashed
    except ImportError:
        sys.path.insert(0, str(REPO / "src"))
        import leashed
    return leashed


def child_env(marker: str | None = None, **extra: str) -> dict[str, str]:
    """An environment for a benchmark child: leashed importable, helper kept, marker set."""
    leashed = import_leashed()
    env = dict(os.environ)
    src = str(Path(leashed.__file__).resolve().parent.parent)
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if src not in paths:
        env["PYTHONPATH"] = os.pathsep.join([src, *paths])
    if marker is not None:
        env[MARKER_ENV] = marker
    env.update(extra)
    return env


def new_marker(prefix: str) -> str:
    """A marker no other run on this machine uses."""
    return f"{prefix}-{os.getpid()}-{uuid.uuid4().hex[:12]}"


# -- statistics ----------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile, ``q`` in [0, 100]."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def summary(values: Sequence[float]) -> dict[str, float]:
    """Median, p90, p99, min, max and count of a sample."""
    return {
        "n": float(len(values)),
        "median": percentile(values, 50),
        "p90": percentile(values, 90),
        "p99": percentile(values, 99),
        "min": min(values) if values else math.nan,
        "max": max(values) if values else math.nan,
    }


# -- the machine ---------------------------------------------------------------------------


def cpu_model() -> str:
    """CPU model name from /proc/cpuinfo."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict[str, Any]:
    """What the figures were measured on, including the helper build."""
    leashed = import_leashed()
    caps = leashed.capabilities()
    mem_total = 0
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem_total = int(line.split()[1]) * 1024
    except OSError:
        pass
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": round(mem_total / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "leashed": getattr(leashed, "__version__", "?"),
        # the helper's version and build, not where this machine keeps it
        "helper": {k: v for k, v in (caps.get("helper") or {}).items() if k != "path"},
        "loadavg_at_start": os.getloadavg(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def through_helper(spawn: Callable[[], T]) -> T:
    """Run ``spawn`` with leashed's in-process spawn switched off: the helper's direct
    mode, the fallback, measured beside it in the same process."""
    from leashed import _inproc_spawn

    saved = _inproc_spawn._inproc
    _inproc_spawn._inproc = None
    try:
        return spawn()
    finally:
        _inproc_spawn._inproc = saved


def helper_banner() -> str:
    """One line naming the helper in use, with a warning if it is not the published build."""
    leashed = import_leashed()
    helper = leashed.capabilities().get("helper") or {}
    line = f"helper: {helper.get('path')} (build {helper.get('build')})"
    line += f"; direct mechanism: {leashed.capabilities().get('direct_path')}"
    if helper.get("build") != "nolibc":
        line += "  ** not the nolibc build: do not publish these figures **"
    return line


# -- memory of this process ----------------------------------------------------------------


def current_rss() -> int:
    """This process's resident set size in bytes."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def grow_rss(target: int) -> bytearray:
    """Grow this process's RSS to about ``target`` bytes with a touched bytearray."""
    need = max(0, target - current_rss())
    ballast = bytearray(need)
    if need:
        ballast[::PAGE] = b"\x01" * len(range(0, need, PAGE))
    return ballast


def parse_size(text: str) -> int:
    """'50M', '2G', '512K' or plain bytes -> bytes."""
    text = text.strip().upper().removesuffix("B")
    units = {"K": 2**10, "M": 2**20, "G": 2**30}
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def format_size(n: float) -> str:
    """Bytes -> '52 MB' / '2.0 GB'."""
    if n >= 2**30:
        return f"{n / 2**30:.1f} GB"
    return f"{n / 2**20:.0f} MB"


# -- processes by marker -------------------------------------------------------------------


def set_child_subreaper() -> None:
    """Adopt orphaned descendants, so their zombies are ours to reap (not init's)."""
    global _subreaper
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")
    _subreaper = True


def proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, ppid) of a process, or None if it is gone (leashed._procfs reads it)."""
    stat = _procfs().read_stat(pid)
    return None if stat is None else (stat.state, stat.ppid)


def _procfs() -> Any:
    """leashed's own /proc reader: one parser of /proc/PID/stat for the whole project."""
    import_leashed()
    import leashed._procfs

    return leashed._procfs


def environ_of(pid: int) -> dict[bytes, bytes] | None:
    """The environment a process was started with, or None if unreadable or gone."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            data = f.read()
    except OSError:
        return None
    env: dict[bytes, bytes] = {}
    for entry in data.split(b"\0"):
        key, sep, value = entry.partition(b"=")
        if sep:
            env[key] = value
    return env


def has_marker(pid: int, marker: str) -> bool:
    """True if ``pid`` is a live (non-zombie) process carrying ``marker``."""
    procfs = _procfs()
    return bool(
        procfs.environ_has(pid, f"{MARKER_ENV}={marker}".encode()) and procfs.is_running(pid)
    )


def marked_pids(marker: str, exclude: Iterable[int] = ()) -> list[int]:
    """Live processes that carry ``marker`` (zombies do not count: they are dead)."""
    found: list[int] = _procfs().pids_with_env(MARKER_ENV, marker, exclude=set(exclude))
    return found


def kill_marked(marker: str, exclude: Iterable[int] = (), rounds: int = 50) -> int:
    """SIGKILL every process with ``marker``, each by pidfd after re-checking its marker.

    Opening the pidfd first pins the process; the marker is then re-read from /proc for
    that pid, so a reused pid is never signalled (leashed._procfs.kill_if_marked).
    Returns how many were killed.
    """
    needle = f"{MARKER_ENV}={marker}".encode()
    killed = 0
    for _ in range(rounds):
        pids = marked_pids(marker, exclude)
        if not pids:
            break
        killed += sum(1 for pid in pids if _procfs().kill_if_marked(pid, needle))
        reap_orphans()
        time.sleep(0.01)
    return killed


def reap_orphans() -> list[tuple[int, int]]:
    """Reap every exited child of ours (adopted orphans included) without blocking.

    Only for a top-level benchmark process whose own children are all accounted for:
    callers collect their Popen objects with ``wait()`` before calling this. Does nothing
    unless :func:`set_child_subreaper` was called (never steal an importer's children).
    """
    reaped: list[tuple[int, int]] = []
    if not _subreaper:
        return reaped
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            break
        reaped.append((pid, status))
    return reaped


def save_json(path: str, results: Any) -> None:
    """Write a benchmark's results (indented JSON) and say where."""
    with open(path, "w") as f:
        json.dump(results, f, indent=1)
    print(f"\nsaved {path}")


def raise_nofile_limit() -> None:
    """Raise RLIMIT_NOFILE to its hard limit (thousands of pidfds)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
