/*
 * registry: who is connected, as whom. One registry per sidecar holds every
 * user (by id) and every connection (by id and under its user), each
 * connection's outgoing frame queues, and each user's sequence counter.
 *
 * Threads: the registry and everything reachable from it belong to the
 * libwebsockets service thread. No locks: other threads hand work to that
 * thread (control.c) instead of touching these structs.
 *
 * Ownership: the registry owns users and connections; a user lives as long
 * as the registry (its seq must never go back); a connection lives from
 * registry_add_conn to registry_remove_conn. The transport (the lws wsi)
 * is only referenced.
 *
 * A closing connection (registry_conn_close) is over for everyone at once:
 * it leaves its user's list and every count (registry_conn_count, the
 * user's n_conns, hence --max-conns and --max-conns-per-user) and is no
 * longer visited by registry_foreach_conn, while its socket still gets
 * the close frame (a bounded time, ws_server). Until registry_remove_conn
 * it can still be found by id, so that the outcome of its frames in
 * flight (commits, replay reads) is still recorded against it.
 */
#ifndef WSGATE_REGISTRY_H
#define WSGATE_REGISTRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "frame.h"

#define REGISTRY_CONN_ID_LEN 18 /* "c-" + 16 hex digits */

struct registry;
struct user;

/* One of these per open WebSocket connection. */
struct conn {
	char id[REGISTRY_CONN_ID_LEN + 1];
	struct user *user;      /* authenticated identity, never changes */
	void *transport;        /* struct lws *; opaque here */
	struct conn *user_prev; /* in user->conns */
	struct conn *user_next;
	struct conn *hash_next;     /* in the registry's id table */
	struct frame_queue queue;   /* frames not yet handed to the kernel */
	struct frame_queue held;    /* live events waiting for the catch-up */
	struct frame_queue unacked; /* last events written, for acked rows */
	uint64_t written;           /* frames written */
	uint64_t last_seq_written;  /* highest event seq written */
	/* Catch-up (replay of ?since= and of pending events) runs before
	 * live events: live events with seq > live_from are held until it
	 * ends; those <= live_from only come through the catch-up. */
	uint64_t live_from;    /* user's last seq when it opened */
	uint64_t replay_after; /* catch-up cursor: last seq read */
	/* The client's resume point (0: none). No live event frame with
	 * seq <= since is queued on it: the client has seen those. */
	uint64_t since;
	int has_since;       /* the catch-up replays (since, live_from] */
	int epoch_changed;   /* ?epoch= was not ours: since is 0 */
	int replaying;       /* catch-up not finished */
	int replay_inflight; /* a chunk is being read */
	int64_t opened_at;   /* microseconds since the epoch */
	int64_t expires_at;  /* token exp + leeway: then close 4001 */
	char peer[64];
	int close_code; /* != 0: close with it at next writable */
	char close_reason[64];
};

/* One of these per user id ever seen by this process. */
struct user {
	char *id;
	size_t id_len;
	uint64_t last_seq; /* highest seq assigned; 0 for none */
	/* Cluster mode: the stream seq of the user's last record applied
	 * (0: none seen by this process), and cluster_publish's lane. */
	uint64_t last_stream_seq;
	void *lane;
	struct conn *conns; /* open connections not closing, newest first */
	uint32_t n_conns;
	struct user *hash_next;
};

/* Counters of the service thread, reported by GetStats and /metrics. */
struct registry_counters {
	uint64_t events_accepted;
	uint64_t frames_written;
	uint64_t frames_dropped;
	uint64_t notices_dropped;
	uint64_t client_messages;
	uint64_t events_duplicate;
	uint64_t storage_failures;
};

/* Called when a connection has something to write (queued frame or close
 * request): the server arranges a writable callback. */
typedef void (*registry_ready_fn)(struct conn *c, void *arg);

struct registry *registry_new(size_t queue_limit, registry_ready_fn on_ready,
                              void *arg);
/* Frees every user and connection (call after the server has stopped). */
void registry_free(struct registry *r);

struct registry_counters *registry_counters(struct registry *r);
size_t registry_queue_limit(const struct registry *r);
/* Open connections, not counting those closing. */
uint32_t registry_conn_count(const struct registry *r);
/* Users with at least one open connection. */
uint32_t registry_connected_user_count(const struct registry *r);

/* NULL when absent and !create, or on allocation failure. */
struct user *registry_user(struct registry *r, const char *id, size_t len,
                           bool create);
struct conn *registry_add_conn(struct registry *r, struct user *u,
                               void *transport, const char *peer,
                               int64_t now_us);
/* Frees the connection; its queues must have been emptied (router). */
void registry_remove_conn(struct registry *r, struct conn *c);
/* Open or closing. */
struct conn *registry_find_conn(struct registry *r, const char *id);
/* Every open connection that is not closing. */
void registry_foreach_conn(struct registry *r,
                           void (*fn)(struct conn *c, void *arg), void *arg);

/* Queues f on c. -1 when c is closing, when the queue would pass the queue
 * limit (unless exempt: replays never count against it), or when out of
 * memory; the caller decides what that means. */
int registry_conn_send(struct registry *r, struct conn *c, struct frame *f,
                       int exempt);
/* Asks for c to be closed with code and reason at its next writable; c
 * leaves its user's list and the counts now (see top). */
void registry_conn_close(struct registry *r, struct conn *c, int code,
                         const char *reason);
/* The head of c's queue was handed to the kernel: pop it and count it. */
void registry_conn_written(struct registry *r, struct conn *c);

#endif
