/*
 * client_frame: what a complete text message from a browser asks for.
 * Pure: no connection state, so it can be tested and fuzzed alone.
 */
#ifndef WSGATE_CLIENT_FRAME_H
#define WSGATE_CLIENT_FRAME_H

#include <stddef.h>
#include <stdint.h>

enum client_frame_kind {
	CLIENT_FRAME_INVALID_JSON, /* answer
	                              {"type":"error","code":"invalid_json"} */
	CLIENT_FRAME_PING,         /* answer {"type":"pong"} */
	CLIENT_FRAME_ACK,          /* consume; seq in *ack_seq */
	CLIENT_FRAME_INVALID_ACK,  /* ack whose seq is not a positive integer */
	CLIENT_FRAME_FORWARD,      /* any other JSON: to backends */
};

enum client_frame_kind client_frame_classify(const void *data, size_t len,
                                             uint64_t *ack_seq);

#endif
