/*
 * event_flood: large events sent to one user through libwsgate, to fill
 * the buffers of a connection that does not read (slow-consumer closes,
 * closes that cannot be written).
 */
#ifndef WSGATE_TEST_EVENT_FLOOD_H
#define WSGATE_TEST_EVENT_FLOOD_H

#include <stddef.h>
#include <stdint.h>

#include "wsgate.h"

#define EVENT_FLOOD_BATCH_MAX 64

/* Sends n (<= EVENT_FLOOD_BATCH_MAX) events of size bytes of JSON each to
 * user in one batch, ids "<user>-<first + i>", retrying the same ids while
 * the sidecar answers "busy" (bounded). *connections (if not NULL) gets the
 * fewest connections any of them was queued to. Returns 0, or -1 with a
 * reason in err. */
int event_flood_batch(wsgate_client *backend, const char *user, int first,
                      int n, size_t size, uint32_t *connections, char *err,
                      size_t errlen);

/* Sends batches of n events of size bytes to user until the user's one
 * connection, whose client reads nothing, is stuck: frames wait for it
 * and the sidecar has written it nothing for a while (ListConnections
 * says; see event_flood.c for how long). The client must have a small
 * receive buffer from the start (ws_client_connect_rcvbuf). *sent gets
 * how many were sent, at most max_events. Returns 0, or -1 with a reason
 * in err. */
int event_flood_until_stuck(wsgate_client *backend, const char *user, int n,
                            size_t size, int max_events, int *sent, char *err,
                            size_t errlen);

#endif
