/*
 * test_hostile_backends: broken and hostile backends on the control socket
 * of one real sidecar process.
 *
 * Each test plays a backend that misbehaves -- truncated or mistyped
 * protobuf, garbage, batches at and past every limit, a backend that never
 * reads its replies, one that vanishes (socket closed, process killed)
 * mid-request, thousands of requests in flight at once -- speaking NNG
 * directly (cooked and raw req0 sockets). Each must get an error reply or
 * a bounded queue. After each one the test checks that the sidecar is
 * still running, that its peak RSS (VmHWM) stayed under RSS_BOUND_MIB, and
 * that a well-behaved backend (libwsgate) still gets OK replies whose
 * events reach its user's WebSocket; that backend's latency is printed
 * before and during the abuse (never asserted: machines differ).
 *
 * Every NNG socket lives in a child process: this binary run again with a
 * role argument (see "the abusive backends" below). NNG 1.5.2's nng_close
 * of a client socket has been seen to hang, so the test process itself
 * never calls NNG; it reads the children's reports from pipes with
 * deadlines and kills a child that overruns its deadline.
 *
 * One sidecar serves the whole file; every test uses its own user ids.
 * Nothing sleeps to synchronise: every wait is a blocking call with a
 * timeout or a polled condition with a deadline.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>

#include "child_proc.h"
#include "test_clock.h"
#include "proc_status.h"
#include "sidecar_proc.h"
#include "ws_client.h"
#include "wsgate.h"
#include "wsgate.pb-c.h"

#define CALL_MS   10000 /* one libwsgate call or raw round trip */
#define RELAY_MS  (2 * CALL_MS + 5000) /* one round trip of the relay */
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
	struct child_proc relay;   /* the req0 relay of raw requests */
	char relay_err[128];       /* why raw_call returned no reply */
	struct child_proc abuser;  /* the running abusive backend */
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

/* --- protobuf requests --- */

static void *pack_request(const Wsgate__V1__Request *r, size_t *len)
{
	void *buf;

	*len = wsgate__v1__request__get_packed_size(r);
	buf = malloc(*len ? *len : 1);
	assert_non_null(buf);
	wsgate__v1__request__pack(r, buf);
	return buf;
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

/* --- the abusive backends: child processes ---
 *
 * Each runs this binary again as "test_hostile_backends --ROLE ARGS"
 * (role_main): the test process makes no NNG call, so no nng_close of
 * NNG 1.5.2 can hang it (one was seen to hang after a flood of unread
 * replies, after a raw socket that never read its replies, and after a
 * message over the sidecar's limit). A role reports to the
 * test in lines on stdout, stops when its stdin becomes readable (the test
 * wrote "stop" or closed it) and leaves through role_exit. No role closes
 * its sockets: the kernel closes them at exit, which is all the sidecar
 * sees of an nng_close too (SP has no goodbye).
 */

/* Leaves without exit handlers: LeakSanitizer would count the sockets
 * that are deliberately left open. */
static _Noreturn void role_exit(int status)
{
	fflush(stdout);
	_exit(status);
}

/* One report line to the test. */
static void role_report(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	if (fflush(stdout) != 0)
		role_exit(4);
}

/* Waits up to ms for the test to say stop: 1 when it did. */
static int role_wait_stop(int ms)
{
	struct pollfd pfd = {.fd = 0, .events = POLLIN};

	return poll(&pfd, 1, ms) > 0;
}

/*
 * Role "--req0-relay URL": one cooked req0 socket dialled to URL, through
 * which the test sends its raw requests (truncated, mistyped, garbage,
 * huge) one at a time: reads [u32 length][bytes] from stdin, sends them
 * and writes [i32 rv][u32 length][the reply, or NNG's error text] to
 * stdout (native byte order: the same machine). Ends at EOF.
 */
static _Noreturn void role_req0_relay(const char *url)
{
	nng_socket s;
	uint32_t len;

	if (nng_req0_open(&s) != 0 ||
	    nng_socket_set_ms(s, NNG_OPT_RECVTIMEO, CALL_MS) != 0 ||
	    nng_socket_set_ms(s, NNG_OPT_SENDTIMEO, CALL_MS) != 0 ||
	    nng_socket_set_size(s, NNG_OPT_RECVMAXSZ, 0) != 0 ||
	    nng_dial(s, url, NULL, 0) != 0)
		role_exit(2);
	while (fread(&len, sizeof(len), 1, stdin) == 1) {
		const void *out;
		uint32_t out_len;
		nng_msg *m;
		int32_t rv;

		if (nng_msg_alloc(&m, len) != 0 ||
		    (len && fread(nng_msg_body(m), len, 1, stdin) != 1))
			role_exit(2);
		if ((rv = nng_sendmsg(s, m, 0)) != 0)
			nng_msg_free(m);
		else
			rv = nng_recvmsg(s, &m, 0);
		out = rv ? nng_strerror(rv) : nng_msg_body(m);
		out_len = (uint32_t)(rv ? strlen(out) : nng_msg_len(m));
		if (fwrite(&rv, sizeof(rv), 1, stdout) != 1 ||
		    fwrite(&out_len, sizeof(out_len), 1, stdout) != 1 ||
		    (out_len && fwrite(out, out_len, 1, stdout) != 1) ||
		    fflush(stdout) != 0)
			role_exit(4);
		if (rv == 0)
			nng_msg_free(m);
	}
	role_exit(feof(stdin) ? 0 : 2);
}

/* One request context of a flood; its aio callback runs on NNG threads,
 * so results are counters read by the role's main thread. */
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

/* Opens n_socks sockets with per_sock contexts each and starts them;
 * every request is fixed (fixed_len bytes) if it is not NULL. */
static struct flood *flood_start(const char *url, size_t n_socks,
                                 size_t per_sock, int rounds,
                                 bool never_receive, const char *user,
                                 void *fixed, size_t fixed_len)
{
	struct flood *fl = calloc(1, sizeof(*fl));

	if (!fl || n_socks < 1 || n_socks > FLOOD_SOCKETS)
		role_exit(2);
	fl->n_socks = n_socks;
	fl->n = n_socks * per_sock;
	fl->never_receive = never_receive;
	fl->user = user;
	fl->fixed_msg = fixed;
	fl->fixed_len = fixed_len;
	fl->ctxs = calloc(fl->n, sizeof(*fl->ctxs));
	if (!fl->ctxs)
		role_exit(2);
	for (size_t k = 0; k < n_socks; k++)
		if (nng_req0_open(&fl->socks[k]) != 0 ||
		    nng_socket_set_size(fl->socks[k], NNG_OPT_RECVMAXSZ, 0) !=
		        0 ||
		    nng_dial(fl->socks[k], url, NULL, 0) != 0)
			role_exit(2);
	for (size_t i = 0; i < fl->n; i++) {
		struct flood_ctx *c = &fl->ctxs[i];

		c->fl = fl;
		c->id = (unsigned)i;
		c->rounds_left = rounds;
		if (nng_aio_alloc(&c->aio, flood_cb, c) != 0 ||
		    nng_ctx_open(&c->ctx, fl->socks[i % n_socks]) != 0)
			role_exit(2);
		nng_aio_set_timeout(c->aio, POLL_MS);
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
}

/*
 * Role "--flood URL KIND SOCKETS CONTEXTS ROUNDS USER": CONTEXTS request
 * contexts on each of SOCKETS cooked req0 sockets, each sending ROUNDS
 * requests. KIND "mixed": events of USER, stats, pings and listings, every
 * reply read; "unread": the same, the replies never read; "near-limit":
 * the same batch of NEAR_LIMIT_EVENTS events of USER (just under the
 * 16 MiB message limit) from every context. Reports "started BYTES" once
 * every request was handed to NNG (BYTES: the near-limit batch's size,
 * else 0), then "done DONE OK REFUSED FAILED S0 .. S5" (contexts done,
 * replies by status) once every context is done or POLL_MS passed, and
 * keeps its sockets until told to stop.
 */
static _Noreturn void role_flood(const char *url, const char *kind, int n_socks,
                                 int per_sock, int rounds, const char *user)
{
	bool near = strcmp(kind, "near-limit") == 0;
	void *fixed = NULL;
	size_t fixed_len = 0;
	struct flood *fl;

	if (!near && strcmp(kind, "mixed") != 0 && strcmp(kind, "unread") != 0)
		role_exit(2);
	if (near) {
		fixed = batch_pack(user, "near", NEAR_LIMIT_EVENTS, PAYLOAD_MAX,
		                   4, &fixed_len);
		if (fixed_len >= (16u << 20))
			role_exit(2);
	}
	fl = flood_start(url, (size_t)n_socks, (size_t)per_sock, rounds,
	                 strcmp(kind, "unread") == 0, user, fixed, fixed_len);
	role_report("started %zu", fixed_len);
	flood_wait(fl);
	role_report(
	    "done %u %u %u %u %u %u %u %u %u %u", atomic_load(&fl->done),
	    atomic_load(&fl->ok), atomic_load(&fl->refused),
	    atomic_load(&fl->failed), atomic_load(&fl->statuses[0]),
	    atomic_load(&fl->statuses[1]), atomic_load(&fl->statuses[2]),
	    atomic_load(&fl->statuses[3]), atomic_load(&fl->statuses[4]),
	    atomic_load(&fl->statuses[5]));
	role_wait_stop(POLL_MS);
	role_exit(0);
}

/*
 * Role "--never-reads URL": a raw req0 socket that sends pings and never
 * reads a reply (see its test). Reports "stalled SENT" once at least 100
 * were sent and a send stalled (the sidecar stopped reading it), and "end
 * SENT STALLED" when told to stop or after POLL_MS.
 */
static _Noreturn void role_never_reads(const char *url)
{
	Wsgate__V1__Request req = WSGATE__V1__REQUEST__INIT;
	Wsgate__V1__Ping ping = WSGATE__V1__PING__INIT;
	int64_t deadline = now_us() + (int64_t)POLL_MS * 1000;
	unsigned sent = 0, stalled = 0;
	bool told = false;
	uint8_t body[64];
	nng_socket s;

	if (nng_req0_open_raw(&s) != 0 ||
	    nng_socket_set_ms(s, NNG_OPT_SENDTIMEO, 20) != 0 ||
	    nng_socket_set_ms(s, NNG_OPT_RECONNMINT, 10) != 0 ||
	    nng_dial(s, url, NULL, 0) != 0)
		role_exit(2);
	req.body_case = WSGATE__V1__REQUEST__BODY_PING;
	req.ping = &ping;
	for (uint32_t n = 1;
	     n < 10000000 && !role_wait_stop(0) && now_us() < deadline; n++) {
		size_t len;
		nng_msg *m;

		req.request_id = n;
		len = wsgate__v1__request__pack(&req, body);
		if (nng_msg_alloc(&m, len) != 0)
			break;
		memcpy(nng_msg_body(m), body, len);
		/* Raw mode: the request id NNG would have added. */
		nng_msg_header_append_u32(m, 0x80000000u | n);
		if (nng_sendmsg(s, m, 0) == 0) {
			sent++;
		} else {
			nng_msg_free(m);
			stalled++;
		}
		if (!told && sent >= 100 && stalled > 0) {
			role_report("stalled %u", sent);
			told = true;
		}
	}
	role_report("end %u %u", sent, stalled);
	role_exit(0);
}

/* Role "--over-limit URL": one SendBatch past the sidecar's receive limit
 * on a fresh req0 socket. Exits 0 when it got no reply and NNG_ETIMEDOUT,
 * as promised; 1 otherwise; 2 when it could not try. */
static _Noreturn void role_over_limit(const char *url)
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
		role_exit(2);
	memcpy(nng_msg_body(m), buf, len);
	if (nng_sendmsg(s, m, 0) != 0)
		role_exit(2);
	role_exit(nng_recvmsg(s, &m, 0) == NNG_ETIMEDOUT ? 0 : 1);
}

/*
 * Role "--vanishing-backend URL N": N SendEvents and a batch of 1000
 * events, all in flight at once; reports "sent" once every request was
 * handed to the kernel and waits to be killed (see its test).
 */
static _Noreturn void role_vanishing(const char *url, int n)
{
	nng_socket s;
	nng_ctx ctx[VANISH_REQUESTS + 1];
	nng_aio *aio[VANISH_REQUESTS + 1];

	if (n < 1 || n > VANISH_REQUESTS || nng_req0_open(&s) != 0 ||
	    nng_dial(s, url, NULL, 0) != 0)
		role_exit(2);
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
			role_exit(2);
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
			role_exit(2);
		wsgate__v1__request__pack(&req, nng_msg_body(m));
		nng_aio_set_msg(aio[i], m);
		nng_aio_set_timeout(aio[i], 10000);
		nng_ctx_send(ctx[i], aio[i]);
	}
	for (int i = 0; i <= n; i++) {
		nng_aio_wait(aio[i]);
		if (nng_aio_result(aio[i]) != 0)
			role_exit(3);
	}
	/* Everything is on its way: tell the test, which kills us. */
	role_report("sent");
	role_wait_stop(POLL_MS);
	role_exit(5);
}

/* Runs the role argv names; returns only when there is none. */
static void role_main(int argc, char **argv)
{
	if (argc == 3 && strcmp(argv[1], "--req0-relay") == 0)
		role_req0_relay(argv[2]);
	if (argc == 8 && strcmp(argv[1], "--flood") == 0)
		role_flood(argv[2], argv[3], atoi(argv[4]), atoi(argv[5]),
		           atoi(argv[6]), argv[7]);
	if (argc == 3 && strcmp(argv[1], "--never-reads") == 0)
		role_never_reads(argv[2]);
	if (argc == 3 && strcmp(argv[1], "--over-limit") == 0)
		role_over_limit(argv[2]);
	if (argc == 4 && strcmp(argv[1], "--vanishing-backend") == 0)
		role_vanishing(argv[2], atoi(argv[3]));
}

/* --- the test's side of the children --- */

/* Starts the relay of raw requests (role_req0_relay). */
static void relay_open(struct hostile *h)
{
	const char *argv[] = {CHILD_PROC_SELF, "--req0-relay",
	                      h->sc->control_url, NULL};

	assert_int_equal(child_proc_start(&h->relay, argv), 0);
}

/* Stops the relay, which must exit 0 at once. */
static void relay_close(struct hostile *h)
{
	int status = child_proc_finish(&h->relay, CALL_MS);

	if (status != 0)
		fail_msg("the req0 relay exited with status %d", status);
}

/* Sends len raw bytes through the relay as one request and returns the
 * decoded reply, or NULL with h->relay_err saying why (NNG's error text;
 * "Timed out": no reply). */
static Wsgate__V1__Reply *raw_call(struct hostile *h, const void *buf,
                                   size_t len)
{
	uint32_t n = (uint32_t)len;
	int32_t rv;
	uint8_t *body;
	Wsgate__V1__Reply *rep;

	if (child_proc_write(&h->relay, &n, sizeof(n), RELAY_MS) != 0 ||
	    child_proc_write(&h->relay, buf, len, RELAY_MS) != 0 ||
	    child_proc_read(&h->relay, &rv, sizeof(rv), RELAY_MS) != 0 ||
	    child_proc_read(&h->relay, &n, sizeof(n), RELAY_MS) != 0 ||
	    !(body = malloc(n ? n : 1)))
		fail_msg("the req0 relay did not answer within %d ms (exit "
		         "status %d)",
		         RELAY_MS, child_proc_kill(&h->relay));
	if (child_proc_read(&h->relay, body, n, RELAY_MS) != 0) {
		free(body);
		fail_msg("the req0 relay's answer was cut short");
	}
	if (rv != 0) {
		snprintf(h->relay_err, sizeof(h->relay_err), "%.*s", (int)n,
		         (const char *)body);
		free(body);
		return NULL;
	}
	rep = wsgate__v1__reply__unpack(NULL, n, body);
	free(body);
	if (!rep)
		fail_msg("the sidecar's reply is not a wsgate.v1.Reply");
	if (rep->status == WSGATE__V1__STATUS__STATUS_UNSPECIFIED)
		fail_msg("reply with STATUS_UNSPECIFIED");
	return rep;
}

/* Sends buf and expects INVALID_ARGUMENT whose error contains want (NULL:
 * any non-empty error). */
static void expect_invalid(struct hostile *h, const char *what, const void *buf,
                           size_t len, const char *want)
{
	Wsgate__V1__Reply *rep = raw_call(h, buf, len);

	if (!rep)
		fail_msg("%s: no reply (%s)", what, h->relay_err);
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

/* Starts an abusive backend: this binary with a role's arguments. */
static void abuser_start(struct hostile *h, const char *const argv[])
{
	assert_int_equal(child_proc_start(&h->abuser, argv), 0);
}

/* The abuser's next report line, within ms; fails the test (killing the
 * abuser, with its exit status) when none comes. */
static void abuser_report(struct hostile *h, const char *what, char *line,
                          size_t cap, int ms)
{
	int rc = child_proc_read_line(&h->abuser, line, cap, ms);

	if (rc != 1)
		fail_msg("%s: %s (exit status %d)", what,
		         rc == 0 ? "no report in time" : "exited without one",
		         child_proc_kill(&h->abuser));
}

/* Tells the abuser to stop; it must exit with want_status in time. */
static void abuser_stop(struct hostile *h, const char *what, int ms,
                        int want_status)
{
	int status = child_proc_finish(&h->abuser, ms);

	if (status != want_status)
		fail_msg("%s: exit status %d, want %d", what, status,
		         want_status);
}

/* What a flood reported when it was done (see role_flood). */
struct flood_report {
	unsigned done, ok, refused, failed;
	unsigned statuses[6];
};

/* Starts a flood (role_flood) and waits until it sent its requests;
 * returns its fixed request's size (0: none). */
static size_t flood_run(struct hostile *h, const char *kind, int sockets,
                        int contexts, int rounds, const char *user)
{
	char s[3][16], line[128];
	const char *argv[] = {CHILD_PROC_SELF,
	                      "--flood",
	                      h->sc->control_url,
	                      kind,
	                      s[0],
	                      s[1],
	                      s[2],
	                      user,
	                      NULL};
	size_t fixed_len;

	snprintf(s[0], sizeof(s[0]), "%d", sockets);
	snprintf(s[1], sizeof(s[1]), "%d", contexts);
	snprintf(s[2], sizeof(s[2]), "%d", rounds);
	abuser_start(h, argv);
	abuser_report(h, kind, line, sizeof(line), POLL_MS);
	if (sscanf(line, "started %zu", &fixed_len) != 1)
		fail_msg("%s flood: \"%s\"", kind, line);
	return fixed_len;
}

/* Waits for the flood's last report: every one of its n contexts must be
 * done. Its sockets stay open until abuser_stop. */
static void flood_report(struct hostile *h, const char *kind, unsigned n,
                         struct flood_report *r)
{
	char line[256];

	abuser_report(h, kind, line, sizeof(line), POLL_MS + CALL_MS);
	if (sscanf(line, "done %u %u %u %u %u %u %u %u %u %u", &r->done, &r->ok,
	           &r->refused, &r->failed, &r->statuses[0], &r->statuses[1],
	           &r->statuses[2], &r->statuses[3], &r->statuses[4],
	           &r->statuses[5]) != 10)
		fail_msg("%s flood: \"%s\"", kind, line);
	if (r->done < n)
		fail_msg("%s flood: %u of %u request contexts still busy after "
		         "%d ms",
		         kind, n - r->done, n, POLL_MS);
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

/* --- group setup --- */

static int group_setup(void **state)
{
	struct hostile *h = calloc(1, sizeof(*h));
	char *token = NULL, path[2048], *hello = NULL;

	if (!h)
		return -1;
	if (sidecar_start(&h->sc, NULL) != 0)
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

/* A failed test may leave its children running: they go with it. */
static int test_teardown(void **state)
{
	struct hostile *h = *state;

	child_proc_kill(&h->relay);
	child_proc_kill(&h->abuser);
	return 0;
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
	size_t len, blen;
	uint8_t *buf, *batch;

	relay_open(h);
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
		expect_invalid(h, what, buf, cut, NULL);
	}
	batch = batch_pack("trunc-user", "trunc-b", 3, 40, 8, &blen);
	for (size_t cut = 0; cut < blen; cut += 5) {
		char what[64];

		snprintf(what, sizeof(what), "SendBatch cut to %zu of %zu", cut,
		         blen);
		expect_invalid(h, what, batch, cut, NULL);
	}
	/* The whole message is fine, and it is the user's first event. */
	Wsgate__V1__Reply *rep = raw_call(h, buf, len);
	if (!rep)
		fail_msg("whole SendEvent: %s", h->relay_err);
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
	relay_close(h);
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
	uint64_t accepted = events_accepted(h);
	unsigned undecodable = 0, decodable = 0;
	uint8_t garbage[512];
	unsigned seed = 12345;

	relay_open(h);
	for (size_t i = 0; i < sizeof(wire_cases) / sizeof(wire_cases[0]); i++)
		expect_invalid(h, wire_cases[i].what, wire_cases[i].bytes,
		               wire_cases[i].len, wire_cases[i].want);
	/* Random bytes: what protobuf-c cannot decode must be refused;
	 * the rare decodable one must still get a proper reply. */
	for (int i = 0; i < 500; i++) {
		size_t len = 1 + (size_t)(rand_r(&seed) % sizeof(garbage));
		Wsgate__V1__Request *local;
		Wsgate__V1__Reply *rep;

		for (size_t k = 0; k < len; k++)
			garbage[k] = (uint8_t)rand_r(&seed);
		local = wsgate__v1__request__unpack(NULL, len, garbage);
		rep = raw_call(h, garbage, len);
		if (!rep)
			fail_msg("garbage %d: no reply (%s)", i, h->relay_err);
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
	relay_close(h);
	good_probe(h, "after garbage");
	expect_healthy(h, "garbage");
	h->passed++;
}

/* Batches at and over every limit: 1000 events (the most), 1001 (refused
 * whole), mixed valid and invalid (per-event results), an event over
 * --max-payload, messages just under the 16 MiB message limit several at a
 * time, and one over it (the pipe is closed, no reply). */
static void test_huge_batches_are_bounded(void **state)
{
	struct hostile *h = *state;
	Wsgate__V1__Reply *rep;
	size_t len;
	void *buf;

	/* 1000 events: the most a batch may hold. */
	relay_open(h);
	buf = batch_pack("batch-user", "b", 1000, 64, 1, &len);
	rep = raw_call(h, buf, len);
	free(buf);
	if (!rep)
		fail_msg("batch of 1000: %s", h->relay_err);
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
	expect_invalid(h, "batch of 1001", buf, len, "send_batch.events");
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
		rep = raw_call(h, buf, len);
		free(buf);
		if (!rep)
			fail_msg("mixed batch: %s", h->relay_err);
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
		Wsgate__V1__Reply *r = raw_call(h, buf, len);

		if (!r)
			fail_msg("over-max payload: %s", h->relay_err);
		assert_int_equal(r->status, WSGATE__V1__STATUS__OK);
		assert_int_equal(r->batch->results[0]->status,
		                 WSGATE__V1__STATUS__INVALID_ARGUMENT);
		assert_non_null(
		    strstr(r->batch->results[0]->error, "max payload"));
		wsgate__v1__reply__free_unpacked(r, NULL);
	}
	free(buf);

	/* Several batches just under the 16 MiB message limit in service
	 * at once, while the good backend works. The same event ids each
	 * time: the first is accepted, the others are duplicates; each batch
	 * is fully processed. */
	{
		struct flood_report r;

		len = flood_run(h, "near-limit", 1, NEAR_LIMIT_INFLIGHT, 1,
		                "big-user");
		print_message("  %d batches of %zu bytes in flight\n",
		              NEAR_LIMIT_INFLIGHT, len);
		good_probe(h, "while 15 MB batches are in flight");
		flood_report(h, "near-limit", NEAR_LIMIT_INFLIGHT, &r);
		assert_int_equal(r.failed, 0);
		assert_int_equal(r.ok, NEAR_LIMIT_INFLIGHT);
		abuser_stop(h, "near-limit batches", CALL_MS, 0);
		assert_int_equal(next_seq(h, "big-user", "after-near"),
		                 NEAR_LIMIT_EVENTS + 1);
	}

	/* Over the message limit: the sidecar closes the pipe before
	 * reading it; the requester only sees a timeout (role_over_limit
	 * exits 0 then). */
	{
		const char *argv[] = {CHILD_PROC_SELF, "--over-limit",
		                      h->sc->control_url, NULL};

		abuser_start(h, argv);
		assert_int_equal(child_proc_wait(&h->abuser, POLL_MS), 0);
		assert_int_equal(next_seq(h, "big-user", "after-over"),
		                 NEAR_LIMIT_EVENTS + 2);
	}
	relay_close(h);
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
static void test_backend_that_never_reads_cannot_starve_others(void **state)
{
	struct hostile *h = *state;
	const char *argv[] = {CHILD_PROC_SELF, "--never-reads",
	                      h->sc->control_url, NULL};
	struct flood_report r;
	unsigned sent, stalled;
	char line[128];

	/* Cooked contexts that never receive, open during the probe. */
	flood_run(h, "unread", 1, SILENT_CONTEXTS, 1, "silent-user");
	flood_report(h, "unread", SILENT_CONTEXTS, &r);
	assert_int_equal(r.failed, 0);
	good_probe(h, "with 1000 unread replies on a cooked req0 socket");
	abuser_stop(h, "unread replies", CALL_MS, 0);

	/* The raw abuser. Once the sidecar no longer reads it (its sends
	 * stall), without a bound on how long a reply may wait every
	 * context would be queued behind the abuser's unread replies and
	 * the good backend below would time out. */
	abuser_start(h, argv);
	abuser_report(h, "non-reading backend", line, sizeof(line),
	              POLL_MS + CALL_MS);
	if (sscanf(line, "stalled %u", &sent) != 1)
		fail_msg("the non-reading backend's sends never stalled: "
		         "\"%s\"",
		         line);
	print_message("  abuser: %u requests sent before its sends stalled\n",
	              sent);

	good_probe(h, "while a backend never reads its replies");

	assert_int_equal(child_proc_write(&h->abuser, "stop\n", 5, CALL_MS), 0);
	abuser_report(h, "non-reading backend", line, sizeof(line), CALL_MS);
	if (sscanf(line, "end %u %u", &sent, &stalled) != 2)
		fail_msg("non-reading backend: \"%s\"", line);
	print_message("  abuser: %u requests sent, %u stalled sends\n", sent,
	              stalled);
	abuser_stop(h, "non-reading backend", CALL_MS, 0);
	good_probe(h, "after the non-reading backend");
	expect_healthy(h, "a backend that never reads");
	h->passed++;
}

static void test_backend_vanishing_mid_request(void **state)
{
	struct hostile *h = *state;
	char n[16], line[64];
	const char *argv[] = {CHILD_PROC_SELF, "--vanishing-backend",
	                      h->sc->control_url, n, NULL};

	/* A process killed right after its requests left. */
	snprintf(n, sizeof(n), "%d", VANISH_REQUESTS);
	abuser_start(h, argv);
	abuser_report(h, "vanishing backend", line, sizeof(line), POLL_MS);
	if (strcmp(line, "sent") != 0)
		fail_msg("vanishing backend: \"%s\"", line);
	assert_int_equal(child_proc_kill(&h->abuser), 128 + SIGKILL);
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
	struct flood_report r;
	uint64_t before = events_accepted(h);
	unsigned total = FLOOD_SOCKETS * FLOOD_CONTEXTS * FLOOD_ROUNDS;
	int64_t t0 = now_us();
	double secs;

	flood_run(h, "mixed", FLOOD_SOCKETS, FLOOD_CONTEXTS, FLOOD_ROUNDS,
	          "flood-user");
	good_probe(h, "during 2400 concurrent requests");
	flood_report(h, "mixed", FLOOD_SOCKETS * FLOOD_CONTEXTS, &r);
	secs = (double)(now_us() - t0) / 1e6;
	print_message("  flood: %u requests in %.2f s: %u OK, %u refused, "
	              "%u failed\n",
	              total, secs, r.ok, r.refused, r.failed);
	assert_int_equal(r.failed, 0);
	/* RESOURCE_EXHAUSTED would be a legitimate answer under overload;
	 * with a backlog limit of 200000 jobs it does not happen here. */
	assert_int_equal(
	    r.ok + r.statuses[WSGATE__V1__STATUS__RESOURCE_EXHAUSTED], total);
	assert_int_equal(r.ok, total);
	/* 5 of every 8 requests were events, each accepted once, and the
	 * good backend's probe sent PROBE_N meanwhile. */
	{
		uint64_t want = PROBE_N;

		for (unsigned i = 0; i < FLOOD_SOCKETS * FLOOD_CONTEXTS; i++)
			for (int k = FLOOD_ROUNDS; k > 0; k--)
				want += (i + (unsigned)k) % 8 > 2;
		assert_int_equal(events_accepted(h) - before, want);
	}
	abuser_stop(h, "flood", CALL_MS, 0);
	good_probe(h, "after the flood");
	expect_healthy(h, "thousands of concurrent requests");
	h->passed++;
}

int main(int argc, char **argv)
{
#define T(f) cmocka_unit_test_teardown(f, test_teardown)
	const struct CMUnitTest tests[] = {
	    T(test_good_backend_baseline),
	    T(test_truncated_protobuf_is_refused),
	    T(test_wrong_types_and_garbage_are_refused),
	    T(test_huge_batches_are_bounded),
	    T(test_backend_that_never_reads_cannot_starve_others),
	    T(test_backend_vanishing_mid_request),
	    T(test_thousands_of_concurrent_requests),
	};
#undef T

	signal(SIGPIPE, SIG_IGN);
	if (argc > 1) {
		role_main(argc, argv);
		fprintf(stderr, "unknown role %s\n", argv[1]);
		return 2;
	}
	/* WSGATE_TEST_FILTER=pattern: run only the matching tests. */
	if (getenv("WSGATE_TEST_FILTER"))
		cmocka_set_test_filter(getenv("WSGATE_TEST_FILTER"));
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
