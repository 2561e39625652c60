/*
 * cluster: NATS connection, stream, epoch, availability, the replica's
 * ordered consumer and the acked publisher (see cluster.h).
 *
 * Availability follows what the measurements of docs/CLUSTER.md showed:
 * a reconnect is not enough (the first publish after a server restart
 * waited 130-410 ms for the stream's recovery), so after any disconnect
 * the cluster thread asks JetStream for the stream's info and only its
 * answer makes the cluster available again. A publish without an ack
 * makes it unavailable too, until such an answer.
 */
#include "cluster.h"

#include <ctype.h>
#include <nats/nats.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "log.h"

#define PUBLISH_WAIT_MS     2000 /* an ack later than this: unknown outcome */
#define RECONNECT_WAIT_MS   100
#define RECONNECT_BUF       64 /* bytes: publishes while down fail at once */
#define DUPLICATE_WINDOW_US (120 * 1000000LL)
#define THREAD_TICK_MS      100
#define PUBLISHERS          4 /* acked publishes in flight at once */

/* One per sidecar in cluster mode. */
struct cluster {
	struct cluster_config cfg;
	char node_id[CLUSTER_NODE_ID_MAX + 1];
	char stream[256];
	char msg_id_prefix[CLUSTER_NODE_ID_MAX + 24];
	natsConnection *nc;
	jsCtx *js;
	natsSubscription *sub; /* the replica's ordered consumer */
	pthread_t thread;
	int thread_started;
	pthread_t publishers[PUBLISHERS];
	int n_publishers;

	/* Written by libnats callbacks and the cluster thread. */
	atomic_int down;             /* not available (see top) */
	atomic_int_fast64_t down_at; /* since when (microseconds) */

	pthread_mutex_t lk; /* guards everything below */
	pthread_cond_t cv;  /* the cluster thread: work, or stop */
	int stopping;
	int stream_ready; /* stream checked, consumer subscribed */
	int refused;      /* the stream's epoch is not the replica's */
	char epoch[STORE_EPOCH_MAX + 1];
	struct cluster_pub *pub_head, *pub_tail;   /* to publish */
	struct cluster_pub *done_head, *done_tail; /* published */
	struct cluster_msg *msg_head, *msg_tail;   /* received */
};

int cluster_node_id_valid(const char *id)
{
	size_t n = strlen(id);
	if (n == 0 || n > CLUSTER_NODE_ID_MAX)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char)id[i]) && id[i] != '_' &&
		    id[i] != '-')
			return 0;
	return 1;
}

static void mark_down(struct cluster *c)
{
	/* down_at first: whoever sees down sees this outage's start, not
	 * the last one's (GetStats' cluster_down_ms). */
	if (!atomic_load(&c->down)) {
		atomic_store(&c->down_at, clock_now_us());
		atomic_store(&c->down, 1);
	}
}

/* --- libnats callbacks (libnats threads) --- */

static void on_disconnected(natsConnection *nc, void *arg)
{
	struct cluster *c = arg;
	(void)nc;
	mark_down(c);
	log_warn("cluster: NATS disconnected: new events get UNAVAILABLE");
}

static void on_reconnected(natsConnection *nc, void *arg)
{
	struct cluster *c = arg;
	(void)nc;
	log_info("cluster: NATS reconnected");
	pthread_mutex_lock(&c->lk);
	pthread_cond_signal(&c->cv);
	pthread_mutex_unlock(&c->lk);
}

/* The replica's messages, in stream order. */
static void on_stream_msg(natsConnection *nc, natsSubscription *sub,
                          natsMsg *msg, void *arg)
{
	struct cluster *c = arg;
	(void)nc;
	(void)sub;
	jsMsgMetaData *meta = NULL;
	struct cluster_msg *m = calloc(1, sizeof(*m));
	if (!m || natsMsg_GetMetaData(&meta, msg) != NATS_OK) {
		/* The ordered consumer would skip it: a gap in the replica
		 * is worse than stopping it. */
		log_error("cluster: a stream message could not be taken: the"
		          " replica stops here");
		free(m);
		jsMsgMetaData_Destroy(meta);
		natsMsg_Destroy(msg);
		natsSubscription_Unsubscribe(c->sub);
		return;
	}
	m->stream_seq = meta->Sequence.Stream;
	jsMsgMetaData_Destroy(meta);
	m->subject = natsMsg_GetSubject(msg);
	m->data = natsMsg_GetData(msg);
	m->len = (size_t)natsMsg_GetDataLength(msg);
	natsMsgHeader_Get(msg, "Wsgate-Seq", &m->wsgate_seq);
	natsMsgHeader_Get(msg, "Wsgate-Count", &m->wsgate_count);
	natsMsgHeader_Get(msg, "Wsgate-Node", &m->wsgate_node);
	natsMsgHeader_Get(msg, "Nats-Msg-Id", &m->msg_id);
	m->nats_msg = msg;
	pthread_mutex_lock(&c->lk);
	if (c->msg_tail)
		c->msg_tail->next = m;
	else
		c->msg_head = m;
	c->msg_tail = m;
	pthread_mutex_unlock(&c->lk);
	c->cfg.wake(c->cfg.wake_arg);
}

void cluster_msg_free(struct cluster_msg *m)
{
	if (!m)
		return;
	natsMsg_Destroy(m->nats_msg);
	free(m);
}

/* --- the cluster thread --- */

/* The stream as it is, created when missing; its epoch into epoch. */
static natsStatus stream_check(struct cluster *c, char *epoch, size_t cap)
{
	jsStreamInfo *si = NULL;
	jsErrCode je = 0;
	natsStatus s = js_GetStreamInfo(&si, c->js, c->stream, NULL, &je);
	if (s == NATS_NOT_FOUND || je == JSStreamNotFoundErr) {
		const char *subjects[] = {"wsgate.ev.>", "wsgate.mk.>"};
		jsStreamConfig sc;
		jsStreamConfig_Init(&sc);
		sc.Name = c->stream;
		sc.Subjects = subjects;
		sc.SubjectsLen = 2;
		sc.Storage = js_FileStorage;
		sc.Discard = js_DiscardOld;
		sc.MaxAge = c->cfg.max_age_us * 1000;
		/* The server refuses a window larger than MaxAge (10052). */
		int64_t dup = DUPLICATE_WINDOW_US < c->cfg.max_age_us
		                  ? DUPLICATE_WINDOW_US
		                  : c->cfg.max_age_us;
		sc.Duplicates = dup * 1000;
		sc.AllowDirect = true;
		sc.Replicas = c->cfg.replicas;
		je = 0;
		s = js_AddStream(&si, c->js, &sc, NULL, &je);
		if (s == NATS_OK)
			log_info("cluster: stream %s created", c->stream);
		else if (je == JSStreamNameExistErr) /* another node's */
			s = js_GetStreamInfo(&si, c->js, c->stream, NULL, &je);
	}
	if (s == NATS_OK)
		snprintf(epoch, cap, "%lld", (long long)si->Created);
	else
		log_warn("cluster: stream %s: %s (%d) %s", c->stream,
		         natsStatus_GetText(s), (int)je,
		         nats_GetLastError(NULL));
	jsStreamInfo_Destroy(si);
	return s;
}

/* Once connected: the stream, its epoch, the replica's consumer. */
static int stream_setup(struct cluster *c)
{
	char epoch[STORE_EPOCH_MAX + 1];
	if (stream_check(c, epoch, sizeof(epoch)) != NATS_OK)
		return -1;
	if (*c->cfg.epoch && strcmp(c->cfg.epoch, epoch) != 0) {
		log_error("cluster: stream %s has epoch %s, the database's"
		          " replica was made from epoch %s (the stream was"
		          " recreated): start with a new --db; until then"
		          " events get UNAVAILABLE",
		          c->stream, epoch, c->cfg.epoch);
		pthread_mutex_lock(&c->lk);
		c->refused = 1;
		pthread_mutex_unlock(&c->lk);
		return -1;
	}
	jsSubOptions so;
	jsSubOptions_Init(&so);
	so.Stream = c->stream;
	so.Ordered = true;
	so.Config.DeliverPolicy = js_DeliverByStartSequence;
	so.Config.OptStartSeq = c->cfg.start_seq;
	jsErrCode je = 0;
	natsStatus s = js_Subscribe(&c->sub, c->js, "wsgate.>", on_stream_msg,
	                            c, NULL, &so, &je);
	if (s != NATS_OK) {
		log_warn("cluster: subscribing to %s: %s (%d) %s", c->stream,
		         natsStatus_GetText(s), (int)je,
		         nats_GetLastError(NULL));
		return -1;
	}
	/* Our own queue is the buffer: never drop a message. */
	natsSubscription_SetPendingLimits(c->sub, -1, -1);
	pthread_mutex_lock(&c->lk);
	memcpy(c->epoch, epoch, sizeof(c->epoch));
	c->stream_ready = 1;
	pthread_mutex_unlock(&c->lk);
	log_info("cluster: stream %s (epoch %s) read from seq %llu", c->stream,
	         epoch, (unsigned long long)c->cfg.start_seq);
	c->cfg.wake(c->cfg.wake_arg); /* the epoch is known */
	return 0;
}

static uint64_t wrong_last_seq(const char *text)
{
	const char *p = text ? strstr(text, "wrong last sequence: ") : NULL;
	return p ? strtoull(p + strlen("wrong last sequence: "), NULL, 10) : 0;
}

static void publish_one(struct cluster *c, struct cluster_pub *p)
{
	natsMsg *m = NULL;
	jsPubAck *pa = NULL;
	jsErrCode je = 0;
	natsStatus s =
	    natsMsg_Create(&m, p->subject, NULL, p->body, (int)p->body_len);
	if (s == NATS_OK)
		s = natsMsgHeader_Set(m, "Wsgate-Seq", p->first_seq);
	if (s == NATS_OK)
		s = natsMsgHeader_Set(m, "Wsgate-Count", p->count);
	if (s == NATS_OK)
		s = natsMsgHeader_Set(m, "Wsgate-Node", c->node_id);
	if (s == NATS_OK) {
		jsPubOptions po;
		jsPubOptions_Init(&po);
		po.MaxWait = PUBLISH_WAIT_MS;
		po.MsgId = p->msg_id;
		/* ExpectLastSubjectSeq = 0 would mean "no check". */
		if (p->expect_last)
			po.ExpectLastSubjectSeq = p->expect_last;
		else
			po.ExpectNoMessage = true;
		s = js_PublishMsg(&pa, c->js, m, &po, &je);
	}
	natsMsg_Destroy(m);
	p->error[0] = '\0';
	if (s == NATS_OK) {
		p->result = CLUSTER_PUB_STORED;
		p->stream_seq = pa->Sequence;
		p->duplicate = pa->Duplicate;
		atomic_store(&c->down, 0);
	} else if (je == JSStreamWrongLastSequenceErr) {
		p->result = CLUSTER_PUB_CONFLICT;
		p->last_seq = wrong_last_seq(nats_GetLastError(NULL));
		atomic_store(&c->down, 0);
	} else if (je == 0 && s != NATS_INVALID_ARG && s != NATS_MAX_PAYLOAD) {
		/* No JetStream answer: the record may be stored anyway (the
		 * reconnect buffer, a late ack). */
		p->result = CLUSTER_PUB_UNKNOWN;
		mark_down(c);
	} else {
		p->result = CLUSTER_PUB_REFUSED;
	}
	if (p->result != CLUSTER_PUB_STORED)
		snprintf(p->error, sizeof(p->error), "%s (%d): %s",
		         natsStatus_GetText(s), (int)je,
		         nats_GetLastError(NULL));
	jsPubAck_Destroy(pa);
}

/* Whether the connection answers JetStream requests (after a
 * disconnect or a publish without an ack). */
static void probe(struct cluster *c)
{
	char epoch[STORE_EPOCH_MAX + 1];
	if (stream_check(c, epoch, sizeof(epoch)) != NATS_OK)
		return;
	pthread_mutex_lock(&c->lk);
	int same = strcmp(epoch, c->epoch) == 0;
	pthread_mutex_unlock(&c->lk);
	if (!same) {
		log_error("cluster: stream %s was recreated (epoch %s, was"
		          " %s): restart the sidecar with a new --db",
		          c->stream, epoch, c->epoch);
		return;
	}
	atomic_store(&c->down, 0);
	log_info("cluster: available again");
}

/* Waits on cv (lock held) for a signal or THREAD_TICK_MS. */
static void wait_tick(struct cluster *c)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_nsec += THREAD_TICK_MS * 1000000L;
	ts.tv_sec += ts.tv_nsec / 1000000000L;
	ts.tv_nsec %= 1000000000L;
	pthread_cond_timedwait(&c->cv, &c->lk, &ts);
}

/* The cluster thread: the stream once connected, and the probe that makes
 * the cluster available again after it went down. */
static void *cluster_main(void *arg)
{
	struct cluster *c = arg;
	pthread_setname_np(pthread_self(), "wsgate:cluster");
	pthread_mutex_lock(&c->lk);
	while (!c->stopping) {
		int connected =
		    natsConnection_Status(c->nc) == NATS_CONN_STATUS_CONNECTED;
		if (connected && !c->refused &&
		    (!c->stream_ready || atomic_load(&c->down))) {
			int ready = c->stream_ready;
			pthread_mutex_unlock(&c->lk);
			if (!ready && stream_setup(c) == 0)
				atomic_store(&c->down, 0);
			else if (ready)
				probe(c);
			pthread_mutex_lock(&c->lk);
			if (!atomic_load(&c->down)) /* publishers: go on */
				pthread_cond_broadcast(&c->cv);
		}
		if (!c->stopping)
			wait_tick(c);
	}
	pthread_mutex_unlock(&c->lk);
	return NULL;
}

/*
 * A publisher thread: one acked publish at a time, taken from the queue
 * while the cluster is available (a record waits while it is not). Several
 * run, so that records of different users are in flight together; one
 * user's are never (the lanes: one record in flight per user).
 */
static void *publisher_main(void *arg)
{
	struct cluster *c = arg;
	pthread_setname_np(pthread_self(), "wsgate:publish");
	pthread_mutex_lock(&c->lk);
	for (;;) {
		while (!c->stopping && !(c->pub_head && c->stream_ready &&
		                         !atomic_load(&c->down)))
			wait_tick(c);
		if (c->stopping)
			break;
		struct cluster_pub *p = c->pub_head;
		c->pub_head = p->next;
		if (!c->pub_head)
			c->pub_tail = NULL;
		p->next = NULL;
		pthread_mutex_unlock(&c->lk);
		publish_one(c, p);
		pthread_mutex_lock(&c->lk);
		if (c->done_tail)
			c->done_tail->next = p;
		else
			c->done_head = p;
		c->done_tail = p;
		pthread_mutex_unlock(&c->lk);
		c->cfg.wake(c->cfg.wake_arg);
		pthread_mutex_lock(&c->lk);
	}
	pthread_mutex_unlock(&c->lk);
	return NULL;
}

/* --- open / close --- */

static int set_servers(natsOptions *o, const char *urls)
{
	char *copy = strdup(urls);
	const char *list[32];
	int n = 0;
	if (!copy)
		return -1;
	for (char *save = NULL, *t = strtok_r(copy, ",", &save); t && n < 32;
	     t = strtok_r(NULL, ",", &save))
		list[n++] = t;
	natsStatus s = n ? natsOptions_SetServers(o, list, n) : NATS_ERR;
	free(copy);
	return s == NATS_OK ? 0 : -1;
}

int cluster_open(struct cluster **out, const struct cluster_config *cfg,
                 char *err, size_t errlen)
{
	if (!cluster_node_id_valid(cfg->node_id)) {
		snprintf(err, errlen,
		         "--node-id '%s': expected 1-%d of [A-Za-z0-9_-]",
		         cfg->node_id, CLUSTER_NODE_ID_MAX);
		return -1;
	}
	struct cluster *c = calloc(1, sizeof(*c));
	if (!c) {
		snprintf(err, errlen, "cluster: out of memory");
		return -1;
	}
	c->cfg = *cfg;
	snprintf(c->node_id, sizeof(c->node_id), "%s", cfg->node_id);
	snprintf(c->stream, sizeof(c->stream), "%s", cfg->stream);
	c->cfg.node_id = c->node_id;
	c->cfg.stream = c->stream;
	unsigned char boot[8];
	if (RAND_bytes(boot, sizeof(boot)) != 1) {
		free(c);
		snprintf(err, errlen, "cluster: no random boot id");
		return -1;
	}
	snprintf(c->msg_id_prefix, sizeof(c->msg_id_prefix),
	         "%s:%02x%02x%02x%02x%02x%02x%02x%02x", c->node_id, boot[0],
	         boot[1], boot[2], boot[3], boot[4], boot[5], boot[6], boot[7]);
	atomic_init(&c->down, 1);
	atomic_init(&c->down_at, clock_now_us());
	pthread_mutex_init(&c->lk, NULL);
	pthread_cond_init(&c->cv, NULL);

	natsOptions *o = NULL;
	natsStatus s = natsOptions_Create(&o);
	if (s == NATS_OK && set_servers(o, cfg->urls))
		s = NATS_INVALID_ARG;
	if (s == NATS_OK)
		s = natsOptions_SetName(o, c->node_id);
	if (s == NATS_OK)
		s = natsOptions_SetMaxReconnect(o, -1);
	if (s == NATS_OK)
		s = natsOptions_SetReconnectWait(o, RECONNECT_WAIT_MS);
	/* Nothing parked in the client while down (docs/CLUSTER.md). */
	if (s == NATS_OK)
		s = natsOptions_SetReconnectBufSize(o, RECONNECT_BUF);
	/* With a connected callback, Connect returns NATS_NOT_YET_CONNECTED
	 * and keeps trying in the background; without one it would retry
	 * in place, forever, and the sidecar would never start. */
	if (s == NATS_OK)
		s = natsOptions_SetRetryOnFailedConnect(o, true, on_reconnected,
		                                        c);
	if (s == NATS_OK)
		s = natsOptions_SetDisconnectedCB(o, on_disconnected, c);
	if (s == NATS_OK)
		s = natsOptions_SetReconnectedCB(o, on_reconnected, c);
	if (s == NATS_OK) {
		s = natsConnection_Connect(&c->nc, o);
		if (s == NATS_NOT_YET_CONNECTED) {
			log_warn("cluster: NATS not reachable yet (%s): new"
			         " events get UNAVAILABLE until it is",
			         cfg->urls);
			s = NATS_OK;
		}
	}
	natsOptions_Destroy(o);
	jsOptions jo;
	jsOptions_Init(&jo);
	jo.Wait = PUBLISH_WAIT_MS;
	if (s == NATS_OK)
		s = natsConnection_JetStream(&c->js, c->nc, &jo);
	if (s != NATS_OK) {
		snprintf(err, errlen, "--cluster %s: %s %s", cfg->urls,
		         natsStatus_GetText(s), nats_GetLastError(NULL));
		cluster_close(c);
		return -1;
	}
	if (pthread_create(&c->thread, NULL, cluster_main, c) != 0) {
		snprintf(err, errlen, "cluster: cannot start its thread");
		cluster_close(c);
		return -1;
	}
	c->thread_started = 1;
	for (; c->n_publishers < PUBLISHERS; c->n_publishers++)
		if (pthread_create(&c->publishers[c->n_publishers], NULL,
		                   publisher_main, c) != 0) {
			snprintf(err, errlen,
			         "cluster: cannot start its publishers");
			cluster_close(c);
			return -1;
		}
	*out = c;
	return 0;
}

void cluster_close(struct cluster *c)
{
	if (!c)
		return;
	if (c->thread_started) {
		pthread_mutex_lock(&c->lk);
		c->stopping = 1;
		pthread_cond_broadcast(&c->cv);
		pthread_mutex_unlock(&c->lk);
		pthread_join(c->thread, NULL);
		for (int i = 0; i < c->n_publishers; i++)
			pthread_join(c->publishers[i], NULL);
	}
	/* No more callbacks after the subscription and connection are
	 * gone; then what they queued is ours to free. */
	/* Unsubscribing deletes the ordered consumer with a JetStream
	 * request: without a connection it only waits for its timeout (2 s
	 * more to every stop after an outage). The server drops an idle
	 * ephemeral consumer by itself. */
	if (c->sub &&
	    natsConnection_Status(c->nc) == NATS_CONN_STATUS_CONNECTED)
		natsSubscription_Unsubscribe(c->sub);
	natsSubscription_Destroy(c->sub);
	jsCtx_Destroy(c->js);
	if (c->nc)
		natsConnection_Close(c->nc);
	natsConnection_Destroy(c->nc);
	/* Before nats_CloseAndWait: destroying a natsMsg after the library
	 * is closed uses its freed garbage collector (SIGSEGV seen). */
	struct cluster_msg *m = c->msg_head;
	while (m) {
		struct cluster_msg *next = m->next;
		cluster_msg_free(m);
		m = next;
	}
	nats_CloseAndWait(2000);
	pthread_mutex_destroy(&c->lk);
	pthread_cond_destroy(&c->cv);
	free(c);
}

/* --- service thread --- */

int cluster_available(struct cluster *c, int64_t *down_us)
{
	if (!atomic_load(&c->down))
		return 1;
	if (down_us)
		*down_us = clock_now_us() - atomic_load(&c->down_at);
	return 0;
}

void cluster_epoch(struct cluster *c, char buf[STORE_EPOCH_MAX + 1])
{
	pthread_mutex_lock(&c->lk);
	memcpy(buf, c->epoch, STORE_EPOCH_MAX + 1);
	pthread_mutex_unlock(&c->lk);
}

const char *cluster_msg_id_prefix(const struct cluster *c)
{
	return c->msg_id_prefix;
}

const char *cluster_node_id(const struct cluster *c)
{
	return c->node_id;
}

int cluster_publish_unacked(struct cluster *c, const char *subject,
                            const char *body)
{
	return natsConnection_PublishString(c->nc, subject, body) == NATS_OK
	           ? 0
	           : -1;
}

void cluster_publish(struct cluster *c, struct cluster_pub *p)
{
	p->next = NULL;
	pthread_mutex_lock(&c->lk);
	if (c->pub_tail)
		c->pub_tail->next = p;
	else
		c->pub_head = p;
	c->pub_tail = p;
	/* The cluster thread and the publishers share cv. */
	pthread_cond_broadcast(&c->cv);
	pthread_mutex_unlock(&c->lk);
}

struct cluster_pub *cluster_take_published(struct cluster *c)
{
	pthread_mutex_lock(&c->lk);
	struct cluster_pub *list = c->done_head;
	c->done_head = c->done_tail = NULL;
	pthread_mutex_unlock(&c->lk);
	return list;
}

struct cluster_msg *cluster_take_messages(struct cluster *c)
{
	pthread_mutex_lock(&c->lk);
	struct cluster_msg *list = c->msg_head;
	c->msg_head = c->msg_tail = NULL;
	pthread_mutex_unlock(&c->lk);
	return list;
}
