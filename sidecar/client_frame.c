/*
 * client_frame: classifies a browser's text message (see client_frame.h).
 * jansson parses it; only a top-level object's "type" matters here.
 */
#include "client_frame.h"

#include <jansson.h>
#include <string.h>

enum client_frame_kind client_frame_classify(const void *data, size_t len,
                                             uint64_t *ack_seq)
{
	json_error_t jerr;
	/* Valid JSON is valid whatever its numbers: an integer too wide for
	 * jansson is parsed again as a real (then it is no valid ack seq). */
	json_t *root =
	    json_loadb(data, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
	if (!root)
		root = json_loadb(data, len,
		                  JSON_DECODE_ANY | JSON_ALLOW_NUL |
		                      JSON_DECODE_INT_AS_REAL,
		                  &jerr);
	if (!root)
		return CLIENT_FRAME_INVALID_JSON;
	enum client_frame_kind kind = CLIENT_FRAME_FORWARD;
	const char *type = json_string_value(json_object_get(root, "type"));
	if (type && strcmp(type, "ping") == 0) {
		kind = CLIENT_FRAME_PING;
	} else if (type && strcmp(type, "ack") == 0) {
		json_t *seq = json_object_get(root, "seq");
		if (json_is_integer(seq) && json_integer_value(seq) > 0) {
			*ack_seq = (uint64_t)json_integer_value(seq);
			kind = CLIENT_FRAME_ACK;
		} else {
			kind = CLIENT_FRAME_INVALID_ACK;
		}
	}
	json_decref(root);
	return kind;
}
