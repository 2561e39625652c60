/*
 * control: the NNG rep0 socket backends and wsgatectl send requests to.
 *
 * Many rep0 contexts serve concurrent requesters. On NNG's threads each
 * request is decoded and validated (validate.c); one that is malformed,
 * invalid or a Ping is answered right there. The others are handed to the
 * service thread through a mutex-protected queue, and the wake function
 * (lws_cancel_service) is called when the queue was empty; after each
 * wake-up the service thread must take requests until control_next gives
 * NULL. It takes them with
 * control_next and answers with control_reply, from any thread, whenever
 * it is ready (later: after the event's row is committed).
 *
 * Ownership: control owns each control_request; the holder of one returned
 * by control_next must pass it to control_reply exactly once.
 */
#ifndef WSGATE_CONTROL_H
#define WSGATE_CONTROL_H

#include <stddef.h>
#include <stdint.h>

#include "wsgate.pb-c.h"

struct control;
struct control_request;

typedef void (*control_wake_fn)(void *arg);

struct control_config {
	const char *url;
	int ipc_mode;       /* permissions of an ipc:// socket file */
	size_t max_payload; /* per event */
	size_t max_message; /* largest request accepted (NNG_OPT_RECVMAXSZ) */
	int contexts;       /* concurrent requests in service */
};

int control_open(struct control **out, const struct control_config *cfg,
                 control_wake_fn wake, void *wake_arg, char *err,
                 size_t errlen);
/* Stops serving and frees every request not yet replied. Call from the
 * service thread after its loop has ended. */
void control_close(struct control *ctl);

/* Service thread: the next validated request, or NULL (then the next
 * request will call the wake function again). */
struct control_request *control_next(struct control *ctl);
const Wsgate__V1__Request *
control_request_body(const struct control_request *req);
/* For a SendBatch: NULL when event i is valid, else why not. */
const char *control_request_event_error(const struct control_request *req,
                                        size_t i);
/* Sends reply (its request_id is set here) and releases req. */
void control_reply(struct control_request *req, Wsgate__V1__Reply *reply);

#endif
