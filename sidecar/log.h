/*
 * log: one line per record on stderr, "2026-11-26T09:17:57.123Z warn msg".
 *
 * The level is set once by main before any other thread starts and only read
 * afterwards, so it needs no lock; each record is one fprintf, which stdio
 * keeps whole across threads.
 */
#ifndef WSGATE_LOG_H
#define WSGATE_LOG_H

#include <stdbool.h>
#include <stdint.h>

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };

void log_set_level(enum log_level level);
/* "debug", "info", "warn", "error": returns -1 for anything else. */
int log_level_parse(const char *name, enum log_level *out);
void log_write(enum log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/*
 * A limit on lines that others can cause (a hostile peer could make one
 * per message): at most burst a second. One per kind of line, owned by
 * one thread.
 */
struct log_limit {
	int64_t second; /* the second the counts are for */
	unsigned count; /* lines passed in it */
	unsigned suppressed;
};

/* Whether a line may be written in second now_s. *missed gets how many
 * lines the previous second held back when now_s starts a new one (to be
 * reported), else 0. */
bool log_limit_pass(struct log_limit *l, int64_t now_s, unsigned burst,
                    unsigned *missed);

#define log_debug(...) log_write(LOG_DEBUG, __VA_ARGS__)
#define log_info(...)  log_write(LOG_INFO, __VA_ARGS__)
#define log_warn(...)  log_write(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_write(LOG_ERROR, __VA_ARGS__)

#endif
