/*
 * control: rep0 server of the backend control protocol (see control.h).
 *
 * The wire: a request is the req0 backtrace -- 32-bit big-endian words up
 * to and including the first with the high bit set (the request id), one
 * per device hop, at most CONTROL_MAX_HOPS like NNG's rep0 -- then a
 * wsgate.v1.Request; the reply echoes the backtrace before its
 * wsgate.v1.Reply, on the connection the request came from.
 *
 * Every struct here belongs to the service thread.
 */
#include "control.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "sp_server.h"
#include "validate.h"

#define CONTROL_MAX_HOPS 8 /* backtrace words; NNG's default NNG_OPT_MAXTTL */
/* Replies kept for a backend that does not read them before its
 * connection is no longer read. */
#define CONTROL_MAX_UNSENT (1u << 20)
/* Warnings about refused requests per second; the rest are counted. */
#define CONTROL_LOG_BURST 10
/* Larger requests are decoded and validated on the checker thread: a
 * batch of 100 small events (~15 KB) is checked there in parallel with
 * the loop's work (+3-8% events/s in batches against checking it inline,
 * and a 15 MB batch no longer stalls the loop); single events and small
 * batches stay inline, where they cost no hand-off. */
#define CONTROL_CHECK_INLINE_MAX (8u << 10)

/* One per backend connection, from on_open until it is closed and its
 * last request answered. */
struct control_pipe {
	unsigned in_service; /* requests read and not yet answered */
	bool closed;
};

/* One request from its decoding to its reply. */
struct control_request {
	struct control *ctl;
	struct sp_pipe *pipe; /* held until the reply */
	uint8_t backtrace[4 * CONTROL_MAX_HOPS];
	size_t backtrace_len;
	uint8_t *raw; /* a large request's body, for the checker thread */
	size_t raw_len;
	Wsgate__V1__Request *req; /* freed after the reply */
	char **event_errors;      /* SendBatch: per event, NULL when valid */
	size_t n_event_errors;
	/* Set by request_check: 0 when the request goes to dispatch, else
	 * the status to answer with (OK for a Ping), error its message. */
	Wsgate__V1__Status answer;
	char error[300];
	const char *warning; /* for control_warn, on the service thread */
	struct control_request *next;
};

struct control {
	struct ev_loop *loop;
	struct sp_server *srv;
	size_t max_payload;
	unsigned max_in_service;
	control_ready_fn on_ready;
	void *ready_arg;
	/* Runs on_ready before the loop next waits, while requests are
	 * queued. */
	ev_prepare ready_watcher;
	struct control_request *head, *tail; /* validated, not yet taken */
	uint8_t *reply_buf; /* control_reply packs here; grows, never shrinks */
	size_t reply_cap;
	struct log_limit log_limit; /* control_warn's */
	/* The checker thread decodes and validates requests over
	 * CONTROL_CHECK_INLINE_MAX bytes. lk guards the two lists and stopping;
	 * cv wakes the checker; checked_async wakes the loop. */
	pthread_t checker;
	bool checker_running;
	pthread_mutex_t lk;
	pthread_cond_t cv;
	bool stopping;
	struct control_request *to_check_head, *to_check_tail;
	struct control_request *checked_head, *checked_tail;
	ev_async checked_async;
};

/*
 * A hostile backend can make a warning per request; the log gets at most
 * CONTROL_LOG_BURST of them a second, then one line with how many were
 * left out.
 */
static void control_warn(struct control *ctl, const char *what)
{
	unsigned missed;
	bool pass = log_limit_pass(&ctl->log_limit, (int64_t)ev_now(ctl->loop),
	                           CONTROL_LOG_BURST, &missed);
	if (missed)
		log_warn("control: %u more refused request(s) not logged",
		         missed);
	if (pass)
		log_warn("control: %s", what);
}

static void pipe_request_done(struct control *ctl, struct sp_pipe *p)
{
	struct control_pipe *cp = sp_pipe_data(p);
	if (cp->in_service-- == ctl->max_in_service && !cp->closed)
		sp_pipe_set_reading(p, true);
	if (cp->closed && cp->in_service == 0)
		free(cp);
	sp_pipe_release(p);
}

static void request_free(struct control_request *s)
{
	free(s->raw);
	if (s->req)
		wsgate__v1__request__free_unpacked(s->req, NULL);
	for (size_t i = 0; i < s->n_event_errors; i++)
		free(s->event_errors[i]);
	free(s->event_errors);
	pipe_request_done(s->ctl, s->pipe);
	free(s);
}

void control_reply(struct control_request *s, Wsgate__V1__Reply *reply)
{
	struct control *ctl = s->ctl;
	reply->request_id = s->req ? s->req->request_id : 0;
	size_t len = wsgate__v1__reply__get_packed_size(reply);
	if (len > ctl->reply_cap) {
		size_t cap = ctl->reply_cap ? ctl->reply_cap : 4096;
		while (cap < len)
			cap *= 2;
		uint8_t *buf = realloc(ctl->reply_buf, cap);
		if (!buf) {
			log_error("control: cannot allocate a %zu-byte reply",
			          len);
			request_free(s); /* the requester times out, resends */
			return;
		}
		ctl->reply_buf = buf;
		ctl->reply_cap = cap;
	}
	/* The reply may point into the request: pack before freeing it. */
	wsgate__v1__reply__pack(reply, ctl->reply_buf);
	struct iovec iov[2] = {{s->backtrace, s->backtrace_len},
	                       {ctl->reply_buf, len}};
	/* A backend that left gets nothing (sp_pipe_send fails). */
	sp_pipe_send(s->pipe, iov, 2);
	request_free(s);
}

/* Sets s's answer (see struct control_request); returns -1. */
static int request_refuse(struct control_request *s, Wsgate__V1__Status st,
                          const char *error, const char *warning)
{
	s->answer = st;
	snprintf(s->error, sizeof(s->error), "%s", error);
	s->warning = warning;
	return -1;
}

/*
 * Any thread: decodes and validates body into s -- s->req and, for a
 * batch, s->event_errors -- or sets its answer. Reads nothing of ctl but
 * its constants.
 */
static void request_check(const struct control *ctl, struct control_request *s,
                          const uint8_t *body, size_t len)
{
	char err[256], path[256] = "";
	Wsgate__V1__Request *req;
	int nul;
	s->req = req = wsgate__v1__request__unpack(NULL, len, body);
	nul = req ? validate_request_wire(body, len, path, sizeof(path)) : 0;
	if (!req || nul < 0) {
		request_refuse(s, WSGATE__V1__STATUS__INVALID_ARGUMENT,
		               "request: not a wsgate.v1.Request",
		               "undecodable request refused");
		return;
	}
	if (nul) {
		request_refuse(s, WSGATE__V1__STATUS__INVALID_ARGUMENT, "",
		               "request with a NUL byte in a string refused");
		snprintf(s->error, sizeof(s->error), "%s: contains a NUL byte",
		         path);
		return;
	}
	if (validate_request(req, err, sizeof(err))) {
		request_refuse(s, WSGATE__V1__STATUS__INVALID_ARGUMENT, err,
		               NULL);
		return;
	}
	switch (req->body_case) {
	case WSGATE__V1__REQUEST__BODY_PING:
		request_refuse(s, WSGATE__V1__STATUS__OK, "", NULL);
		return;
	case WSGATE__V1__REQUEST__BODY_SEND_EVENT:
		if (validate_event(req->send_event->event, ctl->max_payload,
		                   err, sizeof(err)))
			request_refuse(s, WSGATE__V1__STATUS__INVALID_ARGUMENT,
			               err, NULL);
		return;
	case WSGATE__V1__REQUEST__BODY_SEND_BATCH: {
		size_t n = req->send_batch->n_events;
		s->event_errors = calloc(n, sizeof(*s->event_errors));
		if (!s->event_errors) {
			request_refuse(s,
			               WSGATE__V1__STATUS__RESOURCE_EXHAUSTED,
			               "out of memory", NULL);
			return;
		}
		s->n_event_errors = n;
		for (size_t i = 0; i < n; i++)
			if (validate_event(req->send_batch->events[i],
			                   ctl->max_payload, err, sizeof(err)))
				s->event_errors[i] = strdup(err);
		return;
	}
	default:
		return;
	}
}

static void list_append(struct control_request **head,
                        struct control_request **tail,
                        struct control_request *s)
{
	s->next = NULL;
	if (*tail)
		(*tail)->next = s;
	else
		*head = s;
	*tail = s;
}

static void queue_request(struct control_request *s)
{
	struct control *ctl = s->ctl;
	list_append(&ctl->head, &ctl->tail, s);
	if (!ev_is_active(&ctl->ready_watcher))
		ev_prepare_start(ctl->loop, &ctl->ready_watcher);
}

/* Service thread: answers a checked request that has its answer, queues
 * the others for dispatch. */
static void request_checked(struct control_request *s)
{
	if (s->warning)
		control_warn(s->ctl, s->warning);
	if (s->answer) {
		Wsgate__V1__Reply reply = WSGATE__V1__REPLY__INIT;
		reply.status = s->answer;
		reply.error = s->error;
		control_reply(s, &reply);
		return;
	}
	queue_request(s);
}

static void *checker_main(void *arg)
{
	struct control *ctl = arg;
	pthread_setname_np(pthread_self(), "wsgate:check"); /* top, perf */
	pthread_mutex_lock(&ctl->lk);
	for (;;) {
		struct control_request *s = ctl->to_check_head;
		if (!s) {
			if (ctl->stopping)
				break;
			pthread_cond_wait(&ctl->cv, &ctl->lk);
			continue;
		}
		ctl->to_check_head = s->next;
		if (!ctl->to_check_head)
			ctl->to_check_tail = NULL;
		pthread_mutex_unlock(&ctl->lk);
		request_check(ctl, s, s->raw, s->raw_len);
		free(s->raw);
		s->raw = NULL;
		pthread_mutex_lock(&ctl->lk);
		list_append(&ctl->checked_head, &ctl->checked_tail, s);
		ev_async_send(ctl->loop, &ctl->checked_async);
	}
	pthread_mutex_unlock(&ctl->lk);
	return NULL;
}

/* Service thread: what the checker finished. */
static void checked_cb(struct ev_loop *loop, ev_async *w, int revents)
{
	struct control *ctl = w->data;
	struct control_request *s;
	(void)loop;
	(void)revents;
	pthread_mutex_lock(&ctl->lk);
	s = ctl->checked_head;
	ctl->checked_head = ctl->checked_tail = NULL;
	pthread_mutex_unlock(&ctl->lk);
	while (s) {
		struct control_request *next = s->next;
		request_checked(s);
		s = next;
	}
}

static void ready_cb(struct ev_loop *loop, ev_prepare *w, int revents)
{
	struct control *ctl = w->data;
	(void)revents;
	ev_prepare_stop(loop, w);
	ctl->on_ready(ctl->ready_arg);
}

/* Splits the backtrace off msg into s. The body's offset, or 0 when the
 * message has too many hops (dropped, as NNG's rep0 does), or -1 when it
 * ends inside the backtrace (the peer speaks garbage: closed). */
static long take_backtrace(struct control_request *s, const uint8_t *msg,
                           size_t len)
{
	size_t off = 0;
	for (;;) {
		if (off + 4 > len)
			return -1;
		if (off == sizeof(s->backtrace))
			return 0;
		memcpy(s->backtrace + off, msg + off, 4);
		off += 4;
		if (msg[off - 4] & 0x80)
			break;
	}
	s->backtrace_len = off;
	return (long)off;
}

static void on_message(void *arg, struct sp_pipe *p, const uint8_t *msg,
                       size_t len)
{
	struct control *ctl = arg;
	struct control_pipe *cp = sp_pipe_data(p);
	struct control_request *s = calloc(1, sizeof(*s));
	long body;
	if (!s) {
		control_warn(ctl, "out of memory: request dropped");
		return;
	}
	body = take_backtrace(s, msg, len);
	if (body <= 0) {
		free(s);
		control_warn(ctl, body < 0 ? "a message shorter than its "
		                             "request id: connection closed"
		                           : "a request past the hop limit "
		                             "dropped");
		if (body < 0)
			sp_pipe_close(p);
		return;
	}
	s->ctl = ctl;
	s->pipe = p;
	sp_pipe_hold(p);
	if (++cp->in_service == ctl->max_in_service)
		sp_pipe_set_reading(p, false);

	msg += body;
	len -= (size_t)body;
	if (len > CONTROL_CHECK_INLINE_MAX && ctl->checker_running) {
		s->raw = malloc(len);
		if (s->raw) {
			memcpy(s->raw, msg, len);
			s->raw_len = len;
			pthread_mutex_lock(&ctl->lk);
			list_append(&ctl->to_check_head, &ctl->to_check_tail,
			            s);
			pthread_cond_signal(&ctl->cv);
			pthread_mutex_unlock(&ctl->lk);
			return;
		}
	}
	request_check(ctl, s, msg, len);
	request_checked(s);
}

static void on_open(void *arg, struct sp_pipe *p)
{
	struct control_pipe *cp = calloc(1, sizeof(*cp));
	(void)arg;
	if (!cp) {
		log_error("control: out of memory: connection closed");
		sp_pipe_close(p);
		return;
	}
	sp_pipe_set_data(p, cp);
}

static void on_close(void *arg, struct sp_pipe *p)
{
	struct control_pipe *cp = sp_pipe_data(p);
	(void)arg;
	if (!cp)
		return;
	cp->closed = true;
	if (cp->in_service == 0)
		free(cp);
}

struct control_request *control_next(struct control *ctl)
{
	struct control_request *s = ctl->head;
	if (s) {
		ctl->head = s->next;
		if (!ctl->head)
			ctl->tail = NULL;
	}
	return s;
}

const Wsgate__V1__Request *
control_request_body(const struct control_request *req)
{
	return req->req;
}

const char *control_request_event_error(const struct control_request *req,
                                        size_t i)
{
	return i < req->n_event_errors ? req->event_errors[i] : NULL;
}

int control_open(struct control **out, struct ev_loop *loop,
                 const struct control_config *cfg, control_ready_fn on_ready,
                 void *ready_arg, char *err, size_t errlen)
{
	static const struct sp_server_ops ops = {
	    .on_message = on_message,
	    .on_open = on_open,
	    .on_close = on_close,
	};
	struct sp_server_config scfg = {
	    .what = "control",
	    .url = cfg->url,
	    .ipc_mode = cfg->ipc_mode,
	    .proto = SP_PROTO_REP0,
	    .peer = SP_PROTO_REQ0,
	    .max_message = cfg->max_message,
	    .max_unsent = CONTROL_MAX_UNSENT,
	};
	struct control *ctl = calloc(1, sizeof(*ctl));
	if (!ctl) {
		snprintf(err, errlen, "control: out of memory");
		return -1;
	}
	ctl->loop = loop;
	ctl->max_payload = cfg->max_payload;
	ctl->max_in_service = cfg->max_in_service ? cfg->max_in_service : 1;
	ctl->on_ready = on_ready;
	ctl->ready_arg = ready_arg;
	ev_prepare_init(&ctl->ready_watcher, ready_cb);
	ctl->ready_watcher.data = ctl;
	ev_async_init(&ctl->checked_async, checked_cb);
	ctl->checked_async.data = ctl;
	pthread_mutex_init(&ctl->lk, NULL);
	pthread_cond_init(&ctl->cv, NULL);
	if (sp_server_listen(&ctl->srv, loop, &scfg, &ops, ctl, err, errlen)) {
		pthread_cond_destroy(&ctl->cv);
		pthread_mutex_destroy(&ctl->lk);
		free(ctl);
		return -1;
	}
	ev_async_start(loop, &ctl->checked_async);
	/* Without the thread every request is checked inline. */
	if (pthread_create(&ctl->checker, NULL, checker_main, ctl) == 0)
		ctl->checker_running = true;
	else
		log_warn("control: no checker thread: large requests are "
		         "checked on the service thread");
	*out = ctl;
	return 0;
}

void control_close(struct control *ctl)
{
	struct control_request *s;
	if (!ctl)
		return;
	ev_prepare_stop(ctl->loop, &ctl->ready_watcher);
	if (ctl->checker_running) {
		pthread_mutex_lock(&ctl->lk);
		ctl->stopping = true;
		pthread_cond_signal(&ctl->cv);
		pthread_mutex_unlock(&ctl->lk);
		pthread_join(ctl->checker, NULL);
	}
	ev_async_stop(ctl->loop, &ctl->checked_async);
	sp_server_close(ctl->srv);
	/* The checker is gone: nothing else touches these lists. */
	while ((s = ctl->to_check_head)) {
		ctl->to_check_head = s->next;
		request_free(s);
	}
	while ((s = ctl->checked_head)) {
		ctl->checked_head = s->next;
		request_free(s);
	}
	while ((s = control_next(ctl)))
		request_free(s);
	pthread_cond_destroy(&ctl->cv);
	pthread_mutex_destroy(&ctl->lk);
	free(ctl->reply_buf);
	free(ctl);
}
