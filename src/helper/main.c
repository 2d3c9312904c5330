/* main.c - leashed-helper's portable core: the command line (one option table), the
 * report pipe and its messages, credentials, exec with the PATH search, direct mode, and
 * main as the outline of a run.
 *
 *   leashed-helper --version
 *   leashed-helper direct|supervisor|guardian [OPTION [VALUE]]... -- PROGRAM [ARGV0 [ARG]...]
 */
#include "helper.h"

#ifndef LEASHED_VERSION
#define LEASHED_VERSION "unknown"
#endif
#ifndef LEASHED_BUILD
#define LEASHED_BUILD "libc"
#endif

#define LH_PATH_MAX 4096	  /* Linux PATH_MAX, NUL included */
#define GROUPS_MAX 65536	  /* Linux NGROUPS_MAX */
#define INT_MAX_ 2147483647ULL	  /* pids and fds */
#define ID_MAX 4294967295ULL	  /* every uid_t / gid_t, (uid_t)-1 included */
#define GRACE_MAX 86400000ULL	  /* one day, in ms */

static gid_t groups[GROUPS_MAX]; /* -X */

/* ------------------------------------------------------------------ small utilities */

void lh_put(int fd, const void *buf, size_t n)
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

static int streq(const char *a, const char *b) { return strlen(a) == strlen(b) && !memcmp(a, b, strlen(a)); }

static int is_digit(char c) { return c >= '0' && c <= '9'; }

/* Decimal digits only, in [lo, hi] (hi < 2^60): 0, or -1. */
int lh_parse_num(const char *s, unsigned long long lo, unsigned long long hi, unsigned long long *out)
{
	unsigned long long v = 0;
	if (!*s)
		return -1;
	for (; *s; s++) {
		if (!is_digit(*s))
			return -1;
		v = v * 10 + (unsigned long long)(*s - '0');
		if (v > hi)
			return -1;
	}
	if (v < lo)
		return -1;
	*out = v;
	return 0;
}

/* Our fds stay above stdio: a caller may have closed 0-2, and a message meant for stderr
 * must never land in a pipe or pidfd of ours. The low fd is closed; -1 stays -1. */
int lh_high_fd(int fd)
{
	int high, err;
	if (fd < 0 || fd > 2)
		return fd;
	high = fcntl(fd, F_DUPFD_CLOEXEC, 3);
	err = errno;
	close(fd);
	errno = err;
	return high;
}

/* A new pair of fds of ours: close-on-exec, both >= 3; on failure neither is left open. */
static int own_pair(int fds[2])
{
	int i;
	for (i = 0; i < 2; i++) {
		if (fcntl(fds[i], F_SETFD, FD_CLOEXEC) < 0 || (fds[i] = lh_high_fd(fds[i])) < 0) {
			int err = errno;
			if (fds[i] >= 0)
				close(fds[i]);
			close(fds[1 - i]);
			errno = err;
			return -1;
		}
	}
	return 0;
}

int lh_pipe(int fds[2]) { return pipe(fds) < 0 ? -1 : own_pair(fds); }

int lh_socketpair(int fds[2]) { return socketpair(AF_UNIX, SOCK_STREAM, 0, fds) < 0 ? -1 : own_pair(fds); }

/* Linux tells our own SIGPIPE by its sender; macOS: SO_NOSIGPIPE, set by the backend. */
void lh_send_quiet(int fd, const void *buf, size_t n)
{
#ifdef MSG_NOSIGNAL
	const char *p = buf;
	while (n > 0) {
		ssize_t r = send(fd, p, n, MSG_NOSIGNAL);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return;
		p += r;
		n -= (size_t)r;
	}
#else
	lh_put(fd, buf, n);
#endif
}

void lh_close_stdio(void)
{
	int fd;
	for (fd = 0; fd <= 2; fd++)
		close(fd);
}

long long lh_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

const struct timespec *lh_timeout(struct timespec *ts, long ms)
{
	if (ms < 0)
		return NULL;
	ts->tv_sec = ms / 1000;
	ts->tv_nsec = (ms % 1000) * 1000000L;
	return ts;
}

/* Nobody writes to a lifeline; what is written anyway is dropped. */
int lh_lifeline_eof(int fd)
{
	char buf[64];
	ssize_t r = read(fd, buf, sizeof buf);
	return r == 0 || (r < 0 && errno != EINTR && errno != EAGAIN);
}

int lh_lifeline_is_death(const struct opts *o) { return !o->watch; }

/* A stopped process sleeps through any signal but SIGKILL until SIGCONT, so the death
 * signal is followed by SIGCONT: the pending signal is then handled before anything else.
 * SIGCONT also goes first: if a group's leader died of the signal while another member was
 * still stopped, the kernel would find an orphaned group with a stopped member and end
 * that member by SIGHUP (POSIX), not by the signal it has a handler for. */
void lh_send_death(int sig, void (*send)(void *, int), void *ctx)
{
	int cont = sig != SIGKILL && sig != SIGCONT;

	if (cont)
		send(ctx, SIGCONT);
	send(ctx, sig);
	if (cont)
		send(ctx, SIGCONT);
}

int lh_wait_until(long long deadline, long step_ms, int (*done)(void *), void (*wait)(void *, long), void *ctx)
{
	while (!done(ctx)) {
		long long left = deadline - lh_now_ms();
		if (left <= 0)
			return 0;
		wait(ctx, step_ms > 0 && step_ms < left ? step_ms : (long)left);
	}
	return 1;
}

/* ------------------------------------------------------------------ exiting like a child */

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

_Noreturn void lh_exit_like(int status)
{
	if (WIFSIGNALED(status))
		die_by(WTERMSIG(status));
	_exit(WIFEXITED(status) ? WEXITSTATUS(status) : 1);
}

/* ------------------------------------------------------------------ failures */

/* strerror's texts for what the helper can meet; a table, as strerror is not
 * async-signal-safe and the nolibc build has none. */
static const struct {
	int err;
	const char *text;
} errtexts[] = {
	{ EPERM, "Operation not permitted" },	  { ENOENT, "No such file or directory" },
	{ ESRCH, "No such process" },		  { EINTR, "Interrupted system call" },
	{ EIO, "Input/output error" },		  { E2BIG, "Argument list too long" },
	{ ENOEXEC, "Exec format error" },	  { EBADF, "Bad file descriptor" },
	{ ECHILD, "No child processes" },	  { EAGAIN, "Resource temporarily unavailable" },
	{ ENOMEM, "Cannot allocate memory" },	  { EACCES, "Permission denied" },
	{ EFAULT, "Bad address" },		  { ENOTDIR, "Not a directory" },
	{ EISDIR, "Is a directory" },		  { EINVAL, "Invalid argument" },
	{ ENFILE, "Too many open files in system" }, { EMFILE, "Too many open files" },
	{ ETXTBSY, "Text file busy" },		  { EPIPE, "Broken pipe" },
	{ ENAMETOOLONG, "File name too long" },	  { ENOSYS, "Function not implemented" },
	{ ELOOP, "Too many levels of symbolic links" },
};

struct line {
	char buf[1024];
	size_t n;
};

static void add(struct line *l, const char *s)
{
	while (*s && l->n < sizeof l->buf - 1)
		l->buf[l->n++] = *s++;
}

static void add_errtext(struct line *l, int err)
{
	char num[16];
	size_t i = sizeof num, k;
	unsigned u = err < 0 ? 0U - (unsigned)err : (unsigned)err;

	for (k = 0; k < sizeof errtexts / sizeof errtexts[0]; k++)
		if (errtexts[k].err == err) {
			add(l, errtexts[k].text);
			return;
		}
	num[--i] = 0;
	do
		num[--i] = (char)('0' + u % 10);
	while ((u /= 10) > 0);
	add(l, "error ");
	add(l, num + i);
}

/* One line on stderr, tini's way: "leashed-helper: exec nosuch: No such file or directory",
 * or "leashed-helper: usage: unknown option -Z". One write, so lines never interleave. */
static void say(enum lh_stage stage, int err, const char *what, const char *arg)
{
	struct line l;

	l.n = 0;
	add(&l, stage == STAGE_USAGE ? "leashed-helper: usage: " : "leashed-helper: ");
	add(&l, what);
	if (arg) {
		add(&l, " ");
		add(&l, arg);
	}
	if (stage != STAGE_USAGE) {
		add(&l, ": ");
		add_errtext(&l, err);
	}
	l.buf[l.n++] = '\n';
	lh_put(2, l.buf, l.n);
}

_Noreturn void lh_fail(const struct opts *o, enum lh_stage stage, int err, const char *what, const char *arg)
{
	int32_t msg[2];

	if (o->report_fd >= 0) {
		msg[0] = (int32_t)stage;
		msg[1] = err;
		lh_put(o->report_fd, msg, sizeof msg);
	} else {
		say(stage, err, what, arg);
	}
	_exit(stage == STAGE_USAGE ? 2 : stage == STAGE_EXEC && err == ENOENT ? 127 : 126);
}

_Noreturn static void usage(const struct opts *o, const char *what, const char *arg)
{
	lh_fail(o, STAGE_USAGE, EINVAL, what, arg);
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

/* dir + "/" + prog into buf, as os.path.join(dir, prog) ("" = the cwd); 0 or -1. */
static int join_path(char *buf, size_t size, const char *dir, size_t dlen, const char *prog)
{
	size_t plen = strlen(prog), k = dlen + (dlen && dir[dlen - 1] != '/');

	if (k + plen + 1 > size)
		return -1;
	memcpy(buf, dir, dlen);
	if (k > dlen)
		buf[dlen] = '/';
	memcpy(buf + k, prog, plen + 1);
	return 0;
}

/* Executes PROGRAM as CPython's subprocess does; returns only on failure, with the errno
 * to report: the first error that is not ENOENT/ENOTDIR, else the last one.
 * Async-signal-safe: no allocation, the path is built on the stack. */
static int exec_program(const char *prog, char *const argv[])
{
	char buf[LH_PATH_MAX];
	const char *path, *p, *end;
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
		if (join_path(buf, sizeof buf, p, (size_t)(end - p), prog) < 0) {
			err = ENAMETOOLONG;
		} else {
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

_Noreturn void lh_exec_target(const struct opts *o)
{
	lh_fail(o, STAGE_EXEC, exec_program(o->prog, o->argv), "exec", o->prog);
}

/* ------------------------------------------------------------------ credentials */

/* The user=, group=, extra_groups= of subprocess, in its order and with its calls. Done
 * here, not by the caller's child, so that the helper is executed with the caller's rights
 * (it may live in a directory the new user cannot reach) and the leash is armed after the
 * change, which would otherwise clear the parent-death signal. */
void lh_change_credentials(const struct opts *o)
{
	if (o->groups_given && setgroups(o->ngroups, groups) < 0)
		lh_fail(o, STAGE_CREDENTIALS, errno, "setgroups", NULL);
	if (o->gid_given && setregid(o->gid, o->gid) < 0)
		lh_fail(o, STAGE_CREDENTIALS, errno, "setregid", NULL);
	if (o->uid_given && setreuid(o->uid, o->uid) < 0)
		lh_fail(o, STAGE_CREDENTIALS, errno, "setreuid", NULL);
}

/* ------------------------------------------------------------------ command line */

enum kind { FLAG, NUMBER, LIST };

#define ALL_MODES (MODE_DIRECT | MODE_SUPERVISOR | MODE_GUARDIAN)
#define WATCHERS (MODE_SUPERVISOR | MODE_GUARDIAN)

/* Every option: one argv element "-x", then its value (but for flags) as the next one.
 * docs/helper-protocol.md has the same table in words. */
static const struct option_spec {
	char letter;
	unsigned char modes; /* enum lh_mode bits */
	unsigned char kind;
	unsigned long long min, max; /* NUMBER; LIST: each entry */
} option_specs[] = {
	{ 'p', ALL_MODES, NUMBER, 1, INT_MAX_ },	    /* the parent's pid */
	{ 's', ALL_MODES, NUMBER, 1, NSIG - 1 },	    /* death signal */
	{ 'r', ALL_MODES, NUMBER, 0, INT_MAX_ },	    /* report pipe fd */
	{ 'U', ALL_MODES, NUMBER, 0, ID_MAX },		    /* setreuid */
	{ 'G', ALL_MODES, NUMBER, 0, ID_MAX },		    /* setregid */
	{ 'X', ALL_MODES, LIST, 0, ID_MAX },		    /* setgroups */
	{ 'g', WATCHERS, NUMBER, 0, GRACE_MAX },	    /* grace, ms */
	{ 'l', WATCHERS, NUMBER, 0, INT_MAX_ },		    /* lifeline fd */
	{ 'w', WATCHERS, NUMBER, 1, INT_MAX_ },		    /* watched pid */
	{ 'c', MODE_SUPERVISOR, NUMBER, 0, INT_MAX_ },	    /* control socket fd */
	{ 'L', MODE_SUPERVISOR, NUMBER, 0, INT_MAX_ },	    /* listening control socket fd (Linux) */
	{ 't', MODE_SUPERVISOR, FLAG, 0, 0 },		    /* whole tree */
	{ 'k', MODE_SUPERVISOR, FLAG, 0, 0 },		    /* keep leftovers (with -t) */
	{ 'P', MODE_SUPERVISOR, FLAG, 0, 0 },		    /* process-group strategy */
};

static const struct option_spec *find_option(const char *arg)
{
	size_t i;
	if (arg[0] != '-' || !arg[1] || arg[2])
		return NULL;
	for (i = 0; i < sizeof option_specs / sizeof option_specs[0]; i++)
		if (option_specs[i].letter == arg[1])
			return &option_specs[i];
	return NULL;
}

/* The report pipe is found before anything else is parsed, so that even a usage error
 * reaches it, and never looks like "the target ran and exited 2". */
static void find_report_fd(int argc, char **argv, struct opts *o)
{
	unsigned long long v;
	int i;

	for (i = 1; i + 1 < argc && !streq(argv[i], "--"); i++) {
		const struct option_spec *spec = find_option(argv[i]);
		if (!spec || spec->kind == FLAG)
			continue;
		if (spec->letter == 'r' && lh_parse_num(argv[i + 1], spec->min, spec->max, &v) == 0 &&
		    fcntl((int)v, F_SETFD, FD_CLOEXEC) == 0) /* never to reach the target */
			o->report_fd = (int)v;
		i++;
	}
}

/* -X "g1,g2,...": the supplementary groups; "" means none. */
static void parse_list(struct opts *o, const struct option_spec *spec, const char *opt, const char *list)
{
	const char *p = list;
	unsigned long long v;

	o->ngroups = 0;
	o->groups_given = 1;
	while (*p) {
		if (o->ngroups >= GROUPS_MAX || !is_digit(*p))
			usage(o, "bad value for", opt);
		for (v = 0; is_digit(*p); p++)
			if ((v = v * 10 + (unsigned long long)(*p - '0')) > spec->max)
				usage(o, "bad value for", opt);
		if (v < spec->min)
			usage(o, "bad value for", opt);
		groups[o->ngroups++] = (gid_t)v;
		if (*p == ',' && is_digit(p[1]))
			p++;
		else if (*p)
			usage(o, "bad value for", opt);
	}
}

static void store(struct opts *o, char letter, unsigned long long v)
{
	switch (letter) {
	case 'p': o->ppid = (pid_t)v; break;
	case 's': o->sig = (int)v; break;
	case 'g': o->grace_ms = (long)v; break;
	case 'l': o->life_fd = (int)v; break;
	case 'c': o->ctl_fd = (int)v; break;
	case 'L': o->listen_fd = (int)v; break;
	case 'w': o->watch = (pid_t)v; break;
	case 't': o->tree = 1; break;
	case 'k': o->keep = 1; break;
	case 'P': o->group = 1; break;
	case 'U': o->uid = (uid_t)v; o->uid_given = 1; break;
	case 'G': o->gid = (gid_t)v; o->gid_given = 1; break;
	default: /* 'r': taken by find_report_fd if it is open */
		if (o->report_fd != (int)v)
			lh_fail(o, STAGE_SETUP, EBADF, "-r", NULL);
	}
}

/* The option at argv[i] (and its value); returns the index of the last element used. */
static int parse_option(int argc, char **argv, int i, struct opts *o)
{
	const struct option_spec *spec = find_option(argv[i]);
	unsigned long long v;

	if (!spec)
		usage(o, "unknown option", argv[i]);
	if (!(spec->modes & o->mode))
		usage(o, "option not valid in this mode:", argv[i]);
	if (spec->kind == FLAG) {
		store(o, spec->letter, 1);
		return i;
	}
	if (i + 1 >= argc)
		usage(o, "missing value for", argv[i]);
	if (spec->kind == LIST)
		parse_list(o, spec, argv[i], argv[i + 1]);
	else if (lh_parse_num(argv[i + 1], spec->min, spec->max, &v) == 0)
		store(o, spec->letter, v);
	else
		usage(o, "bad value for", argv[i]);
	return i + 1;
}

static enum lh_mode parse_mode(int argc, char **argv, const struct opts *o)
{
	if (argc < 2)
		usage(o, "leashed-helper direct|supervisor|guardian [OPTION [VALUE]]... -- PROGRAM",
		      "[ARGV0 [ARG]...]");
	if (streq(argv[1], "direct"))
		return MODE_DIRECT;
	if (streq(argv[1], "supervisor"))
		return MODE_SUPERVISOR;
	if (streq(argv[1], "guardian"))
		return MODE_GUARDIAN;
	usage(o, "unknown mode", argv[1]);
}

static void parse_args(int argc, char **argv, struct opts *o)
{
	int i;

	o->mode = parse_mode(argc, argv, o);
	for (i = 2; i < argc && !streq(argv[i], "--"); i++)
		i = parse_option(argc, argv, i, o);
	if (i >= argc)
		usage(o, "missing", "--");
	if (i + 1 >= argc)
		usage(o, "missing PROGRAM after", "--");
	o->prog = argv[i + 1];
	o->argv = argv + i + 2; /* may be empty, as for Popen([], executable=X) */
#ifndef __linux__
	o->group = o->mode == MODE_SUPERVISOR; /* no sender info from kqueue: see the protocol */
#endif
	if (o->keep && !o->tree)
		usage(o, "-k needs", "-t");
	if (o->listen_fd >= 0 && o->ctl_fd >= 0)
		usage(o, "-L excludes", "-c");
	if (o->listen_fd >= 0 && !o->watch) /* only the -w process is answered */
		usage(o, "-L needs", "-w");
#ifndef __linux__
	if (o->listen_fd >= 0) /* the peer's pid: SO_PEERCRED */
		usage(o, "option not valid on this system:", "-L");
#endif
#ifndef __FreeBSD__
	if (o->keep && o->group) /* the leftovers are kept by a subreaper: Linux, FreeBSD */
		usage(o, "-k needs a subreaper, not the process-group strategy", NULL);
#endif
}

static void init_opts(struct opts *o)
{
	memset(o, 0, sizeof *o);
	o->sig = SIGKILL;
	o->grace_ms = -1;
	o->report_fd = o->life_fd = o->ctl_fd = o->listen_fd = o->watch_fd = -1;
}

/* A caller's fd we keep: it must never reach the target. */
static void own_fd(const struct opts *o, int fd, const char *opt)
{
	if (fd >= 0 && fcntl(fd, F_SETFD, FD_CLOEXEC) < 0)
		lh_fail(o, STAGE_SETUP, errno, opt, NULL);
}

/* ------------------------------------------------------------------ direct mode */

/* Arm the parent-death signal, recheck the parent, become the target (same pid). */
_Noreturn static void run_direct(const struct opts *o)
{
	int armed;

	lh_change_credentials(o); /* a change of credentials would clear the leash */
	armed = lh_arm_pdeathsig(o->sig, NULL);
	if (armed <= 0) /* 0: no parent-death signal on this OS; the caller uses the guardian */
		lh_fail(o, STAGE_ARM, armed < 0 ? errno : ENOSYS, "arm the leash", NULL);
	if (o->ppid && getppid() != o->ppid)
		_exit(1); /* the parent died before the leash was armed */
	lh_exec_target(o);
}

/* ------------------------------------------------------------------ main */

int main(int argc, char **argv)
{
	struct opts o;

	if (argc == 2 && streq(argv[1], "--version")) {
		static const char version[] = "leashed-helper " LEASHED_VERSION " " LEASHED_BUILD "\n";
		lh_put(1, version, sizeof version - 1);
		return 0;
	}
	init_opts(&o);
	find_report_fd(argc, argv, &o);
	parse_args(argc, argv, &o);
	own_fd(&o, o.life_fd, "-l");
	own_fd(&o, o.ctl_fd, "-c");
	own_fd(&o, o.listen_fd, "-L");
	if (o.mode == MODE_DIRECT)
		run_direct(&o);
	if (o.mode == MODE_SUPERVISOR)
		lh_run_supervisor(&o);
	lh_run_guardian(&o);
}
