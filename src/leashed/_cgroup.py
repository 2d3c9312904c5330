"""The cgroup mechanism (Linux, cgroup v2): every target in a cgroup of its own.

Where this process may write a cgroup v2 hierarchy (root, a container with its own cgroup
namespace, a ``Delegate=yes`` unit), it makes one cgroup of its own below its cgroup,
``leashed-PID-START``, holding one child cgroup ``tN`` per running target. The target joins
``tN`` before it runs (the helper's direct mode writes "0" to the fd given by ``-J``), so
every descendant is born inside it whatever it does with sessions, groups or forks; a
cgroup can only be left with write access elsewhere. One watcher per process (helper mode
``watcher``, detached, in its own session) ends them: on this process's death the death
signal, the grace, then ``cgroup.kill``; on a target's exit its cgroup's leftovers. Emptied
cgroups come back to a small pool: no mkdir/rmdir per child.

If the watcher is killed while this process lives, a thread of ours notices (its socket's
EOF) and starts a new one that adopts the cgroups; every spawn also checks it first.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import select
import socket
import struct
import subprocess
import sys
import threading
from dataclasses import dataclass

from . import _helper, _lifeline, _seam
from ._fds import above_stdio, pipe_above_stdio, socketpair_above_stdio
from ._plan import LeashPlan
from ._protocol import read_report, report_error

assert sys.platform == "linux", "cgroups are Linux's"  # for type checkers

#: parent -> watcher: (op, index, pid, signal, grace_ms or -1, keep); see watcher.c.
MESSAGE = struct.Struct("=6i")
#: watcher -> parent: (what, index).
TELLING = struct.Struct("=2i")
MSG_PREPARE, MSG_START, MSG_END = 1, 2, 3
TELL_READY, TELL_RELEASED = 1, 2
#: Emptied cgroups kept for reuse; more are removed.
POOL_MAX = 16
#: The watcher's slot table (t0 .. t4095).
SLOT_MAX = 4096
PREFIX = "leashed-"


@dataclass(frozen=True)
class Site:
    """Where leash cgroups go: ``path`` (the directory) is this process's cgroup
    ``cgroup`` (as /proc/self/cgroup names it) in the v2 hierarchy mounted at ``mount``."""

    mount: str
    cgroup: str
    path: str


def _unescape(field: str) -> str:
    """A mountinfo path field: octal escapes (\\040 for a space) decoded."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def _cgroup2_mount() -> tuple[str, str] | None:
    """(mount point, root within the hierarchy) of the first cgroup2 mount, or None."""
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            fields = line.split()
            if "-" not in fields:
                continue
            sep = fields.index("-")
            if len(fields) > sep + 1 and fields[sep + 1] == "cgroup2":
                return _unescape(fields[4]), _unescape(fields[3])
    return None


def _own_cgroup() -> str | None:
    """This process's cgroup v2 path ("0::PATH" of /proc/self/cgroup), or None."""
    with open("/proc/self/cgroup", encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            if line.startswith("0::"):
                return line[3:].rstrip("\n")
    return None


def find_site() -> Site | str:
    """The site for this process's leash cgroups, or why there is none (a sentence)."""
    try:
        mount = _cgroup2_mount()
        own = _own_cgroup()
    except OSError as exc:
        return f"cannot read /proc: {exc.strerror}"
    if mount is None:
        return "no cgroup v2 hierarchy is mounted (/proc/self/mountinfo)"
    if own is None:
        return "this process is in no cgroup v2 cgroup (/proc/self/cgroup has no 0:: line)"
    point, root = mount
    if own.endswith(" (deleted)"):
        return f"this process's cgroup {own} was removed"
    if root != "/" and own != root and not own.startswith(root.rstrip("/") + "/"):
        return f"this process's cgroup {own} is not below the mount of {point} ({root})"
    rel = own[len(root) :] if root != "/" else own
    path = os.path.join(point, rel.lstrip("/")).rstrip("/") or "/"
    why = _unusable(path)
    return Site(point, own, path) if why is None else f"cgroup {path}: {why}"


def _unusable(path: str) -> str | None:
    """Why leash cgroups cannot be made below ``path`` by this process, or None."""
    if not os.access(path, os.W_OK | os.X_OK):
        return "not writable by this process (no delegated subtree)"
    if not os.access(os.path.join(path, "cgroup.procs"), os.W_OK):
        return "its cgroup.procs is not writable: processes cannot be moved below it"
    try:
        with open(os.path.join(path, "cgroup.type")) as f:
            if f.read().strip() not in ("domain", "domain threaded"):
                return "a threaded cgroup cannot hold processes of their own"
    except FileNotFoundError:
        pass  # the root cgroup
    except OSError as exc:
        return exc.strerror
    for name in ("cgroup.max.descendants", "cgroup.max.depth"):
        try:
            with open(os.path.join(path, name)) as f:
                value = f.read().strip()
        except OSError:
            continue
        if value != "max" and int(value) < 2:
            return f"{name} is {value}: two levels below it are needed"
    if not _has_cgroup_kill(path):
        return "this kernel has no cgroup.kill (Linux 5.14+)"
    return None


def _has_cgroup_kill(path: str) -> bool:
    """cgroup.kill exists in every non-root cgroup of 5.14+; the root has none, so there
    a child cgroup, or else the kernel's version, tells."""
    if os.path.exists(os.path.join(path, "cgroup.kill")):
        return True
    with os.scandir(path) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                return os.path.exists(os.path.join(entry.path, "cgroup.kill"))
    try:
        major, minor = (int(x) for x in os.uname().release.split(".")[:2])
    except ValueError:
        return False
    return (major, minor) >= (5, 14)


_site_cache: list[Site | str] = []


def site() -> Site | str:
    """find_site(), once per process (a fork child in a leash cgroup finds its own)."""
    if not _site_cache:
        _site_cache.append(find_site())
    return _site_cache[0]


def available() -> bool:
    """Whether the cgroup mechanism works here (the helper present, a writable site)."""
    return _helper.helper_path() is not None and isinstance(site(), Site)


def unavailable_error() -> RuntimeError:
    """The error of a forced ``mechanism="cgroup"`` that cannot work here."""
    where = site()
    why = "leashed-helper is not installed" if isinstance(where, Site) else where
    return RuntimeError(f"mechanism='cgroup' is not available here: {why}")


# -- the watcher and the pool, one per process ---------------------------------------------


def _start_time() -> int:
    """This process's start time (field 22 of /proc/self/stat): its pid is reused later."""
    with open("/proc/self/stat", "rb") as f:
        return int(f.read().rsplit(b")", 1)[1].split()[19])


class Slot:
    """One target's cgroup ``tN``, held by its ChildLeash until the child is reaped."""

    def __init__(self, leashes: Leashes, index: int, plan: LeashPlan) -> None:
        self.leashes = leashes
        self.index = index
        self.plan = plan
        self.pid = 0
        self.held = True

    @property
    def path(self) -> str:
        """The cgroup's directory."""
        return os.path.join(self.leashes.path, f"t{self.index}")

    def open_procs(self) -> int:
        """An fd on its cgroup.procs for the helper's -J (close-on-exec, passed by pass_fds;
        above stdio: the caller may have closed 0-2, which the child's stdio then takes).
        A write there migrates the writer: the kernel takes cgroup_threadgroup_rwsem for
        writing, which waits for an RCU grace period when spawns are spaced out (unless
        the hierarchy is mounted with favordynmods), and serialises concurrent spawns."""
        path = os.path.join(self.path, "cgroup.procs")
        return above_stdio(os.open(path, os.O_WRONLY | os.O_CLOEXEC))

    def open_dir(self) -> int:
        """An fd on the cgroup's directory, for clone3(CLONE_INTO_CGROUP) by whatever
        executes the child (an in-process spawn): no migration at all (see open_procs)."""
        return above_stdio(os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC))

    def started(self, pid: int) -> None:
        """The target runs in it (pid 0: the spawn failed); the watcher now watches it."""
        self.pid = pid
        self.leashes.send(MSG_START, self)

    def kill(self) -> None:
        """cgroup.kill: the target and every process in its cgroup, at once."""
        if self.held:
            with contextlib.suppress(FileNotFoundError):
                with open(os.path.join(self.path, "cgroup.kill"), "w") as f:
                    f.write("1")

    def end(self) -> None:
        """As on the parent's death: the death signal, the grace, then cgroup.kill."""
        if self.held:
            self.leashes.send(MSG_END, self)

    def release(self) -> None:
        """The child is reaped (or let go): the cgroup returns once the watcher empties it."""
        if self.held:
            self.held = False
            self.leashes.owner_done(self.index)


class Leashes:
    """This process's cgroup of leash cgroups, its watcher and its pool."""

    def __init__(self, where: Site) -> None:
        # Reentrant: a garbage-collected Popen (kill_on_drop) may send from inside a locked
        # section of the same thread.
        self.lock = threading.RLock()
        self.path = os.path.join(where.path, f"{PREFIX}{os.getpid()}-{_start_time()}")
        self.sock: socket.socket | None = None
        self.running: dict[int, Slot] = {}  # held by a child, or not yet emptied
        self.emptied: set[int] = set()  # released by the watcher, still held by a child
        self.free: list[int] = []
        self.made = 0  # t0 .. t(made-1) exist or existed
        self._pending = b""  # a part of a message from the watcher
        # self.path is made by the watcher: a parent killed before it runs leaves nothing

    # -- the watcher --------------------------------------------------------------------

    def ensure_watcher(self) -> None:
        """A live watcher, started (again) if there is none. Called with the lock held."""
        if self.sock is not None and not _peer_closed(self.sock):
            return
        if self.sock is not None:
            self._drain()  # what it said before it died still counts
            self.sock.close()
            self.sock = None
        self._pending = b""
        self._launch()
        for slot in self.running.values():  # a new watcher adopts them
            self._send(MSG_PREPARE, slot)
            if slot.pid or not slot.held:
                self._send(MSG_START, slot)

    def _launch(self) -> None:
        helper = _helper.helper_path()
        assert helper is not None
        ours, theirs = socketpair_above_stdio()
        report_read, report_write = pipe_above_stdio()
        try:
            life = _lifeline.lifeline_read_fd()
            pid = str(os.getpid())
            argv = [helper, "watcher", "-p", pid, "-w", pid, "-c", str(theirs), "-l", str(life)]
            argv += ["-r", str(report_write), "--", self.path]
            launcher = _seam.UnleashedPopen(
                argv,
                env={},  # it needs none, and must not carry the caller's into the future
                pass_fds=(theirs, life, report_write),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        except BaseException:
            ours.close()
            os.close(report_read)
            raise
        finally:
            os.close(theirs)
            os.close(report_write)
        failure = read_report(report_read)
        launcher.wait()
        if failure is not None:
            ours.close()
            raise report_error(*failure, filename=helper)
        self.sock = ours
        threading.Thread(target=self._listen, args=(ours,), daemon=True).start()

    def _listen(self, sock: socket.socket) -> None:
        """Waits for the watcher's end to close (killed?), and starts a new watcher at
        once. Woken by that only: its messages are read by the spawns (_drain)."""
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLRDHUP | select.POLLHUP)
        while True:
            try:
                poller.poll()
                break
            except InterruptedError:  # pragma: no cover (PEP 475 retries)
                continue
            except (OSError, ValueError):
                break
        with self.lock:
            if self.sock is sock and _state is self:
                with contextlib.suppress(OSError):
                    self.ensure_watcher()

    def _drain(self) -> None:
        """The watcher's messages so far (RELEASED: a cgroup is empty). Lock held."""
        while self.sock is not None:
            try:
                data = self.sock.recv(TELLING.size * 512, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data = b""
            if not data:
                return  # EOF: ensure_watcher notices it
            self._pending += data
            whole = len(self._pending) - len(self._pending) % TELLING.size
            for what, index in TELLING.iter_unpack(self._pending[:whole]):
                if what == TELL_RELEASED:
                    self._released(index)
            self._pending = self._pending[whole:]

    def send(self, op: int, slot: Slot) -> None:
        """One message to the watcher (mended first if it is gone)."""
        with self.lock:
            self.ensure_watcher()
            self._deliver(op, slot)

    def _deliver(self, op: int, slot: Slot) -> None:
        """_send; a watcher that died unnoticed is replaced, which registers every running
        slot again (PREPARE, START), so only END is sent once more."""
        try:
            self._send(op, slot)
        except OSError:
            if self.sock is not None:
                self.sock.close()
                self.sock = None
            self.ensure_watcher()
            if op == MSG_END:
                self._send(op, slot)

    def _send(self, op: int, slot: Slot) -> None:
        plan = slot.plan
        grace = -1 if plan.grace_ms is None else plan.grace_ms
        message = MESSAGE.pack(
            op, slot.index, slot.pid, plan.death_signal, grace, plan.keep_leftovers
        )
        assert self.sock is not None
        self.sock.sendall(message)

    # -- the pool -----------------------------------------------------------------------

    def acquire(self, plan: LeashPlan) -> Slot:
        """A cgroup for one target, registered with a live watcher before the spawn."""
        with self.lock:
            self.ensure_watcher()
            self._drain()
            if self.free:
                index = self.free.pop()
            else:
                index = self._make()
            slot = self.running[index] = Slot(self, index, plan)
            self._deliver(MSG_PREPARE, slot)
            return slot

    def _make(self) -> int:
        if self.made >= SLOT_MAX:
            raise OSError(errno.EAGAIN, f"more than {SLOT_MAX} leash cgroups at once")
        index = self.made
        os.mkdir(os.path.join(self.path, f"t{index}"), 0o755)
        self.made += 1
        return index

    def _released(self, index: int) -> None:
        slot = self.running.get(index)
        if slot is None:
            return
        if slot.held:
            self.emptied.add(index)
        else:
            self._free(index)

    def owner_done(self, index: int) -> None:
        with self.lock:
            if index in self.emptied:
                self.emptied.discard(index)
                self._free(index)

    def _free(self, index: int) -> None:
        del self.running[index]
        if len(self.free) < POOL_MAX:
            self.free.append(index)
        else:
            with contextlib.suppress(OSError):  # the watcher removes what is left at the end
                os.rmdir(os.path.join(self.path, f"t{index}"))


def _peer_closed(sock: socket.socket) -> bool:
    """Whether the watcher's end of the socket is closed (it died)."""
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLRDHUP | select.POLLHUP)
    return bool(poller.poll(0))


_state: Leashes | None = None
_state_lock = threading.Lock()


def leashes() -> Leashes:
    """This process's Leashes, made on first use."""
    global _state
    with _state_lock:
        if _state is None:
            where = site()
            if not isinstance(where, Site):
                raise unavailable_error()
            _state = Leashes(where)
        return _state


def ensure_watcher() -> None:
    """This process's watcher, started now if it is not running (one socket fd, kept)."""
    state = leashes()
    with state.lock:
        state.ensure_watcher()


def _forget_in_fork_child() -> None:
    """A forked child is another parent: its own cgroup, its own watcher."""
    global _state, _state_lock
    _state_lock = threading.Lock()
    if _state is not None and _state.sock is not None:
        with contextlib.suppress(OSError):
            os.close(_state.sock.detach())
    _state = None
    _site_cache.clear()


os.register_at_fork(after_in_child=_forget_in_fork_child)
