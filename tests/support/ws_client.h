/*
 * ws_client: a small blocking RFC 6455 WebSocket client for the tests.
 *
 * It owns one plain TCP connection to 127.0.0.1 and a read buffer: the
 * handshake (with Sec-WebSocket-Accept checked), masked client frames
 * (text, binary, ping, close, fragments, and raw bytes for hostile tests),
 * and the reading of server frames with a timeout. Server pings are answered
 * with pongs automatically and never returned; a server close is echoed once.
 * Fragmented server messages are reassembled before they are returned.
 *
 * Every wait is bounded by a timeout in milliseconds, so a misbehaving server
 * makes a test fail, never hang. Not thread-safe: one client, one thread.
 */
#ifndef WSGATE_TEST_WS_CLIENT_H
#define WSGATE_TEST_WS_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Opcodes of RFC 6455, section 5.2. */
enum ws_opcode {
	WS_OP_CONTINUATION = 0x0,
	WS_OP_TEXT = 0x1,
	WS_OP_BINARY = 0x2,
	WS_OP_CLOSE = 0x8,
	WS_OP_PING = 0x9,
	WS_OP_PONG = 0xA,
};

/* Results of the calls below that do not return an HTTP status. */
enum ws_client_rc {
	WS_CLIENT_OK = 0,
	WS_CLIENT_TIMEOUT = -1, /* nothing complete within the timeout */
	WS_CLIENT_EOF = -2,     /* the server closed TCP (or after a close) */
	WS_CLIENT_ERROR = -3,   /* I/O or protocol error: ws_client_error() */
};

/* One received message. data is NUL-terminated (not counted in len), so a
 * text message can be used as a C string. The buffer grows as needed and is
 * reused by later ws_client_recv calls on the same ws_msg; free it with
 * ws_msg_free. */
struct ws_msg {
	enum ws_opcode opcode; /* TEXT, BINARY, CLOSE or PONG */
	unsigned char *data;
	size_t len;
	size_t cap;
	int close_code; /* CLOSE: the code, 1005 when the frame had none */
	char close_reason[124];
};

struct ws_client;

/* Opens a WebSocket to 127.0.0.1:port. path includes the query string
 * ("/ws?access_token=..."); headers is NULL or a NULL-terminated list of
 * complete header lines without CRLF ("Authorization: Bearer X").
 * Returns the HTTP status of the handshake (101, 401, 429, ...) and sets
 * *out only for a valid 101 (correct Sec-WebSocket-Accept); returns
 * WS_CLIENT_ERROR or WS_CLIENT_TIMEOUT when there was no valid answer. */
int ws_client_connect(struct ws_client **out, uint16_t port, const char *path,
                      const char *const *headers, int timeout_ms);
/* Like ws_client_connect, with the socket's receive buffer capped at about
 * rcvbuf bytes (SO_RCVBUF) before it connects: TCP then never offers the
 * server a larger window, and a client that stops reading stops the
 * server's socket for good (ws_client_set_rcvbuf after the handshake
 * shrinks the buffer, not the window already offered: the kernel keeps
 * taking data, slowly). rcvbuf 0: the system's default. */
int ws_client_connect_rcvbuf(struct ws_client **out, uint16_t port,
                             const char *path, const char *const *headers,
                             int rcvbuf, int timeout_ms);

/* The subprotocol the server chose, "" when none. */
const char *ws_client_subprotocol(const struct ws_client *c);
/* How many server pings were answered so far. */
unsigned ws_client_pings_answered(const struct ws_client *c);
/* Caps the socket's receive buffer at about bytes (SO_RCVBUF; the kernel
 * stops growing it), so that a client that does not read fills up soon.
 * Returns 0, or -1 with ws_client_error() set. */
int ws_client_set_rcvbuf(struct ws_client *c, int bytes);
/* Thread-local text of the last failure of this module. */
const char *ws_client_error(void);

/* Sends one masked frame (random mask). fin false starts or continues a
 * fragmented message (the caller chooses WS_OP_CONTINUATION for the
 * following frames). opcode may be any 4-bit value, for hostile tests. */
int ws_client_send_frame(struct ws_client *c, int opcode, bool fin,
                         const void *data, size_t len);
int ws_client_send_text(struct ws_client *c, const char *text);
int ws_client_send_binary(struct ws_client *c, const void *data, size_t len);
int ws_client_send_ping(struct ws_client *c, const void *data, size_t len);
/* code 0 sends a close frame without a body. */
int ws_client_send_close(struct ws_client *c, int code, const char *reason);
/* Sends data as one message of opcode split into frames of at most
 * fragment bytes (a message shorter than that is still split in two). */
int ws_client_send_fragmented(struct ws_client *c, int opcode, const void *data,
                              size_t len, size_t fragment);
/* Writes bytes as they are: no framing, no mask. */
int ws_client_send_raw(struct ws_client *c, const void *data, size_t len);

/* Waits up to timeout_ms for one whole message (TEXT, BINARY, CLOSE or
 * PONG) and stores it in *m. */
int ws_client_recv(struct ws_client *c, struct ws_msg *m, int timeout_ms);
/* Like ws_client_recv but requires a TEXT message: returns it as a malloc'd
 * string, or NULL (ws_client_error() says what came instead). */
char *ws_client_recv_text(struct ws_client *c, int timeout_ms);
/* Reads messages until a close frame arrives (skipping anything else) and
 * returns its code, or a negative enum ws_client_rc. */
int ws_client_recv_close(struct ws_client *c, int timeout_ms);

void ws_msg_free(struct ws_msg *m);

/* Closing handshake: sends close 1000 (unless a close was sent already),
 * waits up to timeout_ms for the server's close or EOF, then closes the
 * socket and frees c. NULL is a no-op. */
void ws_client_close(struct ws_client *c, int timeout_ms);
/* Drops the TCP connection without a closing handshake and frees c. */
void ws_client_abort(struct ws_client *c);

/* The WebSockets a test holds, so that its teardown aborts them even when
 * an assertion ended the test early. */
#define WS_CLIENT_SET_MAX 64
struct ws_client_set {
	struct ws_client *c[WS_CLIENT_SET_MAX];
};

/* Returns 0, or -1 when the set is full. */
int ws_client_set_add(struct ws_client_set *s, struct ws_client *c);
/* Forgets c (the caller closes or aborts it). */
void ws_client_set_forget(struct ws_client_set *s, struct ws_client *c);
/* Aborts every client of s and empties it. */
void ws_client_set_abort_all(struct ws_client_set *s);

#endif
