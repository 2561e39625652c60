/*
 * client_frame: what a complete text message from a browser asks for.
 * Pure: no connection state, so it can be tested and fuzzed alone.
 */
#ifndef WSGATE_CLIENT_FRAME_H
#define WSGATE_CLIENT_FRAME_H

#include <stddef.h>
#include <stdint.h>

#include "auth_jwt.h"

enum client_frame_kind {
	CLIENT_FRAME_INVALID_JSON, /* answer
	                              {"type":"error","code":"invalid_json"} */
	CLIENT_FRAME_PING,         /* answer {"type":"pong"} */
	CLIENT_FRAME_ACK,          /* consume; seq in ack_seq */
	CLIENT_FRAME_INVALID_ACK,  /* ack whose seq is not a positive integer */
	CLIENT_FRAME_AUTH, /* {"type":"auth","token":T}: first-message auth */
	CLIENT_FRAME_REFRESH, /* {"type":"refresh","token":T}: a new token */
	CLIENT_FRAME_FORWARD, /* any other JSON: to backends */
};

/* What client_frame_classify found besides the kind. */
struct client_frame {
	uint64_t ack_seq; /* ACK: > 0; 0 otherwise */
	/* AUTH and REFRESH: the "token" member's bytes, NUL-terminated. A
	 * token longer than AUTH_JWT_MAX_TOKEN keeps AUTH_JWT_MAX_TOKEN + 1
	 * bytes (so that the verifier still refuses it as too long); one
	 * that is absent or not a string has token_len 0. */
	char token[AUTH_JWT_MAX_TOKEN + 2];
	size_t token_len;
};

enum client_frame_kind client_frame_classify(const void *data, size_t len,
                                             struct client_frame *out);

#endif
