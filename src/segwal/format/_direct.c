/* Whole-block O_DIRECT writes at a segment's tail, for FastAppender (_appender.c).
 *
 * The compiled twin of storage/blocks.py DirectTail.put, the reference (and what the general
 * path, rotation, truncation and close use): O_DIRECT takes whole blocks at block offsets
 * from an aligned buffer, so a write starts at the block its data starts in, with the stored
 * bytes of that partial block copied in front (never encoded again), then the new bytes,
 * then zeros to the block's end, in one pwrite. The partial block's bytes live in one place,
 * DirectTail.tail: the caller reads it before and writes the new one back after, so the
 * Python object sees exactly what its own put would have left. The buffer is this file's
 * (posix_memalign'd, kept per armed writer and grown on demand).
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "_direct.h"

#define MIN_BUFFER (16 * SEGWAL_DIRECT_BLOCK) /* storage/blocks.py MIN_BUFFER */

static size_t
padded_size(size_t total)
{
    return (total + SEGWAL_DIRECT_BLOCK - 1) / SEGWAL_DIRECT_BLOCK * SEGWAL_DIRECT_BLOCK;
}

/* The buffer for a write of `size` bytes after the partial block's `keep` stored bytes
 * (`tail`, copied in front): where the new bytes go; NULL with MemoryError. */
unsigned char *
segwal_direct_begin(segwal_blocks *b, const char *tail, size_t keep, size_t size)
{
    size_t padded = padded_size(keep + size);
    if (b->buf == NULL || b->size < padded) {
        size_t want = padded > MIN_BUFFER ? padded : MIN_BUFFER;
        void *buf = NULL;
        if (posix_memalign(&buf, SEGWAL_DIRECT_BLOCK, want) != 0) {
            PyErr_NoMemory();
            return NULL;
        }
        free(b->buf);
        b->buf = buf;
        b->size = want;
    }
    memcpy(b->buf, tail, keep);
    return b->buf + keep;
}

/* Zeros after the `keep + size` bytes to the block's end, and one pwrite of those blocks at
 * `start` (the partial block's offset) on the O_DIRECT `fd`; 0, or -1 with an OSError. */
int
segwal_direct_write(segwal_blocks *b, int fd, size_t keep, size_t size, uint64_t start)
{
    size_t total = keep + size;
    size_t padded = padded_size(total);
    memset(b->buf + total, 0, padded - total);
    for (;;) {
        ssize_t n;
        int err = 0;
        /* An O_DIRECT write waits for the device: other threads run meanwhile. */
        Py_BEGIN_ALLOW_THREADS
        n = pwrite(fd, b->buf, padded, (off_t)start);
        if (n < 0)
            err = errno;
        Py_END_ALLOW_THREADS
        if (n < 0 && err == EINTR) { /* as os.pwrite: signal handlers run, then again */
            if (PyErr_CheckSignals() < 0)
                return -1;
            continue;
        }
        if (n < 0) {
            errno = err;
            PyErr_SetFromErrno(PyExc_OSError);
            return -1;
        }
        if ((size_t)n != padded) { /* aligned pieces only: a short direct write is a failure */
            PyObject *text = PyUnicode_FromFormat("short O_DIRECT write (%zd of %zu bytes)", n,
                                                  padded);
            PyObject *exc = text == NULL ? NULL
                                         : PyObject_CallFunction(PyExc_OSError, "iN", EIO, text);
            if (exc != NULL) { /* OsDirectFile.pwrite's OSError(errno.EIO, message) */
                PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
                Py_DECREF(exc);
            }
            return -1;
        }
        return 0;
    }
}

/* The new DirectTail.tail after a write: the stored bytes of the new partial last block. */
PyObject *
segwal_direct_tail(segwal_blocks *b, size_t keep, size_t size)
{
    size_t total = keep + size;
    size_t left = total % SEGWAL_DIRECT_BLOCK; /* the write started at a block boundary */
    return PyBytes_FromStringAndSize((const char *)b->buf + total - left, (Py_ssize_t)left);
}

void
segwal_direct_free(segwal_blocks *b)
{
    free(b->buf);
    b->buf = NULL;
    b->size = 0;
}
