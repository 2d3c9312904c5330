/* util.c - small utilities every part of leashed-helper uses: writes that finish, decimal
 * numbers, fds of our own above stdio, the monotonic clock and its deadlines, the death
 * signal that reaches a stopped process, and exiting the way a child did.
 */
#include "helper.h"

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

int lh_streq(const char *a, const char *b) { return strlen(a) == strlen(b) && !memcmp(a, b, strlen(a)); }

/* Decimal digits only, in [lo, hi] (hi < 2^60): 0, or -1. */
int lh_parse_num(const char *s, unsigned long long lo, unsigned long long hi, unsigned long long *out)
{
	unsigned long long v = 0;
	if (!*s)
		return -1;
	for (; *s; s++) {
		if (!lh_is_digit(*s))
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
