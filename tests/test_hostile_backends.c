/*
 * test_hostile_backends: broken and hostile backends on the control socket
 * of one real sidecar process.
 *
 * Each test plays a backend that misbehaves -- truncated or mistyped
 * protobuf, garbage, batches at and past every limit, a backend that never
 * reads its replies, one that vanishes (socket closed, process killed)
 * mid-request, thousands of requests in flight at once -- speaking NNG
 * directly (cooked and raw req0 sockets built here). Each must get an error
 * reply or a bounded queue. After each one the test checks that the
 * sidecar is still running, that its peak RSS (VmHWM) stayed under
 * RSS_BOUND_MIB, and that a well-behaved backend (libwsgate) still gets OK
 * replies whose events reach its user's WebSocket; that backend's latency
 * is printed before and during the abuse (never asserted: machines differ).
 *
 * One sidecar serves the whole file; every test uses its own user ids.
 * Nothing sleeps to synchronise: every wait is a blocking call with a
 * timeout or a polled condition with a deadline.
 *
 * Run as "test_hostile_backends --vanishing-backend URL N", the binary is
 * the child process that sends N requests and is killed mid-request.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>

#include "test_clock.h"
#include "proc_status.h"
#include "sidecar_proc.h"
#include "ws_client.h"
#include "wsgate.h"
#include "wsgate.pb-c.h"

#define CALL_MS   10000 /* one libwsgate call or raw round trip */
#define RECV_MS   10000 /* one frame on the good user's WebSocket */
#define POLL_MS   60000 /* deadline of a polled condition */
#define N_TESTS   7     /* the tests of main(); see group_teardown */
#define PROBE_N   12    /* good-backend events per latency probe */
#define GOOD_USER "good-user"

/* Peak RSS the sidecar may reach over the whole file. The largest single
 * cost is a few 15 MB batches in service at once (message, decoded copy,
 * store job); ASan adds shadow memory and a 256 MiB quarantine. */
#if defined(__SANITIZE_ADDRESS__)
#define RSS_BOUND_MIB 1536
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define RSS_BOUND_MIB 1536
#endif
#endif
#ifndef RSS_BOUND_MIB
#define RSS_BOUND_MIB 512
#endif

#define NEAR_LIMIT_EVENTS   15      /* x PAYLOAD_MAX: just under 16 MiB */
#define OVER_LIMIT_EVENTS   17      /* x PAYLOAD_MAX: over 16 MiB */
#define PAYLOAD_MAX         1000000 /* bytes of JSON, under --max-payload */
#define NEAR_LIMIT_INFLIGHT 3       /* such batches in service at once */

#define FLOOD_SOCKETS  4
#define FLOOD_CONTEXTS 600 /* per socket: 2400 requests in flight */
#define FLOOD_ROUNDS   2   /* requests per context */

#define SILENT_CONTEXTS 1000 /* cooked req0 contexts that never receive */
#define VANISH_REQUESTS 200  /* requests of the killed child */

/* One of these for the whole file. */
struct hostile {
	struct sidecar *sc;
	wsgate_client *good;       /* the well-behaved backend */
	struct ws_client *browser; /* GOOD_USER's WebSocket */
	uint64_t good_seq;         /* last seq GOOD_USER was sent */
	unsigned good_n;           /* events the good backend sent */
	int passed;                /* tests that reached their last line */
	char self_exe[4096];       /* this binary, for the vanishing child */
};

static int64_t now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* --- the sidecar's health: running, peak memory --- */

/* The sidecar is still running and its peak RSS is under the bound. */
static void expect_healthy(struct hostile *h, const char *after)
{
	int status = -1;
	long rss, hwm;

	if (!sidecar_running(h->sc, &status))
		fail_msg("sidecar died after %s (status %d)", after, status);
	rss = proc_status_field(h->sc->pid, "VmRSS");
	hwm = proc_status_field(h->sc->pid, "VmHWM");
	assert_true(rss > 0 && hwm > 0);
	print_message("  sidecar memory after %s: RSS %ld MiB, peak %ld MiB "
	              "(bound %d MiB)\n",
	              after, rss / 1024, hwm / 1024, RSS_BOUND_MIB);
	if (hwm > (long)RSS_BOUND_MIB * 1024)
		fail_msg("sidecar peak RSS %ld MiB over the %d MiB bound",
		         hwm / 1024, RSS_BOUND_MIB);
}

/* --- the well-behaved backend and its user --- */

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/* Sends PROBE_N events to GOOD_USER through libwsgate; each must be OK,
 * take the next seq, and arrive on the user's WebSocket. Prints the
 * latency of the calls. */
static void good_probe(struct hostile *h, const char *label)
{
	double ms[PROBE_N];

	for (int i = 0; i < PROBE_N; i++) {
		char id[64], payload[64], want[96];
		struct wsgate_event_result res;
		struct wsgate_event ev = {
		    .event_id = id,
		    .user_id = GOOD_USER,
		    .thread_id = "t-good",
		    .run_id = "r-good",
		    .type = WSGATE_AGENT_THINKING,
		    .payload_json = payload,
		};
		enum wsgate_status st;
		char *frame;
		int64_t t0;

		snprintf(id, sizeof(id), "good-%u", ++h->good_n);
		ev.payload_len = (size_t)snprintf(payload, sizeof(payload),
		                                  "{\"n\":%u}", h->good_n);
		t0 = now_us();
		st = wsgate_send_event(h->good, &ev, &res);
		ms[i] = (double)(now_us() - t0) / 1000.0;
		if (st != WSGATE_OK)
			fail_msg("%s: good backend's event %s: %s (%s)", label,
			         id, wsgate_status_name(st),
			         wsgate_client_error(h->good));
		assert_int_equal(res.seq, h->good_seq + 1);
		assert_int_equal(res.connections, 1);
		h->good_seq = res.seq;
		frame = ws_client_recv_text(h->browser, RECV_MS);
		if (!frame)
			fail_msg("%s: event %s not delivered: %s", label, id,
			         ws_client_error());
		snprintf(want, sizeof(want), "\"event_id\":\"%s\"", id);
		if (!strstr(frame, want))
			fail_msg("%s: expected %s, got %s", label, id, frame);
		free(frame);
	}
	qsort(ms, PROBE_N, sizeof(ms[0]), cmp_double);
	print_message("  good backend latency %s: min %.2f / median %.2f / "
	              "max %.2f ms over %d SendEvent\n",
	              label, ms[0], ms[PROBE_N / 2], ms[PROBE_N - 1], PROBE_N);
}

/* --- raw requests --- */

static void *pack_request(const Wsgate__V1__Request *r, size_t *len)
{
	void *buf;

	*len = wsgate__v1__request__get_packed_size(r);
	buf = malloc(*len ? *len : 1);
	assert_non_null(buf);
	wsgate__v1__request__pack(r, buf);
	return buf;
}

/* A cooked req0 socket dialled to the sidecar. */
static nng_socket req_open(struct hostile *h, int recv_ms)
{
	nng_socket s;

	assert_int_equal(nng_req0_open(&s), 0);
	assert_int_equal(nng_socket_set_ms(s, NNG_OPT_RECVTIMEO, recv_ms), 0);
	assert_int_equal(nng_socket_set_ms(s, NNG_OPT_SENDTIMEO, CALL_MS), 0);
	assert_int_equal(nng_socket_set_size(s, NNG_OPT_RECVMAXSZ, 0), 0);
	assert_int_equal(nng_dial(s, h->sc->control_url, NULL, 0), 0);
	return s;
}

/* Sends len raw bytes as one request and returns the decoded reply, or
 * NULL with *rv set (NNG_ETIMEDOUT: no reply). */
static Wsgate__V1__Reply *raw_call(nng_socket s, const void *buf, size_t len,
                                   int *rv)
{
	nng_msg *m;
	Wsgate__V1__Reply *rep;

	assert_int_equal(nng_msg_alloc(&m, len), 0);
	if (len)
		memcpy(nng_msg_body(m), buf, len);
	if ((*rv = nng_sendmsg(s, m, 0)) != 0) {
		nng_msg_free(m);
		return NULL;
	}
	if ((*rv = nng_recvmsg(s, &m, 0)) != 0)
		return NULL;
	rep = wsgate__v1__reply__unpack(NULL, nng_msg_len(m), nng_msg_body(m));
	nng_msg_free(m);
	if (!rep)
		fail_msg("the sidecar's reply is not a wsgate.v1.Reply");
	if (rep->status == WSGATE__V1__STATUS__STATUS_UNSPECIFIED)
		fail_msg("reply with STATUS_UNSPECIFIED");
	return rep;
}

/* Sends buf and expects INVALID_ARGUMENT whose error contains want (NULL:
 * any non-empty error). */
static void expect_invalid(nng_socket s, const char *what, const void *buf,
                           size_t len, const char *want)
{
	int rv;
	Wsgate__V1__Reply *rep = raw_call(s, buf, len, &rv);

	if (!rep)
		fail_msg("%s: no reply (%s)", what, nng_strerror(rv));
	if (rep->status != WSGATE__V1__STATUS__INVALID_ARGUMENT)
		fail_msg("%s: status %d, want INVALID_ARGUMENT", what,
		         rep->status);
	if (!rep->error || !*rep->error)
		fail_msg("%s: INVALID_ARGUMENT without an error text", what);
	if (want && !strstr(rep->error, want))
		fail_msg("%s: error \"%s\" does not name %s", what, rep->error,
		         want);
	wsgate__v1__reply__free_unpacked(rep, NULL);
}

/* An event with a JSON payload of payload_len bytes (a JSON string). */
static Wsgate__V1__Event *event_new(const char *user, const char *id,
                                    size_t payload_len)
{
	Wsgate__V1__Event *ev = calloc(1, sizeof(*ev));

	assert_non_null(ev);
	wsgate__v1__event__init(ev);
	ev->event_id = strdup(id);
	ev->user_id = strdup(user);
	ev->thread_id = "t-hostile";
	ev->run_id = "r-hostile";
	ev->type = WSGATE__V1__EVENT_TYPE__TOOL_EXECUTING;
	if (payload_len >= 2) {
		uint8_t *p = malloc(payload_len);

		assert_non_null(p);
		memset(p, 'x', payload_len);
		p[0] = p[payload_len - 1] = '"';
		ev->payload_json.data = p;
		ev->payload_json.len = payload_len;
	}
	assert_non_null(ev->event_id);
	assert_non_null(ev->user_id);
	return ev;
}

static void event_free(Wsgate__V1__Event *ev)
{
	free(ev->event_id);
	free(ev->user_id);
	free(ev->payload_json.data);
	free(ev);
}

/* A packed SendBatch of n events of user, ids prefix-0..n-1. */
static void *batch_pack(const char *user, const char *prefix, size_t n,
                        size_t payload_len, uint64_t request_id, size_t *len)
{
	Wsgate__V1__Request req = WSGATE__V1__REQUEST__INIT;
	Wsgate__V1__SendBatch sb = WSGATE__V1__SEND_BATCH__INIT;
	Wsgate__V1__Event **evs = calloc(n, sizeof(*evs));
	void *buf;

	assert_non_null(evs);
	for (size_t i = 0; i < n; i++) {
		char id[96];

		snprintf(id, sizeof(id), "%s-%zu", prefix, i);
		evs[i] = event_new(user, id, payload_len);
	}
	sb.n_events = n;
	sb.events = evs;
	req.request_id = request_id;
	req.body_case = WSGATE__V1__REQUEST__BODY_SEND_BATCH;
	req.send_batch = &sb;
	buf = pack_request(&req, len);
	for (size_t i = 0; i < n; i++)
		event_free(evs[i]);
	free(evs);
	return buf;
}

/* The seq the next event of user gets: sends one and returns its seq. */
static uint64_t next_seq(struct hostile *h, const char *user, const char *id)
{
	struct wsgate_event ev = {
	    .event_id = id, .user_id = user, .type = WSGATE_AGENT_STARTED};
	struct wsgate_event_result res;
	enum wsgate_status st = wsgate_send_event(h->good, &ev, &res);

	if (st != WSGATE_OK)
		fail_msg("SendEvent %s/%s: %s (%s)", user, id,
		         wsgate_status_name(st), wsgate_client_error(h->good));
	assert_false(res.duplicate);
	return res.seq;
}

static uint64_t events_accepted(struct hostile *h)
{
	struct wsgate_stats st;

	assert_int_equal(wsgate_get_stats(h->good, &st), WSGATE_OK);
	return st.events_accepted;
}

/* --- asynchronous requests: many contexts in flight --- */

/* One request context of a flood; its aio callback runs on NNG threads,
 * so results are counters read by the test thread. */
struct flood_ctx {
	struct flood *fl;
	nng_ctx ctx;
	nng_aio *aio;
	bool receiving;
	int rounds_left;
	unsigned id;
};

/* A set of contexts over some sockets, each sending rounds requests. */
struct flood {
	nng_socket socks[FLOOD_SOCKETS];
	size_t n_socks;
	struct flood_ctx *ctxs;
	size_t n;
	bool never_receive; /* send only: the replies are never read */
	const char *user;
	void *fixed_msg; /* if set, every request is these bytes */
	size_t fixed_len;
	atomic_uint ok, refused, failed, done;
	atomic_uint statuses[6];
};

/* Request number i of the flood: a mix of the request kinds. */
static nng_msg *flood_request(struct flood *fl, struct flood_ctx *c)
{
	Wsgate__V1__Request req = WSGATE__V1__REQUEST__INIT;
	Wsgate__V1__SendEvent se = WSGATE__V1__SEND_EVENT__INIT;
	Wsgate__V1__Event ev = WSGATE__V1__EVENT__INIT;
	Wsgate__V1__GetStats gs = WSGATE__V1__GET_STATS__INIT;
	Wsgate__V1__Ping ping = WSGATE__V1__PING__INIT;
	Wsgate__V1__ListConnections lc = WSGATE__V1__LIST_CONNECTIONS__INIT;
	char id[64];
	nng_msg *m;

	if (fl->fixed_msg) {
		if (nng_msg_alloc(&m, fl->fixed_len) != 0)
			return NULL;
		memcpy(nng_msg_body(m), fl->fixed_msg, fl->fixed_len);
		return m;
	}
	req.request_id = ((uint64_t)c->id << 8) | (uint64_t)c->rounds_left;
	switch ((c->id + (unsigned)c->rounds_left) % 8) {
	case 0:
		req.body_case = WSGATE__V1__REQUEST__BODY_GET_STATS;
		req.get_stats = &gs;
		break;
	case 1:
		req.body_case = WSGATE__V1__REQUEST__BODY_PING;
		req.ping = &ping;
		break;
	case 2:
		req.body_case = WSGATE__V1__REQUEST__BODY_LIST_CONNECTIONS;
		req.list_connections = &lc;
		break;
	default:
		snprintf(id, sizeof(id), "flood-%u-%d", c->id, c->rounds_left);
		ev.event_id = id;
		ev.user_id = (char *)fl->user;
		ev.type = WSGATE__V1__EVENT_TYPE__AGENT_THINKING;
		se.event = &ev;
		req.body_case = WSGATE__V1__REQUEST__BODY_SEND_EVENT;
		req.send_event = &se;
		break;
	}
	if (nng_msg_alloc(&m, wsgate__v1__request__get_packed_size(&req)) != 0)
		return NULL;
	wsgate__v1__request__pack(&req, nng_msg_body(m));
	return m;
}

static void flood_finish(struct flood_ctx *c, bool failed)
{
	if (failed)
		atomic_fetch_add(&c->fl->failed, 1);
	atomic_fetch_add(&c->fl->done, 1);
}

static void flood_send(struct flood_ctx *c)
{
	nng_msg *m = flood_request(c->fl, c);

	if (!m) {
		flood_finish(c, true);
		return;
	}
	c->receiving = false;
	nng_aio_set_msg(c->aio, m);
	nng_ctx_send(c->ctx, c->aio);
}

static void flood_cb(void *arg)
{
	struct flood_ctx *c = arg;
	struct flood *fl = c->fl;
	int rv = nng_aio_result(c->aio);

	if (!c->receiving) {
		if (rv != 0) {
			nng_msg_free(nng_aio_get_msg(c->aio));
			flood_finish(c, true);
			return;
		}
		if (fl->never_receive) {
			flood_finish(c, false);
			return;
		}
		c->receiving = true;
		nng_ctx_recv(c->ctx, c->aio);
		return;
	}
	if (rv != 0) {
		flood_finish(c, true);
		return;
	}
	nng_msg *m = nng_aio_get_msg(c->aio);
	Wsgate__V1__Reply *rep =
	    wsgate__v1__reply__unpack(NULL, nng_msg_len(m), nng_msg_body(m));
	nng_msg_free(m);
	if (!rep) {
		flood_finish(c, true);
		return;
	}
	if (rep->status >= 0 && rep->status < 6)
		atomic_fetch_add(&fl->statuses[rep->status], 1);
	if (rep->status == WSGATE__V1__STATUS__OK)
		atomic_fetch_add(&fl->ok, 1);
	else
		atomic_fetch_add(&fl->refused, 1);
	wsgate__v1__reply__free_unpacked(rep, NULL);
	if (--c->rounds_left > 0)
		flood_send(c);
	else
		flood_finish(c, false);
}

/* Opens n_socks sockets with per_sock contexts each and starts them. */
static struct flood *flood_start(struct hostile *h, size_t n_socks,
                                 size_t per_sock, int rounds,
                                 bool never_receive, const char *user)
{
	struct flood *fl = calloc(1, sizeof(*fl));

	assert_non_null(fl);
	assert_true(n_socks <= FLOOD_SOCKETS);
	fl->n_socks = n_socks;
	fl->n = n_socks * per_sock;
	fl->never_receive = never_receive;
	fl->user = user;
	fl->ctxs = calloc(fl->n, sizeof(*fl->ctxs));
	assert_non_null(fl->ctxs);
	for (size_t k = 0; k < n_socks; k++) {
		assert_int_equal(nng_req0_open(&fl->socks[k]), 0);
		assert_int_equal(
		    nng_socket_set_size(fl->socks[k], NNG_OPT_RECVMAXSZ, 0), 0);
		assert_int_equal(
		    nng_dial(fl->socks[k], h->sc->control_url, NULL, 0), 0);
	}
	for (size_t i = 0; i < fl->n; i++) {
		struct flood_ctx *c = &fl->ctxs[i];

		c->fl = fl;
		c->id = (unsigned)i;
		c->rounds_left = rounds;
		assert_int_equal(nng_aio_alloc(&c->aio, flood_cb, c), 0);
		nng_aio_set_timeout(c->aio, POLL_MS);
		assert_int_equal(nng_ctx_open(&c->ctx, fl->socks[i % n_socks]),
		                 0);
	}
	for (size_t i = 0; i < fl->n; i++)
		flood_send(&fl->ctxs[i]);
	return fl;
}

/* Waits (polled, with a deadline) until every context is done. */
static void flood_wait(struct flood *fl)
{
	int64_t deadline = now_us() + (int64_t)POLL_MS * 1000;

	while (atomic_load(&fl->done) < fl->n && now_us() < deadline)
		test_pause_ms(5);
	if (atomic_load(&fl->done) < fl->n)
		fail_msg("%u of %zu request contexts still busy after %d ms",
		         (unsigned)(fl->n - atomic_load(&fl->done)), fl->n,
		         POLL_MS);
}

static void flood_free(struct flood *fl)
{
	if (!fl)
		return;
	for (size_t k = 0; k < fl->n_socks; k++)
		nng_close(fl->socks[k]);
	for (size_t i = 0; i < fl->n; i++) {
		if (!fl->ctxs[i].aio)
			continue;
		nng_aio_stop(fl->ctxs[i].aio);
		nng_aio_free(fl->ctxs[i].aio);
	}
	free(fl->ctxs);
	free(fl);
}

/*
 * NNG 1.5.2's own nng_close, on the client side, was seen to hang now and
 * then (see test_huge_batches_are_bounded); the sidecar is not involved.
 * flood_free_bounded runs flood_free on a thread of its own and waits at
 * most CLOSE_WAIT_MS: a close still running then is reported as a known
 * issue and left to itself, and main skips nng_fini (which would wait for
 * it).
 */
#define CLOSE_WAIT_MS 10000

static atomic_bool nng_close_hung;

struct bounded_free {
	struct flood *fl;
	atomic_bool done;
};

static void *bounded_free_main(void *arg)
{
	struct bounded_free *bf = arg;
	flood_free(bf->fl);
	atomic_store(&bf->done, true);
	return NULL;
}

static void flood_free_bounded(struct flood *fl)
{
	/* Static: a close left running may still use it after we return. */
	static struct bounded_free bf;
	int64_t deadline = now_us() + (int64_t)CLOSE_WAIT_MS * 1000;
	pthread_t t;

	bf.fl = fl;
	atomic_store(&bf.done, false);
	assert_int_equal(pthread_create(&t, NULL, bounded_free_main, &bf), 0);
	while (!atomic_load(&bf.done) && now_us() < deadline)
		test_pause_ms(5);
	if (atomic_load(&bf.done)) {
		pthread_join(t, NULL);
		return;
	}
	pthread_detach(t);
	atomic_store(&nng_close_hung, true);
	fprintf(stderr,
	        "KNOWN ISSUE: NNG 1.5.2 nng_close of a client socket "
	        "did not return within %d ms; left running\n",
	        CLOSE_WAIT_MS);
}

/* --- the backend that never reads (see its test) --- */

struct abuser {
	nng_socket sock;
	pthread_t thread;
	atomic_bool stop;
	atomic_uint sent, stalled;
};

/* Static, so that a failed test cannot leave its thread a dangling
 * pointer; group_teardown stops it. */
static struct abuser abuser;

static void abuser_stop(struct abuser *a)
{
	if (!a->thread)
		return;
	atomic_store(&a->stop, true);
	pthread_join(a->thread, NULL);
	a->thread = 0;
	nng_close(a->sock);
}

/* --- group setup --- */

static int group_setup(void **state)
{
	struct hostile *h = calloc(1, sizeof(*h));
	char *token = NULL, path[2048], *hello = NULL;
	ssize_t n;

	if (!h)
		return -1;
	n = readlink("/proc/self/exe", h->self_exe, sizeof(h->self_exe) - 1);
	if (n <= 0 || sidecar_start(&h->sc, NULL) != 0)
		goto fail;
	if (wsgate_client_open(&h->good, h->sc->control_url, CALL_MS) !=
	    WSGATE_OK)
		goto fail;
	token = sidecar_token(h->sc, GOOD_USER, 3600);
	if (!token)
		goto fail;
	snprintf(path, sizeof(path), "/ws?access_token=%s", token);
	if (ws_client_connect(&h->browser, h->sc->port, path, NULL, RECV_MS) !=
	    101)
		goto fail;
	hello = ws_client_recv_text(h->browser, RECV_MS);
	if (!hello || !strstr(hello, "\"type\":\"connected\""))
		goto fail;
	free(hello);
	free(token);
	*state = h;
	return 0;
fail:
	fprintf(stderr, "group setup failed\n");
	free(hello);
	free(token);
	ws_client_abort(h->browser);
	wsgate_client_close(h->good);
	if (h->sc)
		sidecar_free(h->sc, true);
	free(h);
	return -1;
}

static int group_teardown(void **state)
{
	struct hostile *h = *state;
	bool failed = h->passed != N_TESTS;
	int status;

	abuser_stop(&abuser);
	ws_client_close(h->browser, RECV_MS);
	wsgate_client_close(h->good);
	status = sidecar_stop(h->sc, SIDECAR_STOP_TIMEOUT_MS);
	/* A clean exit within the deadline: 0 also means no sanitizer
	 * report from the sidecar. */
	if (status != 0) {
		fprintf(stderr, "sidecar exit status %d after SIGTERM\n",
		        status);
		failed = true;
	}
	if (failed)
		sidecar_print_log(h->sc, 8192);
	sidecar_free(h->sc, failed);
	free(h);
	return failed ? -1 : 0;
}

/* --- tests --- */

static void test_good_backend_baseline(void **state)
{
	struct hostile *h = *state;

	good_probe(h, "before any abuse");
	expect_healthy(h, "the baseline");
	h->passed++;
}

/* Every prefix of a valid SendEvent (and of a SendBatch) is refused with
 * INVALID_ARGUMENT, and none of them was accepted as an event. */
static void test_truncated_protobuf_is_refused(void **state)
{
	struct hostile *h = *state;
	Wsgate__V1__Request req = WSGATE__V1__REQUEST__INIT;
	Wsgate__V1__SendEvent se = WSGATE__V1__SEND_EVENT__INIT;
	Wsgate__V1__Event *ev = event_new("trunc-user", "trunc-1", 0);
	const char *payload = "{\"a\":[1,2,3],\"b\":\"xyz\"}";
	nng_socket s = req_open(h, CALL_MS);
	size_t len, blen;
	uint8_t *buf, *batch;
	int rv;

	ev->payload_json.data = (uint8_t *)strdup(payload);
	ev->payload_json.len = strlen(payload);
	se.event = ev;
	req.request_id = 7;
	req.body_case = WSGATE__V1__REQUEST__BODY_SEND_EVENT;
	req.send_event = &se;
	buf = pack_request(&req, &len);
	for (size_t cut = 0; cut < len; cut++) {
		char what[64];

		snprintf(what, sizeof(what), "SendEvent cut to %zu of %zu", cut,
		         len);
		expect_invalid(s, what, buf, cut, NULL);
	}
	batch = batch_pack("trunc-user", "trunc-b", 3, 40, 8, &blen);
	for (size_t cut = 0; cut < blen; cut += 5) {
		char what[64];

		snprintf(what, sizeof(what), "SendBatch cut to %zu of %zu", cut,
		         blen);
		expect_invalid(s, what, batch, cut, NULL);
	}
	/* The whole message is fine, and it is the user's first event. */
	Wsgate__V1__Reply *rep = raw_call(s, buf, len, &rv);
	if (!rep)
		fail_msg("whole SendEvent: %s", nng_strerror(rv));
	assert_int_equal(rep->status, WSGATE__V1__STATUS__OK);
	assert_int_equal(rep->request_id, 7);
	assert_int_equal(rep->body_case, WSGATE__V1__REPLY__BODY_EVENT);
	assert_int_equal(rep->event->seq, 1);
	assert_true(rep->event->retained);
	wsgate__v1__reply__free_unpacked(rep, NULL);
	print_message("  %zu + %zu truncated requests refused\n", len,
	              (blen + 4) / 5);
	free(buf);
	free(batch);
	event_free(ev);
	nng_close(s);
	good_probe(h, "after truncated requests");
	expect_healthy(h, "truncated requests");
	h->passed++;
}

/* Hand-made wire bytes: wrong wire types, malformed varints and lengths,
 * unknown fields and enum values, bytes protobuf-c would silently cut
 * (a NUL inside a string), and random garbage. */
struct wire_case {
	const char *what;
	const char *bytes;
	size_t len;
	const char *want; /* in the error; NULL: any */
};

#define WIRE(what, lit, want)                                                  \
	{                                                                      \
		what, lit, sizeof(lit) - 1, want                               \
	}

static const struct wire_case wire_cases[] = {
    WIRE("request_id as bytes", "\x0a\x01\x41\x3a\x00", "not a wsgate"),
    WIRE("send_event as varint", "\x08\x01\x10\x05", "not a wsgate"),
    WIRE("event as fixed32", "\x12\x05\x0d\x01\x02\x03\x04", "not a wsgate"),
    WIRE("user_id as varint", "\x12\x04\x0a\x02\x10\x01", "not a wsgate"),
    WIRE("type as bytes", "\x12\x05\x0a\x03\x2a\x01\x78", "not a wsgate"),
    WIRE("wire type 7", "\x0f\x01", "not a wsgate"),
    WIRE("group wire type", "\x0b\x0c", "not a wsgate"),
    WIRE("eleven-byte varint",
         "\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", "not a wsgate"),
    WIRE("length past the end", "\x12\x7f\x0a", "not a wsgate"),
    WIRE("length 2^63", "\x12\xff\xff\xff\xff\xff\xff\xff\xff\x7f",
         "not a wsgate"),
    WIRE("field number 0", "\x00\x01", "not a wsgate"),
    WIRE("unknown fields only", "\xa0\x06\x01\xaa\x06\x02hi", "request.body"),
    WIRE("empty message", "", "request.body"),
    WIRE("empty send_event", "\x12\x00", "send_event.event"),
    WIRE("empty batch", "\x1a\x00", "send_batch.events"),
    WIRE("empty disconnect", "\x22\x00", "disconnect"),
    /* Event{event_id="e1", user_id="u1", type=99} */
    WIRE("unknown event type",
         "\x12\x0c\x0a\x0a\x0a\x02"
         "e1\x12\x02u1\x28\x63",
         "event.type"),
    /* type = -1: a ten-byte varint */
    WIRE("negative event type",
         "\x12\x15\x0a\x13\x0a\x02"
         "e1\x12\x02u1\x28\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",
         "event.type"),
    /* user_id "u1\0x": protobuf-c would hand over "u1" */
    WIRE("NUL inside user_id",
         "\x12\x0e\x0a\x0c\x0a\x02"
         "e1\x12\x04u1\x00x\x28\x01",
         "send_event.event.user_id"),
    WIRE("NUL inside event_id",
         "\x12\x0e\x0a\x0c\x0a\x04"
         "e\x00x1\x12\x02u1\x28\x01",
         "send_event.event.event_id"),
    /* batch: event 1 of 2 has user_id "u1\0" */
    WIRE("NUL inside a batch event",
         "\x1a\x18\x0a\x0a\x0a\x02"
         "e1\x12\x02u1\x28\x01\x0a\x0a\x0a\x02"
         "e2\x12\x02u\x00\x28\x01",
         "send_batch.events[1].user_id"),
    WIRE("NUL inside disconnect.user_id", "\x22\x04\x0a\x02u\x00",
         "disconnect.user_id"),
    WIRE("invalid UTF-8 user_id",
         "\x12\x0c\x0a\x0a\x0a\x02"
         "e1\x12\x02u\xff\x28\x01",
         "event.user_id"),
    WIRE("control character in user_id",
         "\x12\x0c\x0a\x0a\x0a\x02"
         "e1\x12\x02u\x1b\x28\x01",
         "event.user_id"),
    WIRE("payload not JSON",
         "\x12\x0f\x0a\x0d\x0a\x02"
         "e1\x12\x02u1\x28\x01\x3a\x01{",
         "event.payload_json"),
    WIRE("custom type without a name",
         "\x12\x0c\x0a\x0a\x0a\x02"
         "e1\x12\x02u1\x28\x07",
         "event.custom_type"),
};

static void test_wrong_types_and_garbage_are_refused(void **state)
{
	struct hostile *h = *state;
	nng_socket s = req_open(h, CALL_MS);
	uint64_t accepted = events_accepted(h);
	unsigned undecodable = 0, decodable = 0;
	uint8_t garbage[512];
	unsigned seed = 12345;

	for (size_t i = 0; i < sizeof(wire_cases) / sizeof(wire_cases[0]); i++)
		expect_invalid(s, wire_cases[i].what, wire_cases[i].bytes,
		               wire_cases[i].len, wire_cases[i].want);
	/* Random bytes: what protobuf-c cannot decode must be refused;
	 * the rare decodable one must still get a proper reply. */
	for (int i = 0; i < 500; i++) {
		size_t len = 1 + (size_t)(rand_r(&seed) % sizeof(garbage));
		Wsgate__V1__Request *local;
		Wsgate__V1__Reply *rep;
		int rv;

		for (size_t k = 0; k < len; k++)
			garbage[k] = (uint8_t)rand_r(&seed);
		local = wsgate__v1__request__unpack(NULL, len, garbage);
		rep = raw_call(s, garbage, len, &rv);
		if (!rep)
			fail_msg("garbage %d: no reply (%s)", i,
			         nng_strerror(rv));
		if (!local) {
			undecodable++;
			assert_int_equal(rep->status,
			                 WSGATE__V1__STATUS__INVALID_ARGUMENT);
		} else {
			decodable++;
			wsgate__v1__request__free_unpacked(local, NULL);
		}
		wsgate__v1__reply__free_unpacked(rep, NULL);
	}
	assert_true(undecodable >= 400);
	/* Nothing above was an acceptable event. */
	assert_int_equal(events_accepted(h), accepted);
	print_message("  %zu hand-made cases and 500 random messages "
	              "(%u undecodable, %u decodable) answered\n",
	              sizeof(wire_cases) / sizeof(wire_cases[0]), undecodable,
	              decodable);
	nng_close(s);
	good_probe(h, "after garbage");
	expect_healthy(h, "garbage");
	h->passed++;
}

/* Child mode "--over-limit URL": one SendBatch past the sidecar's receive
 * limit on a fresh req0 socket. Exits 0 when it got no reply and
 * NNG_ETIMEDOUT, as promised; 1 otherwise; 2 when it could not try. */
static int over_limit_sender(const char *url)
{
	nng_socket s;
	nng_msg *m;
	size_t len;
	void *buf = batch_pack("big-user", "over", OVER_LIMIT_EVENTS,
	                       PAYLOAD_MAX, 5, &len);

	if (!buf || len <= (16u << 20) || nng_req0_open(&s) != 0 ||
	    nng_socket_set_ms(s, NNG_OPT_RECVTIMEO, 2000) != 0 ||
	    nng_socket_set_ms(s, NNG_OPT_SENDTIMEO, CALL_MS) != 0 ||
	    nng_dial(s, url, NULL, 0) != 0 || nng_msg_alloc(&m, len) != 0)
		_exit(2);
	memcpy(nng_msg_body(m), buf, len);
	if (nng_sendmsg(s, m, 0) != 0)
		_exit(2);
	int rv = nng_recvmsg(s, &m, 0);
	/* No nng_close, no nng_fini: see test_huge_batches_are_bounded. */
	_exit(rv == NNG_ETIMEDOUT ? 0 : 1);
}

/* Runs over_limit_sender in a child and returns its exit status (-1 when
 * it had to be killed at the deadline). */
static int run_over_limit_sender(struct hostile *h)
{
	const char *argv[] = {h->self_exe, "--over-limit", h->sc->control_url,
	                      NULL};
	int64_t deadline = now_us() + (int64_t)POLL_MS * 1000;
	int wstatus;
	pid_t pid = proc_spawn(argv, -1, -1, -1);

	assert_true(pid > 0);
	while (waitpid(pid, &wstatus, WNOHANG) == 0) {
		if (now_us() > deadline) {
			kill(pid, SIGKILL);
			waitpid(pid, &wstatus, 0);
			return -1;
		}
		test_pause_ms(20);
	}
	return WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : -1;
}

/* Batches at and over every limit: 1000 events (the most), 1001 (refused
 * whole), mixed valid and invalid (per-event results), an event over
 * --max-payload, messages just under the 16 MiB message limit several at a
 * time, and one over it (the pipe is closed, no reply). */
static void test_huge_batches_are_bounded(void **state)
{
	struct hostile *h = *state;
	nng_socket s = req_open(h, CALL_MS);
	Wsgate__V1__Reply *rep;
	size_t len;
	void *buf;
	int rv;

	/* 1000 events: the most a batch may hold. */
	buf = batch_pack("batch-user", "b", 1000, 64, 1, &len);
	rep = raw_call(s, buf, len, &rv);
	free(buf);
	if (!rep)
		fail_msg("batch of 1000: %s", nng_strerror(rv));
	assert_int_equal(rep->status, WSGATE__V1__STATUS__OK);
	assert_int_equal(rep->body_case, WSGATE__V1__REPLY__BODY_BATCH);
	assert_int_equal(rep->batch->n_results, 1000);
	for (size_t i = 0; i < 1000; i++) {
		assert_int_equal(rep->batch->results[i]->status,
		                 WSGATE__V1__STATUS__OK);
		assert_int_equal(rep->batch->results[i]->seq, i + 1);
	}
	wsgate__v1__reply__free_unpacked(rep, NULL);

	/* 1001 events: refused whole; the user's next seq is still 1001. */
	buf = batch_pack("batch-user", "over", 1001, 2, 2, &len);
	expect_invalid(s, "batch of 1001", buf, len, "send_batch.events");
	free(buf);
	assert_int_equal(next_seq(h, "batch-user", "after-1001"), 1001);

	/* Every third event invalid: the others are accepted. */
	{
		Wsgate__V1__Request req = WSGATE__V1__REQUEST__INIT;
		Wsgate__V1__SendBatch sb = WSGATE__V1__SEND_BATCH__INIT;
		Wsgate__V1__Event *evs[999];
		uint64_t want_seq = 1002;

		for (size_t i = 0; i < 999; i++) {
			char id[32];

			snprintf(id, sizeof(id), "mixed-%zu", i);
			evs[i] = event_new("batch-user", id, 8);
			if (i % 3 == 2)
				evs[i]->type =
				    WSGATE__V1__EVENT_TYPE__EVENT_TYPE_UNSPECIFIED;
		}
		sb.n_events = 999;
		sb.events = evs;
		req.body_case = WSGATE__V1__REQUEST__BODY_SEND_BATCH;
		req.send_batch = &sb;
		buf = pack_request(&req, &len);
		for (size_t i = 0; i < 999; i++)
			event_free(evs[i]);
		rep = raw_call(s, buf, len, &rv);
		free(buf);
		if (!rep)
			fail_msg("mixed batch: %s", nng_strerror(rv));
		assert_int_equal(rep->status, WSGATE__V1__STATUS__OK);
		assert_int_equal(rep->batch->n_results, 999);
		for (size_t i = 0; i < 999; i++) {
			Wsgate__V1__EventResult *r = rep->batch->results[i];

			if (i % 3 == 2) {
				assert_int_equal(
				    r->status,
				    WSGATE__V1__STATUS__INVALID_ARGUMENT);
				assert_non_null(strstr(r->error, "event.type"));
			} else {
				assert_int_equal(r->status,
				                 WSGATE__V1__STATUS__OK);
				assert_int_equal(r->seq, want_seq++);
			}
		}
		wsgate__v1__reply__free_unpacked(rep, NULL);
	}

	/* One payload over --max-payload (1M). */
	buf = batch_pack("batch-user", "fat", 1, (1u << 20) + 1, 3, &len);
	{
		Wsgate__V1__Reply *r = raw_call(s, buf, len, &rv);

		if (!r)
			fail_msg("over-max payload: %s", nng_strerror(rv));
		assert_int_equal(r->status, WSGATE__V1__STATUS__OK);
		assert_int_equal(r->batch->results[0]->status,
		                 WSGATE__V1__STATUS__INVALID_ARGUMENT);
		assert_non_null(
		    strstr(r->batch->results[0]->error, "max payload"));
		wsgate__v1__reply__free_unpacked(r, NULL);
	}
	free(buf);

	/* Several batches just under the 16 MiB message limit in service
	 * at once, while the good backend works. */
	{
		void *big = batch_pack("big-user", "near", NEAR_LIMIT_EVENTS,
		                       PAYLOAD_MAX, 4, &len);

		assert_true(len < (16u << 20));
		print_message("  %d batches of %zu bytes in flight\n",
		              NEAR_LIMIT_INFLIGHT, len);
		/* The same event ids each time: the first is accepted, the
		 * others are duplicates; each batch is fully processed. */
		{
			struct flood *f = calloc(1, sizeof(*f));
			struct flood_ctx ctxs[NEAR_LIMIT_INFLIGHT];

			assert_non_null(f);
			f->fixed_msg = big;
			f->fixed_len = len;
			f->n = NEAR_LIMIT_INFLIGHT;
			f->n_socks = 1;
			f->ctxs = ctxs;
			memset(ctxs, 0, sizeof(ctxs));
			assert_int_equal(nng_req0_open(&f->socks[0]), 0);
			assert_int_equal(nng_socket_set_size(
			                     f->socks[0], NNG_OPT_RECVMAXSZ, 0),
			                 0);
			assert_int_equal(
			    nng_dial(f->socks[0], h->sc->control_url, NULL, 0),
			    0);
			for (size_t i = 0; i < f->n; i++) {
				ctxs[i].fl = f;
				ctxs[i].rounds_left = 1;
				assert_int_equal(nng_aio_alloc(&ctxs[i].aio,
				                               flood_cb,
				                               &ctxs[i]),
				                 0);
				nng_aio_set_timeout(ctxs[i].aio, POLL_MS);
				assert_int_equal(
				    nng_ctx_open(&ctxs[i].ctx, f->socks[0]), 0);
			}
			for (size_t i = 0; i < f->n; i++)
				flood_send(&ctxs[i]);
			good_probe(h, "while 15 MB batches are in flight");
			flood_wait(f);
			assert_int_equal(atomic_load(&f->failed), 0);
			assert_int_equal(atomic_load(&f->ok), f->n);
			nng_close(f->socks[0]);
			for (size_t i = 0; i < f->n; i++) {
				nng_aio_stop(ctxs[i].aio);
				nng_aio_free(ctxs[i].aio);
			}
			free(f);
		}
		free(big);
		assert_int_equal(next_seq(h, "big-user", "after-near"),
		                 NEAR_LIMIT_EVENTS + 1);
	}

	/* Over the message limit: NNG closes the pipe before reading it;
	 * the requester only sees a timeout. Sent from a child process: in
	 * NNG 1.5.2 the requester's own nng_close of that socket was seen to
	 * hang now and then (the sidecar is unaffected), so the child reports
	 * and exits without closing it. */
	{
		assert_int_equal(run_over_limit_sender(h), 0);
		assert_int_equal(next_seq(h, "big-user", "after-over"),
		                 NEAR_LIMIT_EVENTS + 2);
	}
	nng_close(s);
	good_probe(h, "after huge batches");
	expect_healthy(h, "huge batches");
	h->passed++;
}

/*
 * A backend that sends and never reads its replies. A raw req0 socket
 * stops reading its pipe once its receive queue is full, so the sidecar's
 * replies pile up in the kernel and then in the sidecar; past 1 MiB of
 * them the sidecar stops reading that connection, so the abuser's sends
 * stall, while every other backend is served as before. A cooked req0
 * socket with 1000 contexts that send and never receive is harmless (req0
 * reads and drops the replies itself): checked too.
 */
static void *abuser_main(void *arg)
{
	struct abuser *a = arg;
	Wsgate__V1__Request req = WSGATE__V1__REQUEST__INIT;
	Wsgate__V1__Ping ping = WSGATE__V1__PING__INIT;
	int64_t deadline = now_us() + (int64_t)POLL_MS * 1000;
	size_t len;
	uint8_t body[64];

	req.body_case = WSGATE__V1__REQUEST__BODY_PING;
	req.ping = &ping;
	for (uint32_t n = 1;
	     n < 10000000 && !atomic_load(&a->stop) && now_us() < deadline;
	     n++) {
		nng_msg *m;

		req.request_id = n;
		len = wsgate__v1__request__pack(&req, body);
		if (nng_msg_alloc(&m, len) != 0)
			break;
		memcpy(nng_msg_body(m), body, len);
		/* Raw mode: the request id NNG would have added. */
		nng_msg_header_append_u32(m, 0x80000000u | n);
		if (nng_sendmsg(a->sock, m, 0) == 0) {
			atomic_fetch_add(&a->sent, 1);
		} else {
			nng_msg_free(m);
			atomic_fetch_add(&a->stalled, 1);
		}
	}
	return NULL;
}

static void test_backend_that_never_reads_cannot_starve_others(void **state)
{
	struct hostile *h = *state;
	struct abuser *a = &abuser;
	struct flood *silent;
	int64_t deadline;

	/* Cooked contexts that never receive. */
	silent = flood_start(h, 1, SILENT_CONTEXTS, 1, true, "silent-user");
	flood_wait(silent);
	assert_int_equal(atomic_load(&silent->failed), 0);
	good_probe(h, "with 1000 unread replies on a cooked req0 socket");
	flood_free_bounded(silent);

	/* The raw abuser. */
	assert_int_equal(nng_req0_open_raw(&a->sock), 0);
	assert_int_equal(nng_socket_set_ms(a->sock, NNG_OPT_SENDTIMEO, 20), 0);
	assert_int_equal(nng_socket_set_ms(a->sock, NNG_OPT_RECONNMINT, 10), 0);
	assert_int_equal(nng_dial(a->sock, h->sc->control_url, NULL, 0), 0);
	assert_int_equal(pthread_create(&a->thread, NULL, abuser_main, a), 0);
	/* Wait until the sidecar no longer reads the abuser (its sends
	 * stall): by then, without a bound on how long a reply may wait,
	 * every context would be queued behind the abuser's unread replies
	 * and the good backend below would time out. */
	deadline = now_us() + (int64_t)POLL_MS * 1000;
	while ((atomic_load(&a->sent) < 100 || atomic_load(&a->stalled) == 0) &&
	       now_us() < deadline)
		test_pause_ms(5);
	print_message("  abuser: %u requests sent before its sends stalled\n",
	              atomic_load(&a->sent));
	assert_true(atomic_load(&a->stalled) > 0);

	good_probe(h, "while a backend never reads its replies");

	atomic_store(&a->stop, true);
	pthread_join(a->thread, NULL);
	a->thread = 0;
	print_message("  abuser: %u requests sent, %u stalled sends\n",
	              atomic_load(&a->sent), atomic_load(&a->stalled));
	nng_close(a->sock);
	good_probe(h, "after the non-reading backend");
	expect_healthy(h, "a backend that never reads");
	h->passed++;
}

/*
 * A backend that vanishes mid-request: a child process killed (SIGKILL)
 * right after its requests (200 events, and a batch of 1000) were handed
 * to the kernel. Every event of
 * theirs is either accepted once or not at all (a resend gets either a new
 * seq or duplicate with the first), and the sidecar serves on.
 */
static int vanishing_backend(const char *url, int n)
{
	nng_socket s;
	nng_ctx ctx[VANISH_REQUESTS + 1];
	nng_aio *aio[VANISH_REQUESTS + 1];
	char line[] = "sent\n";

	if (n < 1 || n > VANISH_REQUESTS || nng_req0_open(&s) != 0 ||
	    nng_dial(s, url, NULL, 0) != 0)
		return 2;
	for (int i = 0; i <= n; i++) {
		Wsgate__V1__Request req = WSGATE__V1__REQUEST__INIT;
		Wsgate__V1__SendEvent se = WSGATE__V1__SEND_EVENT__INIT;
		Wsgate__V1__SendBatch sb = WSGATE__V1__SEND_BATCH__INIT;
		Wsgate__V1__Event ev = WSGATE__V1__EVENT__INIT;
		Wsgate__V1__Event bev[1000], *bevp[1000];
		char id[32], bid[1000][24];
		nng_msg *m;

		if (nng_ctx_open(&ctx[i], s) != 0 ||
		    nng_aio_alloc(&aio[i], NULL, NULL) != 0)
			return 2;
		if (i < n) {
			snprintf(id, sizeof(id), "vanish-%d", i);
			ev.event_id = id;
			ev.user_id = "vanish-user";
			ev.type = WSGATE__V1__EVENT_TYPE__AGENT_STARTED;
			se.event = &ev;
			req.body_case = WSGATE__V1__REQUEST__BODY_SEND_EVENT;
			req.send_event = &se;
		} else {
			for (int k = 0; k < 1000; k++) {
				wsgate__v1__event__init(&bev[k]);
				snprintf(bid[k], sizeof(bid[k]), "vanish-b%d",
				         k);
				bev[k].event_id = bid[k];
				bev[k].user_id = "vanish-user";
				bev[k].type =
				    WSGATE__V1__EVENT_TYPE__AGENT_THINKING;
				bevp[k] = &bev[k];
			}
			sb.n_events = 1000;
			sb.events = bevp;
			req.body_case = WSGATE__V1__REQUEST__BODY_SEND_BATCH;
			req.send_batch = &sb;
		}
		req.request_id = (uint64_t)i + 1;
		if (nng_msg_alloc(
		        &m, wsgate__v1__request__get_packed_size(&req)) != 0)
			return 2;
		wsgate__v1__request__pack(&req, nng_msg_body(m));
		nng_aio_set_msg(aio[i], m);
		nng_aio_set_timeout(aio[i], 10000);
		nng_ctx_send(ctx[i], aio[i]);
	}
	for (int i = 0; i <= n; i++) {
		nng_aio_wait(aio[i]);
		if (nng_aio_result(aio[i]) != 0)
			return 3;
	}
	/* Everything is on its way: tell the parent, who kills us. */
	if (write(1, line, sizeof(line) - 1) != (ssize_t)sizeof(line) - 1)
		return 4;
	for (int i = 0; i < 1000; i++)
		test_pause_ms(100); /* bounded: the parent kills us first */
	return 5;
}

static pid_t spawn_vanishing_backend(struct hostile *h, int *out_fd)
{
	char n[16];
	const char *argv[] = {h->self_exe, "--vanishing-backend",
	                      h->sc->control_url, n, NULL};
	int fds[2];
	pid_t pid;

	snprintf(n, sizeof(n), "%d", VANISH_REQUESTS);
	assert_int_equal(pipe2(fds, O_CLOEXEC), 0);
	pid = proc_spawn(argv, -1, fds[1], -1);
	close(fds[1]);
	assert_true(pid > 0);
	*out_fd = fds[0];
	return pid;
}

static void test_backend_vanishing_mid_request(void **state)
{
	struct hostile *h = *state;
	char buf[16] = "";
	int fd, wstatus;
	ssize_t got;
	pid_t pid;

	/* A process killed right after its requests left. */
	pid = spawn_vanishing_backend(h, &fd);
	{
		int64_t deadline = now_us() + (int64_t)POLL_MS * 1000;
		size_t have = 0;

		while (have < 5 && now_us() < deadline) {
			struct pollfd pfd = {.fd = fd, .events = POLLIN};

			if (poll(&pfd, 1, 100) == 0)
				continue;
			got = read(fd, buf + have, 5 - have);
			if (got <= 0)
				break;
			have += (size_t)got;
		}
		if (have != 5 || strncmp(buf, "sent\n", 5) != 0) {
			kill(pid, SIGKILL);
			waitpid(pid, &wstatus, 0);
			fail_msg("vanishing backend did not send (%zu bytes, "
			         "status %d)",
			         have, wstatus);
		}
	}
	assert_int_equal(kill(pid, SIGKILL), 0);
	assert_int_equal(waitpid(pid, &wstatus, 0), pid);
	assert_true(WIFSIGNALED(wstatus) && WTERMSIG(wstatus) == SIGKILL);
	close(fd);
	good_probe(h, "right after a backend was killed mid-request");

	/* Resend the killed backend's events: each one is accepted once
	 * overall -- a duplicate if its first copy got in, new otherwise --
	 * and the seqs stay dense. */
	{
		struct wsgate_event ev[VANISH_REQUESTS];
		struct wsgate_event_result res[VANISH_REQUESTS];
		char ids[VANISH_REQUESTS][32];
		unsigned dup = 0;
		uint64_t last;

		for (int i = 0; i < VANISH_REQUESTS; i++) {
			snprintf(ids[i], sizeof(ids[i]), "vanish-%d", i);
			ev[i] =
			    (struct wsgate_event){.event_id = ids[i],
			                          .user_id = "vanish-user",
			                          .type = WSGATE_AGENT_STARTED};
		}
		assert_int_equal(
		    wsgate_send_batch(h->good, ev, VANISH_REQUESTS, res),
		    WSGATE_OK);
		for (int i = 0; i < VANISH_REQUESTS; i++) {
			assert_int_equal(res[i].status, WSGATE_OK);
			dup += res[i].duplicate;
		}
		last = next_seq(h, "vanish-user", "vanish-after");
		print_message("  killed backend: %u of its %d events had got "
		              "in before it died; user's next seq %llu\n",
		              dup, VANISH_REQUESTS, (unsigned long long)last);
		/* 200 events + the batch of 1000 + this one, each once. */
		assert_true(last == VANISH_REQUESTS + 1 ||
		            last == VANISH_REQUESTS + 1000 + 1);
	}
	good_probe(h, "after vanishing backends");
	expect_healthy(h, "vanishing backends");
	h->passed++;
}

/* 2400 request contexts over 4 sockets, each with two requests (events,
 * stats, pings, listings): every one is answered OK, while the good
 * backend is served between them. */
static void test_thousands_of_concurrent_requests(void **state)
{
	struct hostile *h = *state;
	struct flood *fl;
	uint64_t before = events_accepted(h);
	unsigned total = FLOOD_SOCKETS * FLOOD_CONTEXTS * FLOOD_ROUNDS;
	int64_t t0 = now_us();
	double secs;

	fl = flood_start(h, FLOOD_SOCKETS, FLOOD_CONTEXTS, FLOOD_ROUNDS, false,
	                 "flood-user");
	good_probe(h, "during 2400 concurrent requests");
	flood_wait(fl);
	secs = (double)(now_us() - t0) / 1e6;
	print_message("  flood: %u requests in %.2f s: %u OK, %u refused, "
	              "%u failed\n",
	              total, secs, atomic_load(&fl->ok),
	              atomic_load(&fl->refused), atomic_load(&fl->failed));
	assert_int_equal(atomic_load(&fl->failed), 0);
	/* RESOURCE_EXHAUSTED would be a legitimate answer under overload;
	 * with a backlog limit of 200000 jobs it does not happen here. */
	assert_int_equal(
	    atomic_load(&fl->ok) +
	        atomic_load(
	            &fl->statuses[WSGATE__V1__STATUS__RESOURCE_EXHAUSTED]),
	    total);
	assert_int_equal(atomic_load(&fl->ok), total);
	/* 5 of every 8 requests were events, each accepted once, and the
	 * good backend's probe sent PROBE_N meanwhile. */
	{
		uint64_t want = PROBE_N;

		for (unsigned i = 0; i < FLOOD_SOCKETS * FLOOD_CONTEXTS; i++)
			for (int r = FLOOD_ROUNDS; r > 0; r--)
				want += (i + (unsigned)r) % 8 > 2;
		assert_int_equal(events_accepted(h) - before, want);
	}
	flood_free(fl);
	good_probe(h, "after the flood");
	expect_healthy(h, "thousands of concurrent requests");
	h->passed++;
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_good_backend_baseline),
	    cmocka_unit_test(test_truncated_protobuf_is_refused),
	    cmocka_unit_test(test_wrong_types_and_garbage_are_refused),
	    cmocka_unit_test(test_huge_batches_are_bounded),
	    cmocka_unit_test(
	        test_backend_that_never_reads_cannot_starve_others),
	    cmocka_unit_test(test_backend_vanishing_mid_request),
	    cmocka_unit_test(test_thousands_of_concurrent_requests),
	};
	int rc;

	if (argc == 4 && strcmp(argv[1], "--vanishing-backend") == 0)
		return vanishing_backend(argv[2], atoi(argv[3]));
	if (argc == 3 && strcmp(argv[1], "--over-limit") == 0)
		return over_limit_sender(argv[2]);
	signal(SIGPIPE, SIG_IGN);
	/* WSGATE_TEST_FILTER=pattern: run only the matching tests. */
	if (getenv("WSGATE_TEST_FILTER"))
		cmocka_set_test_filter(getenv("WSGATE_TEST_FILTER"));
	rc = cmocka_run_group_tests(tests, group_setup, group_teardown);
	if (!atomic_load(&nng_close_hung))
		nng_fini();
	return rc;
}
