"""Run every benchmark, then draw spawn latency against parent RSS and write RESULTS.md.

Writes into benchmarks/results/: spawn.json, reap.json, memory.json, spawn-vs-rss.png
(needs matplotlib: ``pip install 'leashed[bench]'``) and RESULTS.md (the machine, the
command, the tables). ``--from-results`` redraws from the saved JSON without measuring.

    python benchmarks/plot.py [--rss 50M,500M,1G,2G] [--n 200] [--quick] [--from-results]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import _common
import memory
import reap
import spawn

COMMAND = "python benchmarks/plot.py"
COLORS = {
    "plain": "#444444",
    "preexec_prctl": "#d62728",
    "leashed_direct": "#1f77b4",
    "leashed_tree": "#2ca02c",
    "processkit": "#ff7f0e",
}


def draw(spawn_results: dict[str, Any], path: Path) -> None:
    """Median spawn+wait latency (bar up to p90) against parent RSS, a panel per command."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = sorted(spawn_results["points"], key=lambda p: p["rss_actual"])
    commands = list(points[0]["summary_ms"]["plain"])
    fig, axes = plt.subplots(1, len(commands), figsize=(6.2 * len(commands), 4.8), squeeze=False)
    for ax, cmd in zip(axes[0], commands, strict=True):
        for way in spawn.WAYS:
            if way not in points[0]["summary_ms"]:
                continue
            xs = [p["rss_actual"] / 2**20 for p in points]
            med = [p["summary_ms"][way][cmd]["median"] for p in points]
            p90 = [p["summary_ms"][way][cmd]["p90"] for p in points]
            ax.errorbar(
                xs,
                med,
                yerr=[[0.0] * len(med), [b - a for a, b in zip(med, p90, strict=True)]],
                label=spawn.LABELS[way],
                color=COLORS[way],
                marker="o",
                capsize=3,
                linewidth=2 if way.startswith("leashed") else 1.3,
            )
        ax.set_yscale("log")
        plain_numbers = matplotlib.ticker.FuncFormatter(lambda v, _pos: f"{v:g}")
        ax.yaxis.set_major_formatter(plain_numbers)
        ax.yaxis.set_minor_formatter(plain_numbers)
        ax.tick_params(axis="y", which="minor", labelsize=7)
        ax.set_xlabel("parent RSS (MB)")
        ax.set_ylabel("spawn + wait, median ms (bar to p90), log scale")
        ax.set_title(f"{spawn.COMMAND_LABELS[cmd]}")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].legend(fontsize=8, loc="upper left")
    m = spawn_results["machine"]
    helper = (m.get("helper") or {}).get("build")
    fig.suptitle(
        f"leashed spawn cost vs parent RSS - {m['cpu']}, {m['cores']} cores, "
        f"Linux {m['kernel']}, Python {m['python']}, helper {helper}, "
        f"n={points[0]['n']} per point",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _spawn_tables(results: dict[str, Any]) -> list[str]:
    points = sorted(results["points"], key=lambda p: p["rss_actual"])
    commands = list(points[0]["summary_ms"]["plain"])
    ways = [w for w in spawn.WAYS if w in points[0]["summary_ms"]]
    out: list[str] = []
    for cmd in commands:
        out.append(
            f"\n**{spawn.COMMAND_LABELS[cmd]}**: median ms (p90 ms), ratio of medians to plain "
            f"Popen; {points[0]['n']} spawns per cell, interleaved\n"
        )
        out.append(
            "| way | " + " | ".join(_common.format_size(p["rss_actual"]) for p in points) + " |"
        )
        out.append("|---|" + "---|" * len(points))
        for way in ways:
            cells = []
            for p in points:
                s = p["summary_ms"][way][cmd]
                base = p["summary_ms"]["plain"][cmd]["median"]
                cells.append(f"{s['median']:.2f} ({s['p90']:.2f}) {s['median'] / base:.2f}x")
            out.append(f"| {spawn.LABELS[way]} | " + " | ".join(cells) + " |")
    for way, why in points[0]["skipped"].items():
        out.append(f"\n(skipped {way}: {why})")
    return out


def write_markdown(
    path: Path,
    spawn_results: dict[str, Any],
    reap_results: dict[str, Any] | None,
    memory_results: dict[str, Any] | None,
) -> None:
    """RESULTS.md: the machine, the command that reproduces it, and every table."""
    m = spawn_results["machine"]
    helper = m.get("helper") or {}
    lines = [
        "# leashed benchmark results",
        "",
        f"Reproduce: `{COMMAND}` (from the repository root, leashed installed with its "
        "helper, e.g. `pip install '.[bench]'`; add `processkit-py` for that column).",
        "",
        f"- CPU: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB",
        f"- kernel: Linux {m['kernel']}; Python {m['python']}",
        f"- leashed {m['leashed']}, helper {helper.get('version')} build **{helper.get('build')}**",
        f"- load average at start: {', '.join(f'{x:.2f}' for x in m['loadavg_at_start'])} "
        "(shared machine: figures are medians of interleaved runs)",
        f"- measured {m['date']}",
        "",
        "## Spawn + wait latency",
        "",
        "![spawn latency vs parent RSS](spawn-vs-rss.png)",
        *_spawn_tables(spawn_results),
    ]
    if reap_results:
        lines += [
            "",
            "## Time from the parent's SIGKILL until every leashed process is gone",
            "",
            "One `sleep 300` child per trial; pidfds opened on every leashed process (target, "
            "front and supervisor, guardian) before the kill; time until the last one exited.",
            "",
            "| mode | trials | p50 ms | p99 ms | max ms | left behind |",
            "|---|---|---|---|---|---|",
        ]
        for mode, r in reap_results["single"].items():
            s = r["summary_ms"]
            lines.append(
                f"| {mode} | {int(s['n'])} | {s['median']:.2f} | {s['p99']:.2f} | "
                f"{s['max']:.2f} | {r['left']} |"
            )
        if reap_results.get("big"):
            lines += [
                "",
                "Many live children spawned from several threads (which then exit), one SIGKILL:",
                "",
                "| mode | children | threads | leashed processes | ms until all gone (each run) |",
                "|---|---|---|---|---|",
            ]
            for mode, r in reap_results["big"].items():
                runs = ", ".join(f"{ms:.0f}" for ms in r["ms"])
                lines.append(
                    f"| {mode} | {r['children']} | {r['threads']} | {r['processes']} | {runs} |"
                )
    if memory_results:
        lines += [
            "",
            "## Memory added per leashed child",
            "",
            "Private = Private_Clean + Private_Dirty of the helper-side processes "
            "(/proc/PID/smaps_rollup: front and supervisor, or guardian), medians; PTE = their "
            "page tables (VmPTE).",
            "",
            "| mode | processes per child | added private KiB | added Pss KiB | added PTE KiB "
            "| target's own private KiB |",
            "|---|---|---|---|---|---|",
        ]
        for mode, r in memory_results["modes"].items():
            h, t = r["helper"], r["target"]
            lines.append(
                f"| {mode} | {r['processes_per_child']:.0f} | {h['private_kib']:.0f} | "
                f"{h['pss_kib']:.0f} | {h['pte_kib']:.0f} | {t['private_kib']:.0f} |"
            )
    lines += [
        "",
        "Kill storm (stress): `python stress/kill_storm.py --trials 1000 --mode all`.",
        "",
    ]
    path.write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rss", default="50M,500M,1G,2G")
    parser.add_argument("--n", type=int, default=200, help="spawns per way, command and RSS")
    parser.add_argument("--reap-trials", type=int, default=200)
    parser.add_argument("--quick", action="store_true", help="a short run of everything")
    parser.add_argument("--skip-reap", action="store_true")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--from-results", action="store_true", help="redraw from saved JSON")
    parser.add_argument("--out", default=str(_common.RESULTS_DIR))
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    files = {name: out / f"{name}.json" for name in ("spawn", "reap", "memory")}
    if args.from_results:
        loaded = {k: json.loads(p.read_text()) if p.exists() else None for k, p in files.items()}
        spawn_results, reap_results, memory_results = (
            loaded["spawn"],
            loaded["reap"],
            loaded["memory"],
        )
        if spawn_results is None:
            raise SystemExit(f"no {files['spawn']}: run without --from-results first")
    else:
        n, warmup, reap_trials, big_children, big_reps = args.n, 10, args.reap_trials, 1000, 2
        if args.quick:
            n, warmup, reap_trials, big_children, big_reps = 30, 3, 30, 200, 1
        print(_common.helper_banner(), flush=True)
        rss_points = [_common.parse_size(s) for s in args.rss.split(",") if s]
        spawn_results = spawn.measure(rss_points, n, warmup, list(spawn.COMMANDS))
        files["spawn"].write_text(json.dumps(spawn_results, indent=1))
        memory_results = reap_results = None
        if not args.skip_memory:
            modes = {m: memory.measure_mode(m, 20) for m in memory.MODES}
            memory_results = {"machine": _common.machine(), "modes": modes}
            print(memory.format_results(modes), flush=True)
            files["memory"].write_text(json.dumps(memory_results, indent=1))
        if not args.skip_reap:
            _common.raise_nofile_limit()
            _common.set_child_subreaper()
            print(f"reap: {reap_trials} trials per mode ...", flush=True)
            single = reap.run_single(list(reap.MODES), reap_trials)
            big = reap.run_big(["direct", "tree", "guardian"], big_children, 8, big_reps)
            reap_results = {"machine": _common.machine(), "single": single, "big": big}
            print(reap.format_results(single, big), flush=True)
            files["reap"].write_text(json.dumps(reap_results, indent=1))
    png = out / "spawn-vs-rss.png"
    draw(spawn_results, png)
    write_markdown(out / "RESULTS.md", spawn_results, reap_results, memory_results)
    print(f"wrote {png} and {out / 'RESULTS.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
