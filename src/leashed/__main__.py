"""``python -m leashed``: the same as the ``leashed`` command."""

from ._cli import main

if __name__ == "__main__":
    raise SystemExit(main())
