"""Kill storm: SIGKILL a parent at a random instant while its threads spawn leashed children.

Each trial starts a parent (``python -c``, importing leashed) under a marker unique to the
trial. The parent says "go", then spawns leashed children as fast as it can: from the main
thread and from worker threads that each spawn a few children and exit (fresh ones take
their place), so children are forked by threads that die before the parent does. Each
child is ``sh -c 'LEASHED_STORM_GEN=2 sleep 300 & exec sleep 300'``: a grandchild in the
background, then the shell execs into the direct child.

The harness SIGKILLs the parent at a random instant in [0, --max-delay-ms] after "go",
then waits (bounded by --wait seconds) until no process that leashed promised to end is
left, and counts those still alive at the deadline: survivors. Any survivor makes the
exit status 1.

What is promised, per mode:
  direct    leashed.Popen(argv): the direct child only (PR_SET_PDEATHSIG). The backgrounded
            grandchild is not promised: it is counted apart, as information, and killed.
  tree      leashed.Popen(argv, tree=True): the supervisor and every descendant,
            grandchildren included. All count.
  guardian  leashed.Popen(argv, mechanism="guardian"): the target and its guardian; like
            direct, grandchildren are not promised (counted apart).
  install   leashed.install() (tree=True), then plain APIs, in turn: subprocess.Popen,
            os.posix_spawn of the same shell, and a multiprocessing Process (spawn
            method; fork method from the main thread). Every process counts, as in tree.
  unleashed plain subprocess.Popen, as direct: the harness's own check. It must report
            survivors (and exit 1); never part of "all".
Grandchildren are told apart by LEASHED_STORM_GEN=2 in their environment, set by the
shell for the backgrounded sleep only.

The harness makes itself a child subreaper (when run as a script), so every orphan is
reparented to it and its zombie reaped here; leftovers are killed by pid through a pidfd
after re-checking the trial's marker on that process, so nothing else is ever signalled.

    python stress/kill_storm.py [--trials 1000] [--mode direct|tree|guardian|install|all]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import select
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

MODES = ("direct", "tree", "guardian", "install")
#: The modes in which every descendant is promised, grandchildren included.
WHOLE_TREE = ("tree", "install")
GEN_ENV = b"LEASHED_STORM_GEN"
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))

import _common  # noqa: E402  (the benchmarks' process helpers: markers, pidfd kills)
from _common import (  # noqa: E402
    MARKER_ENV,
    environ_of,
    proc_stat,
    reap_orphans,
    set_child_subreaper,
)

PARENT = r"""
import os, random, sys, threading, time
import leashed
mode, nthreads, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(seed)
kw = {"direct": {}, "tree": {"tree": True}, "guardian": {"mechanism": "guardian"},
      "unleashed": {}, "install": {}}[mode]
Popen = __import__("subprocess").Popen if mode in ("unleashed", "install") else leashed.Popen
argv = ["sh", "-c", "LEASHED_STORM_GEN=2 sleep 300 & exec sleep 300"]
keep = []
lock = threading.Lock()
if mode == "install":
    import multiprocessing
    leashed.install()
    spawn_ctx, fork_ctx = multiprocessing.get_context("spawn"), multiprocessing.get_context("fork")
    turn = iter(range(1 << 62))
def other_api():
    kind = next(turn) % 3
    if kind == 1:
        return os.posix_spawn("/bin/sh", argv, os.environ)
    on_main = threading.current_thread() is threading.main_thread()
    ctx = fork_ctx if kind == 2 and on_main else spawn_ctx
    p = ctx.Process(target=time.sleep, args=(300,), daemon=True)
    p.start()
    return p
def spawn():
    if mode == "install" and next(turn) % 2:
        p = other_api()
    else:
        p = Popen(argv, stdin=leashed.DEVNULL, stdout=leashed.DEVNULL,
                  stderr=leashed.DEVNULL, **kw)
    with lock:
        keep.append(p)  # no drop: kill_on_drop must not end children early
    os.write(1, b"+")
def worker(k):
    for _ in range(k):
        spawn()
os.write(1, b"go\n")
threads = []
deadline = time.monotonic() + 10.0
while time.monotonic() < deadline and len(keep) < 300:
    threads = [t for t in threads if t.is_alive()]
    while len(threads) < nthreads:
        t = threading.Thread(target=worker, args=(rng.randint(1, 4),), daemon=True)
        t.start()
        threads.append(t)
    spawn()
time.sleep(3600)
"""


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"


def marked(marker: str) -> dict[int, bool]:
    """Live processes carrying ``marker`` -> whether each is a grandchild (GEN=2)."""
    found: dict[int, bool] = {}
    for pid in _common.marked_pids(marker):
        env = environ_of(pid)
        if env is not None:
            found[pid] = env.get(GEN_ENV) == b"2"
    return found


def kill_marked(marker: str) -> int:
    """SIGKILL what carries ``marker``, by pidfd after re-checking it; fail if any is left."""
    killed = _common.kill_marked(marker, rounds=100)
    if marked(marker):
        raise RuntimeError(f"could not clean up the processes of {marker}")
    return killed


def _env(marker: str) -> dict[str, str]:
    env = dict(os.environ)
    env[MARKER_ENV] = marker
    try:
        import leashed

        src = str(Path(leashed.__file__).resolve().parent.parent)
    except ImportError:
        src = str(REPO / "src")
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if src not in paths:
        env["PYTHONPATH"] = os.pathsep.join([src, *paths])
    return env


def _count_spawned(fd: int, deadline: float) -> int:
    """Count the parent's "+" (one per completed spawn) until EOF, bounded by ``deadline``."""
    count = 0
    while True:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            return count
        data = os.read(fd, 65536)
        if not data:
            return count
        count += data.count(b"+")


def trial(
    mode: str,
    rng: random.Random,
    threads: int,
    max_delay: float,
    wait: float,
    kill_group: bool = False,
) -> dict[str, Any]:
    """One parent, one random SIGKILL (of the parent, or of its whole process group, as a
    terminal or a CI runner ends a job); returns survivors and what else was seen."""
    marker = f"storm-{mode}-{os.getpid()}-{uuid.uuid4().hex[:12]}"
    with tempfile.TemporaryFile() as errors:
        parent = subprocess.Popen(
            [sys.executable, "-c", PARENT, mode, str(threads), str(rng.randrange(2**31))],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=errors,
            env=_env(marker),
            start_new_session=kill_group,
        )
        assert parent.stdout is not None
        out = parent.stdout.fileno()
        try:
            ready, _, _ = select.select([out], [], [], 60)
            go = os.read(out, 3) if ready else b""
            if go != b"go\n":
                parent.kill()
                parent.wait()
                errors.seek(0)
                raise RuntimeError(
                    f"parent did not start: {go!r}\n{errors.read().decode(errors='replace')}"
                )
            delay = rng.uniform(0.0, max_delay)
            time.sleep(delay)
            start = time.monotonic()
            if kill_group:
                os.killpg(parent.pid, signal.SIGKILL)
            else:
                parent.send_signal(signal.SIGKILL)
            parent.wait()
            spawned = _count_spawned(out, start + wait)
        except BaseException:
            if parent.poll() is None:
                parent.kill()
                parent.wait()
            kill_marked(marker)
            raise
        finally:
            if parent.poll() is None:
                parent.kill()
                parent.wait()
            parent.stdout.close()

    # Bounded wait: until two scans in a row find nothing promised, or the deadline.
    deadline = start + wait
    clean_scans = 0
    seen_at = time.monotonic()
    while True:
        reap_orphans()
        procs = marked(marker)
        promised = [p for p, grandchild in procs.items() if mode in WHOLE_TREE or not grandchild]
        now = time.monotonic()
        if promised:
            clean_scans = 0
            seen_at = now
        else:
            clean_scans += 1
            if clean_scans >= 2:
                break
        if now >= deadline:
            break
        time.sleep(0.002)
    survivors = [
        {"pid": p, "ppid": (proc_stat(p) or ("?", 0))[1], "cmdline": _cmdline(p)} for p in promised
    ]
    unpromised = sum(1 for grandchild in procs.values() if grandchild)
    unpromised = 0 if mode in WHOLE_TREE else unpromised
    kill_marked(marker)
    reap_orphans()
    return {
        "delay_ms": delay * 1000.0,
        "spawned": spawned,
        "survivors": survivors,
        "unpromised_left": unpromised,
        "clean_ms": (seen_at - start) * 1000.0,
    }


def run_mode(
    mode: str,
    trials: int,
    rng: random.Random,
    threads: int,
    max_delay: float,
    wait: float,
    echo: bool = True,
    kill_group: bool = False,
) -> dict[str, Any]:
    """``trials`` kill-storm trials of one mode; a summary with every survivor."""
    survivors: list[dict[str, Any]] = []
    clean: list[float] = []
    spawned: list[int] = []
    unpromised = 0
    began = time.monotonic()
    for i in range(trials):
        result = trial(mode, rng, threads, max_delay, wait, kill_group)
        clean.append(result["clean_ms"])
        spawned.append(result["spawned"])
        unpromised += result["unpromised_left"]
        for s in result["survivors"]:
            survivors.append({"trial": i, "delay_ms": round(result["delay_ms"], 2), **s})
            if echo:
                print(f"  SURVIVOR {mode} trial {i}: {s}", flush=True)
        if echo and (i + 1) % 100 == 0:
            print(f"  {mode}: {i + 1}/{trials} trials, {len(survivors)} survivors", flush=True)
    clean.sort()
    return {
        "trials": trials,
        "survivors": len(survivors),
        "survivor_details": survivors,
        "unpromised_grandchildren_left": unpromised,
        "spawned_mean": sum(spawned) / max(1, len(spawned)),
        "spawned_max": max(spawned, default=0),
        "clean_ms_p50": clean[len(clean) // 2] if clean else math.nan,
        "clean_ms_p99": clean[min(len(clean) - 1, math.ceil(0.99 * len(clean)) - 1)]
        if clean
        else math.nan,
        "clean_ms_max": clean[-1] if clean else math.nan,
        "seconds": time.monotonic() - began,
    }


def main(argv: list[str] | None = None, *, subreaper: bool = False) -> int:
    """Run the storm; 0 if nothing promised survived, 1 otherwise."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=1000, help="trials per mode")
    parser.add_argument("--mode", choices=[*MODES, "all", "unleashed"], default="all")
    parser.add_argument("--threads", type=int, default=4, help="spawning worker threads")
    parser.add_argument("--max-delay-ms", type=float, default=50.0)
    parser.add_argument("--wait", type=float, default=5.0, help="bounded wait, seconds")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--json", metavar="PATH", help="save the results")
    parser.add_argument(
        "--kill-group",
        action="store_true",
        help="SIGKILL the parent's whole process group (kill -9 -PGID), not the parent alone",
    )
    args = parser.parse_args(argv)
    if subreaper:
        set_child_subreaper()
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    rng = random.Random(seed)
    modes = list(MODES) if args.mode == "all" else [args.mode]
    target = "the parent's whole process group" if args.kill_group else "the parent"
    print(
        f"kill storm: {args.trials} trials per mode, modes {','.join(modes)}, seed {seed}, "
        f"SIGKILL to {target}"
    )
    results = {}
    for mode in modes:
        r = run_mode(
            mode,
            args.trials,
            rng,
            args.threads,
            args.max_delay_ms / 1000,
            args.wait,
            kill_group=args.kill_group,
        )
        results[mode] = r
        extra = (
            f", {r['unpromised_grandchildren_left']} unpromised grandchildren left (expected)"
            if mode not in WHOLE_TREE
            else ""
        )
        print(
            f"{mode}: {r['trials']} trials, survivors {r['survivors']}, "
            f"children spawned before the kill mean {r['spawned_mean']:.1f} max "
            f"{r['spawned_max']}, last promised process seen at p50 {r['clean_ms_p50']:.1f} ms "
            f"p99 {r['clean_ms_p99']:.1f} ms max {r['clean_ms_max']:.1f} ms{extra} "
            f"({r['seconds']:.0f} s)",
            flush=True,
        )
    total = sum(r["survivors"] for r in results.values())
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"seed": seed, "modes": results}, f, indent=1)
    print(f"TOTAL SURVIVORS: {total}" + ("" if total == 0 else "  <-- FAILURE"))
    return 1 if total else 0


if __name__ == "__main__":
    sys.exit(main(subreaper=True))
