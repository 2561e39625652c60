/*
 * handshake: pure parsers of what a WebSocket handshake carries -- the
 * token in each of its three transports, ?since= and ?epoch=. No libwebsockets
 * here, so that they can be unit-tested and fuzzed on their own.
 *
 * Returned tokens point into the caller's buffer.
 */
#ifndef WSGATE_HANDSHAKE_H
#define WSGATE_HANDSHAKE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* "Bearer <token>" (scheme case-insensitive). 0 and the token, or -1. */
int handshake_token_from_authorization(const char *value, size_t len,
                                       const char **tok, size_t *tok_len);
/* Sec-WebSocket-Protocol "wsgate.v1, bearer.<token>": 0 and the token, or
 * -1 when no bearer.* element is there. */
int handshake_token_from_protocols(const char *value, size_t len,
                                   const char **tok, size_t *tok_len);

enum handshake_since { SINCE_ABSENT, SINCE_VALID, SINCE_INVALID };
/* value is the since= query value (NULL when absent). Empty counts as
 * absent; otherwise a decimal integer >= 0 that fits in 64 bits. */
enum handshake_since handshake_parse_since(const char *value, uint64_t *out);

enum handshake_epoch { EPOCH_ABSENT, EPOCH_VALID, EPOCH_INVALID };
/* value is the epoch= query value (NULL when absent). Empty counts as
 * absent; otherwise letters and digits, copied to out (cap bytes, the
 * NUL included: a longer value is invalid). */
enum handshake_epoch handshake_parse_epoch(const char *value, char *out,
                                           size_t cap);

#endif
