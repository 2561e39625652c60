/*
 * fuzz_client_frame: a browser's complete text message, classified.
 *
 * Checks beyond the sanitizers: an ack's seq is positive and set only for
 * an ack, and whatever parses here is also a JSON value to validate_json
 * (the stricter check backends' payloads get), so no frame is forwarded
 * that the sidecar would refuse as JSON elsewhere.
 */
#include <assert.h>
#include <stddef.h>
#include <stdint.h>

#include "client_frame.h"
#include "validate.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint64_t seq = 0;
	enum client_frame_kind kind = client_frame_classify(data, size, &seq);

	switch (kind) {
	case CLIENT_FRAME_ACK:
		assert(seq > 0 && seq <= INT64_MAX);
		break;
	case CLIENT_FRAME_INVALID_JSON:
	case CLIENT_FRAME_PING:
	case CLIENT_FRAME_INVALID_ACK:
	case CLIENT_FRAME_FORWARD:
		assert(seq == 0);
		break;
	default:
		assert(!"unknown client_frame_kind");
	}
	if (kind != CLIENT_FRAME_INVALID_JSON)
		assert(validate_json(data, size));
	return 0;
}
