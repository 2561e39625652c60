/* output: tables and JSON lines for wsgatectl (see .h). */
#include "output.h"

#include "ctl_exit.h"
#include "time_arg.h"

#include <stdlib.h>
#include <string.h>

struct out_table {
	size_t ncols;
	size_t nrows;
	size_t cap;   /* rows allocated */
	char **cells; /* (nrows + 1) * ncols: the headers first */
};

/* Length of the UTF-8 sequence starting at s if it is valid (shortest
 * form, no surrogates, <= U+10FFFF), else 0. */
static size_t utf8_seq(const unsigned char *s)
{
	unsigned c = s[0];
	size_t n, i;
	unsigned cp;

	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf) {
		n = 2;
		cp = c & 0x1f;
	} else if (c >= 0xe0 && c <= 0xef) {
		n = 3;
		cp = c & 0x0f;
	} else if (c >= 0xf0 && c <= 0xf4) {
		n = 4;
		cp = c & 0x07;
	} else {
		return 0;
	}
	for (i = 1; i < n; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (s[i] & 0x3f);
	}
	if ((n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) ||
	    (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff)
		return 0;
	return n;
}

/* Whether the character at s (n bytes) moves a terminal: C0, DEL, C1. */
static bool is_control(const unsigned char *s, size_t n)
{
	if (n == 1)
		return s[0] < 0x20 || s[0] == 0x7f;
	return n == 2 && s[0] == 0xc2 && s[1] < 0xa0;
}

char *out_clean(const char *s, char *buf, size_t cap)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t len = 0;

	if (cap == 0)
		return buf;
	while (*p != '\0') {
		size_t n = utf8_seq(p);
		const char *put = (const char *)p;
		size_t put_len = n;

		if (n == 0 || is_control(p, n)) {
			put = "?";
			put_len = 1;
			n = n == 0 ? 1 : n;
		}
		if (len + put_len + 1 > cap) {
			/* Cut: make room for "..." on a character
			 * boundary. */
			while (len > 0 && len + 4 > cap) {
				len--;
				while (len > 0 &&
				       ((unsigned char)buf[len] & 0xc0) == 0x80)
					len--;
			}
			if (len + 4 <= cap) {
				memcpy(buf + len, "...", 3);
				len += 3;
			}
			break;
		}
		memcpy(buf + len, put, put_len);
		len += put_len;
		p += n;
	}
	buf[len] = '\0';
	return buf;
}

/* Characters, not bytes: what the padding is counted in. */
static size_t text_width(const char *s)
{
	size_t w = 0;

	for (; *s != '\0'; s++)
		w += ((unsigned char)*s & 0xc0) != 0x80;
	return w;
}

static char *clean_dup(const char *s)
{
	size_t cap;
	char *buf;

	if (s == NULL)
		s = "-";
	/* '?' for a bad byte never makes the text longer. */
	cap = strlen(s) + 1;
	buf = malloc(cap);
	return buf != NULL ? out_clean(s, buf, cap) : NULL;
}

struct out_table *out_table_new(size_t ncols, const char *const *headers)
{
	struct out_table *t = calloc(1, sizeof(*t));

	if (t == NULL)
		return NULL;
	t->ncols = ncols;
	if (out_table_add(t, headers) != 0) {
		out_table_free(t);
		return NULL;
	}
	return t;
}

int out_table_add(struct out_table *t, const char *const *cells)
{
	/* cells holds nrows + 1 rows: headers, then data. */
	size_t used = t->cells == NULL ? 0 : t->nrows + 1;
	size_t i;

	if (used == t->cap) {
		size_t cap = t->cap == 0 ? 16 : t->cap * 2;
		char **grown =
		    realloc(t->cells, cap * t->ncols * sizeof(char *));

		if (grown == NULL)
			return -1;
		t->cells = grown;
		t->cap = cap;
	}
	for (i = 0; i < t->ncols; i++) {
		t->cells[used * t->ncols + i] = clean_dup(cells[i]);
		if (t->cells[used * t->ncols + i] == NULL) {
			while (i-- > 0)
				free(t->cells[used * t->ncols + i]);
			return -1;
		}
	}
	if (used > 0)
		t->nrows++;
	return 0;
}

size_t out_table_rows(const struct out_table *t)
{
	return t->nrows;
}

void out_table_print(const struct out_table *t, FILE *f, int indent)
{
	size_t *width = calloc(t->ncols, sizeof(*width));
	size_t r, c;

	if (width == NULL)
		return;
	for (r = 0; r <= t->nrows; r++)
		for (c = 0; c < t->ncols; c++) {
			size_t w = text_width(t->cells[r * t->ncols + c]);

			if (w > width[c])
				width[c] = w;
		}
	for (r = 0; r <= t->nrows; r++) {
		char **row = &t->cells[r * t->ncols];
		size_t last = t->ncols - 1;

		/* Empty cells at the end: nothing to pad for. */
		while (last > 0 && row[last][0] == '\0')
			last--;
		fprintf(f, "%*s", indent, "");
		for (c = 0; c <= last; c++) {
			const char *cell = row[c];

			fputs(cell, f);
			if (c < last)
				fprintf(f, "%*s",
				        (int)(width[c] - text_width(cell) + 2),
				        "");
		}
		fputc('\n', f);
	}
	free(width);
}

void out_table_free(struct out_table *t)
{
	if (t == NULL)
		return;
	if (t->cells != NULL)
		for (size_t i = 0; i < (t->nrows + 1) * t->ncols; i++)
			free(t->cells[i]);
	free(t->cells);
	free(t);
}

json_t *out_json_text(const char *s)
{
	const unsigned char *p;
	size_t len = 0;
	json_t *j;
	char *buf;

	if (s == NULL)
		return json_null();
	j = json_string(s);
	if (j != NULL)
		return j;
	/* Invalid UTF-8: each bad byte becomes U+FFFD (3 bytes). */
	buf = malloc(strlen(s) * 3 + 1);
	if (buf == NULL)
		return json_null();
	for (p = (const unsigned char *)s; *p != '\0';) {
		size_t n = utf8_seq(p);

		if (n == 0) {
			memcpy(buf + len, "\xef\xbf\xbd", 3);
			len += 3;
			p++;
		} else {
			memcpy(buf + len, p, n);
			len += n;
			p += n;
		}
	}
	buf[len] = '\0';
	j = json_string(buf);
	free(buf);
	return j != NULL ? j : json_null();
}

void out_json_time(json_t *obj, const char *key, int64_t us, bool present)
{
	char iso_key[64], text[TIME_ARG_TEXT_MAX];

	snprintf(iso_key, sizeof(iso_key), "%s_iso", key);
	if (!present) {
		json_object_set_new(obj, key, json_null());
		json_object_set_new(obj, iso_key, json_null());
		return;
	}
	json_object_set_new(obj, key, json_integer((json_int_t)us));
	json_object_set_new(
	    obj, iso_key, json_string(time_arg_format(us, text, sizeof(text))));
}

int out_json_line(json_t *obj)
{
	char *s = obj != NULL ? json_dumps(obj, JSON_COMPACT) : NULL;

	json_decref(obj);
	if (s == NULL) {
		fprintf(stderr,
		        "wsgatectl: cannot encode the output as JSON\n");
		return EXIT_USAGE;
	}
	puts(s);
	free(s);
	return EXIT_OK;
}
