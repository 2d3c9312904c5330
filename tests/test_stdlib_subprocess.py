"""Drop-in, proven by the standard library's own tests.

CPython's ``test.test_subprocess`` (the running interpreter's own ``test`` package) runs in
child interpreters with ``subprocess.Popen = leashed.Popen`` set before the test module is
imported: once with leashed's default options, once through a ``Popen`` subclass that forces
``tree=True``; and (a slow test) with ``leashed.install()`` made active by
``LEASHED_INSTALL=1`` at interpreter start-up, nothing patched by hand. Every test that
fails or errors there (or leaves a stray child for ``test.support.reap_children()``,
regrtest's "environment changed") must do so in the unpatched standard library too: those
tests are re-run, by id, without leashed, and only the ones that pass there count against
leashed. No process of a run may outlive it.

The stdlib runs go through ``stdlib_runner.py`` (unittest with a collector that writes
JSON); the two patched runs go in parallel, each in its own working directory (the stdlib
tests create fixed names such as ``tempcwd`` in the current directory).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

if not sys.platform.startswith("linux"):
    pytest.skip("the survivor check reads /proc", allow_module_level=True)

from support import CASE_VAR, SUITE_VAR, kill_marked, new_marker, pids_with

from leashed import _helper, _inproc_spawn
from leashed._platform import tree_mechanism

RUNNER = Path(__file__).resolve().with_name("stdlib_runner.py")
MODULE = "test.test_subprocess"
#: asyncio's own subprocess tests: run with install() active only (a slow test).
ASYNCIO_MODULE = "test.test_asyncio.test_subprocess"
#: Exit status of the runner when the interpreter lacks the test package (see the runner).
EXIT_MISSING = 3
VARIANTS = ("default", "helper", "tree")
#: The leash each patched run must really use (leashed falls back when it lacks its helper).
#: tree=True (and install(), whose default is tree=True) uses the cgroup mechanism where a
#: writable cgroup v2 hierarchy is found, else the supervisor.
MECHANISMS = {
    "default": "direct",
    "helper": "direct",
    "tree": tree_mechanism(),
    "install": tree_mechanism(),
}
#: How the direct mechanism must spawn in each run: in process where the extension is
#: built; "helper" forces the helper's direct mode through the LEASHED_HELPER override.
DIRECT_PATHS = {"default": "in-process", "helper": "helper"}
#: Deliberate differences from subprocess that cannot be removed, per variant:
#: {test id: why}. Each entry needs a reason a user would accept. They come from the
#: supervisor's front; the cgroup mechanism's target is the caller's own child: none.
_PID_IS_THE_SUPERVISORS = (
    "the test compares a byte the child derives from its own pid with p.pid; with "
    "tree=True p.pid is the supervisor's front; the target is the supervisor's child (README: API)"
)
_MORE_FDS_PER_TREE_CHILD = (
    "the test leaves 10 free fds and spawns; a tree-mode spawn also needs the helper's "
    "report pipe and the supervisor's control socket, so EMFILE comes first (README: Limits)"
)
#: The supervisor's deliberate differences; the cgroup mechanism has none.
_SUPERVISOR_DELIBERATE = {
    f"test.test_subprocess.{case}.{test}": reason
    for case in ("ProcessTestCase", "ProcessTestCaseNoPoll")
    for test, reason in (
        ("test_communicate_timeout_large_input", _PID_IS_THE_SUPERVISORS),
        ("test_no_leaking", _MORE_FDS_PER_TREE_CHILD),
    )
}
DELIBERATE: dict[str, dict[str, str]] = {
    variant: _SUPERVISOR_DELIBERATE if mechanism == "supervisor" else {}
    for variant, mechanism in MECHANISMS.items()
}
#: How a variant makes subprocess leashed, for the summary line (else the Popen swap).
HOW = {"install": "leashed.install() from LEASHED_INSTALL=1"}  # install()'s default is tree=True
#: Upper bound for one run of the whole stdlib module (it takes about a minute).
RUN_TIMEOUT_S = 600.0
#: How long children of the stdlib tests may take to end after their run (a `sleep 3`
#: a test left behind on purpose), before they count as survivors.
SURVIVOR_GRACE_S = 10.0
#: Lines of each regressed test's traceback shown in the failure message.
SHOWN_LINES = 12


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def require_stdlib_tests() -> None:
    """Fail in CI, skip elsewhere, when this interpreter has no test.test_subprocess."""
    try:
        found = importlib.util.find_spec(MODULE) is not None
    except ImportError:
        found = False
    if found:
        return
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    message = (
        f"{sys.executable} has no {MODULE} (the standard library's test package; "
        f"on Debian: apt-get install libpython{version}-testsuite), so the drop-in "
        "oracle cannot run"
    )
    if in_ci():
        pytest.fail(message)
    pytest.skip(message)


def interpreter() -> list[str]:
    """The command that runs the stdlib tests: the interpreter itself, outside any venv.

    test_executable_with_cwd and test_executable_without_cwd skip themselves in a virtual
    environment; they exercise ``executable=``, which leashed rewrites. Inside a venv, the
    base interpreter runs with the site directory leashed is installed in added.
    """
    if sys.prefix == sys.base_prefix:
        return [sys.executable, str(RUNNER)]
    spec = importlib.util.find_spec("leashed")
    assert spec is not None and spec.origin is not None, "leashed is not installed"
    site_dir = Path(spec.origin).resolve().parent.parent
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    for candidate in (
        getattr(sys, "_base_executable", ""),
        os.path.join(sys.base_prefix, "bin", f"python{version}"),
        os.path.realpath(sys.executable),
    ):
        path = Path(candidate).absolute()
        in_venv = path.is_relative_to(Path(sys.prefix).absolute())
        if candidate and not in_venv and path.is_file() and os.access(path, os.X_OK):
            return [str(path), str(RUNNER), "--site", str(site_dir)]
    return [sys.executable, str(RUNNER)]


@dataclass
class Outcome:
    """One finished runner: its JSON report, its log, its wall time and its survivors."""

    variant: str
    report: dict[str, Any]
    log: str
    wall_s: float
    survivors: list[str]

    def failing(self) -> dict[str, str]:
        """{test id: short traceback} of every failure, error and unexpected success."""
        found: dict[str, str] = {}
        for kind in ("failures", "errors", "unexpected_successes"):
            for test_id, text in self.report[kind].items():
                found.setdefault(test_id, f"{kind[:-1].replace('_', ' ')}:\n{text}")
        return found

    def env_changed(self) -> set[str]:
        """Tests after which test.support.reap_children() found a stray dead child."""
        return set(self.report["env_changed"])


class Runner:
    """One child interpreter running the stdlib module, marked so its processes are found."""

    def __init__(
        self, variant: str, base: Path, ids: Sequence[str] = (), module: str = MODULE
    ) -> None:
        self.variant = variant
        self.module = module
        self.cwd = base / variant
        self.cwd.mkdir(parents=True)
        self.out = self.cwd.parent / f"{variant}.json"
        self.log_path = self.cwd.parent / f"{variant}.log"
        self.marker = new_marker()
        env = dict(os.environ)
        env[SUITE_VAR] = os.environ[SUITE_VAR]
        env[CASE_VAR] = self.marker
        env.pop("LEASHED_INSTALL", None)
        if variant == "install":
            env["LEASHED_INSTALL"] = "1"
        if variant == "helper":
            helper = _helper.helper_path()
            assert helper is not None, "the helper variant needs leashed-helper"
            env[_helper.HELPER_ENV] = helper
        self.started = time.monotonic()
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [*interpreter(), "--module", module, variant, str(self.out), *ids],
                cwd=self.cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def finish(self, deadline: float) -> Outcome:
        try:
            status = self.proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            kill_marked(CASE_VAR, self.marker)
            pytest.fail(
                f"the {self.variant} run of {self.module} did not end in {RUN_TIMEOUT_S:.0f}s; "
                f"its log ends with:\n{self.log_tail()}"
            )
        wall = time.monotonic() - self.started
        survivors = self.survivors()
        if status == EXIT_MISSING:
            require_stdlib_tests()
            pytest.fail(f"{self.module} could not be loaded:\n{self.log_tail()}")
        if status != 0 or not self.out.exists():
            pytest.fail(f"the {self.variant} runner exited with {status}:\n{self.log_tail()}")
        report = json.loads(self.out.read_text(encoding="utf-8"))
        return Outcome(self.variant, report, self.log_tail(), wall, survivors)

    def survivors(self) -> list[str]:
        """Processes of this run still alive after a grace; they are killed, by pid."""
        deadline = time.monotonic() + SURVIVOR_GRACE_S
        while pids_with(CASE_VAR, self.marker) and time.monotonic() < deadline:
            time.sleep(0.1)
        found = []
        for pid in pids_with(CASE_VAR, self.marker):
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                cmd = "?"
            found.append(f"{pid}: {cmd[:150]}")
        kill_marked(CASE_VAR, self.marker)
        return found

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


@dataclass
class Oracle:
    patched: dict[str, Outcome]
    #: The re-run, without leashed, of every test that failed in a patched run (or None).
    baseline: Outcome | None


def run_all(base: Path, variants: Sequence[str] = VARIANTS, module: str = MODULE) -> Oracle:
    require_stdlib_tests()
    deadline = time.monotonic() + RUN_TIMEOUT_S
    runners = [Runner(variant, base, module=module) for variant in variants]
    try:
        patched = {runner.variant: runner.finish(deadline) for runner in runners}
    finally:
        for runner in runners:
            if runner.proc.poll() is None:
                runner.proc.kill()
                runner.proc.wait()
                kill_marked(CASE_VAR, runner.marker)
    suspects = sorted(
        {test_id for o in patched.values() for test_id in (*o.failing(), *o.env_changed())}
    )
    baseline = None
    if suspects:
        runner = Runner("baseline", base, suspects, module=module)
        baseline = runner.finish(time.monotonic() + RUN_TIMEOUT_S)
    return Oracle(patched, baseline)


@pytest.fixture(scope="module")
def oracle(tmp_path_factory: pytest.TempPathFactory) -> Oracle:
    return run_all(tmp_path_factory.mktemp("stdlib-subprocess"))


@pytest.fixture(scope="module")
def install_oracle(tmp_path_factory: pytest.TempPathFactory) -> Oracle:
    return run_all(tmp_path_factory.mktemp("stdlib-subprocess-install"), ("install",))


def shorten(text: str) -> str:
    """The first line and the last lines of a traceback, without 3.13's ^~~~ markers."""
    lines = [line for line in text.splitlines() if line.strip(" ~^")]
    return "\n".join([*lines[:1], *lines[1:][-SHOWN_LINES:]])


@pytest.mark.parametrize("variant", VARIANTS)
def test_stdlib_subprocess_passes_with_leashed(oracle: Oracle, variant: str) -> None:
    check(oracle, variant)


@pytest.fixture(scope="module")
def asyncio_install_oracle(tmp_path_factory: pytest.TempPathFactory) -> Oracle:
    base = tmp_path_factory.mktemp("stdlib-asyncio-subprocess-install")
    return run_all(base, ("install",), ASYNCIO_MODULE)


@pytest.mark.slow
def test_stdlib_subprocess_passes_with_install_from_the_environment(
    install_oracle: Oracle,
) -> None:
    check(install_oracle, "install")


@pytest.mark.slow
def test_stdlib_asyncio_subprocess_passes_with_install_from_the_environment(
    asyncio_install_oracle: Oracle,
) -> None:
    check(asyncio_install_oracle, "install", minimum_tests=50)  # 3.15's module has 86


def check(oracle: Oracle, variant: str, minimum_tests: int = 100) -> None:
    """No failure of the patched run that the unpatched standard library does not have
    (and at least ``minimum_tests`` of its tests ran)."""
    outcome = oracle.patched[variant]
    report = outcome.report
    assert report["popen_is_leashed"] and report["popen_name"] == "Popen", report
    assert report["mechanism"] == MECHANISMS[variant], report["mechanism"]
    if variant in DIRECT_PATHS and (variant != "default" or _inproc_spawn.built()):
        assert report["direct_path"] == DIRECT_PATHS[variant], report["direct_path"]
    assert report["tests_run"] > minimum_tests, f"too few stdlib tests ran: {report['tests_run']}"
    failing = outcome.failing()
    also_failing = set(oracle.baseline.failing()) if oracle.baseline is not None else set()
    deliberate = DELIBERATE[variant]
    regressed = {
        test_id: text
        for test_id, text in failing.items()
        if test_id not in also_failing and test_id not in deliberate
    }
    problems = [f"{test_id} {shorten(text)}" for test_id, text in sorted(regressed.items())]
    baseline_env = oracle.baseline.env_changed() if oracle.baseline is not None else set()
    for test_id in sorted(outcome.env_changed() - baseline_env - also_failing):
        problems.append(
            f"{test_id}: environment changed (test.support.reap_children() reaped a child "
            "nothing else waited for); it does not without leashed"
        )
    for test_id, reason in deliberate.items():
        if not reason.strip():
            problems.append(f"{test_id}: listed as a deliberate difference without a reason")
        ran = test_id in report.get("durations", {})  # absent, or skipped, in some CPythons
        if ran and test_id not in failing and test_id not in report.get("skipped", ()):
            problems.append(f"{test_id}: listed as a deliberate difference but passes")
    if outcome.survivors:
        problems.append("processes left alive by the run:\n" + "\n".join(outcome.survivors))
    how = HOW.get(variant, "subprocess.Popen = leashed.Popen")
    summary = (
        f"{report.get('module', MODULE)} with {how} "
        f"({variant}, {report['mechanism']}): "
        f"{report['tests_run']} run, {len(report['skipped'])} skipped, {len(failing)} failing, "
        f"{len(regressed)} of them pass without leashed; {outcome.wall_s:.0f}s"
    )
    print(summary)
    if problems:
        pytest.fail(summary + "\n\n" + "\n\n".join(problems), pytrace=False)
