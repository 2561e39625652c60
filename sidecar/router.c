/*
 * router: acceptance, commit-then-send fan-out, catch-up and the delivery
 * rows of each frame (see router.h for the rules it keeps).
 */
#include "router.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "log.h"
#include "validate.h"

#define UNACKED_KEEP 64 /* events per connection that an ack can name */

/* One per sidecar. */
struct router {
	struct router_config cfg;
	struct registry *reg;
	struct store *store;
	char epoch[ROUTER_EPOCH_MAX + 1];
};

struct router *router_new(const struct router_config *cfg)
{
	struct router *rt = calloc(1, sizeof(*rt));
	if (!rt)
		return NULL;
	rt->cfg = *cfg;
	rt->cfg.epoch = NULL; /* rt->epoch from here on */
	rt->reg = cfg->registry;
	rt->store = cfg->store;
	if (!cfg->epoch || router_set_epoch(rt, cfg->epoch)) {
		free(rt);
		return NULL;
	}
	return rt;
}

int router_set_epoch(struct router *rt, const char *epoch)
{
	size_t n = strlen(epoch);
	if (n == 0 || n > ROUTER_EPOCH_MAX)
		return -1;
	memcpy(rt->epoch, epoch, n + 1);
	return 0;
}

const char *router_epoch(const struct router *rt)
{
	return rt->epoch;
}

void router_set_written(struct router *rt,
                        void (*fn)(void *arg, struct user *u, uint64_t seq),
                        void *arg)
{
	rt->cfg.on_event_written = fn;
	rt->cfg.written_arg = arg;
}

void router_free(struct router *rt)
{
	/* Every accepted event's commit is done before the end (store_flush,
	 * router_handle_done), so no repeat is left waiting unanswered. */
	assert(!rt || dedup_parked(rt->cfg.dedup) == 0);
	free(rt);
}

/* --- delivery rows --- */

/* Records an outcome of frame f on the connection conn_id, whose
 * authenticated user is conn_user_id. */
static void record_row(struct router *rt, const char *conn_id,
                       const char *conn_user_id, const struct frame *f,
                       const char *status)
{
	if (!rt->cfg.audit)
		return;
	struct store_job *job =
	    store_job_new_delivery(f->user_id, f->event_id, conn_user_id);
	if (!job) {
		log_error("out of memory: %s row of %s seq %llu lost", status,
		          conn_id, (unsigned long long)f->seq);
		return;
	}
	memcpy(job->delivery.conn_id, conn_id, sizeof(job->delivery.conn_id));
	memcpy(job->delivery.payload_sha256, f->payload_sha256,
	       sizeof(job->delivery.payload_sha256));
	job->delivery.status = status;
	job->delivery.seq = f->seq;
	job->delivery.at = clock_now_us();
	store_submit(rt->store, job);
}

static void record_outcome(struct router *rt, struct conn *c,
                           const struct frame *f, const char *status)
{
	record_row(rt, c->id, c->user->id, f, status);
}

/* Drops every event frame of q, recording each, and empties q. */
static void drop_queue(struct router *rt, struct conn *c, struct frame_queue *q)
{
	for (uint32_t i = 0; i < q->len; i++) {
		struct frame *f = frame_queue_at(q, i);
		if (f->seq)
			record_outcome(rt, c, f, "dropped");
	}
	registry_counters(rt->reg)->frames_dropped += frame_queue_clear(q);
}

/*
 * Slow consumer policy: a connection whose queue would pass --queue-limit
 * is closed with 4008 rather than buffered without bound. Its unsent events
 * are dropped (and recorded so); the client reconnects with ?since= and
 * gets them from the log, and no other connection pays for it.
 */
static void close_slow_consumer(struct router *rt, struct conn *c,
                                const struct frame *refused)
{
	if (refused && refused->seq)
		record_outcome(rt, c, refused, "dropped");
	registry_counters(rt->reg)->frames_dropped++;
	drop_queue(rt, c, &c->queue);
	drop_queue(rt, c, &c->held);
	registry_conn_close(rt->reg, c, 4008, "slow consumer");
	log_info("closed %s of %s: slow consumer (queue limit)", c->id,
	         c->user->id);
}

/* Whether c takes event seq live: never seq <= its since, which the client
 * says it has seen (e.g. on another pod, ahead of this one's replica). */
static int conn_takes_live(const struct conn *c, uint64_t seq)
{
	return !c->close_code && seq > c->since;
}

/* Queues a live event frame whose queued row is committed. */
static int deliver_live(struct router *rt, struct conn *c, struct frame *f)
{
	/* Connections are chosen by conn_takes_live when the event's
	 * queued rows are made. */
	assert(f->seq > c->since);
	if (c->close_code) {
		record_outcome(rt, c, f, "dropped");
		registry_counters(rt->reg)->frames_dropped++;
		return -1;
	}
	if (c->replaying) {
		if (c->held.bytes + f->len > registry_queue_limit(rt->reg) ||
		    frame_queue_push(&c->held, f)) {
			close_slow_consumer(rt, c, f);
			return -1;
		}
		return 0;
	}
	if (registry_conn_send(rt->reg, c, f, 0)) {
		close_slow_consumer(rt, c, f);
		return -1;
	}
	return 0;
}

/* --- acceptance --- */

/*
 * A repeat of an event whose commit is not done yet waits for it: an OK
 * now would acknowledge a row that may never be written (its commit
 * fails, or the process dies first). event_committed answers it with the
 * first one's outcome.
 */
static int park_repeat(struct router *rt, const Wsgate__V1__Event *ev,
                       void *owner, size_t index, struct router_result *res)
{
	if (dedup_parked(rt->cfg.dedup) >= ROUTER_MAX_PARKED) {
		res->status = ROUTER_EXHAUSTED;
		res->error = "too many repeats of events not yet committed: "
		             "retry later";
		return 1;
	}
	if (dedup_park(rt->cfg.dedup, ev->user_id, ev->event_id, owner,
	               index)) {
		res->status = ROUTER_FAILED;
		res->error = "out of memory";
		return 1;
	}
	return 0;
}

/*
 * Builds the event's frame and submits job (an empty STORE_EVENT) with a
 * queued row for each open connection of u, as seq. The strings of ev
 * must live until the job is done. 0, or -1 when out of memory.
 */
static int event_submit(struct router *rt, struct user *u,
                        struct store_job *job, const Wsgate__V1__Event *ev,
                        const char *type, uint64_t seq, int64_t accepted_us,
                        void *owner, size_t index)
{
	uint32_t n = 0;
	if (u->n_conns) {
		job->event.conns =
		    calloc(u->n_conns, sizeof(*job->event.conns));
		if (!job->event.conns)
			return -1;
	}
	for (struct conn *c = u->conns; c; c = c->user_next) {
		assert(c->user == u); /* isolation: only the event's user */
		if (!conn_takes_live(c, seq))
			continue;
		memcpy(job->event.conns[n].conn_id, c->id, sizeof(c->id));
		job->event.conns[n].conn_user_id = c->user->id;
		n++;
	}

	struct frame_event fe = {
	    .type = type,
	    .seq = seq,
	    .event_id = ev->event_id,
	    .event_id_len = strlen(ev->event_id),
	    .user_id = ev->user_id,
	    .user_id_len = strlen(ev->user_id),
	    .thread_id = ev->thread_id,
	    .thread_id_len = strlen(ev->thread_id),
	    .run_id = ev->run_id,
	    .run_id_len = strlen(ev->run_id),
	    .ts_us = accepted_us,
	    .payload = ev->payload_json.data,
	    .payload_len = ev->payload_json.len,
	};
	struct frame *f = frame_build_event(&fe);
	if (!f || (!job->event.no_dedup &&
	           dedup_add(rt->cfg.dedup, ev->user_id, ev->event_id, fe.seq,
	                     accepted_us, DEDUP_PENDING))) {
		frame_unref(f);
		return -1;
	}
	u->last_seq = fe.seq;
	job->event.user_id = ev->user_id;
	job->event.event_id = ev->event_id;
	job->event.type = fe.type;
	job->event.thread_id = ev->thread_id;
	job->event.run_id = ev->run_id;
	job->event.payload = ev->payload_json.data;
	job->event.payload_len = ev->payload_json.len;
	job->event.seq = fe.seq;
	job->event.accepted_at = accepted_us;
	job->event.pending = n == 0;
	job->event.audit = rt->cfg.audit;
	job->event.frame = f;
	job->event.owner = owner;
	job->event.index = index;
	job->event.n_conns = n;
	store_submit(rt->store, job);
	return 0;
}

int router_known_event(struct router *rt, const Wsgate__V1__Event *ev,
                       void *owner, size_t index, struct router_result *res)
{
	memset(res, 0, sizeof(*res));
	uint64_t seq;
	switch (dedup_find(rt->cfg.dedup, ev->user_id, ev->event_id, &seq)) {
	case DEDUP_COMMITTED:
		res->status = ROUTER_OK;
		res->seq = seq;
		res->duplicate = 1;
		registry_counters(rt->reg)->events_duplicate++;
		return 1;
	case DEDUP_PENDING:
		return park_repeat(rt, ev, owner, index, res);
	case DEDUP_NEW:
		break;
	}
	return -1;
}

int router_accept_event(struct router *rt, const Wsgate__V1__Event *ev,
                        int64_t accepted_us, void *owner, size_t index,
                        struct router_result *res)
{
	int known = router_known_event(rt, ev, owner, index, res);
	if (known >= 0)
		return known;
	if (store_backlog(rt->store) >= rt->cfg.max_backlog) {
		res->status = ROUTER_EXHAUSTED;
		res->error = "event log behind: retry later";
		return 1;
	}
	struct user *u =
	    registry_user(rt->reg, ev->user_id, strlen(ev->user_id), true);
	struct store_job *job = store_job_new(STORE_EVENT);
	if (!u || !job ||
	    event_submit(rt, u, job, ev, validate_event_type_name(ev),
	                 u->last_seq + 1, accepted_us, owner, index)) {
		store_job_free(job);
		res->status = ROUTER_FAILED;
		res->error = "out of memory";
		return 1;
	}
	return 0;
}

/* Copies s (NULL: "") to *tail and returns where it went. */
static char *copy_str(char **tail, const char *s)
{
	size_t n = s ? strlen(s) : 0;
	char *at = *tail;
	memcpy(at, s ? s : "", n);
	at[n] = '\0';
	*tail += n + 1;
	return at;
}

int router_apply_event(struct router *rt, const Wsgate__V1__Event *ev,
                       uint64_t seq, int64_t accepted_us, const char *node_id,
                       void *owner, size_t index)
{
	struct user *u =
	    registry_user(rt->reg, ev->user_id, strlen(ev->user_id), true);
	if (!u)
		return -1;
	if (seq <= u->last_seq)
		return 1;
	const char *type = validate_event_type_name(ev);
	const char *strs[] = {ev->user_id, ev->event_id, ev->thread_id,
	                      ev->run_id,  type,         node_id};
	size_t size = ev->payload_json.len;
	for (size_t i = 0; i < sizeof(strs) / sizeof(strs[0]); i++)
		size += (strs[i] ? strlen(strs[i]) : 0) + 1;
	struct store_job *job = store_job_new(STORE_EVENT);
	char *tail = job ? malloc(size) : NULL;
	if (!tail) {
		store_job_free(job);
		return -1;
	}
	/* The job keeps its own copy: the record it came from is freed. */
	job->event.owned = tail;
	job->event.unowned = owner == NULL;
	Wsgate__V1__Event copy = *ev;
	copy.user_id = copy_str(&tail, ev->user_id);
	copy.event_id = copy_str(&tail, ev->event_id);
	copy.thread_id = copy_str(&tail, ev->thread_id);
	copy.run_id = copy_str(&tail, ev->run_id);
	type = copy_str(&tail, type);
	job->event.node_id = copy_str(&tail, node_id);
	if (ev->payload_json.len)
		memcpy(tail, ev->payload_json.data, ev->payload_json.len);
	copy.payload_json.data = (uint8_t *)tail;
	uint64_t known;
	if (dedup_find(rt->cfg.dedup, ev->user_id, ev->event_id, &known) !=
	    DEDUP_NEW)
		job->event.no_dedup = 1; /* a repeat in the stream itself */
	if (event_submit(rt, u, job, &copy, type, seq, accepted_us, owner,
	                 index)) {
		store_job_free(job);
		return -1;
	}
	return 0;
}

/* The outcome of an event, for the repeats parked on it. */
struct repeat_answer {
	struct router *rt;
	const struct router_result *first;
};

static void answer_repeat(void *arg, void *owner, size_t index)
{
	const struct repeat_answer *a = arg;
	struct router_result res = *a->first;
	if (res.status == ROUTER_OK) {
		res = (struct router_result){
		    .status = ROUTER_OK, .seq = a->first->seq, .duplicate = 1};
		registry_counters(a->rt->reg)->events_duplicate++;
	}
	a->rt->cfg.on_event_done(owner, index, &res);
}

static void event_committed(struct router *rt, struct store_job *job)
{
	struct router_result res = {.status = ROUTER_OK,
	                            .seq = job->event.seq,
	                            .retained = job->event.pending};
	struct frame *f = job->event.frame;
	if (job->failed) {
		struct user *u =
		    registry_user(rt->reg, job->event.user_id,
		                  strlen(job->event.user_id), false);
		/* Give the seq back unless a later one was handed out. */
		if (u && u->last_seq == job->event.seq)
			u->last_seq--;
		registry_counters(rt->reg)->storage_failures++;
		res = (struct router_result){
		    .status = ROUTER_FAILED,
		    .error = "event log: cannot commit (see sidecar log)"};
	} else {
		registry_counters(rt->reg)->events_accepted++;
		memcpy(f->payload_sha256, job->event.payload_sha256,
		       sizeof(f->payload_sha256));
		for (uint32_t i = 0; i < job->event.n_conns; i++) {
			struct conn *c = registry_find_conn(
			    rt->reg, job->event.conns[i].conn_id);
			if (!c) {
				/* Gone before the commit: its queued row
				 * still needs an outcome. */
				record_row(rt, job->event.conns[i].conn_id,
				           job->event.conns[i].conn_user_id, f,
				           "dropped");
				continue;
			}
			if (deliver_live(rt, c, f) == 0)
				res.connections++;
		}
	}
	/* Committed: the repeats waiting for it are duplicates of it; failed:
	 * they fail with it, and the id is forgotten, free for a retry. */
	struct repeat_answer answer = {.rt = rt, .first = &res};
	if (!job->event.no_dedup)
		dedup_settle(rt->cfg.dedup, job->event.user_id,
		             job->event.event_id, !job->failed, answer_repeat,
		             &answer);
	if (!job->event.unowned) /* a record of the cluster stream */
		rt->cfg.on_event_done(job->event.owner, job->event.index, &res);
	frame_unref(f);
}

/* --- catch-up --- */

static void replay_request(struct router *rt, struct conn *c)
{
	struct store_job *job = store_job_new(STORE_REPLAY);
	if (!job) {
		registry_conn_close(rt->reg, c, 1011, "out of memory");
		return;
	}
	memcpy(job->replay.conn_id, c->id, sizeof(c->id));
	job->replay.user_id = c->user->id;
	job->replay.conn_user_id = c->user->id;
	job->replay.after = c->replay_after;
	job->replay.upto = c->live_from;
	job->replay.since = c->since;
	job->replay.has_since = c->has_since;
	job->replay.since_floor = rt->cfg.on_event_written != NULL;
	job->replay.epoch_changed = c->epoch_changed;
	job->replay.limit = rt->cfg.replay_chunk;
	job->replay.audit = rt->cfg.audit;
	c->replay_inflight = 1;
	store_submit(rt->store, job);
}

static void replay_finish(struct router *rt, struct conn *c)
{
	c->replaying = 0;
	struct frame_queue held = c->held;
	memset(&c->held, 0, sizeof(c->held));
	/* After a slow-consumer close, deliver_live records the rest as
	 * dropped. */
	for (uint32_t i = 0; i < held.len; i++)
		deliver_live(rt, c, frame_queue_at(&held, i));
	frame_queue_clear(&held);
}

static void replay_read(struct router *rt, struct store_job *job)
{
	struct conn *c = registry_find_conn(rt->reg, job->replay.conn_id);
	if (!c || c->close_code || job->failed) {
		if (c && job->failed)
			registry_conn_close(rt->reg, c, 1011,
			                    "event log unavailable");
		if (c)
			c->replay_inflight = 0;
		for (uint32_t i = 0; c && i < job->replay.n_frames; i++)
			record_outcome(rt, c, job->replay.frames[i], "dropped");
		return;
	}
	c->replay_inflight = 0;
	if (job->replay.resume_failed) {
		char text[96];
		snprintf(text, sizeof(text),
		         "{\"type\":\"resume_failed\",\"oldest_seq\":%llu}",
		         (unsigned long long)job->replay.oldest_seq);
		struct frame *rf = frame_build_literal(text);
		if (rf) {
			registry_conn_send(rt->reg, c, rf, 1);
			frame_unref(rf);
		}
	}
	for (uint32_t i = 0; i < job->replay.n_frames; i++) {
		struct frame *f = job->replay.frames[i];
		if (registry_conn_send(rt->reg, c, f, 1))
			record_outcome(rt, c, f, "dropped");
		c->replay_after = f->seq;
	}
	if (!job->replay.more)
		replay_finish(rt, c);
	else if (c->queue.len == 0)
		replay_request(rt, c);
	/* else: the next chunk is read when the socket has drained. */
}

void router_handle_done(struct router *rt)
{
	struct store_job *job = store_take_done(rt->store);
	while (job) {
		struct store_job *next = job->next;
		if (job->kind == STORE_EVENT)
			event_committed(rt, job);
		else if (job->kind == STORE_REPLAY)
			replay_read(rt, job);
		store_job_free(job);
		job = next;
	}
}

int router_conn_opened(struct router *rt, struct conn *c,
                       const struct router_resume *from)
{
	struct user *u = c->user;
	/* A since from another history says nothing about ours: resume as
	 * from 0, after saying resume_failed. */
	c->epoch_changed = from->has_since && from->epoch[0] &&
	                   strcmp(from->epoch, rt->epoch) != 0;
	c->live_from = u->last_seq;
	c->since = c->epoch_changed || !from->has_since ? 0 : from->since;
	c->has_since =
	    from->has_since && (c->epoch_changed || c->since < c->live_from);
	struct frame *f =
	    frame_build_connected(c->id, u->id, u->last_seq, rt->epoch);
	if (!f)
		return -1;
	int rc = registry_conn_send(rt->reg, c, f, 1);
	frame_unref(f);
	if (rc)
		return -1;
	/* A user without any event yet has nothing to catch up on, but a
	 * client of another epoch is told. */
	if (c->live_from > 0 || c->epoch_changed) {
		c->replaying = 1;
		replay_request(rt, c);
	}
	return 0;
}

void router_conn_written(struct router *rt, struct conn *c)
{
	struct frame *f = frame_queue_peek(&c->queue);
	assert(f);
	if (f->seq) {
		record_outcome(rt, c, f, "written");
		if (rt->cfg.on_event_written)
			rt->cfg.on_event_written(rt->cfg.written_arg, c->user,
			                         f->seq);
		if (f->pending) {
			struct store_job *job =
			    store_job_new(STORE_PENDING_DONE);
			if (job) {
				job->pending_done.user_id = strdup(c->user->id);
				job->pending_done.seq = f->seq;
				store_submit(rt->store, job);
			}
		}
		if (c->unacked.len == UNACKED_KEEP)
			frame_queue_pop(&c->unacked);
		frame_queue_push(&c->unacked, f);
	}
	registry_conn_written(rt->reg, c);
	if (c->replaying && !c->replay_inflight && c->queue.len == 0 &&
	    !c->close_code)
		replay_request(rt, c);
}

void router_conn_acked(struct router *rt, struct conn *c, uint64_t seq)
{
	struct frame *f;
	while ((f = frame_queue_peek(&c->unacked)) && f->seq <= seq) {
		record_outcome(rt, c, f, "acked");
		frame_queue_pop(&c->unacked);
	}
}

void router_conn_closing(struct router *rt, struct conn *c)
{
	drop_queue(rt, c, &c->queue);
	drop_queue(rt, c, &c->held);
	frame_queue_clear(&c->unacked);
}
