/*
 * fuzz_client_frame: a browser's complete text message, classified.
 *
 * Checks beyond the sanitizers: an ack's seq is positive and set only for
 * an ack, a token is set only for auth and refresh and never longer than
 * the verifier's limit plus one, and whatever parses here is also a JSON value
 * to validate_json (the stricter check backends' payloads get), so no frame is
 * forwarded that the sidecar would refuse as JSON elsewhere.
 */
#include <assert.h>
#include <stddef.h>
#include <stdint.h>

#include "client_frame.h"
#include "validate.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct client_frame cf;
	enum client_frame_kind kind = client_frame_classify(data, size, &cf);

	switch (kind) {
	case CLIENT_FRAME_ACK:
		assert(cf.ack_seq > 0 && cf.ack_seq <= INT64_MAX);
		assert(cf.token_len == 0);
		break;
	case CLIENT_FRAME_AUTH:
	case CLIENT_FRAME_REFRESH:
		assert(cf.ack_seq == 0);
		assert(cf.token_len <= AUTH_JWT_MAX_TOKEN + 1);
		assert(cf.token[cf.token_len] == '\0');
		break;
	case CLIENT_FRAME_INVALID_JSON:
	case CLIENT_FRAME_PING:
	case CLIENT_FRAME_INVALID_ACK:
	case CLIENT_FRAME_FORWARD:
		assert(cf.ack_seq == 0 && cf.token_len == 0);
		break;
	default:
		assert(!"unknown client_frame_kind");
	}
	if (kind != CLIENT_FRAME_INVALID_JSON)
		assert(validate_json(data, size));
	return 0;
}
