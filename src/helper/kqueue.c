/* kqueue.c - the backend for macOS and the BSDs: kqueue waits (EVFILT_PROC/NOTE_EXIT,
 * EVFILT_SIGNAL, EVFILT_READ), FreeBSD's procctl (parent-death signal, reaper), the
 * process-group strategy's emptiness test. See helper.h for the interface.
 *
 * Every wait here is one kevent() call with a timeout the caller computed from a deadline
 * (lh_wait_until): none loops on kevent by itself. EVFILT_READ is level-triggered, so a
 * descriptor at EOF is removed from the queue as soon as the EOF is seen (closing it does
 * that for the supervisor's; the guardian's lifeline gets an explicit EV_DELETE); the
 * EVFILT_PROC filters are one-shot. Nothing can then keep a timed wait returning at once.
 */
#include "helper.h"

#include <sys/event.h>
#ifdef __FreeBSD__
#include <sys/procctl.h>
#endif

/* ------------------------------------------------------------------ any mode */

int lh_arm_pdeathsig(int sig, int *old)
{
#ifdef __FreeBSD__
	if (old && procctl(P_PID, 0, PROC_PDEATHSIG_STATUS, old) < 0)
		return -1;
	return procctl(P_PID, 0, PROC_PDEATHSIG_CTL, &sig) < 0 ? -1 : 1;
#else
	(void)sig;
	(void)old;
	return 0; /* none: the caller uses the guardian or the supervisor */
#endif
}

void lh_no_core_dumps(void) {}

int lh_close_fds(unsigned lo, unsigned hi)
{
	(void)lo;
	(void)hi;
	return -1;
}

/* macOS has sigwait only: no sender. (The front then passes every signal on: outside Linux
 * the target is always in a group of its own.) */
int lh_wait_signal(const sigset_t *set, int *by_process)
{
	int sig = 0, err;

	while ((err = sigwait(set, &sig)) != 0)
		if (err != EINTR)
			return -1;
	*by_process = 1;
	return sig;
}

int lh_open_watch(pid_t pid)
{
	(void)pid;
	errno = 0; /* the supervisor's kqueue registers -w */
	return -1;
}

/* ------------------------------------------------------------------ tree, group */

#ifdef __FreeBSD__
/* END_TREE on FreeBSD: the kernel signals every descendant of this reaper, setsid'd ones
 * included, with no pid to reuse. */
void sup_signal_tree(struct sup *s, int sig)
{
	struct procctl_reaper_kill rk;

	(void)s;
	memset(&rk, 0, sizeof rk);
	rk.rk_sig = sig; /* rk_flags 0: all descendants */
	procctl(P_PID, getpid(), PROC_REAP_KILL, &rk);
}
#else
void sup_signal_tree(struct sup *s, int sig) { sup_group_signal(s, sig); } /* not reached */
#endif

/* macOS: XNU's killpg skips zombies (killpg1_pgrpfilt), so with only the zombie leader
 * left kill(-pgid, 0) fails (ESRCH, or EPERM from the POSIX kill: none found).
 * FreeBSD, NetBSD (and maybe others) count a zombie leader as a member, so this stays true
 * until the target is reaped: the ending then runs the full grace and the SIGKILL rounds.
 * (FreeBSD's -t uses its reaper instead.) */
int sup_group_has_live_member(pid_t pgid) { return kill(-pgid, 0) == 0; }

/* ------------------------------------------------------------------ supervisor events */

static void kq_add(struct sup *s, uintptr_t ident, short filter, unsigned short flags, unsigned int fflags)
{
	struct kevent ev;

	EV_SET(&ev, ident, filter, EV_ADD | flags, fflags, 0, NULL);
	if (kevent(s->kq, &ev, 1, NULL, 0, NULL) < 0) {
		if (errno == ESRCH && filter == EVFILT_PROC)
			_exit(1); /* the -w pid is already gone: a parent death */
		lh_fail(s->o, STAGE_ARM, errno, "arm the leash", NULL);
	}
}

/* One wait for any event: a signal, lifeline EOF, -w exit, the front's exit, target exit,
 * a control request. */
void sup_wait_events(struct sup *s, long timeout_ms)
{
	struct kevent ev[8];
	struct timespec ts;
	int n, i, chld = 0, texit = 0;

	n = kevent(s->kq, NULL, 0, ev, 8, lh_timeout(&ts, timeout_ms));
	for (i = 0; i < n; i++) {
		int id = (int)ev[i].ident;
		if (ev[i].filter == EVFILT_SIGNAL && id == SIGCHLD)
			chld = 1;
		else if (ev[i].filter == EVFILT_SIGNAL)
			sup_relay(s, id); /* once per event, as signals coalesce */
		else if (ev[i].filter == EVFILT_READ && id == s->life)
			sup_read_lifeline(s); /* closed at EOF, which deletes its filter */
		else if (ev[i].filter == EVFILT_READ && id == s->front)
			sup_read_front(s); /* likewise */
		else if (ev[i].filter == EVFILT_READ && id == s->ctl)
			sup_read_control(s); /* likewise */
		else if (ev[i].filter == EVFILT_PROC && s->target > 0 && (pid_t)id == s->target)
			texit = 1;
		else if (ev[i].filter == EVFILT_PROC)
			s->parent_gone = 1;
	}
	if (texit || chld)
		sup_child_event(s, texit);
}

/* Reaper (FreeBSD -t), the kqueue, the -w watch and the lifeline; exits 1 if the parent is
 * already gone. */
static void arm_leash(struct sup *s)
{
	const struct opts *o = s->o;

#ifdef __FreeBSD__
	if (s->end == END_TREE && procctl(P_PID, getpid(), PROC_REAP_ACQUIRE, NULL) < 0)
		lh_fail(o, STAGE_ARM, errno, "arm the leash", NULL);
#endif
	if ((s->kq = lh_high_fd(kqueue())) < 0) /* not inherited by fork */
		lh_fail(o, STAGE_ARM, errno, "arm the leash", NULL);
	if (o->watch)
		kq_add(s, (uintptr_t)o->watch, EVFILT_PROC, EV_ONESHOT, NOTE_EXIT);
	if (o->ppid && getppid() != o->ppid)
		_exit(1); /* parent gone; else the -w watch, armed above, is on our live parent */
	if (s->life >= 0)
		kq_add(s, (uintptr_t)s->life, EVFILT_READ, 0, 0);
	if (s->front >= 0)
		kq_add(s, (uintptr_t)s->front, EVFILT_READ, 0, 0);
	sup_wait_events(s, 0); /* only these are armed yet: lifeline at EOF, -w exited? */
	if (s->parent_gone)
		_exit(1);
}

/* The forwarded signals are ignored (kqueue still records them; SIGTSTP, SIGTTIN and
 * SIGTTOU cannot stop us), SIGCHLD is default (SIG_IGN would auto-reap the target and
 * unpin its pgid; no SA_NOCLDSTOP: its stops are followed). */
static void watch_signals(struct sup *s)
{
	struct sigaction ign, dfl;
	sigset_t none;
	int i;

	memset(&ign, 0, sizeof ign);
	memset(&dfl, 0, sizeof dfl);
	ign.sa_handler = SIG_IGN;
	dfl.sa_handler = SIG_DFL;
	for (i = 0; i < NFWD; i++) {
		kq_add(s, (uintptr_t)lh_forwarded[i], EVFILT_SIGNAL, 0, 0);
		sigaction(lh_forwarded[i], &ign, &s->orig_fwd[i]);
	}
	s->fwd_ignored = 1;
	kq_add(s, SIGCHLD, EVFILT_SIGNAL, 0, 0);
	sigaction(SIGCHLD, &dfl, &s->orig_chld);
	sigemptyset(&none);
	sigprocmask(SIG_BLOCK, &none, &s->orig_mask);
}

/* macOS has no MSG_NOSIGNAL: a SIGPIPE of our own would look like one to relay. */
static void no_sigpipe(int fd)
{
#if defined(SO_NOSIGPIPE)
	int one = 1;
	setsockopt(fd, SOL_SOCKET, SO_NOSIGPIPE, &one, sizeof one);
#else
	(void)fd;
#endif
}

/* No pidfd: the front is signalled while it is still our parent (an exited front is a
 * zombie until its caller reaps it, so the window for a reused pid is that reap and a
 * full turn of the pid space between two system calls). */
void sup_continue_front(struct sup *s)
{
	if (getppid() == s->front_pid)
		kill(s->front_pid, SIGCONT);
}

void sup_arm(struct sup *s)
{
	arm_leash(s);
	if (s->front >= 0)
		no_sigpipe(s->front);
	if (s->ctl >= 0) {
		no_sigpipe(s->ctl);
		kq_add(s, (uintptr_t)s->ctl, EVFILT_READ, 0, 0);
	}
	watch_signals(s);
}

/* NOTE_EXIT on the target: its exit, without reaping it. */
int sup_watch_target(struct sup *s)
{
	struct kevent ev;

	EV_SET(&ev, (uintptr_t)s->target, EVFILT_PROC, EV_ADD | EV_ONESHOT, NOTE_EXIT, 0, NULL);
	if (kevent(s->kq, &ev, 1, NULL, 0, NULL) == 0)
		return 0;
	if (errno != ESRCH)
		return errno;
	sup_child_event(s, 1); /* already a zombie (XNU refuses to watch those) */
	return 0;
}

/* ------------------------------------------------------------------ guardian */

/* EVFILT_PROC/NOTE_EXIT on the target (the helper's pid) and the -w pid, EVFILT_READ on
 * the lifeline. */
int guard_arm(struct guard *g)
{
	struct kevent ev[3];
	int n = 0;

	if ((g->kq = lh_high_fd(kqueue())) < 0)
		return errno;
	EV_SET(&ev[n++], (uintptr_t)g->target, EVFILT_PROC, EV_ADD | EV_ONESHOT, NOTE_EXIT, 0, NULL);
	if (g->o->watch)
		EV_SET(&ev[n++], (uintptr_t)g->o->watch, EVFILT_PROC, EV_ADD | EV_ONESHOT, NOTE_EXIT, 0, NULL);
	if (g->life >= 0)
		EV_SET(&ev[n++], (uintptr_t)g->life, EVFILT_READ, EV_ADD, 0, 0, NULL);
	if (kevent(g->kq, ev, n, NULL, 0, NULL) < 0)
		return errno == ESRCH && g->o->watch ? GUARD_GONE : errno;
	return 0;
}

/* Level-triggered: left in the queue at EOF, it would end every later wait at once (and a
 * grace period would spin to its end). */
static void forget_lifeline(struct guard *g)
{
	struct kevent ev;

	EV_SET(&ev, (uintptr_t)g->life, EVFILT_READ, EV_DELETE, 0, 0, NULL);
	kevent(g->kq, &ev, 1, NULL, 0, NULL);
	close(g->life);
	g->life = -1;
	g->parent_gone |= lh_lifeline_is_death(g->o);
}

void guard_wait(struct guard *g, long timeout_ms)
{
	struct kevent out[4];
	struct timespec ts;
	int n, i;

	n = kevent(g->kq, NULL, 0, out, 4, lh_timeout(&ts, timeout_ms));
	for (i = 0; i < n; i++) {
		if (out[i].filter == EVFILT_PROC && (pid_t)out[i].ident == g->target)
			g->target_exited = 1;
		else if (out[i].filter == EVFILT_PROC)
			g->parent_gone = 1; /* the -w pid */
		else if (out[i].filter == EVFILT_READ && g->life >= 0 && lh_lifeline_eof(g->life))
			forget_lifeline(g);
	}
}

/* While the target's NOTE_EXIT has not fired its pid cannot have been reused: collect a
 * queued one first. (Once it fired, the caller may reap it: nothing is sent then.) */
void guard_signal(struct guard *g, int sig)
{
	guard_wait(g, 0);
	if (!g->target_exited)
		kill(g->target, sig);
}
