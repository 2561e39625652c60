/*
 * fuzz_payload_json: the byte checks behind event payloads and ids,
 * validate_json and validate_printable_utf8, on the same input.
 *
 * Besides the sanitizers, jansson's own UTF-8 check serves as a reference
 * for validate_printable_utf8: the input quoted as a JSON string (when it
 * holds no '"' or '\\') parses exactly when it is valid UTF-8 without C0
 * controls, so for such inputs validate_printable_utf8 must equal "jansson
 * accepts it and it holds no DEL and no C1 control (U+0080..U+009F)".
 */
#include <assert.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "validate.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool has_del_or_c1(const uint8_t *s, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		if (s[i] == 0x7f)
			return true;
		/* U+0080..U+009F is C2 80..C2 9F in (valid) UTF-8. */
		if (s[i] == 0xc2 && i + 1 < len && s[i + 1] >= 0x80 &&
		    s[i + 1] <= 0x9f)
			return true;
	}
	return false;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	bool json = validate_json(data, size);
	bool printable = validate_printable_utf8((const char *)data, size);

	(void)json;
	if (memchr(data, '"', size) != NULL || memchr(data, '\\', size) != NULL)
		return 0;
	uint8_t *quoted = malloc(size + 2);
	assert(quoted != NULL);
	quoted[0] = '"';
	memcpy(quoted + 1, data, size);
	quoted[size + 1] = '"';
	bool as_string = validate_json(quoted, size + 2);
	free(quoted);
	assert(printable == (as_string && !has_del_or_c1(data, size)));
	return 0;
}
