"""The leash options, validated once, and the frozen plan of one spawn.

Pure: nothing here looks at the machine (what a platform refuses, the backend checks).
``_platform`` turns validated options into a plan for this machine (which mechanism,
which fallback).
"""

from __future__ import annotations

import dataclasses
import math
import signal
from dataclasses import dataclass, replace
from typing import Any, Literal

#: How a child is leashed. One name per mechanism, used by the code, ``capabilities()``,
#: the CLI, the helper's modes and the docs:
#:   direct      the helper arms PR_SET_PDEATHSIG and execs the target in place (Linux)
#:   supervisor  the helper stays between parent and target (tree, grace)
#:   guardian    a detached guardian process watches parent and target
#:   job         a kill-on-close job object (Windows)
#:   preexec_fn  the helper is missing: a preexec_fn arms PR_SET_PDEATHSIG (slow fallback)
Mechanism = Literal["direct", "supervisor", "guardian", "job", "preexec_fn"]
#: What ``mechanism=`` accepts.
MECHANISM_CHOICES: tuple[Mechanism, ...] = ("direct", "supervisor", "guardian")

#: SIGKILL's number, 9 on every POSIX system; Windows' signal module lacks the name.
#: The one definition in Python: every other module imports it from here.
SIGKILL = 9
#: The longest grace the helper accepts: one day.
GRACE_MAX_S = 86400.0
#: Signals whose default action neither ends nor stops a process: as a death signal the
#: child would live on (SIGCHLD, SIGCONT, SIGURG, SIGWINCH, and the stop signals).
_HARMLESS = ("SIGCHLD", "SIGCONT", "SIGURG", "SIGWINCH", "SIGSTOP", "SIGTSTP", "SIGTTIN", "SIGTTOU")


@dataclass(frozen=True, kw_only=True)
class LeashOptions:
    """Every leash option, the one definition of its name and default; ``validated``
    checks them. Each API (Popen, leashed.asyncio, wrap, the CLI) builds one from its
    keywords; a new option is a new field here (and its check in ``validated``)."""

    tree: bool = False
    grace: float | None = None  # seconds, validated to a float
    death_signal: int | None = None
    kill_on_drop: bool = False
    mechanism: Mechanism | None = None
    keep_leftovers: bool = False

    @classmethod
    def validated(cls, **options: Any) -> LeashOptions:
        """The options, each checked; TypeError/ValueError name the option (and an
        unknown keyword is a TypeError, as for any function)."""
        return _validated(cls(**options))

    @classmethod
    def take(cls, kwargs: dict[str, Any]) -> dict[str, Any]:
        """Remove the leash options from ``kwargs`` (an API's keywords) and return them."""
        return {name: kwargs.pop(name) for name in NAMES if name in kwargs}


#: The leash options' names, in field order.
NAMES: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(LeashOptions))
#: The options at their defaults.
DEFAULTS = LeashOptions()
#: The options that are flags (each must be a bool).
_BOOLS = tuple(f.name for f in dataclasses.fields(LeashOptions) if f.type == "bool")


@dataclass(frozen=True, kw_only=True)
class LeashPlan(LeashOptions):
    """What one spawn will do: the options resolved for this machine (the mechanism
    chosen, the death signal given its default) and the grace in milliseconds.

    ``tree`` decides *what* ends (the target, or every descendant); ``death_signal`` and
    ``grace_ms`` decide *how*; ``keep_leftovers`` decides *when* a tree's leftovers end:
    with the target (False), or only with the parent (True).
    """

    mechanism: Mechanism = "direct"
    death_signal: int = SIGKILL
    grace_ms: int | None = None  # None: the death signal only, never SIGKILL after it

    def __post_init__(self) -> None:
        # Hashed once: a plan keys the helper's cached argv on every spawn.
        values = tuple(getattr(self, f.name) for f in dataclasses.fields(self))
        object.__setattr__(self, "_hash", hash(values))

    def __hash__(self) -> int:
        return self._hash  # type: ignore[attr-defined, no-any-return]

    def with_mechanism(self, mechanism: Mechanism) -> LeashPlan:
        """The same plan through another mechanism (a fallback, or a safer choice)."""
        return replace(self, mechanism=mechanism)


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
    if not hasattr(signal, "SIGCHLD"):  # Windows: the backend allows SIGKILL only
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


def _check_bool(name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, not {type(value).__name__}")


def _validated(options: LeashOptions) -> LeashOptions:
    """Check every leash option's type and value; TypeError/ValueError name the option."""
    for name in _BOOLS:
        _check_bool(name, getattr(options, name))
    if options.keep_leftovers and not options.tree:
        raise ValueError(
            "keep_leftovers=True needs tree=True: only a supervised tree has leftovers to keep"
        )
    mechanism = options.mechanism
    if mechanism is not None and mechanism not in MECHANISM_CHOICES:
        raise ValueError(
            f"mechanism must be one of {', '.join(map(repr, MECHANISM_CHOICES))} or None, "
            f"got {mechanism!r}"
        )
    signal_number = validate_death_signal(options.death_signal)
    grace_s = validate_grace(options.grace)
    if options.tree and mechanism not in (None, "supervisor"):
        raise ValueError(f"tree=True needs the supervisor; it cannot use mechanism={mechanism!r}")
    if grace_s is not None and mechanism == "direct":
        raise ValueError(
            "grace needs the supervisor or the guardian: a kernel death signal cannot escalate"
        )
    return replace(options, grace=grace_s, death_signal=signal_number)


def plan_from(options: LeashOptions, mechanism: Mechanism) -> LeashPlan:
    """The plan for validated ``options`` through ``mechanism``: defaults for the signal
    and the grace."""
    signal_number = options.death_signal
    if signal_number is None:
        signal_number = int(signal.SIGTERM) if options.grace else SIGKILL
    grace_ms = None if options.grace is None else math.ceil(options.grace * 1000)
    given = {name: getattr(options, name) for name in NAMES}
    return LeashPlan(
        **{**given, "mechanism": mechanism, "death_signal": signal_number}, grace_ms=grace_ms
    )
