/* segwal.format._encode.FastAppender: the single-append fast path in one C call.
 *
 *   FastAppender(state, state_dict, acquire, release, slow, failed, durable, clock, max_type,
 *                max_lsn)
 *
 * log/appender.py's fast path (one record, one frame, one write when nothing special is
 * due) without the interpreter: the Python version spends about half of a small append
 * running bytecode. The log's Python objects stay the owners of everything others read:
 * each append reads `state.writer`, `.failure`, `.closed`, the writer's `offset` and
 * `last_lsn`, the commit's `durable_lsn` under the log's lock (`acquire`/`release`, the
 * bound methods of `state.lock`) and writes back `writer.offset`, `.last_lsn`, `.max_ts`,
 * `commit.written_lsn` (plus the index's entry every interval and `commit.wrote` when
 * somebody waits) before the lock is let go, exactly as the Python path does. So rotation,
 * truncation, close, fork and readers need not know this object exists.
 *
 * What it keeps itself: the armed writer's constants (arm(), called by Appender._eligible
 * under the lock; the writer's index too, which SegmentWriter sets once, at construction), the last timestamp handed out (Appender.stamp reads and sets it through
 * `last_ts`) and the tally of fast appends (count, frame bytes), read by stats().
 *
 * Anything it does not handle (no armed writer, a writer no longer the active one, a failed
 * or closed log, a payload that is not bytes or too large for the room left, a bad type,
 * the segment's first record, an exhausted LSN space) goes to `slow(payload, type)`, the
 * general path, after the lock is released: that path raises, rotates and so on. A failed
 * write calls `failed(writer, exc, wrap)` under the lock, which fails the log, discards the
 * unsynced tail and raises (a StorageError with the path when `wrap`: the fd's OSError).
 * With sync="always", `durable(lsn)` waits for the barrier after the lock is released.
 *
 * A direct_io writer (arm's `direct`, its DirectTail) is written in whole aligned blocks,
 * the partial last block's stored bytes in front (_direct.c on a real file's O_DIRECT
 * descriptor; DirectTail.put on any other handle), as SegmentWriter.write would.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <stdint.h>
#include <time.h>
#include <unistd.h>

#include "_direct.h"

#define RECORD_OVERHEAD 44 /* FRAME_HEAD_SIZE + one length */
#define STACK_FRAME 8192

/* _encode.c */
void segwal_fill_record(unsigned char *p, uint32_t seed, uint64_t lsn, uint32_t rtype, uint64_t ts,
                        uint64_t durable, const unsigned char *data, uint32_t size);
PyObject *segwal_refuse(PyObject *const *args);
int segwal_pwrite_all(int fd, const unsigned char *buf, size_t total, uint64_t offset, int keep_gil);

/* A durable log's (sync="always") frame up to this size is written holding the GIL. Under the
 * log's lock no other append can go on anyway, and a small pwrite into the page cache takes
 * about as long as handing the GIL over: released, each appending thread that takes it next
 * only blocks on the log's lock and sleeps again, a convoy of about two more context switches
 * per append (16 threads: 4.5 -> 2.7 per append, 1.5x the appends/s). A durable log's dirty
 * pages are few (every append is fdatasync'd), so the write does not wait on writeback
 * throttling while it holds the GIL; other logs release it as os.pwrite does. */
#define HOLD_GIL_BYTES 4096

typedef struct {
    PyObject_HEAD
    PyObject *state, *acquire, *release, *slow, *failed, *durable, *clock;
    PyObject *writer, *index, *commit, *pwrite; /* writer NULL: disarmed */
    /* A direct_io writer's storage/blocks.py DirectTail, or NULL. With a descriptor (`fd`,
     * then the O_DIRECT one) the frame goes out as whole blocks from `blocks` (_direct.c),
     * the partial block's bytes taken from and written back to `direct.tail`; without one
     * `pwrite` is DirectTail.put itself. */
    PyObject *direct;
    segwal_blocks blocks;
    /* The instance dicts of state, writer and commit, or None: their fields are read and
     * written there directly (a dict lookup with a cached hash), which the generic
     * attribute protocol costs about four times as much as. Python passes a dict only
     * when the class has no attribute of those names (no property, no slot). */
    PyObject *state_dict, *writer_dict, *commit_dict;
    int exact_index;                              /* writer.index is a storage/index.py class */
    int fd;                                       /* -1: encode, then call pwrite */
    uint32_t seed;
    long long first, room, max_payload, max_type, max_lsn;
    uint64_t last_ts, count, bytes;
} FastAppender;

static PyObject *s_writer, *s_failure, *s_closed, *s_offset, *s_last_lsn, *s_max_ts,
    *s_durable_lsn, *s_written_lsn, *s_next, *s_watchers, *s_type, *s_lsns, *s_offsets,
    *s_stamps, *s_interval, *s_tail;

/* obj.name (a new reference), from `dict` when it holds the name. */
static PyObject *
load(PyObject *obj, PyObject *dict, PyObject *name)
{
    if (dict != Py_None) {
        PyObject *value = PyDict_GetItemWithError(dict, name);
        if (value != NULL)
            return Py_NewRef(value);
        if (PyErr_Occurred())
            return NULL;
    }
    return PyObject_GetAttr(obj, name);
}

/* obj.name = value. */
static int
store(PyObject *obj, PyObject *dict, PyObject *name, PyObject *value)
{
    if (dict != Py_None)
        return PyDict_SetItem(dict, name, value);
    return PyObject_SetAttr(obj, name, value);
}

/* A non-negative int attribute below 2**63 into `out`: 1; 0 when it is something else
 * (the append goes the general way); -1 on an error. */
static int
get_index(PyObject *obj, PyObject *dict, PyObject *name, long long *out)
{
    PyObject *value = load(obj, dict, name);
    if (value == NULL)
        return -1;
    int ok = 0;
    if (PyLong_CheckExact(value)) {
        int overflow;
        long long v = PyLong_AsLongLongAndOverflow(value, &overflow);
        if (v == -1 && PyErr_Occurred())
            PyErr_Clear();
        else if (!overflow && v >= 0) {
            *out = v;
            ok = 1;
        }
    }
    Py_DECREF(value);
    return ok;
}

/* Let the lock go, keeping a pending exception pending (and raising release's own if any). */
static int
unlock(FastAppender *self)
{
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyObject *res = PyObject_CallNoArgs(self->release);
    if (res == NULL) {
        Py_XDECREF(type);
        Py_XDECREF(value);
        Py_XDECREF(tb);
        return -1;
    }
    Py_DECREF(res);
    PyErr_Restore(type, value, tb);
    return type == NULL ? 0 : -1;
}

/* The record's timestamp: the clock (clock_gettime as time.time_ns() // 1000 when the log
 * has the default clock), never below the last one. 1, 0 when it cannot be encoded (past
 * 64 bits: *bad is the clock's value, for the encoder's own error), -1 on an error. */
static int
timestamp(FastAppender *self, uint64_t *out, PyObject **bad)
{
    uint64_t ts;
    if (self->clock == Py_None) {
        struct timespec now;
        if (clock_gettime(CLOCK_REALTIME, &now) != 0) {
            PyErr_SetFromErrno(PyExc_OSError);
            return -1;
        }
        long long us = (long long)now.tv_sec * 1000000 + now.tv_nsec / 1000;
        ts = us < 0 ? 0 : (uint64_t)us;
    } else {
        PyObject *value = PyObject_CallNoArgs(self->clock); /* config.now_us: checks the type */
        if (value == NULL)
            return -1;
        if (!PyLong_Check(value)) {
            Py_DECREF(value);
            PyErr_SetString(PyExc_TypeError, "clock() must return an int");
            return -1;
        }
        int sign = _PyLong_Sign(value);
        if (sign < 0) {
            ts = 0; /* below any last timestamp: the last one is taken, as max() does */
        } else {
            ts = PyLong_AsUnsignedLongLong(value);
            if (ts == (uint64_t)-1 && PyErr_Occurred()) {
                PyErr_Clear();
                *bad = value;
                return 0;
            }
        }
        Py_DECREF(value);
    }
    if (ts < self->last_ts)
        ts = self->last_ts; /* never decreasing, as Appender.stamp keeps them */
    else
        self->last_ts = ts;
    *out = ts;
    return 1;
}

/* Whatever stopped a write, or the bookkeeping after one (an OSError, MemoryError, a
 * KeyboardInterrupt at EINTR), fails the log, as the Python path's `except BaseException`
 * does: `failed` (under the lock) raises what the caller gets. */
static void
fail_log(FastAppender *self, int wrap)
{
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb != NULL && value != NULL)
        PyException_SetTraceback(value, tb);
    PyObject *args[3] = {self->writer, value != NULL ? value : Py_None, wrap ? Py_True : Py_False};
    PyObject *res = PyObject_Vectorcall(self->failed, args, 3, NULL);
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
    if (res != NULL) {
        Py_DECREF(res);
        PyErr_SetString(PyExc_SystemError, "FastAppender: failed() returned instead of raising");
    }
}

/* The frame's write; 0, or -1 with the exception raised by `failed` (the log failed). */
static int
write_frame(FastAppender *self, uint64_t offset, uint64_t lsn, uint32_t rtype, uint64_t ts,
            uint64_t durable, PyObject *payload, PyObject *tail)
{
    uint32_t size = (uint32_t)PyBytes_GET_SIZE(payload);
    const unsigned char *data = (const unsigned char *)PyBytes_AS_STRING(payload);
    size_t total = (size_t)RECORD_OVERHEAD + size;
    int wrap = self->fd >= 0;
    if (tail != NULL) { /* direct_io: DirectTail.put's blocks */
        size_t keep = (size_t)PyBytes_GET_SIZE(tail);
        unsigned char *frame = segwal_direct_begin(&self->blocks, PyBytes_AS_STRING(tail), keep,
                                                   total);
        if (frame == NULL)
            goto failed;
        segwal_fill_record(frame, self->seed, lsn, rtype, ts, durable, data, size);
        if (segwal_direct_write(&self->blocks, self->fd, keep, total, offset - keep) < 0)
            goto failed;
        /* The frame is in the file: a failure to note its block fails the log too. */
        PyObject *left = segwal_direct_tail(&self->blocks, keep, total);
        if (left == NULL || PyObject_SetAttr(self->direct, s_tail, left) < 0) {
            Py_XDECREF(left);
            fail_log(self, 0);
            return -1;
        }
        Py_DECREF(left);
        return 0;
    }
    if (wrap) {
        unsigned char stack[STACK_FRAME];
        unsigned char *frame = total <= STACK_FRAME ? stack : PyMem_Malloc(total);
        if (frame == NULL) {
            PyErr_NoMemory();
            goto failed;
        }
        segwal_fill_record(frame, self->seed, lsn, rtype, ts, durable, data, size);
        int keep_gil = total <= HOLD_GIL_BYTES && self->durable != Py_None;
        int rc = segwal_pwrite_all(self->fd, frame, total, offset, keep_gil);
        if (frame != stack)
            PyMem_Free(frame);
        if (rc == 0)
            return 0;
    } else {
        PyObject *frame = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)total);
        if (frame != NULL) {
            segwal_fill_record((unsigned char *)PyBytes_AS_STRING(frame), self->seed, lsn, rtype,
                               ts, durable, data, size);
            PyObject *at = PyLong_FromUnsignedLongLong(offset);
            PyObject *res = NULL;
            if (at != NULL) {
                PyObject *args[2] = {frame, at};
                res = PyObject_Vectorcall(self->pwrite, args, 2, NULL);
                Py_DECREF(at);
            }
            Py_DECREF(frame);
            if (res != NULL) {
                Py_DECREF(res);
                return 0;
            }
        }
    }
failed:
    fail_log(self, wrap);
    return -1;
}

/* Whether `self->writer` may take a payload of `size` now: still the log's writer, the log
 * neither failed nor closed, room left, not the segment's first record; 1 with its offset,
 * last LSN and the durable LSN, 0 when the general path must take it, -1 on an error. */
static int
check_armed(FastAppender *self, Py_ssize_t size, long long *offset_out, long long *last_out,
            long long *durable_out)
{
    long long offset, last;
    PyObject *value = load(self->state, self->state_dict, s_writer);
    if (value == NULL)
        return -1;
    int same = value == self->writer;
    Py_DECREF(value);
    if (!same)
        return 0;
    value = load(self->state, self->state_dict, s_failure);
    if (value == NULL)
        return -1;
    same = value == Py_None;
    Py_DECREF(value);
    if (!same)
        return 0;
    value = load(self->state, self->state_dict, s_closed);
    if (value == NULL)
        return -1;
    same = value == Py_False;
    Py_DECREF(value);
    if (!same)
        return 0;
    int rc = get_index(self->writer, self->writer_dict, s_offset, &offset);
    if (rc <= 0)
        return rc;
    if (size > self->max_payload || offset + size > self->room)
        return 0;
    if ((rc = get_index(self->writer, self->writer_dict, s_last_lsn, &last)) <= 0)
        return rc;
    if (last >= self->max_lsn || last + 1 <= self->first)
        return 0;
    *offset_out = offset;
    *last_out = last;
    return get_index(self->commit, self->commit_dict, s_durable_lsn, durable_out);
}

/* SparseIndex.add (storage/index.py) after its test passed: done here when the index is
 * that class (arm's exact_index) with plain lists, so that no bytecode runs under the log's
 * lock (a GIL switch inside it would convoy every other appending thread on that lock);
 * through the method otherwise. 0, or -1 on an error. */
static int
index_add(FastAppender *self, uint64_t lsn, long long offset, uint64_t ts)
{
    long long interval;
    if (self->exact_index && get_index(self->index, Py_None, s_interval, &interval) > 0) {
        PyObject *lists[3] = {PyObject_GetAttr(self->index, s_lsns),
                              PyObject_GetAttr(self->index, s_offsets),
                              PyObject_GetAttr(self->index, s_stamps)};
        PyObject *items[4] = {PyLong_FromUnsignedLongLong(lsn), PyLong_FromLongLong(offset),
                              PyLong_FromUnsignedLongLong(ts),
                              PyLong_FromLongLong(offset + interval)};
        int rc = -1, plain = 1;
        for (int i = 0; i < 3; i++)
            plain = plain && lists[i] != NULL && PyList_CheckExact(lists[i]);
        if (plain && items[0] && items[1] && items[2] && items[3]) {
            /* The order add keeps; nothing here runs Python code, so no thread sees a
             * half-added entry (an int allocation never starts a garbage collection). */
            rc = 0;
            for (int i = 0; i < 3 && rc == 0; i++)
                rc = PyList_Append(lists[i], items[i]);
            if (rc == 0)
                rc = PyObject_SetAttr(self->index, s_next, items[3]);
        } else if (!PyErr_Occurred()) {
            rc = 1; /* not lists after all: the method */
        }
        for (int i = 0; i < 3; i++)
            Py_XDECREF(lists[i]);
        for (int i = 0; i < 4; i++)
            Py_XDECREF(items[i]);
        if (rc <= 0)
            return rc;
    } else if (PyErr_Occurred()) {
        return -1;
    }
    PyObject *res = PyObject_CallMethod(self->index, "add", "KLK", (unsigned long long)lsn,
                                        offset, (unsigned long long)ts);
    if (res == NULL)
        return -1;
    Py_DECREF(res);
    return 0;
}

/* The locked part: 1 with *lsn_out appended, 0 when the general path must take it, -1 on an
 * error (raised). */
static int
append_locked(FastAppender *self, PyObject *payload, long long rtype, PyObject **lsn_out)
{
    long long offset, last, durable, next;
    Py_ssize_t size = PyBytes_GET_SIZE(payload);
    int rc = check_armed(self, size, &offset, &last, &durable);
    if (rc <= 0)
        return rc;
    uint64_t lsn = (uint64_t)last + 1;
    uint64_t ts;
    PyObject *bad = NULL;
    if ((rc = timestamp(self, &ts, &bad)) < 0)
        return -1;
    if (rc == 0) { /* a clock value the format cannot hold: the encoder's own error */
        PyObject *a[6] = {PyLong_FromUnsignedLong(self->seed), PyLong_FromUnsignedLongLong(lsn),
                          PyLong_FromLongLong(rtype), bad, PyLong_FromLongLong(durable),
                          payload};
        if (a[0] && a[1] && a[2] && a[4])
            segwal_refuse(a);
        for (int i = 0; i < 5; i++)
            Py_XDECREF(a[i]);
        return -1;
    }
    if (self->clock != Py_None) {
        /* The clock is Python code: if it re-entered the log (an append, a rotation, a close,
         * a rewind), what was read above is stale. Look again; anything moved, and the
         * general path starts over (it calls the clock again). */
        long long offset2, last2;
        rc = check_armed(self, size, &offset2, &last2, &durable);
        if (rc <= 0)
            return rc;
        if (offset2 != offset || last2 != last)
            return 0;
    }
    PyObject *tail = NULL;
    if (self->direct != NULL && self->fd >= 0) {
        /* The stored bytes of the partial last block, read after the clock (Python code)
         * ran; ones that cannot be this writer's tail send the append the general way. */
        tail = PyObject_GetAttr(self->direct, s_tail);
        if (tail == NULL)
            return -1;
        if (!PyBytes_CheckExact(tail) ||
            PyBytes_GET_SIZE(tail) != (Py_ssize_t)(offset % SEGWAL_DIRECT_BLOCK)) {
            Py_DECREF(tail);
            return 0;
        }
    }
    rc = write_frame(self, (uint64_t)offset, lsn, (uint32_t)rtype, ts, (uint64_t)durable,
                     payload, tail);
    Py_XDECREF(tail);
    if (rc < 0)
        return -1;
    /* What SegmentWriter.write notes after its pwrite (the segment is not empty, so min_ts
     * stays) and GroupCommit.wrote's store; the index's own test first (one entry per
     * interval). */
    /* From here the frame is in the file: an error (no memory) leaves the writer's fields
     * behind it, so it fails the log like a failed write. */
    if ((rc = get_index(self->index, Py_None, s_next, &next)) < 0)
        goto noted_badly;
    if ((rc == 0 || offset >= next) && index_add(self, lsn, offset, ts) < 0)
        goto noted_badly;
    uint64_t frame = (uint64_t)RECORD_OVERHEAD + (uint64_t)size;
    PyObject *lsn_obj = PyLong_FromUnsignedLongLong(lsn); /* one object for every store */
    if (lsn_obj == NULL)
        goto noted_badly;
    PyObject *end = PyLong_FromUnsignedLongLong((uint64_t)offset + frame);
    PyObject *stamp = PyLong_FromUnsignedLongLong(ts);
    int ok = end != NULL && stamp != NULL &&
             store(self->writer, self->writer_dict, s_offset, end) == 0 &&
             store(self->writer, self->writer_dict, s_last_lsn, lsn_obj) == 0 &&
             store(self->writer, self->writer_dict, s_max_ts, stamp) == 0 &&
             store(self->commit, self->commit_dict, s_written_lsn, lsn_obj) == 0;
    Py_XDECREF(end);
    Py_XDECREF(stamp);
    if (ok) {
        PyObject *value = load(self->commit, self->commit_dict, s_watchers);
        int watched = value == NULL ? -1 : PyObject_IsTrue(value);
        Py_XDECREF(value);
        if (watched > 0) {
            PyObject *res = PyObject_CallMethod(self->commit, "wrote", "O", lsn_obj);
            Py_XDECREF(res);
            watched = res == NULL ? -1 : 0;
        }
        ok = watched >= 0;
    }
    if (!ok) {
        Py_DECREF(lsn_obj);
        goto noted_badly;
    }
    self->count += 1;
    self->bytes += frame;
    *lsn_out = lsn_obj;
    return 1;
noted_badly:
    fail_log(self, 0);
    return -1;
}

/* append(payload, type=0) -> int: the LSN; the general path's result when it takes it. */
static PyObject *
fa_append(FastAppender *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    PyObject *payload = nargs >= 1 ? args[0] : NULL;
    PyObject *type = nargs == 2 ? args[1] : NULL;
    Py_ssize_t nkw = kwnames != NULL ? PyTuple_GET_SIZE(kwnames) : 0;
    if (nkw == 1 && nargs == 1 &&
        PyUnicode_Compare(PyTuple_GET_ITEM(kwnames, 0), s_type) == 0)
        type = args[1];
    else if (nkw != 0 || nargs > 2)
        payload = NULL; /* the general path raises what is wrong with the arguments */
    long long rtype = 0;
    if (type != NULL) {
        int overflow = 0;
        rtype = PyLong_CheckExact(type) ? PyLong_AsLongLongAndOverflow(type, &overflow) : -1;
        if (overflow || rtype < 0 || rtype > self->max_type)
            payload = NULL;
    }
    if (payload != NULL && PyBytes_CheckExact(payload) && self->writer != NULL) {
        PyObject *res = PyObject_CallNoArgs(self->acquire);
        if (res == NULL)
            return NULL;
        Py_DECREF(res);
        PyObject *out = NULL;
        /* The armed writer stays alive through the call, even if a clock re-enters and a
         * rotation disarms it (check_armed then sends the append the general way). */
        PyObject *armed = Py_XNewRef(self->writer);
        int rc = armed == NULL ? 0 : append_locked(self, payload, rtype, &out);
        Py_XDECREF(armed);
        if (unlock(self) < 0 || rc < 0) {
            Py_XDECREF(out);
            return NULL;
        }
        if (rc > 0) {
            if (self->durable == Py_None)
                return out;
            /* sync="always": durable before it returns, waited for outside the lock */
            res = PyObject_Vectorcall(self->durable, &out, 1, NULL);
            if (res == NULL) {
                Py_DECREF(out);
                return NULL;
            }
            Py_DECREF(res);
            return out;
        }
    }
    return PyObject_Vectorcall(self->slow, args, nargsf, kwnames);
}

/* arm(writer, writer_dict, index, commit, commit_dict, fd, pwrite, seed, first_lsn, room,
 * max_payload, exact_index, direct): appends to `writer` may go fast from now on
 * (Appender._eligible, under the lock); the dicts are the objects' __dict__, or None (see
 * FastAppender); exact_index: the index is storage/index.py's own class (see index_add);
 * direct: a direct_io writer's DirectTail, or None (with a descriptor, the O_DIRECT one). */
static PyObject *
fa_arm(FastAppender *self, PyObject *const *args, Py_ssize_t nargs)
{
    long long v[5]; /* fd, seed, first, room, max_payload */
    if (nargs != 13) {
        PyErr_SetString(PyExc_TypeError, "arm() takes 13 arguments");
        return NULL;
    }
    int exact_index = PyObject_IsTrue(args[11]);
    if (exact_index < 0)
        return NULL;
    for (int i = 0; i < 5; i++)
        if ((v[i] = PyLong_AsLongLong(args[i == 0 ? 5 : 6 + i])) == -1 && PyErr_Occurred())
            return NULL;
    if (v[0] < -1 || v[0] > INT_MAX || v[1] < 0 || v[1] > 0xFFFFFFFFLL || v[2] < 0 ||
        v[4] > 0xFFFFFFFFLL || (v[0] < 0 && args[6] == Py_None) ||
        (args[1] != Py_None && !PyDict_Check(args[1])) ||
        (args[4] != Py_None && !PyDict_Check(args[4]))) {
        PyErr_SetString(PyExc_ValueError, "arm(): argument out of range");
        return NULL;
    }
    PyObject **slots[] = {&self->writer, &self->writer_dict, &self->index, &self->commit,
                          &self->commit_dict, NULL, &self->pwrite};
    for (int i = 0; i < 7; i++)
        if (slots[i] != NULL)
            Py_XSETREF(*slots[i], Py_NewRef(args[i]));
    self->fd = (int)v[0];
    self->seed = (uint32_t)v[1];
    self->first = v[2];
    self->room = v[3];
    self->max_payload = v[4];
    self->exact_index = exact_index;
    if (args[12] == Py_None) {
        Py_CLEAR(self->direct);
        segwal_direct_free(&self->blocks);
    } else {
        Py_XSETREF(self->direct, Py_NewRef(args[12])); /* its buffer is kept, grown on demand */
    }
    Py_RETURN_NONE;
}

static PyObject *
fa_disarm(FastAppender *self, PyObject *unused)
{
    Py_CLEAR(self->writer);
    Py_CLEAR(self->index);
    Py_CLEAR(self->commit);
    Py_CLEAR(self->pwrite);
    Py_CLEAR(self->direct);
    segwal_direct_free(&self->blocks);
    Py_XSETREF(self->writer_dict, Py_NewRef(Py_None));
    Py_XSETREF(self->commit_dict, Py_NewRef(Py_None));
    self->fd = -1;
    Py_RETURN_NONE;
}

static PyObject *
fa_tally(FastAppender *self, PyObject *unused)
{
    return Py_BuildValue("(KK)", (unsigned long long)self->count, (unsigned long long)self->bytes);
}

static PyObject *
fa_get_last_ts(FastAppender *self, void *closure)
{
    return PyLong_FromUnsignedLongLong(self->last_ts);
}

static int
fa_set_last_ts(FastAppender *self, PyObject *value, void *closure)
{
    if (value == NULL) {
        PyErr_SetString(PyExc_AttributeError, "last_ts cannot be deleted");
        return -1;
    }
    uint64_t ts = PyLong_AsUnsignedLongLong(value);
    if (ts == (uint64_t)-1 && PyErr_Occurred())
        return -1;
    self->last_ts = ts;
    return 0;
}

static PyObject *
fa_get_writer(FastAppender *self, void *closure)
{
    return Py_NewRef(self->writer != NULL ? self->writer : Py_None);
}

static PyObject *
fa_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    PyObject *state, *state_dict, *acquire, *release, *slow, *failed, *durable, *clock;
    long long max_type, max_lsn;
    if (kwds != NULL && PyDict_GET_SIZE(kwds)) {
        PyErr_SetString(PyExc_TypeError, "FastAppender() takes positional arguments only");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "OOOOOOOOLL:FastAppender", &state, &state_dict, &acquire,
                          &release, &slow, &failed, &durable, &clock, &max_type, &max_lsn))
        return NULL;
    if (state_dict != Py_None && !PyDict_Check(state_dict)) {
        PyErr_SetString(PyExc_TypeError, "FastAppender(): state_dict must be a dict or None");
        return NULL;
    }
    if (!PyCallable_Check(acquire) || !PyCallable_Check(release) || !PyCallable_Check(slow) ||
        !PyCallable_Check(failed) || (durable != Py_None && !PyCallable_Check(durable)) ||
        (clock != Py_None && !PyCallable_Check(clock))) {
        PyErr_SetString(PyExc_TypeError, "FastAppender(): a callback is not callable");
        return NULL;
    }
    if (max_type < 0 || max_type > 0xFFFF || max_lsn < 1) {
        PyErr_SetString(PyExc_ValueError, "FastAppender(): max_type or max_lsn out of range");
        return NULL;
    }
    FastAppender *self = (FastAppender *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    PyObject **slots[] = {&self->state, &self->state_dict, &self->acquire, &self->release,
                          &self->slow, &self->failed, &self->durable, &self->clock,
                          &self->writer_dict, &self->commit_dict};
    PyObject *values[] = {state, state_dict, acquire, release, slow, failed, durable, clock,
                          Py_None, Py_None};
    for (int i = 0; i < 10; i++)
        *slots[i] = Py_NewRef(values[i]);
    self->fd = -1;
    self->max_type = max_type;
    self->max_lsn = max_lsn;
    return (PyObject *)self;
}

static int
fa_traverse(FastAppender *self, visitproc visit, void *arg)
{
    Py_VISIT(self->state);
    Py_VISIT(self->acquire);
    Py_VISIT(self->release);
    Py_VISIT(self->slow);
    Py_VISIT(self->failed);
    Py_VISIT(self->durable);
    Py_VISIT(self->clock);
    Py_VISIT(self->writer);
    Py_VISIT(self->index);
    Py_VISIT(self->commit);
    Py_VISIT(self->pwrite);
    Py_VISIT(self->direct);
    Py_VISIT(self->state_dict);
    Py_VISIT(self->writer_dict);
    Py_VISIT(self->commit_dict);
    return 0;
}

static int
fa_clear(FastAppender *self)
{
    Py_CLEAR(self->state);
    Py_CLEAR(self->acquire);
    Py_CLEAR(self->release);
    Py_CLEAR(self->slow);
    Py_CLEAR(self->failed);
    Py_CLEAR(self->durable);
    Py_CLEAR(self->clock);
    Py_CLEAR(self->writer);
    Py_CLEAR(self->index);
    Py_CLEAR(self->commit);
    Py_CLEAR(self->pwrite);
    Py_CLEAR(self->direct);
    Py_CLEAR(self->state_dict);
    Py_CLEAR(self->writer_dict);
    Py_CLEAR(self->commit_dict);
    return 0;
}

static void
fa_dealloc(FastAppender *self)
{
    PyObject_GC_UnTrack(self);
    fa_clear(self);
    segwal_direct_free(&self->blocks);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef fa_methods[] = {
    {"append", (PyCFunction)(void (*)(void))fa_append, METH_FASTCALL | METH_KEYWORDS,
     "append(payload, type=0) -> int: one record appended, its LSN."},
    {"arm", (PyCFunction)(void (*)(void))fa_arm, METH_FASTCALL,
     "arm(writer, writer_dict, index, commit, commit_dict, fd, pwrite, seed, first_lsn, room, "
     "max_payload, exact_index, direct)."},
    {"disarm", (PyCFunction)fa_disarm, METH_NOARGS, "disarm(): every append goes the general way."},
    {"tally", (PyCFunction)fa_tally, METH_NOARGS, "tally() -> (appends, frame bytes)."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef fa_getset[] = {
    {"last_ts", (getter)fa_get_last_ts, (setter)fa_set_last_ts, "the last timestamp", NULL},
    {"writer", (getter)fa_get_writer, NULL, "the armed writer, or None", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject FastAppenderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "segwal.format._encode.FastAppender",
    .tp_basicsize = sizeof(FastAppender),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "The single-append fast path of one log (see log/appender.py).",
    .tp_new = fa_new,
    .tp_dealloc = (destructor)fa_dealloc,
    .tp_traverse = (traverseproc)fa_traverse,
    .tp_clear = (inquiry)fa_clear,
    .tp_methods = fa_methods,
    .tp_getset = fa_getset,
};

int
segwal_add_appender(PyObject *module)
{
    struct {
        PyObject **slot;
        const char *text;
    } names[] = {
        {&s_writer, "writer"},         {&s_failure, "failure"},   {&s_closed, "closed"},
        {&s_offset, "offset"},         {&s_last_lsn, "last_lsn"}, {&s_max_ts, "max_ts"},
        {&s_durable_lsn, "durable_lsn"}, {&s_written_lsn, "written_lsn"},
        {&s_next, "_next"},            {&s_watchers, "_watchers"}, {&s_type, "type"},
        {&s_lsns, "lsns"},             {&s_offsets, "offsets"},   {&s_stamps, "stamps"},
        {&s_interval, "interval"},     {&s_tail, "tail"},
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (*names[i].slot == NULL && (*names[i].slot = PyUnicode_InternFromString(names[i].text)) == NULL)
            return -1;
    if (PyType_Ready(&FastAppenderType) < 0)
        return -1;
    Py_INCREF(&FastAppenderType);
    if (PyModule_AddObject(module, "FastAppender", (PyObject *)&FastAppenderType) < 0) {
        Py_DECREF(&FastAppenderType);
        return -1;
    }
    return 0;
}
