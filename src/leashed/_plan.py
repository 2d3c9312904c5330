"""The leash options, validated once, and the frozen plan of one spawn.

Pure: nothing here looks at the machine. ``_platform`` turns a validated request into a
plan for this machine (which mechanism, which fallback).
"""

from __future__ import annotations

import math
import signal
import sys
from dataclasses import dataclass, replace
from typing import Literal

#: How a child is leashed. One name per mechanism, used by the code, ``capabilities()``,
#: the CLI, the helper's modes and the docs:
#:   direct      the helper arms PR_SET_PDEATHSIG and execs the target in place (Linux)
#:   supervisor  the helper stays between parent and target (tree, grace)
#:   guardian    a detached guardian process watches parent and target
#:   cgroup      the target in a cgroup v2 of its own, one watcher per process (Linux, tree)
#:   job         a kill-on-close job object (Windows)
#:   preexec_fn  the helper is missing: a preexec_fn arms PR_SET_PDEATHSIG (slow fallback)
Mechanism = Literal["direct", "supervisor", "guardian", "cgroup", "job", "preexec_fn"]
#: What ``mechanism=`` accepts.
MECHANISM_CHOICES: tuple[Mechanism, ...] = ("direct", "supervisor", "guardian", "cgroup")
#: The mechanisms that end a whole tree.
TREE_MECHANISMS = (None, "supervisor", "cgroup")

#: SIGKILL's number, 9 on every POSIX system; Windows' signal module lacks the name.
SIGKILL = 9
#: The longest grace the helper accepts: one day.
GRACE_MAX_S = 86400.0
#: Signals whose default action neither ends nor stops a process: as a death signal the
#: child would live on (SIGCHLD, SIGCONT, SIGURG, SIGWINCH, and the stop signals).
_HARMLESS = ("SIGCHLD", "SIGCONT", "SIGURG", "SIGWINCH", "SIGSTOP", "SIGTSTP", "SIGTTIN", "SIGTTOU")


@dataclass(frozen=True)
class LeashRequest:
    """The leash options as the caller gave them, validated, before any platform choice."""

    tree: bool
    grace_s: float | None
    death_signal: int | None
    kill_on_drop: bool
    mechanism: Mechanism | None
    keep_leftovers: bool = False


@dataclass(frozen=True)
class LeashPlan:
    """What one spawn will do: the mechanism, the signal and the grace, all validated.

    ``tree`` decides *what* ends (the target, or every descendant); ``death_signal`` and
    ``grace_ms`` decide *how*; ``keep_leftovers`` decides *when* a tree's leftovers end:
    with the target (False), or only with the parent (True).
    """

    mechanism: Mechanism
    death_signal: int
    grace_ms: int | None  # None: the death signal only, never SIGKILL after it
    tree: bool
    kill_on_drop: bool
    keep_leftovers: bool = False

    def with_mechanism(self, mechanism: Mechanism) -> LeashPlan:
        """The same plan through another mechanism (a fallback, or a safer choice)."""
        return replace(self, mechanism=mechanism)

    @property
    def uses_helper(self) -> bool:
        """Whether the spawn goes through leashed-helper."""
        return self.mechanism in MECHANISM_CHOICES


def validate_death_signal(death_signal: object) -> int | None:
    """Return the signal number, or raise TypeError/ValueError naming ``death_signal``."""
    if death_signal is None:
        return None
    if isinstance(death_signal, bool) or not isinstance(death_signal, int):
        raise TypeError(
            f"death_signal must be a signal number or signal.Signals, "
            f"not {type(death_signal).__name__}"
        )
    number = int(death_signal)
    if sys.platform == "win32":
        if number != SIGKILL:
            raise ValueError(
                f"death_signal must be SIGKILL (9) on Windows: a kill-on-close job object "
                f"ends processes at once, got {number}"
            )
        return number
    valid = {int(s) for s in signal.valid_signals()}
    harmless = {int(getattr(signal, name)) for name in _HARMLESS if hasattr(signal, name)}
    if number not in valid or number in harmless:
        what = _signal_name(number)
        raise ValueError(
            f"death_signal must be a signal whose default action ends a process "
            f"(such as SIGKILL, SIGTERM, SIGINT, SIGHUP, SIGUSR1), got {what}"
        )
    return number


def _signal_name(number: int) -> str:
    try:
        return f"{signal.Signals(number).name} ({number})"
    except ValueError:
        return str(number)


def validate_grace(grace: object) -> float | None:
    """Return the grace in seconds, or raise TypeError/ValueError naming ``grace``."""
    if grace is None:
        return None
    if isinstance(grace, bool) or not isinstance(grace, (int, float)):
        raise TypeError(f"grace must be a number of seconds or None, not {type(grace).__name__}")
    try:
        value = float(grace)
    except OverflowError:
        value = math.inf
    if math.isnan(value) or not 0 <= value <= GRACE_MAX_S:
        raise ValueError(
            f"grace must be a number of seconds from 0 to {GRACE_MAX_S:.0f} (one day), "
            f"got {grace!r}"
        )
    return value


def validate_request(
    *,
    tree: object = False,
    grace: object = None,
    death_signal: object = None,
    kill_on_drop: object = False,
    mechanism: object = None,
    keep_leftovers: object = False,
) -> LeashRequest:
    """Check every leash option's type and value; TypeError/ValueError name the option."""
    if not isinstance(tree, bool):
        raise TypeError(f"tree must be a bool, not {type(tree).__name__}")
    if not isinstance(keep_leftovers, bool):
        raise TypeError(f"keep_leftovers must be a bool, not {type(keep_leftovers).__name__}")
    if keep_leftovers and not tree:
        raise ValueError(
            "keep_leftovers=True needs tree=True: only a supervised tree has leftovers to keep"
        )
    if not isinstance(kill_on_drop, bool):
        raise TypeError(f"kill_on_drop must be a bool, not {type(kill_on_drop).__name__}")
    if mechanism is not None and mechanism not in MECHANISM_CHOICES:
        raise ValueError(
            f"mechanism must be one of {', '.join(map(repr, MECHANISM_CHOICES))} or None, "
            f"got {mechanism!r}"
        )
    signal_number = validate_death_signal(death_signal)
    grace_s = validate_grace(grace)
    if tree and mechanism not in TREE_MECHANISMS:
        raise ValueError(
            f"tree=True needs the supervisor or the cgroup mechanism; it cannot use "
            f"mechanism={mechanism!r}"
        )
    if mechanism == "cgroup" and not tree:
        raise ValueError("mechanism='cgroup' ends the whole tree: it needs tree=True")
    if grace_s is not None and mechanism == "direct":
        raise ValueError(
            "grace needs the supervisor or the guardian: a kernel death signal cannot escalate"
        )
    return LeashRequest(tree, grace_s, signal_number, kill_on_drop, mechanism, keep_leftovers)


def plan_from(request: LeashRequest, mechanism: Mechanism) -> LeashPlan:
    """The plan for ``request`` through ``mechanism``: defaults for the signal and grace."""
    signal_number = request.death_signal
    if signal_number is None:
        signal_number = int(signal.SIGTERM) if request.grace_s else SIGKILL
    grace_ms = None if request.grace_s is None else math.ceil(request.grace_s * 1000)
    return LeashPlan(
        mechanism,
        signal_number,
        grace_ms,
        request.tree,
        request.kill_on_drop,
        request.keep_leftovers,
    )
