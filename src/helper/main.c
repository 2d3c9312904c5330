/* main.c - leashed-helper's entry point: the outline of a run.
 *
 *   leashed-helper --version
 *   leashed-helper direct|supervisor|guardian [OPTION [VALUE]]... -- PROGRAM [ARGV0 [ARG]...]
 *
 * The parts (helper.h has their interfaces):
 *   options.c     the command line: one option table and its parser
 *   report.c      failures before the target runs: the report pipe, or a line on stderr
 *   exec.c        credentials, then PROGRAM executed with subprocess's PATH search
 *   direct.c      direct mode: arm the leash, become the target
 *   front.c       supervisor mode, the process the caller holds
 *   supervisor.c  supervisor mode, the target's parent
 *   guardian.c    guardian mode, a detached watcher armed before the target runs
 *   util.c        small utilities the parts share
 *   linux.c, kqueue.c   one backend per OS family
 *
 * The contract with the Python side is docs/helper-protocol.md.
 */
#include "helper.h"

#ifndef LEASHED_VERSION
#define LEASHED_VERSION "unknown"
#endif
#ifndef LEASHED_BUILD
#define LEASHED_BUILD "libc"
#endif

int main(int argc, char **argv)
{
	struct opts o;

	if (argc == 2 && lh_streq(argv[1], "--version")) {
		static const char version[] = "leashed-helper " LEASHED_VERSION " " LEASHED_BUILD "\n";
		lh_put(1, version, sizeof version - 1);
		return 0;
	}
	/* The report pipe is found first, so that every failure from here on reaches it. */
	lh_parse_command_line(argc, argv, &o);
	/* The caller's fds we keep (lifeline, control socket): close-on-exec, never the target's. */
	lh_own_fds(&o);
	if (o.mode == MODE_DIRECT)
		lh_run_direct(&o); /* direct.c */
	if (o.mode == MODE_SUPERVISOR)
		lh_run_supervisor(&o); /* front.c, supervisor.c */
	lh_run_guardian(&o); /* guardian.c */
}
