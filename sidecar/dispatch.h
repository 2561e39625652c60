/*
 * dispatch: executes validated control requests on the service thread --
 * events go to the router (answered after their commit),
 * Disconnect/ListConnections/GetStats to the registry -- and answers each one.
 *
 * Threads: service thread only.
 */
#ifndef WSGATE_DISPATCH_H
#define WSGATE_DISPATCH_H

#include <stdint.h>

#include "control.h"
#include "registry.h"
#include "router.h"
#include "store.h"

struct dispatch {
	struct registry *reg;
	struct router *router;
	struct store *store;
	struct control *ctl;
	int64_t started_us;
};

/* Takes every request waiting in ctl: answers it, or starts it (events
 * are answered when committed, through dispatch_event_done). */
void dispatch_drain(struct dispatch *d);
/* The router's on_event_done: owner is the waiting request. */
void dispatch_event_done(void *owner, size_t index,
                         const struct router_result *res);

#endif
