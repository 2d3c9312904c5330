/* guardian.c - the guardian's portable logic. Before the target runs, the helper forks;
 * the child forks the guardian and exits, so init/launchd adopts the guardian and it
 * outlives the caller. The guardian detaches, arms on the helper's pid (the helper becomes
 * the target: same pid), the lifeline and the -w pid, then tells the helper, which only
 * then execs PROGRAM. Parent death: the death signal to the target, SIGCONT, grace,
 * SIGKILL. Target exit: the guardian exits. The backend (linux.c, kqueue.c) arms and waits.
 */
#include "helper.h"

/* guardian -> helper: 'A' armed; 'D' the -w pid is already gone (a parent death);
 * 'E' + int32 errno: could not arm. */
static void guard_msg(int fd, char what, int err)
{
	char msg[1 + sizeof(int32_t)];
	int32_t e = err;

	msg[0] = what;
	memcpy(msg + 1, &e, sizeof e);
	lh_put(fd, msg, what == 'E' ? sizeof msg : 1);
}

static void close_fds(unsigned lo, unsigned hi)
{
	unsigned fd;

	if (lo > hi || lh_close_fds(lo, hi) == 0)
		return;
	for (fd = lo; fd < 65536 && fd <= hi; fd++)
		close((int)fd);
}

/* Closes every fd >= 3 except a and b (-1 = none). */
static void close_other_fds(int a, int b)
{
	int keep[2], i;
	unsigned lo = 3;

	keep[0] = a < b ? a : b;
	keep[1] = a < b ? b : a;
	for (i = 0; i < 2; i++) {
		if (keep[i] < (int)lo)
			continue;
		close_fds(lo, (unsigned)keep[i] - 1);
		lo = (unsigned)keep[i] + 1;
	}
	close_fds(lo, ~0U);
}

/* No fd of the caller's, no terminal, no cwd, its own session. The lifeline moves above
 * stdio first, as 0-2 become /dev/null (notify, from lh_pipe, is there already). */
static void detach(struct opts *o, int notify)
{
	int null;

	if (o->life_fd >= 0 && (o->life_fd = lh_high_fd(o->life_fd)) < 0) {
		guard_msg(notify, 'E', errno);
		_exit(0);
	}
	null = lh_high_fd(open("/dev/null", O_RDWR | O_CLOEXEC, 0));
	if (null >= 0) {
		dup2(null, 0);
		dup2(null, 1);
		dup2(null, 2);
		close(null);
	}
	close_other_fds(o->life_fd, notify);
	if (chdir("/") < 0) {
		/* keep going: arming does not depend on the cwd */
	}
	setsid();
}

static int target_exited(void *p) { return ((struct guard *)p)->target_exited; }

static void wait_for_target(void *p, long timeout_ms) { guard_wait(p, timeout_ms); }

static void signal_target(void *g, int sig) { guard_signal(g, sig); }

/* The parent is gone: the death signal (with SIGCONT, for a stopped target), up to grace
 * for the target to exit, then SIGKILL. Without a grace, only the death signal, as the
 * kernel's parent-death signal does. */
_Noreturn static void end_target(struct guard *g)
{
	int sig = g->o->sig;

	lh_send_death(sig, signal_target, g);
	if (sig != SIGKILL && g->o->grace_ms < 0)
		_exit(0);
	if (sig != SIGKILL &&
	    lh_wait_until(lh_now_ms() + g->o->grace_ms, -1, target_exited, wait_for_target, g))
		_exit(0);
	guard_signal(g, SIGKILL);
	_exit(0);
}

_Noreturn static void guardian(struct opts *o, pid_t target, int notify)
{
	struct guard g;
	int armed;

	detach(o, notify);
	memset(&g, 0, sizeof g);
	g.o = o;
	g.target = target;
	g.life = o->life_fd;
	armed = guard_arm(&g);
	guard_msg(notify, armed == 0 ? 'A' : armed == GUARD_GONE ? 'D' : 'E', armed);
	if (armed != 0)
		_exit(0);
	close(notify);
	while (!g.target_exited && !g.parent_gone)
		guard_wait(&g, -1);
	if (g.target_exited)
		_exit(0);
	end_target(&g);
}

/* The guardian's answer: 'A', 'D', or 'E' with *err (EPIPE: it died before saying why). */
static char read_answer(int fd, int32_t *err)
{
	char msg[1 + sizeof(int32_t)];
	size_t got = 0;
	ssize_t r;

	while (got < sizeof msg && (r = read(fd, msg + got, sizeof msg - got)) != 0) {
		if (r < 0 && errno != EINTR)
			break;
		if (r > 0)
			got += (size_t)r;
		if (got && msg[0] != 'E')
			break;
	}
	close(fd);
	if (got && (msg[0] == 'A' || msg[0] == 'D'))
		return msg[0];
	*err = EPIPE;
	if (got == sizeof msg)
		memcpy(err, msg + 1, sizeof *err);
	return 'E';
}

_Noreturn void lh_run_guardian(struct opts *o)
{
	int np[2], st;
	pid_t target = getpid(), child;
	int32_t err;
	char answer;

	if (lh_pipe(np) < 0)
		lh_fail(o, STAGE_SETUP, errno, "pipe", NULL);
	child = fork();
	if (child < 0)
		lh_fail(o, STAGE_FORK, errno, "fork the guardian", NULL);
	if (child == 0) { /* forks the guardian and exits, so init/launchd adopts it */
		pid_t g;
		close(np[0]);
		g = fork();
		if (g == 0)
			guardian(o, target, np[1]);
		if (g < 0)
			guard_msg(np[1], 'E', errno);
		_exit(0);
	}
	close(np[1]);
	while (waitpid(child, &st, 0) < 0 && errno == EINTR)
		;
	answer = read_answer(np[0], &err);
	if (answer == 'E')
		lh_fail(o, STAGE_GUARDIAN, err, "start the guardian", NULL);
	if (answer == 'D' || (o->ppid && getppid() != o->ppid))
		_exit(1); /* the parent is gone, or died before the guardian was armed: the
			   * guardian follows us */
	lh_change_credentials(o);
	lh_exec_target(o);
}
