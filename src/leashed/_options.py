"""Validation of the leash options and the choice of mechanism, shared by every API."""

from __future__ import annotations

import math
import signal
import sys
from dataclasses import dataclass, replace
from typing import Literal

Mechanism = Literal["pdeathsig", "supervisor", "guardian", "job", "preexec_fn"]
MECHANISM_CHOICES = ("pdeathsig", "supervisor", "guardian")

IS_WINDOWS = sys.platform == "win32"
#: SIGKILL's number, 9 on every POSIX system; Windows' signal module lacks the name.
SIGKILL = 9
IS_LINUX = sys.platform.startswith("linux")


@dataclass(frozen=True)
class LeashPlan:
    """What one spawn will do: the helper mode, the signal and the grace, all validated."""

    mechanism: Mechanism
    death_signal: int
    grace_ms: int
    tree: bool
    kill_on_drop: bool

    def with_mechanism(self, mechanism: Mechanism) -> LeashPlan:
        """The same plan through another mechanism (a fallback, or a safer choice)."""
        return replace(self, mechanism=mechanism)

    @property
    def helper_mode(self) -> str:
        """The helper's command-line mode for this mechanism."""
        return {"pdeathsig": "exec", "supervisor": "supervise", "guardian": "guard"}[self.mechanism]


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
        valid = {9}  # a kill-on-close job object ends processes at once: no other signal
    else:
        valid = {int(s) for s in signal.valid_signals()}
        valid.discard(int(signal.SIGSTOP))
    if number not in valid:
        raise ValueError(
            f"death_signal must be a valid signal that can end a process, got {number}"
        )
    return number


def validate_grace(grace: object) -> float | None:
    """Return the grace in seconds, or raise TypeError/ValueError naming ``grace``."""
    if grace is None:
        return None
    if isinstance(grace, bool) or not isinstance(grace, (int, float)):
        raise TypeError(f"grace must be a number of seconds or None, not {type(grace).__name__}")
    value = float(grace)
    if math.isnan(value) or math.isinf(value) or value < 0:
        raise ValueError(f"grace must be a finite number of seconds >= 0, got {grace!r}")
    return value


def plan_leash(
    *,
    tree: object = False,
    grace: object = None,
    death_signal: object = None,
    kill_on_drop: object = True,
    mechanism: object = None,
    default_mechanism: Mechanism = "pdeathsig",
) -> LeashPlan:
    """Validate the leash options and pick the mechanism that honours all of them."""
    if not isinstance(tree, bool):
        raise TypeError(f"tree must be a bool, not {type(tree).__name__}")
    if not isinstance(kill_on_drop, bool):
        raise TypeError(f"kill_on_drop must be a bool, not {type(kill_on_drop).__name__}")
    if mechanism is not None and mechanism not in MECHANISM_CHOICES:
        raise ValueError(
            f"mechanism must be one of {', '.join(map(repr, MECHANISM_CHOICES))} or None, "
            f"got {mechanism!r}"
        )
    signal_number = validate_death_signal(death_signal)
    grace_s = validate_grace(grace)
    if IS_WINDOWS:
        from . import _windows

        if mechanism is not None:
            raise ValueError("mechanism cannot be chosen on Windows: it always uses a job object")
        _windows.check_leash_options(tree, grace_s, signal_number)
        return LeashPlan("job", SIGKILL, 0, True, kill_on_drop)

    if tree and mechanism not in (None, "supervisor"):
        raise ValueError(f"tree=True needs the supervisor; it cannot use mechanism={mechanism!r}")
    if grace_s is not None and mechanism == "pdeathsig":
        raise ValueError(
            "grace needs the supervisor or the guardian: a kernel death signal cannot escalate"
        )
    chosen: Mechanism
    if mechanism is not None:
        chosen = mechanism  # type: ignore[assignment]
    elif tree or grace_s is not None:
        chosen = "supervisor"
    else:
        chosen = default_mechanism
    if signal_number is None:
        signal_number = int(signal.SIGTERM) if grace_s else SIGKILL
    grace_ms = math.ceil((grace_s or 0.0) * 1000)
    return LeashPlan(chosen, signal_number, grace_ms, tree, kill_on_drop)
