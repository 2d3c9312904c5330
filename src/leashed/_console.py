"""How the ``leashed`` command speaks to its user: one line on stderr, named."""

from __future__ import annotations

import sys

PROG = "leashed"


def say(message: str) -> None:
    """``leashed: message`` on stderr, flushed at once."""
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)
