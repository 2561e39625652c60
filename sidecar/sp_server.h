/*
 * sp_server: the listening side of NNG's scalability protocols (SP) over
 * ipc://, served on the service thread's libev loop.
 *
 * Backends and wsgatectl are NNG clients (req0, pull0); the sidecar speaks
 * the same wire format itself instead of running NNG 1.5.2 sockets, whose
 * threads cost about four hand-offs per request and whose listener, push0
 * and close paths have bugs we hit (docs/DESIGN.md "Control transport").
 *
 * The wire format is sp_wire.h's; the protocol's own header (req/rep's
 * request-id backtrace) is the start of each message: reading it is the
 * caller's business.
 *
 * A pipe is one accepted connection whose peer sent a valid header naming
 * the expected peer protocol. It is closed, and the owner told through
 * on_close, when the peer leaves, sends a bad header, a frame of another
 * type or one longer than max_message, or does not send its header within
 * SP_HANDSHAKE_MS. Output the kernel does not take is kept for the pipe;
 * while more than max_unsent bytes are kept, the pipe is not read (a peer
 * that does not read its replies cannot send more requests).
 *
 * Threads: everything runs on the loop's thread.
 *
 * Ownership: the server owns its pipes. A pipe stays allocated while
 * anyone holds it (sp_pipe_hold / sp_pipe_release), even after it closed;
 * sending on a closed pipe does nothing.
 */
#ifndef WSGATE_SP_SERVER_H
#define WSGATE_SP_SERVER_H

#include <ev.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "sp_wire.h"

/* A connection that has not sent its SP header by then is closed. */
#define SP_HANDSHAKE_MS 10000

struct sp_server;
struct sp_pipe;

struct sp_server_ops {
	/* A whole message; msg is valid during the call only. The callee
	 * may send, hold, pause or close p. */
	void (*on_message)(void *arg, struct sp_pipe *p, const uint8_t *msg,
	                   size_t len);
	/* The header exchange is done (may be NULL). */
	void (*on_open)(void *arg, struct sp_pipe *p);
	/* Every byte sent so far has reached the kernel, after a send that
	 * had to keep some (may be NULL). */
	void (*on_drained)(void *arg, struct sp_pipe *p);
	/* p is closed (for an opened pipe only; may be NULL). */
	void (*on_close)(void *arg, struct sp_pipe *p);
	/* One line about the listener or a pipe (NULL: log_warn). */
	void (*on_log)(void *arg, const char *line);
};

struct sp_server_config {
	const char *what;   /* "control": the prefix of errors and log lines */
	const char *url;    /* ipc:///path/to/socket */
	int ipc_mode;       /* permissions of the socket file */
	uint16_t proto;     /* ours, e.g. SP_PROTO_REP0 */
	uint16_t peer;      /* the only peer protocol accepted */
	size_t max_message; /* longer incoming messages close the pipe */
	size_t max_unsent;  /* kept output past which a pipe is not read */
};

/* Creates the socket file's directory if missing (mode 0700, plus search
 * permission for whom ipc_mode admits), refuses it unless it belongs to
 * the effective uid and is not writable by group or others, replaces a
 * stale socket file (one nothing listens on; a live one is "address in
 * use"), binds it with mode ipc_mode from the start, and accepts on loop.
 * 0 and *out, or -1 with a one-line reason in err. */
int sp_server_listen(struct sp_server **out, struct ev_loop *loop,
                     const struct sp_server_config *cfg,
                     const struct sp_server_ops *ops, void *arg, char *err,
                     size_t errlen);
/* Writes what each pipe still holds as far as the kernel takes it without
 * waiting, closes every pipe (on_close for each) and the listener, and
 * removes the socket file. Then frees the server; pipes still held are
 * freed by their last sp_pipe_release. NULL is ignored. */
void sp_server_close(struct sp_server *srv);

/* Sends one message made of the n pieces of iov (the frame header is
 * added here). Whatever the kernel does not take now is kept and sent as
 * the peer reads. 0, or -1 when p is closed or out of memory (then p is
 * closed). */
int sp_pipe_send(struct sp_pipe *p, const struct iovec *iov, int n);
/* Bytes sent on p and not yet taken by the kernel. */
size_t sp_pipe_unsent(const struct sp_pipe *p);
bool sp_pipe_is_open(const struct sp_pipe *p);
/* Stops (false) or resumes (true) reading p; sp_server also stops it
 * while more than max_unsent bytes are kept, whatever this says. */
void sp_pipe_set_reading(struct sp_pipe *p, bool reading);
/* Closes p now (on_close runs before this returns). */
void sp_pipe_close(struct sp_pipe *p);
void sp_pipe_hold(struct sp_pipe *p);
void sp_pipe_release(struct sp_pipe *p);
/* The owner's data for p (NULL until set). */
void sp_pipe_set_data(struct sp_pipe *p, void *data);
void *sp_pipe_data(const struct sp_pipe *p);

#endif
