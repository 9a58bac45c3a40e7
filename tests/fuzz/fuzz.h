/* Shared by the libFuzzer targets: an invariant that fails loudly (abort, which libFuzzer
 * records as a crash with the input that caused it). */
#ifndef XCAP_TESTS_FUZZ_H
#define XCAP_TESTS_FUZZ_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FUZZ_ASSERT(cond, ...)                                                      \
    do {                                                                            \
        if (!(cond)) {                                                              \
            fprintf(stderr, "fuzz invariant failed at %s:%d: %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                           \
            fputc('\n', stderr);                                                    \
            abort();                                                                \
        }                                                                           \
    } while (0)

/* A failed call must say which file it was about: every error message names it. */
#define FUZZ_ERROR_NAMES(err, name) FUZZ_ASSERT(strstr(err, name) != NULL, "message lacks '%s': %s", name, err)

#endif
