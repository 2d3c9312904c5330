/* direct.c - direct mode: the helper arms the leash on itself and becomes the target. */
#include "helper.h"

/* -J (the cgroup mechanism): the target's own cgroup, joined before anything of the
 * target runs and before a change of credentials could deny the write. The cgroup is the
 * leash (the watcher ends it): no parent-death signal, so nothing is thread-scoped. */
_Noreturn static void join_cgroup(const struct opts *o)
{
	static const char self[] = "0";

	if (fcntl(o->join_fd, F_SETFD, FD_CLOEXEC) < 0)
		lh_fail(o, STAGE_SETUP, errno, "-J", NULL);
	if (write(o->join_fd, self, 1) != 1)
		lh_fail(o, STAGE_ARM, errno, "join the cgroup", NULL);
	close(o->join_fd);
	lh_change_credentials(o);
	if (o->ppid && getppid() != o->ppid)
		_exit(1); /* the parent died before the join: its watcher may have ended already */
	lh_exec_target(o);
}

/* Arm the parent-death signal, recheck the parent, become the target (same pid). */
_Noreturn void lh_run_direct(const struct opts *o)
{
	int armed;

	if (o->join_fd >= 0)
		join_cgroup(o);
	lh_change_credentials(o); /* a change of credentials would clear the leash */
	armed = lh_arm_pdeathsig(o->sig, NULL);
	if (armed <= 0) /* 0: no parent-death signal on this OS; the caller uses the guardian */
		lh_fail(o, STAGE_ARM, armed < 0 ? errno : ENOSYS, "arm the leash", NULL);
	if (o->ppid && getppid() != o->ppid)
		_exit(1); /* the parent died before the leash was armed */
	lh_exec_target(o);
}
