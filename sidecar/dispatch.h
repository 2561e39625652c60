/*
 * dispatch: executes validated control requests on the service thread --
 * events go to the router, Disconnect/ListConnections/GetStats to the
 * registry -- and answers each one.
 *
 * Threads: service thread only.
 */
#ifndef WSGATE_DISPATCH_H
#define WSGATE_DISPATCH_H

#include <stdint.h>

#include "control.h"
#include "registry.h"

struct dispatch {
	struct registry *reg;
	struct control *ctl;
	int64_t started_us;
};

/* Answers every request waiting in ctl. */
void dispatch_drain(struct dispatch *d);

#endif
