/* event_flood: batches of large events to one user (event_flood.h). */
#include "event_flood.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_clock.h"

#define BUSY_TRIES    200
#define BUSY_PAUSE_MS 10

/* {"n":N,"pad":"xxx..."} of exactly size bytes (size >= 32). */
static char *flood_payload(int n, size_t size)
{
	char *p = malloc(size + 1);
	int head;

	if (!p)
		return NULL;
	head = snprintf(p, size, "{\"n\":%d,\"pad\":\"", n);
	memset(p + head, 'x', size - (size_t)head - 2);
	memcpy(p + size - 2, "\"}", 3);
	return p;
}

int event_flood_batch(wsgate_client *backend, const char *user, int first,
                      int n, size_t size, uint32_t *connections, char *err,
                      size_t errlen)
{
	struct wsgate_event ev[EVENT_FLOOD_BATCH_MAX];
	struct wsgate_event_result res[EVENT_FLOOD_BATCH_MAX];
	char ids[EVENT_FLOOD_BATCH_MAX][300];
	char *payload = NULL;
	enum wsgate_status st = WSGATE_OK;
	int rc = -1;

	if (n < 1 || n > EVENT_FLOOD_BATCH_MAX || size < 32) {
		snprintf(err, errlen, "event_flood_batch: bad n or size");
		return -1;
	}
	payload = flood_payload(first, size);
	if (!payload) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	for (int k = 0; k < n; k++) {
		snprintf(ids[k], sizeof(ids[k]), "%s-%d", user, first + k);
		ev[k] = (struct wsgate_event){
		    .event_id = ids[k],
		    .user_id = user,
		    .thread_id = "t1",
		    .run_id = "r1",
		    .type = WSGATE_AGENT_THINKING,
		    .payload_json = payload,
		    .payload_len = size,
		};
	}
	for (int tries = 0; tries < BUSY_TRIES; tries++) {
		st = wsgate_send_batch(backend, ev, (size_t)n, res);
		if (st != WSGATE_OK ||
		    res[0].status != WSGATE_RESOURCE_EXHAUSTED)
			break;
		test_pause_ms(BUSY_PAUSE_MS); /* busy: the same ids again */
	}
	if (st != WSGATE_OK) {
		snprintf(err, errlen, "batch: %s (%s)", wsgate_status_name(st),
		         wsgate_client_error(backend));
		goto out;
	}
	if (connections)
		*connections = UINT32_MAX;
	for (int k = 0; k < n; k++) {
		if (res[k].status != WSGATE_OK) {
			snprintf(err, errlen, "event %s: %s (%s)", ids[k],
			         wsgate_status_name(res[k].status),
			         res[k].error);
			goto out;
		}
		if (connections && res[k].connections < *connections)
			*connections = res[k].connections;
	}
	rc = 0;
out:
	free(payload);
	return rc;
}
