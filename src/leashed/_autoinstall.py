"""LEASHED_INSTALL: install() at interpreter start-up, for programs you do not edit.

The package's ``leashed-install.pth`` calls ``run()`` only when the variable is set and
the interpreter honours the environment (not under ``python -E``/``-I``). A bad value
is reported on stderr and nothing is installed: start-up never fails because of it.

Spelling: ``1`` (or ``yes``, ``on``, ``true``) for install()'s defaults; or options
separated by commas: ``tree``/``notree``, ``grace=SECONDS``, ``signal=NAME|NUMBER``,
``keep_leftovers``. ``0``, ``no``, ``off``, ``false`` or empty: nothing is installed.
Children inherit the variable, so every Python descendant leashes its own children too.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

from ._install import INSTALL_ENV, install

_ON = frozenset({"1", "yes", "on", "true"})
_OFF = frozenset({"", "0", "no", "off", "false"})


def parse(value: str) -> dict[str, Any] | None:
    """install()'s keyword arguments for a LEASHED_INSTALL value; None: do not install.

    ValueError names the item it cannot read.
    """
    text = value.strip().lower()
    if text in _OFF:
        return None
    if text in _ON:
        return {}
    options: dict[str, Any] = {}
    for item in (part.strip() for part in text.split(",")):
        name, sep, raw = item.partition("=")
        if item in _ON:
            continue
        if name in ("tree", "notree", "keep_leftovers") and not sep:
            options["tree" if name == "notree" else name] = name != "notree"
        elif name in ("tree", "keep_leftovers") and raw in _ON | _OFF - {""}:
            options[name] = raw in _ON
        elif name == "grace" and sep:
            try:
                options["grace"] = float(raw)
            except ValueError:
                raise ValueError(f"grace={raw!r} is not a number of seconds") from None
        elif name == "signal" and sep:
            options["death_signal"] = _signal(raw)
        else:
            raise ValueError(
                f"cannot read {item!r} (expected 1, tree, notree, grace=SECONDS, "
                f"signal=NAME, keep_leftovers)"
            )
    return options


def _signal(raw: str) -> int:
    if raw.isdigit():
        return int(raw)
    name = raw.upper() if raw.upper().startswith("SIG") else "SIG" + raw.upper()
    number = getattr(signal, name, None)
    if not isinstance(number, int):
        raise ValueError(f"signal={raw!r} names no signal")
    return int(number)


def run() -> None:
    """Called by the .pth file at start-up: install() as LEASHED_INSTALL says."""
    if sys.flags.ignore_environment:
        return
    value = os.environ.get(INSTALL_ENV, "")
    try:
        options = parse(value)
        if options is not None:
            install(**options)
    except Exception as exc:
        sys.stderr.write(
            f"leashed: {INSTALL_ENV}={value!r}: {exc}; this process's children are NOT leashed\n"
        )
