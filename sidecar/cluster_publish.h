/*
 * cluster_publish: how this sidecar, in cluster mode, turns accepted events
 * into records of the cluster stream with a global, dense per-user seq
 * (docs/CLUSTER.md "Assigning a global, dense per-user seq").
 *
 * One lane per user: at most one record of the user in flight from this
 * sidecar. The events waiting in the lane (up to LANE_RECORD_MAX, about
 * 900 KiB) become one record with Wsgate-Seq = the replica's last seq of
 * the user + 1, published with the expectation that the user's subject
 * still ends at the replica's last record of the user (or is empty), so
 * that two sidecars never give out the same seq. A conflict waits for the
 * replica to apply what the other sidecar published, checks the events
 * against the dedup map again and publishes anew. A publish without an
 * ack is an unknown outcome: its events are answered UNAVAILABLE ("may
 * have been stored"), and the record is sent again, same Nats-Msg-Id,
 * once the cluster is back, so that the lane resolves either way. While
 * the cluster is down nothing waits for it: events queued behind a record
 * and those of a record refused by a conflict (never stored) are answered
 * UNAVAILABLE at once.
 *
 * An event's OK comes when the local replica has applied and committed
 * its record (the replica hands the owners to the router's jobs:
 * cluster_publish_owner), so the reply, the dedup map and the frames are
 * those of the single pod, fed by the stream.
 *
 * Threads: service thread only.
 */
#ifndef WSGATE_CLUSTER_PUBLISH_H
#define WSGATE_CLUSTER_PUBLISH_H

#include <stddef.h>
#include <stdint.h>

#include "cluster.h"
#include "dedup.h"
#include "registry.h"
#include "router.h"
#include "wsgate.pb-c.h"

struct cluster_publish;

struct cluster_publish_config {
	struct cluster *cluster;
	struct router *router; /* its dedup check (router_known_event) */
	struct registry *registry;
	struct dedup *dedup;
	router_event_done_fn on_event_done;
	size_t max_queued; /* events waiting in all lanes; then EXHAUSTED */
};

struct cluster_publish *
cluster_publish_new(const struct cluster_publish_config *cfg);
/* After cluster_close (no publish is in the cluster thread's hands). */
void cluster_publish_free(struct cluster_publish *p);

/* As router_accept_event: 1 when *res is final now (duplicates,
 * UNAVAILABLE, refusals), 0 when on_event_done(owner, index) follows. ev
 * must live until then. */
int cluster_publish_accept(struct cluster_publish *p,
                           const Wsgate__V1__Event *ev, int64_t accepted_us,
                           void *owner, size_t index,
                           struct router_result *res);

/* The replica is applying the record msg_id of user u: when it is this
 * sidecar's record in flight, event i's owner (NULL: none) and index. */
void *cluster_publish_owner(struct cluster_publish *p, struct user *u,
                            const char *msg_id, size_t i, size_t *index);
/* The replica could not apply the event of an owner it took (out of
 * memory, or its seq already there): the owner gets a failure. */
void cluster_publish_unapplied(struct cluster_publish *p, void *owner,
                               size_t index);
/* The replica submitted every event of that record (their dedup entries
 * exist): the lane moves on. */
void cluster_publish_applied(struct cluster_publish *p, struct user *u,
                             const char *msg_id);

/* The router's on_event_written (arg: p): frames up to seq of u reached
 * a connection here, so no pod holds them as pending any more: a mark
 * wsgate.mk.<hex user> "seq" goes to the stream (one per new highest seq
 * of the user; lost while NATS is down: then other pods may deliver
 * those events again to a new connection, never twice to one). */
void cluster_publish_mark(void *p, struct user *u, uint64_t seq);
/* Every wake-up, after the replica: publish results, lanes waiting for the
 * replica to reach a stream seq (position: the last one applied) or for
 * the cluster to come back. */
void cluster_publish_handle(struct cluster_publish *p, uint64_t position);
/* Shutdown, right after cluster_close: every event still waiting is
 * answered UNAVAILABLE, and from then on nothing reaches the cluster (a
 * mark is dropped, an event is answered UNAVAILABLE, handle does
 * nothing). */
void cluster_publish_shutdown(struct cluster_publish *p);

/* Events waiting in the lanes, not yet in a record (GetStats). */
uint64_t cluster_publish_queued(const struct cluster_publish *p);
/* Events answered UNAVAILABLE since the start (GetStats). */
uint64_t cluster_publish_unavailable_answers(const struct cluster_publish *p);

#endif
