/*
 * The checks the C test programs share: CHECK counts a failed condition
 * and says where; EXPECT_STATUS compares a librnn call's status and prints
 * the library's message when it differs; finish() ends main().
 */
#ifndef LIBRNN_TEST_CHECK_H
#define LIBRNN_TEST_CHECK_H

#include <stdio.h>

#include "librnn.h"

static int failures = 0;

#define CHECK(cond, ...)                                    \
    do {                                                    \
        if (!(cond)) {                                      \
            failures++;                                     \
            fprintf(stderr, "%s:%d: ", __FILE__, __LINE__); \
            fprintf(stderr, __VA_ARGS__);                   \
            fprintf(stderr, "\n");                          \
        }                                                   \
    } while (0)

#define EXPECT_STATUS(call, want)                                                   \
    do {                                                                            \
        rnn_status got_ = (call);                                                   \
        CHECK(got_ == (want), "%s returned %d, expected %d (%s)", #call, (int)got_, \
              (int)(want), rnn_last_error_message());                               \
    } while (0)

/* The exit status of main(): 0 and `passed` on stdout when every check held. */
static int finish(const char *passed) {
    if (failures) {
        fprintf(stderr, "%d check(s) failed\n", failures);
        return 1;
    }
    printf("%s\n", passed);
    return 0;
}

#endif
