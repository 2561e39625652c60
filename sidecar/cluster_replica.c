/*
 * cluster_replica: stream messages into the local SQLite replica, in
 * stream order (see cluster_replica.h).
 */
#include "cluster_replica.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster.pb-c.h"
#include "log.h"

#define USER_ID_MAX 256

/* One per sidecar in cluster mode. */
struct cluster_replica {
	struct cluster_replica_config cfg;
	uint64_t position;
	int epoch_written;               /* the stream's epoch is in meta */
	char epoch[STORE_EPOCH_MAX + 1]; /* what `connected` says */
};

struct cluster_replica *
cluster_replica_new(const struct cluster_replica_config *cfg)
{
	struct cluster_replica *r = calloc(1, sizeof(*r));
	if (!r)
		return NULL;
	r->cfg = *cfg;
	r->position = cfg->position;
	r->epoch_written = *cfg->epoch != '\0';
	/* Until NATS tells: the epoch the replica was made from. */
	if (*cfg->epoch && router_set_epoch(cfg->router, cfg->epoch) == 0)
		snprintf(r->epoch, sizeof(r->epoch), "%s", cfg->epoch);
	return r;
}

void cluster_replica_free(struct cluster_replica *r)
{
	free(r);
}

uint64_t cluster_replica_position(const struct cluster_replica *r)
{
	return r->position;
}

void cluster_replica_stats(const struct cluster_replica *r,
                           struct cluster_stats *out)
{
	int64_t down_us = 0;
	out->node_id = cluster_node_id(r->cfg.cluster);
	out->available = cluster_available(r->cfg.cluster, &down_us);
	out->down_ms =
	    out->available || down_us < 0 ? 0 : (uint64_t)down_us / 1000;
	out->position = r->position;
	out->publish_queued = cluster_publish_queued(r->cfg.publish);
	out->unavailable_answers =
	    cluster_publish_unavailable_answers(r->cfg.publish);
}

static int hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* The user id of "wsgate.<kind>.<hex>" into out; kind is "ev" or "mk". */
static int subject_user(const char *subject, char kind[3],
                        char out[USER_ID_MAX + 1])
{
	if (strncmp(subject, "wsgate.", 7) != 0 || strlen(subject) < 11 ||
	    subject[9] != '.')
		return -1;
	memcpy(kind, subject + 7, 2);
	kind[2] = '\0';
	const char *hex = subject + 10;
	size_t n = strlen(hex);
	if (n == 0 || n % 2 || n / 2 > USER_ID_MAX)
		return -1;
	for (size_t i = 0; i < n / 2; i++) {
		int hi = hex_value(hex[2 * i]), lo = hex_value(hex[2 * i + 1]);
		if (hi < 0 || lo < 0 || (hi | lo) == 0)
			return -1;
		out[i] = (char)(hi << 4 | lo);
	}
	out[n / 2] = '\0';
	return 0;
}

static void apply_record(struct cluster_replica *r, struct cluster_msg *m,
                         const char *user_id)
{
	uint64_t first = m->wsgate_seq ? strtoull(m->wsgate_seq, NULL, 10) : 0;
	Wsgate__Cluster__V1__ClusterRecord *rec =
	    wsgate__cluster__v1__cluster_record__unpack(NULL, m->len, m->data);
	if (!rec || first == 0) {
		log_error("cluster: stream message %llu is not a record:"
		          " skipped",
		          (unsigned long long)m->stream_seq);
		wsgate__cluster__v1__cluster_record__free_unpacked(rec, NULL);
		return;
	}
	struct user *u =
	    registry_user(r->cfg.registry, user_id, strlen(user_id), true);
	if (!u) {
		log_error("cluster: out of memory: record %llu skipped",
		          (unsigned long long)m->stream_seq);
		wsgate__cluster__v1__cluster_record__free_unpacked(rec, NULL);
		return;
	}
	for (size_t i = 0; i < rec->n_events; i++) {
		Wsgate__V1__Event *ev = rec->events[i]->event;
		/* The subject names the user: isolation does not depend on
		 * what the body says. */
		if (!ev || strcmp(ev->user_id, user_id) != 0) {
			log_error("cluster: record %llu: event %zu is not of"
			          " its subject's user: skipped",
			          (unsigned long long)m->stream_seq, i);
			continue;
		}
		size_t index = 0;
		void *owner = cluster_publish_owner(r->cfg.publish, u,
		                                    m->msg_id, i, &index);
		int rc = router_apply_event(
		    r->cfg.router, ev, first + i, rec->events[i]->accepted_at,
		    m->wsgate_node ? m->wsgate_node : "", owner, index);
		if (rc < 0)
			log_error("cluster: out of memory: %s seq %llu not"
			          " applied",
			          user_id, (unsigned long long)(first + i));
		if (rc != 0 && owner)
			cluster_publish_unapplied(r->cfg.publish, owner, index);
	}
	cluster_publish_applied(r->cfg.publish, u, m->msg_id);
	if (m->stream_seq > u->last_stream_seq)
		u->last_stream_seq = m->stream_seq;
	wsgate__cluster__v1__cluster_record__free_unpacked(rec, NULL);
}

static void apply_mark(struct cluster_replica *r, struct cluster_msg *m,
                       const char *user_id)
{
	char num[24];
	size_t n = m->len < sizeof(num) - 1 ? m->len : sizeof(num) - 1;
	memcpy(num, m->data, n);
	num[n] = '\0';
	struct store_job *job = store_job_new(STORE_PENDING_DONE);
	if (!job || !(job->pending_done.user_id = strdup(user_id))) {
		store_job_free(job);
		return;
	}
	job->pending_done.seq = strtoull(num, NULL, 10);
	store_submit(r->cfg.store, job);
}

static void apply_one(struct cluster_replica *r, struct cluster_msg *m)
{
	char kind[3], user_id[USER_ID_MAX + 1];
	if (subject_user(m->subject, kind, user_id))
		log_error("cluster: stream message %llu on %s: skipped",
		          (unsigned long long)m->stream_seq, m->subject);
	else if (strcmp(kind, "ev") == 0)
		apply_record(r, m, user_id);
	else if (strcmp(kind, "mk") == 0)
		apply_mark(r, m, user_id);
	struct store_job *pos = store_job_new(STORE_STREAM_POS);
	if (!pos)
		return; /* the next message's job records the position */
	pos->stream_pos.seq = m->stream_seq;
	if (!r->epoch_written) {
		cluster_epoch(r->cfg.cluster, pos->stream_pos.epoch);
		r->epoch_written = pos->stream_pos.epoch[0] != '\0';
	}
	store_submit(r->cfg.store, pos);
}

/* `connected` names the stream's epoch in cluster mode. */
static void epoch_follow(struct cluster_replica *r)
{
	char epoch[STORE_EPOCH_MAX + 1];
	cluster_epoch(r->cfg.cluster, epoch);
	if (*epoch && strcmp(epoch, r->epoch) != 0 &&
	    router_set_epoch(r->cfg.router, epoch) == 0)
		memcpy(r->epoch, epoch, sizeof(r->epoch));
}

void cluster_replica_apply(struct cluster_replica *r)
{
	epoch_follow(r);
	struct cluster_msg *m = cluster_take_messages(r->cfg.cluster);
	if (!m)
		return;
	store_group_begin(r->cfg.store);
	while (m) {
		struct cluster_msg *next = m->next;
		/* An ordered consumer recreated after a gap may repeat. */
		if (m->stream_seq > r->position) {
			apply_one(r, m);
			r->position = m->stream_seq;
		}
		cluster_msg_free(m);
		m = next;
	}
	store_group_end(r->cfg.store);
}
