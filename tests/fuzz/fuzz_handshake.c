/*
 * fuzz_handshake: the token transports and ?since= of a WebSocket upgrade.
 *
 * libwebsockets hands header and query values over as C strings, so each
 * parser gets a NUL-terminated, exact-size copy of the input. Checks beyond
 * the sanitizers: a returned token is a non-empty slice of the value without
 * the separators around it, and since= agrees with strtoull.
 */
#include <assert.h>
#include <stdbool.h>
#include <ctype.h>
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "handshake.h"

static void fuzz_epoch(const char *value)
{
	char out[33] = "untouched";
	enum handshake_epoch r = handshake_parse_epoch(value, out, sizeof(out));
	size_t n = strlen(value);
	bool alnum = true;
	for (const char *p = value; *p; p++)
		if (!isalnum((unsigned char)*p))
			alnum = false;
	if (n == 0)
		assert(r == EPOCH_ABSENT);
	else
		assert((r == EPOCH_VALID) == (alnum && n < sizeof(out)));
	if (r == EPOCH_VALID)
		assert(strcmp(out, value) == 0);
	else
		assert(strcmp(out, "untouched") == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_slice(const char *value, size_t len, const char *tok,
                        size_t tok_len)
{
	assert(tok >= value && tok_len > 0);
	assert((size_t)(tok - value) + tok_len <= len);
	assert(tok[0] != ' ' && tok[0] != '\t');
	assert(tok[tok_len - 1] != ' ' && tok[tok_len - 1] != '\t');
}

static void fuzz_authorization(const char *value, size_t len)
{
	const char *tok = NULL;
	size_t tok_len = 0;
	if (handshake_token_from_authorization(value, len, &tok, &tok_len) != 0)
		return;
	check_slice(value, len, tok, tok_len);
	assert(len > 7 && strncasecmp(value, "bearer", 6) == 0);
}

static void fuzz_protocols(const char *value, size_t len)
{
	const char *tok = NULL;
	size_t tok_len = 0;
	if (handshake_token_from_protocols(value, len, &tok, &tok_len) != 0)
		return;
	check_slice(value, len, tok, tok_len);
	assert(tok - value >= 7 && memcmp(tok - 7, "bearer.", 7) == 0);
	assert(memchr(tok, ',', tok_len) == NULL);
}

static void fuzz_since(const char *value)
{
	uint64_t v = 12345;
	enum handshake_since r = handshake_parse_since(value, &v);
	if (value[0] == '\0') {
		assert(r == SINCE_ABSENT && v == 12345);
		return;
	}
	assert(r == SINCE_VALID || r == SINCE_INVALID);

	/* Reference: all digits, and strtoull takes it without ERANGE. */
	bool digits = true;
	for (const char *p = value; *p; p++)
		if (!isdigit((unsigned char)*p))
			digits = false;
	errno = 0;
	unsigned long long ref = strtoull(value, NULL, 10);
	bool fits = errno != ERANGE;
	assert((r == SINCE_VALID) == (digits && fits));
	if (r == SINCE_VALID)
		assert(v == ref);
	else
		assert(v == 12345);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *value = malloc(size + 1);
	assert(value != NULL);
	memcpy(value, data, size);
	value[size] = '\0';

	/* The length libwebsockets would report: up to the first NUL. */
	size_t len = strlen(value);
	fuzz_authorization(value, len);
	fuzz_protocols(value, len);
	fuzz_since(value);
	fuzz_epoch(value);
	assert(handshake_parse_since(NULL, &(uint64_t){0}) == SINCE_ABSENT);

	free(value);
	return 0;
}
