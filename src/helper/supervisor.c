/* supervisor.c - the supervisor's portable logic. It stays between the caller and the
 * target: relays signals, follows the target's job-control stops, answers the control
 * socket, and on the parent's death ends the target (or its tree, or its process group)
 * with the death signal, a grace period and SIGKILL; otherwise it passes the target's exit
 * status through. The backend (linux.c, kqueue.c) arms it and waits for its events.
 *
 * Process-group strategy (-P on Linux, always outside Linux): the target runs in its own
 * process group, pgid = its pid; the supervisor stays in the caller's group. Terminal
 * signals (Ctrl+C) then reach the supervisor only, so it relays every forwarded signal to
 * the group exactly once, whoever sent it. The group's number cannot be reused while the
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

/* Control requests: two native int32, (op, value). */
enum { CTL_SIGNAL = 1, CTL_RELEASE = 2 };

const int lh_forwarded[NFWD] = { SIGTERM, SIGINT,  SIGHUP,  SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH,
				 SIGCONT, SIGALRM, SIGTSTP, SIGTTIN, SIGTTOU, SIGPIPE };

/* ------------------------------------------------------------------ exiting like the target */

/* Dies by sig, without a core dump; exit 128+sig if that somehow fails. */
_Noreturn static void die_by(int sig)
{
	struct rlimit rl;
	struct sigaction dfl;
	sigset_t set;

	rl.rlim_cur = rl.rlim_max = 0;
	setrlimit(RLIMIT_CORE, &rl);
	lh_no_core_dumps(); /* also stops a core_pattern pipe */
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
_Noreturn static void exit_like(int status)
{
	if (WIFSIGNALED(status))
		die_by(WTERMSIG(status));
	_exit(WIFEXITED(status) ? WEXITSTATUS(status) : 1);
}

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

/* The signal that stopped the target, once per stop; 0 if it is not stopped. Never
 * reaps: WEXITED is not asked for. */
static int stopped_by(const struct sup *s)
{
	siginfo_t si;

	memset(&si, 0, sizeof si);
	if (waitid(P_PID, s->target, &si, WSTOPPED | WNOHANG) < 0 || si.si_pid != s->target ||
	    si.si_code != CLD_STOPPED)
		return 0;
	return si.si_status;
}

/* The target exited (pidfd / NOTE_EXIT) or some child changed state (SIGCHLD). */
void sup_child_event(struct sup *s, int target_exit)
{
	int sig;

	if (s->end != END_GROUP)
		reap(s);
	else if (target_exit)
		s->target_alive = 0; /* a zombie until the group is empty */
	/* A supervisor apart is nobody's job: a shell waits for its leader, not for it. */
	if (s->target_alive && !s->apart && (sig = stopped_by(s)) != 0) {
		s->stop_sig = s->asked_stop ? 0 : sig;
		s->asked_stop = 0;
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

/* One native int32 errno; never a SIGPIPE of our own that kqueue could not tell from a
 * signal to relay (Linux tells it by its sender; macOS: SO_NOSIGPIPE, set by sup_arm). */
static void answer(struct sup *s, int32_t err)
{
	if (s->ctl < 0)
		return;
#ifdef MSG_NOSIGNAL
	while (send(s->ctl, &err, sizeof err, MSG_NOSIGNAL) < 0 && errno == EINTR)
		;
#else
	lh_put(s->ctl, &err, sizeof err);
#endif
}

/* SIGNAL 0 probes (never ends anything), SIGKILL ends everything and is answered once it
 * is all dead, any other signal is relayed; RELEASE ends as on the parent's death. */
static void control_request(struct sup *s, int32_t op, int32_t value)
{
	if (op == CTL_RELEASE) {
		s->parent_gone = 1; /* the Popen object was dropped: no answer */
	} else if (op != CTL_SIGNAL || value < 0 || value >= NSIG) {
		answer(s, EINVAL);
	} else if (!s->target_alive) {
		answer(s, ESRCH);
		s->kill_asked |= value == SIGKILL; /* what is left of the tree, at once */
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
	int32_t req[2];
	ssize_t r = read(s->ctl, s->cbuf + s->clen, sizeof s->cbuf - s->clen);

	if (r < 0 && (errno == EINTR || errno == EAGAIN))
		return;
	if (r <= 0) { /* EOF: the Popen object is gone, not the parent */
		close(s->ctl);
		s->ctl = -1;
		return;
	}
	s->clen += (size_t)r;
	if (s->clen < sizeof s->cbuf)
		return;
	s->clen = 0;
	memcpy(req, s->cbuf, sizeof req);
	control_request(s, req[0], req[1]);
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

/* ------------------------------------------------------------------ job control */

/* Stops this process by sig, whatever the backend did to it (blocked for the signalfd,
 * ignored for kqueue), until a SIGCONT. */
static void stop_self(struct sup *s, int sig)
{
	struct sigaction dfl, old;
	sigset_t one, mask;

	memset(&dfl, 0, sizeof dfl);
	memset(&old, 0, sizeof old);
	dfl.sa_handler = SIG_DFL;
	sigemptyset(&one);
	sigaddset(&one, sig);
	s->own_sig = sig; /* kqueue records even this one: it is not to be relayed */
	sigaction(sig, &dfl, &old);
	sigprocmask(SIG_UNBLOCK, &one, &mask);
	kill(s->self, sig); /* returns once continued */
	sigprocmask(SIG_SETMASK, &mask, NULL);
	sigaction(sig, &old, NULL);
}

/* The target stopped (Ctrl+Z, SIGSTOP): stop by the same signal, so that whoever waits for
 * the supervisor (a shell) sees the job stopped. The SIGCONT that continues us is then
 * relayed to the target like any forwarded signal. A stopped process watches nothing, so
 * for that time a parent-death signal of SIGCONT (Linux, FreeBSD) wakes us if the parent
 * dies; a -w pid that is not our parent is seen only once we are continued, and control
 * requests are read then. (A stop asked for on the control socket is not followed.) */
static void follow_stop(struct sup *s)
{
	int sig = s->stop_sig, old = 0;

	s->stop_sig = 0;
	if (!s->target_alive || s->parent_gone || s->kill_asked)
		return;
	if (lh_arm_pdeathsig(SIGCONT, &old) < 0)
		return; /* nothing would wake us if the parent died: stay awake */
	if (getppid() == s->parent) /* else it died already: no SIGCONT would come */
		stop_self(s, sig);
	lh_arm_pdeathsig(old, NULL);
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

/* In the forked child: credentials, leash (SIGKILL when the supervisor dies), own group
 * with the group strategy (the supervisor does the same: the race-free pair), exec. */
_Noreturn static void start_target(const struct sup *s)
{
	const struct opts *o = s->o;

	lh_change_credentials(o);
	if (lh_arm_pdeathsig(SIGKILL, NULL) < 0) /* 0, macOS: nothing to arm */
		lh_fail(o, STAGE_ARM, errno, "arm the leash", NULL);
	if (getppid() != s->self)
		_exit(1); /* the supervisor is already gone */
	if (o->group && setpgid(0, 0) < 0)
		lh_fail(o, STAGE_ARM, errno, "arm the leash", NULL);
	if (s->apart && setpgid(0, s->apart) < 0)
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
	if (s->o->group) {
		setpgid(pid, pid); /* EACCES: it already exec'd (and had done it); ESRCH: it died */
		s->pgid = pid;
	}
	if (s->apart)
		setpgid(pid, s->apart); /* the race-free pair, as above */
	watch_target(s);
	if (s->o->report_fd >= 0)
		close(s->o->report_fd); /* the caller's EOF now means: the target was executed */
}

/* ------------------------------------------------------------------ the run */

static void init(struct sup *s, const struct opts *o)
{
	memset(s, 0, sizeof *s);
	s->o = o;
	s->self = getpid();
	s->parent = getppid();
	s->life = o->life_fd;
	s->ctl = o->ctl_fd;
	s->end = !o->tree ? END_TARGET : o->group && !LH_REAPER_KILL ? END_GROUP : END_TREE;
}

_Noreturn static void finish(struct sup *s)
{
	if (s->kill_asked)
		end_all(s, SIGKILL, 0);
	else if (s->parent_gone || s->o->tree)
		end_all(s, s->o->sig, s->o->grace_ms);
	reap_target(s);
	if (s->kill_reply) {
		answer(s, 0);
		die_by(SIGKILL); /* the caller's returncode is -9, as for a plain kill() */
	}
	if (s->parent_gone)
		_exit(1);
	exit_like(s->target_status);
}

/* Unless the supervisor leads its group already (a shell's job, start_new_session) or
 * uses the group strategy, it moves to a group of its own while the target stays in the
 * caller's. A signal to the caller's whole group (kill -INT 0, os.killpg, a CI runner's
 * kill -9 of the job's group) then reaches the target once, directly, never again through
 * the supervisor's relay; and a SIGKILL of that group leaves the supervisor alive to end
 * the tree. Terminal signals reach the target as before: its group is the foreground one. */
static void stand_apart(struct sup *s)
{
	pid_t caller = getpgid(0);

	if (s->o->group || caller == s->self)
		return;
	if (setpgid(0, 0) == 0)
		s->apart = caller;
}

_Noreturn void lh_run_supervisor(const struct opts *o)
{
	struct sup s;

	init(&s, o);
	sup_arm(&s); /* exits 1 if the parent is already gone */
	stand_apart(&s);
	start(&s);
	while (s.target_alive && !s.parent_gone && !s.kill_asked) {
		sup_wait_events(&s, -1);
		if (s.stop_sig)
			follow_stop(&s);
	}
	finish(&s);
}
