/*
 * libwsgate, control side: owns struct wsgate_client and the request/reply
 * round trip behind every control call, plus the status and event type
 * names. The inbound channel is in wsgate_inbound.c. The public surface is
 * ipc/wsgate.h.
 *
 * The transport is req0 over ipc:// in NNG's wire format (sp_wire.h),
 * spoken here directly: a call takes an idle connection of the client (or
 * dials a new one), writes its request, and itself waits in poll() for the
 * reply on that connection -- one thread wake-up per call, where NNG 1.5.2
 * hands a request and its reply between three or four of its threads.
 * Concurrent calls use separate connections, kept for reuse (at most
 * CLIENT_IDLE_MAX idle). As NNG's req0 does, a request whose connection
 * breaks before the reply is sent again on a new one until the call's
 * timeout; event_id makes that safe for events (a repeat is a duplicate).
 * A connection whose call timed out is closed: its late reply must not
 * reach the next call.
 *
 * Shared mutable state: the request id counter (atomic), and under lk the
 * last error text and the idle connections.
 */
#include "sp_conn.h"
#include "sp_wire.h"
#include "wsgate.h"
#include "wsgate.pb-c.h"
#include "wsgate_coalesce.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Largest reply accepted: a ConnectionList of tens of thousands of
 * connections is a few MiB, so 64 MiB only stops a broken or hostile peer
 * from making us allocate without bound. */
#define CLIENT_RECV_MAX ((size_t)64 * 1024 * 1024)

/* Idle connections kept per client; more are closed when calls end. */
#define CLIENT_IDLE_MAX 64

/* One connection to the control socket, used by one call at a time. */
struct client_conn {
	int fd;
	struct client_conn *next; /* in the idle list */
};

/* One of these per wsgate_client_open(), shared by every calling thread. */
struct wsgate_client {
	char *url;
	struct sockaddr_un addr;
	int timeout_ms;
	atomic_uint_fast64_t next_id; /* request_id of the next call */
	pthread_mutex_t lk;           /* protects err, idle, n_idle */
	struct client_conn *idle;     /* connections between calls */
	unsigned n_idle;
	struct coalescer *coalescer; /* merges concurrent send_event calls */
	char err[512];
};

static void client_set_error(struct wsgate_client *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void client_set_error(struct wsgate_client *c, const char *fmt, ...)
{
	va_list ap;

	pthread_mutex_lock(&c->lk);
	va_start(ap, fmt);
	vsnprintf(c->err, sizeof(c->err), fmt, ap);
	va_end(ap);
	pthread_mutex_unlock(&c->lk);
}

/* Copies src into dst[cap], truncating on a UTF-8 character boundary so a
 * cut-off id is still valid text. NULL copies as "". */
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

/* Copies the last error into a result's error field, so that a caller that
 * only looks at res[] still learns why a call failed. */
static void client_copy_error(struct wsgate_client *c, char *dst, size_t cap)
{
	pthread_mutex_lock(&c->lk);
	copy_str(dst, cap, c->err);
	pthread_mutex_unlock(&c->lk);
}

static bool status_is_valid(int s)
{
	return s >= WSGATE__V1__STATUS__OK &&
	       s <= WSGATE__V1__STATUS__UNAVAILABLE;
}

/* --- the transport --- */

static void conn_close(struct client_conn *conn)
{
	if (conn == NULL)
		return;
	close(conn->fd);
	free(conn);
}

/* An idle connection, or a new one; NULL when none could be made by the
 * deadline (c's error says why). *reused: it served an earlier call. */
static struct client_conn *conn_take(struct wsgate_client *c, int64_t deadline,
                                     bool *reused)
{
	struct client_conn *conn;
	char err[256];
	pthread_mutex_lock(&c->lk);
	if ((conn = c->idle) != NULL) {
		c->idle = conn->next;
		c->n_idle--;
	}
	pthread_mutex_unlock(&c->lk);
	*reused = conn != NULL;
	if (conn != NULL)
		return conn;
	if ((conn = calloc(1, sizeof(*conn))) == NULL) {
		client_set_error(c, "cannot dial %s: out of memory", c->url);
		return NULL;
	}
	conn->fd = sp_conn_dial_until(&c->addr, SP_PROTO_REQ0, SP_PROTO_REP0,
	                              deadline, 0, err, sizeof(err));
	if (conn->fd >= 0)
		return conn;
	client_set_error(c, "%s", err);
	free(conn);
	return NULL;
}

static void conn_give_back(struct wsgate_client *c, struct client_conn *conn)
{
	pthread_mutex_lock(&c->lk);
	if (c->n_idle < CLIENT_IDLE_MAX) {
		conn->next = c->idle;
		c->idle = conn;
		c->n_idle++;
		conn = NULL;
	}
	pthread_mutex_unlock(&c->lk);
	conn_close(conn);
}

/* What a round trip on one connection came to. BROKEN: the connection
 * failed, a new one may do; FAILED: give up (c's error says why). */
enum trip { TRIP_OK, TRIP_TIMEOUT, TRIP_BROKEN, TRIP_FAILED };

static enum trip trip_of(enum sp_io r)
{
	return r == SP_IO_OK        ? TRIP_OK
	       : r == SP_IO_TIMEOUT ? TRIP_TIMEOUT
	                            : TRIP_BROKEN;
}

/*
 * Sends the framed request in msg[0..len) on conn and reads the reply
 * with the same request id (msg[9..13)) into *reply (caller frees).
 */
static enum trip conn_round_trip(struct wsgate_client *c,
                                 struct client_conn *conn, const uint8_t *msg,
                                 size_t len, int64_t deadline, uint8_t **reply,
                                 size_t *reply_len)
{
	uint8_t head[SP_FRAME_HEAD + 4];
	enum sp_io r = sp_conn_write(conn->fd, msg, len, deadline);
	size_t got = 0;
	uint64_t n;
	if (r == SP_IO_OK)
		r = sp_conn_read(conn->fd, head, sizeof(head), &got, deadline);
	if (r != SP_IO_OK)
		return trip_of(r);
	n = sp_wire_frame_len(head);
	if (head[0] != SP_MSG_TYPE || n < 4 || n - 4 > CLIENT_RECV_MAX ||
	    memcmp(head + SP_FRAME_HEAD, msg + SP_FRAME_HEAD, 4) != 0) {
		client_set_error(c,
		                 "%s sent a reply that is not for this "
		                 "request",
		                 c->url);
		return TRIP_FAILED;
	}
	*reply_len = (size_t)n - 4;
	if ((*reply = malloc(*reply_len ? *reply_len : 1)) == NULL) {
		client_set_error(c, "cannot receive from %s: out of memory",
		                 c->url);
		return TRIP_FAILED;
	}
	got = 0;
	r = sp_conn_read(conn->fd, *reply, *reply_len, &got, deadline);
	if (r != SP_IO_OK) {
		free(*reply);
		*reply = NULL;
	}
	return trip_of(r);
}

/*
 * One round trip: stamps req with a fresh request_id, sends it and waits
 * for the matching reply, all within the client's timeout (which bounds the
 * whole call: time spent dialing leaves less for the reply).
 * Returns a negative status for local, transport and protocol failures
 * (*out NULL), else the reply's status with *out set (caller frees); a
 * non-OK status has already been recorded as the client's error.
 */
static enum wsgate_status client_call(struct wsgate_client *c,
                                      Wsgate__V1__Request *req,
                                      Wsgate__V1__Reply **out)
{
	int64_t deadline = sp_conn_now_ms() + c->timeout_ms;
	enum trip r = TRIP_BROKEN;
	Wsgate__V1__Reply *rep;
	uint8_t *msg, *reply = NULL;
	size_t body_len, len, reply_len = 0;
	uint32_t id;

	*out = NULL;
	req->request_id = atomic_fetch_add(&c->next_id, 1);
	/* The backtrace word: the request id with the high bit set. */
	id = (uint32_t)req->request_id | 0x80000000u;
	body_len = wsgate__v1__request__get_packed_size(req);
	len = SP_FRAME_HEAD + 4 + body_len;
	if ((msg = malloc(len)) == NULL) {
		client_set_error(c, "cannot send to %s: out of memory", c->url);
		return WSGATE_ERR_TRANSPORT;
	}
	sp_wire_frame_head(msg, 4 + body_len);
	for (int i = 0; i < 4; i++)
		msg[SP_FRAME_HEAD + i] = (uint8_t)(id >> (24 - 8 * i));
	wsgate__v1__request__pack(req, msg + SP_FRAME_HEAD + 4);

	for (;;) {
		bool reused;
		struct client_conn *conn = conn_take(c, deadline, &reused);
		if (conn == NULL) {
			r = TRIP_TIMEOUT;
			break;
		}
		r = conn_round_trip(c, conn, msg, len, deadline, &reply,
		                    &reply_len);
		if (r == TRIP_OK) {
			conn_give_back(c, conn);
			break;
		}
		conn_close(conn);
		if (r != TRIP_BROKEN)
			break;
		/* Broken before the reply: send it again on a new connection,
		 * at once if this one had idled (a sidecar restart may have
		 * cut it), else after a pause, as NNG's req0 does. */
		client_set_error(c, "%s closed the connection", c->url);
		if (reused)
			continue;
		if (!sp_conn_pause(deadline)) {
			r = TRIP_TIMEOUT;
			break;
		}
	}
	free(msg);
	if (r == TRIP_TIMEOUT) {
		client_set_error(c, "no reply from %s within %d ms", c->url,
		                 c->timeout_ms);
		return WSGATE_ERR_TIMEOUT;
	}
	if (r == TRIP_FAILED)
		return WSGATE_ERR_PROTOCOL;

	rep = wsgate__v1__reply__unpack(NULL, reply_len, reply);
	free(reply);
	if (rep == NULL) {
		client_set_error(c, "undecodable reply from %s", c->url);
		return WSGATE_ERR_PROTOCOL;
	}
	if (rep->request_id != req->request_id) {
		client_set_error(c, "reply is for request %llu, not %llu",
		                 (unsigned long long)rep->request_id,
		                 (unsigned long long)req->request_id);
		wsgate__v1__reply__free_unpacked(rep, NULL);
		return WSGATE_ERR_PROTOCOL;
	}
	if (!status_is_valid(rep->status)) {
		client_set_error(c, "reply has invalid status %d",
		                 (int)rep->status);
		wsgate__v1__reply__free_unpacked(rep, NULL);
		return WSGATE_ERR_PROTOCOL;
	}
	enum wsgate_status st = (enum wsgate_status)rep->status;
	if (st != WSGATE_OK)
		client_set_error(c, "%s",
		                 rep->error[0] != '\0'
		                     ? rep->error
		                     : wsgate_status_name(st));
	*out = rep;
	return st;
}

/* An OK reply without the body its request calls for. */
static enum wsgate_status client_bad_body(struct wsgate_client *c,
                                          Wsgate__V1__Reply *rep,
                                          const char *want)
{
	client_set_error(c, "OK reply without %s", want);
	wsgate__v1__reply__free_unpacked(rep, NULL);
	return WSGATE_ERR_PROTOCOL;
}

/* Fills pb from ev without copying: pb only borrows ev's pointers for the
 * duration of the pack. */
static bool event_to_pb(const struct wsgate_event *ev, Wsgate__V1__Event *pb)
{
	if (ev->payload_len > 0 && ev->payload_json == NULL)
		return false;
	wsgate__v1__event__init(pb);
	pb->event_id = (char *)(ev->event_id ? ev->event_id : "");
	pb->user_id = (char *)(ev->user_id ? ev->user_id : "");
	pb->thread_id = (char *)(ev->thread_id ? ev->thread_id : "");
	pb->run_id = (char *)(ev->run_id ? ev->run_id : "");
	pb->type = (Wsgate__V1__EventType)ev->type;
	pb->custom_type = (char *)(ev->custom_type ? ev->custom_type : "");
	pb->payload_json.len = ev->payload_len;
	pb->payload_json.data = (uint8_t *)ev->payload_json;
	return true;
}

static void result_from_pb(const Wsgate__V1__EventResult *r,
                           struct wsgate_event_result *res)
{
	res->status = (enum wsgate_status)r->status;
	copy_str(res->error, sizeof(res->error), r->error);
	res->seq = r->seq;
	res->connections = r->connections;
	res->retained = r->retained;
	res->duplicate = r->duplicate;
}

static void result_fail(struct wsgate_client *c, enum wsgate_status st,
                        struct wsgate_event_result *res)
{
	memset(res, 0, sizeof(*res));
	res->status = st;
	client_copy_error(c, res->error, sizeof(res->error));
}

static enum wsgate_status send_event_alone(wsgate_client *c,
                                           const struct wsgate_event *ev,
                                           struct wsgate_event_result *res);

enum wsgate_status wsgate_client_open(wsgate_client **out, const char *url,
                                      int timeout_ms)
{
	struct wsgate_client *c;

	if (out == NULL)
		return WSGATE_ERR_ARGUMENT;
	*out = NULL;
	if (timeout_ms <= 0)
		return WSGATE_ERR_ARGUMENT;
	if (url == NULL)
		url = WSGATE_DEFAULT_CONTROL;
	if ((c = calloc(1, sizeof(*c))) == NULL)
		return WSGATE_ERR_TRANSPORT;
	/* Only ipc://, as the sidecar serves. */
	if (sp_conn_addr(&c->addr, url) != 0) {
		free(c);
		return WSGATE_ERR_ARGUMENT;
	}
	if ((c->url = strdup(url)) == NULL) {
		free(c);
		return WSGATE_ERR_TRANSPORT;
	}
	c->timeout_ms = timeout_ms;
	atomic_init(&c->next_id, 1);
	pthread_mutex_init(&c->lk, NULL);
	c->coalescer = coalescer_new(c, send_event_alone, wsgate_send_batch);
	if (c->coalescer == NULL) {
		pthread_mutex_destroy(&c->lk);
		free(c->url);
		free(c);
		return WSGATE_ERR_TRANSPORT;
	}
	*out = c;
	return WSGATE_OK;
}

void wsgate_client_close(wsgate_client *c)
{
	if (c == NULL)
		return;
	coalescer_free(c->coalescer);
	while (c->idle != NULL) {
		struct client_conn *conn = c->idle;
		c->idle = conn->next;
		conn_close(conn);
	}
	pthread_mutex_destroy(&c->lk);
	free(c->url);
	free(c);
}

const char *wsgate_client_error(const wsgate_client *c)
{
	return c != NULL ? c->err : "no client";
}

const char *wsgate_status_name(enum wsgate_status s)
{
	switch (s) {
	case WSGATE_OK:
		return "OK";
	case WSGATE_INVALID_ARGUMENT:
		return "INVALID_ARGUMENT";
	case WSGATE_RESOURCE_EXHAUSTED:
		return "RESOURCE_EXHAUSTED";
	case WSGATE_NOT_FOUND:
		return "NOT_FOUND";
	case WSGATE_INTERNAL:
		return "INTERNAL";
	case WSGATE_UNAVAILABLE:
		return "UNAVAILABLE";
	case WSGATE_ERR_TIMEOUT:
		return "TIMEOUT";
	case WSGATE_ERR_TRANSPORT:
		return "TRANSPORT";
	case WSGATE_ERR_PROTOCOL:
		return "PROTOCOL";
	case WSGATE_ERR_ARGUMENT:
		return "ARGUMENT";
	}
	return "UNKNOWN";
}

/* Index = enum value; the wire names of the WebSocket protocol. */
static const char *const event_type_names[] = {
    [WSGATE_AGENT_STARTED] = "agent_started",
    [WSGATE_AGENT_THINKING] = "agent_thinking",
    [WSGATE_TOOL_EXECUTING] = "tool_executing",
    [WSGATE_TOOL_COMPLETED] = "tool_completed",
    [WSGATE_AGENT_COMPLETED] = "agent_completed",
    [WSGATE_AGENT_ERROR] = "agent_error",
    [WSGATE_CUSTOM] = "custom",
};

const char *wsgate_event_type_name(enum wsgate_event_type t)
{
	if (t >= WSGATE_AGENT_STARTED && t <= WSGATE_CUSTOM)
		return event_type_names[t];
	return t == WSGATE_EVENT_UNSPECIFIED ? "unspecified" : "unknown";
}

enum wsgate_event_type wsgate_event_type_parse(const char *name)
{
	if (name == NULL)
		return WSGATE_CUSTOM;
	for (int t = WSGATE_AGENT_STARTED; t <= WSGATE_AGENT_ERROR; t++)
		if (strcmp(name, event_type_names[t]) == 0)
			return (enum wsgate_event_type)t;
	return WSGATE_CUSTOM;
}

/* One event as a SendEvent request (the coalescer's lone sender). */
static enum wsgate_status send_event_alone(wsgate_client *c,
                                           const struct wsgate_event *ev,
                                           struct wsgate_event_result *res)
{
	Wsgate__V1__Request req = WSGATE__V1__REQUEST__INIT;
	Wsgate__V1__SendEvent body = WSGATE__V1__SEND_EVENT__INIT;
	Wsgate__V1__Event pb;
	Wsgate__V1__Reply *rep;
	enum wsgate_status st;

	event_to_pb(ev, &pb);
	body.event = &pb;
	req.body_case = WSGATE__V1__REQUEST__BODY_SEND_EVENT;
	req.send_event = &body;

	st = client_call(c, &req, &rep);
	if (st == WSGATE_OK &&
	    (rep->body_case != WSGATE__V1__REPLY__BODY_EVENT ||
	     rep->event == NULL))
		st = client_bad_body(c, rep, "event");
	if (st < 0) {
		result_fail(c, st, res);
		return st;
	}
	memset(res, 0, sizeof(*res));
	if (st == WSGATE_OK)
		result_from_pb(rep->event, res);
	/* The reply's status is the event's outcome (DESIGN, Statuses). */
	res->status = st;
	if (st != WSGATE_OK)
		copy_str(res->error, sizeof(res->error), rep->error);
	wsgate__v1__reply__free_unpacked(rep, NULL);
	return st;
}

enum wsgate_status wsgate_send_event(wsgate_client *c,
                                     const struct wsgate_event *ev,
                                     struct wsgate_event_result *res)
{
	if (c == NULL || res == NULL)
		return WSGATE_ERR_ARGUMENT;
	if (ev == NULL || (ev->payload_len > 0 && ev->payload_json == NULL)) {
		client_set_error(c, "event or payload_json is NULL");
		result_fail(c, WSGATE_ERR_ARGUMENT, res);
		return WSGATE_ERR_ARGUMENT;
	}
	return coalescer_send_event(c->coalescer, ev, res);
}

enum wsgate_status wsgate_send_batch(wsgate_client *c,
                                     const struct wsgate_event *ev, size_t n,
                                     struct wsgate_event_result *res)
{
	Wsgate__V1__Request req = WSGATE__V1__REQUEST__INIT;
	Wsgate__V1__SendBatch body = WSGATE__V1__SEND_BATCH__INIT;
	Wsgate__V1__Event *pbs = NULL, **ptrs = NULL;
	Wsgate__V1__Reply *rep = NULL;
	enum wsgate_status st;
	size_t i;

	if (c == NULL || res == NULL)
		return WSGATE_ERR_ARGUMENT;
	if (ev == NULL || n == 0 || n > WSGATE_MAX_BATCH) {
		if (ev == NULL)
			client_set_error(c, "events is NULL");
		else
			client_set_error(c,
			                 "a batch holds 1 to %d events, "
			                 "not %zu",
			                 WSGATE_MAX_BATCH, n);
		st = WSGATE_ERR_ARGUMENT;
		goto fail;
	}
	pbs = calloc(n, sizeof(*pbs));
	ptrs = calloc(n, sizeof(*ptrs));
	if (pbs == NULL || ptrs == NULL) {
		client_set_error(c, "out of memory");
		st = WSGATE_ERR_TRANSPORT;
		goto fail;
	}
	for (i = 0; i < n; i++) {
		if (!event_to_pb(&ev[i], &pbs[i])) {
			client_set_error(c, "events[%zu]: payload_json is NULL",
			                 i);
			st = WSGATE_ERR_ARGUMENT;
			goto fail;
		}
		ptrs[i] = &pbs[i];
	}
	body.n_events = n;
	body.events = ptrs;
	req.body_case = WSGATE__V1__REQUEST__BODY_SEND_BATCH;
	req.send_batch = &body;

	st = client_call(c, &req, &rep);
	free(ptrs);
	free(pbs);
	ptrs = NULL;
	pbs = NULL;
	if (st < 0)
		goto fail;
	if (st != WSGATE_OK) {
		/* The batch was refused whole: every event shares its fate. */
		for (i = 0; i < n; i++) {
			memset(&res[i], 0, sizeof(res[i]));
			res[i].status = st;
			copy_str(res[i].error, sizeof(res[i].error),
			         rep->error);
		}
		wsgate__v1__reply__free_unpacked(rep, NULL);
		return st;
	}
	if (rep->body_case != WSGATE__V1__REPLY__BODY_BATCH ||
	    rep->batch == NULL) {
		st = client_bad_body(c, rep, "batch");
		goto fail;
	}
	if (rep->batch->n_results != n) {
		client_set_error(c,
		                 "batch reply has %zu results for %zu events",
		                 rep->batch->n_results, n);
		wsgate__v1__reply__free_unpacked(rep, NULL);
		st = WSGATE_ERR_PROTOCOL;
		goto fail;
	}
	for (i = 0; i < n; i++) {
		if (!status_is_valid(rep->batch->results[i]->status)) {
			client_set_error(
			    c, "results[%zu] has invalid status %d", i,
			    (int)rep->batch->results[i]->status);
			wsgate__v1__reply__free_unpacked(rep, NULL);
			st = WSGATE_ERR_PROTOCOL;
			goto fail;
		}
	}
	for (i = 0; i < n; i++)
		result_from_pb(rep->batch->results[i], &res[i]);
	wsgate__v1__reply__free_unpacked(rep, NULL);
	return WSGATE_OK;

fail:
	free(ptrs);
	free(pbs);
	for (i = 0; i < n && i <= WSGATE_MAX_BATCH; i++)
		result_fail(c, st, &res[i]);
	return st;
}

enum wsgate_status wsgate_disconnect(wsgate_client *c, const char *user_id,
                                     const char *conn_id, const char *reason,
                                     uint32_t *disconnected)
{
	Wsgate__V1__Request req = WSGATE__V1__REQUEST__INIT;
	Wsgate__V1__Disconnect body = WSGATE__V1__DISCONNECT__INIT;
	Wsgate__V1__Reply *rep;
	enum wsgate_status st;

	if (disconnected != NULL)
		*disconnected = 0;
	if (c == NULL)
		return WSGATE_ERR_ARGUMENT;
	/* Neither id given is the sidecar's to refuse (INVALID_ARGUMENT):
	 * validation lives in one place. */
	body.user_id = (char *)(user_id ? user_id : "");
	body.conn_id = (char *)(conn_id ? conn_id : "");
	body.reason = (char *)(reason ? reason : "");
	req.body_case = WSGATE__V1__REQUEST__BODY_DISCONNECT;
	req.disconnect = &body;

	st = client_call(c, &req, &rep);
	if (st != WSGATE_OK) {
		if (rep != NULL)
			wsgate__v1__reply__free_unpacked(rep, NULL);
		return st;
	}
	if (rep->body_case != WSGATE__V1__REPLY__BODY_DISCONNECTED)
		return client_bad_body(c, rep, "disconnected");
	if (disconnected != NULL)
		*disconnected = rep->disconnected;
	wsgate__v1__reply__free_unpacked(rep, NULL);
	return WSGATE_OK;
}

enum wsgate_status wsgate_list_connections(wsgate_client *c,
                                           const char *user_id,
                                           struct wsgate_connection **out,
                                           size_t *n)
{
	Wsgate__V1__Request req = WSGATE__V1__REQUEST__INIT;
	Wsgate__V1__ListConnections body = WSGATE__V1__LIST_CONNECTIONS__INIT;
	Wsgate__V1__Reply *rep;
	struct wsgate_connection *conns = NULL;
	enum wsgate_status st;
	size_t i, count;

	if (c == NULL || out == NULL || n == NULL)
		return WSGATE_ERR_ARGUMENT;
	*out = NULL;
	*n = 0;
	body.user_id = (char *)(user_id ? user_id : "");
	req.body_case = WSGATE__V1__REQUEST__BODY_LIST_CONNECTIONS;
	req.list_connections = &body;

	st = client_call(c, &req, &rep);
	if (st != WSGATE_OK) {
		if (rep != NULL)
			wsgate__v1__reply__free_unpacked(rep, NULL);
		return st;
	}
	if (rep->body_case != WSGATE__V1__REPLY__BODY_CONNECTIONS ||
	    rep->connections == NULL)
		return client_bad_body(c, rep, "connections");
	count = rep->connections->n_connections;
	if (count > 0 && (conns = calloc(count, sizeof(*conns))) == NULL) {
		client_set_error(c, "out of memory for %zu connections", count);
		wsgate__v1__reply__free_unpacked(rep, NULL);
		return WSGATE_ERR_TRANSPORT;
	}
	for (i = 0; i < count; i++) {
		const Wsgate__V1__Connection *pc =
		    rep->connections->connections[i];

		copy_str(conns[i].conn_id, sizeof(conns[i].conn_id),
		         pc->conn_id);
		copy_str(conns[i].user_id, sizeof(conns[i].user_id),
		         pc->user_id);
		conns[i].opened_at = pc->opened_at;
		copy_str(conns[i].peer, sizeof(conns[i].peer), pc->peer);
		conns[i].queued = pc->queued;
		conns[i].written = pc->written;
	}
	wsgate__v1__reply__free_unpacked(rep, NULL);
	*out = conns;
	*n = count;
	return WSGATE_OK;
}

enum wsgate_status wsgate_get_stats(wsgate_client *c, struct wsgate_stats *out)
{
	Wsgate__V1__Request req = WSGATE__V1__REQUEST__INIT;
	Wsgate__V1__GetStats body = WSGATE__V1__GET_STATS__INIT;
	Wsgate__V1__Reply *rep;
	const Wsgate__V1__Stats *s;
	enum wsgate_status st;

	if (c == NULL || out == NULL)
		return WSGATE_ERR_ARGUMENT;
	memset(out, 0, sizeof(*out));
	req.body_case = WSGATE__V1__REQUEST__BODY_GET_STATS;
	req.get_stats = &body;

	st = client_call(c, &req, &rep);
	if (st != WSGATE_OK) {
		if (rep != NULL)
			wsgate__v1__reply__free_unpacked(rep, NULL);
		return st;
	}
	if (rep->body_case != WSGATE__V1__REPLY__BODY_STATS ||
	    rep->stats == NULL)
		return client_bad_body(c, rep, "stats");
	s = rep->stats;
	out->uptime_s = s->uptime_s;
	out->connections = s->connections;
	out->users = s->users;
	out->events_accepted = s->events_accepted;
	out->frames_written = s->frames_written;
	out->frames_dropped = s->frames_dropped;
	out->audit_backlog = s->audit_backlog;
	out->notices_dropped = s->notices_dropped;
	out->storage_failures = s->storage_failures;
	copy_str(out->storage_error, sizeof(out->storage_error),
	         s->storage_error);
	copy_str(out->version, sizeof(out->version), s->version);
	if (s->audit_head_chain.len == sizeof(out->audit_head_chain)) {
		out->has_audit_head = 1;
		out->audit_head_id = s->audit_head_id;
		memcpy(out->audit_head_chain, s->audit_head_chain.data,
		       sizeof(out->audit_head_chain));
	}
	copy_str(out->node_id, sizeof(out->node_id), s->node_id);
	out->cluster = s->cluster;
	out->cluster_available = s->cluster_available;
	out->cluster_down_ms = s->cluster_down_ms;
	out->cluster_position = s->cluster_position;
	out->cluster_publish_queued = s->cluster_publish_queued;
	out->cluster_unavailable_answers = s->cluster_unavailable_answers;
	wsgate__v1__reply__free_unpacked(rep, NULL);
	return WSGATE_OK;
}

enum wsgate_status wsgate_ping(wsgate_client *c)
{
	Wsgate__V1__Request req = WSGATE__V1__REQUEST__INIT;
	Wsgate__V1__Ping body = WSGATE__V1__PING__INIT;
	Wsgate__V1__Reply *rep;
	enum wsgate_status st;

	if (c == NULL)
		return WSGATE_ERR_ARGUMENT;
	req.body_case = WSGATE__V1__REQUEST__BODY_PING;
	req.ping = &body;
	st = client_call(c, &req, &rep);
	if (rep != NULL)
		wsgate__v1__reply__free_unpacked(rep, NULL);
	return st;
}
