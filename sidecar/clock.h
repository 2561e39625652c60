/* clock: wall-clock time in the units of the wire and the database. */
#ifndef WSGATE_CLOCK_H
#define WSGATE_CLOCK_H

#include <stdint.h>
#include <time.h>

/* Microseconds since the Unix epoch: protobuf and SQLite times. */
static inline int64_t clock_now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

#endif
