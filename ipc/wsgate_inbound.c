/*
 * libwsgate, inbound side: owns struct wsgate_inbound (a pull0 connection
 * to the sidecar's push0 at --inbound, in NNG's wire format through
 * sp_conn) and turns each wsgate.v1.Inbound into a struct
 * wsgate_inbound_msg. One thread at a time per handle.
 *
 * The connection is made at open if the sidecar is there, else by the
 * first receive that finds it; one that breaks (a sidecar restart) is
 * redialed by the next receive. Meanwhile the sidecar keeps messages for
 * backends in its --inbound-buffer. A frame cut short by a receive's
 * timeout is resumed by the next receive.
 */
#include "sp_conn.h"
#include "sp_wire.h"
#include "wsgate.h"
#include "wsgate.pb-c.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Client frames are 64 KiB by default and --max-client-frame is
 * configurable, so this only guards against a broken peer. */
#define INBOUND_RECV_MAX ((size_t)64 * 1024 * 1024)

/* How long open waits for the sidecar's SP header. */
#define INBOUND_OPEN_WAIT_MS 1000

/* The least time a dial gets for the header exchange. */
#define INBOUND_DIAL_MS 100

/* One of these per wsgate_inbound_open(). */
struct wsgate_inbound {
	struct sockaddr_un addr;
	int fd; /* -1: not connected */
	/* The frame being read: head, then body. */
	uint8_t head[SP_FRAME_HEAD];
	size_t head_got;
	uint8_t *body;
	size_t body_len, body_got;
};

/* Copies src into dst[cap], truncating on a UTF-8 character boundary. */
static void copy_str(char *dst, size_t cap, const char *src)
{
	size_t len = src != NULL ? strlen(src) : 0;

	if (len >= cap) {
		len = cap - 1;
		while (len > 0 && ((unsigned char)src[len] & 0xC0) == 0x80)
			len--;
	}
	if (len > 0)
		memcpy(dst, src, len);
	dst[len] = '\0';
}

static void inbound_disconnect(struct wsgate_inbound *in)
{
	if (in->fd >= 0)
		close(in->fd);
	in->fd = -1;
	free(in->body);
	in->body = NULL;
	in->head_got = in->body_len = in->body_got = 0;
}

/* Connects by the deadline if it can. The header exchange gets at least
 * INBOUND_DIAL_MS, so that a receive with timeout 0 can connect. */
static enum sp_io inbound_dial(struct wsgate_inbound *in, int64_t deadline)
{
	char err[256];
	in->fd =
	    sp_conn_dial_until(&in->addr, SP_PROTO_PULL0, SP_PROTO_PUSH0,
	                       deadline, INBOUND_DIAL_MS, err, sizeof(err));
	return in->fd >= 0 ? SP_IO_OK : SP_IO_TIMEOUT;
}

enum wsgate_status wsgate_inbound_open(wsgate_inbound **out, const char *url)
{
	struct wsgate_inbound *in;

	if (out == NULL)
		return WSGATE_ERR_ARGUMENT;
	*out = NULL;
	if (url == NULL)
		url = WSGATE_DEFAULT_INBOUND;
	if ((in = calloc(1, sizeof(*in))) == NULL)
		return WSGATE_ERR_TRANSPORT;
	if (sp_conn_addr(&in->addr, url) != 0) {
		free(in);
		return WSGATE_ERR_ARGUMENT;
	}
	in->fd = -1;
	/* One attempt: a backend may start before the sidecar. */
	if (inbound_dial(in, sp_conn_now_ms() + INBOUND_OPEN_WAIT_MS) !=
	    SP_IO_OK)
		in->fd = -1;
	*out = in;
	return WSGATE_OK;
}

void wsgate_inbound_close(wsgate_inbound *in)
{
	if (in == NULL)
		return;
	inbound_disconnect(in);
	free(in);
}

/*
 * Reads one whole message into in->body (in->body_len bytes) by the
 * deadline, dialing and redialing as needed. SP_IO_BROKEN only for a
 * frame over INBOUND_RECV_MAX or out of memory (the connection is
 * dropped).
 */
static enum sp_io inbound_read_frame(struct wsgate_inbound *in,
                                     int64_t deadline)
{
	for (;;) {
		enum sp_io r;
		if (in->fd < 0 && inbound_dial(in, deadline) != SP_IO_OK)
			return SP_IO_TIMEOUT;
		r = sp_conn_read(in->fd, in->head, sizeof(in->head),
		                 &in->head_got, deadline);
		if (r == SP_IO_OK && in->body == NULL) {
			uint64_t n = sp_wire_frame_len(in->head);
			if (in->head[0] != SP_MSG_TYPE ||
			    n > INBOUND_RECV_MAX ||
			    (in->body = malloc(n ? (size_t)n : 1)) == NULL) {
				inbound_disconnect(in);
				return SP_IO_BROKEN;
			}
			in->body_len = (size_t)n;
		}
		if (r == SP_IO_OK)
			r = sp_conn_read(in->fd, in->body, in->body_len,
			                 &in->body_got, deadline);
		if (r != SP_IO_BROKEN)
			return r;
		/* The sidecar went away: the next connection starts anew. */
		inbound_disconnect(in);
		if (sp_conn_now_ms() >= deadline)
			return SP_IO_TIMEOUT;
	}
}

/* CLIENT_MESSAGE data gets a NUL after data_len bytes, so a backend may
 * hand the JSON text to a string parser directly. */
static enum wsgate_status inbound_fill(const Wsgate__V1__Inbound *pb,
                                       struct wsgate_inbound_msg *msg)
{
	switch (pb->body_case) {
	case WSGATE__V1__INBOUND__BODY_CLIENT_MESSAGE: {
		const Wsgate__V1__ClientMessage *m = pb->client_message;

		msg->kind = WSGATE_INBOUND_CLIENT_MESSAGE;
		copy_str(msg->conn_id, sizeof(msg->conn_id), m->conn_id);
		copy_str(msg->user_id, sizeof(msg->user_id), m->user_id);
		msg->at = m->received_at;
		if ((msg->data = malloc(m->data.len + 1)) == NULL)
			return WSGATE_ERR_TRANSPORT;
		if (m->data.len > 0)
			memcpy(msg->data, m->data.data, m->data.len);
		msg->data[m->data.len] = '\0';
		msg->data_len = m->data.len;
		return WSGATE_OK;
	}
	case WSGATE__V1__INBOUND__BODY_OPENED:
		msg->kind = WSGATE_INBOUND_OPENED;
		copy_str(msg->conn_id, sizeof(msg->conn_id),
		         pb->opened->conn_id);
		copy_str(msg->user_id, sizeof(msg->user_id),
		         pb->opened->user_id);
		msg->at = pb->opened->at;
		copy_str(msg->peer, sizeof(msg->peer), pb->opened->peer);
		return WSGATE_OK;
	case WSGATE__V1__INBOUND__BODY_CLOSED:
		msg->kind = WSGATE_INBOUND_CLOSED;
		copy_str(msg->conn_id, sizeof(msg->conn_id),
		         pb->closed->conn_id);
		copy_str(msg->user_id, sizeof(msg->user_id),
		         pb->closed->user_id);
		msg->at = pb->closed->at;
		msg->code = pb->closed->code;
		copy_str(msg->reason, sizeof(msg->reason), pb->closed->reason);
		return WSGATE_OK;
	default:
		return WSGATE_ERR_PROTOCOL;
	}
}

/*
 * timeout_ms: > 0 waits that long, 0 only takes what is already queued,
 * -1 waits forever. *msg is overwritten (not freed): clear a previous
 * message first. On any status but WSGATE_OK, *msg is empty; a
 * WSGATE_ERR_PROTOCOL message has been consumed, so the caller may simply
 * go on receiving.
 */
enum wsgate_status wsgate_inbound_recv(wsgate_inbound *in,
                                       struct wsgate_inbound_msg *msg,
                                       int timeout_ms)
{
	Wsgate__V1__Inbound *pb;
	enum wsgate_status st;
	enum sp_io r;

	if (msg != NULL)
		memset(msg, 0, sizeof(*msg));
	if (in == NULL || msg == NULL || timeout_ms < -1)
		return WSGATE_ERR_ARGUMENT;
	r = inbound_read_frame(in, timeout_ms < 0
	                               ? SP_CONN_FOREVER
	                               : sp_conn_now_ms() + timeout_ms);
	if (r == SP_IO_TIMEOUT)
		return WSGATE_ERR_TIMEOUT;
	if (r != SP_IO_OK)
		return WSGATE_ERR_PROTOCOL;
	pb = wsgate__v1__inbound__unpack(NULL, in->body_len, in->body);
	free(in->body);
	in->body = NULL;
	in->head_got = in->body_len = in->body_got = 0;
	if (pb == NULL)
		return WSGATE_ERR_PROTOCOL;
	st = inbound_fill(pb, msg);
	wsgate__v1__inbound__free_unpacked(pb, NULL);
	if (st != WSGATE_OK)
		wsgate_inbound_msg_clear(msg);
	return st;
}

void wsgate_inbound_msg_clear(struct wsgate_inbound_msg *msg)
{
	if (msg == NULL)
		return;
	free(msg->data);
	memset(msg, 0, sizeof(*msg));
}
