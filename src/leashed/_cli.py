"""The ``leashed`` command: ``leashed run`` ties a command to a process, ``leashed doctor``
proves the leash on this machine, live."""

from __future__ import annotations

import argparse
import errno
import os
import shutil
import signal
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from . import __version__, _doctor, _helper, _procfs
from ._console import PROG, say
from ._plan import NAMES, validate_death_signal, validate_grace
from ._platform import IS_LINUX, plan_for_cli
from ._protocol import HelperCommand

EPILOG = """\
examples:
  leashed run -- my-server --port 8080
      my-server dies when the shell script that ran this line dies, by any death
      (kill -9 included); leashed itself does not stay around: it becomes my-server.
  leashed run --tree -- make -j8
      the whole tree (every descendant; on Linux daemons that setsid() too) is
      ended when the script dies.
  leashed run --tree --grace 5 -- ./run-db.sh
      on the script's death: SIGTERM to the tree, 5 s to clean up, then SIGKILL.
  leashed run --tree --keep-leftovers --grace 5 -- ./start-db.sh
      start-db.sh daemonises the database and exits; leashed exits with its status,
      the database runs on until the script dies (then SIGTERM, 5 s, SIGKILL).
      Without --keep-leftovers --tree ends the leftovers when COMMAND exits.
  leashed run --pid 4242 -- tail -f app.log
      tail ends when process 4242 ends (any process, not just the parent).
  leashed doctor
      starts sacrificial parents, SIGKILLs them and shows whether anything survived.

exit status of `leashed run`: the command's own (killed by a signal: the same signal);
126 the command is not executable, 127 not found, 2 bad usage, 1 the watched process is
already gone or leashed itself failed.
"""

RUN_USAGE = (
    "leashed run [-h] [--tree [--keep-leftovers]] [--grace S] [--signal SIG] [--pid PID] "
    "-- COMMAND [ARGS...]"
)
RUN_DESCRIPTION = """\
Run COMMAND tied to the process that ran leashed (the shell script), or to --pid PID:
when that process dies, by any death, COMMAND gets the death signal. The exit status,
stdio and signals pass through.

Without --tree/--grace/--pid, leashed replaces itself with COMMAND (same pid) after
starting a detached guardian that watches the script's process (on Linux with a pidfd;
on kernels without pidfd_open, before 5.3, PR_SET_PDEATHSIG is armed instead).
With --tree or --grace a small supervisor stays between the script and COMMAND: it
watches the script's process with a pidfd, forwards the signals sent to leashed's pid,
and exits with COMMAND's status; a SIGKILL of leashed's pid (a harness's kill -9, a
timeout) ends COMMAND (with --tree: every descendant) as the script's death would.
With --pid alone, a detached guardian watches PID and COMMAND keeps leashed's pid.
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
    try:
        return validate_grace(value)  # type: ignore[return-value]  # never None for a float
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("grace ")) from None


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
        except _helper.HelperUnusableError:
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
    _add_run(commands)
    doctor = commands.add_parser(
        "doctor",
        help="prove the leash on this machine, live",
        description="For every scenario this machine offers: start a sacrificial parent with "
        "leashed children and grandchildren, SIGKILL it, and count the survivors (found by "
        "a marker in their environment; leftovers are killed by pid). Exit status 0 only "
        "if nothing survived in any available scenario.",
    )
    doctor.add_argument("--json", action="store_true", help="print a JSON object")
    return parser


def _add_run(commands: Any) -> None:
    """The ``run`` subcommand and its options (dests named as LeashOptions' fields)."""
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
        "--keep-leftovers",
        action="store_true",
        help="with --tree: when COMMAND exits, exit with its status but keep what it left "
        "running (a daemon it started) until the script dies",
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
            return _doctor.doctor(as_json=args.json)
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
    if args.keep_leftovers and not args.tree:
        _run_usage_error(parser, "--keep-leftovers needs --tree")
    options = {name: getattr(args, name) for name in NAMES if hasattr(args, name)}
    try:
        exec_command(command, pid=args.pid, **options)
    except CommandError as exc:
        say(str(exc))
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
        return _procfs.is_running(pid)
    return True


def helper_command_line(
    command: Sequence[str],
    program: str,
    *,
    pid: int | None = None,
    parent: int | None = None,
    **options: Any,
) -> list[str]:
    """The helper argv that ``leashed run`` execs (``parent`` defaults to os.getppid());
    ``options``: the leash options (LeashOptions' names) the command line gave."""
    plan = plan_for_cli(pid=pid, **options)
    if parent is None:
        parent = os.getppid()
    if pid is not None:
        helper_options = HelperCommand(plan, watch_pid=pid)
    elif plan.mechanism == "direct":
        # No pidfd on this kernel: PDEATHSIG + getppid() check.
        helper_options = HelperCommand(plan, parent_pid=parent)
    else:
        # A pidfd on the parent, and -p so the helper re-checks getppid() once the pidfd
        # is open (the parent may have died, and its pid been reused, before the watch).
        helper_options = HelperCommand(plan, parent_pid=parent, watch_pid=parent)
    helper = _helper.helper_path()
    assert helper is not None
    return [os.fspath(item) for item in helper_options.argv(helper, program, command)]


def exec_command(command: Sequence[str], *, pid: int | None, **options: Any) -> NoReturn:
    """Replace this process by the helper that leashes ``command``; CommandError if it can't."""
    try:
        helper = _helper.helper_path()
    except _helper.HelperOverrideError as exc:
        raise CommandError(1, str(exc)) from None
    if helper is None:
        raise CommandError(1, "leashed-helper is not installed; reinstall leashed")
    _check_still_tied(pid)
    program = resolve_command(command[0])
    try:
        cmd = helper_command_line(command, program, pid=pid, **options)
    except (RuntimeError, ValueError) as exc:
        raise CommandError(1, str(exc)) from None
    _restore_signals()
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execv(helper, cmd)
    except OSError as exc:
        raise CommandError(126, f"{helper}: {exc.strerror}") from None


def _check_still_tied(pid: int | None) -> None:
    """CommandError(1) if what COMMAND is to be tied to died while this CLI started.

    Without --pid, a parent that died before we looked has left us to init (pid 1): we
    would tie COMMAND to init. With --pid, a process that started after us cannot be the
    one whose pid the caller gave us: that pid was reused.
    """
    if pid is None:
        if os.getppid() == 1:
            raise CommandError(
                1, "the process that ran leashed is already gone; COMMAND was not started"
            )
        return
    if not process_exists(pid):
        raise CommandError(1, f"--pid {pid}: no such process")
    theirs, ours = _procfs.read_stat(pid), _procfs.read_stat(os.getpid())
    if theirs is not None and ours is not None and theirs.start_time > ours.start_time:
        raise CommandError(
            1, f"--pid {pid}: that process has exited (its pid now names a newer process)"
        )


def _restore_signals() -> None:
    """Undo what the Python runtime changed (SIGPIPE, SIGXFSZ ignored), as subprocess does."""
    for name in ("SIGPIPE", "SIGXFSZ"):
        number = getattr(signal, name, None)
        if number is not None:
            signal.signal(number, signal.SIG_DFL)
