"""leashed's own Python cost per Popen, with no process at all: fork_exec is replaced by
a fake that returns this process's pid (Popen reads EOF on its error pipe; wait() gets
ECHILD and returncode 0), for plain subprocess.Popen, leashed's in-process spawn and its
helper path alike. Blocks of calls interleaved way after way; the median CPU time per
call of each way and its excess over plain.

    python benchmarks/overhead.py [--blocks 40] [--calls 300] [--json PATH]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import types
from collections.abc import Callable
from typing import Any

import _common

ARGV = ["/bin/true"]


def _fake(*_args: Any) -> int:
    return os.getpid()


def _install_fakes() -> None:
    """The fake in every fork_exec's place, the in-process path still taken."""
    from leashed import _inproc_spawn

    if hasattr(subprocess, "_fork_exec"):
        subprocess._fork_exec = _fake  # type: ignore[attr-defined]
    else:  # 3.10
        subprocess._posixsubprocess = types.SimpleNamespace(fork_exec=_fake)  # type: ignore[attr-defined]
    _inproc_spawn._STDLIB_FORK_EXEC = _fake
    if _inproc_spawn._inproc is not None:
        real = _inproc_spawn._inproc
        _inproc_spawn._inproc = types.SimpleNamespace(  # type: ignore[assignment]
            fork_exec=_fake, set_main_thread=real.set_main_thread
        )
        _inproc_spawn._replacing.cache_clear()


def measure(blocks: int, calls: int) -> dict[str, Any]:
    leashed = _common.import_leashed()
    from leashed import _inproc_spawn

    in_process = _inproc_spawn.direct_path() == _inproc_spawn.IN_PROCESS
    machine = _common.machine()  # before the fakes: it spawns the helper
    _install_fakes()
    ways: dict[str, Callable[[], Any]] = {
        "subprocess.Popen": lambda: subprocess.Popen(ARGV).wait(),
        "leashed.Popen": lambda: leashed.Popen(ARGV).wait(),
        "leashed.Popen (helper path)": lambda: _common.through_helper(
            lambda: leashed.Popen(ARGV)
        ).wait(),
    }
    for f in ways.values():  # warm-up
        for _ in range(200):
            f()
    cpu: dict[str, list[float]] = {k: [] for k in ways}
    for _ in range(blocks):
        for name, f in ways.items():
            start = time.process_time()
            for _ in range(calls):
                f()
            cpu[name].append((time.process_time() - start) / calls * 1e6)
    median = {k: statistics.median(v) for k, v in cpu.items()}
    return {
        "machine": machine,
        "python": sys.version.split()[0],
        "direct_path": "in-process" if in_process else "helper",
        "blocks": blocks,
        "calls": calls,
        "cpu_us_median": median,
        "cpu_us_over_plain": {k: v - median["subprocess.Popen"] for k, v in median.items()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--blocks", type=int, default=40)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    result = measure(args.blocks, args.calls)
    print(f"Python {result['python']}, direct path {result['direct_path']}; CPU us per Popen")
    for name, us in result["cpu_us_median"].items():
        print(f"  {name:<30} {us:7.1f} us  (+{result['cpu_us_over_plain'][name]:5.1f} us)")
    if args.json:
        _common.save_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
