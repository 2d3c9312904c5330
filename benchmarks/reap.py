"""Time from the parent's SIGKILL until the last leashed process is gone, per mode.

Each trial starts a parent (``python -c``, importing leashed) that spawns leashed
``sleep 300`` children and says "ready". The benchmark finds every process with the
trial's marker (targets, fronts, supervisors, guardians), opens a pidfd on each *before* the kill,
SIGKILLs the parent and times until the last pidfd turns readable (the process exited).

Modes:
  direct    leashed.Popen(argv)                       exec helper, PR_SET_PDEATHSIG
  tree      leashed.Popen(argv, tree=True)             front + supervisor + target
  grace     leashed.Popen(argv, tree=True, grace=5)    SIGTERM first; a plain sleep dies at
            once, so this times the supervisor's SIGTERM path, not the grace itself
  guardian  leashed.Popen(argv, mechanism="guardian")  detached guardian + target

Single: one child per trial, p50/p99 over --trials (default 200).
Big: --big-children (default 1000) children spawned from --big-threads (default 8) threads
that then exit, one parent SIGKILL, time until all are gone (--big-reps per mode).

    python benchmarks/reap.py [--trials 200] [--modes direct,tree,grace,guardian]
                              [--big-modes direct,tree,guardian] [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import os
import select
import signal
import subprocess
import sys
import time
from typing import Any

import _common

MODES = ("direct", "tree", "grace", "guardian")
#: Leashed processes per child, per mode: the target, plus the supervisor and its front,
#: or a guardian.
PER_CHILD = {"direct": 1, "tree": 3, "grace": 3, "guardian": 2}

PARENT = r"""
import sys, threading, time
import leashed
mode, count, nthreads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
kw = {"direct": {}, "tree": {"tree": True}, "grace": {"tree": True, "grace": 5.0},
      "guardian": {"mechanism": "guardian"}}[mode]
procs = []
lock = threading.Lock()
def work(k):
    for _ in range(k):
        p = leashed.Popen(["sleep", "300"], stdin=leashed.DEVNULL, stdout=leashed.DEVNULL,
                          stderr=leashed.DEVNULL, **kw)
        with lock:
            procs.append(p)
if nthreads <= 1:
    work(count)
else:
    share = [count // nthreads + (i < count % nthreads) for i in range(nthreads)]
    threads = [threading.Thread(target=work, args=(k,)) for k in share]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
sys.stdout.write("ready %d\n" % len(procs))
sys.stdout.flush()
time.sleep(3600)
"""


class TrialError(RuntimeError):
    """A trial could not be set up or left processes behind."""


def _read_line(proc: subprocess.Popen[bytes], timeout: float) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    if not ready:
        raise TrialError("parent did not report ready in time")
    return proc.stdout.readline().decode().strip()


def trial(mode: str, children: int, threads: int, timeout: float) -> dict[str, Any]:
    """One parent, ``children`` leashed children, one SIGKILL: seconds until all gone."""
    marker = _common.new_marker(f"reap-{mode}")
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, mode, str(children), str(threads)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        env=_common.child_env(marker),
    )
    pidfds: list[int] = []
    try:
        line = _read_line(parent, timeout=120)
        if line != f"ready {children}":
            raise TrialError(f"parent said {line!r}")
        pids = _common.marked_pids(marker, exclude=[parent.pid])
        expected = children * PER_CHILD[mode]
        for pid in pids:
            try:
                pidfds.append(os.pidfd_open(pid))
            except ProcessLookupError:
                pass
        if len(pidfds) != expected:
            raise TrialError(f"{mode}: expected {expected} leashed processes, found {len(pids)}")
        poller = select.poll()
        for fd in pidfds:
            poller.register(fd, select.POLLIN)
        remaining = set(pidfds)
        clock = time.perf_counter
        start = clock()
        parent.send_signal(signal.SIGKILL)
        last = start
        deadline = start + timeout
        while remaining:
            wait_ms = max(0, int((deadline - clock()) * 1000))
            events = poller.poll(wait_ms)
            now = clock()
            for fd, _ in events:
                poller.unregister(fd)
                remaining.discard(fd)
                last = now
            if not events and now >= deadline:
                break
        return {
            "seconds": last - start,
            "processes": len(pidfds),
            "left": len(remaining),
        }
    finally:
        for fd in pidfds:
            os.close(fd)
        if parent.poll() is None:
            parent.kill()
        parent.wait()
        if parent.stdout is not None:
            parent.stdout.close()
        _common.kill_marked(marker)
        _common.reap_orphans()


def run_single(modes: list[str], trials: int, echo: bool = True) -> dict[str, Any]:
    """p50/p99 over ``trials`` one-child trials per mode, modes interleaved."""
    times: dict[str, list[float]] = {m: [] for m in modes}
    left: dict[str, int] = {m: 0 for m in modes}
    for i in range(trials):
        for mode in modes[i % len(modes) :] + modes[: i % len(modes)]:
            result = trial(mode, 1, 1, timeout=10.0)
            times[mode].append(result["seconds"] * 1000.0)
            left[mode] += result["left"]
        if echo and (i + 1) % 50 == 0:
            print(f"  {i + 1}/{trials} trials", flush=True)
    return {
        m: {"summary_ms": _common.summary(times[m]), "left": left[m], "samples_ms": times[m]}
        for m in modes
    }


def run_big(
    modes: list[str], children: int, threads: int, reps: int, echo: bool = True
) -> dict[str, Any]:
    """``children`` live children from ``threads`` threads, one SIGKILL, per mode."""
    out: dict[str, Any] = {}
    for mode in modes:
        runs = []
        for _ in range(reps):
            result = trial(mode, children, threads, timeout=300.0)
            runs.append(result)
            if echo:
                print(
                    f"  {mode}: {result['processes']} processes gone in "
                    f"{result['seconds'] * 1000:.1f} ms (left {result['left']})",
                    flush=True,
                )
        out[mode] = {
            "children": children,
            "threads": threads,
            "ms": [r["seconds"] * 1000.0 for r in runs],
            "processes": runs[0]["processes"],
            "left": sum(r["left"] for r in runs),
        }
    return out


def format_results(single: dict[str, Any], big: dict[str, Any]) -> str:
    """Human-readable tables of both parts."""
    lines = [f"\n{'mode':<10} {'trials':>6} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'left':>5}"]
    for mode, r in single.items():
        s = r["summary_ms"]
        lines.append(
            f"{mode:<10} {int(s['n']):>6} {s['median']:>8.2f} {s['p99']:>8.2f} "
            f"{s['max']:>8.2f} {r['left']:>5}"
        )
    if big:
        lines.append(
            f"\n{'mode':<10} {'children':>8} {'threads':>7} {'procs':>6} {'ms (each rep)':>20}"
        )
        for mode, r in big.items():
            runs = ", ".join(f"{ms:.0f}" for ms in r["ms"])
            lines.append(
                f"{mode:<10} {r['children']:>8} {r['threads']:>7} {r['processes']:>6} "
                f"{runs:>20}   left {r['left']}"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=200, help="one-child trials per mode")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--big-modes", default="direct,tree,guardian", help="'' to skip")
    parser.add_argument("--big-children", type=int, default=1000)
    parser.add_argument("--big-threads", type=int, default=8)
    parser.add_argument("--big-reps", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="30 trials, big 200 children x1")
    parser.add_argument("--json", metavar="PATH", help="save the results")
    args = parser.parse_args(argv)
    if args.quick:
        args.trials, args.big_children, args.big_reps = 30, 200, 1
    _common.raise_nofile_limit()
    _common.set_child_subreaper()
    print(_common.helper_banner())
    modes = [m for m in args.modes.split(",") if m]
    big_modes = [m for m in args.big_modes.split(",") if m]
    print(f"single child, {args.trials} trials per mode (interleaved) ...", flush=True)
    single = run_single(modes, args.trials)
    big = {}
    if big_modes:
        print(
            f"{args.big_children} children from {args.big_threads} threads, "
            f"{args.big_reps} rep(s) per mode ...",
            flush=True,
        )
        big = run_big(big_modes, args.big_children, args.big_threads, args.big_reps)
    print(format_results(single, big))
    if args.json:
        _common.save_json(args.json, {"machine": _common.machine(), "single": single, "big": big})
    left = sum(r["left"] for r in single.values()) + sum(r["left"] for r in big.values())
    return 1 if left else 0


if __name__ == "__main__":
    sys.exit(main())
