/*
 * dispatch: executes validated control requests on the service thread --
 * events go to the router (answered after their commit), or in cluster
 * mode to the cluster stream first,
 * Disconnect/ListConnections/GetStats to the registry -- and answers each one.
 *
 * Threads: service thread only.
 */
#ifndef WSGATE_DISPATCH_H
#define WSGATE_DISPATCH_H

#include <stdint.h>

#include "cluster_publish.h"
#include "cluster_replica.h"
#include "control.h"
#include "registry.h"
#include "router.h"
#include "store.h"

struct reply_wait;

struct dispatch {
	struct registry *reg;
	struct router *router;
	struct store *store;
	struct control *ctl;
	/* Cluster mode: events go to the cluster stream (NULL: one pod). */
	struct cluster_publish *cluster;
	struct cluster_replica *replica; /* its state for GetStats */
	int64_t started_us;
	/* Event requests complete but not yet answered, oldest first. */
	struct reply_wait *answered_head, *answered_tail;
};

/* Takes every request waiting in ctl: answers it, or starts it (events
 * are answered when committed, through dispatch_event_done). */
void dispatch_drain(struct dispatch *d);
/* The router's on_event_done: owner is the waiting request. */
void dispatch_event_done(void *owner, size_t index,
                         const struct router_result *res);
/* Answers the event requests whose events are all done. Held back until
 * then so that the service thread writes the events' frames to the
 * browsers before it spends time on the backends' replies. */
void dispatch_send_replies(struct dispatch *d);

#endif
