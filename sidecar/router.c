/*
 * router: event fan-out to exactly one user's connections (see router.h).
 *
 * Isolation invariant: a frame built from event E is only ever queued on
 * connections found through E's own user (registry_user(E.user_id)), whose
 * identity was fixed by its token at the handshake. The assert in
 * router_deliver_event states it.
 */
#include "router.h"

#include <assert.h>
#include <string.h>

#include "validate.h"

struct router_result router_deliver_event(struct registry *r,
					  const Wsgate__V1__Event *ev,
					  int64_t accepted_us)
{
	struct router_result res = {0};
	size_t ulen = strlen(ev->user_id);
	struct user *u = registry_user(r, ev->user_id, ulen, true);
	if (!u) {
		res.status = ROUTER_NO_MEMORY;
		return res;
	}
	/* With nobody to take it, the event waits in memory: bound that so a
	 * backend streaming to an absent user cannot grow us without limit. */
	size_t plen = ev->payload_json.len;
	if (u->n_conns == 0 &&
	    u->pending.bytes + plen > registry_queue_limit(r)) {
		res.status = ROUTER_EXHAUSTED;
		return res;
	}

	struct frame_event fe = {
		.type = validate_event_type_name(ev),
		.seq = u->last_seq + 1,
		.event_id = ev->event_id,
		.event_id_len = strlen(ev->event_id),
		.user_id = u->id,
		.user_id_len = u->id_len,
		.thread_id = ev->thread_id,
		.thread_id_len = strlen(ev->thread_id),
		.run_id = ev->run_id,
		.run_id_len = strlen(ev->run_id),
		.ts_us = accepted_us,
		.payload = ev->payload_json.data,
		.payload_len = plen,
	};
	struct frame *f = frame_build_event(&fe);
	if (!f) {
		res.status = ROUTER_NO_MEMORY;
		return res;
	}
	if (u->n_conns == 0) {
		if (frame_queue_push(&u->pending, f)) {
			frame_unref(f);
			res.status = ROUTER_NO_MEMORY;
			return res;
		}
		res.retained = 1;
	}
	u->last_seq = fe.seq;
	registry_counters(r)->events_accepted++;
	for (struct conn *c = u->conns; c; c = c->user_next) {
		assert(c->user == u);
		if (registry_conn_send(r, c, f) == 0)
			res.connections++;
	}
	frame_unref(f);
	res.status = ROUTER_OK;
	res.seq = fe.seq;
	return res;
}

int router_conn_opened(struct registry *r, struct conn *c)
{
	struct user *u = c->user;
	struct frame *f = frame_build_connected(c->id, u->id, u->last_seq);
	if (!f)
		return -1;
	int rc = registry_conn_send(r, c, f);
	frame_unref(f);
	for (uint32_t i = 0; rc == 0 && i < u->pending.len; i++)
		rc = registry_conn_send(r, c, frame_queue_at(&u->pending, i));
	return rc;
}
