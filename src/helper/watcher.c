/* watcher.c - the cgroup mechanism's watcher (Linux): one per parent process.
 *
 *   leashed-helper watcher -p PPID -w PPID -c SOCK [-l LIFE] [-r REPORT] -- CGROUP_DIR
 *
 * CGROUP_DIR is the parent process's own cgroup of leash cgroups (leashed-PID-START, made
 * here if it does not exist yet: a new watcher adopts an existing one); each
 * target runs in a child cgroup "tN" of it, joined before the target executes (direct mode
 * -J). The launcher opens what it watches, forks the watcher into a session of its own (a
 * kill of the parent's process group does not reach it) and exits. The watcher then:
 * - on the parent's death (its pidfd; a lifeline EOF only if the pidfd agrees): the death
 *   signal to every member of every registered cgroup, the grace, then cgroup.kill of the
 *   whole CGROUP_DIR (unregistered cgroups too), and removes every emptied cgroup;
 * - on a target's exit (its pidfd): cgroup.kill of its cgroup unless keep; once a cgroup is
 *   empty it is told RELEASED to the parent, which reuses it (no mkdir/rmdir per child).
 * Messages on SOCK (docs/helper-protocol.md): parent -> watcher six native int32
 * (op, index, pid, signal, grace_ms or -1, keep); watcher -> parent two (what, index).
 * A member is signalled through a pidfd opened on a pid read from cgroup.procs, and only
 * if /proc/PID/cgroup still names the cgroup: never a reused pid elsewhere.
 */
#include "helper.h"

#define SLOT_MAX 4096 /* cgroups t0 .. t4095 */
/* final cgroup.kill rounds (x RECHECK_MS) before giving up: a minute, for a loaded machine
 * where SIGKILLed processes take seconds to exit and so to leave their cgroup */
#define END_ROUNDS 3000
#define RECHECK_MS 20

enum { MSG_PREPARE = 1, MSG_START = 2, MSG_END = 3 };
enum { TELL_READY = 1, TELL_RELEASED = 2 };
enum phase { FREE, PREPARED, RUNNING, KEPT, ENDING, KILLED };

struct slot {
	unsigned char phase;
	int sig, keep;
	long grace_ms;	    /* -1: the death signal only */
	long long deadline; /* ENDING: cgroup.kill then; -1 = never */
	int fd;		    /* RUNNING: the target's pidfd; after it: cgroup.events */
};

struct watcher {
	const struct opts *o;
	const char *name; /* CGROUP_DIR's last component */
	int dir, sock, wfd, life;
	int parent_gone, hi; /* hi: one above the highest slot in use */
	unsigned char buf[24];
	size_t blen;
};

static struct slot slots[SLOT_MAX];
static struct pollfd pfds[SLOT_MAX + 3];
static int pslot[SLOT_MAX + 3];

/* ------------------------------------------------------------------ cgroup files */

/* The decimal digits of v at p (no NUL); their count. */
static size_t put_num(char *p, unsigned v)
{
	char num[12];
	size_t k = sizeof num;

	do
		num[--k] = (char)('0' + v % 10);
	while ((v /= 10) > 0);
	memcpy(p, num + k, sizeof num - k);
	return sizeof num - k;
}

/* "tN/FILE", or "tN" for an empty FILE, into buf (at least 16 + strlen(file) bytes). */
static const char *slot_path(char *buf, size_t size, int i, const char *file)
{
	size_t n = 1, f = strlen(file);

	buf[0] = 't';
	n += put_num(buf + 1, (unsigned)i);
	if (f && n + 1 + f < size) {
		buf[n++] = '/';
		memcpy(buf + n, file, f);
		n += f;
	}
	buf[n] = 0;
	return buf;
}

static int open_slot_file(const struct watcher *w, int i, const char *file, int flags)
{
	char path[64];
	return lh_high_fd(openat(w->dir, slot_path(path, sizeof path, i, file), flags | O_CLOEXEC, 0));
}

/* cgroup.kill: SIGKILL to every member and descendant cgroup, at once (Linux 5.14+). */
static void write_kill(int dirfd, const char *path)
{
	int fd = lh_high_fd(openat(dirfd, path, O_WRONLY | O_CLOEXEC, 0));
	if (fd >= 0) {
		lh_put(fd, "1", 1);
		close(fd);
	}
}

/* 1 while "populated 1" is in the (re-read) cgroup.events; 0 when empty or gone. */
static int populated(int fd)
{
	static const char key[] = "populated ";
	char buf[256];
	ssize_t n;
	size_t i, k = sizeof key - 1;

	if (lseek(fd, 0, SEEK_SET) < 0 || (n = read(fd, buf, sizeof buf - 1)) <= 0)
		return 0;
	buf[n] = 0;
	for (i = 0; i + k < (size_t)n; i++)
		if (!memcmp(buf + i, key, k))
			return buf[i + k] == '1';
	return 0;
}

/* Whether /proc/PID/cgroup names our cgroup tN (the line ends in "/NAME/tN"). */
static int is_member(const struct watcher *w, pid_t pid, int i)
{
	char path[32], buf[4096], want[320], tn[16];
	size_t nl = strlen(w->name), tl, k, m;
	ssize_t n;
	int fd;

	slot_path(tn, sizeof tn, i, "");
	tl = strlen(tn);
	if (nl + tl + 3 > sizeof want)
		return 0;
	want[0] = '/';
	memcpy(want + 1, w->name, nl);
	want[nl + 1] = '/';
	memcpy(want + nl + 2, tn, tl);
	want[m = nl + tl + 2] = '\n';
	memcpy(path, "/proc/", 6);
	k = 6 + put_num(path + 6, (unsigned)pid);
	memcpy(path + k, "/cgroup", 8);
	fd = lh_high_fd(open(path, O_RDONLY | O_CLOEXEC, 0));
	if (fd < 0)
		return 0;
	n = read(fd, buf, sizeof buf);
	close(fd);
	for (k = 0; n > 0 && k + m + 1 <= (size_t)n; k++)
		if (!memcmp(buf + k, want, m + 1))
			return 1;
	return 0;
}

/* ------------------------------------------------------------------ signalling members */

static void send_pidfd(void *ctx, int sig) { lh_pidfd_send_signal(*(int *)ctx, sig); }

static void signal_pid(const struct watcher *w, int i, pid_t pid, int sig)
{
	int pidfd = lh_high_fd(lh_pidfd_open(pid));

	if (pidfd < 0)
		return;
	if (is_member(w, pid, i)) /* pinned by the pidfd, and still in the cgroup */
		lh_send_death(sig, send_pidfd, &pidfd);
	close(pidfd);
}

/* The death signal (with SIGCONT) to every member of tN, read from its cgroup.procs. */
static void signal_members(const struct watcher *w, int i, int sig)
{
	char list[4096];
	unsigned long long pid = 0;
	ssize_t r, j;
	int fd = open_slot_file(w, i, "cgroup.procs", O_RDONLY);

	if (fd < 0)
		return;
	while ((r = read(fd, list, sizeof list)) > 0)
		for (j = 0; j < r; j++) {
			if (list[j] >= '0' && list[j] <= '9') {
				pid = pid * 10 + (unsigned long long)(list[j] - '0');
			} else if (pid) {
				signal_pid(w, i, (pid_t)pid, sig);
				pid = 0;
			}
		}
	close(fd);
}

/* ------------------------------------------------------------------ slot phases */

static void tell(struct watcher *w, int what, int index)
{
	int32_t msg[2];

	if (w->sock < 0)
		return;
	msg[0] = what;
	msg[1] = index;
	lh_put(w->sock, msg, sizeof msg); /* SIGPIPE is ignored: EPIPE if the parent is gone */
}

/* From now on tN is watched by its cgroup.events until it is empty. */
static void watch_events(struct watcher *w, int i, enum phase phase)
{
	struct slot *s = &slots[i];

	if (s->fd >= 0)
		close(s->fd);
	s->phase = (unsigned char)phase;
	s->fd = open_slot_file(w, i, "cgroup.events", O_RDONLY);
}

static void events_changed(struct watcher *w, int i)
{
	struct slot *s = &slots[i];

	if (s->fd >= 0 && populated(s->fd))
		return;
	if (s->fd >= 0)
		close(s->fd);
	s->fd = -1;
	s->phase = FREE;
	if (!w->parent_gone)
		tell(w, TELL_RELEASED, i);
}

static void kill_slot(struct watcher *w, int i)
{
	char path[64];

	write_kill(w->dir, slot_path(path, sizeof path, i, "cgroup.kill"));
	watch_events(w, i, KILLED);
	events_changed(w, i);
}

/* As on the parent's death: the death signal, then cgroup.kill after the grace. */
static void start_ending(struct watcher *w, int i)
{
	struct slot *s = &slots[i];

	if (s->phase == FREE || s->phase == ENDING || s->phase == KILLED)
		return;
	if (s->sig == SIGKILL || s->grace_ms == 0) {
		kill_slot(w, i);
		return;
	}
	signal_members(w, i, s->sig);
	watch_events(w, i, ENDING);
	s->deadline = s->grace_ms < 0 ? -1 : lh_now_ms() + s->grace_ms;
	events_changed(w, i);
}

static void target_exited(struct watcher *w, int i)
{
	struct slot *s = &slots[i];

	if (s->keep) { /* its leftovers live on until the parent dies, or kill() */
		watch_events(w, i, KEPT);
		events_changed(w, i);
	} else {
		kill_slot(w, i);
	}
}

/* START: the target runs in tN. Its pid is pinned by a pidfd and checked to be a member;
 * a target already reaped (and its pid perhaps reused elsewhere) counts as exited. */
static void start_target(struct watcher *w, int i, pid_t pid)
{
	struct slot *s = &slots[i];

	s->phase = RUNNING;
	s->fd = pid > 0 ? lh_high_fd(lh_pidfd_open(pid)) : -1;
	if (s->fd >= 0 && is_member(w, pid, i))
		return;
	if (s->fd >= 0)
		close(s->fd);
	s->fd = -1;
	target_exited(w, i);
}

static void message(struct watcher *w, const int32_t *m)
{
	struct slot *s;

	if (m[1] < 0 || m[1] >= SLOT_MAX)
		return;
	s = &slots[m[1]];
	if (m[1] >= w->hi)
		w->hi = m[1] + 1;
	if (m[0] == MSG_PREPARE && (s->phase == FREE || s->phase == PREPARED)) {
		s->phase = PREPARED;
		s->sig = m[3] > 0 && m[3] < NSIG ? m[3] : SIGKILL;
		s->grace_ms = m[4];
		s->keep = m[5] != 0;
	} else if (m[0] == MSG_START && s->phase == PREPARED) {
		start_target(w, m[1], m[2]);
	} else if (m[0] == MSG_END) {
		start_ending(w, m[1]);
	}
}

/* ------------------------------------------------------------------ events */

static void read_socket(struct watcher *w)
{
	int32_t m[6];
	ssize_t r = read(w->sock, w->buf + w->blen, sizeof w->buf - w->blen);

	if (r < 0 && (errno == EINTR || errno == EAGAIN))
		return;
	if (r <= 0) { /* the parent's end is closed: no more requests (its death is the pidfd's) */
		close(w->sock);
		w->sock = -1;
		return;
	}
	w->blen += (size_t)r;
	if (w->blen < sizeof w->buf)
		return;
	w->blen = 0;
	memcpy(m, w->buf, sizeof m);
	message(w, m);
}

static int poll_add(int n, int fd, short events, int slot)
{
	pfds[n].fd = fd;
	pfds[n].events = events;
	pfds[n].revents = 0;
	pslot[n] = slot;
	return n + 1;
}

/* The nearest grace deadline from now, in ms; -1 if none. */
static long next_deadline(const struct watcher *w)
{
	long long now = lh_now_ms(), best = -1;
	int i;

	for (i = 0; i < w->hi; i++)
		if (slots[i].phase == ENDING && slots[i].deadline >= 0 && (best < 0 || slots[i].deadline < best))
			best = slots[i].deadline;
	return best < 0 ? -1 : best <= now ? 0 : (long)(best - now);
}

static void expire_deadlines(struct watcher *w)
{
	long long now = lh_now_ms();
	int i;

	for (i = 0; i < w->hi; i++)
		if (slots[i].phase == ENDING && slots[i].deadline >= 0 && slots[i].deadline <= now)
			kill_slot(w, i);
}

/* A lifeline EOF is the parent's death only if its pidfd says so (a child forked without
 * our at-fork hooks may hold the write end; an application may close it). */
static void parent_events(struct watcher *w, short wrev, short lrev)
{
	struct pollfd p;
	struct timespec zero = { 0, 0 };

	if (lrev && lh_lifeline_eof(w->life)) {
		close(w->life);
		w->life = -1;
		p.fd = w->wfd;
		p.events = POLLIN;
		wrev = ppoll(&p, 1, &zero, NULL) > 0 ? p.revents : wrev;
	}
	if (wrev && w->wfd >= 0) { /* stays readable: polled no more (no spin in a grace) */
		close(w->wfd);
		w->wfd = -1;
		w->parent_gone = 1;
	}
}

static void wait_events(struct watcher *w)
{
	struct timespec ts;
	int n = 0, k, i;

	n = poll_add(n, w->sock, POLLIN, -1);
	n = poll_add(n, w->wfd, POLLIN, -2);
	n = poll_add(n, w->life, POLLIN, -3);
	for (i = 0; i < w->hi; i++)
		if (slots[i].fd >= 0)
			n = poll_add(n, slots[i].fd, slots[i].phase == RUNNING ? POLLIN : POLLPRI, i);
	if (ppoll(pfds, (unsigned long)n, lh_timeout(&ts, next_deadline(w)), NULL) > 0) {
		if (pfds[0].revents && w->sock >= 0)
			read_socket(w);
		parent_events(w, pfds[1].revents, w->life >= 0 ? pfds[2].revents : 0);
		for (k = 3; k < n; k++) {
			i = pslot[k];
			if (!pfds[k].revents || slots[i].fd != pfds[k].fd)
				continue;
			if (slots[i].phase == RUNNING) {
				close(slots[i].fd);
				slots[i].fd = -1;
				target_exited(w, i);
			} else {
				events_changed(w, i);
			}
		}
	}
	expire_deadlines(w);
}

/* ------------------------------------------------------------------ the end */

static int any_ending(const struct watcher *w)
{
	int i;
	for (i = 0; i < w->hi; i++)
		if (slots[i].phase == ENDING || slots[i].phase == KILLED)
			return 1;
	return 0;
}

#define NEST_MAX 8 /* cgroup levels below a tN removed (a leashed program's own, nested) */
#define DT_DIR_ 4

/* Removes every cgroup below dirfd, deepest first (a target that leashes its own children
 * has its own leashed-PID-START below its tN; its watcher died with it). */
static void remove_below(int dirfd, int depth)
{
	char buf[4096];
	long n, off;
	int sub;

	if (depth <= 0 || lseek(dirfd, 0, SEEK_SET) < 0)
		return;
	while ((n = lh_getdents64(dirfd, buf, sizeof buf)) > 0)
		for (off = 0; off < n; off += ((struct lh_dirent64 *)(buf + off))->d_reclen) {
			const struct lh_dirent64 *d = (const struct lh_dirent64 *)(buf + off);
			if (d->d_type != DT_DIR_ || d->d_name[0] == '.')
				continue;
			sub = lh_high_fd(openat(dirfd, d->d_name, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0));
			if (sub >= 0) {
				remove_below(sub, depth - 1);
				close(sub);
			}
			unlinkat(dirfd, d->d_name, AT_REMOVEDIR);
		}
}

/* Removes every cgroup left in CGROUP_DIR, then CGROUP_DIR itself; 0 once it is gone. */
static int remove_all(struct watcher *w)
{
	remove_below(w->dir, NEST_MAX);
	return unlinkat(AT_FDCWD, w->o->prog, AT_REMOVEDIR) < 0 && errno != ENOENT ? -1 : 0;
}

/* The parent is gone: every cgroup's death signal and grace, then cgroup.kill of the whole
 * CGROUP_DIR (what was never registered, and stragglers), until it can be removed. */
_Noreturn static void end_all(struct watcher *w)
{
	struct timespec ts;
	int i, rounds;

	for (i = 0; i < w->hi; i++)
		start_ending(w, i);
	while (any_ending(w))
		wait_events(w);
	for (rounds = 0; rounds < END_ROUNDS; rounds++) {
		write_kill(w->dir, "cgroup.kill");
		if (remove_all(w) == 0)
			_exit(0);
		ppoll(NULL, 0, lh_timeout(&ts, RECHECK_MS), NULL);
	}
	_exit(1);
}

/* ------------------------------------------------------------------ start-up */

/* A new watcher adopts what a killed one left: an empty tN is free (the parent knows it
 * as such), a populated one waits for the parent to register it again (PREPARE, START). */
static void adopt(struct watcher *w)
{
	char buf[4096];
	unsigned long long v;
	long n, off;
	int fd;

	while ((n = lh_getdents64(w->dir, buf, sizeof buf)) > 0)
		for (off = 0; off < n; off += ((struct lh_dirent64 *)(buf + off))->d_reclen) {
			const char *name = ((struct lh_dirent64 *)(buf + off))->d_name;
			if (name[0] != 't' || lh_parse_num(name + 1, 0, SLOT_MAX - 1, &v) < 0)
				continue;
			if ((int)v >= w->hi)
				w->hi = (int)v + 1;
			fd = open_slot_file(w, (int)v, "cgroup.events", O_RDONLY);
			if (fd >= 0 && populated(fd)) {
				slots[v].phase = PREPARED;
				slots[v].sig = SIGKILL;
				slots[v].grace_ms = -1;
			}
			if (fd >= 0)
				close(fd);
		}
}

/* In the launcher: the parent's pidfd, opened while the parent is ours (-p). */
static void open_watched(struct watcher *w, const struct opts *o)
{
	struct rlimit rl;
	int i;

	memset(w, 0, sizeof *w);
	w->o = o;
	w->sock = o->ctl_fd;
	w->life = o->life_fd;
	for (w->name = o->prog, i = 0; o->prog[i]; i++)
		if (o->prog[i] == '/' && o->prog[i + 1])
			w->name = o->prog + i + 1;
	w->wfd = lh_open_watch(o->watch);
	if (w->wfd < 0)
		lh_fail(o, STAGE_ARM, errno, "arm the leash", NULL);
	if (o->ppid && getppid() != o->ppid) { /* gone already: the pidfd may name a reused pid */
		close(w->wfd);
		w->wfd = -1;
		w->parent_gone = 1; /* what it left is ended all the same */
	}
	for (i = 0; i < SLOT_MAX; i++)
		slots[i].fd = -1;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max; /* a pidfd or cgroup.events fd per running child */
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

/* CGROUP_DIR is made by the watcher itself, once it runs detached: if the parent (or the
 * launcher) dies before, nothing is left; once it is made, the watcher removes it, even
 * when the parent is already gone. */
static void open_dir(struct watcher *w, const struct opts *o)
{
	if (mkdir(o->prog, 0755) < 0 && errno != EEXIST)
		lh_fail(o, STAGE_SETUP, errno, "mkdir", o->prog);
	w->dir = lh_high_fd(open(o->prog, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0));
	if (w->dir < 0)
		lh_fail(o, STAGE_SETUP, errno, "open", o->prog);
}

/* The watcher runs in a session of its own; the launcher exits 0 once it is forked. */
static void detach(struct watcher *w, const struct opts *o)
{
	struct sigaction ign;
	pid_t pid = fork();

	if (pid < 0)
		lh_fail(o, STAGE_FORK, errno, "fork the watcher", NULL);
	if (pid > 0)
		_exit(0);
	setsid(); /* first: a kill of the parent's group from now on cannot stop it half-way */
	open_dir(w, o);
	if (o->report_fd >= 0)
		close(o->report_fd); /* the caller's EOF: armed */
	chdir("/");
	lh_close_stdio();
	memset(&ign, 0, sizeof ign);
	ign.sa_handler = SIG_IGN;
	sigaction(SIGPIPE, &ign, NULL);
}

_Noreturn void lh_run_watcher(struct opts *o)
{
	static struct watcher w;

	open_watched(&w, o);
	detach(&w, o);
	adopt(&w);
	tell(&w, TELL_READY, 0);
	while (!w.parent_gone)
		wait_events(&w);
	end_all(&w);
}
