/*
 * inbound: non-blocking push0 sender of wsgate.v1.Inbound (see inbound.h),
 * listening through a watched listener (ipc_listen.h).
 */
#include "inbound.h"

#include <nng/nng.h>
#include <nng/protocol/pipeline0/push.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ipc_listen.h"
#include "log.h"
#include "wsgate.pb-c.h"

/* NNG caps socket buffers at 8192 messages. */
#define INBOUND_MAX_BUFFER 8192

struct inbound {
	nng_socket sock;
	struct ipc_listener *listener;
};

/* The listener watchdog's line when it restarts a dead listener. */
static void inbound_listener_log(void *arg, const char *line)
{
	(void)arg;
	log_warn("%s", line);
}

int inbound_open(struct inbound **out, const char *url, int ipc_mode,
                 int buffer, char *err, size_t errlen)
{
	struct inbound *in = calloc(1, sizeof(*in));
	int rv;
	if (!in) {
		snprintf(err, errlen, "inbound: out of memory");
		return -1;
	}
	if ((rv = nng_push0_open(&in->sock)) != 0) {
		snprintf(err, errlen, "inbound: %s", nng_strerror(rv));
		free(in);
		return -1;
	}
	if (buffer > INBOUND_MAX_BUFFER)
		buffer = INBOUND_MAX_BUFFER;
	nng_socket_set_int(in->sock, NNG_OPT_SENDBUF, buffer);
	if (ipc_listen(&in->listener, in->sock, "inbound", url, ipc_mode,
	               inbound_listener_log, NULL, err, errlen))
		goto fail;
	*out = in;
	return 0;
fail:
	nng_close(in->sock);
	free(in);
	return -1;
}

void inbound_close(struct inbound *in)
{
	if (!in)
		return;
	ipc_listener_stop(in->listener);
	nng_close(in->sock);
	ipc_listener_free(in->listener);
	free(in);
}

static int inbound_send(struct inbound *in, const Wsgate__V1__Inbound *msg)
{
	size_t len = wsgate__v1__inbound__get_packed_size(msg);
	nng_msg *m;
	if (nng_msg_alloc(&m, len) != 0)
		return -1;
	wsgate__v1__inbound__pack(msg, nng_msg_body(m));
	if (nng_sendmsg(in->sock, m, NNG_FLAG_NONBLOCK) != 0) {
		nng_msg_free(m);
		return -1;
	}
	return 0;
}

int inbound_send_client_message(struct inbound *in, const char *conn_id,
                                const char *user_id, const void *data,
                                size_t len, int64_t received_at)
{
	Wsgate__V1__ClientMessage cm = WSGATE__V1__CLIENT_MESSAGE__INIT;
	Wsgate__V1__Inbound msg = WSGATE__V1__INBOUND__INIT;
	cm.conn_id = (char *)conn_id;
	cm.user_id = (char *)user_id;
	cm.data.data = (uint8_t *)data;
	cm.data.len = len;
	cm.received_at = received_at;
	msg.body_case = WSGATE__V1__INBOUND__BODY_CLIENT_MESSAGE;
	msg.client_message = &cm;
	return inbound_send(in, &msg);
}

int inbound_send_opened(struct inbound *in, const char *conn_id,
                        const char *user_id, const char *peer, int64_t at)
{
	Wsgate__V1__ConnectionOpened o = WSGATE__V1__CONNECTION_OPENED__INIT;
	Wsgate__V1__Inbound msg = WSGATE__V1__INBOUND__INIT;
	o.conn_id = (char *)conn_id;
	o.user_id = (char *)user_id;
	o.peer = (char *)peer;
	o.at = at;
	msg.body_case = WSGATE__V1__INBOUND__BODY_OPENED;
	msg.opened = &o;
	return inbound_send(in, &msg);
}

int inbound_send_closed(struct inbound *in, const char *conn_id,
                        const char *user_id, int code, const char *reason,
                        int64_t at)
{
	Wsgate__V1__ConnectionClosed c = WSGATE__V1__CONNECTION_CLOSED__INIT;
	Wsgate__V1__Inbound msg = WSGATE__V1__INBOUND__INIT;
	c.conn_id = (char *)conn_id;
	c.user_id = (char *)user_id;
	c.code = code;
	c.reason = (char *)reason;
	c.at = at;
	msg.body_case = WSGATE__V1__INBOUND__BODY_CLOSED;
	msg.closed = &c;
	return inbound_send(in, &msg);
}
