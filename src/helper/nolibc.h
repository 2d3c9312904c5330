/* nolibc.h - the system interface of leashed-helper.
 *
 * With LEASHED_NOLIBC (Linux x86_64 / aarch64): no C library at all. A leashed spawn pays
 * for the helper's start-up on every call, and the dynamic loader or even glibc's static
 * start-up cost more than the execve itself. So this header provides _start, raw system
 * calls and exactly the libc-named functions the helper uses, with libc semantics (-1 and
 * errno on failure). Only the values that are the same on x86_64 and aarch64 are defined.
 *
 * Without it: the system C library, plus the few Linux calls libc may lack (lh_*).
 * The nolibc definitions that must exist once (errno, environ, _start, mem*) live in
 * nolibc.c.
 */
#ifndef LEASHED_NOLIBC_H
#define LEASHED_NOLIBC_H

#ifndef LEASHED_NOLIBC
/* ------------------------------------------------------------------ hosted build */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/resource.h>
#include <sys/stat.h> /* the cgroup watcher's mkdir */
#include <sys/socket.h> /* the front's socket; send(MSG_NOSIGNAL), SO_NOSIGPIPE */
#include <sys/types.h>
#include <sys/wait.h>
#include <grp.h>

extern char **environ;
#ifndef NSIG
#define NSIG 32
#endif

#ifdef __linux__
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/syscall.h>
#ifndef SYS_pidfd_send_signal
#define SYS_pidfd_send_signal 424
#endif
#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_close_range
#define SYS_close_range 436
#endif
struct lh_dirent64 {
	uint64_t d_ino;
	int64_t d_off;
	unsigned short d_reclen;
	unsigned char d_type;
	char d_name[];
};
static inline int lh_pidfd_open(pid_t pid) { return (int)syscall(SYS_pidfd_open, pid, 0); }
static inline int lh_pidfd_send_signal(int pidfd, int sig)
{
	return (int)syscall(SYS_pidfd_send_signal, pidfd, sig, NULL, 0);
}
static inline int lh_close_range(unsigned int lo, unsigned int hi)
{
	return (int)syscall(SYS_close_range, lo, hi, 0);
}
static inline long lh_getdents64(int fd, void *buf, size_t len)
{
	return syscall(SYS_getdents64, fd, buf, len);
}
#endif /* __linux__ */

#else /* LEASHED_NOLIBC */
/* ------------------------------------------------------------------ no C library */
#include <stddef.h>
#include <stdint.h>

typedef int pid_t;
typedef unsigned int uid_t;
typedef unsigned int gid_t;
typedef long ssize_t;
typedef unsigned long sigset_t; /* the kernel's 64-bit mask for the rt_* calls */

extern int errno;
extern char **environ;
int main(int argc, char **argv);

/* Linux system call numbers: x86_64, then the generic table used by aarch64. */
#if defined(__x86_64__)
enum {
	NR_read = 0, NR_write = 1, NR_close = 3, NR_rt_sigaction = 13, NR_rt_sigprocmask = 14,
	NR_getpid = 39, NR_clone = 56, NR_execve = 59, NR_wait4 = 61, NR_kill = 62, NR_fcntl = 72,
	NR_chdir = 80, NR_getppid = 110, NR_setsid = 112, NR_prctl = 157, NR_getdents64 = 217,
	NR_clock_gettime = 228, NR_exit_group = 231, NR_openat = 257, NR_ppoll = 271,
	NR_signalfd4 = 289, NR_dup3 = 292, NR_pipe2 = 293, NR_prlimit64 = 302,
	NR_setreuid = 113, NR_setregid = 114, NR_setgroups = 116, NR_setpgid = 109, NR_waitid = 247,
	NR_getpgid = 121, NR_rt_sigtimedwait = 128, NR_socketpair = 53, NR_accept4 = 288,
	NR_getsockopt = 55, NR_lseek = 8, NR_unlinkat = 263, NR_mkdirat = 258,
};
#elif defined(__aarch64__)
enum {
	NR_read = 63, NR_write = 64, NR_close = 57, NR_rt_sigaction = 134, NR_rt_sigprocmask = 135,
	NR_getpid = 172, NR_clone = 220, NR_execve = 221, NR_wait4 = 260, NR_kill = 129, NR_fcntl = 25,
	NR_chdir = 49, NR_getppid = 173, NR_setsid = 157, NR_prctl = 167, NR_getdents64 = 61,
	NR_clock_gettime = 113, NR_exit_group = 94, NR_openat = 56, NR_ppoll = 73,
	NR_signalfd4 = 74, NR_dup3 = 24, NR_pipe2 = 59, NR_prlimit64 = 261,
	NR_setreuid = 145, NR_setregid = 143, NR_setgroups = 159, NR_setpgid = 154, NR_waitid = 95,
	NR_getpgid = 155, NR_rt_sigtimedwait = 137, NR_socketpair = 199, NR_accept4 = 242,
	NR_getsockopt = 209, NR_lseek = 62, NR_unlinkat = 35, NR_mkdirat = 34,
};
#else
#error "LEASHED_NOLIBC supports x86_64 and aarch64 only"
#endif
enum { NR_pidfd_send_signal = 424, NR_pidfd_open = 434, NR_close_range = 436 };

#if defined(__x86_64__)
static inline long lh_syscall6(long n, long a, long b, long c, long d, long e, long f)
{
	register long rax __asm__("rax") = n;
	register long rdi __asm__("rdi") = a;
	register long rsi __asm__("rsi") = b;
	register long rdx __asm__("rdx") = c;
	register long r10 __asm__("r10") = d;
	register long r8 __asm__("r8") = e;
	register long r9 __asm__("r9") = f;
	__asm__ volatile("syscall"
			 : "+r"(rax)
			 : "r"(rdi), "r"(rsi), "r"(rdx), "r"(r10), "r"(r8), "r"(r9)
			 : "rcx", "r11", "memory");
	return rax;
}
#else
static inline long lh_syscall6(long n, long a, long b, long c, long d, long e, long f)
{
	register long x8 __asm__("x8") = n;
	register long x0 __asm__("x0") = a;
	register long x1 __asm__("x1") = b;
	register long x2 __asm__("x2") = c;
	register long x3 __asm__("x3") = d;
	register long x4 __asm__("x4") = e;
	register long x5 __asm__("x5") = f;
	__asm__ volatile("svc #0"
			 : "+r"(x0)
			 : "r"(x8), "r"(x1), "r"(x2), "r"(x3), "r"(x4), "r"(x5)
			 : "memory");
	return x0;
}
#endif

#define lh_syscall0(n) lh_syscall6((n), 0, 0, 0, 0, 0, 0)
#define lh_syscall1(n, a) lh_syscall6((n), (long)(a), 0, 0, 0, 0, 0)
#define lh_syscall2(n, a, b) lh_syscall6((n), (long)(a), (long)(b), 0, 0, 0, 0)
#define lh_syscall3(n, a, b, c) lh_syscall6((n), (long)(a), (long)(b), (long)(c), 0, 0, 0)
#define lh_syscall4(n, a, b, c, d) lh_syscall6((n), (long)(a), (long)(b), (long)(c), (long)(d), 0, 0)
#define lh_syscall5(n, a, b, c, d, e) \
	lh_syscall6((n), (long)(a), (long)(b), (long)(c), (long)(d), (long)(e), 0)

/* The kernel returns -errno in [-4095, -1]. */
static inline long lh_ret(long r)
{
	if ((unsigned long)r > (unsigned long)-4096L) {
		errno = (int)-r;
		return -1;
	}
	return r;
}

/* constants (identical on x86_64 and aarch64) */
#define EPERM 1
#define ENOENT 2
#define ESRCH 3
#define EINTR 4
#define EIO 5
#define E2BIG 7
#define ENOEXEC 8
#define EBADF 9
#define ECHILD 10
#define EAGAIN 11
#define ENOMEM 12
#define EACCES 13
#define EFAULT 14
#define ENOTDIR 20
#define EISDIR 21
#define EINVAL 22
#define ENFILE 23
#define EMFILE 24
#define ETXTBSY 26
#define EPIPE 32
#define ENAMETOOLONG 36
#define ENOSYS 38
#define ELOOP 40

#define O_RDONLY 0
#define O_RDWR 2
#define O_CLOEXEC 02000000
#define O_NOCTTY 0400
#define AT_FDCWD (-100)
#define O_NONBLOCK 04000
#define O_WRONLY 1
#define EEXIST 17
#define O_DIRECTORY 0200000
#define AT_REMOVEDIR 0x200
#define SEEK_SET 0
#define POLLPRI 0x002
#define RLIMIT_NOFILE 7
#define F_GETFD 1
#define F_SETFD 2
#define F_GETFL 3
#define F_SETFL 4
#define F_SETOWN 8
#define O_ASYNC 020000
#define AF_UNIX 1
#define SOCK_STREAM 1
#define SOCK_CLOEXEC O_CLOEXEC
#define SOL_SOCKET 1
#define SO_PEERCRED 17
#define F_DUPFD_CLOEXEC 1030
#define FD_CLOEXEC 1

#define SIGHUP 1
#define SIGINT 2
#define SIGQUIT 3
#define SIGKILL 9
#define SIGUSR1 10
#define SIGUSR2 12
#define SIGPIPE 13
#define SIGALRM 14
#define SIGTERM 15
#define SIGCHLD 17
#define SIGIO 29
#define SIGCONT 18
#define SIGSTOP 19
#define SIGTSTP 20
#define SIGTTIN 21
#define SIGTTOU 22
#define SIGWINCH 28
#define NSIG 65
#define SIG_BLOCK 0
#define SIG_UNBLOCK 1
#define SIG_SETMASK 2
#define SIG_DFL ((void (*)(int))0)
#define SIG_IGN ((void (*)(int))1)
#define SI_USER 0
#define SI_QUEUE (-1)
#define SI_TKILL (-6)
#define SFD_CLOEXEC O_CLOEXEC
#define SFD_NONBLOCK O_NONBLOCK

#define POLLIN 0x001
#define POLLERR 0x008
#define POLLHUP 0x010
#define POLLNVAL 0x020

#define WNOHANG 1
#define WSTOPPED 2
#define WCONTINUED 8
#define P_PID 1
#define CLD_STOPPED 5
#define CLD_CONTINUED 6
#define WIFEXITED(s) (((s) & 0x7f) == 0)
#define WEXITSTATUS(s) (((s) >> 8) & 0xff)
#define WIFSIGNALED(s) (((s) & 0x7f) != 0 && ((s) & 0x7f) != 0x7f)
#define WTERMSIG(s) ((s) & 0x7f)

#define PR_SET_PDEATHSIG 1
#define PR_GET_PDEATHSIG 2
#define PR_SET_DUMPABLE 4
#define PR_SET_CHILD_SUBREAPER 36
#define RLIMIT_CORE 4
#define CLOCK_MONOTONIC 1

struct timespec {
	long tv_sec;
	long tv_nsec;
};
struct pollfd {
	int fd;
	short events;
	short revents;
};
struct rlimit {
	unsigned long rlim_cur;
	unsigned long rlim_max;
};
struct sigaction { /* the kernel's layout, for rt_sigaction */
	void (*sa_handler)(int);
	unsigned long sa_flags;
	void (*sa_restorer)(void);
	sigset_t sa_mask;
};
struct signalfd_siginfo {
	uint32_t ssi_signo;
	int32_t ssi_errno;
	int32_t ssi_code;
	uint32_t ssi_pid;
	uint32_t ssi_uid;
	uint8_t pad_[108]; /* the rest of the 128-byte record: unused here */
};
typedef struct { /* the kernel's 128-byte siginfo on 64-bit, as waitid fills it */
	int32_t si_signo;
	int32_t si_errno;
	int32_t si_code;
	int32_t pad0_;
	int32_t si_pid;
	uint32_t si_uid;
	int32_t si_status;
	uint8_t pad_[100];
} siginfo_t;
typedef unsigned int socklen_t;
struct sockaddr {
	unsigned short sa_family;
	char sa_data[14];
};
struct ucred {
	pid_t pid;
	uid_t uid;
	gid_t gid;
};
struct lh_dirent64 {
	uint64_t d_ino;
	int64_t d_off;
	unsigned short d_reclen;
	unsigned char d_type;
	char d_name[];
};

/* signal sets */
static inline int sigemptyset(sigset_t *s) { *s = 0; return 0; }
static inline int sigaddset(sigset_t *s, int sig) { *s |= 1UL << (sig - 1); return 0; }
static inline int sigdelset(sigset_t *s, int sig) { *s &= ~(1UL << (sig - 1)); return 0; }

/* system calls with libc names */
static inline ssize_t read(int fd, void *buf, size_t n) { return lh_ret(lh_syscall3(NR_read, fd, buf, n)); }
static inline ssize_t write(int fd, const void *buf, size_t n)
{
	return lh_ret(lh_syscall3(NR_write, fd, buf, n));
}
static inline int close(int fd) { return (int)lh_ret(lh_syscall1(NR_close, fd)); }
static inline int fcntl(int fd, int cmd, long arg) { return (int)lh_ret(lh_syscall3(NR_fcntl, fd, cmd, arg)); }
static inline int dup2(int old, int new_fd)
{
	if (old == new_fd) /* dup3 refuses this; dup2 checks old is open */
		return fcntl(old, 1 /* F_GETFD */, 0) < 0 ? -1 : new_fd;
	return (int)lh_ret(lh_syscall3(NR_dup3, old, new_fd, 0));
}
static inline int pipe(int fds[2]) { return (int)lh_ret(lh_syscall2(NR_pipe2, fds, 0)); }
static inline int openat(int dirfd, const char *path, int flags, int mode)
{
	return (int)lh_ret(lh_syscall4(NR_openat, dirfd, path, flags, mode));
}
static inline int open(const char *path, int flags, int mode) { return openat(AT_FDCWD, path, flags, mode); }
static inline long lh_getdents64(int fd, void *buf, size_t len)
{
	return lh_ret(lh_syscall3(NR_getdents64, fd, buf, len));
}
static inline int execve(const char *path, char *const argv[], char *const envp[])
{
	return (int)lh_ret(lh_syscall3(NR_execve, path, argv, envp));
}
__attribute__((noreturn)) static inline void _exit(int code)
{
	for (;;)
		lh_syscall1(NR_exit_group, code);
}
static inline pid_t getpid(void) { return (pid_t)lh_syscall0(NR_getpid); }
static inline pid_t getppid(void) { return (pid_t)lh_syscall0(NR_getppid); }
static inline pid_t getpgid(pid_t pid) { return (pid_t)lh_ret(lh_syscall1(NR_getpgid, pid)); }
static inline int prctl(int opt, unsigned long a, unsigned long b, unsigned long c, unsigned long d)
{
	return (int)lh_ret(lh_syscall5(NR_prctl, opt, a, b, c, d));
}
/* fork() is clone(SIGCHLD): aarch64 has no fork system call. */
static inline pid_t fork(void) { return (pid_t)lh_ret(lh_syscall5(NR_clone, SIGCHLD, 0, 0, 0, 0)); }
static inline pid_t waitpid(pid_t pid, int *status, int options)
{
	return (pid_t)lh_ret(lh_syscall4(NR_wait4, pid, status, options, 0));
}
static inline int waitid(int idtype, pid_t id, siginfo_t *info, int options)
{
	return (int)lh_ret(lh_syscall5(NR_waitid, idtype, id, info, options, 0));
}
static inline int kill(pid_t pid, int sig) { return (int)lh_ret(lh_syscall2(NR_kill, pid, sig)); }
static inline int ppoll(struct pollfd *fds, unsigned long n, const struct timespec *ts, const sigset_t *mask)
{
	return (int)lh_ret(lh_syscall5(NR_ppoll, fds, n, ts, mask, sizeof(sigset_t)));
}
static inline int sigprocmask(int how, const sigset_t *set, sigset_t *old)
{
	return (int)lh_ret(lh_syscall4(NR_rt_sigprocmask, how, set, old, sizeof(sigset_t)));
}
/* Only SIG_DFL / SIG_IGN are ever installed, so no SA_RESTORER trampoline is needed. */
static inline int sigaction(int sig, const struct sigaction *act, struct sigaction *old)
{
	return (int)lh_ret(lh_syscall4(NR_rt_sigaction, sig, act, old, sizeof(sigset_t)));
}
static inline int sigwaitinfo(const sigset_t *set, siginfo_t *info)
{
	return (int)lh_ret(lh_syscall4(NR_rt_sigtimedwait, set, info, 0, sizeof(sigset_t)));
}
static inline int socketpair(int domain, int type, int proto, int fds[2])
{
	return (int)lh_ret(lh_syscall4(NR_socketpair, domain, type, proto, fds));
}
static inline int accept4(int fd, struct sockaddr *a, socklen_t *len, int flags)
{
	return (int)lh_ret(lh_syscall4(NR_accept4, fd, a, len, flags));
}
static inline int getsockopt(int fd, int level, int name, void *val, socklen_t *len)
{
	return (int)lh_ret(lh_syscall5(NR_getsockopt, fd, level, name, val, len));
}
static inline int signalfd(int fd, const sigset_t *mask, int flags)
{
	return (int)lh_ret(lh_syscall4(NR_signalfd4, fd, mask, sizeof(sigset_t), flags));
}
static inline int lh_pidfd_open(pid_t pid) { return (int)lh_ret(lh_syscall2(NR_pidfd_open, pid, 0)); }
static inline int lh_pidfd_send_signal(int pidfd, int sig)
{
	return (int)lh_ret(lh_syscall4(NR_pidfd_send_signal, pidfd, sig, 0, 0));
}
static inline int lh_close_range(unsigned int lo, unsigned int hi)
{
	return (int)lh_ret(lh_syscall3(NR_close_range, lo, hi, 0));
}
static inline pid_t setsid(void) { return (pid_t)lh_ret(lh_syscall0(NR_setsid)); }
static inline int setpgid(pid_t pid, pid_t pgid) { return (int)lh_ret(lh_syscall2(NR_setpgid, pid, pgid)); }
/* Raw calls change only this thread's credentials; the helper has one thread. */
static inline int setgroups(size_t n, const gid_t *groups)
{
	return (int)lh_ret(lh_syscall2(NR_setgroups, n, groups));
}
static inline int setregid(gid_t r, gid_t e) { return (int)lh_ret(lh_syscall2(NR_setregid, r, e)); }
static inline int setreuid(uid_t r, uid_t e) { return (int)lh_ret(lh_syscall2(NR_setreuid, r, e)); }
/* The cgroup watcher (watcher.c): rereading cgroup.events, removing emptied cgroups. */
static inline long lseek(int fd, long off, int whence) { return lh_ret(lh_syscall3(NR_lseek, fd, off, whence)); }
static inline int mkdir(const char *path, int mode)
{
	return (int)lh_ret(lh_syscall3(NR_mkdirat, AT_FDCWD, path, mode));
}
static inline int unlinkat(int dirfd, const char *path, int flags)
{
	return (int)lh_ret(lh_syscall3(NR_unlinkat, dirfd, path, flags));
}
static inline int chdir(const char *path) { return (int)lh_ret(lh_syscall1(NR_chdir, path)); }
static inline int setrlimit(int res, const struct rlimit *rl)
{
	return (int)lh_ret(lh_syscall4(NR_prlimit64, 0, res, rl, 0));
}
static inline int getrlimit(int res, struct rlimit *rl)
{
	return (int)lh_ret(lh_syscall4(NR_prlimit64, 0, res, 0, rl));
}
static inline int clock_gettime(int clk, struct timespec *ts)
{
	return (int)lh_ret(lh_syscall2(NR_clock_gettime, clk, ts));
}

/* The compiler may emit calls to these even when freestanding; defined in nolibc.c. */
void *memset(void *dst, int c, size_t n);
void *memmove(void *dst, const void *src, size_t n);
void *memcpy(void *dst, const void *src, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);

#endif /* LEASHED_NOLIBC */
#endif /* LEASHED_NOLIBC_H */
