/*
 * cluster_replica: this sidecar's copy of the whole cluster stream in its
 * SQLite database (docs/CLUSTER.md "Every sidecar keeps a replica").
 *
 * Each stream message, in stream order, is applied once: a record of
 * wsgate.ev.<hex user> becomes the router's event jobs (rows, queued rows
 * for this sidecar's connections of the user, commit, then frames), with
 * the seqs the record carries; a mark of wsgate.mk.<hex user> (body: a
 * decimal seq) ends the user's pending events up to it. It also keeps
 * the router's epoch (what `connected` says) at the stream's. After each
 * message a STORE_STREAM_POS job records its stream seq: the store
 * commits jobs in order, so a restart (even after kill -9) resumes after
 * the last message whose rows are committed, and an event already there
 * (a record split across two commits) is skipped by its seq.
 *
 * Threads: service thread only.
 */
#ifndef WSGATE_CLUSTER_REPLICA_H
#define WSGATE_CLUSTER_REPLICA_H

#include <stdint.h>

#include "cluster.h"
#include "cluster_publish.h"
#include "registry.h"
#include "router.h"
#include "store.h"

struct cluster_replica;

struct cluster_replica_config {
	struct cluster *cluster;
	struct cluster_publish *publish; /* owners of our own records */
	struct registry *registry;
	struct router *router;
	struct store *store;
	uint64_t position; /* last stream seq applied (store_stream_seq) */
	const char *epoch; /* the epoch it belongs to ("": none yet) */
};

struct cluster_replica *
cluster_replica_new(const struct cluster_replica_config *cfg);
void cluster_replica_free(struct cluster_replica *r);
/* Every wake-up: applies the stream messages received. */
void cluster_replica_apply(struct cluster_replica *r);
/* The last stream seq applied (submitted to the store). */
uint64_t cluster_replica_position(const struct cluster_replica *r);

/* What GetStats and /metrics report of cluster mode. */
struct cluster_stats {
	const char *node_id;     /* valid while the cluster is open */
	int available;           /* new events can be published */
	uint64_t down_ms;        /* unavailable for so long; 0 when available */
	uint64_t position;       /* cluster_replica_position */
	uint64_t publish_queued; /* cluster_publish_queued */
	uint64_t unavailable_answers; /* cluster_publish_unavailable_.. */
};

/* The replica's position with the state of its link and lanes. */
void cluster_replica_stats(const struct cluster_replica *r,
                           struct cluster_stats *out);

#endif
