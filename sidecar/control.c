/*
 * control: NNG rep0 server of the backend control protocol (see control.h).
 *
 * Each context is one slot that cycles RECV -> (service thread) -> SEND ->
 * RECV. A slot is touched by one party at a time: NNG's callback while it
 * receives or sends, the service thread between control_next and
 * control_reply. The lock only guards the hand-off queue.
 *
 * A backend that stops reading its replies must not hold the slots: NNG's
 * rep0 queues a context's reply behind the pipe's unfinished send forever,
 * so one such backend would take every slot in turn and starve all the
 * others. A reply therefore gets CONTROL_REPLY_TIMEOUT_MS to leave, then it
 * is dropped and the slot serves the next request. A healthy requester
 * (NNG's req0 always reads its pipe) never comes near that limit. (Closing
 * the pipe of such a backend as well was tried: with NNG 1.5.2 it made
 * nng_close at shutdown hang now and then.)
 */
#include "control.h"

#include <errno.h>
#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "ipc_listen.h"
#include "log.h"
#include "validate.h"

/* How long a reply may wait for its pipe before it is dropped. */
#define CONTROL_REPLY_TIMEOUT_MS 500
/* Warnings about refused requests per second; the rest are counted. */
#define CONTROL_LOG_BURST 10

enum slot_state { SLOT_RECV, SLOT_WAIT, SLOT_SEND };

/* One per rep0 context: one request in service. */
struct control_request {
	struct control *ctl;
	nng_ctx ctx;
	nng_aio *aio;
	enum slot_state state;
	Wsgate__V1__Request *req; /* decoded; freed after the reply */
	char **event_errors;      /* SendBatch: per event, NULL when valid */
	size_t n_event_errors;
	struct control_request *next_ready;
};

/* One per sidecar: the socket and its slots. */
struct control {
	nng_socket sock;
	struct ipc_listener *listener; /* restarted if NNG's accept dies */
	size_t max_payload;
	int n_slots;
	struct control_request *slots;
	control_wake_fn wake;
	void *wake_arg;
	/* lk guards the ready queue and the log_ fields. */
	pthread_mutex_t lk;
	struct control_request *ready_head;
	struct control_request *ready_tail;
	int64_t log_second;      /* the second the log_ counts are for */
	unsigned log_count;      /* warnings written in it */
	unsigned log_suppressed; /* warnings left out since the last written */
};

/*
 * A hostile backend can make a warning per request; the log gets at most
 * CONTROL_LOG_BURST of them a second, then one line with how many were
 * left out.
 */
static void control_warn(struct control *ctl, const char *what)
{
	int64_t second = clock_now_us() / 1000000;
	unsigned suppressed = 0;
	bool emit = false;

	pthread_mutex_lock(&ctl->lk);
	if (second != ctl->log_second) {
		suppressed = ctl->log_suppressed;
		ctl->log_second = second;
		ctl->log_count = 0;
		ctl->log_suppressed = 0;
	}
	if (ctl->log_count < CONTROL_LOG_BURST) {
		ctl->log_count++;
		emit = true;
	} else {
		ctl->log_suppressed++;
	}
	pthread_mutex_unlock(&ctl->lk);
	if (suppressed)
		log_warn("control: %u more refused request(s) not logged",
		         suppressed);
	if (emit)
		log_warn("control: %s", what);
}

static void slot_release_request(struct control_request *s)
{
	if (s->req)
		wsgate__v1__request__free_unpacked(s->req, NULL);
	s->req = NULL;
	for (size_t i = 0; i < s->n_event_errors; i++)
		free(s->event_errors[i]);
	free(s->event_errors);
	s->event_errors = NULL;
	s->n_event_errors = 0;
}

static void slot_recv(struct control_request *s)
{
	s->state = SLOT_RECV;
	/* The timeout stays on the aio: a receive waits for as long as it
	 * takes, only a reply is timed. */
	nng_aio_set_timeout(s->aio, NNG_DURATION_INFINITE);
	nng_ctx_recv(s->ctx, s->aio);
}

void control_reply(struct control_request *s, Wsgate__V1__Reply *reply)
{
	nng_msg *msg;
	reply->request_id = s->req ? s->req->request_id : 0;
	size_t len = wsgate__v1__reply__get_packed_size(reply);
	int rv = nng_msg_alloc(&msg, len);
	/* The reply may point into the request: pack before releasing. */
	if (rv == 0)
		wsgate__v1__reply__pack(reply, nng_msg_body(msg));
	slot_release_request(s);
	if (rv != 0) {
		log_error("control: cannot allocate a %zu-byte reply", len);
		slot_recv(s); /* the requester times out and retries */
		return;
	}
	s->state = SLOT_SEND;
	nng_aio_set_msg(s->aio, msg);
	nng_aio_set_timeout(s->aio, CONTROL_REPLY_TIMEOUT_MS);
	nng_ctx_send(s->ctx, s->aio);
}

static void reply_error(struct control_request *s, Wsgate__V1__Status status,
                        const char *error)
{
	Wsgate__V1__Reply reply = WSGATE__V1__REPLY__INIT;
	reply.status = status;
	reply.error = (char *)error;
	control_reply(s, &reply);
}

/* Checks what can be checked off the service thread. Returns 0 when the
 * request must go to the service thread, -1 when it was answered here. */
static int slot_validate(struct control_request *s)
{
	char err[256];
	Wsgate__V1__Request *req = s->req;
	if (validate_request(req, err, sizeof(err))) {
		reply_error(s, WSGATE__V1__STATUS__INVALID_ARGUMENT, err);
		return -1;
	}
	switch (req->body_case) {
	case WSGATE__V1__REQUEST__BODY_PING: {
		Wsgate__V1__Reply reply = WSGATE__V1__REPLY__INIT;
		reply.status = WSGATE__V1__STATUS__OK;
		control_reply(s, &reply);
		return -1;
	}
	case WSGATE__V1__REQUEST__BODY_SEND_EVENT:
		if (validate_event(req->send_event->event, s->ctl->max_payload,
		                   err, sizeof(err))) {
			reply_error(s, WSGATE__V1__STATUS__INVALID_ARGUMENT,
			            err);
			return -1;
		}
		return 0;
	case WSGATE__V1__REQUEST__BODY_SEND_BATCH: {
		size_t n = req->send_batch->n_events;
		s->event_errors = calloc(n, sizeof(*s->event_errors));
		if (!s->event_errors) {
			reply_error(s, WSGATE__V1__STATUS__RESOURCE_EXHAUSTED,
			            "out of memory");
			return -1;
		}
		s->n_event_errors = n;
		for (size_t i = 0; i < n; i++)
			if (validate_event(req->send_batch->events[i],
			                   s->ctl->max_payload, err,
			                   sizeof(err)))
				s->event_errors[i] = strdup(err);
		return 0;
	}
	default:
		return 0;
	}
}

static void slot_handoff(struct control_request *s)
{
	struct control *ctl = s->ctl;
	s->state = SLOT_WAIT;
	s->next_ready = NULL;
	pthread_mutex_lock(&ctl->lk);
	/* The service thread empties the queue on every wake-up, so only
	 * the request that finds it empty needs to wake it. */
	int was_empty = !ctl->ready_head;
	if (ctl->ready_tail)
		ctl->ready_tail->next_ready = s;
	else
		ctl->ready_head = s;
	ctl->ready_tail = s;
	pthread_mutex_unlock(&ctl->lk);
	if (was_empty)
		ctl->wake(ctl->wake_arg);
}

static void slot_recv_cb(struct control_request *s)
{
	int rv = nng_aio_result(s->aio);
	if (rv == NNG_ECLOSED || rv == NNG_ECANCELED)
		return;
	if (rv == NNG_ETIMEDOUT) {
		/* A receive has no timeout; NNG 1.5 can still deliver the
		 * expiry of a reply's timeout to the receive that followed
		 * it on the same aio. Nothing was lost: receive again. */
		slot_recv(s);
		return;
	}
	if (rv != 0) {
		log_warn("control: receive failed: %s", nng_strerror(rv));
		slot_recv(s);
		return;
	}
	nng_msg *msg = nng_aio_get_msg(s->aio);
	nng_aio_set_msg(s->aio, NULL);
	s->req = wsgate__v1__request__unpack(NULL, nng_msg_len(msg),
	                                     nng_msg_body(msg));
	char path[256] = "";
	int nul =
	    s->req ? validate_request_wire(nng_msg_body(msg), nng_msg_len(msg),
	                                   path, sizeof(path))
	           : 0;
	nng_msg_free(msg);
	if (!s->req || nul < 0) {
		control_warn(s->ctl, "undecodable request refused");
		reply_error(s, WSGATE__V1__STATUS__INVALID_ARGUMENT,
		            "request: not a wsgate.v1.Request");
		return;
	}
	if (nul) {
		char err[300];
		snprintf(err, sizeof(err), "%s: contains a NUL byte", path);
		control_warn(s->ctl, "request with a NUL byte in a string "
		                     "refused");
		reply_error(s, WSGATE__V1__STATUS__INVALID_ARGUMENT, err);
		return;
	}
	if (slot_validate(s) == 0)
		slot_handoff(s);
}

static void slot_cb(void *arg)
{
	struct control_request *s = arg;
	switch (s->state) {
	case SLOT_RECV:
		slot_recv_cb(s);
		break;
	case SLOT_SEND: {
		int rv = nng_aio_result(s->aio);
		if (rv != 0) {
			/* Nowhere to go: drop the reply. (A requester that
			 * left is not an error: NNG reports a good send.) */
			nng_msg_free(nng_aio_get_msg(s->aio));
			nng_aio_set_msg(s->aio, NULL);
			if (rv == NNG_ECLOSED)
				return;
		}
		if (rv == NNG_ETIMEDOUT)
			control_warn(s->ctl, "a reply waited too long for a "
			                     "backend that does not read its "
			                     "replies; dropped");
		slot_recv(s);
		break;
	}
	case SLOT_WAIT:
		break;
	}
}

struct control_request *control_next(struct control *ctl)
{
	pthread_mutex_lock(&ctl->lk);
	struct control_request *s = ctl->ready_head;
	if (s) {
		ctl->ready_head = s->next_ready;
		if (!ctl->ready_head)
			ctl->ready_tail = NULL;
	}
	pthread_mutex_unlock(&ctl->lk);
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

/* The listener watchdog's line when it restarts a dead listener. */
static void control_listener_log(void *arg, const char *line)
{
	(void)arg;
	log_warn("%s", line);
}

int control_open(struct control **out, const struct control_config *cfg,
                 control_wake_fn wake, void *wake_arg, char *err, size_t errlen)
{
	struct control *ctl = calloc(1, sizeof(*ctl));
	int rv;
	if (!ctl) {
		snprintf(err, errlen, "control: out of memory");
		return -1;
	}
	ctl->max_payload = cfg->max_payload;
	ctl->wake = wake;
	ctl->wake_arg = wake_arg;
	pthread_mutex_init(&ctl->lk, NULL);
	if ((rv = nng_rep0_open(&ctl->sock)) != 0) {
		snprintf(err, errlen, "control: %s", nng_strerror(rv));
		goto fail_mutex;
	}
	nng_socket_set_size(ctl->sock, NNG_OPT_RECVMAXSZ, cfg->max_message);
	if (ipc_listen(&ctl->listener, ctl->sock, "control", cfg->url,
	               cfg->ipc_mode, control_listener_log, NULL, err, errlen))
		goto fail_sock;
	ctl->slots = calloc((size_t)cfg->contexts, sizeof(*ctl->slots));
	if (!ctl->slots) {
		snprintf(err, errlen, "control: out of memory");
		goto fail_sock;
	}
	for (int i = 0; i < cfg->contexts; i++) {
		struct control_request *s = &ctl->slots[i];
		s->ctl = ctl;
		if ((rv = nng_aio_alloc(&s->aio, slot_cb, s)) != 0 ||
		    (rv = nng_ctx_open(&s->ctx, ctl->sock)) != 0) {
			snprintf(err, errlen, "control: %s", nng_strerror(rv));
			goto fail_slots;
		}
		ctl->n_slots++;
	}
	for (int i = 0; i < ctl->n_slots; i++)
		slot_recv(&ctl->slots[i]);
	*out = ctl;
	return 0;

fail_slots:
	ipc_listener_stop(ctl->listener);
	nng_close(ctl->sock);
	ipc_listener_free(ctl->listener);
	for (int i = 0; i <= ctl->n_slots && i < cfg->contexts; i++)
		nng_aio_free(ctl->slots[i].aio);
	free(ctl->slots);
	pthread_mutex_destroy(&ctl->lk);
	free(ctl);
	return -1;
fail_sock:
	ipc_listener_stop(ctl->listener); /* NULL when ipc_listen failed */
	nng_close(ctl->sock);
	ipc_listener_free(ctl->listener);
fail_mutex:
	pthread_mutex_destroy(&ctl->lk);
	free(ctl);
	return -1;
}

void control_close(struct control *ctl)
{
	if (!ctl)
		return;
	ipc_listener_stop(ctl->listener);
	nng_close(ctl->sock);
	ipc_listener_free(ctl->listener);
	for (int i = 0; i < ctl->n_slots; i++) {
		struct control_request *s = &ctl->slots[i];
		nng_aio_stop(s->aio);
		if (s->state == SLOT_SEND && nng_aio_get_msg(s->aio))
			nng_msg_free(nng_aio_get_msg(s->aio));
		nng_aio_free(s->aio);
		slot_release_request(s);
	}
	free(ctl->slots);
	pthread_mutex_destroy(&ctl->lk);
	free(ctl);
}
