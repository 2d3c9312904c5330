/* supervisor.c - the supervisor's portable logic. It runs behind its front (front.c), in
 * a process group of its own, as the target's parent: relays the signals the front passes
 * on, tells the front of the target's job-control stops, answers the control socket, and on
 * the parent's death (or the front's) ends the target (or its tree, or its process group)
 * with the death signal, a grace period and SIGKILL; otherwise it exits as the target did,
 * and the front with it. The backend (linux.c, kqueue.c) arms it and waits for its events.
 *
 * Process-group strategy (-P on Linux, always outside Linux): the target runs in its own
 * process group, pgid = its pid; the front stays in the caller's group. Terminal signals
 * (Ctrl+C) then reach the front only, which passes every one on, so the supervisor relays
 * each to the group exactly once, whoever sent it. The group's number cannot be reused while the
 * target is unreaped (a zombie leader pins it), so the target is reaped last, after the
 * group is empty; no signal goes to the pgid after that. A descendant that calls setsid()
 * (or setpgid to another group) leaves it: it escapes.
 */
#include "helper.h"

#define RECHECK_MS 20	/* group-empty re-check cadence, during an ending only */
#define KILL_ROUNDS 100 /* at most this many SIGKILL rounds to a group (x RECHECK_MS = 2 s) */
#ifdef __FreeBSD__
#define LH_REAPER_KILL 1 /* -t: PROC_REAP_KILL, not the group */
#else
#define LH_REAPER_KILL 0
#endif

const int lh_forwarded[NFWD] = LH_FORWARDED;

/* ------------------------------------------------------------------ signalling */

/* Relay or ending: the whole group, only while its number is pinned. */
void sup_group_signal(const struct sup *s, int sig)
{
	if (s->pgid > 0 && !s->target_reaped)
		kill(-s->pgid, sig);
}

/* A forwarded or control-socket signal: to the group, or to the target. */
int sup_relay(struct sup *s, int sig)
{
	if (s->target <= 0 || s->target_reaped)
		return ESRCH; /* unreaped: its pid (and pgid) cannot have been reused */
	return kill(s->pgid ? -s->pgid : s->target, sig) < 0 ? errno : 0;
}

/* An ending's signal: the target, every descendant, or the group. */
static void signal_all(struct sup *s, int sig)
{
	if (s->end == END_TREE)
		sup_signal_tree(s, sig);
	else if (s->end == END_GROUP)
		sup_group_signal(s, sig);
	else if (!s->target_reaped)
		kill(s->target, sig);
}

static void signal_all_cb(void *s, int sig) { signal_all(s, sig); }

/* ------------------------------------------------------------------ reaping */

/* Reaps every exited child; returns 1 when we have no child at all. As a subreaper every
 * descendant hangs below one of our children, so this also means "no descendant left".
 * Not used with END_GROUP before the end: the target must stay unreaped. */
static int reap(struct sup *s)
{
	int st;
	pid_t p;

	for (;;) {
		p = waitpid(-1, &st, WNOHANG);
		if (p > 0 && p == s->target) {
			s->target_alive = 0;
			s->target_reaped = 1;
			s->target_status = st;
		} else if (p == 0) {
			return 0;
		} else if (p < 0 && errno != EINTR) {
			return 1;
		}
	}
}

/* The target's stop (the signal, > 0) or continuation (-1), once each; 0 if neither.
 * Never reaps: WEXITED is not asked for. */
static int stop_change(const struct sup *s)
{
	siginfo_t si;

	memset(&si, 0, sizeof si);
	if (waitid(P_PID, s->target, &si, WSTOPPED | WCONTINUED | WNOHANG) < 0 || si.si_pid != s->target)
		return 0;
	return si.si_code == CLD_STOPPED ? si.si_status : si.si_code == CLD_CONTINUED ? -1 : 0;
}

/* A front that followed the target's stop is continued when the target is (by anyone) or
 * exits: else a job whose target was continued or killed directly would stay stopped,
 * and its caller's wait() with it. */
static void wake_front(struct sup *s)
{
	if (!s->front_stopped)
		return;
	s->front_stopped = 0;
	sup_continue_front(s);
}

/* One message to the front (two native int32), while it is there to read it. */
static void tell_front(const struct sup *s, enum front_msg what, int value)
{
	int32_t msg[2];

	if (s->front < 0)
		return;
	msg[0] = (int32_t)what;
	msg[1] = value;
	lh_send_quiet(s->front, msg, sizeof msg);
}

/* The target exited (pidfd / NOTE_EXIT) or some child changed state (SIGCHLD). */
void sup_child_event(struct sup *s, int target_exit)
{
	int sig;

	if (s->end != END_GROUP)
		reap(s);
	else if (target_exit)
		s->target_alive = 0; /* a zombie until the group is empty */
	if (!s->target_alive) {
		wake_front(s);
	} else if ((sig = stop_change(s)) > 0) {
		if (!s->asked_stop) { /* the front follows it if it leads a job */
			tell_front(s, FRONT_STOPPED, sig);
			s->front_stopped = s->front >= 0;
		}
		s->asked_stop = 0;
	} else if (sig < 0) {
		wake_front(s);
	}
}

static int is_stop_signal(int sig) { return sig == SIGSTOP || sig == SIGTSTP || sig == SIGTTIN || sig == SIGTTOU; }

/* Only the zombie target left (or nothing we may signal). */
static int group_empty(const struct sup *s) { return !s->target_alive && !sup_group_has_live_member(s->pgid); }

/* Nothing left to wait for. */
static int all_gone(struct sup *s) { return s->end == END_GROUP ? group_empty(s) : reap(s); }

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

/* ------------------------------------------------------------------ lifeline, control socket */

void sup_read_lifeline(struct sup *s)
{
	if (!lh_lifeline_eof(s->life))
		return;
	close(s->life);
	s->life = -1;
	s->parent_gone = 1;
}

/* The front never writes: readable means it is gone, killed perhaps (SIGKILL of the pid
 * the caller holds, of its process group): that ends the tree as the parent's death does. */
void sup_read_front(struct sup *s)
{
	if (!lh_lifeline_eof(s->front))
		return;
	close(s->front);
	s->front = -1;
	s->parent_gone = 1;
}

/* One native int32 errno; never a SIGPIPE of our own that kqueue could not tell from a
 * signal to relay (Linux tells it by its sender; macOS: SO_NOSIGPIPE, set by sup_arm). */
static void answer(struct sup *s, int32_t err)
{
	struct lh_answer a;

	a.err = err;
	if (s->ctl >= 0)
		lh_send_quiet(s->ctl, &a, sizeof a);
}

/* SIGNAL 0 probes (never ends anything), SIGKILL ends everything and is answered once it
 * is all dead, any other signal is relayed; DROP ends as on the parent's death. */
static void control_request(struct sup *s, int32_t op, int32_t value)
{
	if (op == CTL_DROP) {
		s->parent_gone = 1; /* the Popen object was dropped: no answer */
	} else if (op != CTL_SIGNAL || value < 0 || value >= NSIG) {
		answer(s, EINVAL);
	} else if (!s->target_alive && value == SIGKILL) {
		s->kill_asked = s->kill_late = 1; /* what is left of the tree, at once */
	} else if (!s->target_alive) {
		answer(s, ESRCH);
	} else if (value == 0) {
		answer(s, 0);
	} else if (value == SIGKILL) {
		s->kill_asked = s->kill_reply = 1;
	} else {
		s->asked_stop = is_stop_signal(value); /* the caller knows: it keeps its channel */
		answer(s, sup_relay(s, value));
	}
}

void sup_read_control(struct sup *s)
{
	struct lh_control req;
	ssize_t r = read(s->ctl, s->cbuf + s->clen, sizeof s->cbuf - s->clen);

	if (r < 0 && (errno == EINTR || errno == EAGAIN))
		return;
	if (r <= 0) { /* EOF: the Popen object is gone (-L: one request is done), not the parent */
		close(s->ctl);
		s->ctl = -1;
		return;
	}
	s->clen += (size_t)r;
	if (s->clen < sizeof s->cbuf)
		return;
	s->clen = 0;
	memcpy(&req, s->cbuf, sizeof req);
	control_request(s, req.op, req.value);
}

/* ------------------------------------------------------------------ endings */

static int ending_done(void *p)
{
	struct sup *s = p;
	return s->kill_asked || all_gone(s);
}

static void ending_wait(void *p, long timeout_ms) { sup_wait_events(p, timeout_ms); }

/* sig (with SIGCONT) to everything, up to grace_ms for it to exit, then SIGKILL rounds
 * until nothing is left; grace_ms < 0 (none given): sig only, then wait as long as
 * anything is left, as the kernel's parent-death signal would leave it. Children are
 * waited for by SIGCHLD (the last descendant to die is always one of our children); a
 * group's other members are not our children, so its emptiness is re-checked every
 * RECHECK_MS, during the ending only. */
static void end_all(struct sup *s, int sig, long grace_ms)
{
	long step = s->end == END_GROUP ? RECHECK_MS : -1;
	int rounds = 0;

	if (!all_gone(s)) {
		lh_send_death(sig, signal_all_cb, s);
		if (sig != SIGKILL && grace_ms < 0)
			while (!ending_done(s)) /* until they are gone, or kill() is asked for */
				ending_wait(s, step);
		else if (sig != SIGKILL)
			lh_wait_until(lh_now_ms() + grace_ms, step, ending_done, ending_wait, s);
		while (!all_gone(s)) {
			if (s->end == END_GROUP && rounds++ >= KILL_ROUNDS)
				break; /* unkillable, or a kernel where the zombie leader hides the group's
					* emptiness: stop; nothing signals the pgid after the reap */
			signal_all(s, SIGKILL);
			sup_wait_events(s, step);
		}
	}
	if (s->end == END_GROUP)
		reap_target(s);
}

/* ------------------------------------------------------------------ the target */

/* What the target must not see changed: the mask, SIGCHLD's and (kqueue: ignored by the
 * supervisor) the forwarded signals' dispositions. */
static void restore_signals(const struct sup *s)
{
	int i;

	sigaction(SIGCHLD, &s->orig_chld, NULL);
	for (i = 0; s->fwd_ignored && i < NFWD; i++)
		sigaction(lh_forwarded[i], &s->orig_fwd[i], NULL);
	sigprocmask(SIG_SETMASK, &s->orig_mask, NULL);
}

/* In the forked child: credentials, leash (SIGKILL when the supervisor dies), its group:
 * its own with the group strategy, else the front's or the caller's (the supervisor does
 * the same: the race-free pair), exec. */
_Noreturn static void start_target(const struct sup *s)
{
	const struct opts *o = s->o;

	lh_change_credentials(o);
	if (lh_arm_pdeathsig(SIGKILL, NULL) < 0) /* 0, macOS: nothing to arm */
		lh_fail(o, STAGE_ARM, errno, "arm the leash", NULL);
	if (getppid() != s->self)
		_exit(1); /* the supervisor is already gone */
	if (!s->join && setpgid(0, 0) < 0)
		lh_fail(o, STAGE_ARM, errno, "arm the leash", NULL);
	if (s->join && setpgid(0, s->join) < 0)
		lh_fail(o, STAGE_ARM, errno, "arm the leash", NULL);
	restore_signals(s);
	lh_exec_target(o);
}

/* The backend's watch on the target's exit; if it cannot be armed, the target (and its
 * group, pinned as it is unreaped) is ended before the failure is reported. */
static void watch_target(struct sup *s)
{
	int err = sup_watch_target(s);

	if (!err)
		return;
	if (s->pgid)
		kill(-s->pgid, SIGKILL);
	kill(s->target, SIGKILL);
	reap_target(s);
	lh_fail(s->o, STAGE_ARM, err, "arm the leash", NULL);
}

static void start(struct sup *s)
{
	pid_t pid = fork();

	if (pid < 0)
		lh_fail(s->o, STAGE_FORK, errno, "fork the target", NULL);
	if (pid == 0)
		start_target(s);
	s->target = pid;
	s->target_alive = 1;
	if (!s->join) {
		setpgid(pid, pid); /* EACCES: it already exec'd (and had done it); ESRCH: it died */
		s->pgid = pid;
	}
	if (s->join)
		setpgid(pid, s->join); /* the race-free pair, as above */
	watch_target(s);
	if (s->o->report_fd >= 0)
		close(s->o->report_fd); /* the caller's EOF now means: the target was executed */
}

/* ------------------------------------------------------------------ the run */

static void init(struct sup *s, const struct opts *o, const struct front_link *link)
{
	memset(s, 0, sizeof *s);
	s->o = o;
	s->self = getpid();
	s->join = link->join;
	s->front_pid = getppid();
	s->front = link->sock;
	s->life = o->life_fd;
	s->ctl = o->ctl_fd;
	s->listener = -1;
	s->end = !o->tree ? END_TARGET : o->group && !LH_REAPER_KILL ? END_GROUP : END_TREE;
}

/* -k: the target exited by itself while the parent lives. The front exits with its status
 * (the caller's wait() returns); the leftovers -- a daemon the target started, say -- run
 * on until the parent dies, kill() asks for it, or they all exit. */
static void keep_leftovers(struct sup *s)
{
	if (!s->o->keep || s->target_alive || s->parent_gone || s->kill_asked)
		return;
	tell_front(s, FRONT_EXITED, s->target_status);
	close(s->front); /* from now on the front's exit is no parent death */
	s->front = -1;
	while (!s->parent_gone && !s->kill_asked && !all_gone(s))
		sup_wait_events(s, -1);
}

_Noreturn static void finish(struct sup *s)
{
	wake_front(s);
	if (s->kill_asked)
		end_all(s, SIGKILL, 0);
	else if (s->parent_gone || s->o->tree)
		end_all(s, s->o->sig, s->o->grace_ms);
	reap_target(s);
	if (s->kill_reply) {
		answer(s, 0);
		lh_exit_like(SIGKILL); /* the caller's returncode is -9, as for a plain kill() */
	}
	if (s->kill_late)
		answer(s, ESRCH); /* the target had exited; what it left is dead now */
	if (s->parent_gone)
		_exit(1);
	lh_exit_like(s->target_status);
}

_Noreturn void lh_run_supervisor(struct opts *o)
{
	struct front_link link = lh_run_front(o); /* returns in the supervisor only */
	struct sup s;

	init(&s, o, &link);
	sup_arm(&s); /* exits 1 if the parent is already gone */
	start(&s);
	lh_close_stdio(); /* the target has its own copies */
	while (s.target_alive && !s.parent_gone && !s.kill_asked)
		sup_wait_events(&s, -1);
	keep_leftovers(&s);
	finish(&s);
}
