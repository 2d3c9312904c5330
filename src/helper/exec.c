/* exec.c - the last steps in the target's process: the caller's credentials changed as
 * subprocess changes them, then PROGRAM executed with subprocess's PATH search.
 * Async-signal-safe throughout: it runs in forked children too.
 */
#include "helper.h"

#define LH_PATH_MAX 4096 /* Linux PATH_MAX, NUL included */

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

/* The user=, group=, extra_groups= of subprocess, in its order and with its calls. Done
 * here, not by the caller's child, so that the helper is executed with the caller's rights
 * (it may live in a directory the new user cannot reach) and the leash is armed after the
 * change, which would otherwise clear the parent-death signal. */
void lh_change_credentials(const struct opts *o)
{
	if (o->groups_given && setgroups(o->ngroups, lh_groups) < 0)
		lh_fail(o, STAGE_CREDENTIALS, errno, "setgroups", NULL);
	if (o->gid_given && setregid(o->gid, o->gid) < 0)
		lh_fail(o, STAGE_CREDENTIALS, errno, "setregid", NULL);
	if (o->uid_given && setreuid(o->uid, o->uid) < 0)
		lh_fail(o, STAGE_CREDENTIALS, errno, "setreuid", NULL);
}
