/* time_arg: parsing and printing of times for wsgatectl (see .h). */
#include "time_arg.h"

#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define US_PER_S   INT64_C(1000000)
#define US_PER_DAY (INT64_C(86400) * US_PER_S)
/* Durations and offsets beyond this are typing mistakes, and keeping
 * below it keeps every sum far from overflow. */
#define DURATION_MAX_US (INT64_C(100) * 366 * US_PER_DAY)

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
 * algorithm: exact for every year, no time zone, no table). */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
	y -= m <= 2;
	int64_t era = (y >= 0 ? y : y - 399) / 400;
	unsigned yoe = (unsigned)(y - era * 400);
	unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
	unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + (int64_t)doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d)
{
	z += 719468;
	int64_t era = (z >= 0 ? z : z - 146096) / 146097;
	unsigned doe = (unsigned)(z - era * 146097);
	unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	unsigned mp = (5 * doy + 2) / 153;

	*d = doy - (153 * mp + 2) / 5 + 1;
	*m = mp < 10 ? mp + 3 : mp - 9;
	*y = (int64_t)yoe + era * 400 + (*m <= 2);
}

static bool leap(int64_t y)
{
	return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static unsigned days_in_month(int64_t y, unsigned m)
{
	static const unsigned dim[] = {31, 28, 31, 30, 31, 30,
	                               31, 31, 30, 31, 30, 31};
	return m == 2 && leap(y) ? 29 : dim[m - 1];
}

static bool is_digit(char c)
{
	return c >= '0' && c <= '9';
}

/* Exactly n digits at *p; advances *p. */
static bool take_digits(const char **p, int n, unsigned *out)
{
	unsigned v = 0;

	for (int i = 0; i < n; i++) {
		if (!is_digit((*p)[i]))
			return false;
		v = v * 10 + (unsigned)((*p)[i] - '0');
	}
	*p += n;
	*out = v;
	return true;
}

/* "Z", "+HH:MM", "-HH:MM", "+HHMM", "-HHMM" or nothing: the offset of the
 * written time from UTC, in microseconds. */
static bool take_zone(const char **p, int64_t *offset_us)
{
	unsigned hh, mm;
	int sign;

	*offset_us = 0;
	if (**p == '\0')
		return true;
	if (**p == 'Z' || **p == 'z') {
		(*p)++;
		return true;
	}
	if (**p != '+' && **p != '-')
		return false;
	sign = **p == '-' ? -1 : 1;
	(*p)++;
	if (!take_digits(p, 2, &hh))
		return false;
	if (**p == ':')
		(*p)++;
	if (!take_digits(p, 2, &mm) || hh > 23 || mm > 59)
		return false;
	*offset_us = sign * ((int64_t)hh * 3600 + mm * 60) * US_PER_S;
	return true;
}

static int parse_iso(const char *s, int64_t *out_us)
{
	const char *p = s;
	unsigned year, mon, day, hh = 0, mm = 0, ss = 0, frac_us = 0;
	int64_t offset_us, us;

	if (!take_digits(&p, 4, &year) || *p++ != '-' ||
	    !take_digits(&p, 2, &mon) || *p++ != '-' ||
	    !take_digits(&p, 2, &day))
		return -1;
	if (mon < 1 || mon > 12 || day < 1 || day > days_in_month(year, mon))
		return -1;
	if (*p == 'T' || *p == 't' || *p == ' ') {
		p++;
		if (!take_digits(&p, 2, &hh) || *p++ != ':' ||
		    !take_digits(&p, 2, &mm))
			return -1;
		if (*p == ':') {
			p++;
			if (!take_digits(&p, 2, &ss))
				return -1;
			if (*p == '.' || *p == ',') {
				unsigned scale = 100000;

				p++;
				if (!is_digit(*p))
					return -1;
				/* Digits past microseconds are read, not
				 * kept. */
				for (; is_digit(*p); p++, scale /= 10)
					frac_us += (unsigned)(*p - '0') * scale;
			}
		}
		/* 60: a leap second, read as the next minute's first. */
		if (hh > 23 || mm > 59 || ss > 60)
			return -1;
	}
	if (!take_zone(&p, &offset_us) || *p != '\0')
		return -1;
	us = days_from_civil(year, mon, day) * US_PER_DAY +
	     ((int64_t)hh * 3600 + mm * 60 + ss) * US_PER_S + frac_us;
	*out_us = us - offset_us;
	return 0;
}

static int parse_duration(const char *s, int64_t now_us, int64_t *out_us)
{
	static const struct {
		const char *name;
		int64_t us;
	} units[] = {
	    /* "ms" before "m": the longest name wins. */
	    {"ms", 1000},           {"s", US_PER_S},   {"m", 60 * US_PER_S},
	    {"h", 3600 * US_PER_S}, {"d", US_PER_DAY}, {"w", 7 * US_PER_DAY},
	};
	const char *p = s;
	int64_t total = 0;

	if (*p == '\0')
		return -1;
	while (*p != '\0') {
		int64_t n = 0;
		size_t i, len = 0;

		if (!is_digit(*p))
			return -1;
		for (; is_digit(*p); p++) {
			n = n * 10 + (*p - '0');
			if (n > DURATION_MAX_US)
				return -1;
		}
		for (i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
			len = strlen(units[i].name);
			if (strncmp(p, units[i].name, len) == 0)
				break;
		}
		if (i == sizeof(units) / sizeof(units[0]) ||
		    n > DURATION_MAX_US / units[i].us)
			return -1;
		total += n * units[i].us;
		if (total > DURATION_MAX_US)
			return -1;
		p += len;
	}
	*out_us = now_us - total;
	return 0;
}

int time_arg_parse(const char *s, int64_t now_us, int64_t *out_us)
{
	if (s == NULL)
		return -1;
	/* A date starts with four digits and a dash; a duration never has
	 * a dash. */
	if (strlen(s) >= 5 && s[4] == '-')
		return parse_iso(s, out_us);
	return parse_duration(s, now_us, out_us);
}

char *time_arg_format(int64_t us, char *buf, size_t cap)
{
	/* Floor division: times before 1970 still print the right day. */
	int64_t days = us / US_PER_DAY, rem = us % US_PER_DAY;
	int64_t year;
	unsigned mon, day;

	if (rem < 0) {
		rem += US_PER_DAY;
		days--;
	}
	civil_from_days(days, &year, &mon, &day);
	snprintf(buf, cap, "%04" PRId64 "-%02u-%02uT%02u:%02u:%02u.%03uZ", year,
	         mon, day, (unsigned)(rem / (3600 * US_PER_S)),
	         (unsigned)(rem / (60 * US_PER_S) % 60),
	         (unsigned)(rem / US_PER_S % 60),
	         (unsigned)(rem / 1000 % 1000));
	return buf;
}

int64_t time_arg_now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * US_PER_S + ts.tv_nsec / 1000;
}
