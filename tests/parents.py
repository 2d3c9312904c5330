"""Programs that the kill tests run as the sacrificial parent (``python -c``).

Each prints one line when its children are running, then waits to be killed or ends as
the scenario says. Children run ``sleep`` so that they live long unless leashed.
"""

from __future__ import annotations

import os
import random
import signal
import sys
import threading
import time

import leashed


def _options(mechanism: str) -> dict[str, object]:
    if mechanism == "tree":
        return {"tree": True}
    if mechanism == "grace":
        return {"tree": True, "grace": 5.0}
    if mechanism == "direct":
        return {}
    return {"mechanism": mechanism}


def _ready(procs: list[leashed.Popen[bytes]]) -> None:
    print(" ".join(str(p.pid) for p in procs), flush=True)


def at_rest(mechanism: str, count: int = 3) -> None:
    """Spawn ``count`` children from the main thread and wait."""
    procs = [leashed.Popen(["sleep", "300"], **_options(mechanism)) for _ in range(count)]  # type: ignore[arg-type]
    _ready(procs)
    time.sleep(300)


def from_exited_thread(mechanism: str) -> None:
    """Spawn a child from a worker thread that then exits; report whether it lives on."""
    box: list[leashed.Popen[bytes]] = []
    worker = threading.Thread(
        target=lambda: box.append(leashed.Popen(["sleep", "300"], **_options(mechanism)))  # type: ignore[arg-type]
    )
    worker.start()
    worker.join()
    time.sleep(0.3)
    print(box[0].pid, "alive" if box[0].poll() is None else f"dead:{box[0].returncode}", flush=True)
    time.sleep(300)


def spawn_storm(mechanism: str, threads: int = 4) -> None:
    """Threads spawn children in a loop, some exiting as they go, until the parent is killed."""
    started = threading.Event()
    keep: list[leashed.Popen[bytes]] = []

    def spawner(rounds: int) -> None:
        for _ in range(rounds):
            keep.append(leashed.Popen(["sleep", "300"], **_options(mechanism)))  # type: ignore[arg-type]
            started.set()

    def churn() -> None:
        while True:
            worker = threading.Thread(target=spawner, args=(random.randint(1, 4),))
            worker.start()
            worker.join()

    for _ in range(threads):
        threading.Thread(target=churn, daemon=True).start()
    started.wait()
    print("spawning", flush=True)
    time.sleep(300)


def ends_by(how: str, mechanism: str) -> None:
    """Spawn children, then end by ``how``: exit, raise, sigterm, sigint."""
    procs = [leashed.Popen(["sleep", "300"], **_options(mechanism)) for _ in range(2)]  # type: ignore[arg-type]
    _ready(procs)
    time.sleep(0.5)
    if how == "exit":
        sys.exit(0)
    if how == "raise":
        raise RuntimeError("the parent fails")
    if how == "sigterm":
        os.kill(os.getpid(), signal.SIGTERM)
    if how == "sigint":
        os.kill(os.getpid(), signal.SIGINT)
    time.sleep(30)
