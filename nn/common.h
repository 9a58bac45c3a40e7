/* Internal helpers shared by every part of the library: error reporting and small utilities.
 * The library never prints: a failing function writes one line into the caller's buffer
 * (naming the file, tensor or value at fault) and returns a non-zero xcap_status. */
#ifndef XCAP_NN_COMMON_H
#define XCAP_NN_COMMON_H

#include <stddef.h>
#include <stdarg.h>

#include "xcap.h"

/* Formats the message into err (if non-NULL, errlen > 0) and returns code. */
int xcap_fail(char *err, size_t errlen, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Reads a whole file into a NUL-terminated heap buffer. */
int xcap_read_file(const char *path, char **data, size_t *size, char *err, size_t errlen);

/* dir + "/" + name into out (size outlen); returns 0 or an XCAP_ERR_ARG error when too long. */
int xcap_join_path(char *out, size_t outlen, const char *dir, const char *name, char *err,
                   size_t errlen);

#endif
