/*
 * cluster: the sidecar's link to NATS JetStream in cluster mode
 * (docs/CLUSTER.md): the connection, the stream (created when missing),
 * its epoch, whether the cluster is available, the ordered consumer that
 * feeds the local replica, and a publisher for the records this sidecar
 * accepts.
 *
 * Threads: libnats runs its own threads (reader, flusher, callbacks), and
 * this module more for every blocking libnats call: the cluster thread
 * (stream look-up and creation, subscribing, the availability probe) and
 * a few publisher threads (acked publishes, several in flight). The service
 * thread never blocks in libnats: it hands publishes to the publishers
 * (cluster_publish) and takes stream messages and publish results back
 * (cluster_take_messages, cluster_take_published), each through a
 * mutex-protected list, after the wake function has told it (lws_cancel_
 * service, like the store's done queue).
 *
 * Ownership: messages and publishes belong to the cluster module from
 * hand-over until taken, then to the service thread (cluster_msg_free; a
 * publish is the caller's). cluster_close stops the thread, closes the
 * connection and frees what is still queued.
 */
#ifndef WSGATE_CLUSTER_H
#define WSGATE_CLUSTER_H

#include <stddef.h>
#include <stdint.h>

#include "store.h"

#define CLUSTER_NODE_ID_MAX 64
#define CLUSTER_MSG_ID_MAX  128

struct cluster;

typedef void (*cluster_wake_fn)(void *arg);

struct cluster_config {
	const char *urls;    /* NATS URL[,URL...] */
	const char *node_id; /* checked by cluster_node_id_valid */
	const char *stream;  /* stream name */
	int replicas;
	int64_t max_age_us;   /* the stream's MaxAge: --retention */
	uint64_t start_seq;   /* the replica reads from here (>= 1) */
	const char *epoch;    /* the replica's epoch ("" none yet) */
	cluster_wake_fn wake; /* any thread: messages or results wait */
	void *wake_arg;
};

/* A stream message for the replica, in stream order. */
struct cluster_msg {
	struct cluster_msg *next;
	uint64_t stream_seq;
	const char *subject;
	const void *data;
	size_t len;
	/* Headers (NULL when absent), valid until cluster_msg_free. */
	const char *wsgate_seq;
	const char *wsgate_count;
	const char *wsgate_node;
	const char *msg_id;
	void *nats_msg; /* owns the above */
};

/* Outcome of a publish. */
enum cluster_pub_result {
	CLUSTER_PUB_STORED,   /* acked: stream_seq (duplicate: an earlier send
	                         with this msg id was stored there) */
	CLUSTER_PUB_CONFLICT, /* the subject's last message is last_seq, not
	                         the expected one: nothing stored */
	CLUSTER_PUB_UNKNOWN,  /* no ack (timeout, disconnect): maybe stored */
	CLUSTER_PUB_REFUSED,  /* refused for another reason: not stored */
};

/* One record to publish: filled by the caller, kept by it until it comes
 * back from cluster_take_published. */
struct cluster_pub {
	struct cluster_pub *next;
	char subject[600];
	char msg_id[CLUSTER_MSG_ID_MAX];
	char first_seq[24]; /* Wsgate-Seq */
	char count[24];     /* Wsgate-Count */
	void *body;         /* the caller's */
	size_t body_len;
	uint64_t expect_last; /* 0: the subject must be empty */
	void *owner;          /* the caller's */
	/* Results. */
	enum cluster_pub_result result;
	uint64_t stream_seq;
	int duplicate;
	uint64_t last_seq; /* CONFLICT */
	char error[160];
};

/* [A-Za-z0-9_-], 1..CLUSTER_NODE_ID_MAX bytes. */
int cluster_node_id_valid(const char *id);

/* Connects (or keeps trying in the background: a sidecar starts while
 * NATS is down) and starts the cluster thread. 0, or -1 with a reason. */
int cluster_open(struct cluster **out, const struct cluster_config *cfg,
                 char *err, size_t errlen);
void cluster_close(struct cluster *c);

/* Any thread: 1 when NATS is connected, the stream is ready and the
 * connection has answered a JetStream request since it last went down;
 * else 0 and, in *down_us, for how long (microseconds). */
int cluster_available(struct cluster *c, int64_t *down_us);
/* Any thread: the stream's epoch (its creation time, decimal ns) into
 * buf; "" while unknown. */
void cluster_epoch(struct cluster *c, char buf[STORE_EPOCH_MAX + 1]);
/* This process's Nats-Msg-Id prefix, "<node>:<boot id>". */
const char *cluster_msg_id_prefix(const struct cluster *c);
/* Any thread: --node-id (or the host name). */
const char *cluster_node_id(const struct cluster *c);

/* Service thread: publishes body on subject into the stream without
 * waiting for an ack (buffered; fails at once while NATS is down). */
int cluster_publish_unacked(struct cluster *c, const char *subject,
                            const char *body);
/* Service thread: hands p to a publisher thread. */
void cluster_publish(struct cluster *c, struct cluster_pub *p);
/* Service thread: the publishes done since the last call, in order. */
struct cluster_pub *cluster_take_published(struct cluster *c);
/* Service thread: the stream messages received, in stream order. */
struct cluster_msg *cluster_take_messages(struct cluster *c);
void cluster_msg_free(struct cluster_msg *m);

#endif
