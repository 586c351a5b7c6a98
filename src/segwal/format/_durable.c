/* segwal.format._encode.DurableWait: a durable single append's wait, in C.
 *
 *   DurableWait(commit, commit_dict, state, state_dict, file_types, hooks)
 *
 * With sync="always" each FastAppender append ends in `durable(lsn)`. In Python that is
 * GroupCommit.wait_durable(lsn, lead=True) with its solo barrier, Appender.barrier and the
 * publication to readers: about 3 us of bytecode around an fdatasync, more than the frame's
 * encoding and write together. This object runs the common case itself, a writer alone
 * (nobody leads a barrier, the log has not failed): under the commit's mutex it takes the
 * barrier (`_busy`, the written LSN as its target), fdatasyncs the active segment's
 * descriptor with the GIL released, does Appender.barrier's bookkeeping (the writer's
 * `synced`, `io["fsyncs"]`, the fsync histogram) and _lead_once's end (`_busy`, `barriers`,
 * the durable LSN, waking whoever queued meanwhile), then publishes. The objects' fields
 * stay where the Python code keeps them, read and written in their dicts, so the group
 * commit's Python paths (other threads, rotation's `exclusive`, a rewind's `reset`) see
 * exactly what they would after the Python solo barrier.
 *
 * Everything else goes to Python: a barrier already running or a failed log
 * (`wait(lsn, resets)`: wait_durable with the rewind count read under the mutex here); a
 * handle that is not an OsFile (the in-memory file system: `barrier()`, Appender.barrier);
 * an fdatasync error (`sync_failed(path, errno)` raises the StorageError OsFile.sync
 * raises) or any error after the barrier started (`barrier_failed(exc)`, _lead_once's
 * except branch, which fails the log and raises); a slow fsync or observers
 * (`synced(seconds)`, Telemetry.fsynced and the Synced event); waking queued threads
 * (`wake()`, _wake_covered) and the publication (`publish(lsn)`, Publisher.publish).
 */

#include "_durable.h" /* Python.h first */

#include <errno.h>
#include <time.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

static PyObject *s_commit, *s_busy, *s_failed, *s_durable_lsn, *s_written_lsn, *s_resets, *s_queue,
    *s_watchers, *s_barriers, *s_writer, *s_handle, *s_fd, *s_path, *s_offset, *s_synced,
    *s_io, *s_fsyncs, *s_observers, *s_buckets, *s_seconds;

static int rebind(DurableWait *self, PyObject *commit);

static double
monotonic(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now); /* time.perf_counter's clock on Linux */
    return (double)now.tv_sec + (double)now.tv_nsec * 1e-9;
}

/* value + 1 (a new reference), for the counters kept as Python ints. */
static PyObject *
plus_one(PyObject *value)
{
    PyObject *one = PyLong_FromLong(1);
    PyObject *sum = one == NULL ? NULL : PyNumber_Add(value, one);
    Py_XDECREF(one);
    return sum;
}

/* dict[key] += 1 for a dict of ints. */
static int
bump(PyObject *dict, PyObject *key)
{
    PyObject *value = field(dict, key);
    PyObject *bumped = value == NULL ? NULL : plus_one(value);
    if (bumped == NULL)
        return -1;
    int rc = PyDict_SetItem(dict, key, bumped);
    Py_DECREF(bumped);
    return rc;
}

/* Appender.barrier's histogram step (Telemetry.fsynced without a slow fsync): the bucket is
 * the first bound not below `seconds` (bisect_left), +Inf past the last. */
static int
count_fsync(DurableWait *self, double seconds)
{
    Py_ssize_t i = 0;
    while (i < self->nbounds && self->bounds[i] < seconds)
        i++;
    PyObject *buckets = field(self->telemetry_dict, s_buckets);
    if (buckets == NULL)
        return -1;
    if (!PyList_CheckExact(buckets) || PyList_GET_SIZE(buckets) != self->nbounds + 1) {
        PyErr_SetString(PyExc_TypeError, "DurableWait: fsync_buckets changed shape");
        return -1;
    }
    PyObject *bumped = plus_one(PyList_GET_ITEM(buckets, i));
    if (bumped == NULL)
        return -1;
    PyList_SetItem(buckets, i, bumped); /* steals bumped */
    PyObject *total = field(self->telemetry_dict, s_seconds);
    if (total == NULL)
        return -1;
    PyObject *sum = PyFloat_FromDouble(PyFloat_AsDouble(total) + seconds);
    if (sum == NULL || (PyErr_Occurred() != NULL)) {
        Py_XDECREF(sum);
        return -1;
    }
    int rc = PyDict_SetItem(self->telemetry_dict, s_seconds, sum);
    Py_DECREF(sum);
    return rc;
}



static int barrier_on(DurableWait *self, PyObject *writer);

/* Appender.barrier: fdatasync the active segment and note it. 0, or -1 with the error set. */
static int
run_barrier(DurableWait *self)
{
    PyObject *writer = field(self->state_dict, s_writer);
    if (writer == NULL)
        return -1;
    if (writer == Py_None)
        return call0(self->barrier);
    /* Held across the GIL's release: state.writer may be replaced meanwhile (it is not,
     * while the barrier runs: rotation waits for it in `exclusive`). */
    Py_INCREF(writer);
    int rc = barrier_on(self, writer);
    Py_DECREF(writer);
    return rc;
}

static int
barrier_on(DurableWait *self, PyObject *writer)
{
    PyObject *handle = PyObject_GetAttr(writer, s_handle);
    if (handle == NULL)
        return -1;
    int ours = PySequence_Contains(self->file_types, (PyObject *)Py_TYPE(handle));
    PyObject *fd_obj = ours > 0 ? PyObject_GetAttr(handle, s_fd) : NULL;
    long fd = fd_obj != NULL ? PyLong_AsLong(fd_obj) : -1;
    Py_XDECREF(fd_obj);
    if (ours < 0 || (fd == -1 && PyErr_Occurred())) {
        Py_DECREF(handle);
        return -1;
    }
    if (ours == 0 || fd < 0 || fd > INT_MAX) {
        Py_DECREF(handle);
        return call0(self->barrier); /* another file system, or a closed file: Python's way */
    }
    /* What the barrier covers is what was written before it started. */
    PyObject *end = PyObject_GetAttr(writer, s_offset);
    if (end == NULL) {
        Py_DECREF(handle);
        return -1;
    }
    double started = monotonic();
    int rc, err = 0;
    for (;;) {
        Py_BEGIN_ALLOW_THREADS
        rc = fdatasync((int)fd);
        err = errno;
        Py_END_ALLOW_THREADS
        if (rc == 0 || err != EINTR)
            break;
        if (PyErr_CheckSignals() < 0) { /* as os.fdatasync: a handler's exception stops it */
            Py_DECREF(handle);
            Py_DECREF(end);
            return -1;
        }
    }
    double seconds = monotonic() - started;
    if (rc != 0) {
        PyObject *path = PyObject_GetAttr(handle, s_path);
        PyObject *code = PyLong_FromLong(err);
        if (path != NULL && code != NULL) {
            PyObject *args[2] = {path, code};
            PyObject *res = PyObject_Vectorcall(self->sync_failed, args, 2, NULL);
            Py_XDECREF(res);
            if (res != NULL)
                PyErr_SetString(PyExc_SystemError, "DurableWait: sync_failed returned");
        }
        Py_XDECREF(path);
        Py_XDECREF(code);
        Py_DECREF(handle);
        Py_DECREF(end);
        return -1;
    }
    Py_DECREF(handle);
    /* writer.synced = max(writer.synced, end) */
    PyObject *synced = PyObject_GetAttr(writer, s_synced);
    int later = synced == NULL ? -1 : PyObject_RichCompareBool(end, synced, Py_GT);
    Py_XDECREF(synced);
    if (later > 0)
        later = PyObject_SetAttr(writer, s_synced, end) < 0 ? -1 : 0;
    Py_DECREF(end);
    if (later < 0)
        return -1;
    PyObject *io = field(self->state_dict, s_io);
    if (io == NULL || !PyDict_Check(io) || bump(io, s_fsyncs) < 0) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "DurableWait: state.io is not a dict");
        return -1;
    }
    PyObject *observers = field(self->state_dict, s_observers);
    if (observers == NULL)
        return -1;
    int observed = PyObject_IsTrue(observers);
    if (observed < 0)
        return -1;
    if (observed || seconds >= self->slow) {
        PyObject *value = PyFloat_FromDouble(seconds);
        if (value == NULL)
            return -1;
        rc = call1(self->synced, value); /* Telemetry.fsynced (its warning) and the event */
        Py_DECREF(value);
        return rc;
    }
    return count_fsync(self, seconds);
}

/* The rest of wait_durable after the solo barrier, or all of it: Python's. */
static PyObject *
wait_python(DurableWait *self, PyObject *lsn, PyObject *resets)
{
    PyObject *args[2] = {lsn, resets};
    PyObject *res = PyObject_Vectorcall(self->wait, args, 2, NULL);
    if (res == NULL)
        return NULL;
    Py_DECREF(res);
    Py_RETURN_NONE;
}

/* durable(lsn): return once `lsn` is durable (or a rewind removed it). */
static PyObject *
dw_call(DurableWait *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    if (PyVectorcall_NARGS(nargsf) != 1 || kwnames != NULL || !PyLong_CheckExact(args[0])) {
        PyErr_SetString(PyExc_TypeError, "durable(lsn) takes one int");
        return NULL;
    }
    PyObject *lsn = args[0];
    PyObject *commit = field(self->state_dict, s_commit);
    if (commit == NULL || (commit != self->commit && rebind(self, commit) < 0))
        return NULL;
    if (call0(self->acquire) < 0)
        return NULL;
    PyObject *d = self->commit_dict;
    PyObject *resets = field(d, s_resets);
    PyObject *busy = resets != NULL ? field(d, s_busy) : NULL;
    PyObject *failed = busy != NULL ? field(d, s_failed) : NULL;
    PyObject *durable = failed != NULL ? field(d, s_durable_lsn) : NULL;
    int behind = durable == NULL ? -1 : PyObject_RichCompareBool(durable, lsn, Py_LT);
    if (behind < 0) {
        release_keeping(self->release);
        return NULL;
    }
    Py_INCREF(resets); /* the rewind count when the wait began: a rewind meanwhile ends it */
    if (!behind || busy != Py_False || failed != Py_None) {
        PyObject *res = NULL;
        if (call0(self->release) == 0)
            res = behind ? wait_python(self, lsn, resets) : Py_NewRef(Py_None);
        Py_DECREF(resets);
        return res;
    }
    /* _lead_once: the barrier is this thread's; it covers what is written now. */
    PyObject *target = field(d, s_written_lsn);
    if (target == NULL || PyDict_SetItem(d, s_busy, Py_True) < 0) {
        release_keeping(self->release);
        Py_DECREF(resets);
        return NULL;
    }
    Py_INCREF(target);
    int rc = call0(self->release);
    if (rc == 0)
        rc = run_barrier(self);
    if (rc < 0) {
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        PyErr_NormalizeException(&type, &value, &tb);
        if (tb != NULL && value != NULL)
            PyException_SetTraceback(value, tb);
        PyObject *res = PyObject_CallOneArg(self->barrier_failed, value != NULL ? value : Py_None);
        Py_XDECREF(type);
        Py_XDECREF(value);
        Py_XDECREF(tb);
        if (res != NULL) {
            Py_DECREF(res);
            PyErr_SetString(PyExc_SystemError, "DurableWait: barrier_failed returned");
        }
        Py_DECREF(target);
        Py_DECREF(resets);
        return NULL;
    }
    /* _lead_once's end, under the mutex: the barrier is over, its target durable. */
    if (call0(self->acquire) < 0) {
        Py_DECREF(target);
        Py_DECREF(resets);
        return NULL;
    }
    rc = PyDict_SetItem(d, s_busy, Py_False);
    if (rc == 0)
        rc = bump(d, s_barriers);
    /* A failure while the fdatasync ran may have cut the file back to writer.synced
     * (discard_unsynced), below the target: then nothing is declared durable. */
    PyObject *failed_now = rc == 0 ? field(d, s_failed) : NULL;
    if (rc == 0 && failed_now == NULL)
        rc = -1;
    if (rc == 0 && failed_now == Py_None) {
        durable = field(d, s_durable_lsn);
        int ahead = durable == NULL ? -1 : PyObject_RichCompareBool(target, durable, Py_GT);
        if (ahead > 0)
            rc = PyDict_SetItem(d, s_durable_lsn, target);
        else if (ahead < 0)
            rc = -1;
    }
    if (rc == 0) {
        PyObject *queue = field(d, s_queue);
        PyObject *watchers = queue != NULL ? field(d, s_watchers) : NULL;
        int queued = queue == NULL ? -1 : PyObject_IsTrue(queue);
        int watched = watchers == NULL ? -1 : PyObject_IsTrue(watchers);
        if (queued < 0 || watched < 0)
            rc = -1;
        else if (queued || watched)
            rc = call0(self->wake);
    }
    if (rc < 0) {
        release_keeping(self->release);
        Py_DECREF(target);
        Py_DECREF(resets);
        return NULL;
    }
    rc = call0(self->release);
    if (rc == 0 && failed_now != Py_None) { /* wait_durable raises WalFailedError */
        Py_DECREF(target);
        PyObject *res = wait_python(self, lsn, resets);
        Py_DECREF(resets);
        return res;
    }
    if (rc == 0)
        rc = segwal_publish(self, target);
    Py_DECREF(target);
    if (rc < 0) {
        Py_DECREF(resets);
        return NULL;
    }
    /* Covered, unless a rewind lowered the durable LSN meanwhile: Python's loop decides. */
    durable = field(d, s_durable_lsn);
    behind = durable == NULL ? -1 : PyObject_RichCompareBool(durable, lsn, Py_LT);
    PyObject *res = behind < 0 ? NULL : behind ? wait_python(self, lsn, resets) : Py_NewRef(Py_None);
    Py_DECREF(resets);
    return res;
}

static PyObject *
dw_vectorcall(PyObject *callable, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    return dw_call((DurableWait *)callable, args, nargsf, kwnames);
}

/* The hooks of the log's GroupCommit now (a log's commit is made after its appender):
 * bind(commit) -> (commit.__dict__, telemetry.__dict__, hooks). 0, or -1 on an error. */
static int
rebind(DurableWait *self, PyObject *commit)
{
    PyObject *bound = PyObject_CallOneArg(self->bind, commit);
    if (bound == NULL)
        return -1;
    PyObject *commit_dict, *telemetry_dict, *hooks, *publication;
    if (!PyArg_ParseTuple(bound, "O!O!O!O:bind", &PyDict_Type, &commit_dict, &PyDict_Type,
                          &telemetry_dict, &PyDict_Type, &hooks, &publication)) {
        Py_DECREF(bound);
        return -1;
    }
    PyObject **pub_slots[] = {&self->pub_dict,    &self->pub_acquire, &self->pub_release,
                              &self->lock_handle, &self->map_acquire, &self->map_release,
                              &self->map_type,    NULL,               &self->pid,
                              &self->emit_durable};
    const Py_ssize_t npub = sizeof(pub_slots) / sizeof(pub_slots[0]);
    if (publication != Py_None &&
        (!PyTuple_CheckExact(publication) || PyTuple_GET_SIZE(publication) != npub ||
         !PyDict_Check(PyTuple_GET_ITEM(publication, 0)) ||
         !PyLong_CheckExact(PyTuple_GET_ITEM(publication, 7)) ||
         !PyList_Check(PyTuple_GET_ITEM(publication, 8)))) {
        PyErr_SetString(PyExc_TypeError, "DurableWait: bad publication binding");
        Py_DECREF(bound);
        return -1;
    }
    if (publication != Py_None) {
        self->record_overhead = PyLong_AsUnsignedLongLong(PyTuple_GET_ITEM(publication, 7));
        if (PyErr_Occurred()) {
            Py_DECREF(bound);
            return -1;
        }
    }
    for (Py_ssize_t i = 0; i < npub; i++)
        if (pub_slots[i] != NULL)
            Py_XSETREF(*pub_slots[i], publication == Py_None
                                          ? NULL
                                          : Py_NewRef(PyTuple_GET_ITEM(publication, i)));
    struct {
        PyObject **slot;
        const char *name;
    } hooked[] = {
        {&self->acquire, "acquire"},   {&self->release, "release"},
        {&self->wait, "wait"},         {&self->barrier, "barrier"},
        {&self->sync_failed, "sync_failed"}, {&self->barrier_failed, "barrier_failed"},
        {&self->synced, "synced"},     {&self->wake, "wake"},
        {&self->publish, "publish"},
    };
    for (size_t i = 0; i < sizeof(hooked) / sizeof(hooked[0]); i++) {
        PyObject *fn = PyDict_GetItemString(hooks, hooked[i].name);
        if (fn == NULL || !PyCallable_Check(fn)) {
            PyErr_Format(PyExc_TypeError, "DurableWait: hook %s missing or not callable",
                         hooked[i].name);
            Py_DECREF(bound);
            return -1;
        }
        Py_XSETREF(*hooked[i].slot, Py_NewRef(fn));
    }
    Py_XSETREF(self->commit_dict, Py_NewRef(commit_dict));
    Py_XSETREF(self->telemetry_dict, Py_NewRef(telemetry_dict));
    Py_XSETREF(self->commit, Py_NewRef(commit));
    Py_DECREF(bound);
    return 0;
}

static PyObject *
dw_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    PyObject *state_dict, *file_types, *bind, *bounds;
    double slow;
    if (kwds != NULL && PyDict_GET_SIZE(kwds)) {
        PyErr_SetString(PyExc_TypeError, "DurableWait() takes positional arguments only");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "O!O!OO!d:DurableWait", &PyDict_Type, &state_dict,
                          &PyTuple_Type, &file_types, &bind, &PyTuple_Type, &bounds, &slow))
        return NULL;
    if (PyTuple_GET_SIZE(bounds) > MAX_BUCKETS || !PyCallable_Check(bind)) {
        PyErr_SetString(PyExc_ValueError, "DurableWait(): bad bounds or bind");
        return NULL;
    }
    DurableWait *self = (DurableWait *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->vectorcall = dw_vectorcall;
    self->nbounds = PyTuple_GET_SIZE(bounds);
    for (Py_ssize_t i = 0; i < self->nbounds; i++) {
        self->bounds[i] = PyFloat_AsDouble(PyTuple_GET_ITEM(bounds, i));
        if (PyErr_Occurred()) {
            Py_DECREF(self);
            return NULL;
        }
    }
    self->slow = slow;
    self->state_dict = Py_NewRef(state_dict);
    self->file_types = Py_NewRef(file_types);
    self->bind = Py_NewRef(bind);
    return (PyObject *)self;
}

static int
dw_traverse(DurableWait *self, visitproc visit, void *arg)
{
    Py_VISIT(self->bind);
    Py_VISIT(self->commit);
    Py_VISIT(self->commit_dict);
    Py_VISIT(self->state_dict);
    Py_VISIT(self->file_types);
    Py_VISIT(self->telemetry_dict);
    Py_VISIT(self->acquire);
    Py_VISIT(self->release);
    Py_VISIT(self->wait);
    Py_VISIT(self->barrier);
    Py_VISIT(self->sync_failed);
    Py_VISIT(self->barrier_failed);
    Py_VISIT(self->synced);
    Py_VISIT(self->wake);
    Py_VISIT(self->publish);
    Py_VISIT(self->pub_dict);
    Py_VISIT(self->pub_acquire);
    Py_VISIT(self->pub_release);
    Py_VISIT(self->lock_handle);
    Py_VISIT(self->map_acquire);
    Py_VISIT(self->map_release);
    Py_VISIT(self->map_type);
    Py_VISIT(self->pid);
    Py_VISIT(self->emit_durable);
    return 0;
}

static int
dw_clear(DurableWait *self)
{
    Py_CLEAR(self->bind);
    Py_CLEAR(self->commit);
    Py_CLEAR(self->commit_dict);
    Py_CLEAR(self->state_dict);
    Py_CLEAR(self->file_types);
    Py_CLEAR(self->telemetry_dict);
    Py_CLEAR(self->acquire);
    Py_CLEAR(self->release);
    Py_CLEAR(self->wait);
    Py_CLEAR(self->barrier);
    Py_CLEAR(self->sync_failed);
    Py_CLEAR(self->barrier_failed);
    Py_CLEAR(self->synced);
    Py_CLEAR(self->wake);
    Py_CLEAR(self->publish);
    Py_CLEAR(self->pub_dict);
    Py_CLEAR(self->pub_acquire);
    Py_CLEAR(self->pub_release);
    Py_CLEAR(self->lock_handle);
    Py_CLEAR(self->map_acquire);
    Py_CLEAR(self->map_release);
    Py_CLEAR(self->map_type);
    Py_CLEAR(self->pid);
    Py_CLEAR(self->emit_durable);
    return 0;
}

static void
dw_dealloc(DurableWait *self)
{
    PyObject_GC_UnTrack(self);
    dw_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject DurableWaitType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "segwal.format._encode.DurableWait",
    .tp_basicsize = sizeof(DurableWait),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_vectorcall_offset = offsetof(DurableWait, vectorcall),
    .tp_doc = "A durable single append's wait for its barrier (see log/fastpath.py).",
    .tp_new = dw_new,
    .tp_call = PyVectorcall_Call,
    .tp_dealloc = (destructor)dw_dealloc,
    .tp_traverse = (traverseproc)dw_traverse,
    .tp_clear = (inquiry)dw_clear,
};

int
segwal_add_durable(PyObject *module)
{
    struct {
        PyObject **slot;
        const char *text;
    } names[] = {
        {&s_commit, "commit"},        {&s_busy, "_busy"},         {&s_failed, "_failed"},     {&s_durable_lsn, "durable_lsn"},
        {&s_written_lsn, "written_lsn"}, {&s_resets, "resets"}, {&s_queue, "_queue"},
        {&s_watchers, "_watchers"}, {&s_barriers, "barriers"},  {&s_writer, "writer"},
        {&s_handle, "handle"},      {&s_fd, "_fd"},             {&s_path, "_path"},
        {&s_offset, "offset"},      {&s_synced, "synced"},      {&s_io, "io"},
        {&s_fsyncs, "fsyncs"},      {&s_observers, "_observers"}, {&s_buckets, "fsync_buckets"},
        {&s_seconds, "fsync_seconds"},
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (*names[i].slot == NULL && (*names[i].slot = PyUnicode_InternFromString(names[i].text)) == NULL)
            return -1;
    if (segwal_publication_init() < 0 || PyType_Ready(&DurableWaitType) < 0)
        return -1;
    Py_INCREF(&DurableWaitType);
    if (PyModule_AddObject(module, "DurableWait", (PyObject *)&DurableWaitType) < 0) {
        Py_DECREF(&DurableWaitType);
        return -1;
    }
    return 0;
}
