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

#endif
