"""Many children at once under a low fd limit: does a supervised child cost the parent an fd?

A parent (``python -c``, importing leashed) lowers its RLIMIT_NOFILE soft limit to
--nofile, then starts --children ``sleep`` children with ``leashed.Popen(tree=True)`` (or
another --mode), all alive at once. It reports how many it started and how many fds it
holds; the harness then SIGKILLs it and waits until nothing carrying the run's marker is
left (front, supervisor, target: three processes per tree child). Leftovers are killed by
pid after the marker is re-checked. Exit status 1 if not every child started or anything
survived.

    python stress/many_children.py [--children 10000] [--nofile 1024] [--mode tree]

10,000 tree children are 30,000 processes: check /proc/sys/kernel/pid_max first.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid

from leashed import _procfs

MARKER_VAR = "LEASHED_MANY_MARKER"

PARENT = textwrap.dedent(
    """
    import os, resource, subprocess, sys, time, leashed
    count, nofile, mode = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, hard))
    options = {"tree": {"tree": True}, "grace": {"tree": True, "grace": 5.0},
               "direct": {}, "plain": None}[mode]
    procs, error, started = [], "", time.monotonic()
    try:
        for _ in range(count):
            argv = ["sleep", "600"]
            if options is None:
                procs.append(subprocess.Popen(argv, stdin=subprocess.DEVNULL))
            else:
                procs.append(leashed.Popen(argv, stdin=subprocess.DEVNULL, **options))
    except OSError as exc:
        error = repr(exc)
    fds = len(os.listdir("/proc/self/fd"))
    print(len(procs), fds, round(time.monotonic() - started, 1), error, flush=True)
    time.sleep(3600)
    """
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--children", type=int, default=10000)
    parser.add_argument("--nofile", type=int, default=1024)
    parser.add_argument("--mode", choices=("tree", "grace", "direct", "plain"), default="tree")
    parser.add_argument("--wait", type=float, default=120.0, help="seconds to wait for the end")
    args = parser.parse_args(argv)
    marker = uuid.uuid4().hex
    env = {**os.environ, MARKER_VAR: marker}
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, str(args.children), str(args.nofile), args.mode],
        env=env, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert parent.stdout is not None
        started, fds, seconds, *error = parent.stdout.readline().split(maxsplit=3)
        alive = len(_procfs.pids_with_env(MARKER_VAR, marker)) - 1
        print(
            f"{args.mode}: {started} of {args.children} children started in {seconds} s "
            f"with a soft fd limit of {args.nofile}; the parent holds {fds} fds; "
            f"{alive} marked processes alive {' '.join(error)}"
        )
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        t0 = time.monotonic()
        _procfs.poll_until(
            lambda: not _procfs.pids_with_env(MARKER_VAR, marker), args.wait, interval=0.2
        )
        survivors = _procfs.pids_with_env(MARKER_VAR, marker)
        print(
            f"after the parent's SIGKILL: {len(survivors)} survivors "
            f"({time.monotonic() - t0:.1f} s until the last was gone or the deadline)"
        )
        ok = int(started) == args.children and (not survivors or args.mode == "plain")
        return 0 if ok else 1
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        _procfs.kill_marked(MARKER_VAR, marker)


if __name__ == "__main__":
    sys.exit(main())
