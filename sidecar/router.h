/*
 * router: the one way an event reaches browsers. It assigns the user's next
 * seq, builds the event's frame once, and queues it on every open
 * connection of that user and of no other; with none open it keeps the
 * event pending for the user's next connections.
 *
 * Threads: service thread only (it works on the registry).
 */
#ifndef WSGATE_ROUTER_H
#define WSGATE_ROUTER_H

#include <stdint.h>

#include "registry.h"
#include "wsgate.pb-c.h"

enum router_status {
	ROUTER_OK,
	ROUTER_EXHAUSTED, /* the user's pending events are at the limit */
	ROUTER_NO_MEMORY,
};

struct router_result {
	enum router_status status;
	uint64_t seq;
	uint32_t connections; /* live connections it was queued to */
	int retained;         /* kept pending: the user had no connection */
};

/* ev must have passed validate_event. accepted_us stamps the frame's ts. */
struct router_result router_deliver_event(struct registry *r,
					  const Wsgate__V1__Event *ev,
					  int64_t accepted_us);

/* A connection of c->user has opened: queue its "connected" frame, then
 * the user's pending events in seq order. -1 on allocation failure. */
int router_conn_opened(struct registry *r, struct conn *c);

#endif
