/*
 * cluster_publish: user lanes, CAS publish, conflicts and unknown outcomes
 * (see cluster_publish.h).
 */
#include "cluster_publish.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster.pb-c.h"
#include "log.h"
#include "validate.h"

#define LANE_RECORD_MAX   256          /* events per record */
#define LANE_RECORD_BYTES (900 * 1024) /* payloads per record, about */

static const char unavailable_text[] =
    "cluster unavailable: NATS disconnected, retry later";
static const char unknown_text[] =
    "cluster: no ack, the event may have been stored; retry with the same "
    "event_id";
static const char shutdown_text[] = "sidecar shutting down: retry later";

/* A repeat of a queued event, answered like it. */
struct follower {
	struct follower *next;
	void *owner;
	size_t index;
};

/* One event waiting in a lane or in its record in flight. */
struct lane_event {
	struct lane_event *next;
	const Wsgate__V1__Event *ev; /* the request's, while owner waits */
	int64_t accepted_us;
	void *owner; /* NULL once answered */
	size_t index;
	struct follower *followers;
};

enum lane_state {
	LANE_IDLE,       /* nothing in flight */
	LANE_PUBLISHING, /* pub is the cluster thread's */
	LANE_STORED,     /* acked; waiting for the replica */
	LANE_CONFLICT,   /* waiting for the replica to reach conflict_at */
	LANE_RESEND,     /* unknown outcome: send again when available */
};

/* One per user this sidecar has published for. */
struct lane {
	struct lane *all_next;
	struct lane *wait_next; /* in p->waiting */
	int waiting;
	struct user *u;
	struct lane_event *q_head, *q_tail; /* not yet in a record */
	enum lane_state state;
	int applied;            /* the replica applied the record in flight */
	struct lane_event *rec; /* the record's events */
	uint8_t *body;          /* its packed ClusterRecord */
	uint64_t conflict_at;
	uint64_t marked; /* highest seq of a mark published */
	struct cluster_pub pub;
};

/* One per sidecar in cluster mode. */
struct cluster_publish {
	struct cluster_publish_config cfg;
	struct lane *lanes;   /* all of them */
	struct lane *waiting; /* CONFLICT or RESEND */
	size_t queued;
	uint64_t record_counter;
	uint64_t unavailable_answers; /* events answered UNAVAILABLE */
};

struct cluster_publish *
cluster_publish_new(const struct cluster_publish_config *cfg)
{
	struct cluster_publish *p = calloc(1, sizeof(*p));
	if (p)
		p->cfg = *cfg;
	return p;
}

static void followers_free(struct lane_event *e)
{
	struct follower *f = e->followers;
	while (f) {
		struct follower *next = f->next;
		free(f);
		f = next;
	}
	e->followers = NULL;
}

static void events_free(struct lane_event *e)
{
	while (e) {
		struct lane_event *next = e->next;
		followers_free(e);
		free(e);
		e = next;
	}
}

void cluster_publish_free(struct cluster_publish *p)
{
	if (!p)
		return;
	struct lane *l = p->lanes;
	while (l) {
		struct lane *next = l->all_next;
		events_free(l->q_head);
		events_free(l->rec);
		free(l->body);
		free(l);
		l = next;
	}
	free(p);
}

/* Whether records may go out: the cluster is available and not closed
 * (cluster_publish_shutdown: a frame written or a request answered while
 * the sidecar stops must not reach the freed cluster). */
static int publishing(const struct cluster_publish *p)
{
	return p->cfg.cluster && cluster_available(p->cfg.cluster, NULL);
}

/* --- answers --- */

/* Answers e and its followers with res (followers as duplicates when
 * it is OK). */
static void event_answer(struct cluster_publish *p, struct lane_event *e,
                         const struct router_result *res)
{
	int unavailable = res->status == ROUTER_UNAVAILABLE;
	if (e->owner) {
		p->cfg.on_event_done(e->owner, e->index, res);
		p->unavailable_answers += unavailable;
	}
	e->owner = NULL;
	struct router_result dup = *res;
	if (res->status == ROUTER_OK)
		dup.duplicate = 1;
	for (struct follower *f = e->followers; f; f = f->next) {
		p->cfg.on_event_done(f->owner, f->index, &dup);
		p->unavailable_answers += unavailable;
	}
	followers_free(e);
}

static void event_fail(struct cluster_publish *p, struct lane_event *e,
                       enum router_status status, const char *error)
{
	struct router_result res = {.status = status, .error = error};
	event_answer(p, e, &res);
}

/*
 * e's event_id is known to the dedup map now (another sidecar's record
 * of it was applied, or an earlier one of ours): committed, a duplicate
 * answer; pending, e and its followers wait for that commit. Returns 1
 * when e was answered or parked.
 */
static int event_resolved_by_dedup(struct cluster_publish *p,
                                   struct lane_event *e)
{
	uint64_t seq;
	enum dedup_state st =
	    dedup_find(p->cfg.dedup, e->ev->user_id, e->ev->event_id, &seq);
	if (st == DEDUP_NEW)
		return 0;
	if (st == DEDUP_COMMITTED) {
		struct router_result res = {
		    .status = ROUTER_OK, .seq = seq, .duplicate = 1};
		event_answer(p, e, &res);
		return 1;
	}
	int ok = dedup_park(p->cfg.dedup, e->ev->user_id, e->ev->event_id,
	                    e->owner, e->index) == 0;
	for (struct follower *f = e->followers; ok && f; f = f->next)
		ok = dedup_park(p->cfg.dedup, e->ev->user_id, e->ev->event_id,
		                f->owner, f->index) == 0;
	if (!ok) {
		event_fail(p, e, ROUTER_FAILED, "out of memory");
		return 1;
	}
	e->owner = NULL;
	followers_free(e);
	return 1;
}

/* --- lanes --- */

static void lane_wait(struct cluster_publish *p, struct lane *l)
{
	if (l->waiting)
		return;
	l->waiting = 1;
	l->wait_next = p->waiting;
	p->waiting = l;
}

static void record_clear(struct lane *l)
{
	events_free(l->rec);
	l->rec = NULL;
	free(l->body);
	l->body = NULL;
	l->applied = 0;
	l->state = LANE_IDLE;
}

static void hex_encode(char *out, const char *s)
{
	static const char digits[] = "0123456789abcdef";
	for (; *s; s++) {
		*out++ = digits[(unsigned char)*s >> 4];
		*out++ = digits[(unsigned char)*s & 15];
	}
	*out = '\0';
}

/* Packs the record of l's events rec (n of them) and hands it over. */
static int record_publish(struct cluster_publish *p, struct lane *l, size_t n)
{
	Wsgate__Cluster__V1__ClusterRecord rec =
	    WSGATE__CLUSTER__V1__CLUSTER_RECORD__INIT;
	Wsgate__Cluster__V1__ClusterEvent *items = calloc(n, sizeof(*items));
	Wsgate__Cluster__V1__ClusterEvent **ptrs = calloc(n, sizeof(*ptrs));
	if (!items || !ptrs) {
		free(items);
		free(ptrs);
		return -1;
	}
	size_t i = 0;
	for (struct lane_event *e = l->rec; e; e = e->next, i++) {
		wsgate__cluster__v1__cluster_event__init(&items[i]);
		items[i].event = (Wsgate__V1__Event *)e->ev;
		items[i].accepted_at = e->accepted_us;
		ptrs[i] = &items[i];
	}
	rec.n_events = n;
	rec.events = ptrs;
	size_t len = wsgate__cluster__v1__cluster_record__get_packed_size(&rec);
	l->body = malloc(len ? len : 1);
	if (l->body)
		wsgate__cluster__v1__cluster_record__pack(&rec, l->body);
	free(items);
	free(ptrs);
	if (!l->body)
		return -1;
	struct cluster_pub *pub = &l->pub;
	memset(pub, 0, sizeof(*pub));
	memcpy(pub->subject, "wsgate.ev.", 10);
	hex_encode(pub->subject + 10, l->u->id);
	snprintf(pub->msg_id, sizeof(pub->msg_id), "%s:%llu",
	         cluster_msg_id_prefix(p->cfg.cluster),
	         (unsigned long long)++p->record_counter);
	snprintf(pub->first_seq, sizeof(pub->first_seq), "%llu",
	         (unsigned long long)(l->u->last_seq + 1));
	snprintf(pub->count, sizeof(pub->count), "%zu", n);
	pub->body = l->body;
	pub->body_len = len;
	pub->expect_last = l->u->last_stream_seq;
	pub->owner = l;
	l->state = LANE_PUBLISHING;
	cluster_publish(p->cfg.cluster, pub);
	return 0;
}

/* Answers UNAVAILABLE to every event of l not yet in a record: none of
 * them was published, so the backend's retry is the whole story. */
static void lane_fail_queued(struct cluster_publish *p, struct lane *l)
{
	while (l->q_head) {
		struct lane_event *e = l->q_head;
		l->q_head = e->next;
		p->queued--;
		event_fail(p, e, ROUTER_UNAVAILABLE, unavailable_text);
		e->next = NULL;
		events_free(e);
	}
	l->q_tail = NULL;
}

/* The lane is idle: its waiting events (those the dedup map does not
 * resolve) become the next record. */
static void lane_pump(struct cluster_publish *p, struct lane *l)
{
	if (l->state != LANE_IDLE || !l->q_head)
		return;
	if (!publishing(p)) {
		lane_fail_queued(p, l);
		return;
	}
	struct lane_event **tail = &l->rec;
	size_t n = 0, bytes = 0;
	while (l->q_head && n < LANE_RECORD_MAX &&
	       (n == 0 ||
	        bytes + l->q_head->ev->payload_json.len <= LANE_RECORD_BYTES)) {
		struct lane_event *e = l->q_head;
		l->q_head = e->next;
		if (!l->q_head)
			l->q_tail = NULL;
		p->queued--;
		e->next = NULL;
		if (event_resolved_by_dedup(p, e)) {
			events_free(e);
			continue;
		}
		bytes += e->ev->payload_json.len;
		*tail = e;
		tail = &e->next;
		n++;
	}
	if (n && record_publish(p, l, n)) {
		for (struct lane_event *e = l->rec; e; e = e->next)
			event_fail(p, e, ROUTER_FAILED, "out of memory");
		record_clear(l);
	}
	if (!n)
		lane_pump(p, l); /* all resolved: maybe more wait */
}

/* The record in flight is over (applied and its publish back). */
static void lane_done(struct cluster_publish *p, struct lane *l)
{
	record_clear(l);
	lane_pump(p, l);
}

/* Puts the record's events still waiting for an answer back at the head
 * of the queue, for a new record. */
static void record_requeue(struct cluster_publish *p, struct lane *l)
{
	struct lane_event *keep = NULL, **tail = &keep;
	struct lane_event *e = l->rec;
	l->rec = NULL;
	while (e) {
		struct lane_event *next = e->next;
		e->next = NULL;
		if (e->owner || e->followers) {
			*tail = e;
			tail = &e->next;
			p->queued++;
		} else {
			events_free(e); /* answered UNAVAILABLE already */
		}
		e = next;
	}
	if (keep) {
		struct lane_event *last = keep;
		while (last->next)
			last = last->next;
		last->next = l->q_head;
		if (!l->q_head)
			l->q_tail = last;
		l->q_head = keep;
	}
	record_clear(l);
}

static void pub_done(struct cluster_publish *p, struct cluster_pub *pub)
{
	struct lane *l = pub->owner;
	switch (pub->result) {
	case CLUSTER_PUB_STORED:
		if (l->applied) {
			lane_done(p, l);
		} else {
			l->state = LANE_STORED;
		}
		return;
	case CLUSTER_PUB_CONFLICT:
		log_debug("cluster: %s: conflict, subject at %llu", pub->msg_id,
		          (unsigned long long)pub->last_seq);
		l->state = LANE_CONFLICT;
		l->conflict_at = pub->last_seq;
		lane_wait(p, l);
		return;
	case CLUSTER_PUB_UNKNOWN:
		log_warn("cluster: %s: no ack (%s): sent again when NATS is"
		         " back",
		         pub->msg_id, pub->error);
		for (struct lane_event *e = l->rec; e; e = e->next)
			event_fail(p, e, ROUTER_UNAVAILABLE, unknown_text);
		if (l->applied) { /* stored after all */
			lane_done(p, l);
			return;
		}
		l->state = LANE_RESEND;
		lane_wait(p, l);
		return;
	case CLUSTER_PUB_REFUSED:
		log_warn("cluster: %s refused: %s", pub->msg_id, pub->error);
		for (struct lane_event *e = l->rec; e; e = e->next)
			event_fail(
			    p, e, ROUTER_FAILED,
			    "cluster refused the event (see sidecar log)");
		lane_done(p, l);
		return;
	}
}

/* --- public --- */

static struct lane *lane_of(struct cluster_publish *p, struct user *u)
{
	if (u->lane)
		return u->lane;
	struct lane *l = calloc(1, sizeof(*l));
	if (!l)
		return NULL;
	l->u = u;
	l->all_next = p->lanes;
	p->lanes = l;
	u->lane = l;
	return l;
}

/* A queued or in-flight event of l with this event_id. */
static struct lane_event *lane_find(struct lane *l, const char *event_id)
{
	for (struct lane_event *e = l->rec; e; e = e->next)
		if ((e->owner || e->followers) &&
		    strcmp(e->ev->event_id, event_id) == 0)
			return e;
	for (struct lane_event *e = l->q_head; e; e = e->next)
		if (strcmp(e->ev->event_id, event_id) == 0)
			return e;
	return NULL;
}

int cluster_publish_accept(struct cluster_publish *p,
                           const Wsgate__V1__Event *ev, int64_t accepted_us,
                           void *owner, size_t index, struct router_result *res)
{
	int known = router_known_event(p->cfg.router, ev, owner, index, res);
	if (known >= 0)
		return known;
	if (!publishing(p)) {
		res->status = ROUTER_UNAVAILABLE;
		res->error = unavailable_text;
		p->unavailable_answers++;
		return 1;
	}
	if (p->queued >= p->cfg.max_queued) {
		res->status = ROUTER_EXHAUSTED;
		res->error = "cluster publish queue full: retry later";
		return 1;
	}
	struct user *u = registry_user(p->cfg.registry, ev->user_id,
	                               strlen(ev->user_id), true);
	struct lane *l = u ? lane_of(p, u) : NULL;
	if (!l)
		goto no_memory;
	struct lane_event *first = lane_find(l, ev->event_id);
	if (first) {
		struct follower *f = calloc(1, sizeof(*f));
		if (!f)
			goto no_memory;
		f->owner = owner;
		f->index = index;
		f->next = first->followers;
		first->followers = f;
		return 0;
	}
	struct lane_event *e = calloc(1, sizeof(*e));
	if (!e)
		goto no_memory;
	e->ev = ev;
	e->accepted_us = accepted_us;
	e->owner = owner;
	e->index = index;
	if (l->q_tail)
		l->q_tail->next = e;
	else
		l->q_head = e;
	l->q_tail = e;
	p->queued++;
	lane_pump(p, l);
	return 0;
no_memory:
	res->status = ROUTER_FAILED;
	res->error = "out of memory";
	return 1;
}

static struct lane *lane_in_flight(struct user *u, const char *msg_id)
{
	struct lane *l = u->lane;
	if (!l || !msg_id || l->state == LANE_IDLE || l->applied ||
	    strcmp(l->pub.msg_id, msg_id) != 0)
		return NULL;
	return l;
}

void *cluster_publish_owner(struct cluster_publish *p, struct user *u,
                            const char *msg_id, size_t i, size_t *index)
{
	(void)p;
	struct lane *l = lane_in_flight(u, msg_id);
	struct lane_event *e = l ? l->rec : NULL;
	while (e && i--)
		e = e->next;
	if (!e || !e->owner)
		return NULL;
	void *owner = e->owner;
	*index = e->index;
	e->owner = NULL; /* the router's job answers it now */
	return owner;
}

void cluster_publish_unapplied(struct cluster_publish *p, void *owner,
                               size_t index)
{
	struct router_result res = {
	    .status = ROUTER_FAILED,
	    .error = "cluster: the event could not be applied here (see "
	             "sidecar log)"};
	p->cfg.on_event_done(owner, index, &res);
}

void cluster_publish_applied(struct cluster_publish *p, struct user *u,
                             const char *msg_id)
{
	struct lane *l = lane_in_flight(u, msg_id);
	if (!l)
		return;
	/* The followers wait for the commit like any repeat. */
	for (struct lane_event *e = l->rec; e; e = e->next)
		if (e->followers)
			event_resolved_by_dedup(p, e);
	l->applied = 1;
	if (l->state != LANE_PUBLISHING) /* its publish is back too */
		lane_done(p, l);
}

void cluster_publish_mark(void *arg, struct user *u, uint64_t seq)
{
	struct cluster_publish *p = arg;
	struct lane *l = p->cfg.cluster ? lane_of(p, u) : NULL;
	if (!l || seq <= l->marked)
		return;
	char subject[sizeof(l->pub.subject)], body[24];
	memcpy(subject, "wsgate.mk.", 10);
	hex_encode(subject + 10, u->id);
	snprintf(body, sizeof(body), "%llu", (unsigned long long)seq);
	if (cluster_publish_unacked(p->cfg.cluster, subject, body) == 0)
		l->marked = seq;
}

/*
 * The cluster is down: nothing queued behind a record in flight or waiting
 * may wait for NATS to come back (the backend would only see its own
 * timeout), and a record refused by a conflict was not stored, so its
 * events are answered too. Only a record without an ack stays, to be sent
 * again (its events were answered already).
 */
static void lanes_fail_while_down(struct cluster_publish *p)
{
	for (struct lane *l = p->lanes; l && p->queued; l = l->all_next)
		lane_fail_queued(p, l);
	for (struct lane *l = p->waiting; l; l = l->wait_next)
		if (l->state == LANE_CONFLICT) {
			for (struct lane_event *e = l->rec; e; e = e->next)
				event_fail(p, e, ROUTER_UNAVAILABLE,
				           unavailable_text);
			record_clear(l); /* idle: handle drops it below */
		}
}

void cluster_publish_handle(struct cluster_publish *p, uint64_t position)
{
	if (!p->cfg.cluster) /* shut down */
		return;
	struct cluster_pub *pub = cluster_take_published(p->cfg.cluster);
	while (pub) {
		struct cluster_pub *next = pub->next;
		pub_done(p, pub);
		pub = next;
	}
	int available = publishing(p);
	if (!available)
		lanes_fail_while_down(p);
	struct lane *l = p->waiting, *keep = NULL;
	p->waiting = NULL;
	while (l) {
		struct lane *next = l->wait_next;
		l->waiting = 0;
		if (l->state == LANE_CONFLICT && position >= l->conflict_at) {
			/* The replica has the other sidecar's record: it is
			 * the user's last one. */
			if (l->u->last_stream_seq < l->conflict_at)
				l->u->last_stream_seq = l->conflict_at;
			record_requeue(p, l);
			lane_pump(p, l);
		} else if (l->state == LANE_RESEND && l->applied) {
			lane_done(p, l);
		} else if (l->state == LANE_RESEND && available) {
			l->state = LANE_PUBLISHING;
			cluster_publish(p->cfg.cluster, &l->pub);
		} else if (l->state == LANE_CONFLICT ||
		           l->state == LANE_RESEND) {
			l->waiting = 1;
			l->wait_next = keep;
			keep = l;
		} /* else: resolved meanwhile (applied after all) */
		l = next;
	}
	/* Lanes pumped above may have queued themselves again. */
	while (keep) {
		struct lane *next = keep->wait_next;
		keep->wait_next = p->waiting;
		p->waiting = keep;
		keep = next;
	}
}

void cluster_publish_shutdown(struct cluster_publish *p)
{
	for (struct lane *l = p->lanes; l; l = l->all_next) {
		for (struct lane_event *e = l->rec; e; e = e->next)
			event_fail(p, e, ROUTER_UNAVAILABLE, shutdown_text);
		for (struct lane_event *e = l->q_head; e; e = e->next)
			event_fail(p, e, ROUTER_UNAVAILABLE, shutdown_text);
	}
	p->cfg.cluster = NULL; /* closed: nothing may reach it any more */
}

uint64_t cluster_publish_queued(const struct cluster_publish *p)
{
	return p->queued;
}

uint64_t cluster_publish_unavailable_answers(const struct cluster_publish *p)
{
	return p->unavailable_answers;
}
