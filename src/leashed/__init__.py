"""leashed: child processes that die with their parent, by any death.

Drop-in for ``subprocess`` (``Popen``, ``run``, ``call``, ``check_call``,
``check_output``, ``getoutput``, ``getstatusoutput``) and ``asyncio``
(``leashed.asyncio``), plus ``wrap`` for spawners you do not control,
``watch_parent`` for programs whose parent is not Python, and ``capabilities`` for
what this machine guarantees; ``install`` leashes every child of the process,
whatever API starts it.
"""

from subprocess import (
    DEVNULL,
    PIPE,
    STDOUT,
    CalledProcessError,
    CompletedProcess,
    SubprocessError,
    TimeoutExpired,
)

from ._install import capabilities, install, uninstall
from ._popen import Popen, call, check_call, check_output, getoutput, getstatusoutput, run
from ._watch import ParentWatch, watch_parent
from ._wrap import wrap

__version__ = "0.1.0"

__all__ = [
    "DEVNULL",
    "PIPE",
    "STDOUT",
    "CalledProcessError",
    "CompletedProcess",
    "ParentWatch",
    "Popen",
    "SubprocessError",
    "TimeoutExpired",
    "__version__",
    "call",
    "capabilities",
    "check_call",
    "check_output",
    "getoutput",
    "getstatusoutput",
    "install",
    "run",
    "uninstall",
    "watch_parent",
    "wrap",
]
