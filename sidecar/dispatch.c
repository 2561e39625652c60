/* dispatch: the service thread's side of the control protocol. */
#include "dispatch.h"

#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "log.h"
#include "router.h"

/*
 * An event request waits for its events' commits: one of these counts them
 * down and answers when the last one is in. A SendEvent is a batch of one
 * with its own reply shape.
 */
struct reply_wait {
	struct dispatch *d;
	struct reply_wait *next; /* in d's answered list */
	struct control_request *req;
	int is_batch;
	size_t n;
	size_t remaining;
	Wsgate__V1__EventResult *results;
	Wsgate__V1__EventResult **ptrs;
};

/* Sends w's reply and frees w. */
static void reply_wait_send(struct reply_wait *w)
{
	Wsgate__V1__Reply reply = WSGATE__V1__REPLY__INIT;
	Wsgate__V1__BatchResult br = WSGATE__V1__BATCH_RESULT__INIT;
	if (w->is_batch) {
		br.n_results = w->n;
		br.results = w->ptrs;
		reply.status = WSGATE__V1__STATUS__OK;
		reply.body_case = WSGATE__V1__REPLY__BODY_BATCH;
		reply.batch = &br;
	} else {
		reply.status = w->results[0].status;
		if (reply.status == WSGATE__V1__STATUS__OK) {
			reply.body_case = WSGATE__V1__REPLY__BODY_EVENT;
			reply.event = &w->results[0];
		} else {
			reply.error = w->results[0].error;
		}
	}
	control_reply(w->req, &reply);
	free(w->results);
	free(w->ptrs);
	free(w);
}

static void event_result_fill(Wsgate__V1__EventResult *er,
                              const struct router_result *rr)
{
	switch (rr->status) {
	case ROUTER_OK:
		er->status = WSGATE__V1__STATUS__OK;
		er->seq = rr->seq;
		er->connections = rr->connections;
		er->retained = rr->retained;
		er->duplicate = rr->duplicate;
		break;
	case ROUTER_EXHAUSTED:
		er->status = WSGATE__V1__STATUS__RESOURCE_EXHAUSTED;
		er->error = (char *)rr->error;
		break;
	case ROUTER_FAILED:
		er->status = WSGATE__V1__STATUS__INTERNAL;
		er->error = (char *)rr->error;
		break;
	case ROUTER_UNAVAILABLE:
		er->status = WSGATE__V1__STATUS__UNAVAILABLE;
		er->error = (char *)rr->error;
		break;
	}
}

/* w is complete: its reply waits for dispatch_send_replies. */
static void reply_wait_answered(struct reply_wait *w)
{
	struct dispatch *d = w->d;
	if (d->answered_tail)
		d->answered_tail->next = w;
	else
		d->answered_head = w;
	d->answered_tail = w;
}

void dispatch_event_done(void *owner, size_t index,
                         const struct router_result *res)
{
	struct reply_wait *w = owner;
	event_result_fill(&w->results[index], res);
	if (--w->remaining == 0)
		reply_wait_answered(w);
}

void dispatch_send_replies(struct dispatch *d)
{
	struct reply_wait *w;
	while ((w = d->answered_head)) {
		d->answered_head = w->next;
		if (!d->answered_head)
			d->answered_tail = NULL;
		reply_wait_send(w);
	}
}

static void do_send_events(struct dispatch *d, struct control_request *req,
                           Wsgate__V1__Event *const *events, size_t n,
                           int is_batch)
{
	struct reply_wait *w = calloc(1, sizeof(*w));
	if (w) {
		w->results = calloc(n, sizeof(*w->results));
		w->ptrs = calloc(n, sizeof(*w->ptrs));
	}
	if (!w || !w->results || !w->ptrs) {
		if (w) {
			free(w->results);
			free(w->ptrs);
		}
		free(w);
		Wsgate__V1__Reply reply = WSGATE__V1__REPLY__INIT;
		reply.status = WSGATE__V1__STATUS__RESOURCE_EXHAUSTED;
		reply.error = "out of memory";
		control_reply(req, &reply);
		return;
	}
	w->d = d;
	w->req = req;
	w->is_batch = is_batch;
	w->n = n;
	/* One more than the events, released below, so that events
	 * finishing synchronously cannot send the reply early. */
	w->remaining = n + 1;
	int64_t now = clock_now_us();
	for (size_t i = 0; i < n; i++) {
		wsgate__v1__event_result__init(&w->results[i]);
		w->ptrs[i] = &w->results[i];
		const char *invalid = control_request_event_error(req, i);
		if (invalid) {
			w->results[i].status =
			    WSGATE__V1__STATUS__INVALID_ARGUMENT;
			w->results[i].error = (char *)invalid;
			w->remaining--;
			continue;
		}
		struct router_result rr;
		int final = d->cluster
		                ? cluster_publish_accept(d->cluster, events[i],
		                                         now, w, i, &rr)
		                : router_accept_event(d->router, events[i], now,
		                                      w, i, &rr);
		if (final) {
			event_result_fill(&w->results[i], &rr);
			w->remaining--;
		}
	}
	if (--w->remaining == 0)
		reply_wait_answered(w);
}

static void do_disconnect(struct dispatch *d, struct control_request *req)
{
	const Wsgate__V1__Disconnect *dc =
	    control_request_body(req)->disconnect;
	const char *reason =
	    dc->reason && *dc->reason ? dc->reason : "kicked by admin";
	uint32_t n = 0;
	if (dc->conn_id && *dc->conn_id) {
		struct conn *c = registry_find_conn(d->reg, dc->conn_id);
		/* Both given: only when the connection is that user's. One
		 * already closing is not counted again. */
		if (c && !c->close_code &&
		    (!*dc->user_id || strcmp(c->user->id, dc->user_id) == 0)) {
			registry_conn_close(d->reg, c, 4003, reason);
			n = 1;
		}
	} else {
		struct user *u = registry_user(d->reg, dc->user_id,
		                               strlen(dc->user_id), false);
		/* A closed connection leaves u->conns at once. */
		for (struct conn *c; u && (c = u->conns); n++)
			registry_conn_close(d->reg, c, 4003, reason);
	}
	if (n)
		log_info("disconnect: %u connection(s) closed (4003: %s)", n,
		         reason);
	Wsgate__V1__Reply reply = WSGATE__V1__REPLY__INIT;
	reply.status = WSGATE__V1__STATUS__OK;
	reply.body_case = WSGATE__V1__REPLY__BODY_DISCONNECTED;
	reply.disconnected = n;
	control_reply(req, &reply);
}

struct conn_list {
	Wsgate__V1__Connection *items;
	Wsgate__V1__Connection **ptrs;
	size_t n;
};

static void conn_list_add(struct conn *c, void *arg)
{
	struct conn_list *l = arg;
	Wsgate__V1__Connection *x = &l->items[l->n];
	wsgate__v1__connection__init(x);
	x->conn_id = c->id;
	x->user_id = c->user->id;
	x->opened_at = c->opened_at;
	x->peer = c->peer;
	x->queued = c->queue.len;
	x->written = c->written;
	l->ptrs[l->n++] = x;
}

static void do_list_connections(struct dispatch *d, struct control_request *req)
{
	const char *uid = control_request_body(req)->list_connections->user_id;
	Wsgate__V1__Reply reply = WSGATE__V1__REPLY__INIT;
	Wsgate__V1__ConnectionList cl = WSGATE__V1__CONNECTION_LIST__INIT;
	struct user *u = NULL;
	size_t cap = registry_conn_count(d->reg);
	if (uid && *uid) {
		u = registry_user(d->reg, uid, strlen(uid), false);
		cap = u ? u->n_conns : 0;
	}
	struct conn_list l = {
	    .items = calloc(cap + 1, sizeof(*l.items)),
	    .ptrs = calloc(cap + 1, sizeof(*l.ptrs)),
	};
	if (!l.items || !l.ptrs) {
		reply.status = WSGATE__V1__STATUS__RESOURCE_EXHAUSTED;
		reply.error = "out of memory";
	} else {
		if (uid && *uid) {
			for (struct conn *c = u ? u->conns : NULL; c;
			     c = c->user_next)
				conn_list_add(c, &l);
		} else {
			registry_foreach_conn(d->reg, conn_list_add, &l);
		}
		cl.n_connections = l.n;
		cl.connections = l.ptrs;
		reply.status = WSGATE__V1__STATUS__OK;
		reply.body_case = WSGATE__V1__REPLY__BODY_CONNECTIONS;
		reply.connections = &cl;
	}
	control_reply(req, &reply);
	free(l.items);
	free(l.ptrs);
}

static void do_get_stats(struct dispatch *d, struct control_request *req)
{
	struct registry_counters *c = registry_counters(d->reg);
	Wsgate__V1__Reply reply = WSGATE__V1__REPLY__INIT;
	Wsgate__V1__Stats st = WSGATE__V1__STATS__INIT;
	st.uptime_s = (uint64_t)((clock_now_us() - d->started_us) / 1000000);
	st.connections = registry_conn_count(d->reg);
	st.users = registry_connected_user_count(d->reg);
	st.events_accepted = c->events_accepted;
	st.frames_written = c->frames_written;
	st.frames_dropped = c->frames_dropped;
	st.notices_dropped = c->notices_dropped;
	st.audit_backlog = store_backlog(d->store);
	st.storage_failures = c->storage_failures;
	char storage_error[256];
	store_failures(d->store, storage_error, sizeof(storage_error));
	st.storage_error = storage_error;
	int64_t head_id;
	unsigned char head_chain[AUDIT_CHAIN_LEN];
	store_chain_head(d->store, &head_id, head_chain);
	st.audit_head_id = (uint64_t)head_id;
	st.audit_head_chain.data = head_chain;
	st.audit_head_chain.len = AUDIT_CHAIN_LEN;
	st.version = WSGATE_VERSION;
	if (d->replica) {
		struct cluster_stats cs;
		cluster_replica_stats(d->replica, &cs);
		st.node_id = (char *)cs.node_id;
		st.cluster = 1;
		st.cluster_available = cs.available;
		st.cluster_down_ms = cs.down_ms;
		st.cluster_position = cs.position;
		st.cluster_publish_queued = cs.publish_queued;
		st.cluster_unavailable_answers = cs.unavailable_answers;
	}
	reply.status = WSGATE__V1__STATUS__OK;
	reply.body_case = WSGATE__V1__REPLY__BODY_STATS;
	reply.stats = &st;
	control_reply(req, &reply);
}

void dispatch_drain(struct dispatch *d)
{
	struct control_request *req;
	store_group_begin(d->store);
	while ((req = control_next(d->ctl))) {
		switch (control_request_body(req)->body_case) {
		case WSGATE__V1__REQUEST__BODY_SEND_EVENT:
			do_send_events(
			    d, req,
			    &control_request_body(req)->send_event->event, 1,
			    0);
			break;
		case WSGATE__V1__REQUEST__BODY_SEND_BATCH:
			do_send_events(
			    d, req,
			    control_request_body(req)->send_batch->events,
			    control_request_body(req)->send_batch->n_events, 1);
			break;
		case WSGATE__V1__REQUEST__BODY_DISCONNECT:
			do_disconnect(d, req);
			break;
		case WSGATE__V1__REQUEST__BODY_LIST_CONNECTIONS:
			do_list_connections(d, req);
			break;
		case WSGATE__V1__REQUEST__BODY_GET_STATS:
			do_get_stats(d, req);
			break;
		default: {
			/* validate_request refused the rest already. */
			Wsgate__V1__Reply reply = WSGATE__V1__REPLY__INIT;
			reply.status = WSGATE__V1__STATUS__INVALID_ARGUMENT;
			reply.error = "request: unknown body";
			control_reply(req, &reply);
		}
		}
	}
	store_group_end(d->store);
}
