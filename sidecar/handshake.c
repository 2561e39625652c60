/* handshake: token and since= parsing of WebSocket upgrades (handshake.h). */
#include "handshake.h"

#include <ctype.h>
#include <string.h>
#include <strings.h>

static bool is_space(char c)
{
	return c == ' ' || c == '\t';
}

int handshake_token_from_authorization(const char *value, size_t len,
                                       const char **tok, size_t *tok_len)
{
	static const char scheme[] = "bearer";
	size_t n = sizeof(scheme) - 1, i;
	if (len <= n || strncasecmp(value, scheme, n) != 0 ||
	    !is_space(value[n]))
		return -1;
	for (i = n; i < len && is_space(value[i]); i++)
		;
	size_t end = len;
	while (end > i && is_space(value[end - 1]))
		end--;
	if (end == i)
		return -1;
	*tok = value + i;
	*tok_len = end - i;
	return 0;
}

int handshake_token_from_protocols(const char *value, size_t len,
                                   const char **tok, size_t *tok_len)
{
	static const char prefix[] = "bearer.";
	size_t plen = sizeof(prefix) - 1, i = 0;
	while (i < len) {
		while (i < len && (is_space(value[i]) || value[i] == ','))
			i++;
		size_t start = i;
		while (i < len && value[i] != ',' && !is_space(value[i]))
			i++;
		if (i - start > plen &&
		    memcmp(value + start, prefix, plen) == 0) {
			*tok = value + start + plen;
			*tok_len = i - start - plen;
			return 0;
		}
	}
	return -1;
}

enum handshake_since handshake_parse_since(const char *value, uint64_t *out)
{
	if (!value || !*value)
		return SINCE_ABSENT;
	uint64_t v = 0;
	for (const char *p = value; *p; p++) {
		if (!isdigit((unsigned char)*p))
			return SINCE_INVALID;
		unsigned d = (unsigned)(*p - '0');
		if (v > (UINT64_MAX - d) / 10)
			return SINCE_INVALID;
		v = v * 10 + d;
	}
	*out = v;
	return SINCE_VALID;
}

enum handshake_epoch handshake_parse_epoch(const char *value, char *out,
                                           size_t cap)
{
	if (!value || !*value)
		return EPOCH_ABSENT;
	size_t n = 0;
	for (; value[n]; n++)
		if (!isalnum((unsigned char)value[n]) || n + 1 >= cap)
			return EPOCH_INVALID;
	memcpy(out, value, n + 1);
	return EPOCH_VALID;
}
