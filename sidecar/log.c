/* log: leveled one-line records on stderr (see log.h). */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

/* Written once by main before threads start; read-only afterwards. */
static enum log_level threshold = LOG_INFO;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void log_set_level(enum log_level level)
{
	threshold = level;
}

int log_level_parse(const char *name, enum log_level *out)
{
	for (int i = 0; i < 4; i++) {
		if (strcmp(name, level_names[i]) == 0) {
			*out = (enum log_level)i;
			return 0;
		}
	}
	return -1;
}

void log_write(enum log_level level, const char *fmt, ...)
{
	if (level < threshold)
		return;
	char msg[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);

	struct timespec ts;
	struct tm tm;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	fprintf(stderr, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s %s\n",
	        tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
	        tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000, level_names[level],
	        msg);
}

bool log_limit_pass(struct log_limit *l, int64_t now_s, unsigned burst,
                    unsigned *missed)
{
	*missed = 0;
	if (now_s != l->second) {
		*missed = l->suppressed;
		l->second = now_s;
		l->count = 0;
		l->suppressed = 0;
	}
	if (l->count >= burst) {
		l->suppressed++;
		return false;
	}
	l->count++;
	return true;
}
