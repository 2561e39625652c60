/*
 * client_frame: classifies a browser's text message (see client_frame.h).
 * jansson parses it; only a top-level object's "type" (and the member its
 * type needs) matters here.
 */
#include "client_frame.h"

#include <jansson.h>
#include <string.h>

/* Copies a "token" string member into out (see client_frame.h). */
static void token_copy(json_t *root, struct client_frame *out)
{
	json_t *tok = json_object_get(root, "token");
	if (!json_is_string(tok))
		return;
	size_t n = json_string_length(tok);
	if (n > AUTH_JWT_MAX_TOKEN + 1)
		n = AUTH_JWT_MAX_TOKEN + 1;
	memcpy(out->token, json_string_value(tok), n);
	out->token[n] = '\0';
	out->token_len = n;
}

enum client_frame_kind client_frame_classify(const void *data, size_t len,
                                             struct client_frame *out)
{
	out->ack_seq = 0;
	out->token_len = 0;
	out->token[0] = '\0';
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
			out->ack_seq = (uint64_t)json_integer_value(seq);
			kind = CLIENT_FRAME_ACK;
		} else {
			kind = CLIENT_FRAME_INVALID_ACK;
		}
	} else if (type && (strcmp(type, "auth") == 0 ||
	                    strcmp(type, "refresh") == 0)) {
		kind =
		    type[0] == 'a' ? CLIENT_FRAME_AUTH : CLIENT_FRAME_REFRESH;
		token_copy(root, out);
	}
	json_decref(root);
	return kind;
}
