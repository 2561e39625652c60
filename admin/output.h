/*
 * output: the two output formats of wsgatectl. Tables for people: columns
 * padded to their widest cell, control characters shown as '?' (peers,
 * user agents and ids come from the network and must not drive the
 * terminal). JSON for scripts: one object per line, strings always valid
 * UTF-8 (invalid bytes become U+FFFD), times as the raw microsecond integer
 * plus an ISO 8601 string.
 */
#ifndef WSGATE_OUTPUT_H
#define WSGATE_OUTPUT_H

#include <jansson.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

struct out_table;

/* A table with ncols columns and these headers; NULL when out of memory. */
struct out_table *out_table_new(size_t ncols, const char *const *headers);

/* Appends a row of ncols cells, copied (a NULL cell prints as "-").
 * Returns 0 or -1 (out of memory). */
int out_table_add(struct out_table *t, const char *const *cells);

size_t out_table_rows(const struct out_table *t);

/* Headers and rows, columns two spaces apart, no trailing blanks, each
 * line after indent spaces. */
void out_table_print(const struct out_table *t, FILE *f, int indent);

void out_table_free(struct out_table *t);

/* s with control characters replaced by '?', cut to fit cap (ending in
 * "..." when cut). Returns buf. */
char *out_clean(const char *s, char *buf, size_t cap);

/* A JSON string of s (null when s is NULL), invalid UTF-8 replaced. */
json_t *out_json_text(const char *s);

/* Sets key to us and key_iso to its ISO 8601 text, or both to null when
 * !present. */
void out_json_time(json_t *obj, const char *key, int64_t us, bool present);

/* Prints obj as one line and releases it. Returns 0, or 2 with a message
 * on stderr when it cannot be encoded. */
int out_json_line(json_t *obj);

#endif
