/*
 * dedup: the event ids seen per user, for idempotency. A repeated event_id
 * of the same user maps to the seq of its first acceptance for as long as
 * the event is retained; entries older than the retention are forgotten in
 * acceptance order.
 *
 * Memory: one entry per retained event (about 64 bytes plus both ids);
 * loaded from the database at start.
 *
 * Threads: service thread only.
 */
#ifndef WSGATE_DEDUP_H
#define WSGATE_DEDUP_H

#include <stddef.h>
#include <stdint.h>

struct dedup;

struct dedup *dedup_new(void);
void dedup_free(struct dedup *d);
/* 1 and *seq when (user_id, event_id) was seen, else 0. */
int dedup_find(struct dedup *d, const char *user_id, const char *event_id,
               uint64_t *seq);
/* -1 on allocation failure. */
int dedup_add(struct dedup *d, const char *user_id, const char *event_id,
              uint64_t seq, int64_t accepted_at);
/* Forgets one entry (an event whose row could not be committed). */
void dedup_remove(struct dedup *d, const char *user_id, const char *event_id);
/* Forgets entries accepted before `before` (microseconds). */
void dedup_prune(struct dedup *d, int64_t before);
size_t dedup_count(const struct dedup *d);

#endif
