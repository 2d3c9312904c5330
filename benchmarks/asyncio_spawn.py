"""leashed.asyncio against asyncio's own create_subprocess_exec, in the same event loop.

Rounds of ``--per-round`` spawn+wait of ``/bin/true``, one after another, or ``--gather``
at a time; the ways alternate round by round (the order inside a pair alternates too), so
noise from a shared machine hits both alike. Reported: the median round time per way and
the median over the pairs of leashed's round time divided by asyncio's.

    python benchmarks/asyncio_spawn.py [--rounds 30] [--per-round 20] [--gather 1,8] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import _common

ARGV = ["/bin/true"]
Spawn = Callable[..., Awaitable[Any]]


async def _one(create: Spawn) -> None:
    proc = await create(*ARGV)
    if await proc.wait() != 0:
        raise RuntimeError("non-zero exit")


async def _round(create: Spawn, per_round: int, at_once: int) -> float:
    start = time.perf_counter()
    for _ in range(per_round // at_once):
        await asyncio.gather(*(_one(create) for _ in range(at_once)))
    return time.perf_counter() - start


async def _measure(rounds: int, per_round: int, at_once: int) -> dict[str, Any]:
    leashed = _common.import_leashed()
    import leashed.asyncio as leashed_asyncio

    ways: dict[str, Spawn] = {
        "asyncio": asyncio.create_subprocess_exec,
        "leashed.asyncio": leashed_asyncio.create_subprocess_exec,
    }
    for create in ways.values():  # warm-up: child watcher, imports, spawner threads
        await _round(create, per_round, at_once)
    times: dict[str, list[float]] = {w: [] for w in ways}
    ratios: list[float] = []
    for i in range(rounds):
        order = list(ways) if i % 2 == 0 else list(ways)[::-1]
        got = {w: await _round(ways[w], per_round, at_once) for w in order}
        for w, t in got.items():
            times[w].append(t)
        ratios.append(got["leashed.asyncio"] / got["asyncio"])
    return {
        "at_once": at_once,
        "median_round_ms": {w: statistics.median(t) * 1000 for w, t in times.items()},
        "paired_ratio_median": statistics.median(ratios),
        "direct_path": leashed.capabilities().get("direct_path"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--per-round", type=int, default=24)
    parser.add_argument("--gather", default="1,8", help="spawns awaited together")
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    print(f"load average at start: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    results: dict[str, Any] = {"machine": _common.machine(), "cells": []}
    for at_once in (int(x) for x in args.gather.split(",") if x):
        cell = asyncio.run(_measure(args.rounds, args.per_round, at_once))
        results["cells"].append(cell)
        rounds = cell["median_round_ms"]
        print(
            f"{args.per_round} spawns per round, {at_once} at a time: asyncio "
            f"{rounds['asyncio']:.1f} ms, leashed.asyncio {rounds['leashed.asyncio']:.1f} ms "
            f"per round; paired ratio {cell['paired_ratio_median']:.2f}x "
            f"(direct path: {cell['direct_path']})"
        )
    print(f"load average at end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.json:
        _common.save_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
