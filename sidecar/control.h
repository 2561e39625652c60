/*
 * control: the rep0 side of the backend control protocol, served on the
 * service thread's loop through sp_server (backends and wsgatectl dial it
 * with NNG req0).
 *
 * Each request is decoded and validated as it is read (validate.c); one
 * that is malformed, invalid or a Ping is answered right there. The others
 * are queued, and on_ready runs once before the loop next waits; it must
 * take requests with control_next until that gives NULL, and answer each
 * with control_reply whenever it is ready (later: after the event's row is
 * committed). Requests read in one loop iteration, from every backend,
 * reach on_ready together, so that their events share a commit.
 *
 * A backend connection with max_in_service requests unanswered, or with
 * replies it does not read piling up, is not read until that clears: a
 * backend that never reads its replies holds only its own connection.
 *
 * Threads: the service thread only.
 *
 * Ownership: control owns each control_request; the holder of one returned
 * by control_next must pass it to control_reply exactly once.
 */
#ifndef WSGATE_CONTROL_H
#define WSGATE_CONTROL_H

#include <stddef.h>
#include <ev.h>
#include <stdint.h>

#include "wsgate.pb-c.h"

struct control;
struct control_request;

typedef void (*control_ready_fn)(void *arg);

struct control_config {
	const char *url;
	int ipc_mode;       /* permissions of the socket file */
	size_t max_payload; /* per event */
	size_t max_message; /* largest request; a longer one closes its pipe */
	unsigned max_in_service; /* unanswered requests per connection */
};

int control_open(struct control **out, struct ev_loop *loop,
                 const struct control_config *cfg, control_ready_fn on_ready,
                 void *ready_arg, char *err, size_t errlen);
/* Sends what the kernel takes of the replies still kept, closes every
 * connection and frees every request not taken by control_next. Requests
 * taken and not yet answered must be answered first. */
void control_close(struct control *ctl);

/* The next validated request, or NULL (then the next request will run
 * on_ready again). */
struct control_request *control_next(struct control *ctl);
const Wsgate__V1__Request *
control_request_body(const struct control_request *req);
/* For a SendBatch: NULL when event i is valid, else why not. */
const char *control_request_event_error(const struct control_request *req,
                                        size_t i);
/* Sends reply (its request_id is set here) and releases req. */
void control_reply(struct control_request *req, Wsgate__V1__Reply *reply);

#endif
