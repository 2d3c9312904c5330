"""The one place that turns leash options + this platform + this machine into a plan.

Every API asks here: ``leashed.Popen`` and ``leashed.asyncio`` (``plan_for_popen``),
``leashed.wrap`` (``plan_for_wrap``), ``leashed run`` (``plan_for_cli``), and
``capabilities()`` (``has_pidfd``). The backend that carries a plan out is chosen here
too (``backend()``), as trio's ``_subprocess_platform`` and psutil's ``_psplatform`` do.
"""

from __future__ import annotations

import sys
from typing import Any

from . import _helper, _inproc_spawn, _windows
from ._linux import has_pidfd
from ._plan import LeashPlan, LeashRequest, Mechanism, plan_from, validate_request

IS_WINDOWS = sys.platform == "win32"
IS_LINUX = sys.platform.startswith("linux")
#: macOS and the BSDs: no parent-death signal in the kernel; kqueue watches processes.
IS_KQUEUE = not IS_WINDOWS and not IS_LINUX


def default_mechanism() -> Mechanism:
    """What a plain ``leashed.Popen(...)`` uses here (the helper assumed present)."""
    if IS_WINDOWS:
        return "job"
    return "direct" if IS_LINUX else "guardian"


def _mechanism_for(request: LeashRequest) -> Mechanism:
    if request.mechanism is not None:
        return request.mechanism
    if request.tree or request.grace_s is not None:
        return "supervisor"
    return default_mechanism()


def _windows_plan(request: LeashRequest) -> LeashPlan:
    if request.mechanism is not None:
        raise ValueError("mechanism cannot be chosen on Windows: it always uses a job object")
    _windows.check_leash_options(request.tree, request.grace_s, request.death_signal)
    return LeashPlan("job", 9, None, True, request.kill_on_drop)


#: A supervisor keeps a tree's leftovers as their subreaper (Linux, FreeBSD); elsewhere
#: the process-group strategy cannot tell them apart once the target is gone.
HAS_SUBREAPER = IS_LINUX or sys.platform.startswith("freebsd")


def _request(**options: Any) -> LeashRequest:
    """The validated leash options; keep_leftovers only where something can keep them."""
    request = validate_request(**options)
    if request.keep_leftovers and not HAS_SUBREAPER:
        why = (
            "closing the job object ends every process in it"
            if IS_WINDOWS
            else f"it needs a subreaper (Linux, FreeBSD), which {sys.platform} has not"
        )
        raise ValueError(f"keep_leftovers is not available here: {why}")
    return request


#: The plans of spawns whose only leash option is ``tree``, by (this machine's default
#: mechanism, tree): most spawns give no other, and validating the same values again
#: costs more than the lookup.
_common_plans: dict[tuple[Mechanism, bool], LeashPlan] = {}
_missing = object()
#: Every other leash option of leashed.Popen, at its default.
_DEFAULTS = {
    "grace": None,
    "death_signal": None,
    "kill_on_drop": False,
    "mechanism": None,
    "keep_leftovers": False,
}


def _common_tree(options: dict[str, Any]) -> bool | None:
    """``tree`` if it is the only option not at its default, else None. By identity:
    ``tree=0`` is refused by validation, so it must not match ``False`` here."""
    tree = options.get("tree")
    if (
        (tree is False or tree is True)
        and len(options) == len(_DEFAULTS) + 1
        and all(options.get(name, _missing) is value for name, value in _DEFAULTS.items())
    ):
        return tree
    return None


def plan_for_popen(**options: Any) -> LeashPlan:
    """The plan of a ``leashed.Popen`` / ``leashed.asyncio`` child.

    Without the helper, the direct mechanism falls back to a preexec_fn on Linux (with a
    HelperMissingWarning); the mechanisms that need the helper raise RuntimeError.
    """
    tree = None if IS_WINDOWS else _common_tree(options)
    if tree is not None and _helper.helper_path() is not None:
        key = (default_mechanism(), tree)
        plan = _common_plans.get(key)
        if plan is None:
            request = validate_request(tree=tree)
            plan = _common_plans[key] = plan_from(request, _mechanism_for(request))
        return plan
    request = _request(**options)
    if IS_WINDOWS:
        return _windows_plan(request)
    plan = plan_from(request, _mechanism_for(request))
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


def _process_scoped(request: LeashRequest, plan: LeashPlan) -> LeashPlan:
    """The guardian instead of the direct mechanism, unless the caller forced direct.

    PR_SET_PDEATHSIG follows the *thread* that forks. A spawner we do not control (wrap)
    or the program that runs ``leashed run`` may fork from a thread that exits long before
    the process (trio's workers, a Go or Java runtime): only a leash on the process holds.
    Kernels without pidfd_open (before 5.3) cannot watch a process: there direct stays.
    """
    if plan.mechanism != "direct" or request.mechanism is not None:
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
    request = _request(**options)
    plan = plan_from(request, _mechanism_for(request))
    if _helper.helper_path() is None:
        raise _helper.missing_error("leashed.wrap")
    plan = _process_scoped(request, plan)
    _require_pidfd(plan, "leashed.wrap", "use mechanism='direct' without tree/grace")
    return plan


def plan_for_cli(
    *,
    tree: bool,
    grace: float | None,
    death_signal: int | None,
    pid: int | None,
    keep_leftovers: bool = False,
) -> LeashPlan:
    """The plan of ``leashed run``: the guardian on its parent (or on --pid), the
    supervisor for --tree/--grace; each watches the parent *process*."""
    mechanism = "guardian" if pid is not None and not tree and grace is None else None
    request = _request(
        tree=tree,
        grace=grace,
        death_signal=death_signal,
        mechanism=mechanism,
        keep_leftovers=keep_leftovers,
    )
    plan = _process_scoped(request, plan_from(request, _mechanism_for(request)))
    if _helper.helper_path() is None:
        raise _helper.missing_error("leashed run")
    _require_pidfd(plan, "leashed run", "run it without --tree, --grace and --pid")
    return plan


#: The module that spawns, signals and drops children on this platform; both offer
#: ``execute_child``, ``send_signal``, ``drop`` and ``capabilities``.
if sys.platform == "win32":
    BACKEND: Any = _windows
else:
    from . import _posix

    BACKEND = _posix
