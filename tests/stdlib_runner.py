"""Run CPython's own ``test.test_subprocess`` and write its outcome as JSON.

    python stdlib_runner.py [--site DIR] [--module NAME] VARIANT OUT.json [TEST_ID ...]

VARIANT is ``baseline`` (the standard library untouched), ``default`` (``subprocess.Popen =
leashed.Popen``), ``tree`` (the same with a ``Popen`` subclass that forces ``tree=True``) or
``install`` (``leashed.install()`` made active by ``LEASHED_INSTALL=1`` through the
package's .pth file; nothing is patched here). The patch is made before the test module is
imported, so the module's own ``subprocess.Popen`` subclasses derive from leashed's. With
TEST_IDs, only those tests run (module and class fixtures still run around them). ``--site
DIR`` adds a site directory (where leashed is installed), so that the interpreter itself,
not a virtual environment, runs the tests: a few stdlib tests skip themselves in a venv.

The JSON holds the ids of failures, errors, unexpected successes and skips (with short
tracebacks or reasons), the counts, each test's duration, and the tests during which
``test.support.reap_children()`` had to reap a stray child (an "environment changed").
"""

from __future__ import annotations

import importlib
import json
import sys
import time
import traceback
import unittest
from collections.abc import Iterator
from types import TracebackType
from typing import Any

MODULE = "test.test_subprocess"
VARIANTS = ("baseline", "default", "helper", "tree", "install")
#: Exit status when the interpreter has no ``test`` package or no test_subprocess.
EXIT_MISSING = 3
#: Lines of each traceback kept in the JSON.
TRACEBACK_LINES = 30

ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]


def patch(variant: str) -> None:
    """Replace subprocess.Popen exactly as a user of the drop-in would."""
    if variant == "baseline":
        return
    if variant == "install":
        if installed() is None:
            raise SystemExit("LEASHED_INSTALL=1 did not make leashed.install() active")
        return
    import subprocess

    import leashed

    if variant in ("default", "helper"):  # helper: the caller sets LEASHED_HELPER
        subprocess.Popen = leashed.Popen  # type: ignore[misc]
        return

    class Popen(leashed.Popen):  # type: ignore[type-arg]
        """leashed.Popen with tree=True forced; named Popen as the tests print its name."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["tree"] = True
            super().__init__(*args, **kwargs)

    Popen.__qualname__ = "Popen"
    subprocess.Popen = Popen  # type: ignore[misc]


def installed() -> str | None:
    """The mechanism of an active leashed.install(), or None."""
    module = sys.modules.get("leashed._install")
    return None if module is None else module.active_mechanism()  # type: ignore[no-any-return]


def is_leashed(cls: type) -> bool:
    leashed = sys.modules.get("leashed")
    return leashed is not None and (issubclass(cls, leashed.Popen) or installed() is not None)


def short(text: str) -> str:
    lines = text.rstrip().splitlines()
    if len(lines) > TRACEBACK_LINES:
        lines = ["...", *lines[-TRACEBACK_LINES:]]
    return "\n".join(lines)


def formatted(err: ExcInfo) -> str:
    """The traceback without unittest's own frames (as unittest prints it)."""
    exc_type, value, tb = err
    while tb is not None and "__unittest" in tb.tb_frame.f_globals:
        tb = tb.tb_next
    return "".join(traceback.format_exception(exc_type, value, tb))


class Collector(unittest.TestResult):
    """Keeps every outcome by test id (a failing subtest counts against its test)."""

    def __init__(self) -> None:
        super().__init__()
        self.outcomes: dict[str, dict[str, str]] = {
            "failures": {},
            "errors": {},
            "unexpected_successes": {},
            "skipped": {},
        }
        self.durations: dict[str, float] = {}
        self.env_changed: list[str] = []
        self.succeeded = 0
        self._started: dict[str, float] = {}

    def _support(self) -> Any:
        return sys.modules.get("test.support")

    def startTest(self, test: unittest.TestCase) -> None:
        super().startTest(test)
        support = self._support()
        if support is not None:
            support.environment_altered = False
        self._started[test.id()] = time.monotonic()
        print(f"START {test.id()}", file=sys.stderr, flush=True)

    def stopTest(self, test: unittest.TestCase) -> None:
        started = self._started.pop(test.id(), None)  # None for a skipped class (3.12+)
        if started is not None:
            self.durations[test.id()] = round(time.monotonic() - started, 3)
            support = self._support()
            if support is not None and support.environment_altered:
                self.env_changed.append(test.id())
        super().stopTest(test)

    def _record(self, kind: str, test: Any, text: str) -> None:
        key = test.id()
        previous = self.outcomes[kind].get(key)
        self.outcomes[kind][key] = short(text) if previous is None else previous

    def addFailure(self, test: Any, err: Any) -> None:
        super().addFailure(test, err)
        self._record("failures", test, formatted(err))

    def addError(self, test: Any, err: Any) -> None:
        super().addError(test, err)
        self._record("errors", test, formatted(err))

    def addSubTest(self, test: Any, subtest: Any, err: Any) -> None:
        super().addSubTest(test, subtest, err)
        if err is not None:
            kind = "failures" if issubclass(err[0], test.failureException) else "errors"
            text = f"[subtest {subtest.id()}]\n" + formatted(err)
            self._record(kind, test, text)

    def addUnexpectedSuccess(self, test: Any) -> None:
        super().addUnexpectedSuccess(test)
        self._record("unexpected_successes", test, "unexpected success")

    def addSkip(self, test: Any, reason: str) -> None:
        super().addSkip(test, reason)
        self.outcomes["skipped"][test.id()] = reason

    def addSuccess(self, test: Any) -> None:
        super().addSuccess(test)
        self.succeeded += 1


def flatten(suite: unittest.TestSuite) -> Iterator[unittest.TestCase]:
    for item in suite:
        if isinstance(item, unittest.TestSuite):
            yield from flatten(item)
        else:
            yield item


def probe_mechanism() -> str | None:
    """The leash mechanism the patched subprocess.Popen uses (None when unpatched)."""
    import subprocess

    with subprocess.Popen([sys.executable, "-c", ""]) as probe:
        pass
    leash = getattr(probe, "_leash", None)  # install(): a plain Popen with leashed's leash
    return getattr(probe, "mechanism", None) or (leash and str(leash.plan.mechanism))


def direct_path() -> str | None:
    """How leashed's direct mechanism spawns in this run (None when leashed is not loaded)."""
    module = sys.modules.get("leashed._inproc_spawn")
    return None if module is None else str(module.direct_path())


def main(argv: list[str]) -> int:
    if argv[:1] == ["--site"] and len(argv) > 1:
        import site

        sys.path.insert(0, argv[1])  # before the interpreter's own site-packages
        site.addsitedir(argv[1])  # its .pth files too
        argv = argv[2:]
    module = MODULE
    if argv[:1] == ["--module"] and len(argv) > 1:  # another stdlib test module
        module, argv = argv[1], argv[2:]
    if len(argv) < 2 or argv[0] not in VARIANTS:
        print(__doc__, file=sys.stderr)
        return 2
    variant, out_path, wanted = argv[0], argv[1], set(argv[2:])
    try:
        support: Any = importlib.import_module("test.support")
    except ImportError as exc:
        print(f"no 'test' package in this interpreter: {exc}", file=sys.stderr)
        return EXIT_MISSING
    support.verbose = 0  # as regrtest sets it
    patch(variant)
    mechanism = probe_mechanism()
    try:
        __import__(module)
    except ImportError as exc:
        print(f"cannot import {module}: {exc}", file=sys.stderr)
        return EXIT_MISSING
    except unittest.SkipTest as exc:
        print(f"{module} skips itself: {exc}", file=sys.stderr)
        return EXIT_MISSING
    loaded = unittest.defaultTestLoader.loadTestsFromName(module)
    tests = list(flatten(loaded))
    if wanted:
        chosen = [t for t in tests if t.id() in wanted]
        # an id of a failed module fixture names no test: run one so the fixture runs
        tests = chosen or tests[:1]
    result = Collector()
    started = time.monotonic()
    unittest.TestSuite(tests).run(result)
    popen = sys.modules["subprocess"].Popen
    report = {
        "variant": variant,
        "module": module,
        "python": sys.version,
        "popen_name": popen.__name__,
        "popen_is_leashed": is_leashed(popen),
        "mechanism": mechanism,
        "direct_path": direct_path(),
        "leashed_file": getattr(sys.modules.get("leashed"), "__file__", None),
        "in_venv": sys.prefix != sys.base_prefix,
        "wall_s": round(time.monotonic() - started, 2),
        "tests_run": result.testsRun,
        "succeeded": result.succeeded,
        **result.outcomes,
        "env_changed": result.env_changed,
        "durations": result.durations,
    }
    with open(out_path, "w", encoding="utf-8") as out:
        json.dump(report, out, indent=1, sort_keys=True)
    return 0


if __name__ == "__main__":
    try:
        status = main(sys.argv[1:])
    except BaseException:
        traceback.print_exc()
        raise
    sys.exit(status)
