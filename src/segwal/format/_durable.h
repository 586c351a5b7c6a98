/* The DurableWait object shared by _durable.c (the wait and its barrier) and _publication.c
 * (the LOCK publication after it); see _durable.c. */
#ifndef SEGWAL_DURABLE_H
#define SEGWAL_DURABLE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#define MAX_BUCKETS 64

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *state_dict, *file_types, *bind;
    PyObject *commit, *commit_dict; /* the log's GroupCommit when the hooks were bound */
    PyObject *acquire, *release; /* the commit's mutex */
    PyObject *wait, *barrier, *sync_failed, *barrier_failed, *synced, *wake, *publish;
    PyObject *telemetry_dict; /* the Telemetry's __dict__: fsync_buckets, fsync_seconds */
    /* The publication in C (NULL: Publisher.publish, the `publish` hook): the Publisher's
     * __dict__ and lock, LOCK's LockHandle with its mutex, the type of a real mapping
     * (storage/fileio.py OsSharedMap), the bytes of a record's frame besides its payload
     * (LogState.published_counters' arithmetic), lockfile's [pid]. */
    PyObject *pub_dict, *pub_acquire, *pub_release, *lock_handle, *map_acquire, *map_release,
        *map_type, *pid, *emit_durable;
    unsigned long long record_overhead; /* state.py RECORD_OVERHEAD: a record's frame bytes */
    double bounds[MAX_BUCKETS];
    Py_ssize_t nbounds;
    double slow;
} DurableWait;

/* dict[name], a borrowed reference; NULL with KeyError (or another error) raised. */
static inline PyObject *
field(PyObject *dict, PyObject *name)
{
    PyObject *value = PyDict_GetItemWithError(dict, name);
    if (value == NULL && !PyErr_Occurred())
        PyErr_SetObject(PyExc_KeyError, name);
    return value;
}

static inline int
call0(PyObject *fn)
{
    PyObject *res = PyObject_CallNoArgs(fn);
    if (res == NULL)
        return -1;
    Py_DECREF(res);
    return 0;
}

static inline int
call1(PyObject *fn, PyObject *arg)
{
    PyObject *res = PyObject_CallOneArg(fn, arg);
    if (res == NULL)
        return -1;
    Py_DECREF(res);
    return 0;
}

/* Call `release` (a lock's) keeping a pending exception pending. */
static inline void
release_keeping(PyObject *release)
{
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyObject *res = PyObject_CallNoArgs(release);
    if (res == NULL)
        PyErr_Clear(); /* the first error is the one to report */
    Py_XDECREF(res);
    PyErr_Restore(type, value, tb);
}

/* _publication.c: Publisher.publish(target) in C (0, or -1 on an error), and its names. */
int segwal_publish(DurableWait *self, PyObject *target);
int segwal_publication_init(void);

#endif
