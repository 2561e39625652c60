/*
 * test_dir: a test's private directory under /tmp, and its removal with
 * everything the test (or the sidecar it ran) left in it.
 */
#ifndef WSGATE_TEST_DIR_H
#define WSGATE_TEST_DIR_H

#include <stddef.h>

/* Creates /tmp/wsgate-NAME-<random> and writes its path into buf.
 * Returns 0, or -1 (errno set) when it cannot. */
int test_dir_make(char *buf, size_t cap, const char *name);
/* Removes dir and all it holds. Returns 0, or -1 when something stayed. */
int test_dir_remove(const char *dir);

#endif
