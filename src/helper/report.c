/* report.c - how a failure before the target runs is told: two int32 (stage, errno) on
 * the report pipe, or one line on stderr without one, then the exit status a shell uses.
 */
#include "helper.h"

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
	struct lh_report r;

	if (o->report_fd >= 0) {
		r.stage = (int32_t)stage;
		r.err = err;
		lh_put(o->report_fd, &r, sizeof r);
	} else {
		say(stage, err, what, arg);
	}
	_exit(stage == STAGE_USAGE ? 2 : stage == STAGE_EXEC && err == ENOENT ? 127 : 126);
}
