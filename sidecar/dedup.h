/*
 * dedup: the event ids seen per user, for idempotency. A repeated event_id
 * of the same user maps to the seq of its first acceptance for as long as
 * the event is retained; entries older than the retention are forgotten in
 * acceptance order.
 *
 * An entry is pending from the event's acceptance until its commit is
 * done: a repeat that arrives meanwhile is parked on it (owner and index,
 * as the router's on_event_done takes them) and gets the event's outcome
 * when the commit is settled. A failed commit forgets the entry, so that
 * the id is free again.
 *
 * Memory: one entry per retained event (about 64 bytes plus both ids), one
 * small record per parked repeat; loaded from the database at start.
 *
 * Threads: service thread only.
 */
#ifndef WSGATE_DEDUP_H
#define WSGATE_DEDUP_H

#include <stddef.h>
#include <stdint.h>

enum dedup_state {
	DEDUP_NEW,       /* not seen, or its commit failed */
	DEDUP_PENDING,   /* accepted, its commit not yet done */
	DEDUP_COMMITTED, /* its row is committed */
};

/* Called once per parked repeat when its event's commit is settled. */
typedef void (*dedup_repeat_fn)(void *arg, void *owner, size_t index);

struct dedup;

struct dedup *dedup_new(void);
/* Parked repeats still there are dropped unanswered: settle every pending
 * entry first. */
void dedup_free(struct dedup *d);
/* What is known of (user_id, event_id); *seq is set unless DEDUP_NEW. */
enum dedup_state dedup_find(struct dedup *d, const char *user_id,
                            const char *event_id, uint64_t *seq);
/* Adds an entry in state PENDING (just accepted) or COMMITTED (loaded from
 * the database); the id must be DEDUP_NEW. -1 on allocation failure. */
int dedup_add(struct dedup *d, const char *user_id, const char *event_id,
              uint64_t seq, int64_t accepted_at, enum dedup_state state);
/* Parks a repeat on the pending entry of (user_id, event_id). -1 when it
 * is not pending or on allocation failure. */
int dedup_park(struct dedup *d, const char *user_id, const char *event_id,
               void *owner, size_t index);
/* The pending event's commit is done: committed, its entry becomes
 * COMMITTED; else it is forgotten. Then each repeat parked on it, in
 * arrival order, goes to fn(arg, owner, index). */
void dedup_settle(struct dedup *d, const char *user_id, const char *event_id,
                  int committed, dedup_repeat_fn fn, void *arg);
/* Forgets entries accepted before `before` (microseconds), oldest first,
 * up to the first pending one: that one, and those after it, wait until
 * a later prune. */
void dedup_prune(struct dedup *d, int64_t before);
size_t dedup_count(const struct dedup *d);
/* Repeats parked now, on all entries. */
size_t dedup_parked(const struct dedup *d);

#endif
