/*
 * wsgate_coalesce: merges the wsgate_send_event calls that threads of one
 * process make at the same time into SendBatch requests (internal to
 * libwsgate; not installed). A lone caller still sends a plain SendEvent.
 */
#ifndef WSGATE_COALESCE_H
#define WSGATE_COALESCE_H

#include "wsgate.h"

/* How a merged group leaves: one event alone, or a batch of n (res[i] is
 * the result of ev[i]). Both return the request's status. */
typedef enum wsgate_status (*coalesce_send_one_fn)(
    wsgate_client *c, const struct wsgate_event *ev,
    struct wsgate_event_result *res);
typedef enum wsgate_status (*coalesce_send_batch_fn)(
    wsgate_client *c, const struct wsgate_event *ev, size_t n,
    struct wsgate_event_result *res);

struct coalescer;

struct coalescer *coalescer_new(wsgate_client *c, coalesce_send_one_fn one,
                                coalesce_send_batch_fn batch);
/* Every coalescer_send_event must have returned. */
void coalescer_free(struct coalescer *co);
/* Sends ev, alone or with the events other threads are sending right now,
 * and returns its own outcome (also in *res), as wsgate_send_event does.
 * ev must already have been checked (non-NULL, payload given). */
enum wsgate_status coalescer_send_event(struct coalescer *co,
                                        const struct wsgate_event *ev,
                                        struct wsgate_event_result *res);

/* Events waiting for a free request slot right now (for tests and stats). */
size_t coalescer_waiting(struct coalescer *co);

#endif
