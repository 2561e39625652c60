/*
 * dedup: (user_id, event_id) -> seq, a chained hash table whose entries are
 * also linked in acceptance order so that retention drops the oldest first
 * (see dedup.h).
 */
#include "dedup.h"

#include <stdlib.h>
#include <string.h>

#include "hash.h"

struct entry {
	struct entry *hash_next;
	struct entry *older, *newer; /* acceptance order */
	uint64_t hash;
	uint64_t seq;
	int64_t accepted_at;
	size_t key_len;
	char key[]; /* user_id '\0' event_id */
};

struct dedup {
	struct entry **buckets;
	size_t mask;
	size_t n;
	struct entry *oldest, *newest;
};

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

void dedup_free(struct dedup *d)
{
	if (!d)
		return;
	struct entry *e = d->oldest;
	while (e) {
		struct entry *next = e->newer;
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

int dedup_find(struct dedup *d, const char *user_id, const char *event_id,
               uint64_t *seq)
{
	char key[600];
	if (key_make(NULL, user_id, event_id) > sizeof(key))
		return 0;
	size_t len = key_make(key, user_id, event_id);
	struct entry *e = *find_slot(d, key, len, hash_bytes(key, len));
	if (!e)
		return 0;
	*seq = e->seq;
	return 1;
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
              uint64_t seq, int64_t accepted_at)
{
	size_t len = key_make(NULL, user_id, event_id);
	struct entry *e = malloc(sizeof(*e) + len);
	if (!e)
		return -1;
	key_make(e->key, user_id, event_id);
	e->key_len = len;
	e->hash = hash_bytes(e->key, len);
	e->seq = seq;
	e->accepted_at = accepted_at;
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

void dedup_remove(struct dedup *d, const char *user_id, const char *event_id)
{
	char key[600];
	if (key_make(NULL, user_id, event_id) > sizeof(key))
		return;
	size_t len = key_make(key, user_id, event_id);
	struct entry *e = *find_slot(d, key, len, hash_bytes(key, len));
	if (e)
		unlink_entry(d, e);
}

void dedup_prune(struct dedup *d, int64_t before)
{
	while (d->oldest && d->oldest->accepted_at < before)
		unlink_entry(d, d->oldest);
}

size_t dedup_count(const struct dedup *d)
{
	return d->n;
}
