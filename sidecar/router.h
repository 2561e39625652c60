/*
 * router: the one way an event reaches browsers, and the record of it.
 *
 * Accepting an event: check its event_id against the user's earlier ones
 * (dedup), assign the user's next seq, build its frame once, and submit it
 * to the store together with a `queued` row for each connection of that
 * user open right now (none: the event is pending for the user's next
 * connections). Only when the store has committed all of that does the
 * frame go to those connections, and the backend get its answer. A repeat
 * of an event whose commit is not done yet waits for it and gets its
 * outcome: OK with the first seq, or the same failure (then the id is
 * free again).
 *
 * A new connection first gets `connected` (with the epoch, the name of the
 * history the seqs belong to), then its catch-up -- the events with
 * seq > since and the user's pending ones (a client resuming from another
 * epoch gets resume_failed and every retained event), read from the store in
 * chunks as the socket drains -- then live events, which wait in `held`
 * meanwhile. A live event frame never goes to a connection that resumed
 * from a seq at or above the event's (the client has seen it, e.g. on
 * another pod): that connection gets no queued row for it. Every frame of an
 * event that leaves has a committed queued row naming its connection; outcome
 * rows (written, dropped, acked) follow without the event loop waiting for
 * them.
 *
 * Isolation invariant: an event's frame is only queued on connections
 * found through the event's own user, whose identity was fixed by its
 * token; the audit rows take user_id from the event and conn_user_id from
 * the connection.
 *
 * Threads: service thread only (router_set_epoch included: another
 * thread hands the new epoch to the service thread first).
 */
#ifndef WSGATE_ROUTER_H
#define WSGATE_ROUTER_H

#include <stddef.h>
#include <stdint.h>

#include "dedup.h"
#include "registry.h"
#include "store.h"
#include "wsgate.pb-c.h"

enum router_status {
	ROUTER_OK,          /* seq assigned; commit pending or done */
	ROUTER_EXHAUSTED,   /* the store is behind: retry later */
	ROUTER_FAILED,      /* out of memory, or the store could not commit */
	ROUTER_UNAVAILABLE, /* cluster mode: NATS unreachable, retry later */
};

struct router_result {
	enum router_status status;
	const char *error; /* when not OK */
	uint64_t seq;
	uint32_t connections; /* live connections it was queued to */
	int retained;         /* pending: the user had no connection */
	int duplicate;        /* event_id seen before: its first seq */
};

/* Repeats waiting for their first event's commit, at most; past it a
 * repeat gets ROUTER_EXHAUSTED. Each holds its request until then. */
#define ROUTER_MAX_PARKED 65536

/* An accepted event's outcome, once its commit is done. */
typedef void (*router_event_done_fn)(void *owner, size_t index,
                                     const struct router_result *res);

#define ROUTER_EPOCH_MAX 32 /* bytes of an epoch */

struct router_config {
	const char *epoch; /* the first epoch (router_set_epoch) */
	struct registry *registry;
	struct store *store;
	struct dedup *dedup;
	uint64_t max_backlog;  /* store jobs in flight before EXHAUSTED */
	uint32_t replay_chunk; /* events read per catch-up step */
	int audit;             /* 0: no delivery rows (--audit off) */
	router_event_done_fn on_event_done;
	/* Cluster mode: an event frame of user u with seq was written to
	 * one of its connections (NULL: not wanted). Set, a catch-up also
	 * leaves out pending events with seq <= since: a pending event here
	 * may have reached the client through another pod. */
	void (*on_event_written)(void *arg, struct user *u, uint64_t seq);
	void *written_arg;
};

struct router;

/* NULL when out of memory or cfg->epoch is not valid (router_set_epoch). */
struct router *router_new(const struct router_config *cfg);
void router_free(struct router *rt);

/* Replaces the epoch that `connected` frames carry and that ?epoch= is
 * compared with: 1-ROUTER_EPOCH_MAX bytes (single pod: the database's,
 * store_epoch; cluster mode: the stream's). Connections already open keep
 * theirs. -1 (nothing changed) when epoch is empty or too long. */
int router_set_epoch(struct router *rt, const char *epoch);
const char *router_epoch(const struct router *rt);

/* Where a connection resumes from, as its handshake said. */
struct router_resume {
	int has_since;
	uint64_t since;
	/* ?epoch=: "" when absent. Only read with a since: another epoch
	 * than ours means since names another history. */
	char epoch[ROUTER_EPOCH_MAX + 1];
};

/* Returns 1 when *res is final now (repeats of committed events,
 * refusals); 0 when the event was submitted, or is a repeat waiting for
 * the commit of its first, and on_event_done(owner, index) will follow. */
int router_accept_event(struct router *rt, const Wsgate__V1__Event *ev,
                        int64_t accepted_us, void *owner, size_t index,
                        struct router_result *res);
/*
 * Cluster mode: an event of the stream (any node's, this one's included)
 * whose seq the stream fixed. Applied like an accepted event (rows, queued
 * rows for this sidecar's connections of the user, commit, then frames),
 * in stream order; copies what it keeps. owner (NULL: nobody) gets
 * on_event_done after the commit. Returns 1 when the user already has
 * seq (applied before: nothing done, owner not called), 0 when submitted,
 * -1 when out of memory.
 */
int router_apply_event(struct router *rt, const Wsgate__V1__Event *ev,
                       uint64_t seq, int64_t accepted_us, const char *node_id,
                       void *owner, size_t index);
/* Cluster mode: sets cfg.on_event_written and its arg. */
void router_set_written(struct router *rt,
                        void (*fn)(void *arg, struct user *u, uint64_t seq),
                        void *arg);
/* The dedup half of router_accept_event: -1 when ev's event_id is new;
 * else as router_accept_event (1: *res final, a duplicate or a refused
 * repeat; 0: a repeat parked until its first's commit). */
int router_known_event(struct router *rt, const Wsgate__V1__Event *ev,
                       void *owner, size_t index, struct router_result *res);
/* Takes the store's finished jobs: sends committed events' frames,
 * answers their owners, continues catch-ups. Call on every wake-up. */
void router_handle_done(struct router *rt);

/* A connection opened: queue `connected` and start its catch-up. */
int router_conn_opened(struct router *rt, struct conn *c,
                       const struct router_resume *from);
/* The head of c's queue was handed to the kernel. */
void router_conn_written(struct router *rt, struct conn *c);
/* The client acked every event up to seq. */
void router_conn_acked(struct router *rt, struct conn *c, uint64_t seq);
/* c is going: its unsent events get `dropped` rows. Call before
 * registry_remove_conn. */
void router_conn_closing(struct router *rt, struct conn *c);

#endif
