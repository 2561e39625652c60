/*
 * libwsgate, inbound side: owns struct wsgate_inbound (one pull0 socket
 * dialed to the sidecar's push0 at --inbound) and turns each
 * wsgate.v1.Inbound into a struct wsgate_inbound_msg. One thread at a time
 * per handle (the receive timeout is a socket option set per call).
 */
#include "wsgate.h"
#include "wsgate.pb-c.h"

#include <nng/nng.h>
#include <nng/protocol/pipeline0/pull.h>

#include <stdlib.h>
#include <string.h>

/* Client frames are 64 KiB by default and --max-client-frame is
 * configurable, so this only guards against a broken peer. */
#define INBOUND_RECV_MAX ((size_t)64 * 1024 * 1024)

/* One of these per wsgate_inbound_open(). */
struct wsgate_inbound {
	nng_socket sock;
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

enum wsgate_status wsgate_inbound_open(wsgate_inbound **out, const char *url)
{
	struct wsgate_inbound *in;
	int rv;

	if (out == NULL)
		return WSGATE_ERR_ARGUMENT;
	*out = NULL;
	if (url == NULL)
		url = WSGATE_DEFAULT_INBOUND;
	if ((in = calloc(1, sizeof(*in))) == NULL)
		return WSGATE_ERR_TRANSPORT;
	if ((rv = nng_pull0_open(&in->sock)) != 0) {
		free(in);
		return WSGATE_ERR_TRANSPORT;
	}
	/* Non-blocking dial: a backend may start before the sidecar; NNG
	 * keeps redialing and messages flow once it is up. */
	if ((rv = nng_socket_set_size(in->sock, NNG_OPT_RECVMAXSZ,
	                              INBOUND_RECV_MAX)) != 0 ||
	    (rv = nng_dial(in->sock, url, NULL, NNG_FLAG_NONBLOCK)) != 0) {
		nng_close(in->sock);
		free(in);
		if (rv == NNG_EADDRINVAL || rv == NNG_ENOTSUP ||
		    rv == NNG_EINVAL)
			return WSGATE_ERR_ARGUMENT;
		return WSGATE_ERR_TRANSPORT;
	}
	*out = in;
	return WSGATE_OK;
}

void wsgate_inbound_close(wsgate_inbound *in)
{
	if (in == NULL)
		return;
	nng_close(in->sock);
	free(in);
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
	nng_msg *m;
	int rv;

	if (msg != NULL)
		memset(msg, 0, sizeof(*msg));
	if (in == NULL || msg == NULL || timeout_ms < -1)
		return WSGATE_ERR_ARGUMENT;
	if ((rv = nng_socket_set_ms(in->sock, NNG_OPT_RECVTIMEO, timeout_ms)) !=
	    0)
		return WSGATE_ERR_TRANSPORT;
	if ((rv = nng_recvmsg(in->sock, &m, 0)) != 0)
		return rv == NNG_ETIMEDOUT || rv == NNG_EAGAIN
		           ? WSGATE_ERR_TIMEOUT
		           : WSGATE_ERR_TRANSPORT;
	pb = wsgate__v1__inbound__unpack(NULL, nng_msg_len(m), nng_msg_body(m));
	nng_msg_free(m);
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
