/*
 * inbound: push0 sender of wsgate.v1.Inbound (see inbound.h) over
 * sp_server.
 *
 * Like NNG's push0, a message goes to one backend: the next, round robin,
 * whose connection has taken everything sent to it so far (a pull peer
 * reads as fast as it handles messages). When none has, it waits in a
 * queue of at most --inbound-buffer messages, which the first connection
 * to drain or to open takes from, oldest first. A message already handed
 * to a connection's kernel buffer is lost if that backend goes away, as
 * with NNG; one whose send fails (the backend left or stopped reading)
 * goes to the next backend or back to the queue.
 *
 * Every struct here belongs to the service thread.
 */
#include "inbound.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "sp_server.h"
#include "wsgate.pb-c.h"

/* What a pull peer may send (it should send nothing; it is discarded). */
#define INBOUND_MAX_PEER_MESSAGE (64u << 10)

/* One message waiting for a backend. */
struct inbound_msg {
	struct inbound_msg *next;
	size_t len;
	uint8_t data[];
};

/* One backend connection, from on_open to on_close. */
struct inbound_peer {
	struct sp_pipe *pipe;
	struct inbound_peer *next;
};

struct inbound {
	struct sp_server *srv;
	/* Open connections; the next message tries `next_peer` first. */
	struct inbound_peer *peers, *next_peer;
	struct inbound_msg *queue_head, *queue_tail;
	size_t queue_len, queue_max;
	uint8_t *buf; /* inbound_send packs here; grows, never shrinks */
	size_t buf_cap;
};

/* A send that fails has closed p, and on_close has freed its peer: the
 * caller must not touch the peer again. */
static int pipe_send_msg(struct sp_pipe *p, const void *data, size_t len)
{
	struct iovec iov = {(void *)data, len};
	return sp_pipe_send(p, &iov, 1);
}

/*
 * Sends queued messages to p while it takes them at once. A send can
 * close p (the backend left, or shut its reading side), and on_close then
 * frees p's peer: the loop looks only at p, which it holds. A message p
 * did not take stays at the head of the queue for the next backend.
 */
static void pipe_take_queue(struct inbound *in, struct sp_pipe *p)
{
	struct inbound_msg *m;
	sp_pipe_hold(p);
	while ((m = in->queue_head) && sp_pipe_is_open(p) &&
	       sp_pipe_unsent(p) == 0) {
		if (pipe_send_msg(p, m->data, m->len) != 0)
			break;
		in->queue_head = m->next;
		if (!in->queue_head)
			in->queue_tail = NULL;
		in->queue_len--;
		free(m);
	}
	sp_pipe_release(p);
}

static void on_open(void *arg, struct sp_pipe *p)
{
	struct inbound *in = arg;
	struct inbound_peer *peer = calloc(1, sizeof(*peer));
	if (!peer) {
		log_error("inbound: out of memory: connection closed");
		sp_pipe_close(p);
		return;
	}
	peer->pipe = p;
	peer->next = in->peers;
	in->peers = peer;
	sp_pipe_set_data(p, peer);
	pipe_take_queue(in, p);
}

static void on_drained(void *arg, struct sp_pipe *p)
{
	pipe_take_queue(arg, p);
}

static void on_close(void *arg, struct sp_pipe *p)
{
	struct inbound *in = arg;
	struct inbound_peer *peer = sp_pipe_data(p), **pp;
	if (!peer)
		return;
	for (pp = &in->peers; *pp != peer; pp = &(*pp)->next)
		;
	*pp = peer->next;
	if (in->next_peer == peer)
		in->next_peer = peer->next;
	free(peer);
}

/* A pull peer has nothing to say; NNG's push0 discards it too. */
static void on_message(void *arg, struct sp_pipe *p, const uint8_t *msg,
                       size_t len)
{
	(void)arg;
	(void)p;
	(void)msg;
	(void)len;
}

int inbound_open(struct inbound **out, struct ev_loop *loop, const char *url,
                 int ipc_mode, int buffer, char *err, size_t errlen)
{
	static const struct sp_server_ops ops = {
	    .on_message = on_message,
	    .on_open = on_open,
	    .on_drained = on_drained,
	    .on_close = on_close,
	};
	struct sp_server_config scfg = {
	    .what = "inbound",
	    .url = url,
	    .ipc_mode = ipc_mode,
	    .proto = SP_PROTO_PUSH0,
	    .peer = SP_PROTO_PULL0,
	    .max_message = INBOUND_MAX_PEER_MESSAGE,
	    .max_unsent = (size_t)-1,
	};
	struct inbound *in = calloc(1, sizeof(*in));
	if (!in) {
		snprintf(err, errlen, "inbound: out of memory");
		return -1;
	}
	in->queue_max = buffer > 0 ? (size_t)buffer : 0;
	if (sp_server_listen(&in->srv, loop, &scfg, &ops, in, err, errlen)) {
		free(in);
		return -1;
	}
	*out = in;
	return 0;
}

void inbound_close(struct inbound *in)
{
	if (!in)
		return;
	sp_server_close(in->srv); /* on_close frees every peer */
	while (in->queue_head) {
		struct inbound_msg *m = in->queue_head;
		in->queue_head = m->next;
		free(m);
	}
	free(in->buf);
	free(in);
}

/* The next peer, round robin, that has taken everything sent to it. */
static struct inbound_peer *pick_peer(struct inbound *in)
{
	struct inbound_peer *start = in->next_peer ? in->next_peer : in->peers;
	struct inbound_peer *peer = start;
	if (!peer)
		return NULL;
	do {
		struct inbound_peer *next = peer->next ? peer->next : in->peers;
		if (sp_pipe_unsent(peer->pipe) == 0) {
			in->next_peer = next;
			return peer;
		}
		peer = next;
	} while (peer != start);
	return NULL;
}

static int inbound_send(struct inbound *in, const Wsgate__V1__Inbound *msg)
{
	size_t len = wsgate__v1__inbound__get_packed_size(msg);
	struct inbound_peer *peer;
	/* Waiting messages go first: order is kept while the queue drains. */
	if (!in->queue_head && in->peers) {
		if (len > in->buf_cap) {
			uint8_t *buf = realloc(in->buf, len);
			if (!buf)
				return -1;
			in->buf = buf;
			in->buf_cap = len;
		}
		wsgate__v1__inbound__pack(msg, in->buf);
		/* A failed send closed its pipe, and on_close took the peer
		 * off the list and freed it: the next peer, or else the
		 * queue, gets the message. */
		while ((peer = pick_peer(in)))
			if (pipe_send_msg(peer->pipe, in->buf, len) == 0)
				return 0;
	}
	if (in->queue_len >= in->queue_max)
		return -1;
	struct inbound_msg *m = malloc(sizeof(*m) + len);
	if (!m)
		return -1;
	m->next = NULL;
	m->len = len;
	wsgate__v1__inbound__pack(msg, m->data);
	if (in->queue_tail)
		in->queue_tail->next = m;
	else
		in->queue_head = m;
	in->queue_tail = m;
	in->queue_len++;
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
