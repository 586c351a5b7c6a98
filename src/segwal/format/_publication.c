/* segwal.format._encode: the LOCK publication of a durable append (Publisher.publish), in C.
 *
 * After DurableWait's barrier (_durable.c), for a writer whose LOCK is mapped from a file
 * (storage/lockfile.py LockHandle over an OsSharedMap): under the Publisher's lock, the
 * durable LSN capped by the group commit's (a rewind may have lowered it), skipped when
 * not past the last one published; lock.encode's 116 bytes (pid, durable LSN, rewinds,
 * LogState.published_counters, their CRC32C, the generation); the seqlock write of
 * OsSharedMap.store_sequenced under the LockHandle's mutex; the Durable event. Whatever is
 * unusual (a replaced on_durable, no mapping or a closed one, a value past 64 bits) goes to
 * Publisher.publish, which does it all its own way.
 */

#include "_durable.h" /* Python.h first */

#include <stdint.h>
#include <string.h>

uint32_t segwal_crc32c(const unsigned char *p, size_t n); /* _encode.c */

static PyObject *s_tally, *s_counters, *s_io, *s_appends, *s_records, *s_payload_bytes,
    *s_written_bytes, *s_fsyncs, *s_dir_fsyncs, *s_durable_lsn, *s_published, *s_generation, *s_rewinds, *s_map, *s_sequence, *s_observers, *s_on_durable;

static void
put64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

/* An int as the u64 struct.pack("Q") takes: 1, or 0 when it is negative or too large. */
static int
as_u64(PyObject *value, uint64_t *out)
{
    if (!PyLong_Check(value) || _PyLong_Sign(value) < 0)
        return 0;
    *out = PyLong_AsUnsignedLongLong(value);
    if (*out == (uint64_t)-1 && PyErr_Occurred()) {
        PyErr_Clear();
        return 0;
    }
    return 1;
}

#define LOCK_SIZE 116      /* format/lock.py SIZE */
#define LOCK_SEQUENCE 120  /* SEQUENCE_OFFSET */
#define LOCK_COUNTERS 48   /* _COUNTERS_AT */

/* The u64 a counter is published as: an int masked to 64 bits (counters wrap, as u64
 * counters do, and as lock.encode masks them). 1, 0 when it is not an int, -1 on an error. */
static int
as_counter(PyObject *value, uint64_t *out)
{
    if (value == NULL || !PyLong_Check(value))
        return PyErr_Occurred() ? -1 : 0;
    *out = PyLong_AsUnsignedLongLongMask(value);
    return *out == (uint64_t)-1 && PyErr_Occurred() ? -1 : 1;
}

/* LogState.published_counters() into `out` without a call into Python: the counters and
 * io dicts plus the compiled appender's tally. 1; 0 when the state is not as expected (no
 * compiled tally: Python's method decides), -1 on an error. */
static int
counters_of(DurableWait *self, uint64_t *out)
{
    PyObject *tally = PyDict_GetItemWithError(self->state_dict, s_tally);
    PyObject *counters = tally != NULL ? PyDict_GetItemWithError(self->state_dict, s_counters) : NULL;
    PyObject *io = counters != NULL ? PyDict_GetItemWithError(self->state_dict, s_io) : NULL;
    if (io == NULL || !PyCFunction_Check(tally) || !PyDict_CheckExact(counters) ||
        !PyDict_CheckExact(io))
        return PyErr_Occurred() ? -1 : 0;
    PyObject *pair = PyObject_CallNoArgs(tally);
    if (pair == NULL)
        return -1;
    uint64_t n, frames, v[6];
    int rc = PyTuple_CheckExact(pair) && PyTuple_GET_SIZE(pair) == 2;
    if (rc == 1)
        rc = as_counter(PyTuple_GET_ITEM(pair, 0), &n);
    if (rc == 1)
        rc = as_counter(PyTuple_GET_ITEM(pair, 1), &frames);
    Py_DECREF(pair);
    PyObject *sources[6] = {counters, counters, counters, io, io, io};
    PyObject *keys[6] = {s_appends, s_records, s_payload_bytes, s_written_bytes, s_fsyncs, s_dir_fsyncs};
    for (int i = 0; i < 6 && rc == 1; i++)
        rc = as_counter(PyDict_GetItemWithError(sources[i], keys[i]), &v[i]);
    if (rc != 1)
        return rc;
    out[0] = v[0] + n;
    out[1] = v[1] + n;
    out[2] = v[2] + frames - n * self->record_overhead;
    out[3] = v[3] + frames;
    out[4] = v[4];
    out[5] = v[5];
    return 1;
}

/* lock.encode(pid, durable, rewinds, counters, generation) into `raw`: 1, 0 when a value
 * does not fit (Python's encoder decides), -1 on an error. */
static int
encode_lock(unsigned char *raw, PyObject *pid, uint64_t durable, PyObject *rewinds,
            const uint64_t *counters, PyObject *generation)
{
    uint64_t v_pid, v_rewinds, v_generation;
    if (!as_u64(pid, &v_pid) || !as_u64(rewinds, &v_rewinds) || !as_u64(generation, &v_generation))
        return 0;
    memcpy(raw, "SWLOCK01", 8);
    put64(raw + 8, v_pid);
    put64(raw + 16, durable);
    put64(raw + 24, ~durable);
    put64(raw + 32, v_rewinds);
    put64(raw + 40, ~v_rewinds);
    for (int i = 0; i < 6; i++)
        put64(raw + LOCK_COUNTERS + 8 * i, counters[i]);
    uint32_t crc = segwal_crc32c(raw + LOCK_COUNTERS, 48);
    for (int i = 0; i < 4; i++)
        raw[96 + i] = (unsigned char)(crc >> (8 * i));
    put64(raw + 100, v_generation);
    put64(raw + 108, ~v_generation);
    return 1;
}

/* The seqlock write of LockHandle.publish into LOCK's mapping (OsSharedMap.store_sequenced):
 * the sequence odd, the bytes, the sequence even. 1, 0 when the mapping is gone or not a
 * real one (Python's path), -1 on an error. Called with the LockHandle's mutex held. */
static int
store_lock(DurableWait *self, const unsigned char *raw)
{
    PyObject *mapping = PyObject_GetAttr(self->lock_handle, s_map);
    if (mapping == NULL)
        return -1;
    if ((PyObject *)Py_TYPE(mapping) != self->map_type) {
        Py_DECREF(mapping);
        return 0;
    }
    PyObject *region = PyObject_GetAttr(mapping, s_map);
    Py_DECREF(mapping);
    if (region == NULL)
        return -1;
    PyObject *seq_obj = region == Py_None ? NULL : PyObject_GetAttr(self->lock_handle, s_sequence);
    uint64_t sequence;
    Py_buffer view;
    int ok = seq_obj != NULL && as_u64(seq_obj, &sequence) &&
             PyObject_GetBuffer(region, &view, PyBUF_WRITABLE) == 0;
    Py_XDECREF(seq_obj);
    Py_DECREF(region);
    if (!ok)
        return PyErr_Occurred() ? -1 : 0;
    if (view.len < LOCK_SEQUENCE + 8 || ((uintptr_t)view.buf & 7) != 0) {
        PyBuffer_Release(&view);
        return 0;
    }
    sequence += 2;
    unsigned char *base = view.buf;
    uint64_t *word = (uint64_t *)(base + LOCK_SEQUENCE);
    __atomic_store_n(word, sequence - 1, __ATOMIC_RELEASE);
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    memcpy(base, raw, LOCK_SIZE);
    __atomic_store_n(word, sequence, __ATOMIC_RELEASE);
    PyBuffer_Release(&view);
    PyObject *next = PyLong_FromUnsignedLongLong(sequence);
    if (next == NULL)
        return -1;
    int rc = PyObject_SetAttr(self->lock_handle, s_sequence, next);
    Py_DECREF(next);
    return rc < 0 ? -1 : 1;
}

/* Publisher.publish(target) for a writer whose LOCK is mapped: 0, or -1 on an error; the
 * Python publication (the `publish` hook) when anything is unusual. */
int
segwal_publish(DurableWait *self, PyObject *target)
{
    /* The commit's on_durable now: a replaced one (a test's) is called as Python would. */
    PyObject *current = field(self->commit_dict, s_on_durable);
    if (current == NULL)
        return -1;
    if (self->pub_dict == NULL || current != self->publish)
        return call1(current, target);
    if (call0(self->pub_acquire) < 0)
        return -1;
    /* Never more than the group commit holds durable now (a rewind may have reset it). */
    PyObject *durable = field(self->commit_dict, s_durable_lsn);
    int lower = durable == NULL ? -1 : PyObject_RichCompareBool(durable, target, Py_LT);
    PyObject *lsn = lower > 0 ? durable : target;
    PyObject *published = lower < 0 ? NULL : field(self->pub_dict, s_published);
    int stale = published == NULL ? -1 : PyObject_RichCompareBool(lsn, published, Py_LE);
    if (stale != 0) {
        if (stale > 0)
            return call0(self->pub_release);
        release_keeping(self->pub_release);
        return -1;
    }
    Py_INCREF(lsn);
    uint64_t value;
    unsigned char raw[LOCK_SIZE];
    int rc = as_u64(lsn, &value);
    uint64_t counters[6];
    if (rc)
        rc = counters_of(self, counters);
    PyObject *rewinds = rc > 0 ? field(self->state_dict, s_rewinds) : NULL;
    PyObject *generation = rewinds != NULL ? field(self->pub_dict, s_generation) : NULL;
    PyObject *pid = generation != NULL ? PyList_GetItem(self->pid, 0) : NULL;
    rc = pid == NULL ? (PyErr_Occurred() ? -1 : rc > 0 ? 0 : rc)
                     : encode_lock(raw, pid, value, rewinds, counters, generation);
    if (rc > 0 && (rc = call0(self->map_acquire) == 0 ? 1 : -1) > 0) {
        rc = store_lock(self, raw);
        if (call0(self->map_release) < 0)
            rc = -1;
    }
    if (rc > 0)
        rc = PyDict_SetItem(self->pub_dict, s_published, lsn) < 0 ? -1 : 1;
    if (rc < 0) {
        release_keeping(self->pub_release);
        Py_DECREF(lsn);
        return -1;
    }
    if (call0(self->pub_release) < 0) {
        Py_DECREF(lsn);
        return -1;
    }
    if (rc == 0) /* not stored: Publisher.publish does it all again, its own way */
        rc = call1(self->publish, target);
    else {
        PyObject *observers = field(self->state_dict, s_observers);
        int observed = observers == NULL ? -1 : PyObject_IsTrue(observers);
        rc = observed < 0 ? -1 : observed ? call1(self->emit_durable, lsn) : 0;
    }
    Py_DECREF(lsn);
    return rc;
}

int
segwal_publication_init(void)
{
    struct {
        PyObject **slot;
        const char *text;
    } names[] = {
        {&s_durable_lsn, "durable_lsn"}, {&s_published, "_published"},
        {&s_generation, "generation"},   {&s_rewinds, "rewinds"},
        {&s_map, "_map"},                {&s_sequence, "_sequence"},
        {&s_observers, "_observers"},    {&s_on_durable, "_on_durable"},
        {&s_tally, "tally"},             {&s_counters, "counters"},
        {&s_io, "io"},                   {&s_appends, "appends"},
        {&s_records, "records"},         {&s_payload_bytes, "payload_bytes"},
        {&s_written_bytes, "written_bytes"}, {&s_fsyncs, "fsyncs"},
        {&s_dir_fsyncs, "dir_fsyncs"},
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (*names[i].slot == NULL && (*names[i].slot = PyUnicode_InternFromString(names[i].text)) == NULL)
            return -1;
    return 0;
}
