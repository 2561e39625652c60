/*
 * bench_common: what the load generator's publishers and receivers must agree
 * on: the clock, how user ids are spelled, and the event payload, which
 * carries its own send time so that the receiver can measure
 * publish-to-receive latency without any side channel.
 *
 * Payload: {"t":<ns CLOCK_MONOTONIC>,"k":<event index>,"u":"<user>","p":"..."}
 * padded with 'x' to the requested size. All processes run on one machine,
 * so the monotonic clock is shared.
 */
#ifndef WSBENCH_COMMON_H
#define WSBENCH_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define BENCH_USER_MAX    48
#define BENCH_PAYLOAD_MAX 4096

static inline int64_t bench_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* "<prefix>-<index>": the prefix is unique per run, so a run never meets
 * the sequence numbers or pending events of an earlier one. */
static inline void bench_user_name(char *buf, size_t cap, const char *prefix,
                                   unsigned idx)
{
	snprintf(buf, cap, "%s-%06u", prefix, idx);
}

/* Writes the payload into buf[cap] and returns its length (at least the
 * unpadded length, at most cap - 1; NUL-terminated). */
static inline size_t bench_payload(char *buf, size_t cap, int64_t t_ns,
                                   uint64_t k, const char *user, size_t want)
{
	int n =
	    snprintf(buf, cap, "{\"t\":%lld,\"k\":%llu,\"u\":\"%s\",\"p\":\"",
	             (long long)t_ns, (unsigned long long)k, user);
	size_t len = n > 0 ? (size_t)n : 0;
	if (len + 3 > cap)
		return 0;
	while (len + 2 < want && len + 3 < cap)
		buf[len++] = 'x';
	buf[len++] = '"';
	buf[len++] = '}';
	buf[len] = '\0';
	return len;
}

#endif
