/*
 * seq_poison: user_id -> lowest failed seq, a small chained hash table
 * (see seq_poison.h for the rule it keeps).
 */
#include "seq_poison.h"

#include <stdlib.h>
#include <string.h>

#include "hash.h"

/* One per poisoned user. */
struct entry {
	struct entry *next;
	uint64_t hash;
	uint64_t failed_from; /* the lowest failed seq: F */
	size_t len;
	char user_id[];
};

struct seq_poison {
	struct entry **buckets;
	size_t mask;
	size_t n;
};

struct seq_poison *seq_poison_new(void)
{
	struct seq_poison *p = calloc(1, sizeof(*p));
	if (!p)
		return NULL;
	p->mask = 63;
	p->buckets = calloc(p->mask + 1, sizeof(*p->buckets));
	if (!p->buckets) {
		free(p);
		return NULL;
	}
	return p;
}

void seq_poison_free(struct seq_poison *p)
{
	if (!p)
		return;
	for (size_t i = 0; i <= p->mask; i++) {
		struct entry *e = p->buckets[i];
		while (e) {
			struct entry *next = e->next;
			free(e);
			e = next;
		}
	}
	free(p->buckets);
	free(p);
}

static struct entry **find_slot(struct seq_poison *p, const char *user_id,
                                size_t len, uint64_t h)
{
	struct entry **pp = &p->buckets[h & p->mask];
	while (*pp && ((*pp)->hash != h || (*pp)->len != len ||
	               memcmp((*pp)->user_id, user_id, len) != 0))
		pp = &(*pp)->next;
	return pp;
}

static void grow(struct seq_poison *p)
{
	size_t nmask = p->mask * 2 + 1;
	struct entry **nb = calloc(nmask + 1, sizeof(*nb));
	if (!nb)
		return; /* longer chains, still correct */
	for (size_t i = 0; i <= p->mask; i++) {
		struct entry *e = p->buckets[i];
		while (e) {
			struct entry *next = e->next;
			e->next = nb[e->hash & nmask];
			nb[e->hash & nmask] = e;
			e = next;
		}
	}
	free(p->buckets);
	p->buckets = nb;
	p->mask = nmask;
}

int seq_poison_check(struct seq_poison *p, const char *user_id, uint64_t seq)
{
	if (p->n == 0)
		return 0; /* the usual case: no failure waiting to be taken back
		           */
	size_t len = strlen(user_id);
	struct entry **pp =
	    find_slot(p, user_id, len, hash_bytes(user_id, len));
	struct entry *e = *pp;
	if (!e)
		return 0;
	if (seq > e->failed_from)
		return 1;
	*pp = e->next;
	free(e);
	p->n--;
	return 0;
}

int seq_poison_mark(struct seq_poison *p, const char *user_id, uint64_t seq)
{
	size_t len = strlen(user_id);
	uint64_t h = hash_bytes(user_id, len);
	struct entry **pp = find_slot(p, user_id, len, h);
	if (*pp) {
		if (seq < (*pp)->failed_from)
			(*pp)->failed_from = seq;
		return 0;
	}
	struct entry *e = malloc(sizeof(*e) + len + 1);
	if (!e)
		return -1;
	e->next = NULL;
	e->hash = h;
	e->failed_from = seq;
	e->len = len;
	memcpy(e->user_id, user_id, len + 1);
	*pp = e;
	if (++p->n > p->mask)
		grow(p);
	return 0;
}
