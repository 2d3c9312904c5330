"""Spawn+wait latency of leashed against plain Popen, the preexec_fn idiom and processkit-py.

For each parent RSS (default 50 MB and 2 GB) a fresh worker process grows its RSS with a
touched bytearray, warms every way up, then times ``spawn; wait`` of ``/bin/true`` and of
``python -c pass`` round-robin over the ways (the order rotates every round, so drift and
noise hit every way alike) and reports the median and p90 with ratios to plain Popen.

The ways that force ``fork()`` (the ``preexec_fn`` idiom, processkit) run in rounds of
their own, after the others: a ``fork()`` of a big parent leaves its pages copy-on-write,
and whichever way ran next would pay the parent's page faults. Plain Popen and leashed
stay interleaved round by round.

Ways:
  plain            subprocess.Popen(argv).wait()
  preexec_prctl    subprocess.Popen(argv, preexec_fn=prctl(PR_SET_PDEATHSIG)) - forces fork()
  leashed_direct   leashed.Popen(argv).wait()             (in-process spawn, same pid)
  leashed_helper   the same through the helper's direct mode (the fallback: one more execve)
  leashed_tree     leashed.Popen(argv, tree=True).wait()   (this machine's tree default)
  leashed_cgroup   ... tree=True, mechanism="cgroup"       (own cgroup v2, where available)
  leashed_supervisor ... tree=True, mechanism="supervisor" (subreaper supervisor, front)
  install          subprocess.Popen(argv).wait() after leashed.install() (installed before
                   each of its samples and uninstalled after, outside the timing, so that
                   plain stays plain)
  processkit       processkit.Command(...).kill_on_parent_death().exit_code(), if importable

    python benchmarks/spawn.py [--rss 50M,2G] [--n 200] [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import _common

WAYS = (
    "plain",
    "preexec_prctl",
    "leashed_direct",
    "leashed_helper",
    "leashed_tree",
    "leashed_cgroup",
    "leashed_supervisor",
    "install",
    "processkit",
)
#: Ways whose spawn is a fork() of the whole parent: timed in rounds of their own.
FORKING_WAYS = ("preexec_prctl", "processkit")
LABELS = {
    "plain": "subprocess.Popen",
    "preexec_prctl": "Popen(preexec_fn=prctl)",
    "leashed_direct": "leashed.Popen",
    "leashed_helper": "leashed.Popen (helper path)",
    "leashed_tree": "leashed.Popen(tree=True)",
    "leashed_cgroup": "leashed.Popen(tree=True) cgroup",
    "leashed_supervisor": "leashed.Popen(tree=True) supervisor",
    "install": "subprocess.Popen after install()",
    "processkit": "processkit-py kill_on_parent_death",
}
COMMANDS = {"true": ["/bin/true"], "python": [sys.executable, "-c", "pass"]}
COMMAND_LABELS = {"true": "/bin/true", "python": "python -c pass"}
PR_SET_PDEATHSIG = 1


def _make_ways(skipped: dict[str, str]) -> dict[str, Callable[[list[str]], int]]:
    """The spawn+wait callables, one per way that can run here."""
    leashed = _common.import_leashed()
    libc = ctypes.CDLL(None, use_errno=True)
    prctl = libc.prctl

    def pdeathsig() -> None:
        prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)

    ways: dict[str, Callable[[list[str]], int]] = {
        "plain": lambda argv: subprocess.Popen(argv).wait(),
        "preexec_prctl": lambda argv: subprocess.Popen(argv, preexec_fn=pdeathsig).wait(),
        "leashed_direct": lambda argv: int(leashed.Popen(argv).wait()),
        "leashed_helper": lambda argv: int(
            _common.through_helper(lambda: leashed.Popen(argv)).wait()
        ),
        "leashed_tree": lambda argv: int(leashed.Popen(argv, tree=True).wait()),
        "install": lambda argv: subprocess.Popen(argv).wait(),
        "leashed_supervisor": lambda argv: int(
            leashed.Popen(argv, tree=True, mechanism="supervisor").wait()
        ),
    }
    if leashed.capabilities()["mechanisms"]["cgroup"]["available"]:
        ways["leashed_cgroup"] = lambda argv: int(
            leashed.Popen(argv, tree=True, mechanism="cgroup").wait()
        )
    else:
        skipped["leashed_cgroup"] = "no writable cgroup v2 hierarchy here"
    try:
        import processkit

        def via_processkit(argv: list[str]) -> int:
            command = processkit.Command(argv[0])
            for arg in argv[1:]:
                command = command.arg(arg)
            return int(command.kill_on_parent_death().exit_code())

        ways["processkit"] = via_processkit
    except ImportError as exc:
        skipped["processkit"] = f"not importable ({exc}); pip install processkit-py"
    return ways


def _around(name: str) -> tuple[Callable[[], object], Callable[[], object]]:
    """What runs before and after each sample of a way, outside the timing."""
    if name == "install":
        leashed = _common.import_leashed()
        return leashed.install, leashed.uninstall
    return (lambda: None), (lambda: None)


def worker(rss: int, n: int, warmup: int, commands: list[str]) -> dict[str, Any]:
    """Measure every way at one parent RSS; runs in its own process."""
    skipped: dict[str, str] = {}
    ways = _make_ways(skipped)
    around = {name: _around(name) for name in ways}
    ballast = _common.grow_rss(rss)
    names = list(ways)
    samples: dict[str, dict[str, list[float]]] = {w: {c: [] for c in commands} for w in names}
    rss_seen = _common.current_rss()
    gc.collect()
    gc.disable()
    clock = time.perf_counter
    vforking = [w for w in names if w not in FORKING_WAYS]
    forking = [w for w in names if w in FORKING_WAYS]
    for group in (vforking, forking):
        for name in group:  # each group warmed up right before its rounds
            for cmd in commands:
                for _ in range(warmup):
                    around[name][0]()
                    if ways[name](COMMANDS[cmd]) != 0:
                        raise RuntimeError(f"{name} {cmd}: non-zero exit")
                    around[name][1]()
        gc.collect()
        for i in range(n if group else 0):
            shift = i % len(group)
            for name in group[shift:] + group[:shift]:
                spawn = ways[name]
                before, after = around[name]
                for cmd in commands:
                    argv = COMMANDS[cmd]
                    before()
                    start = clock()
                    spawn(argv)
                    samples[name][cmd].append((clock() - start) * 1000.0)
                    after()
            gc.collect()
    gc.enable()
    del ballast
    return {
        "rss_target": rss,
        "rss_actual": rss_seen,
        "n": n,
        "skipped": skipped,
        "samples_ms": samples,
        "summary_ms": {w: {c: _common.summary(samples[w][c]) for c in commands} for w in names},
    }


def run_point(rss: int, n: int, warmup: int, commands: list[str]) -> dict[str, Any]:
    """Run one RSS point in a fresh worker process and return its results."""
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        "--rss",
        str(rss),
        "--n",
        str(n),
        "--warmup",
        str(warmup),
        "--commands",
        ",".join(commands),
    ]
    out = subprocess.run(cmd, env=_common.child_env(), check=True, capture_output=True, text=True)
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def format_point(point: dict[str, Any]) -> str:
    """The table of one RSS point: median, p90 and ratio to plain Popen per way."""
    lines = []
    for cmd, stats in _by_command(point).items():
        lines.append(
            f"\nparent RSS {_common.format_size(point['rss_actual'])} "
            f"(target {_common.format_size(point['rss_target'])}), {COMMAND_LABELS[cmd]}, "
            f"{point['n']} spawns each"
        )
        lines.append(f"  {'way':<36} {'median ms':>10} {'p90 ms':>9} {'x plain':>8} {'paired':>8}")
        base = stats["plain"]["median"]
        paired = paired_ratios(point, cmd)
        for way, s in stats.items():
            pair = f"{paired[way]:>7.2f}x" if way in paired else f"{'-':>8}"
            lines.append(
                f"  {LABELS[way]:<36} {s['median']:>10.2f} {s['p90']:>9.2f} "
                f"{s['median'] / base:>7.2f}x {pair}"
            )
    for way, why in point["skipped"].items():
        lines.append(f"  (skipped {way}: {why})")
    return "\n".join(lines)


def paired_ratios(point: dict[str, Any], cmd: str) -> dict[str, float]:
    """Per way interleaved with plain: the median over the rounds of its spawn's time
    divided by plain's spawn of the same round (the figure that resists passing load)."""
    samples = point["samples_ms"]
    plain = samples["plain"][cmd]
    return {
        way: _common.percentile([a / b for a, b in zip(per[cmd], plain, strict=True)], 50)
        for way, per in samples.items()
        if way != "plain" and way not in FORKING_WAYS and len(per[cmd]) == len(plain)
    }


def _by_command(point: dict[str, Any]) -> dict[str, dict[str, dict[str, float]]]:
    out: dict[str, dict[str, dict[str, float]]] = {}
    for way, per_cmd in point["summary_ms"].items():
        for cmd, stats in per_cmd.items():
            out.setdefault(cmd, {})[way] = stats
    return out


def measure(
    rss_points: list[int], n: int, warmup: int, commands: list[str], echo: bool = True
) -> dict[str, Any]:
    """Run every RSS point (one worker each) and return the whole result document."""
    results: dict[str, Any] = {"machine": _common.machine(), "points": []}
    for rss in rss_points:
        if echo:
            print(f"measuring at parent RSS {_common.format_size(rss)} ...", flush=True)
        point = run_point(rss, n, warmup, commands)
        results["points"].append(point)
        if echo:
            print(format_point(point), flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rss", default="50M,2G", help="parent RSS points (default 50M,2G)")
    parser.add_argument("--n", type=int, default=200, help="timed spawns per way and command")
    parser.add_argument("--warmup", type=int, default=10, help="untimed spawns per way first")
    parser.add_argument("--commands", default="true,python", help="true,python")
    parser.add_argument("--quick", action="store_true", help="short run (n=30, warmup 3)")
    parser.add_argument("--json", metavar="PATH", help="save all results (samples too)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    commands = [c for c in args.commands.split(",") if c]
    if args.quick:
        args.n, args.warmup = min(args.n, 30), min(args.warmup, 3)
    if args.worker:
        print(json.dumps(worker(int(args.rss), args.n, args.warmup, commands)))
        return 0
    print(_common.helper_banner())
    rss_points = [_common.parse_size(s) for s in args.rss.split(",") if s]
    results = measure(rss_points, args.n, args.warmup, commands)
    if args.json:
        _common.save_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
