/* leashed._inproc: _posixsubprocess.fork_exec's job with the leash armed in the child.
 *
 *   fork_exec(death_signal, cgroup_procs_fd, *args)
 *     args: this CPython's own fork_exec arguments (21 on 3.10, 23 on 3.11-3.13, 22 on
 *     3.14+); returns the child's pid. death_signal 0: no PR_SET_PDEATHSIG;
 *     cgroup_procs_fd -1: none, else a close-on-exec fd open for writing on a cgroup v2
 *     cgroup.procs file the child joins before exec. Failures in the child reach the
 *     caller through the stdlib's error pipe, so subprocess raises its own exceptions.
 *   set_main_thread(ident)   the thread that forks its own children (threading.get_ident)
 *   set_spawners(n)          spawner threads for the other threads (default 4)
 *   spawner_count()          how many run now
 *
 * Limited C API (3.10): one abi3 build serves every CPython 3.10+. */
#include <Python.h>

#include "inproc.h"
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

static unsigned long main_ident;
static enum chdir_marker chdir_marker = CHDIR_MARK_NOEXEC;

/* Python objects the spawn's C strings point into, and the arrays themselves. */
struct holder {
	PyObject *objects; /* list of bytes */
	void *arrays[4];
	int narrays;
};

static void holder_free(struct holder *h)
{
	for (int i = 0; i < h->narrays; i++)
		PyMem_Free(h->arrays[i]);
	Py_XDECREF(h->objects);
}

static const char *fs_bytes(struct holder *h, PyObject *o)
{
	PyObject *b = NULL;
	if (!PyUnicode_FSConverter(o, &b))
		return NULL;
	int r = PyList_Append(h->objects, b);
	Py_DECREF(b);
	return r < 0 ? NULL : PyBytes_AsString(b);
}

static void *hold_array(struct holder *h, size_t bytes)
{
	void *p = PyMem_Malloc(bytes ? bytes : 1);
	if (p == NULL) {
		PyErr_NoMemory();
		return NULL;
	}
	h->arrays[h->narrays++] = p;
	return p;
}

/* A NULL-terminated char* array of seq's items, file-system encoded. */
static char **c_strings(struct holder *h, PyObject *seq)
{
	Py_ssize_t n = PySequence_Size(seq);
	if (n < 0)
		return NULL;
	char **arr = hold_array(h, (size_t)(n + 1) * sizeof(char *));
	for (Py_ssize_t i = 0; arr && i < n; i++) {
		PyObject *item = PySequence_GetItem(seq, i);
		const char *s = item ? fs_bytes(h, item) : NULL;
		Py_XDECREF(item);
		if (s == NULL)
			return NULL;
		arr[i] = (char *)s;
	}
	if (arr)
		arr[n] = NULL;
	return arr;
}

/* fds_to_keep: a tuple of sorted, distinct, non-negative ints. */
static int *keep_fds(struct holder *h, PyObject *tuple, int *n)
{
	Py_ssize_t size = PyTuple_Size(tuple);
	int *keep = size < 0 || size > INT_MAX ? NULL : hold_array(h, (size_t)size * sizeof(int));
	for (Py_ssize_t i = 0; keep && i < size; i++) {
		long fd = PyLong_AsLong(PyTuple_GetItem(tuple, i));
		if (fd < 0 || fd > INT_MAX || (i > 0 && fd <= keep[i - 1])) {
			if (!PyErr_Occurred() || PyErr_ExceptionMatches(PyExc_OverflowError)) {
				PyErr_Clear();
				PyErr_SetString(PyExc_ValueError, "bad value(s) in fds_to_keep");
			}
			return NULL;
		}
		keep[i] = (int)fd;
	}
	*n = (int)size;
	return keep;
}

/* A uid/gid as _posixsubprocess converts it; None, and (uid_t)-1 as there, leave *has 0. */
static int c_id(PyObject *o, const char *what, unsigned *out, int *has)
{
	*has = 0;
	if (o == Py_None)
		return 0;
	long long v = PyLong_AsLongLong(o);
	if (v == -1 && PyErr_Occurred())
		return -1;
	if (v < 0 || v > (long long)UINT32_MAX) {
		PyErr_Format(PyExc_OverflowError, "%s is %s", what,
			     v < 0 ? "less than minimum" : "greater than maximum");
		return -1;
	}
	*out = (unsigned)v;
	*has = v != (long long)UINT32_MAX;
	return 0;
}

static int c_groups(struct holder *h, PyObject *list, struct spawn_job *j)
{
	j->ngroups = -1;
	if (list == Py_None)
		return 0;
	Py_ssize_t n = PySequence_Size(list);
	if (n < 0)
		return -1;
	if (n > NGROUPS_MAX) {
		PyErr_SetString(PyExc_ValueError, "too many groups");
		return -1;
	}
	gid_t *groups = hold_array(h, (size_t)n * sizeof(gid_t));
	for (Py_ssize_t i = 0; groups && i < n; i++) {
		PyObject *item = PySequence_GetItem(list, i);
		unsigned g = 0;
		int has, r = item ? c_id(item, "gid", &g, &has) : -1;
		Py_XDECREF(item);
		if (r < 0) {
			PyErr_SetString(PyExc_ValueError, "invalid group id");
			return -1;
		}
		groups[i] = (gid_t)g;
	}
	j->groups = groups;
	j->ngroups = (int)n;
	return groups ? 0 : -1;
}

/* The stdlib's fork_exec arguments, whatever this CPython's list is. */
struct stdlib_args {
	PyObject *process_args, *executable_list, *fds_to_keep, *cwd, *env_list;
	PyObject *gid, *groups, *uid, *preexec_fn;
	int close_fds, restore_signals, call_setsid, pgid_to_set, child_umask, allow_vfork;
	int fds[8];
};

static int parse_stdlib_args(PyObject *args, struct stdlib_args *a)
{
	int *f = a->fds;
	a->pgid_to_set = -1;
	a->allow_vfork = 1;
	switch (PyTuple_Size(args)) {
	case 21: /* 3.10: no process_group, no allow_vfork */
		return PyArg_ParseTuple(args, "OOpO!OOiiiiiiiippOOOiO:fork_exec", &a->process_args,
					&a->executable_list, &a->close_fds, &PyTuple_Type, &a->fds_to_keep,
					&a->cwd, &a->env_list, &f[0], &f[1], &f[2], &f[3], &f[4], &f[5],
					&f[6], &f[7], &a->restore_signals, &a->call_setsid, &a->gid,
					&a->groups, &a->uid, &a->child_umask, &a->preexec_fn) ? 0 : -1;
	case 22: /* 3.14+: process_group, no allow_vfork */
		return PyArg_ParseTuple(args, "OOpO!OOiiiiiiiippiOOOiO:fork_exec", &a->process_args,
					&a->executable_list, &a->close_fds, &PyTuple_Type, &a->fds_to_keep,
					&a->cwd, &a->env_list, &f[0], &f[1], &f[2], &f[3], &f[4], &f[5],
					&f[6], &f[7], &a->restore_signals, &a->call_setsid, &a->pgid_to_set,
					&a->gid, &a->groups, &a->uid, &a->child_umask, &a->preexec_fn) ? 0 : -1;
	case 23: /* 3.11-3.13 */
		return PyArg_ParseTuple(args, "OOpO!OOiiiiiiiippiOOOiOp:fork_exec", &a->process_args,
					&a->executable_list, &a->close_fds, &PyTuple_Type, &a->fds_to_keep,
					&a->cwd, &a->env_list, &f[0], &f[1], &f[2], &f[3], &f[4], &f[5],
					&f[6], &f[7], &a->restore_signals, &a->call_setsid, &a->pgid_to_set,
					&a->gid, &a->groups, &a->uid, &a->child_umask, &a->preexec_fn,
					&a->allow_vfork) ? 0 : -1;
	default:
		PyErr_Format(PyExc_TypeError, "fork_exec: this CPython's argument list (%zd) is not known",
			     PyTuple_Size(args));
		return -1;
	}
}

/* The job from the parsed arguments; its strings live in h. */
static int build_job(struct holder *h, const struct stdlib_args *a, struct spawn_job *j)
{
	const int *f = a->fds;
	unsigned uid = 0, gid = 0;
	if (a->preexec_fn != Py_None) {
		PyErr_SetString(PyExc_ValueError, "leashed._inproc runs no preexec_fn");
		return -1;
	}
	if (a->close_fds && f[7] < 3) {
		PyErr_SetString(PyExc_ValueError, "errpipe_write must be >= 3");
		return -1;
	}
	if (!(j->keep = keep_fds(h, a->fds_to_keep, &j->nkeep)))
		return -1;
	if (!(j->exec_array = c_strings(h, a->executable_list)) || !(j->argv = c_strings(h, a->process_args)))
		return -1;
	if (a->env_list != Py_None && !(j->envp = c_strings(h, a->env_list)))
		return -1;
	if (a->cwd != Py_None && !(j->cwd = fs_bytes(h, a->cwd)))
		return -1;
	if (c_groups(h, a->groups, j) < 0 || c_id(a->gid, "gid", &gid, &j->has_gid) < 0 ||
	    c_id(a->uid, "uid", &uid, &j->has_uid) < 0)
		return -1;
	j->uid = (uid_t)uid, j->gid = (gid_t)gid;
	j->p2cread = f[0], j->p2cwrite = f[1], j->c2pread = f[2], j->c2pwrite = f[3];
	j->errread = f[4], j->errwrite = f[5], j->errpipe_read = f[6], j->errpipe_write = f[7];
	j->close_fds = a->close_fds, j->restore_signals = a->restore_signals;
	j->call_setsid = a->call_setsid, j->pgid_to_set = a->pgid_to_set;
	j->child_umask = a->child_umask, j->allow_vfork = a->allow_vfork;
	j->chdir_marker = chdir_marker;
	return 0;
}

static int check_leash(int death_signal, int cgroup_fd)
{
	if (death_signal < 0 || death_signal >= _NSIG) {
		PyErr_Format(PyExc_ValueError, "death_signal must be 0 or a signal number, not %d", death_signal);
		return -1;
	}
	int flags = cgroup_fd >= 0 ? fcntl(cgroup_fd, F_GETFD) : 0;
	if (cgroup_fd < -1 || flags < 0 || (cgroup_fd >= 0 && !(flags & FD_CLOEXEC))) {
		PyErr_SetString(PyExc_ValueError, "cgroup_procs_fd must be -1 or an open close-on-exec fd");
		return -1;
	}
	return 0;
}

static PyObject *spawn(struct spawn_job *j)
{
	int err;
	/* PR_SET_PDEATHSIG follows the forking thread: only a leash with one needs a spawner
	 * thread that lives as long as the process; without it (the cgroup mechanism) the
	 * caller forks itself. */
	int on_caller = j->death_signal == 0 || PyThread_get_thread_ident() == main_ident;
	Py_BEGIN_ALLOW_THREADS
	err = backend_spawn(j, on_caller);
	Py_END_ALLOW_THREADS
	if (err != 0) {
		errno = err;
		return PyErr_SetFromErrno(PyExc_OSError);
	}
	return PyLong_FromLong((long)j->pid);
}

static PyObject *py_fork_exec(PyObject *self, PyObject *args)
{
	(void)self;
	Py_ssize_t n = PyTuple_Size(args);
	struct spawn_job j;
	struct stdlib_args a;
	struct holder h = {.objects = NULL, .narrays = 0};
	PyObject *rest = NULL, *result = NULL;
	memset(&j, 0, sizeof j);
	j.envp = NULL, j.cwd = NULL;
	if (n < 2) {
		PyErr_SetString(PyExc_TypeError, "fork_exec(death_signal, cgroup_procs_fd, *args)");
		return NULL;
	}
	j.death_signal = (int)PyLong_AsLong(PyTuple_GetItem(args, 0));
	j.cgroup_fd = (int)PyLong_AsLong(PyTuple_GetItem(args, 1));
	if (PyErr_Occurred() || check_leash(j.death_signal, j.cgroup_fd) < 0)
		return NULL;
	if (!(rest = PyTuple_GetSlice(args, 2, n)) || parse_stdlib_args(rest, &a) < 0)
		goto done;
	if (!(h.objects = PyList_New(0)) || build_job(&h, &a, &j) < 0)
		goto done;
	result = spawn(&j);
done:
	holder_free(&h);
	Py_XDECREF(rest);
	return result;
}

static PyObject *py_set_main_thread(PyObject *self, PyObject *arg)
{
	(void)self;
	unsigned long ident = PyLong_AsUnsignedLong(arg);
	if (ident == (unsigned long)-1 && PyErr_Occurred())
		return NULL;
	main_ident = ident;
	Py_RETURN_NONE;
}

static PyObject *py_set_spawners(PyObject *self, PyObject *arg)
{
	(void)self;
	long n = PyLong_AsLong(arg);
	if (n == -1 && PyErr_Occurred())
		return NULL;
	int err = n < 1 || n > 64 ? EINVAL : backend_set_spawners((int)n);
	if (err == EINVAL) {
		PyErr_SetString(PyExc_ValueError, "set_spawners: 1 to 64");
		return NULL;
	}
	if (err != 0) {
		errno = err;
		return PyErr_SetFromErrno(PyExc_OSError);
	}
	Py_RETURN_NONE;
}

static PyObject *py_spawner_count(PyObject *self, PyObject *unused)
{
	(void)self, (void)unused;
	return PyLong_FromLong(backend_spawner_count());
}

static PyMethodDef methods[] = {
	{"fork_exec", py_fork_exec, METH_VARARGS,
	 "fork_exec(death_signal, cgroup_procs_fd, *args): _posixsubprocess.fork_exec, leashed"},
	{"set_main_thread", py_set_main_thread, METH_O, "the thread that forks its own children"},
	{"set_spawners", py_set_spawners, METH_O, "how many spawner threads serve the others"},
	{"spawner_count", py_spawner_count, METH_NOARGS, "how many spawner threads run now"},
	{NULL, NULL, 0, NULL},
};

static struct PyModuleDef moddef = {
	PyModuleDef_HEAD_INIT, "leashed._inproc", "In-process leashed spawn (Linux).", -1, methods,
	NULL, NULL, NULL, NULL,
};

/* 3.13 split the error pipe's "noexec" marker (chdir failures name cwd). */
static int read_python_minor(void)
{
	PyObject *info = PySys_GetObject("version_info"); /* borrowed */
	PyObject *minor = info ? PySequence_GetItem(info, 1) : NULL;
	long v = minor ? PyLong_AsLong(minor) : -1;
	Py_XDECREF(minor);
	return (int)v;
}

PyMODINIT_FUNC PyInit__inproc(void)
{
	int minor = read_python_minor();
	if (minor < 0)
		return NULL;
	chdir_marker = minor >= 13 ? CHDIR_MARK_SPLIT : CHDIR_MARK_NOEXEC;
	main_ident = PyThread_get_thread_ident();
	int err = backend_init();
	if (err != 0) {
		errno = err;
		return PyErr_SetFromErrno(PyExc_OSError);
	}
	return PyModule_Create(&moddef);
}
