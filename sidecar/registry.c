/*
 * registry: users and connections of the sidecar, owned by the service
 * thread (see registry.h).
 *
 * Both id tables are chained hash tables with a power-of-two bucket count,
 * doubled when the load passes one entry per bucket. Users are never
 * removed: their seq counters must survive their connections.
 */
#include "registry.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "hash.h"

struct registry {
	struct user **users; /* buckets */
	size_t users_mask;
	size_t n_users;
	struct conn **conns; /* buckets */
	size_t conns_mask;
	uint32_t n_conns;
	uint32_t n_connected_users;
	size_t queue_limit;
	registry_ready_fn on_ready;
	void *on_ready_arg;
	struct registry_counters counters;
};

struct registry *registry_new(size_t queue_limit, registry_ready_fn on_ready,
                              void *arg)
{
	struct registry *r = calloc(1, sizeof(*r));
	if (!r)
		return NULL;
	r->users_mask = r->conns_mask = 63;
	r->users = calloc(64, sizeof(*r->users));
	r->conns = calloc(64, sizeof(*r->conns));
	if (!r->users || !r->conns) {
		free(r->users);
		free(r->conns);
		free(r);
		return NULL;
	}
	r->queue_limit = queue_limit;
	r->on_ready = on_ready;
	r->on_ready_arg = arg;
	return r;
}

static void conn_free(struct conn *c)
{
	frame_queue_clear(&c->queue);
	frame_queue_clear(&c->held);
	frame_queue_clear(&c->unacked);
	free(c);
}

void registry_free(struct registry *r)
{
	if (!r)
		return;
	for (size_t b = 0; b <= r->conns_mask; b++) {
		struct conn *c = r->conns[b];
		while (c) {
			struct conn *next = c->hash_next;
			conn_free(c);
			c = next;
		}
	}
	for (size_t b = 0; b <= r->users_mask; b++) {
		struct user *u = r->users[b];
		while (u) {
			struct user *next = u->hash_next;
			free(u->id);
			free(u);
			u = next;
		}
	}
	free(r->conns);
	free(r->users);
	free(r);
}

struct registry_counters *registry_counters(struct registry *r)
{
	return &r->counters;
}

size_t registry_queue_limit(const struct registry *r)
{
	return r->queue_limit;
}

uint32_t registry_conn_count(const struct registry *r)
{
	return r->n_conns;
}

uint32_t registry_connected_user_count(const struct registry *r)
{
	return r->n_connected_users;
}

static void users_grow(struct registry *r)
{
	size_t nmask = r->users_mask * 2 + 1;
	struct user **nb = calloc(nmask + 1, sizeof(*nb));
	if (!nb)
		return; /* keep the longer chains; still correct */
	for (size_t b = 0; b <= r->users_mask; b++) {
		struct user *u = r->users[b];
		while (u) {
			struct user *next = u->hash_next;
			size_t i = hash_bytes(u->id, u->id_len) & nmask;
			u->hash_next = nb[i];
			nb[i] = u;
			u = next;
		}
	}
	free(r->users);
	r->users = nb;
	r->users_mask = nmask;
}

struct user *registry_user(struct registry *r, const char *id, size_t len,
                           bool create)
{
	size_t b = hash_bytes(id, len) & r->users_mask;
	for (struct user *u = r->users[b]; u; u = u->hash_next)
		if (u->id_len == len && memcmp(u->id, id, len) == 0)
			return u;
	if (!create)
		return NULL;
	struct user *u = calloc(1, sizeof(*u));
	if (!u)
		return NULL;
	u->id = malloc(len + 1);
	if (!u->id) {
		free(u);
		return NULL;
	}
	memcpy(u->id, id, len);
	u->id[len] = '\0';
	u->id_len = len;
	u->hash_next = r->users[b];
	r->users[b] = u;
	if (++r->n_users > r->users_mask)
		users_grow(r);
	return u;
}

static void conns_grow(struct registry *r)
{
	size_t nmask = r->conns_mask * 2 + 1;
	struct conn **nb = calloc(nmask + 1, sizeof(*nb));
	if (!nb)
		return;
	for (size_t b = 0; b <= r->conns_mask; b++) {
		struct conn *c = r->conns[b];
		while (c) {
			struct conn *next = c->hash_next;
			size_t i =
			    hash_bytes(c->id, REGISTRY_CONN_ID_LEN) & nmask;
			c->hash_next = nb[i];
			nb[i] = c;
			c = next;
		}
	}
	free(r->conns);
	r->conns = nb;
	r->conns_mask = nmask;
}

/* Random ids: unguessable, and unique across restarts of the sidecar so
 * that audit rows of different runs never share a conn_id. */
static int conn_make_id(struct registry *r, char *out)
{
	static const char hex[] = "0123456789abcdef";
	for (int attempt = 0; attempt < 4; attempt++) {
		unsigned char rnd[8];
		if (getrandom(rnd, sizeof(rnd), 0) != sizeof(rnd))
			return -1;
		out[0] = 'c';
		out[1] = '-';
		for (int i = 0; i < 8; i++) {
			out[2 + 2 * i] = hex[rnd[i] >> 4];
			out[3 + 2 * i] = hex[rnd[i] & 15];
		}
		out[REGISTRY_CONN_ID_LEN] = '\0';
		if (!registry_find_conn(r, out))
			return 0;
	}
	return -1;
}

struct conn *registry_add_conn(struct registry *r, struct user *u,
                               void *transport, const char *peer,
                               int64_t now_us)
{
	struct conn *c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	if (conn_make_id(r, c->id)) {
		free(c);
		return NULL;
	}
	c->user = u;
	c->transport = transport;
	c->opened_at = now_us;
	snprintf(c->peer, sizeof(c->peer), "%s", peer ? peer : "");

	size_t b = hash_bytes(c->id, REGISTRY_CONN_ID_LEN) & r->conns_mask;
	c->hash_next = r->conns[b];
	r->conns[b] = c;
	c->user_next = u->conns;
	if (u->conns)
		u->conns->user_prev = c;
	u->conns = c;
	if (u->n_conns++ == 0)
		r->n_connected_users++;
	if (++r->n_conns > r->conns_mask)
		conns_grow(r);
	return c;
}

/* Takes c out of its user's list and out of the counts: from now on it
 * is neither listed nor counted, though findable by id. */
static void conn_unlink_user(struct registry *r, struct conn *c)
{
	struct user *u = c->user;
	if (c->user_prev)
		c->user_prev->user_next = c->user_next;
	else
		u->conns = c->user_next;
	if (c->user_next)
		c->user_next->user_prev = c->user_prev;
	c->user_prev = c->user_next = NULL;
	if (--u->n_conns == 0)
		r->n_connected_users--;
	r->n_conns--;
}

void registry_remove_conn(struct registry *r, struct conn *c)
{
	struct conn **pp =
	    &r->conns[hash_bytes(c->id, REGISTRY_CONN_ID_LEN) & r->conns_mask];
	while (*pp && *pp != c)
		pp = &(*pp)->hash_next;
	assert(*pp == c);
	*pp = c->hash_next;

	if (!c->close_code)
		conn_unlink_user(r, c); /* else done by registry_conn_close */
	r->counters.frames_dropped += c->queue.len + c->held.len;
	conn_free(c);
}

struct conn *registry_find_conn(struct registry *r, const char *id)
{
	size_t len = strlen(id);
	if (len != REGISTRY_CONN_ID_LEN)
		return NULL;
	size_t b = hash_bytes(id, len) & r->conns_mask;
	for (struct conn *c = r->conns[b]; c; c = c->hash_next)
		if (memcmp(c->id, id, len) == 0)
			return c;
	return NULL;
}

void registry_foreach_conn(struct registry *r,
                           void (*fn)(struct conn *c, void *arg), void *arg)
{
	for (size_t b = 0; b <= r->conns_mask; b++) {
		struct conn *c = r->conns[b];
		while (c) {
			/* fn may ask for a close but must not remove c. */
			struct conn *next = c->hash_next;
			if (!c->close_code)
				fn(c, arg);
			c = next;
		}
	}
}

void registry_conn_close(struct registry *r, struct conn *c, int code,
                         const char *reason)
{
	if (c->close_code)
		return; /* the first reason stands */
	c->close_code = code;
	snprintf(c->close_reason, sizeof(c->close_reason), "%s", reason);
	conn_unlink_user(r, c);
	r->on_ready(c, r->on_ready_arg);
}

int registry_conn_send(struct registry *r, struct conn *c, struct frame *f,
                       int exempt)
{
	if (c->close_code)
		return -1;
	if (!exempt && c->queue.bytes + f->len > r->queue_limit)
		return -1;
	if (frame_queue_push(&c->queue, f))
		return -1;
	r->on_ready(c, r->on_ready_arg);
	return 0;
}

void registry_conn_written(struct registry *r, struct conn *c)
{
	struct frame *f = frame_queue_peek(&c->queue);
	assert(f);
	c->written++;
	r->counters.frames_written++;
	if (f->seq > c->last_seq_written)
		c->last_seq_written = f->seq;
	frame_queue_pop(&c->queue);
}
