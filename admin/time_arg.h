/*
 * time_arg: the times wsgatectl reads and prints. Every command takes the
 * same --since forms and prints the same ISO 8601 UTC text, so both live
 * here and nowhere else.
 *
 * Times are microseconds since the Unix epoch, as in the database.
 */
#ifndef WSGATE_TIME_ARG_H
#define WSGATE_TIME_ARG_H

#include <stddef.h>
#include <stdint.h>

/* Longest text time_arg_format writes, with its NUL. */
#define TIME_ARG_TEXT_MAX 40

/* The forms a time argument may take, for usage messages. */
#define TIME_ARG_FORMS                                                         \
	"an ISO 8601 UTC time (2026-11-26T09:00:00Z) or a duration back "      \
	"from now (90s, 30m, 1h, 2d, 1h30m)"

/*
 * Parses s into *out_us. Accepted:
 *   - ISO 8601: YYYY-MM-DD, optionally followed by T (or a space) and
 *     HH:MM[:SS[.fraction]], then Z, +HH:MM, -HH:MM or nothing (UTC);
 *   - a duration, meaning now_us minus it: one or more NUMBER UNIT with
 *     UNIT ms, s, m, h, d or w ("1h30m").
 * Returns 0, or -1 when s is neither (*out_us untouched).
 */
int time_arg_parse(const char *s, int64_t now_us, int64_t *out_us);

/* "2026-11-26T09:17:57.123Z" (milliseconds, truncated towards the past);
 * cap >= TIME_ARG_TEXT_MAX. Returns buf. */
char *time_arg_format(int64_t us, char *buf, size_t cap);

/* The wall clock, in microseconds since the Unix epoch. */
int64_t time_arg_now_us(void);

#endif
