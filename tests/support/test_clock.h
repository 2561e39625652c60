/*
 * test_clock: the clock of the tests and their support code: monotonic
 * milliseconds for deadlines, and a short pause between two polls of a
 * condition (never as synchronisation by itself).
 */
#ifndef WSGATE_TEST_CLOCK_H
#define WSGATE_TEST_CLOCK_H

#include <stdint.h>

/* CLOCK_MONOTONIC in milliseconds. */
int64_t test_now_ms(void);
/* Sleeps ms milliseconds (resumed after a signal). */
void test_pause_ms(int ms);

#endif
