"""The cgroup mechanism: every target in a cgroup v2 of its own, one watcher per parent.

Real cgroups, real processes: as root here, unprivileged in a delegated subtree (a cgroup
chowned to ``nobody``, as systemd's Delegate=yes does), and the fallback to the supervisor
where the hierarchy is read-only, absent or not writable by the user.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import test_linux_tree as tree_cases
from cgroups import cgroup2_mount, leash_dirs, populated, watchers_of
from support import Parent, marked, named, new_marker, wait_for_named, wait_until_gone

import leashed
from leashed import _cgroup
from leashed._procfs import poll_until

pytestmark = pytest.mark.skipif(
    not _cgroup.available(), reason=f"no writable cgroup v2 hierarchy here: {_cgroup.site()}"
)

TREE, TREE_SLEEPS = tree_cases.TREE, tree_cases.TREE_SLEEPS
NOBODY = 65534

PARENT = """
import json, os, sys, time
{prelude}
import leashed
import leashed._system; leashed._system.CGROUP_BY_DEFAULT = True  # opt-in for now
proc = leashed.Popen(["sh", "-c", {tree!r}], **{options!r})
caps = leashed.capabilities()["mechanisms"]["cgroup"]
print(json.dumps({{"pid": proc.pid, "mechanism": proc.mechanism, "cgroup": caps["cgroup"]}}),
      flush=True)
{after}
time.sleep(300)
"""


@pytest.fixture(autouse=True)
def cgroup_by_default(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """These tests are of the cgroup mechanism: tree=True takes it (opt-in for now)."""
    from leashed import _platform, _system

    monkeypatch.setattr(_system, "CGROUP_BY_DEFAULT", True)
    _platform._common_plans.clear()
    yield
    _platform._common_plans.clear()


def _parent(
    options: dict[str, object],
    tree: str = TREE,
    *,
    prelude: str = "",
    after: str = "",
) -> Parent:
    code = PARENT.format(options=options, tree=tree, prelude=prelude, after=after)
    return Parent(code, new_marker())


def _own_leash_dirs(pid: int, root: Path | None = None) -> list[Path]:
    return [p for p in leash_dirs(root) if p.name.startswith(f"leashed-{pid}-")]


def _no_leash_dir_of(pid: int, root: Path | None = None, timeout: float = 5.0) -> bool:
    """Its cgroups removed and its watcher gone (the watcher runs with an empty environment:
    no marker counts it)."""
    return poll_until(lambda: not _own_leash_dirs(pid, root) and not watchers_of(pid), timeout)


def _kill_watchers_and_wait_for_new(parent_pid: int) -> None:
    """SIGKILL every watcher of parent_pid (its only helper processes), then wait until the
    parent has mended it: a new watcher."""
    old = watchers_of(parent_pid)
    assert old, "the parent has a watcher"
    for pid in old:
        os.kill(pid, signal.SIGKILL)
    assert poll_until(lambda: set(watchers_of(parent_pid)) - set(old), 5.0), "no new watcher"


def test_tree_uses_cgroup_and_pid_is_the_targets(case_marker: str) -> None:
    caps = leashed.capabilities()
    entry = caps["mechanisms"]["cgroup"]
    assert entry["available"] and caps["tree_default"] == "cgroup"
    site = _cgroup.site()
    assert isinstance(site, _cgroup.Site) and entry["cgroup"] == site.path
    code = "import os; print(os.getpid(), open('/proc/self/cgroup').read().splitlines()[-1])"
    proc = leashed.Popen([sys.executable, "-c", code], tree=True, stdout=subprocess.PIPE, text=True)
    out, _ = proc.communicate(timeout=20)
    pid, cgroup = out.split()
    assert proc.mechanism == "cgroup"
    assert int(pid) == proc.pid
    assert cgroup.startswith("0::") and f"/leashed-{os.getpid()}-" in cgroup
    assert proc.returncode == 0


@pytest.mark.parametrize("how", ["parent", "process-group", "helpers-then-parent"])
@pytest.mark.parametrize(
    "options,deadline",
    [
        ({"tree": True}, 1.5),
        ({"tree": True, "death_signal": int(signal.SIGTERM), "grace": 1.0}, 3.0),
    ],
    ids=["sigkill", "term-then-grace"],
)
def test_whole_tree_dies_with_parent(options: dict[str, object], deadline: float, how: str) -> None:
    with _parent(options, prelude="os.setpgid(0, 0)") as parent:
        info = json.loads(parent.read_line())
        assert info["mechanism"] == "cgroup"
        assert len(wait_for_named(parent.marker, "sleep", TREE_SLEEPS)) == TREE_SLEEPS
        if how == "helpers-then-parent":
            _kill_watchers_and_wait_for_new(parent.proc.pid)
        if how == "process-group":
            os.killpg(parent.proc.pid, signal.SIGKILL)
        parent.kill()
        assert wait_until_gone(parent.marker, deadline) == []
        assert _no_leash_dir_of(parent.proc.pid)


def test_grace_lets_term_obeying_processes_end_first() -> None:
    options = {"tree": True, "death_signal": int(signal.SIGTERM), "grace": 1.5}
    tree = "sh -c 'trap \"\" TERM; sleep 300' & sleep 300"
    with _parent(options, tree) as parent:
        parent.read_line()
        assert len(wait_for_named(parent.marker, "sleep", 2)) == 2
        parent.kill()
        killed_at = time.monotonic()
        time.sleep(0.6)
        assert len(named(marked(parent.marker), "sleep")) == 1, "the stubborn one waits"
        assert wait_until_gone(parent.marker, 3.0) == []
        assert time.monotonic() - killed_at >= 1.4


def test_sigkill_of_the_target_ends_its_leftovers(case_marker: str) -> None:
    proc = leashed.Popen(["sh", "-c", TREE], tree=True)
    assert proc.mechanism == "cgroup"
    assert len(wait_for_named(case_marker, "sleep", TREE_SLEEPS)) == TREE_SLEEPS
    os.kill(proc.pid, signal.SIGKILL)  # the target's own pid, not kill()
    assert proc.wait(timeout=5) == -signal.SIGKILL
    assert wait_until_gone(case_marker, 2.0) == []


def test_kill_is_cgroup_kill_of_the_whole_tree(case_marker: str) -> None:
    proc = leashed.Popen(["sh", "-c", TREE], tree=True)
    assert len(wait_for_named(case_marker, "sleep", TREE_SLEEPS)) == TREE_SLEEPS
    proc.kill()
    assert proc.wait(timeout=5) == -signal.SIGKILL
    assert wait_until_gone(case_marker, 1.0) == []


def test_send_signal_reaches_the_target_only(case_marker: str) -> None:
    script = "trap 'exit 7' USR1; sleep 300 & while :; do sleep 0.05; done"
    proc = leashed.Popen(["sh", "-c", script], tree=True)
    assert len(wait_for_named(case_marker, "sleep", 1)) >= 1
    time.sleep(0.2)
    proc.send_signal(signal.SIGUSR1)
    assert proc.wait(timeout=5) == 7
    assert wait_until_gone(case_marker, 2.0) == []  # then its leftovers end with it


def test_keep_leftovers_live_until_the_parent_dies(tmp_path: Path) -> None:
    options = {"tree": True, "keep_leftovers": True}
    tree = "sleep 300 & setsid sleep 300 & exit 0"
    exited = tmp_path / "exited"
    after = f"open({str(exited)!r}, 'w').write(str(proc.wait()))"
    with _parent(options, tree, after=after) as parent:
        parent.read_line()
        assert poll_until(exited.exists, 10.0)
        assert poll_until(lambda: exited.read_text() == "0", 1.0)
        assert len(wait_for_named(parent.marker, "sleep", 2)) == 2
        time.sleep(0.5)
        assert len(named(marked(parent.marker), "sleep")) == 2, "kept after the target's exit"
        parent.kill()
        assert wait_until_gone(parent.marker, 1.5) == []
        assert _no_leash_dir_of(parent.proc.pid)


def test_watcher_killed_is_mended_before_the_next_spawn_returns(case_marker: str) -> None:
    first = leashed.Popen(["sh", "-c", "sleep 300"], tree=True)
    old = watchers_of(os.getpid())
    assert old
    for pid in old:
        os.kill(pid, signal.SIGKILL)
    second = leashed.Popen(["sh", "-c", "sleep 300"], tree=True)
    new = watchers_of(os.getpid())
    assert new and not set(new) & set(old)
    # the new watcher adopted the first cgroup: the first target's exit still ends it
    first.kill()
    second.kill()
    assert first.wait(5) == second.wait(5) == -signal.SIGKILL
    assert wait_until_gone(case_marker, 2.0) == []


def test_cgroups_are_reused_not_made_per_child(case_marker: str) -> None:
    for _ in range(50):
        assert leashed.Popen(["/bin/true"], tree=True).wait() == 0
    (mine,) = _own_leash_dirs(os.getpid())
    assert len([p for p in mine.iterdir() if p.is_dir()]) <= _cgroup.POOL_MAX


def test_forced_cgroup_needs_tree() -> None:
    with pytest.raises(ValueError, match="needs tree=True"):
        leashed.Popen(["true"], mechanism="cgroup")


# -- where the hierarchy cannot be written: the supervisor, said by capabilities() ------------

REPORT = """
import json, leashed
import leashed._system; leashed._system.CGROUP_BY_DEFAULT = True  # opt-in for now
caps = leashed.capabilities()
entry = caps["mechanisms"]["cgroup"]
proc = leashed.Popen(["true"], tree=True)
proc.wait()
try:
    leashed.Popen(["true"], tree=True, mechanism="cgroup")
    forced = "spawned"
except RuntimeError as exc:
    forced = str(exc)
print(json.dumps({"available": entry["available"], "notes": entry["notes"],
                  "tree_default": caps["tree_default"], "mechanism": proc.mechanism,
                  "forced": forced}))
"""


def _run_report(argv_prefix: list[str], env: dict[str, str] | None = None) -> dict[str, object]:
    out = subprocess.run(
        [*argv_prefix, sys.executable, "-c", REPORT],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=True,
    ).stdout
    return dict(json.loads(out.splitlines()[-1]))


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare(1)")
@pytest.mark.parametrize("how", ["read-only", "unmounted"])
def test_fallback_to_the_supervisor(how: str) -> None:
    mount = cgroup2_mount()
    assert mount is not None
    change = f"mount -o remount,bind,ro {mount}" if how == "read-only" else f"umount -l {mount}"
    script = f'{change} && exec "$@"'
    report = _run_report(["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh"])
    assert report["available"] is False
    assert report["tree_default"] == report["mechanism"] == "supervisor"
    why = "not writable" if how == "read-only" else "no cgroup v2 hierarchy"
    assert any(why in note for note in report["notes"])  # type: ignore[union-attr]
    assert "mechanism='cgroup' is not available here" in str(report["forced"])


# -- unprivileged, in a delegated subtree ------------------------------------------------------


@pytest.fixture()
def delegated() -> Iterator[Path]:
    """A cgroup chowned to nobody, as systemd's Delegate=yes hands one to a unit."""
    mount = cgroup2_mount()
    assert mount is not None
    path = mount / f"leashed-test-{new_marker()}"
    path.mkdir()
    for name in ("", "cgroup.procs", "cgroup.subtree_control", "cgroup.threads", "cgroup.kill"):
        os.chown(path / name, NOBODY, NOBODY)
    try:
        yield path
    finally:
        poll_until(lambda: not populated(path), 5.0)
        for child in sorted(path.glob("**/"), key=lambda p: -len(p.parts)):
            if child != path:
                child.rmdir()
        path.rmdir()


def _as_nobody_in(cgroup: Path) -> str:
    """Parent prelude: move into ``cgroup`` as root, then become nobody (the delegate).
    Everything is imported (and the helper found) first: this Python's own files may not
    be readable by nobody."""
    return textwrap.dedent(
        f"""
        import json, leashed, leashed._cgroup, leashed._capabilities, selectors, threading
        import leashed._system; leashed._system.CGROUP_BY_DEFAULT = True
        leashed._helper.helper_path()
        os.setpgid(0, 0)
        open({str(cgroup / "cgroup.procs")!r}, "w").write(str(os.getpid()))
        os.setgroups([]); os.setgid({NOBODY}); os.setuid({NOBODY})
        """
    )


@pytest.mark.parametrize("how", ["parent", "process-group", "helpers-then-parent"])
def test_unprivileged_in_a_delegated_subtree(delegated: Path, how: str) -> None:
    with _parent({"tree": True}, prelude=_as_nobody_in(delegated)) as parent:
        info = json.loads(parent.read_line())
        assert info["mechanism"] == "cgroup"
        assert info["cgroup"] == str(delegated)
        assert len(wait_for_named(parent.marker, "sleep", TREE_SLEEPS)) == TREE_SLEEPS
        assert _own_leash_dirs(parent.proc.pid, delegated)
        if how == "helpers-then-parent":
            _kill_watchers_and_wait_for_new(parent.proc.pid)
        if how == "process-group":
            os.killpg(parent.proc.pid, signal.SIGKILL)
        parent.kill()
        assert wait_until_gone(parent.marker, 1.5) == []
        assert _no_leash_dir_of(parent.proc.pid, delegated)


def test_unprivileged_in_a_cgroup_it_cannot_write_uses_the_supervisor(delegated: Path) -> None:
    locked = delegated / "not-delegated"
    locked.mkdir()  # root's, not chowned
    os.chown(locked / "cgroup.procs", NOBODY, NOBODY)  # even with cgroup.procs writable
    prelude = _as_nobody_in(locked)
    code = f"import os\n{prelude}\n{REPORT}"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    report = json.loads(out.splitlines()[-1])
    assert report["available"] is False and report["mechanism"] == "supervisor"
    assert any("not writable" in note for note in report["notes"])


def test_drop_gives_the_death_signal_and_the_grace(case_marker: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = leashed.Popen(
        ["sh", "-c", "trap 'echo term; exit 0' TERM; sleep 300 & wait"],
        tree=True,
        grace=5.0,
        death_signal=signal.SIGTERM,
        stdout=out.open("w"),
    )
    assert proc.mechanism == "cgroup"
    assert len(wait_for_named(case_marker, "sleep", 1)) == 1
    proc.drop()
    assert proc.wait(timeout=10) == 0  # the target's own status: it is our child
    assert wait_until_gone(case_marker, 2.0) == []
    assert out.read_text() == "term\n"


def test_a_caller_with_closed_stdio_is_served_the_same(tmp_path: Path) -> None:
    """The cgroup.procs fd must not land on 0-2, which the child's stdio then takes
    (CPython's test_swap_std_fds_with_one_closed does this)."""
    out = tmp_path / "out"
    code = textwrap.dedent(
        f"""
        import os, leashed
        with open({str(out)!r}, "w") as f:
            os.close(0)
            argv = ["sh", "-c", "echo ok; cat /proc/self/cgroup"]
            assert leashed.Popen(argv, tree=True, mechanism="cgroup", stdin=2, stdout=f).wait() == 0
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=30, text=True)
    assert done.returncode == 0, done.stderr
    text = out.read_text()
    assert text.startswith("ok\n"), text
    assert "/leashed-" in text.splitlines()[-1], text


NESTED = """
import leashed, time
import leashed._system; leashed._system.CGROUP_BY_DEFAULT = True
inner = leashed.Popen(["sh", "-c", "setsid sleep 300 & sleep 300"], tree=True)
assert inner.mechanism == "cgroup"
time.sleep(300)
"""


def test_a_leashed_target_that_leashes_its_own_tree_is_ended_whole() -> None:
    """The target's own leash cgroups live below its tN; the outer watcher ends and
    removes them (the inner watcher, inside tN, dies with it)."""
    with _parent({"tree": True}, tree=f"exec {sys.executable} -c '{NESTED}'") as parent:
        parent.read_line()
        assert len(wait_for_named(parent.marker, "sleep", 2)) == 2
        nested = [p for p in leash_dirs() if p.parent.name.startswith("t")]
        assert any(f"/leashed-{parent.proc.pid}-" in str(p) for p in nested), nested
        parent.kill()
        assert wait_until_gone(parent.marker, 1.5) == []
        assert _no_leash_dir_of(parent.proc.pid)
