/* front.c - the process the caller holds: proc.pid, the job a shell waits for, the pid a
 * harness kills. The supervisor runs behind it, as its child, in a process group of its own:
 *
 *   caller -> front -> supervisor (subreaper, control socket) -> target -> ...
 *
 * The front passes on the signals it gets, stops when the target stops (if it leads a job:
 * the shell then sees the job stopped), and exits the way the supervisor does, which is the
 * way the target did. Its death by any signal, SIGKILL included, reaches the supervisor as
 * EOF on their socket and ends the target (or its tree) as the parent's death would: a
 * kill -9 of the pid the caller holds, or of the caller's whole process group, leaves
 * nothing behind. With -k the supervisor outlives the front on purpose: it sends the
 * target's status, the front exits with it, the leftovers run on under the supervisor.
 *
 * The front waits for signals only (sigwaitinfo: no handlers, which the nolibc build has no
 * trampoline for); the socket is O_ASYNC, so a message or EOF arrives as SIGIO.
 */
#include "helper.h"

struct front {
	const struct opts *o;
	pid_t self, parent, back; /* back: the supervisor, our child, unreaped until we exit */
	int sock;		  /* our end: non-blocking, O_ASYNC */
	int lead;		  /* we lead our process group: a shell's job, start_new_session */
	int forward_all;	  /* 0: the target is in our group and has the terminal's signals */
	sigset_t waited, orig_mask;
	unsigned char buf[8];	  /* a message being read */
	size_t len;
};

/* ------------------------------------------------------------------ groups */

/* Whether we have a controlling terminal: only then is there job control to follow. */
static int has_terminal(void)
{
	int fd = open("/dev/tty", O_RDONLY | O_NOCTTY | O_CLOEXEC, 0);

	if (fd < 0)
		return 0;
	close(fd);
	return 1;
}

/* Where the target goes, decided before the fork. In the caller's group it gets what the
 * caller's group gets (a terminal's Ctrl+C, kill -INT 0) exactly once; we leave that group
 * so as to get only what is sent to our pid, and pass all of it on. If we lead our group
 * with a terminal (a shell's job), the target joins it, as the terminal's signals and
 * input must reach it, and we pass on only what a process sent. If we lead it without one
 * (start_new_session), and with the group strategy, the target makes a group of its own
 * (the supervisor relays to that group) and we pass everything on: a killpg() of our group
 * then reaches it once. Returns the group the target joins, 0 for its own. */
static pid_t place(struct front *f)
{
	pid_t caller = getpgid(0);

	f->lead = caller == f->self;
	f->forward_all = 1;
	if (f->o->group)
		return 0;
	if (!f->lead && setpgid(0, 0) == 0)
		return caller;
	if (f->lead && !has_terminal())
		return 0;
	f->forward_all = 0; /* we share the target's group */
	return caller;
}

/* ------------------------------------------------------------------ the supervisor's start */

/* -p and -w, checked here, before the fork: the supervisor's parent will be us. On Linux
 * the pidfd on -w is opened before the -p recheck, so it names our live parent; elsewhere
 * the supervisor's kqueue registers -w after the fork (a -w that died since the recheck is
 * seen as gone then). */
static void check_parent(struct opts *o)
{
	/* Neither -w nor -l: the parent is watched by the kernel's parent-death signal (as in
	 * direct mode); the front's death is a parent death to the supervisor. */
	if (!o->watch && o->life_fd < 0 && lh_arm_pdeathsig(SIGKILL, NULL) < 0)
		lh_fail(o, STAGE_ARM, errno, "arm the leash", NULL);
	if (o->watch && (o->watch_fd = lh_open_watch(o->watch)) < 0 && errno) {
		if (errno == ESRCH)
			_exit(1); /* already gone: that is a parent death */
		lh_fail(o, STAGE_ARM, errno, "arm the leash", NULL);
	}
	if (o->ppid && getppid() != o->ppid)
		_exit(1); /* the parent died before the leash was armed */
	o->ppid = 0;
}

/* The forwarded signals, SIGCHLD and SIGIO are blocked: sigwaitinfo takes them. */
static void block_signals(struct front *f)
{
	int i;

	sigemptyset(&f->waited);
	for (i = 0; i < NFWD; i++)
		sigaddset(&f->waited, lh_forwarded[i]);
	sigaddset(&f->waited, SIGCHLD);
	sigaddset(&f->waited, SIGIO);
	sigprocmask(SIG_BLOCK, &f->waited, &f->orig_mask);
}

/* Our end of the socket raises SIGIO on a message and at EOF. */
static int open_socket(struct front *f, int fds[2])
{
	if (lh_socketpair(fds) < 0)
		return -1;
	if (fcntl(fds[0], F_SETOWN, f->self) < 0 ||
	    fcntl(fds[0], F_SETFL, fcntl(fds[0], F_GETFL, 0) | O_NONBLOCK | O_ASYNC) < 0) {
		int err = errno;
		close(fds[0]);
		close(fds[1]);
		errno = err;
		return -1;
	}
	return 0;
}

/* What the supervisor does not need of ours, and we nothing of the caller's but stdio
 * (closed once the supervisor is forked: a caller's pipe must not wait for us). */
static void close_theirs(const struct opts *o, int mine)
{
	close(mine);
	if (o->watch_fd >= 0)
		close(o->watch_fd);
	if (o->life_fd >= 0)
		close(o->life_fd);
	if (o->ctl_fd >= 0)
		close(o->ctl_fd);
	if (o->listen_fd >= 0)
		close(o->listen_fd);
	if (o->report_fd >= 0)
		close(o->report_fd);
}

/* ------------------------------------------------------------------ the front's run */

/* Stops us by sig until a SIGCONT (whose pending copy is then passed on). A stopped
 * process watches nothing, so meanwhile a parent-death signal of SIGCONT (Linux, FreeBSD)
 * wakes us if the parent dies. */
static void stop_self(const struct front *f, int sig)
{
	struct sigaction dfl, old;
	sigset_t one, mask;
	int pdeath = 0;

	if (!f->lead)
		return; /* nobody's job: a shell waits for its leader only */
	if (lh_arm_pdeathsig(SIGCONT, &pdeath) < 0)
		return; /* nothing would wake us if the parent died: stay awake */
	memset(&dfl, 0, sizeof dfl);
	memset(&old, 0, sizeof old);
	dfl.sa_handler = SIG_DFL;
	sigemptyset(&one);
	sigaddset(&one, sig);
	sigaction(sig, &dfl, &old);
	sigprocmask(SIG_UNBLOCK, &one, &mask);
	if (getppid() == f->parent) /* else it died already: no SIGCONT would come */
		kill(f->self, sig); /* returns once continued */
	sigprocmask(SIG_SETMASK, &mask, NULL);
	sigaction(sig, &old, NULL);
	lh_arm_pdeathsig(pdeath, NULL);
}

/* The supervisor is gone: exit as it did (as the target did). */
_Noreturn static void follow_back(const struct front *f)
{
	int st;

	while (waitpid(f->back, &st, 0) < 0)
		if (errno != EINTR)
			_exit(1);
	lh_exit_like(st);
}

static void on_message(const struct front *f, int32_t what, int32_t value)
{
	if (what == FRONT_STOPPED)
		stop_self(f, value);
	else if (what == FRONT_EXITED)
		lh_exit_like(value); /* -k: the supervisor stays behind, with the leftovers */
}

/* SIGIO: every message there is, or EOF. */
static void read_messages(struct front *f)
{
	int32_t msg[2];
	ssize_t r;

	for (;;) {
		r = read(f->sock, f->buf + f->len, sizeof f->buf - f->len);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0 && errno == EAGAIN)
			return;
		if (r <= 0)
			follow_back(f);
		f->len += (size_t)r;
		if (f->len < sizeof f->buf)
			continue;
		f->len = 0;
		memcpy(msg, f->buf, sizeof msg);
		on_message(f, msg[0], msg[1]);
	}
}

/* SIGCHLD: the supervisor stopped (someone stopped it: nothing to do) or exited. */
static void check_back(struct front *f)
{
	int st;

	if (waitpid(f->back, &st, WNOHANG) == f->back)
		lh_exit_like(st);
}

_Noreturn static void run_front(struct front *f)
{
	int by_process, sig;

	for (;;) {
		by_process = 1;
		sig = lh_wait_signal(&f->waited, &by_process);
		if (sig == SIGIO)
			read_messages(f);
		else if (sig == SIGCHLD)
			check_back(f);
		else if (sig > 0 && (f->forward_all || by_process))
			kill(f->back, sig); /* our unreaped child: its pid is its own */
	}
}

struct front_link lh_run_front(struct opts *o)
{
	struct front f;
	struct front_link link;
	int fds[2];
	pid_t pid;

	memset(&f, 0, sizeof f);
	f.o = o;
	f.self = getpid();
	f.parent = getppid();
	check_parent(o);
	link.join = place(&f);
	block_signals(&f); /* before the socket: its first SIGIO must wait for us */
	if (open_socket(&f, fds) < 0)
		lh_fail(o, STAGE_SETUP, errno, "socketpair", NULL);
	pid = fork();
	if (pid < 0)
		lh_fail(o, STAGE_FORK, errno, "fork the supervisor", NULL);
	if (pid == 0) {
		close(fds[0]);
		setpgid(0, 0); /* a group of its own: a group kill never reaches it */
		sigprocmask(SIG_SETMASK, &f.orig_mask, NULL);
		link.sock = fds[1];
		return link;
	}
	f.back = pid;
	f.sock = fds[0];
	setpgid(pid, pid); /* the race-free pair, as above */
	close_theirs(o, fds[1]);
	lh_close_stdio();
	run_front(&f);
}
