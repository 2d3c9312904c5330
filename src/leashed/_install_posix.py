"""install()'s patch mechanism (POSIX): every spawn point through leashed's mechanisms.

- ``subprocess.Popen._execute_child``, on the class itself (subclasses, isinstance checks
  and ``mock.patch("subprocess.Popen")`` keep working): leashed.Popen's path. With
  ``tree`` on Linux the child is the supervisor's front: ``p.pid`` is the front's.
- ``os.posix_spawn``/``posix_spawnp``, ``os.system``, ``os.spawn*`` (``os._spawnvef``)
  and ``multiprocessing.util.spawnv_passfds`` (spawn and forkserver start methods): the
  helper's argv, as ``leashed.wrap`` builds it, watching this process by pidfd/kqueue.
- forked Python children (``os.fork``, ``os.forkpty``, multiprocessing's fork method):
  an at-fork hook in the child watches the parent process and ends the child with the
  plan's death signal; a fork made on the main thread also arms PR_SET_PDEATHSIG
  (Linux), which outlives an exec (``pty.spawn``). The forked child inherits the
  patches, so what it starts is leashed to it in turn.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import shutil
import signal
import sys
import threading
import time
import types
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from . import _helper, _seam, _spawner
from ._linux import _prctl, arm_death_signal
from ._plan import SIGKILL, LeashOptions, LeashPlan
from ._platform import BACKEND, IS_LINUX, plan_for_popen, plan_for_wrap
from ._system import tree_mechanism
from ._watch import watch_parent
from ._wrap import helper_argv

assert sys.platform != "win32", "the Windows install() is a job object"  # for type checkers

#: The plans in use while installed: (popen plan, spawn plan), or None.
_plans: tuple[LeashPlan, LeashPlan] | None = None
#: The functions replaced, as found when installing (the real ones, called by ours).
_real: dict[str, Any] = {}


def plans(options: LeashOptions) -> tuple[LeashPlan, LeashPlan]:
    """(plan for posix_spawn-like spawns, plan for subprocess) for install()'s options.

    Raises RuntimeError when leashed-helper is missing: install() never downgrades.
    """
    leash = {
        f.name: getattr(options, f.name)
        for f in dataclasses.fields(options)
        if f.name not in ("kill_on_drop", "mechanism")  # install() chooses both
    }
    if _helper.helper_path() is None:
        raise _helper.missing_error("leashed.install()")
    spawn_plan = plan_for_wrap(mechanism=None, **leash)
    popen_plan = plan_for_popen(kill_on_drop=False, mechanism=None, **leash)
    return spawn_plan, popen_plan


def apply(patches: Any, popen_plan: LeashPlan, spawn_plan: LeashPlan) -> None:
    """Replace every spawn point (the fork hook is armed apart)."""
    global _plans
    import multiprocessing.util
    import subprocess

    _plans = (popen_plan, spawn_plan)
    _real.update(
        posix_spawn=os.posix_spawn,
        posix_spawnp=os.posix_spawnp,
        spawnv_passfds=multiprocessing.util.spawnv_passfds,
    )
    patches.replace(subprocess.Popen, "_execute_child", _execute_child)
    patches.replace(os, "posix_spawn", posix_spawn)
    patches.replace(os, "posix_spawnp", posix_spawnp)
    patches.replace(os, "system", system)
    patches.replace(os, "_spawnvef", _spawnvef)
    patches.replace(multiprocessing.util, "spawnv_passfds", spawnv_passfds)


# -- spawns and forks kept apart -----------------------------------------------------------


class _SpawnGate:
    """Spawns (many at once) kept apart from os.fork() and libc's posix_spawn (one at a
    time) while installed.

    A spawn's vfork child shares this process's memory until it execs, and libc locks
    with it: glibc's fork() and posix_spawn() hold a lock that its sigaction() waits for
    (seen with glibc 2.42). If this process is SIGKILLed while one thread is inside one of
    them, the lock stays held in that memory, and another thread's not-yet-exec'd child
    blocks on it forever, every signal blocked and no leash yet. So such a call waits
    until no spawn is in flight, and spawns wait while it runs or waits. A thread's nested
    spawns, and a fork made inside a spawn (a preexec_fn), do not wait on themselves.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._spawning = 0
        self._alone = False
        self._depth = threading.local()

    @contextlib.contextmanager
    def spawn(self) -> Iterator[None]:
        depth = getattr(self._depth, "n", 0)
        if depth == 0:
            with self._cond:
                while self._alone:
                    self._cond.wait()
                self._spawning += 1
        self._depth.n = depth + 1
        try:
            yield
        finally:
            self._depth.n = depth
            if depth == 0:
                with self._cond:
                    self._spawning -= 1
                    if self._spawning == 0:
                        self._cond.notify_all()

    @contextlib.contextmanager
    def alone(self) -> Iterator[None]:
        """A posix_spawn() of libc, with no other spawn in flight."""
        entered = self.enter_alone()
        try:
            yield
        finally:
            if entered:
                self.leave_alone()

    def enter_alone(self) -> bool:
        """Before a fork or a libc posix_spawn: wait for the spawns in flight; False if
        this thread is in one (it cannot wait on itself)."""
        if getattr(self._depth, "n", 0):
            return False
        with self._cond:
            while self._alone:
                self._cond.wait()
            self._alone = True
            while self._spawning:
                self._cond.wait()
        return True

    def leave_alone(self) -> None:
        with self._cond:
            self._alone = False
            self._cond.notify_all()


_gate = _SpawnGate()


# -- subprocess ---------------------------------------------------------------------------


def _execute_child(self: Any, *args: Any, **kwargs: Any) -> None:
    """subprocess.Popen._execute_child while installed: leashed.Popen's own path."""
    current = _plans
    if current is None:  # uninstalled, but a caller kept this function
        _seam.STDLIB_EXECUTE_CHILD(self, *args, **kwargs)
        return
    self._leash = BACKEND.ChildLeash(current[0])
    with _gate.spawn():
        BACKEND.execute_child(self, _seam.bind(args, kwargs))


# -- the posix_spawn family ---------------------------------------------------------------


def _helper_argv(program: Any, argv: Sequence[Any]) -> list[Any]:
    """The helper's argv that runs ``program`` with ``argv``, leashed to this process."""
    assert _plans is not None
    return helper_argv(_plans[1], program, argv)


def _is_helper(path: Any) -> bool:
    try:
        return os.fsdecode(os.fspath(path)) == _helper.helper_path()
    except TypeError:
        return False


def _checked_program(path: Any, search: bool) -> Any:
    """``path`` as the helper must exec it; FileNotFoundError/PermissionError as
    posix_spawn raises them (the helper reports an exec failure only as status 127)."""
    text = os.fsdecode(os.fspath(path))
    if search and "/" not in text:
        found = shutil.which(text, path=os.environ.get("PATH", os.defpath))
        if found is None:
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)
        return found
    if not os.path.exists(text):
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)
    if not os.access(text, os.X_OK) or os.path.isdir(text):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)
    return text if "/" in text else "./" + text  # posix_spawn does not search PATH


def _spawn(
    real: Callable[..., int], path: Any, argv: Any, env: Any, search: bool, **kwargs: Any
) -> int:
    if _plans is None or _is_helper(path) or not isinstance(argv, (list, tuple)) or not argv:
        with _gate.alone():
            return real(path, argv, env, **kwargs)  # the stdlib's own errors for bad argv
    program = _checked_program(path, search)
    helper = _helper.helper_path()
    with _gate.alone():
        return real(helper, _helper_argv(program, argv), env, **kwargs)


def posix_spawn(path: Any, argv: Any, env: Any, **kwargs: Any) -> int:
    """os.posix_spawn, the child leashed (its pid is the target's, or the front's with
    ``tree``)."""
    return _spawn(_real["posix_spawn"], path, argv, env, False, **kwargs)


def posix_spawnp(path: Any, argv: Any, env: Any, **kwargs: Any) -> int:
    """os.posix_spawnp, the child leashed; PATH searched here, in this process's PATH."""
    return _spawn(_real["posix_spawnp"], path, argv, env, True, **kwargs)


_SYSTEM_SIGNALS: tuple[int, ...] = (int(signal.SIGINT), int(signal.SIGQUIT))


def system(command: Any) -> int:
    """os.system as system(3): ``/bin/sh -c command``, SIGINT and SIGQUIT ignored here
    while it runs (on the main thread: Python sets dispositions only there), the wait
    status returned."""
    sys.audit("os.system", os.fsencode(command) if isinstance(command, str) else command)
    saved: list[tuple[int, Any]] = []  # (signal number, its disposition before)
    if threading.current_thread() is threading.main_thread():
        for sig in _SYSTEM_SIGNALS:
            if signal.getsignal(sig) is not None:  # None: set outside Python, not restorable
                saved.append((sig, signal.signal(sig, signal.SIG_IGN)))
    try:
        if saved:
            defaults = [sig for sig, old in saved if old != signal.SIG_IGN]
        else:
            defaults = _signal_default_for(_SYSTEM_SIGNALS)
        try:
            pid = posix_spawn("/bin/sh", ["sh", "-c", command], os.environ, setsigdef=defaults)
        except OSError:
            return -1
        while True:
            _, status = os.waitpid(pid, 0)
            if not os.WIFSTOPPED(status):
                return status
    finally:
        for sig, old in saved:
            signal.signal(sig, old)


def _spawnvef(mode: int, file: Any, args: Any, env: Any, func: Callable[..., Any]) -> int:
    """os._spawnvef (behind os.spawnv, spawnve, spawnvp, spawnvpe and the spawnl* ones):
    an exec failure is status 127, as in os's own fork child."""
    if not isinstance(args, (tuple, list)):
        raise TypeError("argv must be a tuple or a list")
    if not args or not args[0]:
        raise ValueError("argv first element cannot be empty")
    search = func in (os.execvp, os.execvpe)
    text = os.fsdecode(os.fspath(file))
    program = text if search or "/" in text else "./" + text
    environ = os.environ if env is None else env
    helper = _helper.helper_path()
    with _gate.alone():
        pid = _real["posix_spawn"](helper, _helper_argv(program, args), environ)
    if mode == os.P_NOWAIT:
        return int(pid)
    while True:
        _, status = os.waitpid(pid, 0)
        if not os.WIFSTOPPED(status):
            return os.waitstatus_to_exitcode(status)


def spawnv_passfds(path: Any, args: Sequence[Any], passfds: Sequence[int]) -> int:
    """multiprocessing.util.spawnv_passfds (spawn and forkserver methods), leashed."""
    real: Callable[..., int] = _real["spawnv_passfds"]
    if _plans is None or _is_resource_tracker(args):
        with _gate.spawn():
            return real(path, args, passfds)
    helper = _helper.helper_path()
    assert helper is not None
    with _gate.spawn():
        return real(os.fsencode(helper), _helper_argv(path, args), passfds)  # bytes, as callers


#: How multiprocessing starts its resource tracker (``-c`` code, every CPython 3.10+).
_RESOURCE_TRACKER = "from multiprocessing.resource_tracker import main"


def _is_resource_tracker(args: Sequence[Any]) -> bool:
    """Whether this spawn is multiprocessing's resource tracker. It is left unleashed: its
    job is to outlive a dead parent long enough to unlink the shared memory and semaphores
    that parent leaked, and it exits by itself once every holder of its pipe is gone."""
    return any(isinstance(a, str) and a.startswith(_RESOURCE_TRACKER) for a in args)


# -- forked Python children -------------------------------------------------------------------

#: The death (signal, grace) of forked children while installed; None: the hook is idle.
_fork_death: tuple[int, float | None] | None = None
_hook_registered = False
#: Set in the parent just before each fork, per forking thread (two threads may each be
#: between their before-hook and their fork): thread ident -> (parent pid, forked on the
#: main thread, a subprocess child that is about to exec the helper, whether it holds the
#: spawn gate). The child's one thread is the forking one, with the same ident.
_fork_info: dict[int, tuple[int, bool, bool, bool]] = {}


def _spawn_codes() -> frozenset[types.CodeType]:
    """The frames that call subprocess's fork_exec (with a preexec_fn, its child runs the
    at-fork hooks before it execs the helper, which has its own leash)."""
    codes = {_spawner._serve.__code__, _spawner.on_long_lived_thread.__code__}
    codes.add(_seam.STDLIB_EXECUTE_CHILD.__code__)
    return frozenset(codes)


_SPAWN_CODES = _spawn_codes()


def _before_fork() -> None:
    if _fork_death is None:
        return
    try:
        caller: types.CodeType | None = sys._getframe(1).f_code
    except ValueError:  # a fork made from C with no Python frame above it
        caller = None
    on_main = threading.current_thread() is threading.main_thread()
    spawning = caller in _SPAWN_CODES
    gated = not spawning and _gate.enter_alone()
    _fork_info[threading.get_ident()] = (os.getpid(), on_main, spawning, gated)


def _after_fork_in_parent() -> None:
    info = _fork_info.pop(threading.get_ident(), None)
    if info is not None and info[3]:
        _gate.leave_alone()


def _after_fork_in_child() -> None:
    global _gate
    death = _fork_death
    parent, on_main, spawning, _ = _fork_info.pop(threading.get_ident(), (0, False, False, False))
    _fork_info.clear()  # the other threads' entries: those threads are not in this child
    _gate = _SpawnGate()  # the other threads counted in the old one are not in this child
    if death is None or spawning or parent == 0:
        return
    death_signal, grace = death
    if IS_LINUX and on_main:
        arm_death_signal(death_signal, parent)  # exits if the parent is already gone
    if os.getppid() != parent:
        os._exit(1)
    try:
        watch_parent(lambda: _die(death_signal, grace))
    except ProcessLookupError:
        os._exit(1)


def arm_fork_hook() -> None:
    """Leash forked Python children from now on (the hook is registered once: it cannot
    be unregistered, so it is idle while not installed)."""
    global _fork_death, _hook_registered
    assert _plans is not None
    _fork_death = _plan_death(_plans[0])
    if IS_LINUX:
        _prctl()  # libc loaded here: a forked child must not dlopen
    if not _hook_registered:
        os.register_at_fork(
            before=_before_fork,
            after_in_parent=_after_fork_in_parent,
            after_in_child=_after_fork_in_child,
        )
        _hook_registered = True


def disarm_fork_hook() -> None:
    global _fork_death, _plans
    _fork_death = None
    _plans = None


# -- what capabilities() says -----------------------------------------------------------------


#: What capabilities() says of forked children while installed.
_FORK_NOTES = (
    "the forked child watches this process (pidfd/kqueue thread) and ends itself with "
    "the death signal; forks on the main thread also arm PR_SET_PDEATHSIG (Linux)",
    "what the forked child starts is leashed to it (it inherits install())",
    "a forked child that execs (pty.spawn) is leashed only by PR_SET_PDEATHSIG: "
    "forks of the main thread on Linux; its own descendants are not",
)
#: How plain subprocess children are leashed while installed, by the tree mechanism.
_SUBPROCESS_HOW = {
    "cgroup": "the cgroup mechanism (p.pid is the target's)",
    "supervisor": "the supervisor (p.pid is its front)",
}


def api_coverage(tree: bool) -> dict[str, dict[str, Any]]:
    """Per spawn API: covered, how, whole_tree, notes, for install(tree=tree)."""
    helper = _helper.helper_path() is not None
    sup = _SUBPROCESS_HOW[tree_mechanism()] if tree else "the direct mechanism"
    spawn_how = f"the helper's {'supervisor' if tree else 'guardian'}, watching this process"
    fork_notes = list(_FORK_NOTES)

    def entry(how: str, whole_tree: bool, notes: list[str] | None = None) -> dict[str, Any]:
        return {"covered": helper, "how": how, "whole_tree": whole_tree, "notes": notes or []}

    return {
        "subprocess": entry(
            f"subprocess.Popen._execute_child replaced on the class: {sup}",
            tree,
            ["asyncio, anyio, trio, os.popen and every library on subprocess included"],
        ),
        "os.posix_spawn": entry(
            spawn_how,
            tree,
            [
                "a missing program raises FileNotFoundError (checked before the spawn)",
                "posix_spawnp searches this process's PATH",
            ],
        ),
        "os.system": entry(
            f"/bin/sh -c through {spawn_how}",
            tree,
            [
                "SIGINT/SIGQUIT are ignored in the caller while it waits only on the main thread",
            ],
        ),
        "os.spawn": entry(f"os._spawnvef through {spawn_how}", tree),
        "os.fork": entry("at-fork hook in the child", False, fork_notes),
        "multiprocessing.fork": entry("at-fork hook in the worker", False, fork_notes[:2]),
        "multiprocessing.spawn": entry(
            f"multiprocessing.util.spawnv_passfds: {spawn_how}",
            tree,
            [
                "multiprocessing's resource tracker is left unleashed: it outlives a dead "
                "parent to unlink what it leaked, then exits by itself"
            ],
        ),
        "multiprocessing.forkserver": entry(
            f"the forkserver started through {spawn_how}",
            tree,
            [] if tree else ["without tree the forkserver's workers are not leashed"],
        ),
        "concurrent.futures.ProcessPoolExecutor": entry(
            "through its multiprocessing start method", tree
        ),
    }


def _die(death_signal: int, grace_s: float | None) -> None:
    """End this process as its leash says: the death signal, the grace, then SIGKILL."""
    with contextlib.suppress(OSError):
        os.kill(os.getpid(), death_signal)
    if death_signal != SIGKILL:
        time.sleep(grace_s or 0.0)
        os.kill(os.getpid(), SIGKILL)


def _plan_death(plan: LeashPlan) -> tuple[int, float | None]:
    """(death signal, grace in seconds) of a plan."""
    grace = None if plan.grace_ms is None else plan.grace_ms / 1000
    return plan.death_signal, grace


def _signal_default_for(signals: Sequence[int]) -> list[int]:
    """The signals among ``signals`` that are not ignored here (system(3)'s child keeps
    an ignored SIGINT/SIGQUIT ignored, and gets every other one at its default)."""
    return [sig for sig in signals if signal.getsignal(sig) != signal.SIG_IGN]
