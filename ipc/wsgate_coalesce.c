/*
 * wsgate_coalesce: group commit on the backend's side. Every sidecar
 * request costs a write, a wake-up of the sidecar and a reply whatever it
 * carries, so when threads of one process call
 * wsgate_send_event at the same time their events leave together as one
 * SendBatch (the sidecar validates, sequences and answers each event of a
 * batch on its own, so nobody's outcome changes by travelling with others).
 *
 * Up to COALESCE_IN_FLIGHT requests travel at once; a caller that finds
 * fewer in flight becomes a sender at once and takes every waiting event
 * (its own included, oldest first, up to COALESCE_MAX_EVENTS and
 * COALESCE_MAX_BYTES of payload). So a lone caller sends immediately, and
 * events only wait while the link is busy anyway. Each caller returns when
 * its own event's result is in.
 *
 * Threads: any; everything below is guarded by lk. A waiter lives on its
 * caller's stack until done is set under lk by the thread that sent it.
 */
#include "wsgate_coalesce.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* Measured with libwsgate's own transport (bench, single events): 8 in
 * flight gave +29% at 8 calling threads but -25% at 32, where batches
 * grow; 2 is kept. */
#define COALESCE_IN_FLIGHT  2
#define COALESCE_MAX_EVENTS 128
#define COALESCE_MAX_BYTES  (1024 * 1024)

struct coalesce_waiter {
	const struct wsgate_event *ev;
	struct wsgate_event_result *res;
	enum wsgate_status status; /* valid once done */
	bool done;
	struct coalesce_waiter *next;
};

struct coalescer {
	wsgate_client *client;
	coalesce_send_one_fn send_one;
	coalesce_send_batch_fn send_batch;
	pthread_mutex_t lk;
	pthread_cond_t cv; /* a group came back: waiters look again */
	struct coalesce_waiter *head, *tail; /* waiting, oldest first */
	unsigned in_flight;
};

struct coalescer *coalescer_new(wsgate_client *c, coalesce_send_one_fn one,
                                coalesce_send_batch_fn batch)
{
	struct coalescer *co = calloc(1, sizeof(*co));
	if (co == NULL)
		return NULL;
	co->client = c;
	co->send_one = one;
	co->send_batch = batch;
	pthread_mutex_init(&co->lk, NULL);
	pthread_cond_init(&co->cv, NULL);
	return co;
}

void coalescer_free(struct coalescer *co)
{
	if (co == NULL)
		return;
	pthread_mutex_destroy(&co->lk);
	pthread_cond_destroy(&co->cv);
	free(co);
}

/* Unlinks (lk held) the oldest waiters that fit in one request. */
static size_t take_group(struct coalescer *co, struct coalesce_waiter **group)
{
	size_t n = 0, bytes = 0;
	while (co->head && n < COALESCE_MAX_EVENTS) {
		size_t len = co->head->ev->payload_len;
		if (n > 0 && bytes + len > COALESCE_MAX_BYTES)
			break;
		bytes += len;
		group[n++] = co->head;
		co->head = co->head->next;
	}
	if (co->head == NULL)
		co->tail = NULL;
	return n;
}

/* Sends a group (lk not held) and fills in each waiter's result. */
static void send_group(struct coalescer *co, struct coalesce_waiter **group,
                       size_t n)
{
	if (n == 1) {
		group[0]->status =
		    co->send_one(co->client, group[0]->ev, group[0]->res);
		return;
	}
	/* On the heap: callers' threads may have small stacks. */
	struct wsgate_event *evs = malloc(n * sizeof(*evs));
	struct wsgate_event_result *res = malloc(n * sizeof(*res));
	if (evs == NULL || res == NULL) {
		for (size_t i = 0; i < n; i++) {
			memset(group[i]->res, 0, sizeof(*group[i]->res));
			group[i]->res->status = WSGATE_ERR_TRANSPORT;
			strcpy(group[i]->res->error, "out of memory");
			group[i]->status = WSGATE_ERR_TRANSPORT;
		}
		free(evs);
		free(res);
		return;
	}
	for (size_t i = 0; i < n; i++)
		evs[i] = *group[i]->ev;
	enum wsgate_status st = co->send_batch(co->client, evs, n, res);
	for (size_t i = 0; i < n; i++) {
		*group[i]->res = res[i];
		/* As alone: an event's status is its own when the batch was
		 * answered, the request's when it was not. */
		group[i]->status = st == WSGATE_OK ? res[i].status : st;
	}
	free(evs);
	free(res);
}

enum wsgate_status coalescer_send_event(struct coalescer *co,
                                        const struct wsgate_event *ev,
                                        struct wsgate_event_result *res)
{
	struct coalesce_waiter me = {.ev = ev, .res = res};
	struct coalesce_waiter *group[COALESCE_MAX_EVENTS];

	pthread_mutex_lock(&co->lk);
	if (co->tail)
		co->tail->next = &me;
	else
		co->head = &me;
	co->tail = &me;
	while (!me.done) {
		if (co->in_flight >= COALESCE_IN_FLIGHT || co->head == NULL) {
			pthread_cond_wait(&co->cv, &co->lk);
			continue;
		}
		size_t n = take_group(co, group);
		co->in_flight++;
		pthread_mutex_unlock(&co->lk);
		send_group(co, group, n);
		pthread_mutex_lock(&co->lk);
		co->in_flight--;
		for (size_t i = 0; i < n; i++)
			group[i]->done = true;
		pthread_cond_broadcast(&co->cv);
	}
	pthread_mutex_unlock(&co->lk);
	return me.status;
}

size_t coalescer_waiting(struct coalescer *co)
{
	size_t n = 0;
	pthread_mutex_lock(&co->lk);
	for (struct coalesce_waiter *w = co->head; w; w = w->next)
		n++;
	pthread_mutex_unlock(&co->lk);
	return n;
}
