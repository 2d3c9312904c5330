/* helper.h - what the parts of leashed-helper share.
 *
 *   main.c        the entry point: the outline of a run
 *   options.c     the command line: the option table and its parser
 *   report.c      failures before the target runs: report pipe or stderr, exit status
 *   exec.c        credentials, exec with the PATH search
 *   direct.c      direct mode
 *   util.c        small utilities every part uses
 *   front.c       the supervisor's front: the process the caller holds
 *   supervisor.c  the supervisor's portable logic (endings, reaping, control socket)
 *   guardian.c    the guardian's portable logic
 *   linux.c       backend: pidfd, signalfd, /proc, subreaper, PR_SET_PDEATHSIG
 *   kqueue.c      backend: kqueue (macOS, the BSDs), FreeBSD procctl
 *
 * Exactly one backend is built; it implements the functions marked "backend" below.
 * The contract with the Python side is docs/helper-protocol.md.
 *
 * Rules kept throughout:
 * - No allocation; bounded static tables only.
 * - Code that runs in a forked child before exec uses async-signal-safe calls only.
 * - Nothing of ours reaches the target: our fds are close-on-exec, the signal mask and
 *   dispositions are restored in the child before exec.
 * - Every fd we create is >= 3 (lh_high_fd): the caller may have closed its stdio.
 * - Never signal a pid that may have been reused: direct children are safe while
 *   unreaped; deeper descendants go through pidfd_open + a start-time recheck; a
 *   process group only while its leader (the target) is unreaped.
 */
#ifndef LEASHED_HELPER_H
#define LEASHED_HELPER_H

#if defined(__linux__) && !defined(LEASHED_NOLIBC) && !defined(_GNU_SOURCE)
#define _GNU_SOURCE /* -std=c11 hides POSIX otherwise */
#elif defined(__APPLE__) && !defined(_DARWIN_C_SOURCE)
#define _DARWIN_C_SOURCE
#elif defined(__NetBSD__) && !defined(_NETBSD_SOURCE)
#define _NETBSD_SOURCE
#endif
#include "nolibc.h"

/* ------------------------------------------------------------------ core */

/* Bits, so that the option table can say in which modes an option is valid. */
enum lh_mode { MODE_DIRECT = 1, MODE_SUPERVISOR = 2, MODE_GUARDIAN = 4 };

/* What failed before the target ran: the first int32 of the report. */
enum lh_stage {
	STAGE_EXEC = 1,	       /* execve of PROGRAM */
	STAGE_ARM = 2,	       /* arming the leash: prctl, subreaper, procctl, pidfd, kqueue, setpgid */
	STAGE_FORK = 3,	       /* fork */
	STAGE_GUARDIAN = 4,    /* the guardian could not arm */
	STAGE_CREDENTIALS = 5, /* setgroups, setregid, setreuid */
	STAGE_USAGE = 6,       /* bad command line (errno EINVAL) */
	STAGE_SETUP = 7	       /* anything else before the target runs: a bad fd, signalfd, ... */
};

/* The report pipe's one message (report.c), native-endian. */
struct lh_report {
	int32_t stage, err; /* enum lh_stage, errno */
};

/* The control socket (supervisor.c): requests are (op, value), answers one errno. */
enum lh_control_op {
	CTL_SIGNAL = 1, /* value: a signal number, 0 = liveness probe; answered */
	CTL_DROP = 2	/* the Popen object was dropped: end as on the parent's death; no answer */
};
struct lh_control {
	int32_t op, value;
};
struct lh_answer {
	int32_t err;
};

struct opts {
	enum lh_mode mode;
	pid_t ppid;	  /* -p, 0 = no check */
	int sig;	  /* -s */
	long grace_ms;	  /* -g; -1 = none given: the death signal only, no SIGKILL after it */
	int report_fd;	  /* -r, -1 = none */
	int life_fd;	  /* -l, -1 = none */
	int ctl_fd;	  /* -c, -1 = none */
	int listen_fd;	  /* -L: a listening control socket (Linux), -1 = none */
	pid_t watch;	  /* -w, 0 = none */
	int watch_fd;	  /* Linux: a pidfd on -w, opened by the front before its -p check; -1 */
	int tree;	  /* -t */
	int keep;	  /* -k: the target's exit leaves its leftovers running until the parent dies */
	int group;	  /* -P; always set for the supervisor outside Linux */
	int uid_given, gid_given, groups_given; /* -U, -G, -X */
	uid_t uid;
	gid_t gid;
	size_t ngroups;	  /* -X: how many, in lh_groups */
	const char *prog; /* PROGRAM */
	char **argv;	  /* [ARGV0 [ARG]...], may be empty */
};

#define LH_GROUPS_MAX 65536 /* Linux NGROUPS_MAX */
extern gid_t lh_groups[LH_GROUPS_MAX]; /* -X (options.c) */

/* options.c: parses the command line into *o (the report pipe first, so that even a usage
 * error reaches it); refuses a bad one with STAGE_USAGE. */
void lh_parse_command_line(int argc, char **argv, struct opts *o);
/* The caller's fds we keep (-l, -c, -L) made close-on-exec; STAGE_SETUP if one is not open. */
void lh_own_fds(const struct opts *o);

/* Reports `stage, err` on the report pipe (or says it on stderr without one) and exits:
 * 2 for STAGE_USAGE, 127 for STAGE_EXEC with ENOENT, 126 otherwise. what/arg name the
 * step ("exec", PROGRAM); arg may be NULL. Async-signal-safe. */
_Noreturn void lh_fail(const struct opts *o, enum lh_stage stage, int err, const char *what, const char *arg);
/* In the child, after credentials and arming: executes PROGRAM or reports why not. */
_Noreturn void lh_exec_target(const struct opts *o);
/* The user=, group=, extra_groups= of subprocess; STAGE_CREDENTIALS on failure. */
void lh_change_credentials(const struct opts *o);

/* util.c */
void lh_put(int fd, const void *buf, size_t n);
int lh_streq(const char *a, const char *b);
static inline int lh_is_digit(char c) { return c >= '0' && c <= '9'; }
int lh_parse_num(const char *s, unsigned long long lo, unsigned long long hi, unsigned long long *out);
int lh_high_fd(int fd);	  /* moves a new fd of ours above stdio; -1 stays -1 */
int lh_pipe(int fds[2]);  /* close-on-exec, both ends >= 3 */
int lh_socketpair(int fds[2]); /* AF_UNIX stream; close-on-exec, both ends >= 3 */
void lh_send_quiet(int fd, const void *buf, size_t n); /* no SIGPIPE of our own, where it can */
void lh_close_stdio(void); /* 0-2: nothing of ours may keep a caller's pipe from EOF */
long long lh_now_ms(void); /* monotonic */
const struct timespec *lh_timeout(struct timespec *ts, long ms); /* NULL for ms < 0 */
int lh_lifeline_eof(int fd); /* reads the lifeline: 1 at EOF (the parent is gone) */
/* Sends a death signal through send(ctx, sig) so that a stopped process gets it too:
 * SIGCONT, sig, SIGCONT (unless sig is SIGKILL or SIGCONT). */
void lh_send_death(int sig, void (*send)(void *, int), void *ctx);
/* Calls wait(ctx, ms) until done(ctx) or the monotonic deadline (ms) passes; each wait
 * lasts at most step_ms when step_ms > 0. Returns done(ctx). The one deadline loop of
 * every grace period, so no wait can stretch it or spin past it. */
int lh_wait_until(long long deadline, long step_ms, int (*done)(void *), void (*wait)(void *, long), void *ctx);

/* Exits the way a child did, from its wait status: code c -> exit c; killed by s -> dies by
 * s (without a core dump). */
_Noreturn void lh_exit_like(int status);
_Noreturn void lh_run_direct(const struct opts *o);	 /* direct.c */
_Noreturn void lh_run_supervisor(struct opts *o); /* supervisor.c */
_Noreturn void lh_run_guardian(struct opts *o);	 /* guardian.c */

/* ------------------------------------------------------------------ backend, any mode */

/* Parent-death signal of this process (0 disarms); the one it replaces into *old unless
 * old is NULL. 1 armed, 0 this OS has none, -1 errno. */
int lh_arm_pdeathsig(int sig, int *old);
void lh_no_core_dumps(void); /* beyond RLIMIT_CORE (Linux: not dumpable) */
int lh_close_fds(unsigned lo, unsigned hi); /* close_range; -1: the caller closes one by one */
/* Waits for one signal of set (blocked); *by_process: sent by a process (kill, sigqueue),
 * not by the kernel (a terminal's Ctrl+C); 1 where the OS does not tell. */
int lh_wait_signal(const sigset_t *set, int *by_process);
/* Linux: a pidfd on pid, -1 with errno; elsewhere -1 with errno 0: watched later, by kqueue. */
int lh_open_watch(pid_t pid);

/* ------------------------------------------------------------------ front (front.c) */

/* supervisor -> front on their socket: two native int32, (what, value). */
enum front_msg {
	FRONT_STOPPED = 1, /* the target stopped by signal `value`: a job's leader follows */
	FRONT_EXITED = 2   /* -k: the target exited with wait status `value`; the leftovers stay */
};

/* What the supervisor gets from its front. */
struct front_link {
	int sock;  /* the supervisor's end: EOF when the front is gone */
	pid_t join; /* the process group the target joins; 0 = its own (relays then go to it) */
};

/* Forks the supervisor into a process group of its own and becomes its front; returns only
 * in the supervisor, with the caller's signal mask back in place. */
struct front_link lh_run_front(struct opts *o);

/* ------------------------------------------------------------------ supervisor */

/* The signals the supervisor passes on; NFWD counts them. */
#define LH_FORWARDED                                                                          \
	{ SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH,                        \
	  SIGCONT, SIGALRM, SIGTSTP, SIGTTIN, SIGTTOU, SIGPIPE }
#define NFWD ((int)(sizeof(const int[])LH_FORWARDED / sizeof(int)))
extern const int lh_forwarded[NFWD];

/* What an ending (parent death, target exit with -t, control SIGKILL) signals. */
enum end_how {
	END_TARGET, /* the target only (no -t) */
	END_TREE,   /* every descendant: Linux subreaper walk, FreeBSD PROC_REAP_KILL */
	END_GROUP   /* the target's process group, its number pinned by the unreaped target */
};

struct sup {
	const struct opts *o;
	pid_t self, target;
	pid_t pgid;	    /* the target's own process group (group strategy); 0 = ours */
	pid_t join;	    /* the group the target joins (the front's, or the caller's); 0 = its own */
	enum end_how end;
	int target_alive;   /* has not exited */
	int target_reaped;  /* waited for: from now on its pid and pgid may be reused */
	int target_status;
	int asked_stop;	    /* a stop signal relayed from the control socket: not followed */
	int life, ctl;	    /* lifeline, control socket (-c, or accepted on -L); -1 = none */
	int listener;	    /* -L: the listening control socket; -1 = none */
	int front;	    /* the socket to the front; -1 once it is gone, or let go (-k) */
	pid_t front_pid;    /* our parent */
	int front_stopped;  /* told STOPPED: it may be stopped, following the target */
	int parent_gone;    /* lifeline EOF, -w exit, the front's death; a DROP counts as one */
	int kill_asked;	    /* control SIGKILL: end everything by SIGKILL now */
	int kill_reply;	    /* ... and answer once it is done, then die by SIGKILL */
	int kill_late;	    /* a SIGKILL asked for after the target exited: ESRCH once done */
	unsigned char cbuf[sizeof(struct lh_control)]; /* a control request being read */
	size_t clen;
	sigset_t orig_mask;    /* restored in the target */
	struct sigaction orig_chld, orig_fwd[NFWD];
	int fwd_ignored;       /* kqueue: the forwarded signals are SIG_IGN here */
#ifdef __linux__
	int sfd, wfd, tfd; /* signalfd, -w pidfd, target pidfd (exit seen without reaping) */
	int ffd;	   /* pidfd on the front */
#else
	int kq;
#endif
};

/* Portable, called by the backend's event wait. */
void sup_read_lifeline(struct sup *s);
void sup_read_front(struct sup *s);
void sup_read_control(struct sup *s);
void sup_child_event(struct sup *s, int target_exit);
int sup_relay(struct sup *s, int sig);	       /* to the target or its group; errno or 0 */
void sup_group_signal(const struct sup *s, int sig);

/* Backend. */
void sup_arm(struct sup *s);	       /* leash, signal wait; exits 1 if the parent is gone */
int sup_watch_target(struct sup *s);   /* see the target's exit without reaping; errno */
void sup_wait_events(struct sup *s, long timeout_ms); /* one wait; -1 = no timeout */
void sup_signal_tree(struct sup *s, int sig);	       /* END_TREE */
int sup_group_has_live_member(pid_t pgid);	       /* besides a zombie leader */
void sup_accept(struct sup *s);			       /* -L (Linux): takes a connection of the -w pid */
void sup_continue_front(struct sup *s);		       /* SIGCONT to the front, only if it is ours */

/* ------------------------------------------------------------------ guardian */

struct guard {
	const struct opts *o;
	pid_t target;	   /* the helper's pid: it becomes the target */
	int life;	   /* lifeline; -1 once at EOF */
	int target_exited, parent_gone;
#ifdef __linux__
	int tfd, wfd; /* pidfds of the target and of the -w pid */
#else
	int kq;
#endif
};

#define GUARD_GONE (-1) /* guard_arm: the -w pid is already gone */

/* Backend. */
int guard_arm(struct guard *g);		       /* 0, GUARD_GONE or an errno */
void guard_wait(struct guard *g, long timeout_ms); /* sets target_exited / parent_gone */
void guard_signal(struct guard *g, int sig);	       /* only while it cannot be a reused pid */

#endif /* LEASHED_HELPER_H */
