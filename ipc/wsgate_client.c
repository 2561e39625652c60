/*
 * libwsgate, control side: owns struct wsgate_client (one req0 socket dialed
 * to the sidecar's control URL) and the request/reply round trip behind every
 * control call, plus the status and event type names. The inbound channel is
 * in wsgate_inbound.c. The public surface is ipc/wsgate.h.
 *
 * Every call opens its own NNG context, so calls from many threads are
 * concurrent requests on one socket; the shared mutable state is the
 * request id counter (atomic), and under lk the last error text and the
 * links (below).
 *
 * Self-healing (see client_heal): NNG 1.5.2's dialer gives up for good when
 * a connection it just made dies before the SP handshake is sent (the
 * sidecar was killed right then): the handshake's send fails with EPIPE,
 * which NNG reports as NNG_ECLOSED, and dialer_connect_cb takes that for
 * "the dialer was closed" and never redials. Such a dialer cannot be
 * restarted, and closing a dialer or socket while its handshake is in
 * flight leaks the half-made pipe in 1.5.2. So a client keeps one current
 * link (socket + dialer) for its calls and, when a call timed out while the
 * current link had no pipe, dials a spare link next to it; the spare
 * replaces the current link only once it has a pipe and the current one
 * still has none after CLIENT_HEAL_GRACE_MS. A link is closed only when
 * it has a pipe (its dialer is idle then) or is judged dead (idle too),
 * and only after the last call using it has returned.
 */
#include "wsgate.h"
#include "wsgate.pb-c.h"
#include "wsgate_coalesce.h"

#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Largest reply accepted. NNG's default is unlimited; a ConnectionList of
 * tens of thousands of connections is a few MiB, so 64 MiB only stops a
 * broken or hostile peer from making us allocate without bound. */
#define CLIENT_RECV_MAX ((size_t)64 * 1024 * 1024)

/* How often a dialer without a connection retries (NNG's default, made
 * explicit: at most this long between attempts, no back-off growth). */
#define CLIENT_RECONNECT_MS 100

/* How long a spare link must have had a pipe while the current link still
 * has none before the spare replaces it: a current dialer that is merely
 * retrying reconnects well within this once the sidecar is back. */
#define CLIENT_HEAL_GRACE_MS (5 * CLIENT_RECONNECT_MS)

/* One of these per req0 socket (with its one dialer) of a client: the
 * current link, a spare, or a retired link waiting for its last call. */
struct client_link {
	nng_socket sock;
	int pipes;        /* pipes added and not yet removed */
	int64_t piped_at; /* now_ms() when pipes last went from 0 to 1 */
	unsigned users;   /* calls in progress on this link */
	bool retired;     /* neither current nor spare: close at users 0 */
};

/* One of these per wsgate_client_open(), shared by every calling thread. */
struct wsgate_client {
	char *url;
	int timeout_ms;
	atomic_uint_fast64_t next_id; /* request_id of the next call */
	pthread_mutex_t lk;           /* protects err, cur, spare, links */
	struct client_link *cur;      /* the link new calls use */
	struct client_link *spare;    /* NULL, or dialing next to cur */
	bool spare_opening;           /* a thread is making the spare */
	struct coalescer *coalescer;  /* merges concurrent send_event calls */
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

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static bool status_is_valid(int s)
{
	return s >= WSGATE__V1__STATUS__OK && s <= WSGATE__V1__STATUS__INTERNAL;
}

static enum wsgate_status client_nng_error(struct wsgate_client *c,
                                           const char *what, int rv)
{
	if (rv == NNG_ETIMEDOUT) {
		client_set_error(c, "no reply from %s within %d ms", c->url,
		                 c->timeout_ms);
		return WSGATE_ERR_TIMEOUT;
	}
	client_set_error(c, "%s %s: %s", what, c->url, nng_strerror(rv));
	return WSGATE_ERR_TRANSPORT;
}

/*
 * NNG pipe events of every link of c: counts each link's pipes. ADD_PRE and
 * REM_POST pair up (NNG runs REM_POST only for pipes that saw ADD_PRE). A
 * retired link is neither cur nor spare, so its late events are ignored;
 * nng_close() returns only after its socket's last callback, so c outlives
 * them all.
 */
static void client_pipe_cb(nng_pipe p, nng_pipe_ev ev, void *arg)
{
	struct wsgate_client *c = arg;
	nng_socket s = nng_pipe_socket(p);
	struct client_link *l = NULL;

	pthread_mutex_lock(&c->lk);
	if (c->cur != NULL && nng_socket_id(c->cur->sock) == nng_socket_id(s))
		l = c->cur;
	else if (c->spare != NULL &&
	         nng_socket_id(c->spare->sock) == nng_socket_id(s))
		l = c->spare;
	if (l != NULL) {
		if (ev == NNG_PIPE_EV_ADD_PRE && l->pipes++ == 0)
			l->piped_at = now_ms();
		else if (ev == NNG_PIPE_EV_REM_POST && l->pipes > 0)
			l->pipes--;
	}
	pthread_mutex_unlock(&c->lk);
}

/* A new link with its socket configured but not dialed yet (see
 * link_dial): the caller makes it cur or spare first, so that no pipe
 * event is missed. Returns an NNG error. */
static int link_open(struct wsgate_client *c, struct client_link **out)
{
	struct client_link *l = calloc(1, sizeof(*l));
	int rv;

	*out = NULL;
	if (l == NULL)
		return NNG_ENOMEM;
	if ((rv = nng_req0_open(&l->sock)) != 0) {
		free(l);
		return rv;
	}
	if ((rv = nng_socket_set_size(l->sock, NNG_OPT_RECVMAXSZ,
	                              CLIENT_RECV_MAX)) != 0 ||
	    (rv = nng_socket_set_ms(l->sock, NNG_OPT_RECONNMINT,
	                            CLIENT_RECONNECT_MS)) != 0 ||
	    (rv = nng_socket_set_ms(l->sock, NNG_OPT_RECONNMAXT, 0)) != 0 ||
	    (rv = nng_pipe_notify(l->sock, NNG_PIPE_EV_ADD_PRE, client_pipe_cb,
	                          c)) != 0 ||
	    (rv = nng_pipe_notify(l->sock, NNG_PIPE_EV_REM_POST, client_pipe_cb,
	                          c)) != 0) {
		nng_close(l->sock);
		free(l);
		return rv;
	}
	*out = l;
	return 0;
}

/* Non-blocking: the first attempt may fail (sidecar not up yet) and NNG
 * keeps redialing; requests wait for the pipe within their timeout. Only
 * a malformed URL fails here. */
static int link_dial(struct wsgate_client *c, struct client_link *l)
{
	return nng_dial(l->sock, c->url, NULL, NNG_FLAG_NONBLOCK);
}

/* Never called with lk held: nng_close waits for the pipe callbacks,
 * which take lk. */
static void link_close(struct client_link *l)
{
	if (l == NULL)
		return;
	nng_close(l->sock);
	free(l);
}

/*
 * Decides between cur and spare (lk held); returns a link to close, or
 * NULL. The spare is only judged once it has a pipe, so whichever link is
 * closed here has an idle dialer: a spare with a pipe makes no connection
 * attempt, and a current link that has had no pipe for the whole grace
 * while the spare, dialing the same URL, kept one is the dead dialer.
 */
static struct client_link *client_heal(struct wsgate_client *c)
{
	struct client_link *old;

	if (c->spare == NULL || c->spare->pipes == 0)
		return NULL;
	if (c->cur->pipes > 0) {
		/* The current link came back by itself: no calls ever
		 * used the spare, so closing it disturbs nothing. */
		old = c->spare;
		c->spare = NULL;
		return old;
	}
	if (now_ms() - c->spare->piped_at < CLIENT_HEAL_GRACE_MS)
		return NULL;
	old = c->cur;
	old->retired = true;
	c->cur = c->spare;
	c->spare = NULL;
	/* Calls still waiting on the old link time out and close it. */
	return old->users == 0 ? old : NULL;
}

/* The link a call uses, held until client_release. */
static struct client_link *client_acquire(struct wsgate_client *c)
{
	struct client_link *l, *old;

	pthread_mutex_lock(&c->lk);
	old = client_heal(c);
	l = c->cur;
	l->users++;
	pthread_mutex_unlock(&c->lk);
	link_close(old);
	return l;
}

/*
 * Ends a call on l. timed_out: the call got no reply in time. If l is
 * still current and has no pipe, the sidecar is down or l's dialer has
 * given up; a spare link is dialed next to it to tell which (client_heal).
 * While the sidecar is down both keep redialing, and the spare is dropped
 * once the current link reconnects.
 */
static void client_release(struct wsgate_client *c, struct client_link *l,
                           bool timed_out)
{
	struct client_link *old = NULL, *spare;
	bool want_spare = false;

	pthread_mutex_lock(&c->lk);
	l->users--;
	if (l->retired) {
		if (l->users == 0)
			old = l;
	} else if (timed_out && l == c->cur && l->pipes == 0 &&
	           c->spare == NULL && !c->spare_opening) {
		c->spare_opening = true;
		want_spare = true;
	}
	pthread_mutex_unlock(&c->lk);
	link_close(old);
	if (!want_spare)
		return;

	/* Failures leave things as they were; a later timeout retries. */
	if (link_open(c, &spare) != 0)
		spare = NULL;
	pthread_mutex_lock(&c->lk);
	c->spare = spare;
	c->spare_opening = false;
	pthread_mutex_unlock(&c->lk);
	if (spare != NULL && link_dial(c, spare) != 0) {
		pthread_mutex_lock(&c->lk);
		c->spare = NULL;
		pthread_mutex_unlock(&c->lk);
		link_close(spare);
	}
}

/*
 * One round trip: stamps req with a fresh request_id, sends it on a private
 * context and waits for the matching reply, all within the client's timeout.
 * Returns a negative status for local, transport and protocol failures
 * (*out NULL), else the reply's status with *out set (caller frees); a
 * non-OK status has already been recorded as the client's error.
 */
static enum wsgate_status client_call(struct wsgate_client *c,
                                      Wsgate__V1__Request *req,
                                      Wsgate__V1__Reply **out)
{
	enum wsgate_status st;
	struct client_link *link;
	nng_ctx ctx;
	nng_aio *aio = NULL;
	nng_msg *msg = NULL;
	Wsgate__V1__Reply *rep;
	int64_t deadline, left;
	bool timed_out = false;
	int rv;

	*out = NULL;
	req->request_id = atomic_fetch_add(&c->next_id, 1);

	if ((rv = nng_msg_alloc(
	         &msg, wsgate__v1__request__get_packed_size(req))) != 0)
		return client_nng_error(c, "cannot send to", rv);
	wsgate__v1__request__pack(req, nng_msg_body(msg));

	link = client_acquire(c);
	if ((rv = nng_ctx_open(&ctx, link->sock)) != 0) {
		nng_msg_free(msg);
		client_release(c, link, false);
		return client_nng_error(c, "cannot send to", rv);
	}
	if ((rv = nng_aio_alloc(&aio, NULL, NULL)) != 0) {
		nng_msg_free(msg);
		st = client_nng_error(c, "cannot send to", rv);
		goto done;
	}

	/* The timeout bounds the whole call, not each half: a send that waited
	 * for the sidecar to come up leaves less time for the reply. Timeouts
	 * are set on the aio, which is what the ctx's SENDTIMEO/RECVTIMEO
	 * would feed anyway. */
	deadline = now_ms() + c->timeout_ms;
	nng_aio_set_msg(aio, msg);
	nng_aio_set_timeout(aio, c->timeout_ms);
	nng_ctx_send(ctx, aio);
	nng_aio_wait(aio);
	if ((rv = nng_aio_result(aio)) != 0) {
		/* A failed send leaves the message with us. */
		nng_msg_free(nng_aio_get_msg(aio));
		st = client_nng_error(c, "cannot send to", rv);
		timed_out = rv == NNG_ETIMEDOUT;
		goto done;
	}

	left = deadline - now_ms();
	nng_aio_set_timeout(aio, left > 0 ? (nng_duration)left : 1);
	nng_ctx_recv(ctx, aio);
	nng_aio_wait(aio);
	if ((rv = nng_aio_result(aio)) != 0) {
		st = client_nng_error(c, "cannot receive from", rv);
		timed_out = rv == NNG_ETIMEDOUT;
		goto done;
	}
	msg = nng_aio_get_msg(aio);
	rep = wsgate__v1__reply__unpack(NULL, nng_msg_len(msg),
	                                nng_msg_body(msg));
	nng_msg_free(msg);
	if (rep == NULL) {
		client_set_error(c, "undecodable reply from %s", c->url);
		st = WSGATE_ERR_PROTOCOL;
		goto done;
	}
	/* NNG already matches replies to contexts; a different id means the
	 * peer is not speaking our protocol correctly. */
	if (rep->request_id != req->request_id) {
		client_set_error(c, "reply is for request %llu, not %llu",
		                 (unsigned long long)rep->request_id,
		                 (unsigned long long)req->request_id);
		wsgate__v1__reply__free_unpacked(rep, NULL);
		st = WSGATE_ERR_PROTOCOL;
		goto done;
	}
	if (!status_is_valid(rep->status)) {
		client_set_error(c, "reply has invalid status %d",
		                 (int)rep->status);
		wsgate__v1__reply__free_unpacked(rep, NULL);
		st = WSGATE_ERR_PROTOCOL;
		goto done;
	}
	st = (enum wsgate_status)rep->status;
	if (st != WSGATE_OK)
		client_set_error(c, "%s",
		                 rep->error[0] != '\0'
		                     ? rep->error
		                     : wsgate_status_name(st));
	*out = rep;
done:
	if (aio != NULL)
		nng_aio_free(aio);
	nng_ctx_close(ctx);
	client_release(c, link, timed_out);
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
	int rv;

	if (out == NULL)
		return WSGATE_ERR_ARGUMENT;
	*out = NULL;
	if (timeout_ms <= 0)
		return WSGATE_ERR_ARGUMENT;
	if (url == NULL)
		url = WSGATE_DEFAULT_CONTROL;
	if ((c = calloc(1, sizeof(*c))) == NULL)
		return WSGATE_ERR_TRANSPORT;
	if ((c->url = strdup(url)) == NULL) {
		free(c);
		return WSGATE_ERR_TRANSPORT;
	}
	c->timeout_ms = timeout_ms;
	atomic_init(&c->next_id, 1);
	pthread_mutex_init(&c->lk, NULL);

	if ((rv = link_open(c, &c->cur)) != 0)
		goto fail;
	if ((rv = link_dial(c, c->cur)) != 0)
		goto fail_link;
	c->coalescer = coalescer_new(c, send_event_alone, wsgate_send_batch);
	if (c->coalescer == NULL) {
		rv = NNG_ENOMEM;
		goto fail_link;
	}
	*out = c;
	return WSGATE_OK;

fail_link:
	link_close(c->cur);
fail:
	pthread_mutex_destroy(&c->lk);
	free(c->url);
	free(c);
	if (rv == NNG_EADDRINVAL || rv == NNG_ENOTSUP || rv == NNG_EINVAL)
		return WSGATE_ERR_ARGUMENT;
	return WSGATE_ERR_TRANSPORT;
}

/* No call may be in progress: every link has users 0, and a retired link
 * was closed by its last call. */
void wsgate_client_close(wsgate_client *c)
{
	struct client_link *cur, *spare;

	if (c == NULL)
		return;
	/* Detached first: the pipe callbacks of the closing sockets must not
	 * find a link that is already freed. */
	pthread_mutex_lock(&c->lk);
	cur = c->cur;
	spare = c->spare;
	c->cur = NULL;
	c->spare = NULL;
	pthread_mutex_unlock(&c->lk);
	link_close(spare);
	link_close(cur);
	coalescer_free(c->coalescer);
	pthread_mutex_destroy(&c->lk);
	free(c->url);
	free(c);
}

/* Unlocked read: the pointer is stable for the client's life; a caller
 * sharing the client across threads may see another thread's newer text. */
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
