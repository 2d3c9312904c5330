/* direct.c - direct mode: the helper arms the leash on itself and becomes the target. */
#include "helper.h"

/* Arm the parent-death signal, recheck the parent, become the target (same pid). */
_Noreturn void lh_run_direct(const struct opts *o)
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
