/* leashed._inproc, Linux backend: vfork (fork where vfork is refused), the child's steps as
 * _posixsubprocess does them plus the leash (PR_SET_PDEATHSIG after any credential change,
 * a getppid() recheck, an optional cgroup join), then execve in place.
 *
 * Between vfork and exec only async-signal-safe calls; credentials through raw system
 * calls (glibc's set*id() would signal every thread of the process, whose memory a vfork
 * child shares). Forks for threads other than the main one run on long-lived spawner
 * threads: PR_SET_PDEATHSIG fires when the forking *thread* exits. */
#include "inproc.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <semaphore.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

/* ------------------------------------------------------------------ the child */

static void put(int fd, const char *s, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, s, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return;
		s += w;
		n -= (size_t)w;
	}
}

/* The stdlib's error-pipe record: "OSError:<hex errno>:<marker>". */
__attribute__((noreturn)) static void report(int fd, int err, const char *marker)
{
	char hex[sizeof(int) * 2], *cur = hex + sizeof hex;
	unsigned e = (unsigned)err;
	put(fd, "OSError:", 8);
	while (e != 0 && cur != hex) {
		*--cur = "0123456789abcdef"[e % 16];
		e /= 16;
	}
	put(fd, cur, (size_t)(hex + sizeof hex - cur));
	put(fd, ":", 1);
	put(fd, marker, strlen(marker));
	_exit(255);
}

static int set_inheritable(int fd, int inheritable)
{
	int flags = fcntl(fd, F_GETFD);
	if (flags < 0)
		return -1;
	int want = inheritable ? (flags & ~FD_CLOEXEC) : (flags | FD_CLOEXEC);
	return want == flags ? 0 : fcntl(fd, F_SETFD, want);
}

/* fd onto target (0, 1, 2); an fd already there just loses close-on-exec. */
static int move_fd(int fd, int target)
{
	if (fd == -1)
		return 0;
	if (fd == target)
		return set_inheritable(fd, 1);
	return dup2(fd, target) < 0 ? -1 : 0;
}

/* The parent's pipe ends closed, the child's ends on 0, 1, 2 (CPython's order: an fd
 * already at 0 or 1 is first moved out of the way, bpo-12607). */
static int setup_fds(const struct spawn_job *j)
{
	for (int i = 0; i < j->nkeep; i++)
		if (j->keep[i] != j->errpipe_write && set_inheritable(j->keep[i], 1) < 0)
			return -1;
	const int parent_ends[] = {j->p2cwrite, j->c2pread, j->errread, j->errpipe_read};
	for (size_t i = 0; i < sizeof parent_ends / sizeof parent_ends[0]; i++)
		if (parent_ends[i] != -1 && close(parent_ends[i]) < 0)
			return -1;
	int c2pwrite = j->c2pwrite, errwrite = j->errwrite;
	if (c2pwrite == 0) {
		if ((c2pwrite = dup(c2pwrite)) < 0 || set_inheritable(c2pwrite, 0) < 0)
			return -1;
	}
	while (errwrite == 0 || errwrite == 1) {
		if ((errwrite = dup(errwrite)) < 0 || set_inheritable(errwrite, 0) < 0)
			return -1;
	}
	if (move_fd(j->p2cread, 0) < 0 || move_fd(c2pwrite, 1) < 0 || move_fd(errwrite, 2) < 0)
		return -1;
	return 0;
}

/* Handlers back to SIG_DFL for every signal the target may receive (CPython's
 * reset_signal_handlers); a blocked signal keeps its disposition until exec resets it. */
static void reset_handlers(const sigset_t *child_mask)
{
	struct sigaction dfl;
	memset(&dfl, 0, sizeof dfl);
	dfl.sa_handler = SIG_DFL;
	for (int sig = 1; sig < _NSIG; sig++) {
		struct sigaction sa;
		if (sig == SIGKILL || sig == SIGSTOP || sigismember(child_mask, sig) == 1)
			continue;
		if (sigaction(sig, NULL, &sa) < 0) /* the C library's own signals: EINVAL */
			continue;
		/* sa_handler and sa_sigaction share their storage: either reads the handler */
		if (sa.sa_handler != SIG_IGN && sa.sa_handler != SIG_DFL)
			(void)sigaction(sig, &dfl, NULL);
	}
}

static void restore_default(int sig)
{
	struct sigaction dfl;
	memset(&dfl, 0, sizeof dfl);
	dfl.sa_handler = SIG_DFL;
	(void)sigaction(sig, &dfl, NULL);
}

#if defined(SYS_setreuid32)
#define NR_SETGROUPS SYS_setgroups32
#define NR_SETREGID SYS_setregid32
#define NR_SETREUID SYS_setreuid32
#else
#define NR_SETGROUPS SYS_setgroups
#define NR_SETREGID SYS_setregid
#define NR_SETREUID SYS_setreuid
#endif

/* Groups, gid, uid through raw system calls: this thread only, no SIGSETXID. */
static int change_credentials(const struct spawn_job *j)
{
	if (j->ngroups >= 0 && syscall(NR_SETGROUPS, (size_t)j->ngroups, j->groups) < 0)
		return -1;
	if (j->has_gid && syscall(NR_SETREGID, j->gid, j->gid) < 0)
		return -1;
	if (j->has_uid && syscall(NR_SETREUID, j->uid, j->uid) < 0)
		return -1;
	return 0;
}

/* Join the cgroup, then arm the leash (after the credentials: a change clears it) and
 * check that the parent did not die before it was armed. */
static int leash(const struct spawn_job *j)
{
	if (j->cgroup_fd >= 0) {
		ssize_t w;
		do
			w = write(j->cgroup_fd, "0", 1);
		while (w < 0 && errno == EINTR);
		if (w < 0)
			return -1;
	}
	if (j->death_signal > 0) {
		if (prctl(PR_SET_PDEATHSIG, (unsigned long)j->death_signal, 0, 0, 0) < 0)
			return -1;
		if (getppid() != j->parent_pid)
			_exit(1); /* the parent is gone: nobody reads the error pipe */
	}
	return 0;
}

static void close_range_above(unsigned first, unsigned last)
{
	if (first > last)
		return;
	if (syscall(SYS_close_range, first, last, 0) == 0)
		return;
	struct rlimit rl; /* close_range is Linux 5.9+: close one by one below the limit */
	unsigned top = getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < 65536 ? (unsigned)rl.rlim_cur : 65536;
	for (unsigned fd = first; fd <= last && fd < top; fd++)
		(void)close((int)fd);
}

/* Every fd from 3 up but those kept (the error pipe's write end is among them). */
static void close_fds(const struct spawn_job *j)
{
	unsigned start = 3;
	for (int i = 0; i < j->nkeep; i++) {
		unsigned fd = (unsigned)j->keep[i];
		if (fd < start)
			continue;
		if (fd > start)
			close_range_above(start, fd - 1);
		start = fd + 1;
	}
	close_range_above(start, ~0U);
}

__attribute__((noreturn)) static void exec_target(const struct spawn_job *j)
{
	int first = 0;
	char *const *envp = j->envp ? j->envp : environ;
	for (int i = 0; j->exec_array[i] != NULL; i++) {
		execve(j->exec_array[i], j->argv, envp);
		if (errno != ENOENT && errno != ENOTDIR && first == 0)
			first = errno;
	}
	report(j->errpipe_write, first ? first : errno, "");
}

/* The child's steps, in _posixsubprocess's order, the leash after the credentials. */
__attribute__((noinline, noreturn)) static void child(const struct spawn_job *j)
{
	if (setup_fds(j) < 0)
		report(j->errpipe_write, errno, "noexec");
	if (j->cwd && chdir(j->cwd) < 0)
		report(j->errpipe_write, errno, j->chdir_marker == CHDIR_MARK_SPLIT ? "noexec:chdir" : "noexec");
	if (j->child_umask >= 0)
		umask((mode_t)j->child_umask);
	if (j->restore_signals) {
		restore_default(SIGPIPE);
		restore_default(SIGXFSZ);
	}
	reset_handlers(&j->child_mask);
	if ((errno = pthread_sigmask(SIG_SETMASK, &j->child_mask, NULL)) != 0)
		report(j->errpipe_write, errno, "noexec");
	if (j->call_setsid && setsid() < 0)
		report(j->errpipe_write, errno, "noexec");
	if (j->pgid_to_set >= 0 && setpgid(0, j->pgid_to_set) < 0)
		report(j->errpipe_write, errno, "noexec");
	if (change_credentials(j) < 0 || leash(j) < 0)
		report(j->errpipe_write, errno, "noexec");
	if (j->close_fds)
		close_fds(j);
	exec_target(j);
}

/* Fork j's child from this thread (all signals blocked by the caller). */
__attribute__((noinline)) static void fork_child(struct spawn_job *j)
{
	pid_t pid = -1;
	if (j->allow_vfork) {
		pid = vfork();
		if (pid == 0)
			child(j);
	}
	if (pid < 0 && (!j->allow_vfork || errno == ENOSYS || errno == EPERM || errno == EINVAL)) {
		pid = fork(); /* vfork refused (a seccomp filter), or not allowed */
		if (pid == 0)
			child(j);
	}
	j->pid = pid;
	j->err = pid < 0 ? errno : 0;
}

/* ------------------------------------------------------------------ spawner threads */

/* A spawner stuck behind a child that hangs before exec is replaced after this long. */
#define STALL_NS 100000000L
#define SPAWNERS_MAX 64

struct handoff {
	struct spawn_job *job;
	sem_t done;
	int taken;
	struct handoff *next;
};

static pthread_mutex_t q_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t q_cond = PTHREAD_COND_INITIALIZER;
static struct handoff *q_head, *q_tail;
static int spawners, idle, spawners_first = 4; /* measured: benchmarks/results/spawners.md */

static void *spawner_main(void *unused)
{
	(void)unused;
	pthread_mutex_lock(&q_lock);
	for (;;) {
		idle++;
		while (q_head == NULL)
			pthread_cond_wait(&q_cond, &q_lock);
		idle--;
		struct handoff *h = q_head;
		q_head = h->next;
		if (q_head == NULL)
			q_tail = NULL;
		h->taken = 1;
		pthread_mutex_unlock(&q_lock);
		fork_child(h->job); /* this thread blocks every signal: none runs in the child */
		sem_post(&h->done); /* h belongs to its caller from here on */
		pthread_mutex_lock(&q_lock);
	}
	return NULL;
}

/* n more spawner threads, with every signal blocked (q_lock held). 0 or an errno. */
static int start_spawners(int n)
{
	sigset_t all, old;
	pthread_attr_t attr;
	int err = 0;
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	pthread_attr_setstacksize(&attr, 256 * 1024);
	for (int i = 0; i < n && spawners < SPAWNERS_MAX; i++) {
		pthread_t t;
		if ((err = pthread_create(&t, &attr, spawner_main, NULL)) != 0)
			break;
		spawners++;
	}
	pthread_attr_destroy(&attr);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return spawners > 0 ? 0 : err;
}

static void deadline_after(struct timespec *ts, long ns)
{
	clock_gettime(CLOCK_REALTIME, ts);
	ts->tv_nsec += ns;
	ts->tv_sec += ts->tv_nsec / 1000000000L;
	ts->tv_nsec %= 1000000000L;
}

/* Wait for h; while it is still queued with no spawner idle (each stuck behind a child
 * that has not exec'd yet), add a spawner, so no spawn waits behind a hung child. */
static void wait_handoff(struct handoff *h)
{
	for (;;) {
		struct timespec ts;
		deadline_after(&ts, STALL_NS);
		if (sem_timedwait(&h->done, &ts) == 0)
			return;
		if (errno == EINTR)
			continue;
		pthread_mutex_lock(&q_lock);
		if (!h->taken && idle == 0)
			(void)start_spawners(1);
		pthread_mutex_unlock(&q_lock);
	}
}

static int hand_off(struct spawn_job *j)
{
	struct handoff h = {.job = j, .taken = 0, .next = NULL};
	int err;
	if (sem_init(&h.done, 0, 0) < 0)
		return errno;
	pthread_mutex_lock(&q_lock);
	err = spawners == 0 ? start_spawners(spawners_first) : 0;
	if (err == 0) {
		if (q_tail)
			q_tail->next = &h;
		else
			q_head = &h;
		q_tail = &h;
		pthread_cond_signal(&q_cond);
	}
	pthread_mutex_unlock(&q_lock);
	if (err == 0)
		wait_handoff(&h);
	sem_destroy(&h.done);
	return err;
}

int backend_spawn(struct spawn_job *j, int on_caller)
{
	int err;
	j->parent_pid = getpid();
	j->pid = -1;
	j->err = 0;
	if (!on_caller) {
		if ((err = pthread_sigmask(SIG_BLOCK, NULL, &j->child_mask)) != 0)
			return err;
		if ((err = hand_off(j)) != 0)
			return err;
		return j->err;
	}
	sigset_t all;
	sigfillset(&all);
	if ((err = pthread_sigmask(SIG_BLOCK, &all, &j->child_mask)) != 0)
		return err;
	fork_child(j);
	pthread_sigmask(SIG_SETMASK, &j->child_mask, NULL);
	return j->err;
}

/* In the child of os.fork(): only the forking thread exists; spawners start afresh. */
static void forget_spawners(void)
{
	pthread_mutex_init(&q_lock, NULL);
	pthread_cond_init(&q_cond, NULL);
	q_head = q_tail = NULL;
	spawners = idle = 0;
}

int backend_init(void)
{
	return pthread_atfork(NULL, NULL, forget_spawners);
}

int backend_spawner_count(void)
{
	pthread_mutex_lock(&q_lock);
	int n = spawners;
	pthread_mutex_unlock(&q_lock);
	return n;
}

int backend_set_spawners(int n)
{
	if (n < 1 || n > SPAWNERS_MAX)
		return EINVAL;
	pthread_mutex_lock(&q_lock);
	spawners_first = n;
	int err = spawners < n ? start_spawners(n - spawners) : 0;
	pthread_mutex_unlock(&q_lock);
	return err;
}
