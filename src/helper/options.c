/* options.c - the helper's command line: one table of options, the parser it drives, and
 * the checks of combinations. Every refusal is a usage failure on the report pipe.
 *
 *   leashed-helper direct|supervisor|guardian [OPTION [VALUE]]... -- PROGRAM [ARGV0 [ARG]...]
 */
#include "helper.h"

#define INT_MAX_ 2147483647ULL	/* pids and fds */
#define ID_MAX 4294967295ULL	/* every uid_t / gid_t, (uid_t)-1 included */
#define GRACE_MAX 86400000ULL	/* one day, in ms */

gid_t lh_groups[LH_GROUPS_MAX]; /* -X */

_Noreturn static void usage(const struct opts *o, const char *what, const char *arg)
{
	lh_fail(o, STAGE_USAGE, EINVAL, what, arg);
}

enum kind { FLAG, NUMBER, LIST };

#define ALL_MODES (MODE_DIRECT | MODE_SUPERVISOR | MODE_GUARDIAN)
#define WATCHERS (MODE_SUPERVISOR | MODE_GUARDIAN)

/* Every option: one argv element, a dash and a letter, then its value (but for flags) as the next one.
 * docs/helper-protocol.md has the same table in words, src/leashed/_protocol.py as OPTIONS
 * (tests/test_protocol_tables.py compares the three). */
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

	for (i = 1; i + 1 < argc && !lh_streq(argv[i], "--"); i++) {
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
		if (o->ngroups >= LH_GROUPS_MAX || !lh_is_digit(*p))
			usage(o, "bad value for", opt);
		for (v = 0; lh_is_digit(*p); p++)
			if ((v = v * 10 + (unsigned long long)(*p - '0')) > spec->max)
				usage(o, "bad value for", opt);
		if (v < spec->min)
			usage(o, "bad value for", opt);
		lh_groups[o->ngroups++] = (gid_t)v;
		if (*p == ',' && lh_is_digit(p[1]))
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
	if (lh_streq(argv[1], "direct"))
		return MODE_DIRECT;
	if (lh_streq(argv[1], "supervisor"))
		return MODE_SUPERVISOR;
	if (lh_streq(argv[1], "guardian"))
		return MODE_GUARDIAN;
	usage(o, "unknown mode", argv[1]);
}

static void parse_args(int argc, char **argv, struct opts *o)
{
	int i;

	o->mode = parse_mode(argc, argv, o);
	for (i = 2; i < argc && !lh_streq(argv[i], "--"); i++)
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

void lh_parse_command_line(int argc, char **argv, struct opts *o)
{
	init_opts(o);
	find_report_fd(argc, argv, o);
	parse_args(argc, argv, o);
}

/* A caller's fd we keep: it must never reach the target. */
static void own_fd(const struct opts *o, int fd, const char *opt)
{
	if (fd >= 0 && fcntl(fd, F_SETFD, FD_CLOEXEC) < 0)
		lh_fail(o, STAGE_SETUP, errno, opt, NULL);
}

void lh_own_fds(const struct opts *o)
{
	own_fd(o, o->life_fd, "-l");
	own_fd(o, o->ctl_fd, "-c");
	own_fd(o, o->listen_fd, "-L");
}
