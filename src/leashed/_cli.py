"""The ``leashed`` command: ``leashed run`` ties a command to a process, ``leashed doctor``
proves the leash on this machine, live."""

from __future__ import annotations

import argparse
import errno
import json
import math
import os
import selectors
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from . import __version__, _helper
from ._options import IS_LINUX, LeashPlan, validate_death_signal

PROG = "leashed"

EPILOG = """\
examples:
  leashed run -- my-server --port 8080
      my-server dies when the shell script that ran this line dies, by any death
      (kill -9 included); leashed itself does not stay around: it becomes my-server.
  leashed run --tree -- make -j8
      the whole tree (every descendant, daemons that setsid() included) is ended
      when the script dies.
  leashed run --tree --grace 5 -- ./start-db.sh
      on the script's death: SIGTERM to the tree, 5 s to clean up, then SIGKILL.
  leashed run --pid 4242 -- tail -f app.log
      tail ends when process 4242 ends (any process, not just the parent).
  leashed doctor
      starts sacrificial parents, SIGKILLs them and shows whether anything survived.

exit status of `leashed run`: the command's own (killed by a signal: the same signal);
126 the command is not executable, 127 not found, 2 bad usage, 1 the watched process is
already gone or leashed itself failed.
"""

RUN_USAGE = "leashed run [-h] [--tree] [--grace S] [--signal SIG] [--pid PID] -- COMMAND [ARGS...]"
RUN_DESCRIPTION = """\
Run COMMAND tied to the process that ran leashed (the shell script), or to --pid PID:
when that process dies, by any death, COMMAND gets the death signal. The exit status,
stdio and signals pass through.

Without --tree/--grace/--pid, leashed replaces itself with COMMAND (same pid) after
arming PR_SET_PDEATHSIG (Linux; elsewhere a detached guardian watches the script).
With --tree or --grace a small supervisor stays between the script and COMMAND: it
watches the script's process with a pidfd, forwards the signals sent to it, and exits
with COMMAND's status. With --pid alone, a detached guardian watches PID and COMMAND
keeps leashed's pid.
"""


class CommandError(Exception):
    """COMMAND cannot be run: exit with ``status`` (126/127) after printing the message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


# -- argument types --------------------------------------------------------------------------


def signal_arg(text: str) -> int:
    """TERM, SIGTERM, term or 15 -> 15; anything else is an ArgumentTypeError."""
    value = text.strip()
    number: int | None = None
    if value.lstrip("-").isdigit():
        number = int(value)
    else:
        name = value.upper()
        if not name.startswith("SIG"):
            name = "SIG" + name
        member = signal.Signals.__members__.get(name)
        if member is not None:
            number = int(member)
    if number is None:
        raise argparse.ArgumentTypeError(f"unknown signal {text!r} (try TERM, KILL, INT or 15)")
    try:
        checked = validate_death_signal(number)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a signal that can end a process"
        ) from None
    assert checked is not None
    return checked


def grace_arg(text: str) -> float:
    """A finite number of seconds >= 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if math.isnan(value) or math.isinf(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds >= 0, got {text!r}")
    return value


def pid_arg(text: str) -> int:
    """A positive process id."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a process id: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive process id, got {text!r}")
    return value


class _VersionAction(argparse.Action):
    """--version: leashed's version and the helper's, computed only when asked."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, help="show the versions and exit")

    def __call__(self, parser: argparse.ArgumentParser, *_args: Any, **_kwargs: Any) -> None:
        print(version_text())
        parser.exit(0)


def version_text() -> str:
    path = _helper.helper_path()
    if path is None:
        helper = "leashed-helper not installed"
    else:
        try:
            found = _helper.helper_version()
        except (OSError, subprocess.SubprocessError, ValueError):
            found = None
        helper = (
            f"leashed-helper {found[0]} {found[1]} ({path})"
            if found
            else f"leashed-helper ? ({path})"
        )
    return f"{PROG} {__version__}, {helper}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Child processes that die with their parent, by any death.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action=_VersionAction)
    commands = parser.add_subparsers(dest="subcommand", metavar="{run,doctor}")
    commands.required = True

    run = commands.add_parser(
        "run",
        help="run COMMAND tied to this shell (or to --pid PID)",
        usage=RUN_USAGE,
        description=RUN_DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument(
        "--tree",
        action="store_true",
        help="end every descendant of COMMAND too (a subreaper supervisor)",
    )
    run.add_argument(
        "--grace",
        type=grace_arg,
        metavar="S",
        help="seconds between the death signal and SIGKILL (implies the supervisor; "
        "the death signal is then SIGTERM unless --signal says otherwise)",
    )
    run.add_argument(
        "--signal",
        type=signal_arg,
        metavar="SIG",
        dest="death_signal",
        help="the death signal: a name (TERM, SIGTERM, term) or a number; default KILL",
    )
    run.add_argument(
        "--pid",
        type=pid_arg,
        metavar="PID",
        help="tie COMMAND to process PID instead of leashed's parent",
    )
    run.add_argument("command", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)

    doctor = commands.add_parser(
        "doctor",
        help="prove the leash on this machine, live",
        description="For every mode this machine offers: start a sacrificial parent with "
        "leashed children and grandchildren, SIGKILL it, and count the survivors (found by "
        "a marker in their environment; leftovers are killed by pid). Exit status 0 only "
        "if nothing survived in any available mode.",
    )
    doctor.add_argument("--json", action="store_true", help="print a JSON object")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``leashed`` console script and of ``python -m leashed``."""
    words = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    head, tail = _split_at_double_dash(words)
    args, extras = parser.parse_known_args(head)
    if args.subcommand == "doctor":
        if extras:
            parser.error(f"unrecognized arguments: {' '.join(extras)}")
        try:
            return doctor(as_json=args.json)
        except BrokenPipeError:  # `leashed doctor | head`: the reader left, say nothing more
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 1
    if extras:
        _run_usage_error(parser, f"unrecognized arguments: {' '.join(extras)}")
    command = list(args.command)
    if tail is not None:
        command = [*command, "--", *tail] if command else tail
    if not command:
        _run_usage_error(parser, "missing COMMAND")
    try:
        exec_command(
            command, tree=args.tree, grace=args.grace, death_signal=args.death_signal, pid=args.pid
        )
    except CommandError as exc:
        _say(str(exc))
        return exc.status


def _split_at_double_dash(words: list[str]) -> tuple[list[str], list[str] | None]:
    """``run [OPTIONS] -- COMMAND...`` -> (everything before ``--``, COMMAND...).

    Done by hand so that COMMAND is taken verbatim whatever argparse version runs.
    """
    if "--" not in words:
        return words, None
    cut = words.index("--")
    head = words[:cut]
    first_word = next((w for w in head if not w.startswith("-")), None)
    if first_word != "run":
        return words, None
    return head, words[cut + 1 :]


def _run_usage_error(parser: argparse.ArgumentParser, message: str) -> NoReturn:
    print(f"usage: {RUN_USAGE}", file=sys.stderr)
    parser.exit(2, f"{PROG} run: error: {message}\n")


def _say(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)


# -- leashed run -----------------------------------------------------------------------------


def resolve_command(name: str) -> str:
    """The file a shell would execute for ``name``, or CommandError(127/126) as a shell says."""
    if not name:
        raise CommandError(127, ": command not found")
    if "/" in name:
        _check_executable(name, name)
        return name
    found = shutil.which(name)
    if found is not None:
        return found
    for directory in _search_path():
        candidate = os.path.join(directory or ".", name)
        if os.path.isfile(candidate):
            _check_executable(candidate, name)
    raise CommandError(127, f"{name}: command not found")


def _search_path() -> list[str]:
    path = os.environ.get("PATH")
    if path is None:
        path = os.confstr("CS_PATH") if hasattr(os, "confstr") else os.defpath
    return (path or "").split(os.pathsep)


def _check_executable(path: str, shown: str) -> None:
    try:
        is_dir = os.path.isdir(path)
        os.stat(path)
    except OSError as exc:
        code = exc.errno or errno.ENOENT
        # as bash: 127 only when the file does not exist, 126 for any other reason
        status = 127 if code == errno.ENOENT else 126
        raise CommandError(status, f"{shown}: {os.strerror(code)}") from None
    if is_dir:
        raise CommandError(126, f"{shown}: {os.strerror(errno.EISDIR)}")
    if not os.access(path, os.X_OK):
        raise CommandError(126, f"{shown}: {os.strerror(errno.EACCES)}")


def process_exists(pid: int) -> bool:
    """True while ``pid`` names a process that has not exited (zombies count as exited)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    if IS_LINUX:
        return _state(pid) not in ("Z", "X", None)
    return True


def run_plan(
    *, tree: bool, grace: float | None, death_signal: int | None, pid: int | None
) -> LeashPlan:
    """The leash for ``leashed run``: direct on the parent, guardian on --pid, else supervisor."""
    from ._popen import make_plan

    mechanism = "guardian" if pid is not None and not tree and grace is None else None
    return make_plan(tree=tree, grace=grace, death_signal=death_signal, mechanism=mechanism)


def helper_command_line(
    command: Sequence[str],
    program: str,
    *,
    tree: bool = False,
    grace: float | None = None,
    death_signal: int | None = None,
    pid: int | None = None,
    parent: int | None = None,
) -> list[str]:
    """The helper argv that ``leashed run`` execs (``parent`` defaults to os.getppid())."""
    plan = run_plan(tree=tree, grace=grace, death_signal=death_signal, pid=pid)
    if parent is None:
        parent = os.getppid()
    if pid is None:
        # Exec mode: PDEATHSIG + getppid() check. Supervise/guard: pidfd on the parent, and
        # -p so the helper re-checks getppid() once the pidfd is open (the parent may have
        # died, and its pid been reused, before the watch started).
        watched = None if plan.mechanism == "pdeathsig" else parent
        cmd = _helper.helper_argv(plan, program, command, parent_pid=parent, watch_pid=watched)
    else:
        cmd = _helper.helper_argv(plan, program, command, watch_pid=pid)
    return [os.fspath(item) for item in cmd]


def exec_command(
    command: Sequence[str],
    *,
    tree: bool,
    grace: float | None,
    death_signal: int | None,
    pid: int | None,
) -> NoReturn:
    """Replace this process by the helper that leashes ``command``; CommandError if it can't."""
    helper = _helper.helper_path()
    if helper is None:
        raise CommandError(
            1,
            f"leashed-helper is not installed (nor found in ${_helper.HELPER_ENV}); "
            "reinstall leashed",
        )
    if pid is not None and not process_exists(pid):
        raise CommandError(1, f"--pid {pid}: no such process")
    if IS_LINUX and (tree or grace is not None or pid is not None):
        from ._capabilities import _linux_kernel_has_pidfd

        if not _linux_kernel_has_pidfd():
            raise CommandError(
                1,
                "--tree, --grace and --pid watch a process with a pidfd, and this kernel "
                "has no pidfd_open (Linux 5.3+)",
            )
    program = resolve_command(command[0])
    cmd = helper_command_line(
        command, program, tree=tree, grace=grace, death_signal=death_signal, pid=pid
    )
    _restore_signals()
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execv(helper, cmd)
    except OSError as exc:
        raise CommandError(126, f"{helper}: {exc.strerror}") from None


def _restore_signals() -> None:
    """Undo what the Python runtime changed (SIGPIPE, SIGXFSZ ignored), as subprocess does."""
    for name in ("SIGPIPE", "SIGXFSZ"):
        number = getattr(signal, name, None)
        if number is not None:
            signal.signal(number, signal.SIG_DFL)


# -- leashed doctor --------------------------------------------------------------------------

MARKER_VAR = "LEASHED_DOCTOR_MARKER"
DOCTOR_GRACE_S = 0.5
READY_TIMEOUT_S = 10.0
REAP_TIMEOUT_S = 5.0
MODE_ORDER = ("direct", "tree", "grace", "guardian")

#: The sacrificial parent: spawns leashed children (one of them from a worker thread that
#: exits at once, the case PDEATHSIG alone gets wrong), says "ready", waits to be killed.
_PARENT_CODE = textwrap.dedent(
    """
    import sys, threading, time
    import leashed

    mode, grace = sys.argv[1], float(sys.argv[2])
    TREE = "sleep 300 & sleep 300 & (setsid sleep 300 &); wait"
    GRACE = "sleep 300 & (trap '' TERM; exec sleep 300) & wait"
    procs = []
    def spawn(argv, **options):
        procs.append(leashed.Popen(argv, **options))
    if mode in ("direct", "guardian"):
        options = {"mechanism": "guardian"} if mode == "guardian" else {}
        spawn(["sleep", "300"], **options)
        spawn(["sleep", "300"], **options)
        worker = threading.Thread(target=spawn, args=(["sleep", "300"],), kwargs=options)
        worker.start()
        worker.join()
    elif mode == "tree":
        spawn(["sh", "-c", TREE], tree=True)
    elif mode == "grace":
        spawn(["sh", "-c", GRACE], tree=True, grace=grace)
    print("ready", flush=True)
    time.sleep(300)
    """
)

#: Per mode: (processes expected in total, of which `sleep`s), the parent not counted.
_EXPECTED = {
    "direct": (3, 3),
    "guardian": (6, 3),  # three targets and their three guardians
    "tree": (5, 3),  # supervisor, sh, two sleeps and a setsid'd sleep
    "grace": (4, 2),  # supervisor, sh, a sleep and a sleep that ignores SIGTERM
}

_SHORT_DESCRIPTION = {
    "direct": "children, one spawned by a thread that exits",
    "guardian": "children, one spawned by a thread that exits",
    "tree": "sh with 2 sleeps and a setsid'd sleep",
    "grace": "sh with a sleep and a TERM-ignoring sleep",
}


@dataclass
class ModeResult:
    """What the doctor saw for one mode."""

    mode: str
    available: bool
    mechanism: str
    whole_tree: bool
    scenario: str
    started: int = 0
    expected: int = 0
    survivors: list[int] = field(default_factory=list)
    reap_ms: float | None = None
    error: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        if not self.available:
            return True
        return self.error is None and not self.survivors

    def as_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "available": self.available,
            "ok": self.ok,
            "mechanism": self.mechanism,
            "whole_tree": self.whole_tree,
            "scenario": self.scenario,
            "processes_started": self.started,
            "processes_expected": self.expected,
            "survivors": len(self.survivors),
            "survivor_pids": self.survivors,
            "time_to_reap_ms": None if self.reap_ms is None else round(self.reap_ms, 1),
            "error": self.error,
            "notes": self.notes,
        }


def doctor(*, as_json: bool = False) -> int:
    """Run every available mode live; print a table (or JSON); 0 only if nothing survived."""
    from ._capabilities import capabilities

    caps = capabilities()
    if not IS_LINUX:
        message = (
            "leashed doctor finds the processes it started through /proc, which this platform "
            f"({sys.platform}) lacks; see leashed.capabilities() for what it guarantees"
        )
        if as_json:
            print(json.dumps({"ok": False, "platform": sys.platform, "error": message}))
        else:
            _say(message)
        return 1
    modes: dict[str, dict[str, Any]] = caps["modes"]
    results = []
    for name in [m for m in MODE_ORDER if m in modes] + [m for m in modes if m not in MODE_ORDER]:
        info = modes[name]
        result = ModeResult(
            mode=name,
            available=bool(info["available"]),
            mechanism=str(info["mechanism"]),
            whole_tree=bool(info["whole_tree"]),
            scenario=_scenario(name),
            notes=list(info.get("notes", [])),
        )
        if result.available and name in _EXPECTED:
            _prove(result)
        elif result.available:
            result.error = "no live test for this mode"
        results.append(result)
    ok = all(r.ok for r in results) and any(r.available for r in results)
    if as_json:
        print(json.dumps(_report(caps, results, ok), indent=2))
    else:
        print(_table(caps, results, ok))
    return 0 if ok else 1


def _scenario(mode: str) -> str:
    _total, sleeps = _EXPECTED.get(mode, (0, 0))
    if mode in ("direct", "guardian"):
        return f"{sleeps} sleep {_SHORT_DESCRIPTION[mode]}"
    return _SHORT_DESCRIPTION.get(mode, "")


def _prove(result: ModeResult) -> None:
    """Start the sacrificial parent, SIGKILL it once all is running, time the clean-up."""
    marker = uuid.uuid4().hex
    needle = f"{MARKER_VAR}={marker}".encode()
    expected_total, expected_sleeps = _EXPECTED[result.mode]
    result.expected = expected_total
    grace = DOCTOR_GRACE_S if result.mode == "grace" else 0.0
    parent = subprocess.Popen(
        [sys.executable, "-c", _PARENT_CODE, result.mode, str(grace)],
        env=_parent_env(marker),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        result.error = _wait_ready(parent)
        if result.error is None:
            result.started = _wait_started(needle, parent.pid, expected_total, expected_sleeps)
            if result.started < expected_total:
                result.error = f"only {result.started} of {expected_total} processes started"
        started_at = time.monotonic()
        parent.kill()
        parent.wait()
        survivors = _wait_gone(needle, REAP_TIMEOUT_S + grace)
        if survivors:
            result.survivors = survivors
        elif result.error is None:
            result.reap_ms = (time.monotonic() - started_at) * 1000.0
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        for stream in (parent.stdout, parent.stderr):
            if stream is not None:
                stream.close()
        _kill_marked(needle)


def _parent_env(marker: str) -> dict[str, str]:
    env = dict(os.environ)
    env[MARKER_VAR] = marker
    package_root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    return env


def _wait_ready(parent: subprocess.Popen[bytes]) -> str | None:
    """None once the parent printed "ready", else what went wrong."""
    assert parent.stdout is not None and parent.stderr is not None
    with selectors.DefaultSelector() as selector:
        selector.register(parent.stdout, selectors.EVENT_READ)
        if not selector.select(READY_TIMEOUT_S):
            return f"the test parent was not ready after {READY_TIMEOUT_S:g} s"
    line = parent.stdout.readline()
    if line.strip() == b"ready":
        return None
    parent.kill()
    parent.wait()
    lines = parent.stderr.read().decode(errors="replace").strip().splitlines()
    return f"the test parent failed: {lines[-1] if lines else f'exit {parent.returncode}'}"


def _wait_started(needle: bytes, parent: int, total: int, sleeps: int) -> int:
    """Wait until every expected process runs; return how many marked processes there are."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        pids = _marked(needle, exclude=parent)
        asleep = sum(1 for pid in pids if _comm(pid) == "sleep")
        if (len(pids) >= total and asleep >= sleeps) or time.monotonic() >= deadline:
            return len(pids)
        time.sleep(0.005)


def _wait_gone(needle: bytes, timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while True:
        left = _marked(needle)
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.002)


def _kill_marked(needle: bytes) -> None:
    """SIGKILL what is left, by pid, re-checking the marker through a pidfd first."""
    for _round in range(20):
        pids = _marked(needle)
        if not pids:
            return
        for pid in pids:
            _kill_if_marked(pid, needle)
        time.sleep(0.05)


def _kill_if_marked(pid: int, needle: bytes) -> None:
    if not sys.platform.startswith("linux"):
        return  # the doctor runs on Linux only: it finds its processes through /proc
    try:
        pidfd: int | None = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    except OSError:  # no pidfd on this kernel: the marker check is the identity check
        pidfd = None
    try:
        if not _has_marker(pid, needle):
            return
        if pidfd is not None:
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)
    except OSError:
        pass
    finally:
        if pidfd is not None:
            os.close(pidfd)


def _marked(needle: bytes, exclude: int | None = None) -> list[int]:
    """Live (not zombie) processes whose environment holds ``needle``."""
    own = os.getpid()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        if pid in (own, exclude):
            continue
        if _has_marker(pid, needle) and _state(pid) not in ("Z", "X", None):
            found.append(pid)
    return found


def _has_marker(pid: int, needle: bytes) -> bool:
    try:
        return needle in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False


def _state(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()
    return fields[0] if fields else None


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _report(caps: dict[str, Any], results: list[ModeResult], ok: bool) -> dict[str, Any]:
    return {
        "ok": ok,
        "leashed": __version__,
        "platform": caps["platform"],
        "helper": caps["helper"],
        "grace_s": DOCTOR_GRACE_S,
        "modes": [r.as_dict() for r in results],
    }


def _short_mechanism(mechanism: str) -> str:
    return mechanism.split(":", 1)[0].strip()


def _table(caps: dict[str, Any], results: list[ModeResult], ok: bool) -> str:
    helper = caps.get("helper") or {}
    lines = [
        f"leashed {__version__} on {caps['platform']}, leashed-helper "
        f"{helper.get('version') or '-'} {helper.get('build') or ''} "
        f"({helper.get('path') or 'not installed'})".replace("  ", " "),
        "each mode: a parent process starts leashed processes, is SIGKILLed, and we count "
        "what is left",
        "",
    ]
    header = ["mode", "mechanism", "processes", "survivors", "time to reap", "scenario"]
    rows = [header]
    for r in results:
        if not r.available:
            rows.append(
                [
                    r.mode,
                    _short_mechanism(r.mechanism),
                    "-",
                    "-",
                    "unavailable",
                    "; ".join(r.notes) or "not offered on this machine",
                ]
            )
            continue
        reap = f"{r.reap_ms:.1f} ms" if r.reap_ms is not None else "-"
        if r.survivors:
            reap = f"> {REAP_TIMEOUT_S + (DOCTOR_GRACE_S if r.mode == 'grace' else 0):g} s"
        scenario = r.scenario
        if r.mode == "grace":
            scenario += f" (grace {DOCTOR_GRACE_S:g} s)"
        if r.error:
            scenario = f"ERROR: {r.error}"
        rows.append(
            [
                r.mode,
                _short_mechanism(r.mechanism),
                str(r.started),
                str(len(r.survivors)),
                reap,
                scenario,
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    right = {2, 3, 4}
    for row in rows:
        cells = [
            row[i].rjust(widths[i]) if i in right else row[i].ljust(widths[i])
            for i in range(len(widths))
        ]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    lines.append("")
    tested = [r for r in results if r.available]
    if ok:
        lines.append(
            f"OK: nothing survived its SIGKILLed parent in {len(tested)} of {len(results)} "
            "modes" + ("" if len(tested) == len(results) else " (the others are unavailable)")
        )
    else:
        bad = [r.mode for r in tested if not r.ok]
        total = sum(len(r.survivors) for r in tested)
        lines.append(
            f"FAIL: {', '.join(bad) or 'no mode could be tested'}"
            + (f": {total} process(es) outlived their parent (killed since)" if total else "")
        )
    return "\n".join(lines)
