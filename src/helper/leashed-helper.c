/* leashed-helper - arms the leash, then becomes (exec) or starts (supervise, guard) the
 * target program. The contract with the Python side is docs/helper-protocol.md.
 *
 *   leashed-helper --version
 *   leashed-helper MODE [OPTION VALUE]... -- PROGRAM ARGV0 [ARG]...
 *
 * Rules kept throughout:
 * - No allocation; bounded static tables only.
 * - Code that runs in a forked child before exec uses async-signal-safe calls only.
 * - Nothing of ours reaches the target: our fds are close-on-exec, the signal mask and
 *   the SIGCHLD disposition are restored in the child before exec.
 * - Never signal a pid that may have been reused: direct children are safe while
 *   unreaped; deeper descendants go through pidfd_open + a start-time recheck; a
 *   process group only while its leader (the target) is unreaped.
 */
#if defined(__linux__) && !defined(LEASHED_NOLIBC) && !defined(_GNU_SOURCE)
#define _GNU_SOURCE /* -std=c11 hides POSIX otherwise */
#elif defined(__APPLE__) && !defined(_DARWIN_C_SOURCE)
#define _DARWIN_C_SOURCE
#elif defined(__NetBSD__) && !defined(_NETBSD_SOURCE)
#define _NETBSD_SOURCE
#endif
#include "nolibc.h"

#if defined(__APPLE__) || defined(__FreeBSD__) || defined(__NetBSD__) || defined(__OpenBSD__) || \
	defined(__DragonFly__)
#define LH_KQUEUE 1
#include <sys/event.h>
#endif
#ifdef __FreeBSD__
#include <sys/procctl.h>
#endif

#ifndef LEASHED_VERSION
#define LEASHED_VERSION "unknown"
#endif
#ifndef LEASHED_BUILD
#define LEASHED_BUILD "libc"
#endif

#define LH_PATH_MAX 4096 /* Linux PATH_MAX, NUL included */
#define TREE_MAX 4096	 /* descendants tracked per /proc scan; more are caught in later rounds */
#define GROUPS_MAX 65536 /* Linux NGROUPS_MAX */

enum mode { MODE_EXEC, MODE_SUPERVISE, MODE_GUARD };

struct opts {
	enum mode mode;
	pid_t ppid;	  /* -p, 0 = no check */
	int sig;	  /* -s */
	long grace_ms;	  /* -g */
	int report_fd;	  /* -r, -1 = none */
	int life_fd;	  /* -l, -1 = none */
	int ctl_fd;	  /* -c, -1 = none */
	pid_t watch;	  /* -w, 0 = none */
	int tree;	  /* -t */
	int group;	  /* -P; always set for supervise outside Linux */
	long uid, gid;	  /* -U, -G: -1 = keep */
	long ngroups;	  /* -X: number of supplementary groups, -1 = keep */
	const char *prog; /* PROGRAM */
	char **argv;	  /* ARGV0 [ARG]... */
};

/* ------------------------------------------------------------------ small utilities */

static void put(int fd, const void *buf, size_t n)
{
	const char *p = buf;
	while (n > 0) {
		ssize_t r = write(fd, p, n);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return;
		}
		p += r;
		n -= (size_t)r;
	}
}

static void put_str(int fd, const char *s) { put(fd, s, strlen(s)); }

static int streq(const char *a, const char *b) { return strlen(a) == strlen(b) && !memcmp(a, b, strlen(a)); }

__attribute__((noreturn)) static void usage_error(const char *what, const char *arg)
{
	put_str(2, "leashed-helper: ");
	put_str(2, what);
	if (arg) {
		put_str(2, ": ");
		put_str(2, arg);
	}
	put_str(2, "\nusage: leashed-helper direct|supervisor|guardian [OPTION VALUE]... -- PROGRAM ARGV0 [ARG]...\n"
		   "       leashed-helper --version\n");
	_exit(2);
}

/* Decimal number in [lo, hi], or -1. */
static int parse_num(const char *s, long lo, long hi, long *out)
{
	long v = 0;
	if (!*s)
		return -1;
	for (; *s; s++) {
		if (*s < '0' || *s > '9')
			return -1;
		v = v * 10 + (*s - '0');
		if (v > hi)
			return -1;
	}
	if (v < lo)
		return -1;
	*out = v;
	return 0;
}

/* Writes `stage, errno` to the report pipe and exits 127 (exec failed) or 126. */
__attribute__((noreturn)) static void fail(const struct opts *o, int stage, int err)
{
	int32_t msg[2];
	msg[0] = stage;
	msg[1] = err;
	if (o->report_fd >= 0)
		put(o->report_fd, msg, sizeof msg);
	_exit(stage == 1 ? 127 : 126);
}

/* ------------------------------------------------------------------ exec + PATH search */

static const char *env_get(const char *name)
{
	size_t n = strlen(name);
	char **e;
	for (e = environ; e && *e; e++)
		if (!memcmp(*e, name, n) && (*e)[n] == '=')
			return *e + n + 1;
	return NULL;
}

/* Executes PROGRAM as CPython's subprocess does; returns only on failure, with the errno
 * to report: the first error that is not ENOENT/ENOTDIR, else the last one.
 * Async-signal-safe: no allocation, the path is built on the stack. */
static int exec_program(const char *prog, char *const argv[])
{
	char buf[LH_PATH_MAX];
	const char *path, *p, *end;
	size_t plen = strlen(prog), dlen, k;
	int err = ENOENT, first = 0;

	for (p = prog; *p; p++)
		if (*p == '/') {
			execve(prog, argv, environ);
			return errno;
		}
	path = env_get("PATH");
	if (!path)
		path = "/bin:/usr/bin";
	for (p = path;; p = end + 1) {
		for (end = p; *end && *end != ':'; end++)
			;
		dlen = (size_t)(end - p);
		k = dlen + (dlen && p[dlen - 1] != '/'); /* os.path.join(dir, prog); "" = cwd */
		if (k + plen + 1 > sizeof buf) {
			err = ENAMETOOLONG;
		} else {
			memcpy(buf, p, dlen);
			if (k > dlen)
				buf[dlen] = '/';
			memcpy(buf + k, prog, plen + 1);
			execve(buf, argv, environ);
			err = errno;
		}
		if (!first && err != ENOENT && err != ENOTDIR)
			first = err;
		if (!*end)
			break;
	}
	return first ? first : err;
}

/* ------------------------------------------------------------------ credentials */

static gid_t groups[GROUPS_MAX];

/* -X "g1,g2,...": the supplementary groups; "" means none. */
static void parse_groups(const char *list, struct opts *o)
{
	const char *p = list;
	unsigned long long v;

	o->ngroups = 0;
	while (*p) {
		if (*p < '0' || *p > '9' || o->ngroups >= GROUPS_MAX)
			usage_error("bad value for -X", list);
		for (v = 0; *p >= '0' && *p <= '9'; p++)
			if ((v = v * 10 + (unsigned)(*p - '0')) > 0xfffffffeULL)
				usage_error("bad value for -X", list);
		if (*p && *p++ != ',')
			usage_error("bad value for -X", list);
		groups[o->ngroups++] = (gid_t)v;
	}
}

/* The user=, group=, extra_groups= of subprocess, in its order. Done here, not by the
 * caller's child, so that the helper is executed with the caller's rights (it may live in a
 * directory the new user cannot reach) and the leash is armed after the change, which would
 * otherwise clear the parent-death signal. */
static void change_credentials(const struct opts *o)
{
	if (o->ngroups >= 0 && setgroups((size_t)o->ngroups, groups) < 0)
		fail(o, 5, errno);
	if (o->gid >= 0 && setregid((gid_t)o->gid, (gid_t)o->gid) < 0)
		fail(o, 5, errno);
	if (o->uid >= 0 && setreuid((uid_t)o->uid, (uid_t)o->uid) < 0)
		fail(o, 5, errno);
}

/* ------------------------------------------------------------------ command line */

static void parse_args(int argc, char **argv, struct opts *o)
{
	int i;
	long v;

	memset(o, 0, sizeof *o);
	o->sig = SIGKILL;
	o->report_fd = o->life_fd = o->ctl_fd = -1;
	o->uid = o->gid = o->ngroups = -1;
	if (argc < 2)
		usage_error("missing mode", NULL);
	if (streq(argv[1], "direct"))
		o->mode = MODE_EXEC;
	else if (streq(argv[1], "supervisor"))
		o->mode = MODE_SUPERVISE;
	else if (streq(argv[1], "guardian"))
		o->mode = MODE_GUARD;
	else
		usage_error("unknown mode", argv[1]);

	for (i = 2; i < argc && !streq(argv[i], "--"); i++) {
		const char *opt = argv[i];
		char c = (opt[0] == '-' && opt[1] && !opt[2]) ? opt[1] : 0;
		int sup = o->mode == MODE_SUPERVISE, ok;

		switch (c) {
		case 'p': case 's': case 'r': ok = 1; break;
		case 'g': case 'l': case 'w': ok = o->mode != MODE_EXEC; break;
		case 'c': case 't': case 'P': ok = sup; break;
		case 'U': case 'G': case 'X': ok = 1; break;
		default: usage_error("unknown option", opt);
		}
		if (!ok)
			usage_error("option not valid in this mode", opt);
		if (c == 't' || c == 'P') {
			o->tree |= c == 't';
			o->group |= c == 'P';
			continue;
		}
		if (++i >= argc)
			usage_error("missing value for option", opt);
		if (c == 'X') {
			parse_groups(argv[i], o);
			continue;
		}
		if (parse_num(argv[i], c == 'p' || c == 'w' || c == 's' ? 1 : 0,
			      c == 's' ? NSIG - 1 : c == 'g' ? 86400000L : c == 'U' || c == 'G' ? 0xfffffffeL : 0x7fffffffL,
			      &v) < 0)
			usage_error("bad value", argv[i]);
		switch (c) {
		case 'p': o->ppid = (pid_t)v; break;
		case 's': o->sig = (int)v; break;
		case 'g': o->grace_ms = v; break;
		case 'r': o->report_fd = (int)v; break;
		case 'l': o->life_fd = (int)v; break;
		case 'w': o->watch = (pid_t)v; break;
		case 'U': o->uid = v; break;
		case 'G': o->gid = v; break;
		default: o->ctl_fd = (int)v; break;
		}
	}
	if (i >= argc)
		usage_error("missing --", NULL);
	if (argc - i < 3)
		usage_error("missing PROGRAM or ARGV0 after --", NULL);
	o->prog = argv[i + 1];
	o->argv = argv + i + 2;
#ifndef __linux__
	o->group = o->mode == MODE_SUPERVISE; /* no sender info from kqueue: see the protocol */
#endif
}

/* Our own fds must never reach the target. */
static void set_cloexec(int fd, const char *opt)
{
	if (fd >= 0 && fcntl(fd, F_SETFD, FD_CLOEXEC) < 0)
		usage_error("not an open file descriptor", opt);
}

/* ------------------------------------------------------------------ exec mode */

__attribute__((noreturn)) static void mode_exec(const struct opts *o)
{
	change_credentials(o);
#if defined(__linux__)
	if (prctl(PR_SET_PDEATHSIG, (unsigned long)o->sig, 0, 0, 0) < 0)
		fail(o, 2, errno);
#elif defined(__FreeBSD__)
	int sig = o->sig;
	if (procctl(P_PID, 0, PROC_PDEATHSIG_CTL, &sig) < 0)
		fail(o, 2, errno);
#else
	fail(o, 2, ENOSYS); /* no parent-death signal here: the caller uses guard mode */
#endif
	if (o->ppid && getppid() != o->ppid)
		_exit(1); /* the parent died before the leash was armed */
	fail(o, 1, exec_program(o->prog, o->argv));
}

/* ------------------------------------------------------------------ supervise: common */

#if defined(__linux__) || defined(LH_KQUEUE)

#define RECHECK_MS 20	 /* group-empty re-check cadence, during an ending only */
#define KILL_ROUNDS 100	 /* at most this many SIGKILL rounds to a group (x RECHECK_MS = 2 s) */
#ifdef __FreeBSD__
#define LH_REAPER_KILL 1 /* -t: PROC_REAP_KILL, not the group */
#else
#define LH_REAPER_KILL 0
#endif

static long long now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Dies by sig, without a core dump; exit 128+sig if that somehow fails. */
__attribute__((noreturn)) static void die_by(int sig)
{
	struct rlimit rl;
	struct sigaction dfl;
	sigset_t set;

	rl.rlim_cur = rl.rlim_max = 0;
	setrlimit(RLIMIT_CORE, &rl);
#ifdef __linux__
	prctl(PR_SET_DUMPABLE, 0, 0, 0, 0); /* also stops a core_pattern pipe */
#endif
	memset(&dfl, 0, sizeof dfl);
	dfl.sa_handler = SIG_DFL;
	if (sig != SIGKILL)
		sigaction(sig, &dfl, NULL);
	sigemptyset(&set);
	sigaddset(&set, sig);
	sigprocmask(SIG_UNBLOCK, &set, NULL);
	kill(getpid(), sig);
	_exit(128 + sig);
}

/* Exits the way the target did: code c -> exit c; killed by s -> die by s. */
__attribute__((noreturn)) static void exit_like(int status)
{
	if (WIFSIGNALED(status))
		die_by(WTERMSIG(status));
	_exit(WIFEXITED(status) ? WEXITSTATUS(status) : 1);
}

static const int forwarded[] = { SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH,
				 SIGCONT, SIGALRM, SIGTSTP, SIGTTIN, SIGTTOU, SIGPIPE };
#define NFWD ((int)(sizeof forwarded / sizeof forwarded[0]))

/* What an ending (parent death, target exit with -t, control SIGKILL) signals. */
enum end_how {
	END_TARGET, /* the target only (no -t) */
	END_TREE,   /* every descendant: Linux subreaper walk, FreeBSD PROC_REAP_KILL */
	END_GROUP   /* the target's process group, its number pinned by the unreaped target */
};

struct sup {
	const struct opts *o;
	pid_t self, target;
	pid_t pgid;	      /* the target's own process group (-P, and always outside Linux); 0 = ours */
	enum end_how end;
	int target_alive;     /* has not exited */
	int target_reaped;    /* waited for: from now on its pid and pgid may be reused */
	int target_status;
	int life, ctl;	      /* lifeline, control socket; -1 = none */
	int parent_gone, ctl_kill;
	unsigned char cbuf[8]; /* a control request being read: int32 op, int32 value */
	int clen;
#ifdef __linux__
	int sfd, wfd, tfd; /* signalfd, -w pidfd, target pidfd (-P: exit seen without reaping) */
#else
	int kq;
#endif
};

/* What the child restores before exec: the mask, SIGCHLD's and (kqueue: ignored by the
 * supervisor) the forwarded signals' dispositions. */
static sigset_t orig_mask;
static struct sigaction orig_chld, orig_fwd[NFWD];
static int fwd_ignored;

static void wait_events(struct sup *s, long timeout_ms); /* one per platform, below */
static void signal_tree(struct sup *s, int sig);	   /* END_TREE, one per platform */

/* ------------------------------------------------------------------ process-group strategy */
/* The target runs in its own process group, pgid = its pid; the supervisor stays in the
 * caller's group. Terminal signals (Ctrl+C) then reach the supervisor only, so it relays
 * every forwarded signal to the group exactly once, whoever sent it. The group's number
 * cannot be reused while the target is unreaped (a zombie leader pins it), so the target
 * is reaped last, after the group is empty; no signal goes to the pgid after that.
 * A descendant that calls setsid() (or setpgid to another group) leaves it: it escapes. */

/* In the child, before exec; the supervisor does the same (classic race-free pair). */
static int group_enter_child(void) { return setpgid(0, 0); }
static void group_enter_parent(pid_t child)
{
	setpgid(child, child); /* EACCES: it already exec'd (and had done it); ESRCH: it died */
}

/* Relay or ending: the whole group, only while its number is pinned. */
static void group_signal(const struct sup *s, int sig)
{
	if (s->pgid > 0 && !s->target_reaped)
		kill(-s->pgid, sig);
}

#ifdef __linux__
struct pstat {
	char state;
	pid_t ppid, pgrp;
	unsigned long long start;
};
static int read_stat(int procfd, pid_t pid, struct pstat *ps);

/* Linux counts a zombie as a member (kill(-pgid, 0) succeeds while the leader is
 * unreaped), so look for a live member in /proc: O(processes), during an ending only. */
static int group_has_live_member(pid_t pgid)
{
	char buf[4096];
	long n, off, pid;
	int found = 0, procfd = open("/proc", O_RDONLY | O_CLOEXEC, 0);
	struct pstat ps;

	if (procfd < 0)
		return kill(-pgid, 0) == 0; /* no /proc: cannot tell a zombie; assume a member */
	while (!found && (n = lh_getdents64(procfd, buf, sizeof buf)) > 0)
		for (off = 0; !found && off < n; off += ((struct lh_dirent64 *)(buf + off))->d_reclen)
			if (parse_num(((struct lh_dirent64 *)(buf + off))->d_name, 1, 0x7fffffffL, &pid) == 0 &&
			    read_stat(procfd, (pid_t)pid, &ps) == 0 && ps.pgrp == pgid && ps.state != 'Z' &&
			    ps.state != 'X')
				found = 1;
	close(procfd);
	return found;
}
#elif defined(__APPLE__)
/* XNU's killpg skips zombies (killpg1_pgrpfilt): with only the zombie leader left,
 * kill(-pgid, 0) fails, ESRCH, or EPERM from the POSIX kill (none found). */
static int group_has_live_member(pid_t pgid) { return kill(-pgid, 0) == 0; }
#else
/* FreeBSD, NetBSD (and maybe others) count a zombie leader as a member, so this stays
 * true until the target is reaped: the ending then runs the full grace and KILL_ROUNDS
 * SIGKILL rounds. (FreeBSD's -t uses its reaper instead.) */
static int group_has_live_member(pid_t pgid) { return kill(-pgid, 0) == 0; }
#endif

/* Only the zombie target left (or nothing we may signal). */
static int group_empty(const struct sup *s) { return !s->target_alive && !group_has_live_member(s->pgid); }

/* ------------------------------------------------------------------ supervise: logic */

/* Relays a forwarded signal, or a control-socket one: to the group, or to the target. */
static void signal_target(struct sup *s, int sig)
{
	if (s->target <= 0 || s->target_reaped)
		return; /* unreaped: its pid (and pgid) cannot have been reused */
	if (s->pgid)
		group_signal(s, sig);
	else
		kill(s->target, sig);
}

/* An ending's signal: the target, every descendant, or the group. */
static void signal_all(struct sup *s, int sig)
{
	if (s->end == END_TREE) {
		signal_tree(s, sig);
	} else if (s->end == END_GROUP) {
		group_signal(s, sig);
		if (sig != SIGKILL && sig != SIGCONT)
			group_signal(s, SIGCONT); /* a background member stopped by SIGTTIN/TTOU
						   * would otherwise sleep through its grace */
	} else if (!s->target_reaped)
		kill(s->target, sig);
}

/* Reaps every exited child; returns 1 when we have no child at all. As a subreaper every
 * descendant hangs below one of our children, so this also means "no descendant left".
 * Not used with END_GROUP before the end: the target must stay unreaped. */
static int reap(struct sup *s)
{
	int st;
	pid_t p;

	for (;;) {
		p = waitpid(-1, &st, WNOHANG);
		if (p > 0) {
			if (p == s->target) {
				s->target_alive = 0;
				s->target_reaped = 1;
				s->target_status = st;
			}
		} else if (p == 0) {
			return 0;
		} else if (errno != EINTR) {
			return 1;
		}
	}
}

/* The target exited (pidfd / NOTE_EXIT) or some child did (SIGCHLD). */
static void child_event(struct sup *s, int target_exit)
{
	if (s->end != END_GROUP)
		reap(s);
	else if (target_exit)
		s->target_alive = 0; /* a zombie until the group is empty */
}

/* Nothing left to wait for. */
static int all_gone(struct sup *s)
{
	if (s->end == END_GROUP)
		return group_empty(s);
	return reap(s);
}

/* END_GROUP: reaps the target, last. */
static void reap_target(struct sup *s)
{
	int st;

	if (s->target_reaped)
		return;
	while (waitpid(s->target, &st, 0) < 0)
		if (errno != EINTR)
			return;
	s->target_alive = 0;
	s->target_reaped = 1;
	s->target_status = st;
}

static void read_lifeline(struct sup *s)
{
	char buf[64];
	ssize_t r = read(s->life, buf, sizeof buf);

	if (r > 0 || (r < 0 && (errno == EINTR || errno == EAGAIN)))
		return; /* nobody should write to it; ignore */
	close(s->life);
	s->life = -1;
	s->parent_gone = 1;
}

/* Our answer on the control socket; never a SIGPIPE of our own (kqueue could not tell it
 * from a signal to relay). */
static void ctl_answer(struct sup *s, int32_t err)
{
#if defined(LH_KQUEUE) && defined(MSG_NOSIGNAL)
	while (send(s->ctl, &err, sizeof err, MSG_NOSIGNAL) < 0 && errno == EINTR)
		;
#else
	put(s->ctl, &err, sizeof err); /* Linux: our own SIGPIPE is told apart by its sender */
#endif
}

/* int32 signal numbers; SIGKILL ends everything, anything else goes to the target. */
static void read_control(struct sup *s)
{
	int32_t op, sig;
	ssize_t r = read(s->ctl, s->cbuf + s->clen, sizeof s->cbuf - (size_t)s->clen);

	if (r < 0 && (errno == EINTR || errno == EAGAIN))
		return;
	if (r <= 0) { /* EOF: the Popen object is gone, not the parent */
		close(s->ctl);
		s->ctl = -1;
		return;
	}
	s->clen += (int)r;
	if (s->clen < (int)sizeof s->cbuf)
		return;
	s->clen = 0;
	memcpy(&op, s->cbuf, sizeof op);
	memcpy(&sig, s->cbuf + sizeof op, sizeof sig);
	if (op == 2) { /* release: the Popen object was dropped; end as on the parent's death */
		s->parent_gone = 1;
		return;
	}
	if (op != 1 || sig < 0 || sig >= NSIG) {
		ctl_answer(s, EINVAL);
		return;
	}
	if (sig == SIGKILL) {
		s->ctl_kill = 1; /* answered once everything is dead */
		return;
	}
	if (!s->target_alive) {
		ctl_answer(s, ESRCH);
		return;
	}
	if (sig > 0)
		signal_target(s, sig);
	ctl_answer(s, 0);
}

/* sig to everything, up to grace_ms for it to exit, then SIGKILL rounds until nothing is
 * left. Children are waited for by SIGCHLD (the last descendant to die is always one of
 * our children); a group's other members are not our children, so its emptiness is
 * re-checked every RECHECK_MS, during the ending only. */
static void end_all(struct sup *s, int sig, long grace_ms)
{
	long long deadline = now_ms() + grace_ms;
	long left, step = s->end == END_GROUP ? RECHECK_MS : -1;
	int rounds = 0;

	if (!all_gone(s)) {
		signal_all(s, sig);
		while (sig != SIGKILL && !s->ctl_kill && !all_gone(s) && (left = (long)(deadline - now_ms())) > 0)
			wait_events(s, step < 0 || left < step ? left : step);
		while (!all_gone(s)) {
			if (s->end == END_GROUP && rounds++ >= KILL_ROUNDS)
				break; /* unkillable, or a kernel where the zombie leader hides the group's
					* emptiness: stop; nothing signals the pgid after the reap */
			signal_all(s, SIGKILL);
			wait_events(s, step);
		}
	}
	if (s->end == END_GROUP)
		reap_target(s);
}

/* In the forked child: arm, restore what the target must not see changed, exec. */
__attribute__((noreturn)) static void start_target(const struct sup *s)
{
	const struct opts *o = s->o;
	int i;

	change_credentials(o);
#if defined(__linux__)
	if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0)
		fail(o, 2, errno);
#elif defined(__FreeBSD__)
	i = SIGKILL;
	if (procctl(P_PID, 0, PROC_PDEATHSIG_CTL, &i) < 0)
		fail(o, 2, errno);
#endif
	if (getppid() != s->self)
		_exit(1); /* the supervisor is already gone */
	if (o->group && group_enter_child() < 0)
		fail(o, 2, errno);
	sigaction(SIGCHLD, &orig_chld, NULL);
	for (i = 0; fwd_ignored && i < NFWD; i++)
		sigaction(forwarded[i], &orig_fwd[i], NULL);
	sigprocmask(SIG_SETMASK, &orig_mask, NULL);
	fail(o, 1, exec_program(o->prog, o->argv));
}

static void supervise_arm(struct sup *s); /* one per platform, below */
static void watch_target(struct sup *s);  /* one per platform, below */

__attribute__((noreturn)) static void mode_supervise(const struct opts *o)
{
	struct sup s;
	pid_t pid;

	memset(&s, 0, sizeof s);
	s.o = o;
	s.self = getpid();
	s.life = o->life_fd;
	s.ctl = o->ctl_fd;
	s.end = !o->tree ? END_TARGET : o->group && !LH_REAPER_KILL ? END_GROUP : END_TREE;
	supervise_arm(&s); /* exits 1 if the parent is already gone */

	pid = fork();
	if (pid < 0)
		fail(o, 3, errno);
	if (pid == 0)
		start_target(&s);
	s.target = pid;
	s.target_alive = 1;
	if (o->group) {
		group_enter_parent(pid);
		s.pgid = pid;
	}
	watch_target(&s);
	if (o->report_fd >= 0)
		close(o->report_fd); /* the caller's EOF now means: the target was executed */

	while (s.target_alive && !s.parent_gone && !s.ctl_kill)
		wait_events(&s, -1);
	if (s.ctl_kill)
		end_all(&s, SIGKILL, 0);
	else if (s.parent_gone || o->tree)
		end_all(&s, o->sig, o->grace_ms);
	reap_target(&s);
	if (s.ctl_kill) {
		if (s.ctl >= 0)
			ctl_answer(&s, 0);
		die_by(SIGKILL);
	}
	if (s.parent_gone)
		_exit(1);
	exit_like(s.target_status);
}

#endif /* __linux__ || LH_KQUEUE */

/* ------------------------------------------------------------------ supervise: Linux */

#ifdef __linux__

static struct desc {
	pid_t pid, ppid;
	unsigned long long start;
} tree[TREE_MAX];
static int tree_n;

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

/* state (field 3), ppid (4), pgrp (5) and starttime (22) of /proc/PID/stat, parsed after
 * the last ')'. */
static int read_stat(int procfd, pid_t pid, struct pstat *ps)
{
	char buf[1024], name[32], *p, *close_paren = NULL;
	int fd, field;
	ssize_t n;
	unsigned long long v = 0;

	fd = openat(procfd, proc_name(name, sizeof name, pid, "/stat"), O_RDONLY | O_CLOEXEC, 0);
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

/* Adds the children of every thread of `pid` (/proc/PID/task/TID/children). Returns -1 if
 * this kernel has no such file (CONFIG_PROC_CHILDREN off), 0 otherwise. */
static int add_children_of(int procfd, pid_t pid)
{
	char buf[4096], name[32];
	int taskfd, fd, unsupported = 0;
	long n, off;
	ssize_t r, j;

	taskfd = openat(procfd, proc_name(name, sizeof name, pid, "/task"), O_RDONLY | O_CLOEXEC, 0);
	if (taskfd < 0)
		return 0; /* gone already */
	while ((n = lh_getdents64(taskfd, buf, sizeof buf)) > 0) {
		for (off = 0; off < n; off += ((struct lh_dirent64 *)(buf + off))->d_reclen) {
			char list[4096];
			long tid;
			unsigned long long child = 0;
			struct pstat ps;

			if (parse_num(((struct lh_dirent64 *)(buf + off))->d_name, 1, 0x7fffffffL, &tid) < 0)
				continue;
			fd = openat(taskfd, proc_name(name, sizeof name, (pid_t)tid, "/children"),
				    O_RDONLY | O_CLOEXEC, 0);
			if (fd < 0) {
				unsupported |= errno == ENOENT;
				continue;
			}
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

/* Fills tree[] with the live descendants of `self`: /proc passes until one adds nothing
 * (parents mostly precede their children in pid order, so two passes usually do). */
static void scan_all_of_proc(int procfd, pid_t self)
{
	char buf[4096];
	int grew;
	long n, off;

	do {
		int dirfd = open("/proc", O_RDONLY | O_CLOEXEC, 0);
		if (dirfd < 0)
			return;
		grew = 0;
		while ((n = lh_getdents64(dirfd, buf, sizeof buf)) > 0) {
			for (off = 0; off < n; off += ((struct lh_dirent64 *)(buf + off))->d_reclen) {
				const char *s = ((struct lh_dirent64 *)(buf + off))->d_name;
				long pid;
				struct pstat ps;
				if (parse_num(s, 1, 0x7fffffffL, &pid) < 0 || in_tree((pid_t)pid))
					continue;
				if (read_stat(procfd, (pid_t)pid, &ps) < 0)
					continue;
				if ((ps.ppid == self || in_tree(ps.ppid)) && tree_n < TREE_MAX) {
					add_descendant((pid_t)pid, &ps);
					grew = 1;
				}
			}
		}
		close(dirfd);
	} while (grew);
}

/* The live descendants of `self` into tree[]. */
static void scan_tree(pid_t self)
{
	static int no_children_lists;
	int procfd = open("/proc", O_RDONLY | O_CLOEXEC, 0);

	tree_n = 0;
	if (procfd < 0)
		return;
	if (no_children_lists || walk_children(procfd, self) < 0) {
		no_children_lists = 1;
		tree_n = 0;
		scan_all_of_proc(procfd, self);
	}
	close(procfd);
}

/* A deeper descendant: pin it with a pidfd, then check it is still the process we saw. */
static void signal_descendant(const struct desc *d, int sig)
{
	int procfd, pidfd = lh_pidfd_open(d->pid);
	struct pstat ps;

	if (pidfd < 0)
		return; /* gone, or no pidfd (kernel < 5.3): it is reached once its parent dies */
	procfd = open("/proc", O_RDONLY | O_CLOEXEC, 0);
	if (procfd >= 0 && read_stat(procfd, d->pid, &ps) == 0 && ps.start == d->start)
		lh_pidfd_send_signal(pidfd, sig);
	if (procfd >= 0)
		close(procfd);
	close(pidfd);
}

/* END_TREE: every descendant, through the subreaper walk. */
static void signal_tree(struct sup *s, int sig)
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
			signal_target(s, (int)si.ssi_signo);
	}
	if (chld)
		child_event(s, 0);
}

/* One wait for any event: a signal, lifeline EOF, -w exit, target exit (-P), a control
 * message. */
static void wait_events(struct sup *s, long timeout_ms)
{
	struct pollfd p[5];
	struct timespec ts;
	int n = 0, il = -1, iw = -1, ic = -1, it = -1;

	p[n].fd = s->sfd;
	p[n++].events = POLLIN;
	if (s->life >= 0) {
		il = n;
		p[n].fd = s->life;
		p[n++].events = POLLIN;
	}
	if (s->wfd >= 0) {
		iw = n;
		p[n].fd = s->wfd;
		p[n++].events = POLLIN;
	}
	if (s->ctl >= 0) {
		ic = n;
		p[n].fd = s->ctl;
		p[n++].events = POLLIN;
	}
	if (s->tfd >= 0) {
		it = n;
		p[n].fd = s->tfd;
		p[n++].events = POLLIN;
	}
	ts.tv_sec = timeout_ms / 1000;
	ts.tv_nsec = (timeout_ms % 1000) * 1000000L;
	if (ppoll(p, (unsigned long)n, timeout_ms < 0 ? NULL : &ts, NULL) <= 0)
		return;
	if (p[0].revents)
		read_signals(s);
	if (il >= 0 && p[il].revents)
		read_lifeline(s);
	if (iw >= 0 && p[iw].revents) {
		close(s->wfd);
		s->wfd = -1;
		s->parent_gone = 1;
	}
	if (ic >= 0 && p[ic].revents)
		read_control(s);
	if (it >= 0 && p[it].revents) {
		close(s->tfd);
		s->tfd = -1;
		child_event(s, 1);
	}
}

/* Exits 1 if the parent is already gone (lifeline at EOF, or -w pid exited). */
static void check_parent_alive(const struct sup *s)
{
	struct pollfd p[2];
	struct timespec zero = { 0, 0 };

	p[0].fd = s->life; /* negative fds are skipped by poll */
	p[1].fd = s->wfd;
	p[0].events = p[1].events = POLLIN;
	if (ppoll(p, 2, &zero, NULL) > 0 && ((p[0].revents & (POLLHUP | POLLERR | POLLNVAL)) || p[1].revents))
		_exit(1);
}

/* Subreaper (-t without -P), the -w pidfd, the ppid recheck, the signalfd. */
static void supervise_arm(struct sup *s)
{
	const struct opts *o = s->o;
	struct sigaction dfl;
	sigset_t block;
	int i;

	s->wfd = s->tfd = -1;
	if (s->end == END_TREE && prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) < 0)
		fail(o, 2, errno);
	if (o->group) { /* the target's exit must be seen without reaping it: needs pidfd */
		if ((i = lh_pidfd_open(s->self)) < 0)
			fail(o, 2, errno);
		close(i);
	}
	if (o->watch && (s->wfd = lh_pidfd_open(o->watch)) < 0) {
		if (errno == ESRCH)
			_exit(1); /* already gone: that is a parent death */
		fail(o, 2, errno);
	}
	if (o->ppid && getppid() != o->ppid)
		_exit(1); /* parent gone; else the -w pidfd, opened above, is our live parent's */
	check_parent_alive(s);

	sigemptyset(&block);
	for (i = 0; i < NFWD; i++)
		sigaddset(&block, forwarded[i]);
	sigaddset(&block, SIGCHLD);
	sigprocmask(SIG_BLOCK, &block, &orig_mask);
	memset(&dfl, 0, sizeof dfl);
	dfl.sa_handler = SIG_DFL; /* SIG_IGN would auto-reap the target and lose its status */
	sigaction(SIGCHLD, &dfl, &orig_chld);
	s->sfd = signalfd(-1, &block, SFD_CLOEXEC | SFD_NONBLOCK);
	if (s->sfd < 0)
		fail(o, 2, errno);
}

/* -P: a pidfd on the target tells its exit without reaping it. */
static void watch_target(struct sup *s)
{
	if (s->end != END_GROUP)
		return;
	s->tfd = lh_pidfd_open(s->target); /* our unreaped child: it is the target */
	if (s->tfd < 0) {
		int err = errno;
		kill(-s->pgid, SIGKILL);
		kill(s->target, SIGKILL);
		reap_target(s);
		fail(s->o, 2, err);
	}
}

/* ------------------------------------------------------------------ supervise: kqueue */

#elif defined(LH_KQUEUE)

#ifdef __FreeBSD__
/* END_TREE on FreeBSD: the kernel signals every descendant of this reaper, setsid'd ones
 * included, with no pid to reuse. */
static void signal_tree(struct sup *s, int sig)
{
	struct procctl_reaper_kill rk;

	(void)s;
	memset(&rk, 0, sizeof rk);
	rk.rk_sig = sig; /* rk_flags 0: all descendants */
	procctl(P_PID, getpid(), PROC_REAP_KILL, &rk);
}
#else
static void signal_tree(struct sup *s, int sig) { group_signal(s, sig); } /* not reached */
#endif

static void kq_add(struct sup *s, uintptr_t ident, short filter, unsigned short flags, unsigned int fflags)
{
	struct kevent ev;

	EV_SET(&ev, ident, filter, EV_ADD | flags, fflags, 0, NULL);
	if (kevent(s->kq, &ev, 1, NULL, 0, NULL) < 0) {
		if (errno == ESRCH && filter == EVFILT_PROC)
			_exit(1); /* the -w pid is already gone: a parent death */
		fail(s->o, 2, errno);
	}
}

/* One wait for any event: a signal, lifeline EOF, -w exit, target exit, control message. */
static void wait_events(struct sup *s, long timeout_ms)
{
	struct kevent ev[8];
	struct timespec ts;
	int n, i, chld = 0, texit = 0;

	ts.tv_sec = timeout_ms / 1000;
	ts.tv_nsec = (timeout_ms % 1000) * 1000000L;
	n = kevent(s->kq, NULL, 0, ev, 8, timeout_ms < 0 ? NULL : &ts);
	for (i = 0; i < n; i++) {
		int id = (int)ev[i].ident;
		if (ev[i].filter == EVFILT_SIGNAL && id == SIGCHLD)
			chld = 1;
		else if (ev[i].filter == EVFILT_SIGNAL)
			signal_target(s, id); /* once per event, as signals coalesce */
		else if (ev[i].filter == EVFILT_READ && id == s->life)
			read_lifeline(s);
		else if (ev[i].filter == EVFILT_READ && id == s->ctl)
			read_control(s);
		else if (ev[i].filter == EVFILT_PROC && s->target > 0 && (pid_t)id == s->target)
			texit = 1;
		else if (ev[i].filter == EVFILT_PROC)
			s->parent_gone = 1;
	}
	if (texit || chld)
		child_event(s, texit);
}

/* Reaper (FreeBSD -t), kqueue armed on the -w pid, the lifeline, the control socket and
 * the forwarded signals (ignored: kqueue still records them), the ppid recheck. */
static void supervise_arm(struct sup *s)
{
	const struct opts *o = s->o;
	struct sigaction ign, dfl;
	sigset_t none;
	int i;

#ifdef __FreeBSD__
	if (s->end == END_TREE && procctl(P_PID, getpid(), PROC_REAP_ACQUIRE, NULL) < 0)
		fail(o, 2, errno);
#endif
	if ((s->kq = kqueue()) < 0) /* not inherited by fork */
		fail(o, 2, errno);
	if (o->watch)
		kq_add(s, (uintptr_t)o->watch, EVFILT_PROC, EV_ONESHOT, NOTE_EXIT);
	if (o->ppid && getppid() != o->ppid)
		_exit(1); /* parent gone; else the -w watch, armed above, is on our live parent */
	if (s->life >= 0)
		kq_add(s, (uintptr_t)s->life, EVFILT_READ, 0, 0);
	if (s->ctl >= 0) {
#if defined(SO_NOSIGPIPE)
		int one = 1;
		setsockopt(s->ctl, SOL_SOCKET, SO_NOSIGPIPE, &one, sizeof one);
#endif
		kq_add(s, (uintptr_t)s->ctl, EVFILT_READ, 0, 0);
	}
	memset(&ign, 0, sizeof ign);
	memset(&dfl, 0, sizeof dfl);
	ign.sa_handler = SIG_IGN;
	dfl.sa_handler = SIG_DFL; /* SIG_IGN would auto-reap the target and unpin its pgid */
	for (i = 0; i < NFWD; i++) {
		kq_add(s, (uintptr_t)forwarded[i], EVFILT_SIGNAL, 0, 0);
		sigaction(forwarded[i], &ign, &orig_fwd[i]); /* TSTP/TTIN/TTOU cannot stop us */
	}
	fwd_ignored = 1;
	kq_add(s, SIGCHLD, EVFILT_SIGNAL, 0, 0);
	sigaction(SIGCHLD, &dfl, &orig_chld);
	sigemptyset(&none);
	sigprocmask(SIG_BLOCK, &none, &orig_mask);
	wait_events(s, 0); /* lifeline already at EOF, -w already exited? */
	if (s->parent_gone)
		_exit(1);
}

/* NOTE_EXIT on the target: its exit, without reaping it. */
static void watch_target(struct sup *s)
{
	struct kevent ev;

	EV_SET(&ev, (uintptr_t)s->target, EVFILT_PROC, EV_ADD | EV_ONESHOT, NOTE_EXIT, 0, NULL);
	if (kevent(s->kq, &ev, 1, NULL, 0, NULL) < 0) {
		if (errno != ESRCH) {
			int err = errno;
			kill(-s->pgid, SIGKILL);
			kill(s->target, SIGKILL);
			reap_target(s);
			fail(s->o, 2, err);
		}
		child_event(s, 1); /* already a zombie (XNU refuses to watch those) */
	}
}

#else /* neither Linux nor kqueue */

__attribute__((noreturn)) static void mode_supervise(const struct opts *o) { fail(o, 2, ENOSYS); }

#endif

/* ------------------------------------------------------------------ guard */

/* guardian -> helper: 'A' armed; 'D' the -w pid is already gone (a parent death);
 * 'E' + int32 errno: could not arm. */
static void guard_msg(int fd, char what, int err)
{
	char msg[1 + sizeof(int32_t)];
	int32_t e = err;
	msg[0] = what;
	memcpy(msg + 1, &e, sizeof e);
	put(fd, msg, what == 'E' ? sizeof msg : 1);
}

/* Closes every fd >= 3 except keep[0] and keep[1] (-1 = none). */
static void close_other_fds(int a, int b)
{
	int keep[2], i, lo = 3, fd;

	keep[0] = a < b ? a : b;
	keep[1] = a < b ? b : a;
	for (i = 0; i <= 2; i++) {
		unsigned hi = i < 2 ? (unsigned)keep[i] - 1 : ~0U;
		if (i < 2 && keep[i] < lo)
			continue;
		if (hi >= (unsigned)lo) {
#ifdef __linux__
			if (lh_close_range((unsigned)lo, hi) < 0)
#endif
				for (fd = lo; fd < 65536 && (unsigned)fd <= hi; fd++)
					close(fd);
		}
		if (i < 2)
			lo = keep[i] + 1;
	}
}

#ifdef __linux__
/* Arms on the helper's pid, the lifeline and the -w pid; tells the helper; waits. */
__attribute__((noreturn)) static void guardian_watch(const struct opts *o, pid_t helper, int notify)
{
	struct pollfd p[3];
	struct timespec ts;
	int hfd, wfd = -1, n = 0, gone = 0;

	hfd = lh_pidfd_open(helper);
	if (hfd < 0) {
		guard_msg(notify, 'E', errno);
		_exit(0);
	}
	if (o->watch && (wfd = lh_pidfd_open(o->watch)) < 0) {
		guard_msg(notify, errno == ESRCH ? 'D' : 'E', errno);
		_exit(0);
	}
	guard_msg(notify, 'A', 0);
	close(notify);

	p[n].fd = hfd;
	p[n++].events = POLLIN;
	if (wfd >= 0) {
		p[n].fd = wfd;
		p[n++].events = POLLIN;
	}
	if (o->life_fd >= 0) {
		p[n].fd = o->life_fd;
		p[n++].events = POLLIN;
	}
	while (!gone) {
		if (ppoll(p, (unsigned long)n, NULL, NULL) <= 0)
			continue;
		if (p[0].revents)
			_exit(0); /* the target exited */
		if (wfd >= 0 && p[1].revents)
			gone = 1;
		if (o->life_fd >= 0 && p[n - 1].revents) {
			char buf[64];
			ssize_t r = read(o->life_fd, buf, sizeof buf);
			gone |= r == 0 || (r < 0 && errno != EINTR && errno != EAGAIN);
		}
	}
	lh_pidfd_send_signal(hfd, o->sig);
	ts.tv_sec = o->grace_ms / 1000;
	ts.tv_nsec = (o->grace_ms % 1000) * 1000000L;
	if (o->sig != SIGKILL && o->grace_ms > 0 && ppoll(p, 1, &ts, NULL) > 0)
		_exit(0);
	lh_pidfd_send_signal(hfd, SIGKILL);
	_exit(0);
}
#elif defined(LH_KQUEUE)
/* The same with kqueue: EVFILT_PROC/NOTE_EXIT on the helper (it becomes the target, same
 * pid) and the -w pid, EVFILT_READ on the lifeline. While the helper's NOTE_EXIT has not
 * fired its pid cannot have been reused, so kill() hits the target. */
__attribute__((noreturn)) static void guardian_watch(const struct opts *o, pid_t helper, int notify)
{
	struct kevent ev[3], out;
	struct timespec ts;
	int n = 0, kq = kqueue();

	if (kq < 0) {
		guard_msg(notify, 'E', errno);
		_exit(0);
	}
	EV_SET(&ev[n++], helper, EVFILT_PROC, EV_ADD, NOTE_EXIT, 0, NULL);
	if (o->watch)
		EV_SET(&ev[n++], o->watch, EVFILT_PROC, EV_ADD, NOTE_EXIT, 0, NULL);
	if (o->life_fd >= 0)
		EV_SET(&ev[n++], o->life_fd, EVFILT_READ, EV_ADD, 0, 0, NULL);
	if (kevent(kq, ev, n, NULL, 0, NULL) < 0) {
		guard_msg(notify, errno == ESRCH && o->watch ? 'D' : 'E', errno);
		_exit(0);
	}
	guard_msg(notify, 'A', 0);
	close(notify);

	for (;;) {
		if (kevent(kq, NULL, 0, &out, 1, NULL) < 1)
			continue;
		if (out.filter == EVFILT_PROC && (pid_t)out.ident == helper)
			_exit(0); /* the target exited */
		if (out.filter == EVFILT_READ && !(out.flags & EV_EOF)) {
			char buf[64];
			if (read(o->life_fd, buf, sizeof buf) != 0)
				continue;
		}
		break; /* lifeline EOF or the -w pid exited: the parent is gone */
	}
	kill(helper, o->sig);
	ts.tv_sec = o->grace_ms / 1000;
	ts.tv_nsec = (o->grace_ms % 1000) * 1000000L;
	while (o->sig != SIGKILL && o->grace_ms > 0 && kevent(kq, NULL, 0, &out, 1, &ts) > 0)
		if (out.filter == EVFILT_PROC && (pid_t)out.ident == helper)
			_exit(0);
	kill(helper, SIGKILL);
	_exit(0);
}
#else
__attribute__((noreturn)) static void guardian_watch(const struct opts *o, pid_t helper, int notify)
{
	(void)o;
	(void)helper;
	guard_msg(notify, 'E', ENOSYS);
	_exit(0);
}
#endif

/* The detached guardian: no fd of the caller's, no terminal, no cwd, its own session. */
__attribute__((noreturn)) static void guardian(struct opts *o, pid_t helper, int notify)
{
	int null;

	/* 0, 1, 2 become /dev/null: move the two fds we keep out of the way first */
	if (notify < 3 && (notify = fcntl(notify, F_DUPFD_CLOEXEC, 3)) < 0)
		_exit(0); /* the helper sees EOF: stage 4 */
	if (o->life_fd >= 0 && o->life_fd < 3 && (o->life_fd = fcntl(o->life_fd, F_DUPFD_CLOEXEC, 3)) < 0) {
		guard_msg(notify, 'E', errno);
		_exit(0);
	}
	null = open("/dev/null", O_RDWR | O_CLOEXEC, 0);
	if (null >= 0) {
		dup2(null, 0);
		dup2(null, 1);
		dup2(null, 2);
	}
	close_other_fds(o->life_fd, notify);
	if (chdir("/") < 0) {
		/* keep going: arming does not depend on the cwd */
	}
	setsid();
	guardian_watch(o, helper, notify);
}

__attribute__((noreturn)) static void mode_guard(struct opts *o)
{
	int np[2], st;
	pid_t helper = getpid(), child;
	char msg[1 + sizeof(int32_t)];
	int32_t err;
	size_t got = 0;
	ssize_t r;

	if (pipe(np) < 0)
		fail(o, 4, errno);
	fcntl(np[0], F_SETFD, FD_CLOEXEC);
	fcntl(np[1], F_SETFD, FD_CLOEXEC);
	child = fork();
	if (child < 0)
		fail(o, 3, errno);
	if (child == 0) { /* forks the guardian and exits, so init/launchd adopts it */
		pid_t g;
		close(np[0]);
		g = fork();
		if (g == 0)
			guardian(o, helper, np[1]);
		if (g < 0)
			guard_msg(np[1], 'E', errno);
		_exit(0);
	}
	close(np[1]);
	while (waitpid(child, &st, 0) < 0 && errno == EINTR)
		;
	while (got < sizeof msg && (r = read(np[0], msg + got, sizeof msg - got)) != 0) {
		if (r < 0 && errno != EINTR)
			break;
		if (r > 0)
			got += (size_t)r;
		if (got && msg[0] != 'E')
			break;
	}
	close(np[0]);
	if (got && msg[0] == 'A' && o->ppid && getppid() != o->ppid)
		_exit(1); /* the parent died before the guardian was armed; the guardian follows us */
	if (got && msg[0] == 'A') {
		change_credentials(o);
		fail(o, 1, exec_program(o->prog, o->argv));
	}
	if (got && msg[0] == 'D')
		_exit(1); /* the parent is already gone */
	if (got == sizeof msg)
		memcpy(&err, msg + 1, sizeof err);
	else
		err = EPIPE; /* the guardian died before it could say anything */
	fail(o, 4, err);
}

/* ------------------------------------------------------------------ main */

int main(int argc, char **argv)
{
	struct opts o;

	if (argc == 2 && streq(argv[1], "--version")) {
		put_str(1, "leashed-helper " LEASHED_VERSION " " LEASHED_BUILD "\n");
		return 0;
	}
	parse_args(argc, argv, &o);
	set_cloexec(o.report_fd, "-r");
	set_cloexec(o.life_fd, "-l");
	set_cloexec(o.ctl_fd, "-c");
	if (o.mode == MODE_EXEC)
		mode_exec(&o);
	if (o.mode == MODE_SUPERVISE)
		mode_supervise(&o);
	mode_guard(&o);
}
