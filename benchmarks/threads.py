"""Spawn throughput from worker threads: leashed against plain Popen, in the same run.

A fresh worker process (its environment carries the run's marker) runs rounds. One round
is one way at one thread count: that many new threads, released together by a barrier,
each loop ``Popen(["/bin/true"]).wait()`` until the round's deadline, then exit; the
round's figure is spawns completed per second of wall time. Every leashed round is paired
with a plain round next to it (plain, direct, plain, tree, ...; the order inside a pair
alternates run by run), so noise from a shared machine hits every way alike. Reported per
cell: the best of ``--runs`` rounds, the ratio of leashed's best to plain's best, and the
median over the runs of the ratio of each leashed round to its paired plain round (the
figure that resists load that comes and goes).

Ways:
  plain   subprocess.Popen(argv).wait()
  direct  leashed.Popen(argv).wait()              (in-process spawn, PR_SET_PDEATHSIG)
  helper  the same through the helper's direct mode (the fallback: one more execve)
  tree    leashed.Popen(argv, tree=True).wait()   (this machine's tree default: the
          cgroup mechanism where a writable cgroup v2 hierarchy is found, else the supervisor)
  supervisor  the same with mechanism="supervisor" (``--ways`` to add it)
  floor   subprocess.Popen([helper, "direct", ..., "--", *argv]).wait(): the bare helper
          with nothing of leashed's Python around it, the floor of the direct mode (not a
          leash from a worker thread: only a cost reference; ``--ways`` to add it)
  handoff subprocess.Popen(argv).wait() with only its fork_exec moved to leashed's
          spawner threads, no helper: the cost of the hand-off alone (a cost reference
          too; the direct mode from a worker thread pays both it and the floor's)

Also recorded per round: CPU time per spawn (this process and its reaped descendants,
user + system), the figure that bounds throughput once the cores are saturated.

Thread counts: 1, 4, 16 by default; ``main`` is the main thread itself (no worker).

    python benchmarks/threads.py [--threads 1,4,16] [--ways plain,direct,tree]
                                 [--runs 12] [--round 0.3] [--long] [--json PATH]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import _common

WAYS = ("plain", "direct", "helper", "tree", "supervisor", "floor", "handoff")
DEFAULT_WAYS = ("plain", "direct", "helper", "tree")
LABELS = {
    "plain": "subprocess.Popen",
    "direct": "leashed.Popen",
    "helper": "leashed.Popen (helper path)",
    "tree": "leashed.Popen(tree=True)",
    "supervisor": "leashed.Popen(tree=True) supervisor",
    "floor": "bare helper (floor)",
    "handoff": "hand-off only",
}
ARGV = ["/bin/true"]
DEFAULT_JSON = _common.RESULTS_DIR / "threads.json"


def _make_ways() -> dict[str, Callable[[], int]]:
    leashed = _common.import_leashed()
    from leashed import _helper, _seam, _spawner

    helper = _helper.helper_path()
    bare = [helper, "direct", "-p", str(os.getpid()), "--", ARGV[0], *ARGV]

    class HandedOff(subprocess.Popen[bytes]):
        """subprocess.Popen whose fork_exec runs on leashed's spawner threads."""

        def _execute_child(self, *args: Any, **kwargs: Any) -> None:
            spawn = _seam.spawn_unaudited
            assert spawn is not None
            wrap = _spawner.forking_on_long_lived_thread
            spawn(self, wrap_fork_exec=wrap, **_seam.bind(args, kwargs))

    return {
        "plain": lambda: subprocess.Popen(ARGV).wait(),
        "direct": lambda: int(leashed.Popen(ARGV).wait()),
        "helper": lambda: int(_common.through_helper(lambda: leashed.Popen(ARGV)).wait()),
        "tree": lambda: int(leashed.Popen(ARGV, tree=True).wait()),
        "supervisor": lambda: int(leashed.Popen(ARGV, tree=True, mechanism="supervisor").wait()),
        "floor": lambda: subprocess.Popen(bare).wait(),
        "handoff": lambda: HandedOff(ARGV).wait(),
    }


def _cpu() -> float:
    """CPU seconds of this process and its reaped descendants so far."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def one_round(spawn: Callable[[], int], threads: str, seconds: float) -> tuple[float, float]:
    """(spawns per second, CPU seconds per spawn) of ``spawn`` from ``threads`` threads
    ("main": this one) for about ``seconds``."""
    cpu = _cpu()
    if threads == "main":
        count = 0
        start = time.perf_counter()
        deadline = start + seconds
        while time.perf_counter() < deadline:
            if spawn() != 0:
                raise RuntimeError("non-zero exit")
            count += 1
        return count / (time.perf_counter() - start), (_cpu() - cpu) / max(count, 1)
    n = int(threads)
    counts = [0] * n
    errors: list[BaseException] = []
    barrier = threading.Barrier(n + 1)
    deadline = 0.0

    def work(i: int) -> None:
        try:
            barrier.wait()
            done = 0
            while time.perf_counter() < deadline:
                if spawn() != 0:
                    raise RuntimeError("non-zero exit")
                done += 1
            counts[i] = done
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    for t in workers:
        t.start()
    start = time.perf_counter()
    deadline = start + seconds
    barrier.wait()
    for t in workers:
        t.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise errors[0]
    return sum(counts) / elapsed, (_cpu() - cpu) / max(sum(counts), 1)


def worker(
    thread_counts: list[str], ways: list[str], runs: int, seconds: float, spawner_threads: int = 0
) -> dict[str, Any]:
    """Every (thread count, way) cell, ``runs`` rounds each, each leashed round paired
    with a plain round next to it (the order inside a pair alternates run by run)."""
    if spawner_threads:
        from leashed import _inproc_spawn

        assert _inproc_spawn._inproc is not None, "--spawners needs leashed._inproc"
        _inproc_spawn._inproc.set_spawners(spawner_threads)
    spawners = _make_ways()
    for name in ways:  # warm-up: imports, the helper path, the spawner thread, page cache
        for _ in range(20):
            spawners[name]()
        one_round(spawners[name], "4", 0.1)
    others = [w for w in ways if w != "plain"]
    rates: dict[str, dict[str, list[float]]] = {t: {w: [] for w in ways} for t in thread_counts}
    cpu: dict[str, dict[str, list[float]]] = {t: {w: [] for w in ways} for t in thread_counts}
    paired: dict[str, dict[str, list[float]]] = {t: {w: [] for w in others} for t in thread_counts}

    def measure(threads: str, name: str) -> float:
        gc.collect()
        gc.disable()
        try:
            rate, cpu_s = one_round(spawners[name], threads, seconds)
        finally:
            gc.enable()
        rates[threads][name].append(rate)
        cpu[threads][name].append(cpu_s * 1e6)
        return rate

    for run in range(runs):
        shift = run % max(1, len(others))
        for threads in thread_counts:
            if "plain" not in ways:
                for name in others:
                    measure(threads, name)
                continue
            if not others:
                measure(threads, "plain")
            for name in others[shift:] + others[:shift]:
                pair = ("plain", name) if run % 2 == 0 else (name, "plain")
                got = {w: measure(threads, w) for w in pair}
                paired[threads][name].append(got[name] / got["plain"])
    return {
        "runs": runs,
        "round_s": seconds,
        "rates": rates,
        "best": {t: {w: max(r) for w, r in per.items()} for t, per in rates.items()},
        "paired_ratio_median": {
            t: {w: _common.percentile(r, 50) for w, r in per.items() if r}
            for t, per in paired.items()
        },
        "paired_ratios": paired,
        "cpu_us_per_spawn": cpu,
        "cpu_us_median": {
            t: {w: _common.percentile(c, 50) for w, c in per.items()} for t, per in cpu.items()
        },
        "loadavg_at_end": os.getloadavg(),
        "spawner_threads": spawner_threads or None,
    }


def format_table(result: dict[str, Any]) -> str:
    """Best spawns/s per cell, the ratio of bests to plain, the median paired ratio, and
    the CPU per spawn."""
    best = result["best"]
    ways = list(next(iter(best.values())))
    paired = result["paired_ratio_median"]
    lines = [
        f"spawns/s of Popen({ARGV}).wait(), best of {result['runs']} rounds of "
        f"{result['round_s']:g} s; (ratio of bests to plain; [median ratio to the plain "
        f"round next to it])",
        f"  {'threads':>7}  " + "  ".join(f"{LABELS[w]:>30}" for w in ways),
    ]
    for threads, per in best.items():
        base = per.get("plain")
        cells = []
        for w in ways:
            extra = ""
            if base and w != "plain":
                extra = f" ({per[w] / base:.2f}x) [{paired[threads][w]:.2f}x]"
            cells.append(f"{per[w]:>8,.0f}{extra}".rjust(30))
        lines.append(f"  {threads:>7}  " + "  ".join(cells))
    lines.append("CPU us per spawn (this process + reaped descendants), median of the rounds")
    for threads, per in result["cpu_us_median"].items():
        base = per.get("plain")
        cells = []
        for w in ways:
            ratio = f" ({per[w] / base:.2f}x)" if base and w != "plain" else ""
            cells.append(f"{per[w]:>8,.0f}{ratio}".rjust(30))
        lines.append(f"  {threads:>7}  " + "  ".join(cells))
    return "\n".join(lines)


def run_worker(
    thread_counts: list[str], ways: list[str], runs: int, seconds: float, spawner_threads: int = 0
) -> dict[str, Any]:
    """Run the measurement in a fresh process whose environment carries a marker."""
    marker = _common.new_marker("threads")
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        "--threads",
        ",".join(thread_counts),
        "--ways",
        ",".join(ways),
        "--runs",
        str(runs),
        "--round",
        str(seconds),
        "--spawners",
        str(spawner_threads),
    ]
    try:
        out = subprocess.run(
            cmd, env=_common.child_env(marker), check=True, capture_output=True, text=True
        )
    finally:
        _common.kill_marked(marker)
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", default="1,4,16", help="thread counts; 'main' = no worker")
    parser.add_argument(
        "--ways", default=",".join(DEFAULT_WAYS), help="plain,direct,tree (and floor,handoff)"
    )
    parser.add_argument("--runs", type=int, default=12, help="rounds per cell (best is kept)")
    parser.add_argument("--round", type=float, default=0.3, help="seconds per round")
    parser.add_argument(
        "--spawners", type=int, default=0, help="in-process spawner threads (0: leashed's default)"
    )
    parser.add_argument("--long", action="store_true", help="longer run (30 runs of 0.6 s)")
    parser.add_argument(
        "--json", metavar="PATH", default=str(DEFAULT_JSON), help="where to save the results"
    )
    parser.add_argument("--no-json", action="store_true", help="do not save the results")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    thread_counts = [t for t in args.threads.split(",") if t]
    ways = [w for w in args.ways.split(",") if w]
    for w in ways:
        if w not in WAYS:
            parser.error(f"unknown way {w!r}")
    if args.long:
        args.runs, args.round = max(args.runs, 30), max(args.round, 0.6)
    if args.worker:
        print(json.dumps(worker(thread_counts, ways, args.runs, args.round, args.spawners)))
        return 0
    print(_common.helper_banner())
    results: dict[str, Any] = {"machine": _common.machine()}
    print(f"load average at start: {', '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    results["threads"] = run_worker(thread_counts, ways, args.runs, args.round, args.spawners)
    print(format_table(results["threads"]))
    print(
        "load average at end: "
        + ", ".join(f"{x:.2f}" for x in results["threads"]["loadavg_at_end"])
    )
    if not args.no_json:
        _common.save_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
