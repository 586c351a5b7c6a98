/* segwal.format._speedups: the compiled twin of segwal/format/records.py.
 *
 * Its functions, with the signatures, checks (in the same order) and exceptions of their
 * pure reference in records.py:
 *
 *   record_spans(buf, table, count, end) -> list[tuple[int, int]]
 *   decode_records(buf, table, count, end, first_lsn, record_type, timestamp_us,
 *                  skip=0, stop=None) -> list[Record]
 *
 *   payload_offsets(buf, table, count, end) -> bytes (count + 1 native u64 offsets)
 *   decode_payloads(buf, table, count, end, skip, stop) -> list[bytes]
 *   length_total(buf, table, count) -> int
 *   cached_record(firsts, words, blobs, used, lsn) -> Record | None (frame cache hits)
 *
 * plus bind(Record, FormatError, MAX_LSN), which records.py calls once at import so that the
 * records built here are segwal.types.Record and the errors segwal's FormatError.
 *
 * The buffer is taken through the buffer protocol (bytes, bytearray, memoryview, mmap...)
 * and never copied whole: each payload is copied once, into its own bytes object. Every
 * length is checked against the frame end before a byte of the payloads is touched, in
 * 64-bit arithmetic, so a lying length raises FormatError and never reads out of bounds.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

static PyTypeObject *record_type = NULL; /* segwal.types.Record, a tuple subclass */
static PyObject *format_error = NULL;    /* segwal.format.layout.FormatError */
static long long max_lsn = 0;            /* segwal.format.layout.MAX_LSN */
static PyObject *zero = NULL;            /* the int 0, for messages */

static inline uint64_t
load_u32le(const unsigned char *p)
{
    return (uint64_t)p[0] | ((uint64_t)p[1] << 8) | ((uint64_t)p[2] << 16) |
           ((uint64_t)p[3] << 24);
}

/* An integer argument as a Py_ssize_t, through __index__ like operator.index. A value past
 * the Py_ssize_t range is clipped (never an OverflowError), so the bound checks below see
 * it as the absurd offset it is, as the pure path does with its unbounded ints. */
static int
as_ssize(PyObject *obj, Py_ssize_t *out)
{
    PyObject *num = PyNumber_Index(obj);
    if (num == NULL)
        return -1;
    *out = PyNumber_AsSsize_t(num, NULL);
    Py_DECREF(num);
    return 0;
}

static int
check_bound(void)
{
    if (record_type == NULL || format_error == NULL) {
        PyErr_SetString(PyExc_RuntimeError,
                        "segwal.format._speedups is not bound: import segwal.format.records");
        return -1;
    }
    return 0;
}

/* `lsn` is the first LSN as a Python int (NULL: 0), shown in the message as it was given. */
static int
check_args(Py_ssize_t table, Py_ssize_t count, Py_ssize_t end, PyObject *lsn, int lsn_negative,
           Py_ssize_t skip, Py_ssize_t stop)
{
    if (table < 0 || count < 0 || end < 0 || lsn_negative) {
        PyErr_Format(PyExc_ValueError,
                     "negative frame offset, count or LSN (table %zd, count %zd, end %zd, "
                     "first LSN %S)",
                     table, count, end, lsn != NULL ? lsn : zero);
        return -1;
    }
    if (!(0 <= skip && skip <= stop && stop <= count)) {
        PyErr_Format(PyExc_ValueError, "records %zd..%zd are not within the frame's %zd", skip,
                     stop, count);
        return -1;
    }
    return 0;
}

/* The checks of records._lengths, in its order; on success the table lies in the buffer and
 * its lengths add up to exactly the bytes between it and `end`. `lsn_big` says first_lsn did
 * not fit a long long (it is then certainly past MAX_LSN). */
static int
check_lengths(const void *data, Py_ssize_t size, Py_ssize_t table, Py_ssize_t count,
              Py_ssize_t end, long long first_lsn, int lsn_big, PyObject *lsn_obj)
{
    if (end > size) {
        PyErr_Format(format_error, "frame end %zd is past the buffer of %zd bytes", end, size);
        return -1;
    }
    if (table > end || count > (end - table) / 4) {
        PyErr_Format(format_error, "length table of %zd records runs past the frame end %zd",
                     count, end);
        return -1;
    }
    if (count && (lsn_big || first_lsn > max_lsn - (long long)count + 1)) {
        PyErr_Format(format_error, "frame LSNs from %S are out of range", lsn_obj);
        return -1;
    }
    /* count <= end / 4 < 2**61, each length < 2**32: the sum fits 64 bits. */
    const unsigned char *p = (const unsigned char *)data + table;
    uint64_t total = 0;
    for (Py_ssize_t i = 0; i < count; i++, p += 4)
        total += load_u32le(p);
    if (total != (uint64_t)(end - table - 4 * count)) {
        PyErr_SetString(format_error, "record lengths disagree with the frame's body size");
        return -1;
    }
    return 0;
}

static PyObject *
bind(PyObject *module, PyObject *args)
{
    PyObject *rec, *err;
    long long lsn;
    if (!PyArg_ParseTuple(args, "OOL:bind", &rec, &err, &lsn))
        return NULL;
    if (!PyType_Check(rec) || !PyType_IsSubtype((PyTypeObject *)rec, &PyTuple_Type) ||
        ((PyTypeObject *)rec)->tp_basicsize != PyTuple_Type.tp_basicsize) {
        PyErr_SetString(PyExc_TypeError, "bind: Record must be a tuple subclass without slots");
        return NULL;
    }
    if (!PyExceptionClass_Check(err)) {
        PyErr_SetString(PyExc_TypeError, "bind: FormatError must be an exception class");
        return NULL;
    }
    if (lsn <= 0) {
        PyErr_SetString(PyExc_ValueError, "bind: MAX_LSN must be positive");
        return NULL;
    }
    Py_INCREF(rec);
    Py_INCREF(err);
    Py_XSETREF(record_type, (PyTypeObject *)rec);
    Py_XSETREF(format_error, err);
    max_lsn = lsn;
    Py_RETURN_NONE;
}

/* The prologue of the functions over one frame's lengths table, taking (buf, table, count,
 * end) or (buf, table, count, end, skip, stop): the arguments parsed and checked, the buffer
 * taken and its lengths table checked. 0: `view` is held and the caller releases it; -1: an
 * exception is set and nothing is held. */
static int
open_frame(const char *name, PyObject *const *args, Py_ssize_t nargs, Py_ssize_t want,
           Py_ssize_t *table, Py_ssize_t *count, Py_ssize_t *end, Py_ssize_t *skip,
           Py_ssize_t *stop, Py_buffer *view)
{
    if (check_bound() < 0)
        return -1;
    if (nargs != want) {
        PyErr_Format(PyExc_TypeError, "%s() takes %zd arguments (%zd given)", name, want, nargs);
        return -1;
    }
    *skip = 0;
    *stop = 0;
    if (as_ssize(args[1], table) < 0 || as_ssize(args[2], count) < 0 ||
        as_ssize(args[3], end) < 0)
        return -1;
    if (want == 6 && (as_ssize(args[4], skip) < 0 || as_ssize(args[5], stop) < 0))
        return -1;
    if (check_args(*table, *count, *end, NULL, 0, *skip, *stop) < 0)
        return -1;
    if (PyObject_GetBuffer(args[0], view, PyBUF_SIMPLE) < 0)
        return -1;
    if (check_lengths(view->buf, view->len, *table, *count, *end, 0, 0, NULL) < 0) {
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

static PyObject *
record_spans(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t table, count, end, skip, stop;
    Py_buffer view;
    PyObject *list = NULL;

    if (open_frame("record_spans", args, nargs, 4, &table, &count, &end, &skip, &stop, &view) < 0)
        return NULL;
    const unsigned char *buf = (const unsigned char *)view.buf;
    list = PyList_New(count);
    if (list == NULL)
        goto done;
    Py_ssize_t pos = table + 4 * count;
    const unsigned char *p = buf + table;
    for (Py_ssize_t i = 0; i < count; i++, p += 4) {
        Py_ssize_t next = pos + (Py_ssize_t)load_u32le(p);
        PyObject *span = Py_BuildValue("(nn)", pos, next);
        if (span == NULL) {
            Py_CLEAR(list);
            goto done;
        }
        PyList_SET_ITEM(list, i, span);
        pos = next;
    }
done:
    PyBuffer_Release(&view);
    return list;
}

/* Builds records skip..stop-1 of a frame whose every bound check_lengths has passed. */
static PyObject *
build_records(const void *data, Py_ssize_t table, Py_ssize_t count, long long first_lsn,
              PyObject *rtype, PyObject *stamp, Py_ssize_t skip, Py_ssize_t stop)
{
    const unsigned char *buf = data;
    const unsigned char *p = buf + table;
    Py_ssize_t pos = table + 4 * count;
    for (Py_ssize_t i = 0; i < skip; i++, p += 4)
        pos += (Py_ssize_t)load_u32le(p);
    /* A record of ints and bytes can be in no reference cycle: leave it out of the
     * collector's lists (CPython untracks such tuples itself, but only once a collection
     * has traversed them, and a frame's records stay alive together in the list). */
    int untrack = PyLong_CheckExact(rtype) && PyLong_CheckExact(stamp);
    PyObject *list = PyList_New(stop - skip);
    if (list == NULL)
        return NULL;
    for (Py_ssize_t i = skip; i < stop; i++, p += 4) {
        Py_ssize_t len = (Py_ssize_t)load_u32le(p);
        /* The 4 slots start NULL; a record is filled before any other allocation that
         * could run the garbage collector, and tuple dealloc skips NULL slots. */
        PyObject *rec = record_type->tp_alloc(record_type, 4);
        if (rec == NULL)
            goto fail;
        PyList_SET_ITEM(list, i - skip, rec);
        Py_INCREF(rtype);
        PyTuple_SET_ITEM(rec, 1, rtype);
        Py_INCREF(stamp);
        PyTuple_SET_ITEM(rec, 2, stamp);
        PyObject *lsn = PyLong_FromLongLong(first_lsn + (long long)i);
        if (lsn == NULL)
            goto fail;
        PyTuple_SET_ITEM(rec, 0, lsn);
        PyObject *payload = PyBytes_FromStringAndSize((const char *)buf + pos, len);
        if (payload == NULL)
            goto fail;
        PyTuple_SET_ITEM(rec, 3, payload);
        if (untrack)
            PyObject_GC_UnTrack(rec);
        pos += len;
    }
    return list;
fail:
    Py_DECREF(list);
    return NULL;
}

static PyObject *
decode_records_impl(PyObject *buf_obj, PyObject *table_obj, PyObject *count_obj,
                    PyObject *end_obj, PyObject *lsn_obj, PyObject *rtype, PyObject *stamp,
                    PyObject *skip_obj, PyObject *stop_obj)
{
    Py_ssize_t table, count, end, skip = 0, stop;
    PyObject *lsn_index, *list = NULL;
    Py_buffer view;
    int overflow = 0;
    long long first_lsn;

    if (check_bound() < 0)
        return NULL;
    /* Conversions in the order of the pure path: table, count, end, first_lsn, skip, stop. */
    if (as_ssize(table_obj, &table) < 0 || as_ssize(count_obj, &count) < 0 ||
        as_ssize(end_obj, &end) < 0)
        return NULL;
    lsn_index = PyNumber_Index(lsn_obj);
    if (lsn_index == NULL)
        return NULL;
    first_lsn = PyLong_AsLongLongAndOverflow(lsn_index, &overflow);
    if (first_lsn == -1 && PyErr_Occurred())
        goto out;
    if (skip_obj != NULL && as_ssize(skip_obj, &skip) < 0)
        goto out;
    if (stop_obj == NULL || stop_obj == Py_None)
        stop = count;
    else if (as_ssize(stop_obj, &stop) < 0)
        goto out;
    if (check_args(table, count, end, lsn_index, overflow < 0 || (!overflow && first_lsn < 0),
                   skip, stop) < 0)
        goto out;
    if (PyObject_GetBuffer(buf_obj, &view, PyBUF_SIMPLE) < 0)
        goto out;
    if (check_lengths(view.buf, view.len, table, count, end, first_lsn, overflow > 0,
                      lsn_index) == 0)
        list = build_records(view.buf, table, count, first_lsn, rtype, stamp, skip, stop);
    PyBuffer_Release(&view);
out:
    Py_DECREF(lsn_index);
    return list;
}

static PyObject *
decode_records(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"buf",         "table",        "count",
                                        "end",         "first_lsn",    "record_type",
                                        "timestamp_us", "skip",        "stop"};
    PyObject *a[9] = {NULL};
    Py_ssize_t nkw = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames);

    if (nargs > 9) {
        PyErr_Format(PyExc_TypeError, "decode_records() takes at most 9 arguments (%zd given)",
                     nargs);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < nargs; i++)
        a[i] = args[i];
    for (Py_ssize_t k = 0; k < nkw; k++) {
        PyObject *key = PyTuple_GET_ITEM(kwnames, k);
        Py_ssize_t i = 0;
        while (i < 9 && PyUnicode_CompareWithASCIIString(key, names[i]) != 0)
            i++;
        if (i == 9) {
            PyErr_Format(PyExc_TypeError,
                         "decode_records() got an unexpected keyword argument '%U'", key);
            return NULL;
        }
        if (a[i] != NULL) {
            PyErr_Format(PyExc_TypeError,
                         "decode_records() got multiple values for argument '%s'", names[i]);
            return NULL;
        }
        a[i] = args[nargs + k];
    }
    for (int i = 0; i < 7; i++) {
        if (a[i] == NULL) {
            PyErr_Format(PyExc_TypeError, "decode_records() missing required argument '%s'",
                         names[i]);
            return NULL;
        }
    }
    return decode_records_impl(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8]);
}

/* length_total(buf, table, count) -> int: the sum of the `count` u32 lengths at `table`,
 * for the frame check (scanner.check), which otherwise builds a tuple of `count` ints to add
 * them up on every read of a frame. ValueError when the table is not inside the buffer. */
static PyObject *
length_total(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_Format(PyExc_TypeError, "length_total() takes 3 arguments (%zd given)", nargs);
        return NULL;
    }
    Py_ssize_t table, count;
    if (as_ssize(args[1], &table) < 0 || as_ssize(args[2], &count) < 0)
        return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0)
        return NULL;
    if (table < 0 || count < 0 || table > view.len || count > (view.len - table) / 4) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "length table is not inside the buffer");
        return NULL;
    }
    const unsigned char *p = (const unsigned char *)view.buf + table;
    uint64_t total = 0;
    for (Py_ssize_t i = 0; i < count; i++, p += 4)
        total += load_u32le(p);
    PyBuffer_Release(&view);
    return PyLong_FromUnsignedLongLong(total);
}

/* payload_offsets(buf, table, count, end) -> bytes: the count + 1 offsets in `buf` where
 * each payload starts (and the last ends), as native unsigned 64-bit words, after the
 * checks of record_spans. The frame cache keeps them beside a checked frame so that a point
 * read slices its payload in O(1) instead of summing the lengths before it. */
static PyObject *
payload_offsets(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t table, count, end, skip, stop;
    Py_buffer view;
    PyObject *out = NULL;

    if (open_frame("payload_offsets", args, nargs, 4, &table, &count, &end, &skip, &stop,
                   &view) < 0)
        return NULL;
    const unsigned char *buf = (const unsigned char *)view.buf;
    out = PyBytes_FromStringAndSize(NULL, (count + 1) * (Py_ssize_t)sizeof(uint64_t));
    if (out == NULL)
        goto done;
    uint64_t *offsets = (uint64_t *)PyBytes_AS_STRING(out);
    uint64_t pos = (uint64_t)(table + 4 * count);
    const unsigned char *p = buf + table;
    offsets[0] = pos;
    for (Py_ssize_t i = 0; i < count; i++, p += 4) {
        pos += load_u32le(p);
        offsets[i + 1] = pos;
    }
done:
    PyBuffer_Release(&view);
    return out;
}

/* decode_payloads(buf, table, count, end, skip, stop) -> list[bytes]: payloads skip..stop-1
 * of a frame, after the checks of record_spans; what Wal.replay_frames hands out, one list
 * per frame, without a Record per payload. */
static PyObject *
decode_payloads(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t table, count, end, skip, stop;
    Py_buffer view;
    PyObject *list = NULL;

    if (open_frame("decode_payloads", args, nargs, 6, &table, &count, &end, &skip, &stop,
                   &view) < 0)
        return NULL;
    const unsigned char *buf = (const unsigned char *)view.buf;
    list = PyList_New(stop - skip);
    if (list == NULL)
        goto done;
    const unsigned char *p = buf + table;
    Py_ssize_t pos = table + 4 * count;
    for (Py_ssize_t i = 0; i < skip; i++, p += 4)
        pos += (Py_ssize_t)load_u32le(p);
    for (Py_ssize_t i = skip; i < stop; i++, p += 4) {
        Py_ssize_t len = (Py_ssize_t)load_u32le(p);
        PyObject *payload = PyBytes_FromStringAndSize((const char *)buf + pos, len);
        if (payload == NULL) {
            Py_CLEAR(list);
            goto done;
        }
        PyList_SET_ITEM(list, i - skip, payload);
        pos += len;
    }
done:
    PyBuffer_Release(&view);
    return list;
}

/* cached_record(firsts, words, blobs, used, lsn) -> Record | None: the hit path of the frame
 * cache (segwal/log/framecache.py, whose FrameCache._record_py is the pure reference).
 * `firsts` is a buffer of the frames' first LSNs (native i64, sorted), searched alone so the
 * search stays in a few cache lines; `words` has a row of five native u64 per frame (first
 * LSN, stop LSN, type, timestamp, base), `blobs` the list of the frames' bytes (plain body,
 * then count + 1 u64 payload offsets from `base`), `used` a bytearray of one flag per frame.
 * None when no frame holds `lsn`. Every offset is checked against its blob before a byte is
 * copied (FormatError: a table that lies). */
static PyObject *
cached_record(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (check_bound() < 0)
        return NULL;
    if (nargs != 5) {
        PyErr_Format(PyExc_TypeError, "cached_record() takes 5 arguments (%zd given)", nargs);
        return NULL;
    }
    PyObject *blobs = args[2], *used = args[3], *lsn_obj = args[4];
    if (!PyList_Check(blobs) || !PyByteArray_Check(used) || !PyLong_CheckExact(lsn_obj)) {
        PyErr_SetString(PyExc_TypeError, "cached_record(firsts, words, list, bytearray, int)");
        return NULL;
    }
    int overflow = 0;
    long long lsn = PyLong_AsLongLongAndOverflow(lsn_obj, &overflow);
    if (lsn == -1 && PyErr_Occurred())
        return NULL;
    if (overflow || lsn < 0)
        Py_RETURN_NONE;
    Py_buffer view, keys;
    if (PyObject_GetBuffer(args[0], &keys, PyBUF_SIMPLE) < 0)
        return NULL;
    if (PyObject_GetBuffer(args[1], &view, PyBUF_SIMPLE) < 0) {
        PyBuffer_Release(&keys);
        return NULL;
    }
    PyObject *result = NULL;
    uint64_t want = (uint64_t)lsn, row[5];
    Py_ssize_t rows = view.len / (Py_ssize_t)sizeof(row);
    if (rows != keys.len / (Py_ssize_t)sizeof(int64_t) || rows > PyList_GET_SIZE(blobs) ||
        rows > PyByteArray_GET_SIZE(used)) {
        PyErr_SetString(PyExc_ValueError, "cached_record: firsts, rows, blobs and flags differ");
        goto done;
    }
    const unsigned char *base_ptr = (const unsigned char *)view.buf;
    const unsigned char *key_ptr = (const unsigned char *)keys.buf;
    /* The last frame whose first LSN is at or below `lsn` (bisect_right - 1). */
    Py_ssize_t lo = 0, hi = rows;
    while (lo < hi) {
        Py_ssize_t mid = lo + (hi - lo) / 2;
        int64_t first;
        memcpy(&first, key_ptr + (size_t)mid * sizeof(first), sizeof(first));
        if (lsn < first)
            hi = mid;
        else
            lo = mid + 1;
    }
    if (lo == 0) {
        result = Py_NewRef(Py_None);
        goto done;
    }
    Py_ssize_t i = lo - 1;
    memcpy(row, base_ptr + (size_t)i * sizeof(row), sizeof(row));
    if (want >= row[1]) {
        result = Py_NewRef(Py_None);
        goto done;
    }
    PyObject *blob = PyList_GET_ITEM(blobs, i);
    if (!PyBytes_CheckExact(blob)) {
        PyErr_SetString(PyExc_TypeError, "cached_record: a blob is not bytes");
        goto done;
    }
    Py_ssize_t size = PyBytes_GET_SIZE(blob);
    const char *bytes = PyBytes_AS_STRING(blob);
    uint64_t k = want - row[0], span[2];
    /* row[4] + 8 * (k + 2) <= size, without overflow: k < stop - first <= size. */
    if (row[4] > (uint64_t)size || k > ((uint64_t)size - row[4]) / 8 ||
        ((uint64_t)size - row[4]) / 8 - k < 2) {
        PyErr_SetString(format_error, "cached frame: payload offsets past its bytes");
        goto done;
    }
    memcpy(span, bytes + row[4] + 8 * k, sizeof(span));
    if (span[0] > span[1] || span[1] > row[4]) {
        PyErr_SetString(format_error, "cached frame: a payload lies outside its body");
        goto done;
    }
    PyByteArray_AS_STRING(used)[i] = 1;
    PyObject *rec = record_type->tp_alloc(record_type, 4);
    if (rec == NULL)
        goto done;
    PyTuple_SET_ITEM(rec, 0, Py_NewRef(lsn_obj));
    PyObject *item = PyLong_FromUnsignedLongLong(row[2]);
    if (item == NULL)
        goto fail;
    PyTuple_SET_ITEM(rec, 1, item);
    item = PyLong_FromUnsignedLongLong(row[3]);
    if (item == NULL)
        goto fail;
    PyTuple_SET_ITEM(rec, 2, item);
    item = PyBytes_FromStringAndSize(bytes + span[0], (Py_ssize_t)(span[1] - span[0]));
    if (item == NULL)
        goto fail;
    PyTuple_SET_ITEM(rec, 3, item);
    PyObject_GC_UnTrack(rec); /* ints and bytes: in no reference cycle */
    result = rec;
    goto done;
fail:
    Py_DECREF(rec);
done:
    PyBuffer_Release(&view);
    PyBuffer_Release(&keys);
    return result;
}

static PyMethodDef methods[] = {
    {"cached_record", (PyCFunction)(void (*)(void))cached_record, METH_FASTCALL,
     "cached_record(firsts, words, blobs, used, lsn) -> the cache's Record for lsn, or None."},
    {"payload_offsets", (PyCFunction)(void (*)(void))payload_offsets, METH_FASTCALL,
     "payload_offsets(buf, table, count, end) -> count + 1 native u64 payload offsets."},
    {"decode_payloads", (PyCFunction)(void (*)(void))decode_payloads, METH_FASTCALL,
     "decode_payloads(buf, table, count, end, skip, stop) -> list of payload bytes."},
    {"length_total", (PyCFunction)(void (*)(void))length_total, METH_FASTCALL,
     "length_total(buf, table, count) -> the sum of count u32 lengths at table."},
    {"bind", (PyCFunction)bind, METH_VARARGS,
     "bind(Record, FormatError, MAX_LSN): the types and limit the functions use."},
    {"record_spans", (PyCFunction)(void (*)(void))record_spans, METH_FASTCALL,
     "record_spans(buf, table, count, end) -> list of (start, end) payload offsets."},
    {"decode_records", (PyCFunction)(void (*)(void))decode_records,
     METH_FASTCALL | METH_KEYWORDS,
     "decode_records(buf, table, count, end, first_lsn, record_type, timestamp_us, skip=0, "
     "stop=None) -> list of Record."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "segwal.format._speedups",
    .m_doc = "Compiled twin of segwal.format.records (see that module).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    if (zero == NULL && (zero = PyLong_FromLong(0)) == NULL)
        return NULL;
    return PyModule_Create(&module_def);
}
