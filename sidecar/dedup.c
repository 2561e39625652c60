/*
 * dedup: (user_id, event_id) -> seq, a chained hash table whose entries are
 * also linked in acceptance order so that retention drops the oldest first;
 * a pending entry carries the list of repeats parked on it (see dedup.h).
 */
#include "dedup.h"

#include <stdlib.h>
#include <string.h>

#include "hash.h"

/* One per repeat waiting for a pending entry's outcome. */
struct repeat {
	struct repeat *next; /* newest first */
	void *owner;
	size_t index;
};

struct entry {
	struct entry *hash_next;
	struct entry *older, *newer; /* acceptance order */
	uint64_t hash;
	uint64_t seq;
	int64_t accepted_at;
	struct repeat *parked; /* only while pending */
	uint32_t key_len;
	uint32_t state; /* DEDUP_PENDING or DEDUP_COMMITTED */
	char key[];     /* user_id '\0' event_id */
};

struct dedup {
	struct entry **buckets;
	size_t mask;
	size_t n;
	size_t parked;
	struct entry *oldest, *newest;
};

/* Longest key looked up; longer than any two valid ids (validate.h:
 * VALIDATE_MAX_ID, VALIDATE_MAX_EVENT_ID). */
#define KEY_MAX 600

/* Writes user_id '\0' event_id into buf (NULL: only measure). */
static size_t key_make(char *buf, const char *user_id, const char *event_id)
{
	size_t ul = strlen(user_id), el = strlen(event_id);
	if (buf) {
		memcpy(buf, user_id, ul + 1);
		memcpy(buf + ul + 1, event_id, el);
	}
	return ul + 1 + el;
}

struct dedup *dedup_new(void)
{
	struct dedup *d = calloc(1, sizeof(*d));
	if (!d)
		return NULL;
	d->mask = 1023;
	d->buckets = calloc(d->mask + 1, sizeof(*d->buckets));
	if (!d->buckets) {
		free(d);
		return NULL;
	}
	return d;
}

static void repeats_free(struct repeat *r)
{
	while (r) {
		struct repeat *next = r->next;
		free(r);
		r = next;
	}
}

void dedup_free(struct dedup *d)
{
	if (!d)
		return;
	struct entry *e = d->oldest;
	while (e) {
		struct entry *next = e->newer;
		repeats_free(e->parked);
		free(e);
		e = next;
	}
	free(d->buckets);
	free(d);
}

static struct entry **find_slot(struct dedup *d, const char *key, size_t len,
                                uint64_t h)
{
	struct entry **pp = &d->buckets[h & d->mask];
	while (*pp && ((*pp)->hash != h || (*pp)->key_len != len ||
	               memcmp((*pp)->key, key, len) != 0))
		pp = &(*pp)->hash_next;
	return pp;
}

/* The entry of (user_id, event_id), or NULL. */
static struct entry *entry_lookup(struct dedup *d, const char *user_id,
                                  const char *event_id)
{
	char key[KEY_MAX];
	if (key_make(NULL, user_id, event_id) > sizeof(key))
		return NULL;
	size_t len = key_make(key, user_id, event_id);
	return *find_slot(d, key, len, hash_bytes(key, len));
}

enum dedup_state dedup_find(struct dedup *d, const char *user_id,
                            const char *event_id, uint64_t *seq)
{
	struct entry *e = entry_lookup(d, user_id, event_id);
	if (!e)
		return DEDUP_NEW;
	*seq = e->seq;
	return (enum dedup_state)e->state;
}

static void grow(struct dedup *d)
{
	size_t nmask = d->mask * 2 + 1;
	struct entry **nb = calloc(nmask + 1, sizeof(*nb));
	if (!nb)
		return; /* longer chains, still correct */
	for (struct entry *e = d->oldest; e; e = e->newer) {
		e->hash_next = nb[e->hash & nmask];
		nb[e->hash & nmask] = e;
	}
	free(d->buckets);
	d->buckets = nb;
	d->mask = nmask;
}

int dedup_add(struct dedup *d, const char *user_id, const char *event_id,
              uint64_t seq, int64_t accepted_at, enum dedup_state state)
{
	size_t len = key_make(NULL, user_id, event_id);
	struct entry *e = malloc(sizeof(*e) + len);
	if (!e)
		return -1;
	key_make(e->key, user_id, event_id);
	e->key_len = (uint32_t)len;
	e->hash = hash_bytes(e->key, len);
	e->seq = seq;
	e->accepted_at = accepted_at;
	e->parked = NULL;
	e->state = state;
	struct entry **slot = &d->buckets[e->hash & d->mask];
	e->hash_next = *slot;
	*slot = e;
	e->older = d->newest;
	e->newer = NULL;
	if (d->newest)
		d->newest->newer = e;
	else
		d->oldest = e;
	d->newest = e;
	if (++d->n > d->mask)
		grow(d);
	return 0;
}

static void unlink_entry(struct dedup *d, struct entry *e)
{
	struct entry **pp = find_slot(d, e->key, e->key_len, e->hash);
	*pp = e->hash_next;
	if (e->older)
		e->older->newer = e->newer;
	else
		d->oldest = e->newer;
	if (e->newer)
		e->newer->older = e->older;
	else
		d->newest = e->older;
	d->n--;
	free(e);
}

int dedup_park(struct dedup *d, const char *user_id, const char *event_id,
               void *owner, size_t index)
{
	struct entry *e = entry_lookup(d, user_id, event_id);
	if (!e || e->state != DEDUP_PENDING)
		return -1;
	struct repeat *r = malloc(sizeof(*r));
	if (!r)
		return -1;
	r->owner = owner;
	r->index = index;
	r->next = e->parked;
	e->parked = r;
	d->parked++;
	return 0;
}

void dedup_settle(struct dedup *d, const char *user_id, const char *event_id,
                  int committed, dedup_repeat_fn fn, void *arg)
{
	struct entry *e = entry_lookup(d, user_id, event_id);
	if (!e || e->state != DEDUP_PENDING)
		return;
	/* Detached first: fn may look the id up again. */
	struct repeat *newest = e->parked, *oldest = NULL;
	e->parked = NULL;
	if (committed)
		e->state = DEDUP_COMMITTED;
	else
		unlink_entry(d, e);
	while (newest) { /* reversed: arrival order */
		struct repeat *r = newest;
		newest = r->next;
		r->next = oldest;
		oldest = r;
	}
	while (oldest) {
		struct repeat *r = oldest;
		oldest = r->next;
		d->parked--;
		fn(arg, r->owner, r->index);
		free(r);
	}
}

void dedup_prune(struct dedup *d, int64_t before)
{
	/* A pending entry has repeats to answer and stays until settled;
	 * stopping there keeps this a walk from the oldest end. */
	while (d->oldest && d->oldest->accepted_at < before &&
	       d->oldest->state != DEDUP_PENDING)
		unlink_entry(d, d->oldest);
}

size_t dedup_count(const struct dedup *d)
{
	return d->n;
}

size_t dedup_parked(const struct dedup *d)
{
	return d->parked;
}
