"""A real server as a leashed tree: PostgreSQL's postmaster, backends and auxiliaries."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import (
    Parent,
    descendants,
    kill_snapshot,
    new_marker,
    wait_snapshot_gone,
    wait_until_gone,
)

import leashed
from leashed import _cgroup

#: Both whole-tree mechanisms; the cgroup one where a writable cgroup v2 hierarchy is found.
TREE_MECHANISMS = [
    "supervisor",
    pytest.param(
        "cgroup",
        marks=pytest.mark.skipif(not _cgroup.available(), reason="no writable cgroup v2 here"),
    ),
]

BINDIRS = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
if not BINDIRS or os.geteuid() != 0:
    pytest.skip(
        "needs Debian's postgresql package and root (.ci/run installs it)",
        allow_module_level=True,
    )
BIN = Path(BINDIRS[-1])
PORT = "54329"


class Cluster:
    """A throwaway cluster owned by the postgres user, in a directory it can reach."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = root / "data"
        self.log = root / "server.log"
        self.socket_dir = root

    def server_argv(self) -> list[str]:
        return [
            str(BIN / "postgres"),
            "-D", str(self.data),
            "-k", str(self.socket_dir),
            "-p", PORT,
            "-c", "listen_addresses=",
            "-c", "logging_collector=off",
        ]  # fmt: skip

    def psql(self, sql: str) -> str:
        return leashed.check_output(
            [str(BIN / "psql"), "-h", str(self.socket_dir), "-p", PORT, "-U", "postgres",
             "-d", "postgres", "-At", "-c", sql],
            user="postgres", text=True,
        ).strip()  # fmt: skip

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            ready = leashed.call(
                [str(BIN / "pg_isready"), "-h", str(self.socket_dir), "-p", PORT, "-q"],
                user="postgres",
            )
            if ready == 0:
                return
            assert time.monotonic() < deadline, self.log.read_text()
            time.sleep(0.1)


@pytest.fixture()
def cluster() -> Iterator[Cluster]:
    postgres = pwd.getpwnam("postgres")
    root = Path(tempfile.mkdtemp(prefix="leashed-pg-"))
    os.chown(root, postgres.pw_uid, postgres.pw_gid)
    c = Cluster(root)
    leashed.run(
        [str(BIN / "initdb"), "-D", str(c.data), "-A", "trust", "-U", "postgres", "--no-sync"],
        user="postgres", check=True, capture_output=True, cwd=root,
    )  # fmt: skip
    c.log.touch()
    os.chown(c.log, postgres.pw_uid, postgres.pw_gid)
    yield c
    shutil.rmtree(root, ignore_errors=True)


SERVER_PARENT = """
import json, sys, time, leashed
argv, log, options = json.loads(sys.argv[1])
proc = leashed.Popen(argv, user="postgres", stdout=open(log, "a"), stderr=open(log, "a"),
                     cwd="/", **options)
print(proc.pid, flush=True)
time.sleep(600)
"""


def _serve_in_sacrificial_parent(
    cluster: Cluster, options: dict[str, object]
) -> tuple[Parent, dict[int, int]]:
    import json

    payload = json.dumps([cluster.server_argv(), str(cluster.log), options])
    parent = Parent(SERVER_PARENT.replace("sys.argv[1]", repr(payload)), new_marker())
    parent.read_line()
    cluster.wait_ready()
    # a client session, so that a backend process is part of the tree too
    client = subprocess.Popen(
        [str(BIN / "psql"), "-h", str(cluster.socket_dir), "-p", PORT, "-U", "postgres",
         "-d", "postgres", "-c", "select pg_sleep(600)"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    parent.client = client  # type: ignore[attr-defined]
    deadline = time.monotonic() + 10
    while True:
        tree = descendants(parent.proc.pid)
        titles = [_title(pid) for pid in tree]
        if any("idle" in t or "SELECT" in t for t in titles) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    return parent, tree


def _title(pid: int) -> str:
    try:
        return (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    except OSError:
        return ""


def _finish(parent: Parent, tree: dict[int, int]) -> None:
    parent.client.kill()  # type: ignore[attr-defined]
    parent.client.wait()  # type: ignore[attr-defined]
    parent.finish()
    kill_snapshot(tree)


@pytest.mark.parametrize("mechanism", TREE_MECHANISMS)
def test_sigkill_of_parent_ends_every_postgres_process(cluster: Cluster, mechanism: str) -> None:
    parent, tree = _serve_in_sacrificial_parent(cluster, {"tree": True, "mechanism": mechanism})
    try:
        titles = [_title(pid) for pid in tree]
        assert sum("postgres" in t for t in titles) >= 5, titles  # postmaster + auxiliaries
        assert any("SELECT" in t or "idle" in t for t in titles), titles  # a backend
        parent.kill()
        assert wait_snapshot_gone(tree, 2.0) == []
    finally:
        _finish(parent, tree)


@pytest.mark.parametrize("mechanism", TREE_MECHANISMS)
def test_graceful_death_is_a_clean_fast_shutdown(cluster: Cluster, mechanism: str) -> None:
    options: dict[str, object] = {"tree": True, "death_signal": int(signal.SIGINT), "grace": 30}
    options["mechanism"] = mechanism
    parent, tree = _serve_in_sacrificial_parent(cluster, options)
    try:
        cluster.psql("create table kept(v text); insert into kept values ('committed')")
        parent.kill()
        assert wait_snapshot_gone(tree, 35.0) == []
    finally:
        _finish(parent, tree)
    log = cluster.log.read_text()
    assert "received fast shutdown request" in log
    assert "database system is shut down" in log
    with cluster.log.open("a") as stream:
        server = leashed.Popen(cluster.server_argv(), user="postgres", stdout=stream, stderr=stream)
    try:
        cluster.wait_ready()
        assert cluster.psql("select v from kept") == "committed"
    finally:
        server.terminate()
        server.wait(timeout=30)
    restart = cluster.log.read_text()[len(log) :]
    assert "database system was shut down at" in restart
    assert "not properly shut down" not in restart
    assert "automatic recovery" not in restart


PG_CTL_PARENT = """
import json, sys, time, leashed
argv, log, options = json.loads(sys.argv[1])
proc = leashed.Popen(argv, user="postgres", stdout=open(log, "a"), stderr=open(log, "a"),
                     cwd="/", **options)
print(proc.wait(), flush=True)
time.sleep(600)
"""


@pytest.mark.parametrize("mechanism", TREE_MECHANISMS)
def test_pg_ctl_start_keeps_the_server_until_the_parent_dies(
    cluster: Cluster, mechanism: str
) -> None:
    """The start-script case: `pg_ctl start` daemonises the postmaster and exits. With
    keep_leftovers the caller's wait() returns 0 and the server stays up; the parent's
    death then shuts it down cleanly (death signal SIGINT: a fast shutdown)."""
    import json

    server_options = " ".join(cluster.server_argv()[3:])  # -k DIR -p PORT -c ... -c ...
    argv = [
        str(BIN / "pg_ctl"), "start", "-w", "-D", str(cluster.data), "-l", str(cluster.log),
        "-o", server_options,
    ]  # fmt: skip
    options = {
        "tree": True,
        "keep_leftovers": True,
        "death_signal": int(signal.SIGINT),
        "grace": 30,
        "mechanism": mechanism,
    }
    payload = json.dumps([argv, str(cluster.log), options])
    with Parent(PG_CTL_PARENT.replace("sys.argv[1]", repr(payload)), new_marker()) as parent:
        assert parent.read_line(timeout=60) == "0"  # pg_ctl's own status, once it is up
        time.sleep(1.0)  # the ended-with-the-script behaviour shut it down within 65 ms
        cluster.wait_ready(timeout=5)
        assert cluster.psql("select 1") == "1"
        postmaster = int((cluster.data / "postmaster.pid").read_text().split()[0])
        parent.kill()
        deadline = time.monotonic() + 35
        while Path(f"/proc/{postmaster}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not Path(f"/proc/{postmaster}").exists()
        assert wait_until_gone(parent.marker, 5.0) == []
    log = cluster.log.read_text()
    assert "received fast shutdown request" in log
    assert "database system is shut down" in log
