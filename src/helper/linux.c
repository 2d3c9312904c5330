/* linux.c - the Linux backend: PR_SET_PDEATHSIG, the child subreaper and its /proc walk,
 * signalfd, pidfds. See helper.h for the interface. */
#include "helper.h"

#define TREE_MAX 4096 /* descendants tracked per /proc scan; more are caught in later rounds */
#define PID_MAX_ 2147483647ULL

/* ------------------------------------------------------------------ any mode */

int lh_arm_pdeathsig(int sig, int *old)
{
	if (old && prctl(PR_GET_PDEATHSIG, (unsigned long)old, 0, 0, 0) < 0)
		return -1;
	return prctl(PR_SET_PDEATHSIG, (unsigned long)sig, 0, 0, 0) < 0 ? -1 : 1;
}

void lh_no_core_dumps(void) { prctl(PR_SET_DUMPABLE, 0, 0, 0, 0); }

int lh_close_fds(unsigned lo, unsigned hi) { return lh_close_range(lo, hi); }

int lh_wait_signal(const sigset_t *set, int *by_process)
{
	siginfo_t si;
	int sig;

	memset(&si, 0, sizeof si);
	while ((sig = sigwaitinfo(set, &si)) < 0)
		if (errno != EINTR)
			return -1;
	/* A terminal's Ctrl+C is SI_KERNEL; kill(), killpg(), sigqueue(), tgkill() are not. */
	*by_process = si.si_code == SI_USER || si.si_code == SI_QUEUE || si.si_code == SI_TKILL;
	return sig;
}

int lh_open_watch(pid_t pid) { return lh_high_fd(lh_pidfd_open(pid)); }

/* ------------------------------------------------------------------ /proc */

struct pstat {
	char state;
	pid_t ppid, pgrp;
	unsigned long long start;
};

static struct desc {
	pid_t pid, ppid;
	unsigned long long start;
} tree[TREE_MAX];
static int tree_n;

static int open_proc(void) { return lh_high_fd(open("/proc", O_RDONLY | O_CLOEXEC, 0)); }

/* "PID/task" or "TID/children" into name, for openat(). */
static const char *proc_name(char *name, size_t size, pid_t pid, const char *suffix)
{
	size_t i = size, k = strlen(suffix);

	name[--i] = 0;
	memcpy(name + (i -= k), suffix, k);
	do
		name[--i] = (char)('0' + pid % 10);
	while ((pid /= 10) > 0);
	return name + i;
}

static int open_in(int dirfd, pid_t pid, const char *suffix)
{
	char name[32];
	return lh_high_fd(openat(dirfd, proc_name(name, sizeof name, pid, suffix), O_RDONLY | O_CLOEXEC, 0));
}

/* A numeric /proc (or task) entry name: its pid, or 0. */
static pid_t entry_pid(const char *buf, long off)
{
	unsigned long long v;
	return lh_parse_num(((const struct lh_dirent64 *)(buf + off))->d_name, 1, PID_MAX_, &v) == 0 ? (pid_t)v : 0;
}

static long next_entry(const char *buf, long off) { return off + ((const struct lh_dirent64 *)(buf + off))->d_reclen; }

/* state (field 3), ppid (4), pgrp (5) and starttime (22) of /proc/PID/stat, parsed after
 * the last ')'. */
static int read_stat(int procfd, pid_t pid, struct pstat *ps)
{
	char buf[1024], *p, *close_paren = NULL;
	int fd = open_in(procfd, pid, "/stat"), field;
	ssize_t n;
	unsigned long long v = 0;

	if (fd < 0)
		return -1;
	n = read(fd, buf, sizeof buf - 1);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = 0;
	for (p = buf; *p; p++)
		if (*p == ')')
			close_paren = p;
	if (!close_paren)
		return -1;
	p = close_paren + 1;
	for (field = 3; field <= 22; field++) {
		while (*p == ' ')
			p++;
		if (field == 3)
			ps->state = *p;
		for (v = 0; *p >= '0' && *p <= '9'; p++)
			v = v * 10 + (unsigned long long)(*p - '0');
		while (*p && *p != ' ')
			p++; /* the state letter, or a negative number */
		if (field == 4)
			ps->ppid = (pid_t)v;
		if (field == 5)
			ps->pgrp = (pid_t)v;
		if (!*p && field < 22)
			return -1;
	}
	ps->start = v;
	return 0;
}

static int in_tree(pid_t pid)
{
	int i;
	for (i = 0; i < tree_n; i++)
		if (tree[i].pid == pid)
			return 1;
	return 0;
}

static void add_descendant(pid_t pid, const struct pstat *ps)
{
	if (tree_n < TREE_MAX && !in_tree(pid)) {
		tree[tree_n].pid = pid;
		tree[tree_n].ppid = ps->ppid;
		tree[tree_n++].start = ps->start;
	}
}

/* Adds the pids listed in a /proc/PID/task/TID/children file. */
static void add_listed_children(int procfd, int fd)
{
	char list[4096];
	unsigned long long child = 0;
	struct pstat ps;
	ssize_t r, j;

	while ((r = read(fd, list, sizeof list)) > 0) {
		for (j = 0; j < r; j++) {
			if (list[j] >= '0' && list[j] <= '9') {
				child = child * 10 + (unsigned long long)(list[j] - '0');
			} else if (child) {
				if (read_stat(procfd, (pid_t)child, &ps) == 0)
					add_descendant((pid_t)child, &ps);
				child = 0;
			}
		}
	}
}

/* Adds the children of every thread of `pid` (/proc/PID/task/TID/children). Returns -1 if
 * this kernel has no such file (CONFIG_PROC_CHILDREN off), 0 otherwise. */
static int add_children_of(int procfd, pid_t pid)
{
	char buf[4096];
	int taskfd = open_in(procfd, pid, "/task"), fd, unsupported = 0;
	long n, off;
	pid_t tid;

	if (taskfd < 0)
		return 0; /* gone already */
	while ((n = lh_getdents64(taskfd, buf, sizeof buf)) > 0) {
		for (off = 0; off < n; off = next_entry(buf, off)) {
			if (!(tid = entry_pid(buf, off)))
				continue;
			fd = open_in(taskfd, tid, "/children");
			if (fd < 0) {
				unsupported |= errno == ENOENT;
				continue;
			}
			add_listed_children(procfd, fd);
			close(fd);
		}
	}
	close(taskfd);
	return unsupported ? -1 : 0;
}

/* Fills tree[] from the kernel's per-thread children lists, breadth first: the cost is the
 * size of our own tree, not of the whole machine. Returns -1 without those lists. */
static int walk_children(int procfd, pid_t self)
{
	int i;

	if (add_children_of(procfd, self) < 0)
		return -1;
	for (i = 0; i < tree_n; i++)
		add_children_of(procfd, tree[i].pid);
	return 0;
}

/* One pass over /proc: adds every process whose parent is `self` or in tree[]. */
static int scan_proc_once(int procfd, pid_t self)
{
	char buf[4096];
	int grew = 0, dirfd = open_proc();
	long n, off;
	pid_t pid;
	struct pstat ps;

	if (dirfd < 0)
		return 0;
	while ((n = lh_getdents64(dirfd, buf, sizeof buf)) > 0) {
		for (off = 0; off < n; off = next_entry(buf, off)) {
			if (!(pid = entry_pid(buf, off)) || in_tree(pid) || read_stat(procfd, pid, &ps) < 0)
				continue;
			if ((ps.ppid == self || in_tree(ps.ppid)) && tree_n < TREE_MAX) {
				add_descendant(pid, &ps);
				grew = 1;
			}
		}
	}
	close(dirfd);
	return grew;
}

/* The live descendants of `self` into tree[]: the children lists, or /proc passes until
 * one adds nothing (parents mostly precede their children in pid order, so two passes
 * usually do). */
static void scan_tree(pid_t self)
{
	static int no_children_lists;
	int procfd = open_proc();

	tree_n = 0;
	if (procfd < 0)
		return;
	if (no_children_lists || walk_children(procfd, self) < 0) {
		no_children_lists = 1;
		tree_n = 0;
		while (scan_proc_once(procfd, self))
			;
	}
	close(procfd);
}

/* A deeper descendant: pin it with a pidfd, then check it is still the process we saw. */
static void signal_descendant(const struct desc *d, int sig)
{
	int procfd, pidfd = lh_high_fd(lh_pidfd_open(d->pid));
	struct pstat ps;

	if (pidfd < 0)
		return; /* gone, or no pidfd (kernel < 5.3): it is reached once its parent dies */
	procfd = open_proc();
	if (procfd >= 0 && read_stat(procfd, d->pid, &ps) == 0 && ps.start == d->start)
		lh_pidfd_send_signal(pidfd, sig);
	if (procfd >= 0)
		close(procfd);
	close(pidfd);
}

/* END_TREE: every descendant, through the subreaper walk. */
void sup_signal_tree(struct sup *s, int sig)
{
	int i;

	scan_tree(s->self);
	for (i = 0; i < tree_n; i++) {
		if (tree[i].ppid == s->self)
			kill(tree[i].pid, sig); /* our child, unreaped since the scan */
		else
			signal_descendant(&tree[i], sig);
	}
}

/* Linux counts a zombie as a member (kill(-pgid, 0) succeeds while the leader is
 * unreaped), so look for a live member in /proc: O(processes), during an ending only. */
int sup_group_has_live_member(pid_t pgid)
{
	char buf[4096];
	long n, off;
	int found = 0, procfd = open_proc();
	pid_t pid;
	struct pstat ps;

	if (procfd < 0)
		return kill(-pgid, 0) == 0; /* no /proc: cannot tell a zombie; assume a member */
	while (!found && (n = lh_getdents64(procfd, buf, sizeof buf)) > 0)
		for (off = 0; !found && off < n; off = next_entry(buf, off))
			found = (pid = entry_pid(buf, off)) && read_stat(procfd, pid, &ps) == 0 &&
				ps.pgrp == pgid && ps.state != 'Z' && ps.state != 'X';
	close(procfd);
	return found;
}

/* ------------------------------------------------------------------ named control socket */

/* -L: the caller made and bound the listening socket (an abstract name: no file), so that
 * it holds no fd per supervised child and connects for each request. Anyone may connect to
 * an abstract name: only the -w process (the caller, alive, so its pid is its own) is
 * listened to, one connection at a time; a stranger is closed unanswered. */
void sup_accept(struct sup *s)
{
	struct ucred cred;
	socklen_t len = sizeof cred;
	int fd = lh_high_fd(accept4(s->listener, NULL, NULL, SOCK_CLOEXEC));

	if (fd < 0)
		return;
	if (s->ctl >= 0 || getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0 || cred.pid != s->o->watch) {
		close(fd);
		return;
	}
	s->ctl = fd;
	s->clen = 0;
}

/* ------------------------------------------------------------------ supervisor events */

static int add_fd(struct pollfd *p, int *n, int fd)
{
	if (fd < 0)
		return -1;
	p[*n].fd = fd;
	p[*n].events = POLLIN;
	p[*n].revents = 0;
	return (*n)++;
}

static int ready(const struct pollfd *p, int i) { return i >= 0 && p[i].revents; }

static void read_signals(struct sup *s)
{
	struct signalfd_siginfo si;
	int chld = 0;

	while (read(s->sfd, &si, sizeof si) == (ssize_t)sizeof si) {
		int by_process = si.ssi_code == SI_USER || si.ssi_code == SI_QUEUE || si.ssi_code == SI_TKILL;
		if (si.ssi_signo == SIGCHLD)
			chld = 1;
		else if (by_process && (pid_t)si.ssi_pid == s->self)
			continue; /* our own (a SIGPIPE on the control socket) */
		/* In our process group the target already has the terminal's signals
		 * (SI_KERNEL): forward only those a process sent. In its own group it has
		 * not: relay them all. */
		else if (by_process || s->pgid)
			sup_relay(s, (int)si.ssi_signo);
	}
	if (chld)
		sup_child_event(s, 0);
}

/* One wait for any event: a signal, lifeline EOF, -w exit, the front's exit, target exit
 * (-P), a control request. */
void sup_wait_events(struct sup *s, long timeout_ms)
{
	struct pollfd p[7];
	struct timespec ts;
	int n = 0, is, il, iw, ic, it, ifr, ia;

	is = add_fd(p, &n, s->sfd);
	il = add_fd(p, &n, s->life);
	ifr = add_fd(p, &n, s->front);
	iw = add_fd(p, &n, s->wfd);
	ic = add_fd(p, &n, s->ctl);
	it = add_fd(p, &n, s->tfd);
	ia = add_fd(p, &n, s->ctl < 0 ? s->listener : -1);
	if (ppoll(p, (unsigned long)n, lh_timeout(&ts, timeout_ms), NULL) <= 0)
		return;
	if (ready(p, is))
		read_signals(s);
	if (ready(p, il))
		sup_read_lifeline(s);
	if (ready(p, ifr))
		sup_read_front(s);
	if (ready(p, iw)) {
		close(s->wfd);
		s->wfd = -1;
		s->parent_gone = 1;
	}
	if (ready(p, ic))
		sup_read_control(s);
	if (ready(p, ia))
		sup_accept(s);
	if (ready(p, it)) {
		close(s->tfd);
		s->tfd = -1;
		sup_child_event(s, 1);
	}
}

/* Exits 1 if the parent is already gone (-w pid exited; lifeline at EOF without -w). */
static void check_parent_alive(const struct sup *s)
{
	struct pollfd p[2];
	struct timespec zero = { 0, 0 };

	p[0].fd = s->life; /* negative fds are skipped by poll */
	p[1].fd = s->wfd;
	p[0].events = p[1].events = POLLIN;
	if (ppoll(p, 2, &zero, NULL) <= 0)
		return;
	if (p[1].revents || ((p[0].revents & (POLLHUP | POLLERR | POLLNVAL)) && lh_lifeline_is_death(s->o)))
		_exit(1);
}

/* Subreaper (-t without -P), the pidfd checks. */
static void arm_leash(struct sup *s)
{
	const struct opts *o = s->o;
	int fd;

	if (s->end == END_TREE && prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) < 0)
		lh_fail(o, STAGE_ARM, errno, "arm the leash", NULL);
	if (o->group) { /* the target's exit must be seen without reaping it: needs pidfd */
		if ((fd = lh_pidfd_open(s->self)) < 0)
			lh_fail(o, STAGE_ARM, errno, "arm the leash", NULL);
		close(fd);
	}
	s->wfd = o->watch_fd; /* the front opened it, before its -p recheck */
	check_parent_alive(s);
}

/* The forwarded signals and SIGCHLD are blocked and read from a signalfd. */
static void block_signals(struct sup *s)
{
	struct sigaction dfl;
	sigset_t block;
	int i;

	sigemptyset(&block);
	for (i = 0; i < NFWD; i++)
		sigaddset(&block, lh_forwarded[i]);
	sigaddset(&block, SIGCHLD);
	sigprocmask(SIG_BLOCK, &block, &s->orig_mask);
	memset(&dfl, 0, sizeof dfl);
	dfl.sa_handler = SIG_DFL; /* SIG_IGN would auto-reap the target and lose its status;
				   * no SA_NOCLDSTOP: its stops are followed */
	sigaction(SIGCHLD, &dfl, &s->orig_chld);
	s->sfd = lh_high_fd(signalfd(-1, &block, SFD_CLOEXEC | SFD_NONBLOCK));
	if (s->sfd < 0)
		lh_fail(s->o, STAGE_SETUP, errno, "signalfd", NULL);
}

/* The pidfd on the front names it even after it exited and was reaped. */
void sup_continue_front(struct sup *s)
{
	if (s->ffd >= 0)
		lh_pidfd_send_signal(s->ffd, SIGCONT);
}

void sup_arm(struct sup *s)
{
	s->sfd = s->wfd = s->tfd = -1;
	s->ffd = lh_high_fd(lh_pidfd_open(s->front_pid));
	if (s->ffd >= 0 && getppid() != s->front_pid) { /* gone already: not ours to signal */
		close(s->ffd);
		s->ffd = -1;
	}
	arm_leash(s);
	block_signals(s);
	s->listener = s->o->listen_fd;
	if (s->listener >= 0 && fcntl(s->listener, F_SETFL, O_NONBLOCK) < 0)
		lh_fail(s->o, STAGE_SETUP, errno, "-L", NULL);
}

/* The group strategy: a pidfd on the target tells its exit without reaping it. */
int sup_watch_target(struct sup *s)
{
	if (s->end != END_GROUP)
		return 0;
	s->tfd = lh_high_fd(lh_pidfd_open(s->target)); /* our unreaped child: it is the target */
	return s->tfd < 0 ? errno : 0;
}

/* ------------------------------------------------------------------ guardian */

int guard_arm(struct guard *g)
{
	g->wfd = -1;
	if ((g->tfd = lh_high_fd(lh_pidfd_open(g->target))) < 0)
		return errno;
	if (g->o->watch && (g->wfd = lh_high_fd(lh_pidfd_open(g->o->watch))) < 0)
		return errno == ESRCH ? GUARD_GONE : errno;
	return 0;
}

void guard_wait(struct guard *g, long timeout_ms)
{
	struct pollfd p[3];
	struct timespec ts;
	int n = 0, it, iw, il;

	it = add_fd(p, &n, g->tfd);
	iw = add_fd(p, &n, g->wfd);
	il = add_fd(p, &n, g->life);
	if (ppoll(p, (unsigned long)n, lh_timeout(&ts, timeout_ms), NULL) <= 0)
		return;
	g->target_exited |= ready(p, it);
	if (ready(p, iw)) {
		close(g->wfd);
		g->wfd = -1;
		g->parent_gone = 1;
	}
	if (ready(p, il) && lh_lifeline_eof(g->life)) {
		close(g->life);
		g->life = -1;
		g->parent_gone |= lh_lifeline_is_death(g->o);
	}
}

/* The pidfd pins the target: never a reused pid. */
void guard_signal(struct guard *g, int sig) { lh_pidfd_send_signal(g->tfd, sig); }
