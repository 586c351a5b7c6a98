/* segwal.format._encode: the compiled twin of segwal.format.framing.encode_record.
 *
 *   encode_record(seed, lsn, record_type, timestamp_us, durable_lsn, payload) -> bytes
 *
 * One record's whole frame (40-byte head, its one length, the payload, CRC32C seeded with
 * the segment header's CRC) in one call and one allocation: the hot path of a single append.
 * The bytes equal those of the pure reference; tests/test_encode.py holds the two together.
 *
 *   write_record(fd, offset, seed, lsn, record_type, timestamp_us, durable_lsn, payload) -> int
 *
 * the same frame written with one pwrite at `offset` (no bytes object, the GIL released for
 * the system call): what a single append on a real file does when nothing else is due.
 *
 * Bad input is rare, so its message is not duplicated here: on any argument this function
 * cannot take (an integer out of its field's range, not an integer, a payload that is not a
 * contiguous bytes-like object) it calls the reference's checker, framing.record_error, bound
 * once by bind(record_error), and raises the exception that returns. So both raise the same
 * exception with the same message by construction; the differential test checks that both
 * refuse the same inputs.
 *
 * The module also holds FastAppender (_appender.c, built into this module to share the frame
 * code): a log's whole single append (lock, checks, stamp, frame, pwrite, bookkeeping) in
 * one call; log/fastpath.py builds it for log/appender.py and tests/test_fast_appender.py holds it to the Python
 * fast path.
 *
 * CRC32C: the SSE4.2 crc32 instruction when the CPU has it (checked once at import), else a
 * table-driven software loop; both match the crc32c package the pure path uses.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <errno.h>
#include <limits.h>
#include <string.h>
#include <unistd.h>

#define FRAME_HEAD_SIZE 40
#define KIND_RECORDS 0x52
#define FLAG_COMMIT 0x01

static PyObject *record_error = NULL; /* segwal.format.framing.record_error */

/* -- CRC32C (Castagnoli, reflected polynomial 0x82F63B78) ------------------------------- */

static uint32_t crc_table[8][256];
static int have_sse42 = 0;

static void
crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = (c >> 1) ^ (0x82F63B78u & (0u - (c & 1u)));
        crc_table[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++)
        for (int t = 1; t < 8; t++)
            crc_table[t][i] = (crc_table[t - 1][i] >> 8) ^ crc_table[0][crc_table[t - 1][i] & 0xFF];
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    __builtin_cpu_init();
    have_sse42 = __builtin_cpu_supports("sse4.2") != 0;
#endif
}

/* Slicing-by-8; `crc` is the running (inverted) register. */
static uint32_t
crc_soft(uint32_t crc, const unsigned char *p, size_t n)
{
    while (n && ((uintptr_t)p & 7)) {
        crc = (crc >> 8) ^ crc_table[0][(crc ^ *p++) & 0xFF];
        n--;
    }
    while (n >= 8) {
        uint32_t lo = crc ^ ((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                             (uint32_t)p[3] << 24);
        crc = crc_table[7][lo & 0xFF] ^ crc_table[6][(lo >> 8) & 0xFF] ^
              crc_table[5][(lo >> 16) & 0xFF] ^ crc_table[4][lo >> 24] ^
              crc_table[3][p[4]] ^ crc_table[2][p[5]] ^ crc_table[1][p[6]] ^ crc_table[0][p[7]];
        p += 8;
        n -= 8;
    }
    while (n--)
        crc = (crc >> 8) ^ crc_table[0][(crc ^ *p++) & 0xFF];
    return crc;
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
__attribute__((target("sse4.2"))) static uint32_t
crc_hard(uint32_t crc, const unsigned char *p, size_t n)
{
    uint64_t c = crc;
    while (n && ((uintptr_t)p & 7)) {
        c = __builtin_ia32_crc32qi((uint32_t)c, *p++);
        n--;
    }
    while (n >= 8) {
        uint64_t word;
        memcpy(&word, p, 8);
        c = __builtin_ia32_crc32di(c, word);
        p += 8;
        n -= 8;
    }
    while (n--)
        c = __builtin_ia32_crc32qi((uint32_t)c, *p++);
    return (uint32_t)c;
}
#endif

/* crc32c.crc32c(data, seed): the seed is a previous CRC value, so it is inverted in and out. */
static uint32_t
crc32c(uint32_t seed, const unsigned char *p, size_t n)
{
    uint32_t crc = ~seed;
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    if (have_sse42)
        return ~crc_hard(crc, p, n);
#endif
    return ~crc_soft(crc, p, n);
}

/* The CRC32C of `p` (crc32c.crc32c(data)), for the other C files of this module. */
uint32_t
segwal_crc32c(const unsigned char *p, size_t n)
{
    return crc32c(0, p, n);
}

/* -- encode_record ----------------------------------------------------------------------- */

static inline void
store_u16le(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
}

static inline void
store_u32le(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static inline void
store_u64le(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

/* An integer argument through __index__ (as struct.pack takes it), at most `max`; 0 when it
 * fits, -1 (with no exception set) when it does not or is no integer. */
static int
as_u64(PyObject *obj, uint64_t max, uint64_t *out)
{
    uint64_t value;
    if (PyLong_CheckExact(obj)) {
        value = PyLong_AsUnsignedLongLong(obj);
    } else {
        PyObject *num = PyNumber_Index(obj);
        if (num == NULL) {
            PyErr_Clear();
            return -1;
        }
        value = PyLong_AsUnsignedLongLong(num);
        Py_DECREF(num);
    }
    if (value == (uint64_t)-1 && PyErr_Occurred()) {
        PyErr_Clear(); /* negative, or past 64 bits */
        return -1;
    }
    if (value > max)
        return -1;
    *out = value;
    return 0;
}

/* Raise what the reference's checker says is wrong with these arguments (also the
 * appender's, _appender.c, for a clock value out of range). */
PyObject *
segwal_refuse(PyObject *const *args)
{
    if (record_error == NULL) {
        PyErr_SetString(PyExc_RuntimeError,
                        "segwal.format._encode is not bound: import segwal.format.encoder");
        return NULL;
    }
    PyObject *exc = PyObject_Vectorcall(record_error, args, 6, NULL);
    if (exc == NULL)
        return NULL;
    if (PyExceptionInstance_Check(exc))
        PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
    else /* the checker found nothing: a disagreement the differential test must see */
        PyErr_Format(PyExc_SystemError, "encode_record refused arguments record_error accepts");
    Py_DECREF(exc);
    return NULL;
}

/* The checked arguments of one record: the integers, and the payload's bytes (a buffer to
 * release when `release` is set). 0, or -1 with the exception the reference names raised. */
typedef struct {
    uint64_t seed, lsn, rtype, ts, durable;
    const unsigned char *data;
    Py_ssize_t size;
    Py_buffer view;
    int release;
} record_args;

static int
parse_record(PyObject *const *args, record_args *r)
{
    r->release = 0;
    if (as_u64(args[0], 0xFFFFFFFFu, &r->seed) || as_u64(args[1], UINT64_MAX, &r->lsn) ||
        as_u64(args[2], 0xFFFFu, &r->rtype) || as_u64(args[3], UINT64_MAX, &r->ts) ||
        as_u64(args[4], UINT64_MAX, &r->durable)) {
        segwal_refuse(args);
        return -1;
    }
    PyObject *payload = args[5];
    if (PyBytes_CheckExact(payload)) {
        r->data = (const unsigned char *)PyBytes_AS_STRING(payload);
        r->size = PyBytes_GET_SIZE(payload);
    } else {
        /* PyBUF_SIMPLE: C-contiguous, taken as unsigned bytes whatever its item format. */
        if (PyObject_GetBuffer(payload, &r->view, PyBUF_SIMPLE) != 0) {
            PyErr_Clear();
            segwal_refuse(args);
            return -1;
        }
        r->data = (const unsigned char *)r->view.buf;
        r->size = r->view.len;
        r->release = 1;
    }
    if ((uint64_t)r->size > 0xFFFFFFFFu) {
        if (r->release)
            PyBuffer_Release(&r->view);
        segwal_refuse(args);
        return -1;
    }
    return 0;
}

/* Write one record's frame into `p` (FRAME_HEAD_SIZE + 4 + size bytes), CRC included;
 * the arguments are checked already. Shared with the appender (_appender.c). */
void
segwal_fill_record(unsigned char *p, uint32_t seed, uint64_t lsn, uint32_t rtype, uint64_t ts,
                   uint64_t durable, const unsigned char *data, uint32_t size)
{
    p[4] = KIND_RECORDS;
    p[5] = FLAG_COMMIT;
    store_u16le(p + 6, rtype);
    store_u32le(p + 8, 1);
    store_u32le(p + 12, size);
    store_u64le(p + 16, lsn);
    store_u64le(p + 24, ts);
    store_u64le(p + 32, durable);
    store_u32le(p + 40, size);
    if (size)
        memcpy(p + 44, data, size);
    store_u32le(p, crc32c(seed, p + 4, (size_t)FRAME_HEAD_SIZE + size));
}

static void
fill_frame(unsigned char *p, const record_args *r)
{
    segwal_fill_record(p, (uint32_t)r->seed, r->lsn, (uint32_t)r->rtype, r->ts, r->durable,
                       r->data, (uint32_t)r->size);
}

static PyObject *
encode_record(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    record_args r;
    if (nargs != 6) {
        PyErr_Format(PyExc_TypeError, "encode_record() takes 6 arguments (%zd given)", nargs);
        return NULL;
    }
    if (parse_record(args, &r) < 0)
        return NULL;
    PyObject *out = PyBytes_FromStringAndSize(NULL, FRAME_HEAD_SIZE + 4 + r.size);
    if (out != NULL)
        fill_frame((unsigned char *)PyBytes_AS_STRING(out), &r);
    if (r.release)
        PyBuffer_Release(&r.view);
    return out;
}

#define STACK_FRAME 8192

/* Write all of buf at offset with pwrite: short writes finished, EINTR retried after the
 * signal handlers ran (as os.pwrite does). 0, or -1 with an OSError set. Shared with
 * _appender.c's FastAppender. Without the GIL, unless `keep_gil` (see HOLD_GIL_BYTES). */
int
segwal_pwrite_all(int fd, const unsigned char *buf, size_t total, uint64_t offset, int keep_gil)
{
    size_t done = 0;
    while (done < total) {
        ssize_t n;
        int err = 0;
        if (keep_gil) {
            n = pwrite(fd, buf + done, total - done, (off_t)(offset + done));
            if (n < 0)
                err = errno;
        } else {
            Py_BEGIN_ALLOW_THREADS
            n = pwrite(fd, buf + done, total - done, (off_t)(offset + done));
            if (n < 0)
                err = errno;
            Py_END_ALLOW_THREADS
        }
        if (n < 0) {
            if (err == EINTR) {
                if (PyErr_CheckSignals() < 0)
                    return -1;
                continue;
            }
            errno = err;
            PyErr_SetFromErrno(PyExc_OSError);
            return -1;
        }
        if (n == 0) {
            errno = EIO; /* no progress: as fileio's "write made no progress" */
            PyErr_SetFromErrno(PyExc_OSError);
            return -1;
        }
        done += (size_t)n;
    }
    return 0;
}

/* write_record(fd, offset, seed, lsn, record_type, timestamp_us, durable_lsn, payload):
 * encode_record's frame written with pwrite at `offset` (short writes finished, EINTR
 * retried as os.pwrite does), without the GIL; returns the frame's size. An OSError names
 * what failed; the caller turns it into its StorageError. */
static PyObject *
write_record(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    record_args r;
    long long fd_arg, offset_arg;
    if (nargs != 8) {
        PyErr_Format(PyExc_TypeError, "write_record() takes 8 arguments (%zd given)", nargs);
        return NULL;
    }
    fd_arg = PyLong_AsLongLong(args[0]);
    if (fd_arg == -1 && PyErr_Occurred())
        return NULL;
    offset_arg = PyLong_AsLongLong(args[1]);
    if (offset_arg == -1 && PyErr_Occurred())
        return NULL;
    if (fd_arg < 0 || fd_arg > INT_MAX || offset_arg < 0) {
        PyErr_SetString(PyExc_ValueError, "write_record: bad file descriptor or offset");
        return NULL;
    }
    if (parse_record(args + 2, &r) < 0)
        return NULL;
    size_t total = (size_t)FRAME_HEAD_SIZE + 4 + (size_t)r.size;
    unsigned char stack[STACK_FRAME];
    unsigned char *frame = total <= STACK_FRAME ? stack : PyMem_Malloc(total);
    if (frame == NULL) {
        if (r.release)
            PyBuffer_Release(&r.view);
        return PyErr_NoMemory();
    }
    fill_frame(frame, &r);
    if (r.release)
        PyBuffer_Release(&r.view);

    int rc = segwal_pwrite_all((int)fd_arg, frame, total, (uint64_t)offset_arg, 0);
    if (frame != stack)
        PyMem_Free(frame);
    if (rc < 0)
        return NULL;
    return PyLong_FromSize_t(total);
}

static PyObject *
crc32c_py(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    uint64_t seed = 0;
    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "crc32c(data, seed=0)");
        return NULL;
    }
    if (nargs == 2 && as_u64(args[1], 0xFFFFFFFFu, &seed)) {
        PyErr_SetString(PyExc_ValueError, "crc32c: seed must be an integer in 0..2**32-1");
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) != 0)
        return NULL;
    uint32_t crc = crc32c((uint32_t)seed, view.buf, (size_t)view.len);
    PyBuffer_Release(&view);
    return PyLong_FromUnsignedLong(crc);
}

static PyObject *
crc32c_soft_py(PyObject *module, PyObject *arg)
{
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) != 0)
        return NULL;
    uint32_t crc = ~crc_soft(~0u, view.buf, (size_t)view.len);
    PyBuffer_Release(&view);
    return PyLong_FromUnsignedLong(crc);
}

static PyObject *
bind(PyObject *module, PyObject *checker)
{
    if (!PyCallable_Check(checker)) {
        PyErr_SetString(PyExc_TypeError, "bind: record_error must be callable");
        return NULL;
    }
    Py_INCREF(checker);
    Py_XSETREF(record_error, checker);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"encode_record", (PyCFunction)(void (*)(void))encode_record, METH_FASTCALL,
     "encode_record(seed, lsn, record_type, timestamp_us, durable_lsn, payload) -> bytes: "
     "one record's frame."},
    {"write_record", (PyCFunction)(void (*)(void))write_record, METH_FASTCALL,
     "write_record(fd, offset, seed, lsn, record_type, timestamp_us, durable_lsn, payload) "
     "-> int: encode_record's frame written at offset with pwrite; its size."},
    {"crc32c", (PyCFunction)(void (*)(void))crc32c_py, METH_FASTCALL,
     "crc32c(data, seed=0) -> int, with the hardware instruction when the CPU has it."},
    {"crc32c_soft", (PyCFunction)crc32c_soft_py, METH_O,
     "crc32c_soft(data) -> int: the software fallback, for the tests."},
    {"bind", (PyCFunction)bind, METH_O,
     "bind(record_error): the reference checker whose exceptions bad input raises."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "segwal.format._encode",
    .m_doc = "Compiled twin of segwal.format.framing.encode_record (see segwal.format.encoder).",
    .m_size = -1,
    .m_methods = methods,
};

int segwal_add_appender(PyObject *module); /* _appender.c: the FastAppender type */
int segwal_add_durable(PyObject *module);  /* _durable.c: the DurableWait type */

PyMODINIT_FUNC
PyInit__encode(void)
{
    crc_init();
    PyObject *m = PyModule_Create(&module_def);
    if (m == NULL)
        return NULL;
    if (PyModule_AddIntConstant(m, "HARDWARE_CRC", have_sse42) < 0 || segwal_add_appender(m) < 0 ||
        segwal_add_durable(m) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
