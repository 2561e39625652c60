/* event_flood: batches of large events to one user (event_flood.h). */
#include "event_flood.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_clock.h"

#define BUSY_TRIES            200
#define BUSY_PAUSE_MS         10
#define FLOOD_STALLED_BATCHES 3
#define FLOOD_QUIET_MS        1000
#define FLOOD_POLL_MS         50

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

/* Frames of user's one connection queued in the sidecar and written to
 * its socket. */
static int conn_frames(wsgate_client *backend, const char *user,
                       uint64_t *queued, uint64_t *written, char *err,
                       size_t errlen)
{
	struct wsgate_connection *list = NULL;
	size_t n = 0;
	enum wsgate_status st =
	    wsgate_list_connections(backend, user, &list, &n);

	if (st != WSGATE_OK || n != 1) {
		snprintf(err, errlen, "ListConnections %s: %s, %zu connections",
		         user, wsgate_status_name(st), n);
		free(list);
		return -1;
	}
	*queued = list[0].queued;
	*written = list[0].written;
	free(list);
	return 0;
}

/* Whether the connection's written count stays at written for
 * FLOOD_QUIET_MS (polled); 0 when it moved, -1 on error. */
static int conn_quiet(wsgate_client *backend, const char *user,
                      uint64_t written, char *err, size_t errlen)
{
	int64_t until = test_now_ms() + FLOOD_QUIET_MS;

	while (test_now_ms() < until) {
		uint64_t q, w;

		if (conn_frames(backend, user, &q, &w, err, errlen))
			return -1;
		if (w != written)
			return 0;
		test_pause_ms(FLOOD_POLL_MS);
	}
	return 1;
}

/*
 * Stuck: frames wait, the sidecar wrote nothing during the last
 * FLOOD_STALLED_BATCHES batches, and then nothing for FLOOD_QUIET_MS more.
 * The quiet time is for TCP: the client's window stays shut (its receive
 * buffer was small from the start), but the ACK of the first zero-window
 * probe (about 200 ms later) may still grow the sidecar's send buffer
 * once, to its largest, which lets it write a little more; after that no
 * ACK frees room in it again. (With a buffer shrunk after the handshake,
 * the probes make the socket writable every 200 ms or so, for good.)
 */
int event_flood_until_stuck(wsgate_client *backend, const char *user, int n,
                            size_t size, int max_events, int *sent, char *err,
                            size_t errlen)
{
	uint64_t last_written = UINT64_MAX;
	int stalled = 0;

	*sent = 0;
	for (;;) {
		uint64_t queued, written;

		if (conn_frames(backend, user, &queued, &written, err, errlen))
			return -1;
		stalled =
		    queued > 0 && written == last_written ? stalled + 1 : 0;
		if (stalled >= FLOOD_STALLED_BATCHES) {
			int q = conn_quiet(backend, user, written, err, errlen);

			if (q != 0)
				return q > 0 ? 0 : -1;
			stalled = 0;
		}
		last_written = written;
		if (*sent + n > max_events) {
			snprintf(err, errlen,
			         "%d events of %zu bytes and the connection of "
			         "%s still takes them (%llu written)",
			         *sent, size, user,
			         (unsigned long long)written);
			return -1;
		}
		if (event_flood_batch(backend, user, *sent + 1, n, size, NULL,
		                      err, errlen))
			return -1;
		*sent += n;
	}
}
