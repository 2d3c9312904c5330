"""The one place that picks this platform's backend and turns leash options into a plan.

Every API asks here: ``leashed.Popen`` and ``leashed.asyncio`` (``plan_for_popen``),
``leashed.wrap`` (``plan_for_wrap``), ``leashed run`` (``plan_for_cli``). The backend
that carries a plan out (``BACKEND``) and watch_parent's waiter (``open_parent_wait``)
are chosen here too, once, as trio's ``_subprocess_platform`` and psutil's
``_psplatform`` do. No other module picks a backend (``_system`` holds the flags).
"""

from __future__ import annotations

import sys
from typing import Any

from . import _helper, _inproc_spawn
from ._linux import has_pidfd
from ._plan import DEFAULTS, NAMES, LeashOptions, LeashPlan, Mechanism, plan_from
from ._system import (
    HAS_SUBREAPER,
    IS_LINUX,
    IS_WINDOWS,
    cgroup_available,
    default_mechanism,
    tree_mechanism,
)

if sys.platform == "linux":
    from . import _cgroup

#: What every backend offers (tests/test_layout.py checks both).
BACKEND_NAMES = (
    "ChildLeash",
    "capabilities",
    "collect_after_timeout",
    "drop",
    "execute_child",
    "send_signal",
)
#: The module that spawns, signals and drops children on this platform, and reports
#: what it guarantees (BACKEND_NAMES). ``open_parent_wait`` is watch_parent's waiter: one
#: module per way of watching a parent (a pidfd, kqueue, a process handle).
BACKEND: Any
if sys.platform == "win32":
    from . import _windows

    BACKEND = _windows
    from ._windows import open_parent_wait
else:
    from . import _posix

    BACKEND = _posix
    if sys.platform == "linux":
        from ._watch_pidfd import open_parent_wait
    else:
        from ._watch_kqueue import open_parent_wait

__all__ = [
    "BACKEND",
    "IS_LINUX",
    "IS_WINDOWS",
    "capabilities",
    "default_mechanism",
    "has_pidfd",
    "open_parent_wait",
    "plan_for_cli",
    "plan_for_popen",
    "plan_for_wrap",
    "tree_mechanism",
]


def capabilities() -> dict[str, Any]:
    """Per mechanism: available, how, whole_tree, race_free and notes; plus the helper.

    ``default`` names what a plain ``leashed.Popen(...)`` uses, ``tree_default`` what
    ``tree=True`` uses (the cgroup mechanism where it is available, else the supervisor);
    ``grace`` alone uses the supervisor. Never a silent downgrade: a mechanism this machine
    cannot honour says so here. The report is the backend's own.
    """
    report: dict[str, Any] = BACKEND.capabilities()
    return report


def _mechanism_for(options: LeashOptions, *, spawned_here: bool = True) -> Mechanism:
    """The mechanism of these options; ``spawned_here``: we execute the child ourselves
    (leashed.Popen, leashed.asyncio), which the cgroup mechanism needs."""
    if options.mechanism == "cgroup" and not spawned_here:
        raise ValueError(
            "mechanism='cgroup' needs the child spawned by leashed.Popen or leashed.asyncio"
        )
    if options.mechanism == "cgroup" and not cgroup_available():
        if sys.platform == "linux":
            raise _cgroup.unavailable_error()
        raise RuntimeError("mechanism='cgroup' is not available here: cgroups are Linux's")
    if options.mechanism is not None:
        return options.mechanism
    if options.tree:
        return tree_mechanism() if spawned_here else "supervisor"
    if options.grace is not None:
        return "supervisor"
    return default_mechanism()


def _windows_plan(options: LeashOptions) -> LeashPlan:
    if options.mechanism is not None:
        raise ValueError("mechanism cannot be chosen on Windows: it always uses a job object")
    BACKEND.check_leash_options(options.tree, options.grace, options.death_signal)
    # the whole tree always, at once: the job kills, it sends no signal
    return LeashPlan(mechanism="job", tree=True, kill_on_drop=options.kill_on_drop)


def _validated(**options: Any) -> LeashOptions:
    """The validated leash options; leftovers kept only where a subreaper can keep them."""
    checked = LeashOptions.validated(**options)
    if checked.keep_leftovers and not HAS_SUBREAPER:
        why = (
            "closing the job object ends every process in it"
            if IS_WINDOWS
            else f"it needs a subreaper (Linux, FreeBSD), which {sys.platform} has not"
        )
        raise ValueError(f"keep_leftovers is not available here: {why}")
    return checked


#: The plans of spawns whose only leash option is ``tree``, by (this machine's default
#: mechanism, tree): most spawns give no other, and validating the same values again
#: costs more than the lookup.
_common_plans: dict[tuple[Mechanism, bool], LeashPlan] = {}
_missing = object()
#: Every other leash option, at its default (derived from LeashOptions).
_OTHER_DEFAULTS = tuple((name, getattr(DEFAULTS, name)) for name in NAMES if name != "tree")


def _common_tree(options: dict[str, Any]) -> bool | None:
    """``tree`` if it is the only option not at its default, else None. By identity:
    ``tree=0`` is refused by validation, so it must not match ``False`` here."""
    tree = options.get("tree")
    if (tree is False or tree is True) and len(options) == len(NAMES):
        for name, value in _OTHER_DEFAULTS:
            if options.get(name, _missing) is not value:
                return None
        return tree
    return None


def plan_for_popen(**options: Any) -> LeashPlan:
    """The plan of a ``leashed.Popen`` / ``leashed.asyncio`` child (``options``: every
    leash option by name, as LeashOptions.take returns them).

    Without the helper, the direct mechanism falls back to a preexec_fn on Linux (with a
    HelperMissingWarning); the mechanisms that need the helper raise RuntimeError.
    """
    tree = None if IS_WINDOWS else _common_tree(options)
    if tree is not None and _helper.helper_path() is not None:
        key = (default_mechanism(), tree)
        plan = _common_plans.get(key)
        if plan is None:
            checked = LeashOptions.validated(tree=tree)
            plan = _common_plans[key] = plan_from(checked, _mechanism_for(checked))
        return plan
    checked = _validated(**options)
    if IS_WINDOWS:
        return _windows_plan(checked)
    plan = plan_from(checked, _mechanism_for(checked))
    if _helper.helper_path() is not None or (plan.mechanism == "direct" and _inproc_spawn.built()):
        return plan
    if plan.mechanism == "direct" and IS_LINUX:
        _helper.warn_helper_missing()
        return plan.with_mechanism("preexec_fn")
    raise _helper.missing_error(f"the {plan.mechanism}")


def _require_pidfd(plan: LeashPlan, what: str, hint: str) -> None:
    if IS_LINUX and plan.mechanism != "direct" and not has_pidfd():
        raise RuntimeError(
            f"{what} with the {plan.mechanism} watches a process with a pidfd, and this "
            f"kernel has no pidfd_open (Linux 5.3+); {hint}"
        )


def _process_scoped(options: LeashOptions, plan: LeashPlan) -> LeashPlan:
    """The guardian instead of the direct mechanism, unless the caller forced direct.

    PR_SET_PDEATHSIG follows the *thread* that forks. A spawner we do not control (wrap)
    or the program that runs ``leashed run`` may fork from a thread that exits long before
    the process (trio's workers, a Go or Java runtime): only a leash on the process holds.
    Kernels without pidfd_open (before 5.3) cannot watch a process: there direct stays.
    """
    if plan.mechanism != "direct" or options.mechanism is not None:
        return plan
    if IS_LINUX and not has_pidfd():
        return plan
    return plan.with_mechanism("guardian")


def plan_for_wrap(**options: Any) -> LeashPlan:
    """The plan of ``leashed.wrap``: its argv may be executed by any thread of a spawner
    we do not control, so the leash is on this process (the guardian) unless forced."""
    if IS_WINDOWS:
        raise RuntimeError(
            "leashed.wrap is not available on Windows: the kill-on-close job object needs "
            "the child's process handle; use leashed.Popen or leashed.asyncio"
        )
    checked = _validated(**options)
    plan = plan_from(checked, _mechanism_for(checked, spawned_here=False))
    if _helper.helper_path() is None:
        raise _helper.missing_error("leashed.wrap")
    plan = _process_scoped(checked, plan)
    _require_pidfd(plan, "leashed.wrap", "use mechanism='direct' without tree/grace")
    return plan


def plan_for_cli(*, pid: int | None, **options: Any) -> LeashPlan:
    """The plan of ``leashed run``: the guardian on its parent (or on --pid), the
    supervisor for --tree/--grace; each watches the parent *process*."""
    given = LeashOptions(**options)
    if pid is not None and not given.tree and given.grace is None:
        options["mechanism"] = "guardian"
    checked = _validated(**options)
    plan = _process_scoped(checked, plan_from(checked, _mechanism_for(checked, spawned_here=False)))
    if _helper.helper_path() is None:
        raise _helper.missing_error("leashed run")
    _require_pidfd(plan, "leashed run", "run it without --tree, --grace and --pid")
    return plan
