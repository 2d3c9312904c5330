"""Memory that leashed adds per child, per mode: the helper-side process's private memory.

Private memory is Private_Clean + Private_Dirty from /proc/PID/smaps_rollup: what the
process alone holds, the memory that goes away with it. Kernel-side costs (task struct,
kernel stack) are not in it; the page tables are, separately, as VmPTE.

  plain     subprocess.Popen: no helper-side process (baseline of the target itself)
  direct    the helper execs the target in place: no extra process, 0 added
  tree      the supervisor and its front, which stay between this process and the target
  guardian  the detached guardian (the marked process that is neither target nor our child)

    python benchmarks/memory.py [--children 20] [--json PATH]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from typing import Any

import _common

MODES = ("plain", "direct", "tree", "guardian")
KW: dict[str, dict[str, Any]] = {
    "direct": {},
    "tree": {"tree": True},
    "guardian": {"mechanism": "guardian"},
}
ARGV = ["sleep", "300"]


def memory_of(pid: int) -> dict[str, int]:
    """Rss, Pss, Private (clean + dirty) and VmPTE of a process, in KiB."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            key, _, rest = line.partition(":")
            parts = rest.split()
            if len(parts) == 2 and parts[1] == "kB":
                out[key] = int(parts[0])
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmPTE:"):
                out["VmPTE"] = int(line.split()[1])
    return {
        "rss_kib": out.get("Rss", 0),
        "pss_kib": out.get("Pss", 0),
        "private_kib": out.get("Private_Clean", 0) + out.get("Private_Dirty", 0),
        "pte_kib": out.get("VmPTE", 0),
    }


def measure_mode(mode: str, children: int) -> dict[str, Any]:
    """Spawn ``children`` sleeps in ``mode``; measure the helper side and the target."""
    leashed = _common.import_leashed()
    marker = _common.new_marker(f"mem-{mode}")
    env = _common.child_env(marker)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for _ in range(children):
            if mode == "plain":
                procs.append(subprocess.Popen(ARGV, env=env))
            else:
                procs.append(leashed.Popen(ARGV, env=env, **KW[mode]))
        time.sleep(0.3)  # let every helper settle into its steady state
        me = os.getpid()
        marked = _common.marked_pids(marker)
        helpers: list[dict[str, int]] = []
        targets: list[dict[str, int]] = []
        if mode in ("plain", "direct"):
            targets = [memory_of(p.pid) for p in procs]
        elif mode == "tree":
            # per child: the front (p.pid) and the supervisor behind it, summed
            parent_of = {pid: stat[1] for pid in marked if (stat := _common.proc_stat(pid))}
            behind = {ppid: pid for pid, ppid in parent_of.items()}  # front -> supervisor
            for p in procs:
                front, supervisor = memory_of(p.pid), memory_of(behind[p.pid])
                helpers.append({key: front[key] + supervisor[key] for key in front})
            supervisors = {behind[p.pid] for p in procs}
            targets = [memory_of(pid) for pid, ppid in parent_of.items() if ppid in supervisors]
        else:
            target_pids = {p.pid for p in procs}
            targets = [memory_of(pid) for pid in target_pids]
            for pid in marked:
                stat = _common.proc_stat(pid)
                if pid not in target_pids and stat is not None and stat[1] != me:
                    helpers.append(memory_of(pid))
        if mode != "plain" and mode != "direct" and len(helpers) != children:
            raise RuntimeError(f"{mode}: found {len(helpers)} helper-side processes")
        return {
            "children": children,
            "helper_processes": len(helpers),
            "helper": _medians(helpers),
            "target": _medians(targets),
            "processes_per_child": len(marked) / children,
        }
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
        _common.kill_marked(marker)


def _medians(rows: list[dict[str, int]]) -> dict[str, float]:
    if not rows:
        return {"rss_kib": 0, "pss_kib": 0, "private_kib": 0, "pte_kib": 0}
    return {key: statistics.median(r[key] for r in rows) for key in rows[0]}


def format_results(results: dict[str, Any]) -> str:
    """A table: per mode, memory added per child and the target's own, in KiB."""
    lines = [
        f"{'mode':<9} {'procs/child':>11} {'added private':>13} {'added Pss':>9} "
        f"{'added Rss':>9} {'added PTE':>9} {'target private':>14}"
    ]
    for mode, r in results.items():
        h, t = r["helper"], r["target"]
        lines.append(
            f"{mode:<9} {r['processes_per_child']:>11.0f} {h['private_kib']:>9.0f} KiB "
            f"{h['pss_kib']:>5.0f} KiB {h['rss_kib']:>5.0f} KiB {h['pte_kib']:>5.0f} KiB "
            f"{t['private_kib']:>10.0f} KiB"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--children", type=int, default=20, help="children per mode")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--json", metavar="PATH", help="save the results")
    args = parser.parse_args(argv)
    print(_common.helper_banner())
    results = {m: measure_mode(m, args.children) for m in args.modes.split(",") if m}
    print(format_results(results))
    print("(medians over the children; 'added' is the helper-side process: none in direct mode)")
    if args.json:
        _common.save_json(args.json, {"machine": _common.machine(), "modes": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
