"""What the cgroup mechanism's tests share: its watchers, and leash cgroups left behind."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

from support import start_time

_LEASH_DIR = re.compile(r"leashed-(\d+)-(\d+)$")


def cgroup2_mount() -> Path | None:
    """Where the cgroup v2 hierarchy is mounted, or None."""
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        sep = fields.index("-")
        if fields[sep + 1] == "cgroup2":
            return Path(fields[4])
    return None


def watchers_of(pid: int) -> list[int]:
    """The pids of the cgroup watchers watching ``pid`` (helper mode watcher, -w pid),
    once armed and detached (a session of their own; not their launcher)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            if os.getsid(int(entry.name)) != int(entry.name):
                continue
        except OSError:
            continue
        if len(argv) > 4 and argv[1] == b"watcher" and b"-w" in argv:
            if argv[argv.index(b"-w") + 1] == str(pid).encode():
                found.append(int(entry.name))
    return found


def own_watchers() -> list[int]:
    """This process's watchers: they end after it does."""
    return watchers_of(os.getpid())


def leash_dirs(root: Path | None = None, depth: int = 5) -> list[Path]:
    """Every leashed-PID-START cgroup below ``root`` (the mount), ``depth`` levels deep
    (nested ones too: a leashed target's own, below its tN)."""
    root = root or cgroup2_mount()
    if root is None:
        return []
    found: list[Path] = []
    try:
        entries = [e for e in root.iterdir() if e.is_dir()]
    except OSError:
        return found
    for entry in entries:
        if _LEASH_DIR.match(entry.name):
            found.append(entry)
        if depth > 1:
            found += leash_dirs(entry, depth - 1)
    return found


def _orphaned(path: Path) -> bool:
    match = _LEASH_DIR.match(path.name)
    assert match is not None
    pid, start = int(match.group(1)), int(match.group(2))
    return start_time(pid) != start


def leftover_leash_cgroups(timeout: float = 5.0) -> list[str]:
    """Leash cgroups whose parent process is gone, still there after ``timeout`` (its
    watcher may still be in a grace period)."""
    deadline = time.monotonic() + timeout
    while True:
        left = [str(p) for p in leash_dirs() if p.exists() and _orphaned(p)]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


def populated(cgroup: Path) -> bool:
    """Whether any process is in ``cgroup`` or below it."""
    return "populated 1" in (cgroup / "cgroup.events").read_text()
