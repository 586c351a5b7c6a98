/* _direct.c: whole-block O_DIRECT writes at a segment's tail, for _appender.c. */
#ifndef SEGWAL_DIRECT_H
#define SEGWAL_DIRECT_H

#include <Python.h>
#include <stdint.h>

#define SEGWAL_DIRECT_BLOCK 4096 /* storage/fileio.py DIRECT_BLOCK */

/* The aligned buffer of one armed writer: `buf` (NULL until the first write) of `size`. */
typedef struct {
    unsigned char *buf;
    size_t size;
} segwal_blocks;

unsigned char *segwal_direct_begin(segwal_blocks *b, const char *tail, size_t keep, size_t size);
int segwal_direct_write(segwal_blocks *b, int fd, size_t keep, size_t size, uint64_t start);
PyObject *segwal_direct_tail(segwal_blocks *b, size_t keep, size_t size);
void segwal_direct_free(segwal_blocks *b);

#endif
