"""Which system this is: the one place ``sys.platform`` is read for what leashed does.

``_platform`` picks the backend from it; the backends and reports read these flags.
"""

from __future__ import annotations

import sys

from ._plan import Mechanism

if sys.platform == "linux":
    from . import _cgroup

IS_WINDOWS = sys.platform == "win32"
IS_LINUX = sys.platform.startswith("linux")
IS_FREEBSD = sys.platform.startswith("freebsd")
IS_DARWIN = sys.platform == "darwin"
#: A supervisor keeps a tree's leftovers as their subreaper (Linux, FreeBSD); elsewhere
#: the process-group strategy cannot tell them apart once the target is gone.
HAS_SUBREAPER = IS_LINUX or IS_FREEBSD


def default_mechanism() -> Mechanism:
    """What a plain ``leashed.Popen(...)`` uses here (the helper assumed present)."""
    if IS_WINDOWS:
        return "job"
    return "direct" if IS_LINUX else "guardian"


#: Whether ``tree=True`` takes the cgroup mechanism by itself where it is available. Off
#: for now: whole-suite CI runs left empty leash cgroups of dead parents behind (cause not
#: found yet); ``mechanism="cgroup"`` asks for it.
CGROUP_BY_DEFAULT = False


def cgroup_available() -> bool:
    """Whether the cgroup mechanism can work here (Linux, a writable cgroup v2 hierarchy)."""
    return sys.platform == "linux" and _cgroup.available()


def tree_mechanism() -> Mechanism:
    """What ``tree=True`` uses here unless told: the supervisor (the cgroup mechanism only
    with CGROUP_BY_DEFAULT, where it is available)."""
    if CGROUP_BY_DEFAULT and cgroup_available():
        return "cgroup"
    return "supervisor"
