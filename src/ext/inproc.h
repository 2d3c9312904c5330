/* leashed._inproc: the interface between the Python-facing core (inproc.c) and an OS
 * backend (inproc_linux.c). The core converts fork_exec's arguments into a spawn_job;
 * the backend forks, runs the child's steps, and execs. */
#ifndef LEASHED_INPROC_H
#define LEASHED_INPROC_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif

#include <signal.h>
#include <sys/types.h>

/* How the child reports a failure before exec (the stdlib's error pipe). */
enum chdir_marker {
	CHDIR_MARK_NOEXEC = 0, /* 3.10-3.12: "noexec" for every pre-exec failure */
	CHDIR_MARK_SPLIT = 1,  /* 3.13+: "noexec:chdir" for chdir, "noexec" otherwise */
};

struct spawn_job {
	/* what to run: NULL-terminated arrays owned by the caller */
	char *const *exec_array;
	char *const *argv;
	char *const *envp; /* NULL: the parent's environ */
	const char *cwd;   /* NULL: unchanged */
	/* fds, as _posixsubprocess.fork_exec takes them (-1: none) */
	int p2cread, p2cwrite, c2pread, c2pwrite, errread, errwrite;
	int errpipe_read, errpipe_write;
	const int *keep; /* sorted fds_to_keep */
	int nkeep;
	int close_fds, restore_signals, call_setsid, child_umask;
	pid_t pgid_to_set; /* -1: unchanged */
	/* credentials (has_*: 0 = unchanged; ngroups -1 = unchanged) */
	int has_uid, has_gid, ngroups;
	uid_t uid;
	gid_t gid;
	const gid_t *groups;
	/* the leash */
	int death_signal; /* 0: no PR_SET_PDEATHSIG */
	int cgroup_fd;	  /* -1: none; else "0" is written to it before exec */
	pid_t parent_pid;
	int allow_vfork;
	enum chdir_marker chdir_marker;
	sigset_t child_mask; /* the mask the target starts with (the caller's) */
	/* result */
	pid_t pid;
	int err; /* errno of a failed fork, or of a failed hand-off */
};

/* Spawn j (called without the GIL). on_caller: fork on this thread, else on one of the
 * long-lived spawner threads. Returns 0 (j->pid set) or an errno. */
int backend_spawn(struct spawn_job *j, int on_caller);

/* Once, at import: what must survive os.fork() of the parent. 0 or an errno. */
int backend_init(void);

/* How many spawner threads run now, and how many start on the first hand-off. */
int backend_spawner_count(void);
int backend_set_spawners(int n);

#endif
