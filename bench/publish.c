/*
 * publish: the publisher threads (see publish.h).
 */
#include "publish.h"
#include "bench_common.h"
#include "http_pub.h"
#include "wsgate.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ID_MAX 64

struct pub_thread {
	struct publisher *pub;
	unsigned k;
	pthread_t tid;
	bool started;
	struct pub_result r;
};

struct publisher {
	struct pub_cfg cfg;
	_Atomic uint64_t *accepted;
	atomic_uint done_threads;
	_Atomic uint64_t accepted_total;
	atomic_bool stop;
	int64_t start_ns;
	struct pub_thread *t;
	/* One control client shared by every thread, as the threads of one
	 * backend process share it: libwsgate then merges their concurrent
	 * single sends into batches. NULL with --nchan or if it cannot open. */
	wsgate_client *client;
};

/* One batch's worth of events being built and sent by one thread. */
struct pub_batch {
	unsigned n;
	uint64_t *idx;
	char (*ids)[ID_MAX];
	char *payloads; /* n * payload_cap */
	size_t *lens;
	size_t payload_cap;
	struct wsgate_event *ev;
	struct wsgate_event_result *res;
	unsigned *pending; /* positions still to (re)send */
	unsigned n_pending;
	/* nchan */
	const char **paths;
	const char **bodies;
	int *status;
	char (*path_buf)[ID_MAX + 8];
};

static void set_error(struct pub_result *r, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void set_error(struct pub_result *r, const char *fmt, ...)
{
	if (r->first_error[0] != '\0')
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(r->first_error, sizeof(r->first_error), fmt, ap);
	va_end(ap);
}

static int batch_alloc(struct pub_batch *b, unsigned cap, size_t payload)
{
	memset(b, 0, sizeof(*b));
	b->payload_cap = payload + 128;
	b->idx = calloc(cap, sizeof(*b->idx));
	b->ids = calloc(cap, sizeof(*b->ids));
	b->payloads = calloc(cap, b->payload_cap);
	b->lens = calloc(cap, sizeof(*b->lens));
	b->ev = calloc(cap, sizeof(*b->ev));
	b->res = calloc(cap, sizeof(*b->res));
	b->pending = calloc(cap, sizeof(*b->pending));
	b->paths = calloc(cap, sizeof(*b->paths));
	b->bodies = calloc(cap, sizeof(*b->bodies));
	b->status = calloc(cap, sizeof(*b->status));
	b->path_buf = calloc(cap, sizeof(*b->path_buf));
	return b->idx && b->ids && b->payloads && b->lens && b->ev && b->res &&
	               b->pending && b->paths && b->bodies && b->status &&
	               b->path_buf
	           ? 0
	           : -1;
}

static void batch_free(struct pub_batch *b)
{
	free(b->idx);
	free(b->ids);
	free(b->payloads);
	free(b->lens);
	free(b->ev);
	free(b->res);
	free(b->pending);
	free(b->paths);
	free(b->bodies);
	free(b->status);
	free(b->path_buf);
}

static void sleep_until(int64_t t_ns)
{
	struct timespec ts = {.tv_sec = t_ns / 1000000000,
	                      .tv_nsec = t_ns % 1000000000};
	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) != 0)
		;
}

static void sleep_ms(int ms)
{
	sleep_until(bench_now_ns() + (int64_t)ms * 1000000);
}

/* Fills positions 0..n-1 of b with events idx[], stamped now. */
static void batch_build(struct publisher *p, struct pub_batch *b)
{
	const struct pub_cfg *cfg = &p->cfg;
	int64_t t = bench_now_ns();
	for (unsigned i = 0; i < b->n; i++) {
		const char *user = cfg->user_names[b->idx[i] % cfg->users];
		char *pl = b->payloads + (size_t)i * b->payload_cap;
		snprintf(b->ids[i], ID_MAX, "%s-%llu", cfg->id_prefix,
		         (unsigned long long)b->idx[i]);
		b->lens[i] = bench_payload(pl, b->payload_cap, t, b->idx[i],
		                           user, cfg->payload_bytes);
		b->ev[i] = (struct wsgate_event){
		    .event_id = b->ids[i],
		    .user_id = user,
		    .thread_id = "t1",
		    .run_id = "r1",
		    .type = WSGATE_AGENT_THINKING,
		    .payload_json = pl,
		    .payload_len = b->lens[i],
		};
		snprintf(b->path_buf[i], sizeof(b->path_buf[i]), "/pub/%s",
		         user);
		b->paths[i] = b->path_buf[i];
		b->bodies[i] = pl;
		b->pending[i] = i;
	}
	b->n_pending = b->n;
}

static void count_accepted(struct publisher *p, struct pub_result *r,
                           uint64_t idx)
{
	atomic_fetch_add_explicit(&p->accepted[idx % p->cfg.users], 1,
	                          memory_order_relaxed);
	atomic_fetch_add_explicit(&p->accepted_total, 1, memory_order_relaxed);
	r->accepted++;
}

/* Sends the pending events of b through libwsgate, retrying those that
 * were refused for overload, refused while the cluster was unavailable or
 * timed out until the deadline (same event_id: a retry is idempotent). */
static void send_wsgate(struct publisher *p, struct pub_thread *th,
                        wsgate_client *cl, struct pub_batch *b)
{
	struct pub_result *r = &th->r;
	struct wsgate_event sub[WSGATE_MAX_BATCH];
	struct wsgate_event_result res[WSGATE_MAX_BATCH];

	while (b->n_pending > 0) {
		unsigned n = b->n_pending;
		for (unsigned i = 0; i < n; i++)
			sub[i] = b->ev[b->pending[i]];
		int64_t t0 = bench_now_ns();
		if (p->cfg.batch <= 1)
			wsgate_send_event(cl, &sub[0], &res[0]);
		else
			wsgate_send_batch(cl, sub, n, res);
		int64_t t1 = bench_now_ns();
		r->requests++;
		histo_add(&r->rtt, (uint64_t)(t1 - t0));
		r->last_reply_ns = t1;

		unsigned keep = 0;
		for (unsigned i = 0; i < n; i++) {
			unsigned pos = b->pending[i];
			enum wsgate_status st = res[i].status;
			if (st == WSGATE_OK) {
				count_accepted(p, r, b->idx[pos]);
				r->duplicates += res[i].duplicate;
			} else if (st == WSGATE_RESOURCE_EXHAUSTED ||
			           st == WSGATE_UNAVAILABLE ||
			           st == WSGATE_ERR_TIMEOUT) {
				b->pending[keep++] = pos;
			} else {
				r->errors++;
				set_error(r, "event %s: %s: %s", b->ids[pos],
				          wsgate_status_name(st), res[i].error);
			}
		}
		b->n_pending = keep;
		if (keep == 0)
			break;
		if (atomic_load(&p->stop) || t1 > p->cfg.deadline_ns) {
			r->errors += keep;
			set_error(r, "gave up on %u events at the deadline: %s",
			          keep, res[0].error);
			break;
		}
		r->retries += keep;
		sleep_ms(1);
	}
}

/* Sends b as pipelined POSTs to nchan; no retries (not idempotent). */
static void send_nchan(struct publisher *p, struct pub_thread *th,
                       struct http_conn *h, struct pub_batch *b)
{
	struct pub_result *r = &th->r;
	int64_t t0 = bench_now_ns();
	int rc = http_post_pipelined(h, b->paths, b->bodies, b->lens, b->n,
	                             b->status);
	int64_t t1 = bench_now_ns();
	r->requests++;
	histo_add(&r->rtt, (uint64_t)(t1 - t0));
	r->last_reply_ns = t1;
	if (rc < 0)
		set_error(r, "nchan publish: %s", h->err);
	for (unsigned i = 0; i < b->n; i++) {
		if (b->status[i] == 201 || b->status[i] == 202) {
			count_accepted(p, r, b->idx[i]);
		} else {
			r->errors++;
			if (b->status[i] != 0)
				set_error(r, "nchan publish to %s: HTTP %d",
				          b->paths[i], b->status[i]);
		}
	}
}

/* Waits (up to the stop time or deadline) while too many accepted frames
 * are still on their way. */
static void wait_window(struct publisher *p, struct pub_result *r)
{
	const struct pub_cfg *cfg = &p->cfg;
	bool waited = false;
	for (;;) {
		uint64_t sent =
		    atomic_load(&p->accepted_total) * cfg->conns_per_user;
		uint64_t got = atomic_load(cfg->received);
		if (sent <= got || sent - got <= cfg->window)
			break;
		int64_t now = bench_now_ns();
		if (atomic_load(&p->stop) || now > cfg->deadline_ns ||
		    (cfg->stop_at_ns > 0 && now >= cfg->stop_at_ns))
			break;
		waited = true;
		sleep_until(now + 100000);
	}
	r->window_waits += waited;
}

static void *pub_main(void *arg)
{
	struct pub_thread *th = arg;
	struct publisher *p = th->pub;
	const struct pub_cfg *cfg = &p->cfg;
	struct pub_result *r = &th->r;
	const uint64_t K = cfg->threads, B = cfg->batch;
	wsgate_client *cl = p->client;
	struct http_conn h = {.fd = -1};
	struct pub_batch b;

	if (batch_alloc(&b, cfg->batch, cfg->payload_bytes) < 0) {
		set_error(r, "out of memory");
		goto out;
	}
	if (cfg->nchan) {
		if (http_open(&h, cfg->nchan_port, cfg->timeout_ms) < 0) {
			set_error(r, "nchan: %s", h.err);
			goto out;
		}
	} else if (cl == NULL) {
		set_error(r, "wsgate_client_open %s failed",
		          cfg->control_url ? cfg->control_url : "(default)");
		goto out;
	}

	for (uint64_t j = 0;; j++) {
		uint64_t first = th->k + K * j * B;
		if (first >= cfg->events || atomic_load(&p->stop))
			break;
		if (cfg->rate > 0) {
			int64_t due = p->start_ns + (int64_t)((double)first /
			                                      cfg->rate * 1e9);
			int64_t now = bench_now_ns();
			if (due > now)
				sleep_until(due);
			else if ((double)(now - due) / 1e6 > r->max_lag_ms)
				r->max_lag_ms = (double)(now - due) / 1e6;
		}
		if (cfg->window > 0 && cfg->received != NULL)
			wait_window(p, r);
		int64_t now = bench_now_ns();
		if (cfg->stop_at_ns > 0 && now >= cfg->stop_at_ns)
			break;
		if (now > cfg->deadline_ns) {
			set_error(r,
			          "stopped at the deadline after %llu events",
			          (unsigned long long)r->attempted);
			r->cut_short = 1;
			break;
		}
		b.n = 0;
		for (uint64_t x = 0; x < B; x++) {
			uint64_t i = th->k + K * (j * B + x);
			if (i >= cfg->events)
				break;
			b.idx[b.n++] = i;
		}
		batch_build(p, &b);
		if (r->first_send_ns == 0)
			r->first_send_ns = bench_now_ns();
		r->attempted += b.n;
		if (cfg->nchan)
			send_nchan(p, th, &h, &b);
		else
			send_wsgate(p, th, cl, &b);
	}
out:
	http_close(&h);
	batch_free(&b);
	atomic_fetch_add(&p->done_threads, 1);
	return NULL;
}

struct publisher *pub_start(const struct pub_cfg *cfg,
                            _Atomic uint64_t *accepted)
{
	struct publisher *p = calloc(1, sizeof(*p));
	if (p == NULL)
		return NULL;
	p->cfg = *cfg;
	if (p->cfg.threads == 0)
		p->cfg.threads = 1;
	if (p->cfg.batch == 0)
		p->cfg.batch = 1;
	if (p->cfg.batch > WSGATE_MAX_BATCH)
		p->cfg.batch = WSGATE_MAX_BATCH;
	p->accepted = accepted;
	p->t = calloc(p->cfg.threads, sizeof(*p->t));
	if (p->t == NULL) {
		free(p);
		return NULL;
	}
	if (!p->cfg.nchan && wsgate_client_open(&p->client, cfg->control_url,
	                                        cfg->timeout_ms) != WSGATE_OK)
		p->client = NULL; /* each thread reports it */
	p->start_ns = bench_now_ns();
	for (unsigned k = 0; k < p->cfg.threads; k++) {
		struct pub_thread *th = &p->t[k];
		th->pub = p;
		th->k = k;
		histo_init(&th->r.rtt);
		if (pthread_create(&th->tid, NULL, pub_main, th) == 0)
			th->started = true;
		else
			atomic_fetch_add(&p->done_threads, 1);
	}
	return p;
}

int pub_done(struct publisher *p)
{
	return atomic_load(&p->done_threads) >= p->cfg.threads;
}

void pub_stop(struct publisher *p)
{
	atomic_store(&p->stop, true);
}

void pub_join(struct publisher *p, struct pub_result *out)
{
	memset(out, 0, sizeof(*out));
	histo_init(&out->rtt);
	for (unsigned k = 0; k < p->cfg.threads; k++) {
		struct pub_thread *th = &p->t[k];
		if (th->started)
			pthread_join(th->tid, NULL);
		else
			snprintf(out->first_error, sizeof(out->first_error),
			         "cannot start publisher thread %u", k);
		struct pub_result *r = &th->r;
		out->attempted += r->attempted;
		out->accepted += r->accepted;
		out->errors += r->errors;
		out->retries += r->retries;
		out->duplicates += r->duplicates;
		out->requests += r->requests;
		out->window_waits += r->window_waits;
		out->cut_short |= r->cut_short;
		if (r->first_send_ns && (!out->first_send_ns ||
		                         r->first_send_ns < out->first_send_ns))
			out->first_send_ns = r->first_send_ns;
		if (r->last_reply_ns > out->last_reply_ns)
			out->last_reply_ns = r->last_reply_ns;
		if (r->max_lag_ms > out->max_lag_ms)
			out->max_lag_ms = r->max_lag_ms;
		for (unsigned i = 0; i < HISTO_BUCKETS; i++)
			out->rtt.b[i] += r->rtt.b[i];
		out->rtt.count += r->rtt.count;
		out->rtt.sum += r->rtt.sum;
		if (r->rtt.count && r->rtt.min < out->rtt.min)
			out->rtt.min = r->rtt.min;
		if (r->rtt.max > out->rtt.max)
			out->rtt.max = r->rtt.max;
		if (out->first_error[0] == '\0' && r->first_error[0] != '\0')
			memcpy(out->first_error, r->first_error,
			       sizeof(out->first_error));
	}
	wsgate_client_close(p->client);
	free(p->t);
	free(p);
}
