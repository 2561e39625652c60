/*
 * test_hostile_clients: what hostile or broken WebSocket clients get from a
 * real sidecar process, and that a well-behaved user's events keep flowing
 * meanwhile.
 *
 * One sidecar serves most tests (group setup: --queue-limit 64K,
 * --handshake-timeout 2s, no per-peer rate limit); the two limit tests start
 * their own (--max-conns, --handshake-rate-per-peer). Each test has its own
 * well-behaved user: before the abuse it measures that user's
 * publish-to-receive latency (libwsgate SendEvent to the text frame on its
 * WebSocket), then runs the abuse on a thread of its own while measuring
 * again, and prints both (timings are printed, never asserted). What is
 * asserted is what DESIGN.md promises: 401, 429, 1003, 1007, 1009, 4008,
 * a timeout close, only one's own events, and that every event of the
 * well-behaved user arrives.
 *
 * Nothing sleeps to synchronise: every wait is a receive, a join or a
 * polled condition with a deadline, and every loop is bounded.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "event_flood.h"
#include "test_clock.h"
#include "jwt_mint.h"
#include "proc_status.h"
#include "sidecar_proc.h"
#include "ws_client.h"
#include "wsgate.h"

#define RECV_MS          5000  /* one frame, one handshake, one reply */
#define CALL_MS          5000  /* libwsgate calls */
#define POLL_MS          15000 /* deadline of a polled condition */
#define ABUSE_MS         60000 /* the longest any abuse may run */
#define MAX_CLIENT_FRAME 65536
#define HS_TIMEOUT_S     2   /* --handshake-timeout of the shared sidecar */
#define LAT_BEFORE       20  /* round trips before the abuse */
#define LAT_DURING_MAX   400 /* at most this many during it */
#define N_TESTS          12  /* the tests of main(); see group_teardown */

#define STORM_HANDSHAKES 1000 /* refused handshakes of the token storm */
#define CHURN_CONNS      10000
#define CHURN_BATCH      250
#define SLOW_PAYLOAD     8192
#define SLOW_BATCH       16
#define SLOW_MAX_BATCHES 200 /* 25 MiB: far past any socket buffer */
#define SLOWLORIS_SOCKS  24
#define RATE_PER_PEER    5 /* handshakes/s; bursts of 10 */
#define RATE_TRIES       60
#define MAX_CONNS        4

/* One per test: a user who behaves, and whose latency is measured. */
struct good {
	struct sidecar *sc;
	wsgate_client *backend;
	struct ws_client *c;
	char user[64];
	int sent; /* events sent to it, which is its last seq */
	char error[400];
};

/* One for the whole file. */
struct hc {
	struct sidecar *sc;
	wsgate_client *backend;
	int passed; /* tests that reached their last line */
	struct good good;
	/* A test's WebSockets; those a failed test leaves open are dropped
	 * by test_teardown. */
	struct ws_client_set clients;
	/* The limit tests' own sidecar and backend. */
	struct sidecar *own_sc;
	wsgate_client *own_backend;
};

static int64_t now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Wall clock, as the audit store's `at` columns. */
static int64_t wall_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* --- WebSockets of the current test --- */

static void track(struct hc *h, struct ws_client *c)
{
	if (ws_client_set_add(&h->clients, c))
		fail_msg("a test opened more than %d WebSockets",
		         WS_CLIENT_SET_MAX);
}

static void drop(struct hc *h, struct ws_client *c)
{
	ws_client_set_forget(&h->clients, c);
	ws_client_abort(c);
}

static int test_teardown(void **state)
{
	struct hc *h = *state;

	ws_client_set_abort_all(&h->clients);
	ws_client_abort(h->good.c);
	memset(&h->good, 0, sizeof(h->good));
	if (h->own_backend)
		wsgate_client_close(h->own_backend);
	h->own_backend = NULL;
	if (h->own_sc)
		sidecar_free(h->own_sc, false);
	h->own_sc = NULL;
	return 0;
}

/* --- small helpers --- */

static char *token_path(const struct sidecar *sc, const char *user,
                        const char *query)
{
	char *tok = sidecar_token(sc, user, 600);
	char *path;

	assert_non_null(tok);
	path = malloc(strlen(tok) + 256);
	assert_non_null(path);
	sprintf(path, "/ws?access_token=%s%s", tok, query ? query : "");
	free(tok);
	return path;
}

/* The frame as a JSON object, or NULL (err says why). */
static json_t *recv_json(struct ws_client *c, char *err, size_t cap)
{
	char *text = ws_client_recv_text(c, RECV_MS);
	json_t *obj;

	if (!text) {
		snprintf(err, cap, "no text frame: %s", ws_client_error());
		return NULL;
	}
	obj = json_loads(text, 0, NULL);
	if (!json_is_object(obj)) {
		snprintf(err, cap, "not a JSON object: %.200s", text);
		json_decref(obj);
		obj = NULL;
	}
	free(text);
	return obj;
}

static json_t *expect_json(struct ws_client *c)
{
	char err[300];
	json_t *obj = recv_json(c, err, sizeof(err));

	if (!obj)
		fail_msg("%s", err);
	return obj;
}

static const char *jstr(json_t *obj, const char *key)
{
	const char *v = json_string_value(json_object_get(obj, key));

	return v ? v : "";
}

static json_int_t jint(json_t *obj, const char *key)
{
	json_t *v = json_object_get(obj, key);

	if (!json_is_integer(v))
		fail_msg("\"%s\" is not an integer", key);
	return json_integer_value(v);
}

/* Opens a WebSocket on path and reads `connected`; *user_out (if not
 * NULL) gets the user it names, *seq_out its seq. */
static struct ws_client *open_ws(struct hc *h, const struct sidecar *sc,
                                 const char *path, const char *const *hdr,
                                 char user_out[64], json_int_t *seq_out)
{
	struct ws_client *c;
	int status = ws_client_connect(&c, sc->port, path, hdr, RECV_MS);
	json_t *obj;

	if (status != 101)
		fail_msg("handshake: %d (%s)", status, ws_client_error());
	track(h, c);
	obj = expect_json(c);
	if (strcmp(jstr(obj, "type"), "connected") != 0)
		fail_msg("first frame is not connected: type %s",
		         jstr(obj, "type"));
	if (user_out)
		snprintf(user_out, 64, "%s", jstr(obj, "user_id"));
	if (seq_out)
		*seq_out = jint(obj, "seq");
	json_decref(obj);
	return c;
}

static struct ws_client *open_user(struct hc *h, const struct sidecar *sc,
                                   const char *user, const char *query)
{
	char *path = token_path(sc, user, query);
	char got[64];
	struct ws_client *c = open_ws(h, sc, path, NULL, got, NULL);

	free(path);
	if (strcmp(got, user) != 0)
		fail_msg("connected as \"%s\", want \"%s\"", got, user);
	return c;
}

/* {"type":"ping"} is answered with {"type":"pong"} after everything the
 * sidecar queued before it: nothing else is on its way. */
static void expect_pong(struct ws_client *c, const char *who)
{
	json_t *obj;

	assert_int_equal(ws_client_send_text(c, "{\"type\":\"ping\"}"),
	                 WS_CLIENT_OK);
	obj = expect_json(c);
	if (strcmp(jstr(obj, "type"), "pong") != 0)
		fail_msg(
		    "%s: expected pong, got type \"%s\" (user \"%s\", "
		    "seq %lld)",
		    who, jstr(obj, "type"), jstr(obj, "user_id"),
		    (long long)json_integer_value(json_object_get(obj, "seq")));
	json_decref(obj);
}

static struct wsgate_event make_event(const char *id, const char *user,
                                      const char *payload, size_t len)
{
	struct wsgate_event ev = {0};

	ev.event_id = id;
	ev.user_id = user;
	ev.thread_id = "t1";
	ev.run_id = "r1";
	ev.type = WSGATE_AGENT_THINKING;
	ev.payload_json = payload;
	ev.payload_len = len;
	return ev;
}

/* Sends user's next event (id "<user>-<seq>") and checks its seq. */
static void send_to(wsgate_client *backend, const char *user, int seq)
{
	char id[96];
	struct wsgate_event ev;
	struct wsgate_event_result res;
	enum wsgate_status st;

	snprintf(id, sizeof(id), "%s-%d", user, seq);
	ev = make_event(id, user, "{\"k\":1}", 7);
	st = wsgate_send_event(backend, &ev, &res);
	if (st != WSGATE_OK)
		fail_msg("send %s: %s (%s)", id, wsgate_status_name(st),
		         wsgate_client_error(backend));
	assert_int_equal(res.seq, seq);
}

/* The next frame is user's event seq (id "<user>-<seq>"). */
static void expect_event(struct ws_client *c, const char *user, int seq)
{
	char id[96];
	json_t *obj = expect_json(c);

	snprintf(id, sizeof(id), "%s-%d", user, seq);
	if (strcmp(jstr(obj, "user_id"), user) != 0 ||
	    strcmp(jstr(obj, "event_id"), id) != 0 || jint(obj, "seq") != seq)
		fail_msg(
		    "expected %s (seq %d of %s), got event \"%s\" seq "
		    "%lld of \"%s\"",
		    id, seq, user, jstr(obj, "event_id"),
		    (long long)json_integer_value(json_object_get(obj, "seq")),
		    jstr(obj, "user_id"));
	json_decref(obj);
}

/* --- the audit store, read-only --- */

static int64_t failures_since(const struct sidecar *sc, int64_t since_us,
                              const char *reason, int64_t want)
{
	char at[32];

	snprintf(at, sizeof(at), "%lld", (long long)since_us);
	if (!reason)
		return sidecar_db_wait(sc,
		                       "SELECT count(*) FROM auth_failures "
		                       "WHERE at >= CAST(?1 AS INTEGER)",
		                       at, NULL, want, POLL_MS);
	return sidecar_db_wait(sc,
	                       "SELECT count(*) FROM auth_failures WHERE at "
	                       ">= CAST(?1 AS INTEGER) AND reason = ?2",
	                       at, reason, want, POLL_MS);
}

/* The sidecar's open connections, from GetStats; polls until it is want
 * (returns the last value seen). */
static uint32_t wait_connections(wsgate_client *backend, uint32_t want)
{
	int64_t deadline = test_now_ms() + POLL_MS;
	struct wsgate_stats st;

	for (;;) {
		enum wsgate_status s = wsgate_get_stats(backend, &st);

		if (s != WSGATE_OK)
			fail_msg("GetStats: %s (%s)", wsgate_status_name(s),
			         wsgate_client_error(backend));
		if (st.connections == want || test_now_ms() > deadline)
			return st.connections;
		test_pause_ms(20);
	}
}

/* wsgate_connections from GET /metrics, or -1. */
static long metrics_connections(const struct sidecar *sc)
{
	char *body = NULL;
	long n = -1;
	const char *p;

	if (sidecar_http_get(sc, "/metrics", &body) == 200 && body &&
	    (p = strstr(body, "\nwsgate_connections ")) != NULL)
		n = strtol(p + strlen("\nwsgate_connections "), NULL, 10);
	free(body);
	return n;
}

/* --- the well-behaved user and its latency --- */

static void good_start(struct hc *h, struct sidecar *sc, wsgate_client *backend,
                       const char *user)
{
	struct good *g = &h->good;
	json_int_t seq;
	char *path = token_path(sc, user, NULL);
	char got[64];

	memset(g, 0, sizeof(*g));
	g->sc = sc;
	g->backend = backend;
	snprintf(g->user, sizeof(g->user), "%s", user);
	g->c = open_ws(h, sc, path, NULL, got, &seq);
	ws_client_set_forget(&h->clients,
	                     g->c); /* test_teardown drops it as h->good.c */
	free(path);
	assert_string_equal(got, user);
	assert_int_equal(seq, 0);
}

/* One event to the good user, and the time until its frame arrived (us),
 * or -1 with g->error set. Does not fail: it runs while an abuse thread
 * still uses the test's memory. */
static int64_t good_round_trip(struct good *g)
{
	char id[96], payload[64];
	struct wsgate_event ev;
	struct wsgate_event_result res;
	enum wsgate_status st;
	int64_t t0 = now_us();
	json_t *obj;
	int seq = g->sent + 1;

	snprintf(id, sizeof(id), "%s-%d", g->user, seq);
	snprintf(payload, sizeof(payload), "{\"n\":%d}", seq);
	ev = make_event(id, g->user, payload, strlen(payload));
	for (int tries = 0;; tries++) {
		st = wsgate_send_event(g->backend, &ev, &res);
		/* "Busy, retry later" is an answer, not a failure. */
		if (st != WSGATE_RESOURCE_EXHAUSTED || tries >= 100)
			break;
		test_pause_ms(10);
	}
	if (st != WSGATE_OK || res.seq != (uint64_t)seq ||
	    res.connections != 1) {
		snprintf(g->error, sizeof(g->error),
		         "event %s: %s (%s), seq %llu, %u connections", id,
		         wsgate_status_name(st),
		         wsgate_client_error(g->backend),
		         (unsigned long long)res.seq, res.connections);
		return -1;
	}
	g->sent = seq;
	obj = recv_json(g->c, g->error, sizeof(g->error));
	if (!obj)
		return -1;
	if (strcmp(jstr(obj, "user_id"), g->user) != 0 ||
	    strcmp(jstr(obj, "event_id"), id) != 0 ||
	    json_integer_value(json_object_get(obj, "seq")) != seq) {
		snprintf(g->error, sizeof(g->error),
		         "expected %s, got \"%s\" of \"%s\"", id,
		         jstr(obj, "event_id"), jstr(obj, "user_id"));
		json_decref(obj);
		return -1;
	}
	json_decref(obj);
	return now_us() - t0;
}

static int cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

	return (x > y) - (x < y);
}

static void latency_text(char *out, size_t cap, int64_t *lat, int n)
{
	if (n == 0) {
		snprintf(out, cap, "n=0");
		return;
	}
	qsort(lat, (size_t)n, sizeof(*lat), cmp_i64);
	snprintf(out, cap, "n=%d p50 %.2f ms, p99 %.2f ms, max %.2f ms", n,
	         lat[n / 2] / 1000.0, lat[(n * 99) / 100] / 1000.0,
	         lat[n - 1] / 1000.0);
}

typedef void (*abuse_fn)(void *arg);

/* One abuse running on its own thread. */
struct abuse {
	abuse_fn fn;
	void *arg;
	atomic_bool done;
};

static void *abuse_main(void *p)
{
	struct abuse *a = p;

	a->fn(a->arg);
	atomic_store(&a->done, true);
	return NULL;
}

/*
 * Measures the good user's latency (LAT_BEFORE round trips), runs fn(arg)
 * on a thread while measuring again, joins it, and prints both. Fails if
 * any of the good user's events did not arrive. fn must bound its own
 * running time and must not call cmocka (it reports through arg).
 */
static void run_abuse(struct hc *h, const char *what, abuse_fn fn, void *arg)
{
	struct good *g = &h->good;
	static int64_t before[LAT_BEFORE], during[LAT_DURING_MAX];
	struct abuse a = {.fn = fn, .arg = arg};
	char tb[128], td[128];
	int n = 0, failed = 0;
	int64_t t0;
	pthread_t tid;

	for (int i = 0; i < LAT_BEFORE; i++)
		if ((before[i] = good_round_trip(g)) < 0)
			fail_msg("%s: good user before: %s", what, g->error);
	atomic_init(&a.done, false);
	t0 = test_now_ms();
	assert_int_equal(pthread_create(&tid, NULL, abuse_main, &a), 0);
	while (!atomic_load(&a.done) && n < LAT_DURING_MAX && !failed) {
		int64_t l = good_round_trip(g);

		if (l < 0)
			failed = 1;
		else
			during[n++] = l;
	}
	pthread_join(tid, NULL);
	if (failed)
		fail_msg("%s: good user during the abuse: %s", what, g->error);
	/* Events still flow once it is over. */
	if (n == 0 && (during[n++] = good_round_trip(g)) < 0)
		fail_msg("%s: good user after: %s", what, g->error);
	latency_text(tb, sizeof(tb), before, LAT_BEFORE);
	latency_text(td, sizeof(td), during, n);
	print_message("  %s (%lld ms): publish-to-receive latency of user "
	              "\"%s\"\n    before: %s\n    during: %s\n",
	              what, (long long)(test_now_ms() - t0), g->user, tb, td);
}

/* --- raw sockets, for clients no WebSocket library would be --- */

static int tcp_open(uint16_t port)
{
	struct sockaddr_in sa = {.sin_family = AF_INET,
	                         .sin_port = htons(port)};
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct timeval tv = {.tv_sec = RECV_MS / 1000};
	int one = 1;

	if (fd < 0)
		return -1;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		close(fd);
		return -1;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	return fd;
}

static int send_str(int fd, const char *s, size_t len)
{
	while (len) {
		ssize_t n = send(fd, s, len, MSG_NOSIGNAL);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		s += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Reads until the end of an HTTP head; returns its status or -1. */
static int read_status(int fd)
{
	char buf[4096];
	size_t got = 0;
	int status;

	while (got < sizeof(buf) - 1) {
		ssize_t n = recv(fd, buf + got, sizeof(buf) - 1 - got, 0);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		got += (size_t)n;
		buf[got] = '\0';
		if (strstr(buf, "\r\n\r\n"))
			break;
	}
	if (sscanf(buf, "HTTP/1.1 %d", &status) != 1)
		return -1;
	return status;
}

static void close_rst(int fd)
{
	struct linger lg = {.l_onoff = 1, .l_linger = 0};

	setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	close(fd);
}

/* ------------------------------------------------------------------ */
/* Handshakes without a token or with garbage, at a high rate: 401.   */
/* ------------------------------------------------------------------ */

struct storm {
	uint16_t port;
	char *bad_paths[16];
	const char *const *bad_headers[16];
	int n_kinds;
	int sent, got_401;
	int other_status; /* the first status that was not 401 */
	int64_t started_us;
	char error[200];
};

static void storm_main(void *arg)
{
	struct storm *s = arg;
	int64_t deadline = test_now_ms() + ABUSE_MS;

	s->started_us = now_us();
	for (int i = 0; i < STORM_HANDSHAKES && test_now_ms() < deadline; i++) {
		int k = i % s->n_kinds;
		struct ws_client *c = NULL;
		int st = ws_client_connect(&c, s->port, s->bad_paths[k],
		                           s->bad_headers[k], RECV_MS);

		s->sent++;
		if (st == 401) {
			s->got_401++;
		} else {
			ws_client_abort(c);
			if (!s->other_status) {
				s->other_status = st;
				snprintf(s->error, sizeof(s->error),
				         "kind %d (%.60s): %d (%s)", k,
				         s->bad_paths[k], st,
				         ws_client_error());
			}
		}
	}
}

static char *random_token(size_t len)
{
	static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnop"
	                          "qrstuvwxyz0123456789-_.";
	char *t = malloc(len + 1);

	assert_non_null(t);
	for (size_t i = 0; i < len; i++)
		t[i] = b64[(size_t)rand() % (sizeof(b64) - 1)];
	t[len] = '\0';
	return t;
}

static void test_handshakes_without_or_with_garbage_tokens_get_401(void **state)
{
	struct hc *h = *state;
	static const char other_secret[] =
	    "0123456789abcdef0123456789abcdef0123456789abcdef";
	static const char *const hdr_bearer[] = {
	    "Authorization: Bearer not-a-jwt", NULL};
	static const char *const hdr_basic[] = {
	    "Authorization: Basic dXNlcjpwYXNzd29yZA==", NULL};
	static const char *const hdr_proto[] = {
	    "Sec-WebSocket-Protocol: wsgate.v1, bearer.x.y.z", NULL};
	struct storm *s = calloc(1, sizeof(*s));
	char *tok, *rnd;
	int64_t t0 = wall_us();
	int64_t rows, reasons;
	char at[32];

	assert_non_null(s);
	good_start(h, h->sc, h->backend, "good-storm");
	s->port = h->sc->port;
	/* An empty token, and the header forms (a handshake without any
	 * token authenticates with its first message instead). */
	s->bad_paths[s->n_kinds++] = strdup("/ws?access_token=");
	s->bad_headers[s->n_kinds] = hdr_bearer;
	s->bad_paths[s->n_kinds++] = strdup("/ws");
	s->bad_headers[s->n_kinds] = hdr_basic;
	s->bad_paths[s->n_kinds++] = strdup("/ws");
	s->bad_headers[s->n_kinds] = hdr_proto;
	s->bad_paths[s->n_kinds++] = strdup("/ws?since=0&access_token=");
	/* Garbage shaped like a JWT, and random garbage, short and long. */
	s->bad_paths[s->n_kinds++] = strdup("/ws?access_token=a.b.c");
	s->bad_paths[s->n_kinds++] =
	    strdup("/ws?access_token=eyJhbGciOiJub25lIn0."
	           "eyJzdWIiOiJ1MSIsImV4cCI6OTk5OTk5OTk5OX0.");
	rnd = random_token(300);
	asprintf(&s->bad_paths[s->n_kinds++], "/ws?access_token=%s", rnd);
	free(rnd);
	rnd = random_token(7000);
	asprintf(&s->bad_paths[s->n_kinds++], "/ws?access_token=%s", rnd);
	free(rnd);
	/* Well-formed tokens the sidecar must still refuse: another key,
	 * expired beyond the leeway, alg none. */
	tok = jwt_mint_hs256(other_secret, strlen(other_secret), "storm-u",
	                     time(NULL), 600);
	assert_non_null(tok);
	asprintf(&s->bad_paths[s->n_kinds++], "/ws?access_token=%s", tok);
	free(tok);
	tok = sidecar_token(h->sc, "storm-u", -120);
	assert_non_null(tok);
	asprintf(&s->bad_paths[s->n_kinds++], "/ws?access_token=%s", tok);
	free(tok);
	tok = jwt_mint_raw("{\"alg\":\"none\",\"typ\":\"JWT\"}",
	                   "{\"sub\":\"storm-u\",\"exp\":9999999999}", "none",
	                   NULL, 0, NULL);
	assert_non_null(tok);
	asprintf(&s->bad_paths[s->n_kinds++], "/ws?access_token=%s", tok);
	free(tok);
	for (int k = 0; k < s->n_kinds; k++)
		assert_non_null(s->bad_paths[k]);

	run_abuse(h, "1000 handshakes without or with garbage tokens",
	          storm_main, s);
	print_message("    %d refused handshakes in %.2f s\n", s->sent,
	              (now_us() - s->started_us) / 1e6);
	if (s->other_status)
		fail_msg("a bad handshake was not answered 401: %s", s->error);
	assert_int_equal(s->sent, STORM_HANDSHAKES);
	assert_int_equal(s->got_401, STORM_HANDSHAKES);

	/* The sidecar is up and serving, and every refusal has its row. */
	assert_true(sidecar_running(h->sc, NULL));
	assert_int_equal(sidecar_http_get(h->sc, "/healthz", NULL), 200);
	rows = failures_since(h->sc, t0, NULL, STORM_HANDSHAKES);
	if (rows < STORM_HANDSHAKES)
		fail_msg("%lld auth_failures rows for %d refusals",
		         (long long)rows, STORM_HANDSHAKES);
	snprintf(at, sizeof(at), "%lld", (long long)t0);
	reasons =
	    sidecar_db_int(h->sc,
	                   "SELECT count(DISTINCT reason) FROM auth_failures "
	                   "WHERE at >= CAST(?1 AS INTEGER)",
	                   at, NULL);
	print_message("    %lld auth_failures rows, %lld distinct reasons\n",
	              (long long)rows, (long long)reasons);
	assert_true(reasons >= 4); /* missing, malformed, signature, expired */
	for (int k = 0; k < s->n_kinds; k++)
		free(s->bad_paths[k]);
	free(s);
	h->passed++;
}

/* ------------------------------------------------------------------ */
/* A token of user A with ?since= of user B's sequence: only A's.      */
/* ------------------------------------------------------------------ */

/*
 * A replay is read from the log while the connection is already open, so
 * a pong may overtake it; a live event may not ("then live events"). So a
 * marker event, sent once the connection is open, ends what the replay
 * sends. resume_check reads a connection up to its marker: every frame
 * must be one of user's events, in seq order from first, and the marker
 * the last. Returns how many came before the marker, or -1 with err set.
 * Usable off the main thread.
 */
static int resume_check(struct ws_client *c, wsgate_client *backend,
                        const char *user, int first, int *user_seq, char *err,
                        size_t cap)
{
	char marker[96];
	struct wsgate_event ev;
	struct wsgate_event_result res;
	enum wsgate_status st;
	int n = 0;

	snprintf(marker, sizeof(marker), "%s-%d", user, *user_seq + 1);
	ev = make_event(marker, user, "{\"marker\":true}", 15);
	st = wsgate_send_event(backend, &ev, &res);
	if (st != WSGATE_OK || res.seq != (uint64_t)(*user_seq + 1)) {
		snprintf(err, cap, "marker %s: %s, seq %llu", marker,
		         wsgate_status_name(st), (unsigned long long)res.seq);
		return -1;
	}
	(*user_seq)++;
	for (int i = 0; i < 200; i++) {
		json_t *obj = recv_json(c, err, cap);
		char id[96];
		bool is_marker;

		if (!obj)
			return -1;
		snprintf(id, sizeof(id), "%s-%d", user, first + n);
		is_marker = strcmp(jstr(obj, "event_id"), marker) == 0;
		if (strcmp(jstr(obj, "user_id"), user) != 0 ||
		    (!is_marker && strcmp(jstr(obj, "event_id"), id) != 0)) {
			snprintf(
			    err, cap,
			    "connection of %s got %s \"%s\" of user \"%s\" "
			    "(want %s or the marker %s)",
			    user, jstr(obj, "type"), jstr(obj, "event_id"),
			    jstr(obj, "user_id"), id, marker);
			json_decref(obj);
			return -1;
		}
		json_decref(obj);
		if (is_marker)
			return n;
		n++;
	}
	snprintf(err, cap, "no marker %s after 200 frames", marker);
	return -1;
}

struct since_abuse {
	uint16_t port;
	wsgate_client *backend;
	const char *tok_a, *user_a;
	int a_seq;  /* A's last seq */
	int b_last; /* B's last seq */
	int done;
	char error[300];
};

/* 50 connections as A with since = 0..B's last seq: each gets A's
 * events after since and nothing of B's. */
static void since_abuse_main(void *arg)
{
	struct since_abuse *sa = arg;
	char path[10000];

	for (int i = 0; i < 50 && !sa->error[0]; i++) {
		int since = i % (sa->b_last + 1), want, got;
		struct ws_client *c = NULL;
		int st;
		json_t *obj;

		snprintf(path, sizeof(path), "/ws?access_token=%s&since=%d",
		         sa->tok_a, since);
		st = ws_client_connect(&c, sa->port, path, NULL, RECV_MS);
		if (st != 101) {
			snprintf(sa->error, sizeof(sa->error),
			         "since=%d: handshake %d", since, st);
			break;
		}
		obj = recv_json(c, sa->error, sizeof(sa->error));
		if (obj && strcmp(jstr(obj, "user_id"), sa->user_a) != 0)
			snprintf(sa->error, sizeof(sa->error),
			         "since=%d: connected as \"%s\"", since,
			         jstr(obj, "user_id"));
		json_decref(obj);
		want = since < sa->a_seq ? sa->a_seq - since : 0;
		if (!sa->error[0]) {
			got = resume_check(c, sa->backend, sa->user_a,
			                   since + 1, &sa->a_seq, sa->error,
			                   sizeof(sa->error));
			if (got >= 0 && got != want)
				snprintf(
				    sa->error, sizeof(sa->error),
				    "since=%d: %d events replayed, want %d",
				    since, got, want);
		}
		ws_client_close(c, RECV_MS);
		if (!sa->error[0])
			sa->done++;
	}
}

/* Opens path (and hdr) and checks it is a connection of user that gets
 * user's events after since, then a marker. */
static struct ws_client *open_resume(struct hc *h, const char *path,
                                     const char *const *hdr, const char *user,
                                     int since, int *user_seq)
{
	char got[64], err[400];
	json_int_t seq;
	struct ws_client *c = open_ws(h, h->sc, path, hdr, got, &seq);
	int want = since < *user_seq ? *user_seq - since : 0, n;

	if (strcmp(got, user) != 0)
		fail_msg("connected as \"%s\", want \"%s\"", got, user);
	assert_int_equal(seq, *user_seq);
	n = resume_check(c, h->backend, user, since + 1, user_seq, err,
	                 sizeof(err));
	if (n < 0)
		fail_msg("since=%d: %s", since, err);
	assert_int_equal(n, want);
	return c;
}

static void test_since_of_another_user_replays_only_own_events(void **state)
{
	struct hc *h = *state;
	const char *a = "hc-since-a", *b = "hc-since-b";
	enum { B_EVENTS = 20 };
	struct ws_client *anchor, *c;
	char *tok_a = sidecar_token(h->sc, a, 600);
	char *tok_b = sidecar_token(h->sc, b, 600);
	char path[20000], hdr_line[10000], got[64];
	const char *hdr[] = {hdr_line, NULL};
	json_int_t seq;
	int a_seq = 0, b_seq = B_EVENTS, rc;

	assert_non_null(tok_a);
	assert_non_null(tok_b);
	good_start(h, h->sc, h->backend, "good-since");
	/* A is connected when its events are sent (so that they are live,
	 * not pending for A's next connections): 3 of them. B, never
	 * connected, has 20. */
	anchor = open_user(h, h->sc, a, NULL);
	for (int i = 1; i <= B_EVENTS; i++)
		send_to(h->backend, b, i);
	for (a_seq = 1; a_seq <= 3; a_seq++) {
		send_to(h->backend, a, a_seq);
		expect_event(anchor, a, a_seq);
	}
	a_seq = 3;
	ws_client_set_forget(&h->clients, anchor);
	ws_client_close(anchor, RECV_MS);

	/* since=20 (B's last seq) with A's token: A's view, nothing. A's
	 * next event (seq 4 <= since) is not sent live either (the client
	 * says it has it): it stays pending, and the since=1 resume below
	 * gets it. Its frame would have been queued before the reply. */
	snprintf(path, sizeof(path), "/ws?access_token=%s&since=%d", tok_a,
	         B_EVENTS);
	c = open_ws(h, h->sc, path, NULL, got, &seq);
	if (strcmp(got, a) != 0)
		fail_msg("connected as \"%s\", want \"%s\"", got, a);
	assert_int_equal(seq, a_seq);
	send_to(h->backend, a, ++a_seq);
	expect_pong(c, "since=20");
	drop(h, c);

	/* since=1: A's events from 2 on, none of B's 2..20. */
	snprintf(path, sizeof(path), "/ws?access_token=%s&since=1", tok_a);
	c = open_resume(h, path, NULL, a, 1, &a_seq);
	drop(h, c);

	/* A's token in the header, B's in the query: the header is used
	 * (README: header, query, subprotocol), and A gets only A's. */
	snprintf(hdr_line, sizeof(hdr_line), "Authorization: Bearer %s", tok_a);
	snprintf(path, sizeof(path), "/ws?access_token=%s&since=0", tok_b);
	c = open_resume(h, path, hdr, a, 0, &a_seq);
	drop(h, c);

	/* Two tokens in the query: whichever is used, the connection gets
	 * that user's events and no other's. */
	snprintf(path, sizeof(path),
	         "/ws?access_token=%s&since=0&access_token=%s", tok_a, tok_b);
	c = open_ws(h, h->sc, path, NULL, got, &seq);
	drop(h, c);
	print_message("    two access_token parameters: the sidecar used "
	              "%s\n",
	              strcmp(got, a) == 0   ? "the first"
	              : strcmp(got, b) == 0 ? "the second"
	                                    : got);
	c = open_resume(h, path, NULL, strcmp(got, b) == 0 ? b : a, 0,
	                strcmp(got, b) == 0 ? &b_seq : &a_seq);
	drop(h, c);

	/* And 50 times more, on a thread, while the good user's latency is
	 * measured. */
	{
		struct since_abuse sa = {.port = h->sc->port,
		                         .backend = h->backend,
		                         .tok_a = tok_a,
		                         .user_a = a,
		                         .a_seq = a_seq,
		                         .b_last = B_EVENTS};

		run_abuse(h, "50 connections of A with since= of B's sequence",
		          since_abuse_main, &sa);
		if (sa.error[0])
			fail_msg("%s", sa.error);
		assert_int_equal(sa.done, 50);
	}

	/* The audit trail agrees: no delivery of B's to a connection of
	 * A's or the reverse, and wsgatectl verify passes. */
	assert_int_equal(
	    sidecar_db_int(h->sc,
	                   "SELECT count(*) FROM deliveries WHERE "
	                   "(user_id IN (?1, ?2) OR conn_user_id IN "
	                   "(?1, ?2)) AND user_id <> conn_user_id",
	                   a, b),
	    0);
	assert_true(sidecar_db_wait(h->sc,
	                            "SELECT count(*) FROM deliveries WHERE "
	                            "conn_user_id = ?1 AND user_id = ?1",
	                            a, NULL, 1, POLL_MS) > 0);
	{
		char cmd[1024], out[4096];
		size_t len;
		FILE *p;

		snprintf(cmd, sizeof(cmd),
		         "%s --db %s --audit-key-file %s verify 2>&1",
		         WSGATECTL_BIN, h->sc->db_path, h->sc->audit_key_path);
		p = popen(cmd, "r");
		assert_non_null(p);
		len = fread(out, 1, sizeof(out) - 1, p);
		out[len] = '\0';
		while (fread(cmd, 1, sizeof(cmd), p) > 0)
			;
		rc = pclose(p);
		if (!WIFEXITED(rc) || WEXITSTATUS(rc) != 0)
			fail_msg("wsgatectl verify: status %d: %s", rc, out);
	}
	free(tok_a);
	free(tok_b);
	h->passed++;
}

/* ------------------------------------------------------------------ */
/* Bad frames: oversize 1009, binary 1003, invalid UTF-8 1007.         */
/* ------------------------------------------------------------------ */

typedef int (*bad_send_fn)(struct ws_client *c);

/* One kind of bad frame, and the close code it must get. */
struct bad_frame {
	const char *name;
	bad_send_fn send;
	int want;
};

/* Each kind, rounds times, each on a fresh connection of its own user. */
struct frame_abuse {
	uint16_t port;
	char *path;
	const struct bad_frame *kinds;
	int n_kinds, rounds;
	int closed_as_wanted;
	char error[300];
};

static void frame_abuse_main(void *arg)
{
	struct frame_abuse *fa = arg;

	for (int r = 0; r < fa->rounds && !fa->error[0]; r++) {
		for (int k = 0; k < fa->n_kinds && !fa->error[0]; k++) {
			const struct bad_frame *bf = &fa->kinds[k];
			struct ws_client *c = NULL;
			json_t *obj;
			int st = ws_client_connect(&c, fa->port, fa->path, NULL,
			                           RECV_MS),
			    code;

			if (st != 101) {
				snprintf(fa->error, sizeof(fa->error),
				         "%s: handshake %d (%s)", bf->name, st,
				         ws_client_error());
				break;
			}
			obj = recv_json(c, fa->error, sizeof(fa->error));
			json_decref(obj);
			if (!obj) {
				ws_client_abort(c);
				break;
			}
			/* A send may fail once the sidecar has closed: the
			 * close frame is what counts. */
			bf->send(c);
			code = ws_client_recv_close(c, RECV_MS);
			ws_client_abort(c);
			if (code != bf->want)
				snprintf(fa->error, sizeof(fa->error),
				         "%s: closed with %d, want %d (%s)",
				         bf->name, code, bf->want,
				         code < 0 ? ws_client_error() : "");
			else
				fa->closed_as_wanted++;
		}
	}
}

/* Runs the kinds on a thread (each `rounds` times) while the good user's
 * latency is measured; every one must be closed with its code. */
static void run_bad_frames(struct hc *h, const char *what, const char *user,
                           const struct bad_frame *kinds, int n_kinds,
                           int rounds)
{
	struct frame_abuse fa = {.port = h->sc->port,
	                         .kinds = kinds,
	                         .n_kinds = n_kinds,
	                         .rounds = rounds};

	fa.path = token_path(h->sc, user, NULL);
	run_abuse(h, what, frame_abuse_main, &fa);
	free(fa.path);
	if (fa.error[0])
		fail_msg("%s", fa.error);
	assert_int_equal(fa.closed_as_wanted, n_kinds * rounds);
	assert_true(sidecar_running(h->sc, NULL));
}

static unsigned char *filled(size_t len, int byte)
{
	unsigned char *p = malloc(len);

	assert_non_null(p);
	memset(p, byte, len);
	return p;
}

static int send_oversize_frame(struct ws_client *c)
{
	unsigned char *p = filled(MAX_CLIENT_FRAME + 1, 'a');
	int rc =
	    ws_client_send_frame(c, WS_OP_TEXT, true, p, MAX_CLIENT_FRAME + 1);

	free(p);
	return rc;
}

/* A frame header announcing 1 TiB, then just over the limit of it: the
 * sidecar must not wait for (or buffer) the rest. Mask 0, so the payload
 * is sent as it is. */
static int send_huge_declared_frame(struct ws_client *c)
{
	size_t n = MAX_CLIENT_FRAME + 1;
	unsigned char *p = filled(14 + n, 'a');
	uint64_t len = 1ULL << 40;
	int rc;

	p[0] = 0x81;
	p[1] = 0x80 | 127;
	for (int i = 0; i < 8; i++)
		p[2 + i] = (unsigned char)(len >> (56 - 8 * i));
	memset(p + 10, 0, 4);
	rc = ws_client_send_raw(c, p, 14 + n);
	free(p);
	return rc;
}

/* Fragments of 4 KiB adding up to more than the limit, never final. */
static int send_oversize_fragments(struct ws_client *c)
{
	unsigned char *p = filled(4096, 'a');
	int rc = WS_CLIENT_OK;

	for (int i = 0; rc == WS_CLIENT_OK && i * 4096 <= MAX_CLIENT_FRAME; i++)
		rc = ws_client_send_frame(
		    c, i ? WS_OP_CONTINUATION : WS_OP_TEXT, false, p, 4096);
	free(p);
	return rc;
}

static void test_oversize_frames_close_1009(void **state)
{
	struct hc *h = *state;
	static const struct bad_frame kinds[] = {
	    {"one frame of 64 KiB + 1", send_oversize_frame, 1009},
	    {"a frame announcing 1 TiB", send_huge_declared_frame, 1009},
	    {"fragments adding up to 64 KiB + 4 KiB", send_oversize_fragments,
	     1009},
	};

	good_start(h, h->sc, h->backend, "good-oversize");
	run_bad_frames(h, "oversize frames (3 kinds x 10)", "hc-oversize",
	               kinds, 3, 10);
	h->passed++;
}

static int send_binary(struct ws_client *c)
{
	return ws_client_send_binary(c, "\x00\x01\x02\xff", 4);
}

static int send_binary_fragment(struct ws_client *c)
{
	return ws_client_send_frame(c, WS_OP_BINARY, false, "\x00\x01", 2);
}

/* A good message first: the binary frame still closes. */
static int send_text_then_binary(struct ws_client *c)
{
	int rc = ws_client_send_text(c, "{\"type\":\"ping\"}");

	return rc == WS_CLIENT_OK ? send_binary(c) : rc;
}

static void test_binary_frames_close_1003(void **state)
{
	struct hc *h = *state;
	static const struct bad_frame kinds[] = {
	    {"a binary frame", send_binary, 1003},
	    {"the first fragment of a binary message", send_binary_fragment,
	     1003},
	    {"a binary frame after a ping", send_text_then_binary, 1003},
	};

	good_start(h, h->sc, h->backend, "good-binary");
	run_bad_frames(h, "binary frames (3 kinds x 10)", "hc-binary", kinds, 3,
	               10);
	h->passed++;
}

static int send_utf8_ff(struct ws_client *c)
{
	return ws_client_send_text(c, "{\"a\":\"\xff\"}");
}

static int send_utf8_overlong(struct ws_client *c)
{
	return ws_client_send_text(c, "{\"a\":\"\xc0\xaf\"}");
}

static int send_utf8_surrogate(struct ws_client *c)
{
	return ws_client_send_text(c, "{\"a\":\"\xed\xa0\x80\"}");
}

static int send_utf8_above_max(struct ws_client *c)
{
	return ws_client_send_text(c, "{\"a\":\"\xf4\x90\x80\x80\"}");
}

/* The message ends in the middle of a character. */
static int send_utf8_truncated(struct ws_client *c)
{
	return ws_client_send_text(c, "abc\xe2\x82");
}

/* Valid first fragment, invalid second. */
static int send_utf8_bad_fragment(struct ws_client *c)
{
	int rc = ws_client_send_frame(c, WS_OP_TEXT, false, "{\"a\":\"", 6);

	return rc == WS_CLIENT_OK ? ws_client_send_frame(c, WS_OP_CONTINUATION,
	                                                 true, "\x80\"}", 3)
	                          : rc;
}

static void test_invalid_utf8_closes_1007(void **state)
{
	struct hc *h = *state;
	static const struct bad_frame kinds[] = {
	    {"byte 0xff", send_utf8_ff, 1007},
	    {"an overlong encoding", send_utf8_overlong, 1007},
	    {"a surrogate", send_utf8_surrogate, 1007},
	    {"a code point above U+10FFFF", send_utf8_above_max, 1007},
	    {"a message ending mid-character", send_utf8_truncated, 1007},
	    {"a bad continuation fragment", send_utf8_bad_fragment, 1007},
	};
	struct ws_client *c;

	good_start(h, h->sc, h->backend, "good-utf8");
	run_bad_frames(h, "invalid UTF-8 (6 kinds x 5)", "hc-utf8", kinds, 6,
	               5);

	/* A character split across two fragments is valid UTF-8: the
	 * message is served (a ping: pong) and the connection stays. */
	c = open_user(h, h->sc, "hc-utf8-ok", NULL);
	assert_int_equal(ws_client_send_frame(c, WS_OP_TEXT, false,
	                                      "{\"type\":\"ping\",\"x\":\"\xc3",
	                                      strlen("{\"type\":\"ping\",\"x\":"
	                                             "\"\xc3")),
	                 WS_CLIENT_OK);
	assert_int_equal(
	    ws_client_send_frame(c, WS_OP_CONTINUATION, true, "\xa9\"}", 3),
	    WS_CLIENT_OK);
	{
		json_t *obj = expect_json(c);

		assert_string_equal(jstr(obj, "type"), "pong");
		json_decref(obj);
	}
	expect_pong(c, "hc-utf8-ok");
	ws_client_set_forget(&h->clients, c);
	ws_client_close(c, RECV_MS);
	h->passed++;
}

/* ------------------------------------------------------------------ */
/* A fragmented message that never finishes: bounded, others served.  */
/* ------------------------------------------------------------------ */

#define HOLD_CONNS  16
#define HOLD_BYTES  60000 /* under the limit: held, not refused */
#define HOLD_ROUNDS 20

struct hold_abuse {
	uint16_t port;
	char *path;
	int pongs; /* control-frame pongs on the held connections */
	char error[300];
};

static int ws_ping_pong(struct ws_client *c, char *err, size_t cap)
{
	struct ws_msg m = {0};
	int rc = ws_client_send_ping(c, "hc", 2);

	if (rc == WS_CLIENT_OK)
		rc = ws_client_recv(c, &m, RECV_MS);
	if (rc != WS_CLIENT_OK || m.opcode != WS_OP_PONG || m.len != 2 ||
	    memcmp(m.data, "hc", 2) != 0) {
		snprintf(err, cap, "no pong: rc %d, opcode 0x%x, close %d (%s)",
		         rc, rc == WS_CLIENT_OK ? m.opcode : 0, m.close_code,
		         ws_client_error());
		ws_msg_free(&m);
		return -1;
	}
	ws_msg_free(&m);
	return 0;
}

/* HOLD_CONNS connections each with HOLD_BYTES of a message that never
 * ends, pinged (control frames) HOLD_ROUNDS times while held. */
static void hold_abuse_main(void *arg)
{
	struct hold_abuse *ha = arg;
	struct ws_client *cs[HOLD_CONNS] = {0};
	unsigned char *chunk = malloc(6000);

	if (!chunk) {
		snprintf(ha->error, sizeof(ha->error), "out of memory");
		return;
	}
	memset(chunk, 'a', 6000);
	for (int i = 0; i < HOLD_CONNS && !ha->error[0]; i++) {
		int st = ws_client_connect(&cs[i], ha->port, ha->path, NULL,
		                           RECV_MS);
		json_t *obj;

		if (st != 101) {
			snprintf(ha->error, sizeof(ha->error), "handshake %d",
			         st);
			break;
		}
		obj = recv_json(cs[i], ha->error, sizeof(ha->error));
		json_decref(obj);
		for (int off = 0; obj && off < HOLD_BYTES; off += 6000)
			if (ws_client_send_frame(
			        cs[i], off ? WS_OP_CONTINUATION : WS_OP_TEXT,
			        false, chunk, 6000) != WS_CLIENT_OK) {
				snprintf(ha->error, sizeof(ha->error),
				         "send: %s", ws_client_error());
				break;
			}
	}
	for (int r = 0; r < HOLD_ROUNDS && !ha->error[0]; r++)
		for (int i = 0; i < HOLD_CONNS && !ha->error[0]; i++)
			if (ws_ping_pong(cs[i], ha->error, sizeof(ha->error)) ==
			    0)
				ha->pongs++;
	for (int i = 0; i < HOLD_CONNS; i++)
		ws_client_abort(cs[i]);
	free(chunk);
}

static void test_unfinished_fragmented_message_is_bounded(void **state)
{
	struct hc *h = *state;
	struct hold_abuse ha = {.port = h->sc->port};
	struct ws_client *c;
	unsigned char *chunk = filled(4096, 'a');
	char err[300];
	long rss0, rss1;
	size_t sent;
	int rc, code;

	good_start(h, h->sc, h->backend, "good-fragments");

	/* A message begun and never finished: the connection is still
	 * served (a WebSocket ping between fragments gets its pong). */
	c = open_user(h, h->sc, "hc-fragments", NULL);
	assert_int_equal(
	    ws_client_send_frame(c, WS_OP_TEXT, false, chunk, 1000),
	    WS_CLIENT_OK);
	if (ws_ping_pong(c, err, sizeof(err)))
		fail_msg("unfinished message: %s", err);

	/* Many such connections held at once cost at most --max-client-frame
	 * each; the good user is served meanwhile. */
	rss0 = proc_status_field(h->sc->pid, "VmRSS");
	ha.path = token_path(h->sc, "hc-fragments-held", NULL);
	run_abuse(h, "16 connections holding 60 KB of an unfinished message",
	          hold_abuse_main, &ha);
	free(ha.path);
	rss1 = proc_status_field(h->sc->pid, "VmRSS");
	if (ha.error[0])
		fail_msg("held connections: %s", ha.error);
	assert_int_equal(ha.pongs, HOLD_CONNS * HOLD_ROUNDS);
	print_message("    sidecar RSS %ld kB before, %ld kB after\n", rss0,
	              rss1);

	/* Going on past --max-client-frame: closed 1009, not buffered. */
	sent = 1000;
	rc = WS_CLIENT_OK;
	for (int i = 0; rc == WS_CLIENT_OK && sent <= MAX_CLIENT_FRAME; i++) {
		rc = ws_client_send_frame(c, WS_OP_CONTINUATION, false, chunk,
		                          4096);
		sent += 4096;
	}
	code = ws_client_recv_close(c, RECV_MS);
	if (code != 1009)
		fail_msg("unfinished message past %d bytes: close %d, want "
		         "1009 (%s)",
		         MAX_CLIENT_FRAME, code, ws_client_error());
	drop(h, c);

	/* A new message while one is unfinished breaks RFC 6455 (5.4):
	 * closed as a protocol error. */
	c = open_user(h, h->sc, "hc-fragments", NULL);
	assert_int_equal(ws_client_send_frame(c, WS_OP_TEXT, false, chunk, 10),
	                 WS_CLIENT_OK);
	ws_client_send_frame(c, WS_OP_TEXT, true, "{}", 2);
	code = ws_client_recv_close(c, RECV_MS);
	print_message("    a new message inside an unfinished one: close "
	              "%d\n",
	              code);
	assert_int_equal(code, 1002);
	drop(h, c);
	free(chunk);
	assert_true(sidecar_running(h->sc, NULL));
	h->passed++;
}

/* ------------------------------------------------------------------ */
/* A connection that never reads: 4008, and it loses nothing.          */
/* ------------------------------------------------------------------ */

struct flood {
	wsgate_client *backend;
	const char *user;
	int sent;       /* events acknowledged: seqs 1..sent */
	int refused_at; /* the first seq queued to no connection */
	char error[300];
};

/* Sends the user 8 KB events in batches until one of them is queued to
 * no connection (the slow one was closed), at most SLOW_MAX_BATCHES. */
static void flood_main(void *arg)
{
	struct flood *f = arg;
	struct wsgate_event ev[SLOW_BATCH];
	struct wsgate_event_result res[SLOW_BATCH];
	char ids[SLOW_BATCH][64];
	char *payloads[SLOW_BATCH] = {0};

	for (int b = 0; b < SLOW_MAX_BATCHES && !f->refused_at; b++) {
		enum wsgate_status st = WSGATE_OK;

		for (int k = 0; k < SLOW_BATCH; k++) {
			int seq = f->sent + 1 + k;

			free(payloads[k]);
			payloads[k] = event_flood_payload(seq, SLOW_PAYLOAD);
			if (!payloads[k]) {
				snprintf(f->error, sizeof(f->error),
				         "out of memory");
				goto out;
			}
			snprintf(ids[k], sizeof(ids[k]), "%s-%d", f->user, seq);
			ev[k] = make_event(ids[k], f->user, payloads[k],
			                   SLOW_PAYLOAD);
		}
		for (int tries = 0; tries < 200; tries++) {
			st = wsgate_send_batch(f->backend, ev, SLOW_BATCH, res);
			if (st != WSGATE_OK ||
			    res[0].status != WSGATE_RESOURCE_EXHAUSTED)
				break;
			test_pause_ms(10); /* busy: retry the same ids */
		}
		if (st != WSGATE_OK) {
			snprintf(f->error, sizeof(f->error), "batch: %s (%s)",
			         wsgate_status_name(st),
			         wsgate_client_error(f->backend));
			break;
		}
		for (int k = 0; k < SLOW_BATCH; k++) {
			int seq = f->sent + 1;

			if (res[k].status != WSGATE_OK ||
			    res[k].seq != (uint64_t)seq) {
				snprintf(f->error, sizeof(f->error),
				         "event %s: %s, seq %llu", ids[k],
				         wsgate_status_name(res[k].status),
				         (unsigned long long)res[k].seq);
				goto out;
			}
			f->sent = seq;
			if (res[k].connections == 0 && !f->refused_at)
				f->refused_at = seq;
		}
	}
out:
	for (int k = 0; k < SLOW_BATCH; k++)
		free(payloads[k]);
}

/* Reads the user's events from seq first on, in order; stops at a close
 * (returns its code, *last the last seq read), at the end of the
 * connection when hangup_ok (returns -1), or after seq last_want
 * (returns 0). */
static int read_flood(struct ws_client *c, const char *user, int first,
                      int last_want, int *last, bool hangup_ok)
{
	struct ws_msg m = {0};

	*last = first - 1;
	while (*last < last_want) {
		int rc = ws_client_recv(c, &m, RECV_MS);
		json_t *obj;
		char id[96];

		if (hangup_ok &&
		    (rc == WS_CLIENT_EOF || rc == WS_CLIENT_ERROR)) {
			ws_msg_free(&m);
			return -1;
		}
		if (rc != WS_CLIENT_OK)
			fail_msg("%s: nothing after seq %d: %s", user, *last,
			         ws_client_error());
		if (m.opcode == WS_OP_CLOSE) {
			int code = m.close_code;

			ws_msg_free(&m);
			return code;
		}
		obj = json_loadb((const char *)m.data, m.len, 0, NULL);
		snprintf(id, sizeof(id), "%s-%d", user, *last + 1);
		if (!obj || strcmp(jstr(obj, "user_id"), user) != 0 ||
		    strcmp(jstr(obj, "event_id"), id) != 0)
			fail_msg("%s: expected %s, got %.120s", user, id,
			         (const char *)m.data);
		json_decref(obj);
		(*last)++;
	}
	ws_msg_free(&m);
	return 0;
}

static void test_client_that_never_reads_is_closed_4008(void **state)
{
	struct hc *h = *state;
	struct flood f = {.backend = h->backend, .user = "hc-slow"};
	struct ws_client *slow;
	int last = 0, code, got;
	json_int_t seq;
	char path_q[32], *path, who[64];

	good_start(h, h->sc, h->backend, "good-slow");
	slow = open_user(h, h->sc, f.user, NULL);
	/* A small receive buffer: the kernel absorbs little for it. */
	assert_int_equal(ws_client_set_rcvbuf(slow, 4096), 0);

	run_abuse(h, "8 KB events to a connection that never reads", flood_main,
	          &f);
	if (f.error[0])
		fail_msg("flood: %s", f.error);
	if (!f.refused_at)
		fail_msg("%d events (%d MB) and the connection that never "
		         "reads is still open",
		         f.sent, f.sent * SLOW_PAYLOAD >> 20);
	print_message("    closed after %d events were queued; %d sent\n",
	              f.refused_at - 1, f.sent);

	/* Now it reads: its events in order, then close 4008 -- or, when
	 * it starts reading later than the sidecar's close timeout (2 s),
	 * the end of the connection, and 4008 in its session row. */
	code = read_flood(slow, f.user, 1, f.sent, &last, true);
	drop(h, slow);
	if (code == -1)
		code = sidecar_db_wait(h->sc,
		                       "SELECT count(*) FROM sessions WHERE "
		                       "user_id = ?1 AND close_code = 4008",
		                       f.user, NULL, 1, POLL_MS) == 1
		           ? 4008
		           : -1;
	if (code != 4008)
		fail_msg("never-reading connection: close %d after seq %d, "
		         "want 4008",
		         code, last);
	assert_true(last < f.refused_at);

	/* It reconnects with since and loses nothing. */
	snprintf(path_q, sizeof(path_q), "&since=%d", last);
	path = token_path(h->sc, f.user, path_q);
	slow = open_ws(h, h->sc, path, NULL, who, &seq);
	free(path);
	assert_string_equal(who, f.user);
	assert_int_equal(seq, f.sent);
	assert_int_equal(
	    read_flood(slow, f.user, last + 1, f.sent, &got, false), 0);
	assert_int_equal(got, f.sent);
	expect_pong(slow, f.user);
	drop(h, slow);
	h->passed++;
}

/* ------------------------------------------------------------------ */
/* A slowloris handshake is closed by --handshake-timeout.             */
/* ------------------------------------------------------------------ */

struct slowloris {
	uint16_t port;
	char *good_path; /* a normal handshake made meanwhile */
	int64_t open_ms[SLOWLORIS_SOCKS];
	int64_t closed_after_ms[SLOWLORIS_SOCKS]; /* -1: still open */
	size_t bytes_sent[SLOWLORIS_SOCKS];
	int got_101;
	int normal_status;
	char error[300];
};

/*
 * Three kinds of sockets: silent after connect; trickling a request line
 * one byte per tick; a complete request line and headers, then header
 * lines trickled one byte per tick and never the empty line. Ticks are
 * 100 ms of poll() on the sockets, which also notices their close.
 */
static void slowloris_main(void *arg)
{
	struct slowloris *sl = arg;
	static const char trickle[] = "GET /ws?access_token=abcdefghijklmnop"
	                              "qrstuvwxyzabcdefghijklmnopqrstuvwxyz";
	/* One CRLF per line, so never the empty line that ends a head. */
	static const char hdr_line[] = "X-Slow: yyyyyyyyyyyy\r\n";
	char head[256];
	size_t trickled[SLOWLORIS_SOCKS] = {0};
	int fds[SLOWLORIS_SOCKS];
	int64_t deadline = test_now_ms() + HS_TIMEOUT_S * 1000 + 20000;
	int open_n = 0;
	struct ws_client *c = NULL;

	for (int i = 0; i < SLOWLORIS_SOCKS; i++) {
		fds[i] = tcp_open(sl->port);
		sl->open_ms[i] = test_now_ms();
		sl->closed_after_ms[i] = -1;
		if (fds[i] < 0) {
			snprintf(sl->error, sizeof(sl->error), "connect: %s",
			         strerror(errno));
			sl->closed_after_ms[i] = 0;
			continue;
		}
		open_n++;
		if (i % 3 == 2) {
			int n =
			    snprintf(head, sizeof(head),
			             "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\n"
			             "Upgrade: websocket\r\n");
			send_str(fds[i], head, (size_t)n);
			sl->bytes_sent[i] = (size_t)n;
		}
	}
	/* A normal handshake, while they are all held. */
	sl->normal_status =
	    ws_client_connect(&c, sl->port, sl->good_path, NULL, RECV_MS);
	ws_client_abort(c);

	while (open_n > 0 && test_now_ms() < deadline) {
		struct pollfd pfd[SLOWLORIS_SOCKS];
		int map[SLOWLORIS_SOCKS], n = 0;

		for (int i = 0; i < SLOWLORIS_SOCKS; i++) {
			if (sl->closed_after_ms[i] >= 0)
				continue;
			pfd[n] =
			    (struct pollfd){.fd = fds[i], .events = POLLIN};
			map[n++] = i;
		}
		poll(pfd, (nfds_t)n, 100);
		for (int j = 0; j < n; j++) {
			int i = map[j];
			char buf[512];
			ssize_t r;

			if (pfd[j].revents) {
				r = recv(fds[i], buf, sizeof(buf) - 1,
				         MSG_DONTWAIT);
				if (r > 0) {
					buf[r] = '\0';
					if (strstr(buf, " 101 "))
						sl->got_101++;
					continue; /* read on until closed */
				}
				if (r == 0 ||
				    (errno != EAGAIN && errno != EWOULDBLOCK &&
				     errno != EINTR)) {
					sl->closed_after_ms[i] =
					    test_now_ms() - sl->open_ms[i];
					open_n--;
					continue;
				}
			}
			if (i % 3 == 0)
				continue; /* the silent kind */
			const char *src = i % 3 == 1 ? trickle : hdr_line;
			size_t len = i % 3 == 1 ? sizeof(trickle) - 1
			                        : sizeof(hdr_line) - 1;

			if (send(fds[i], src + trickled[i] % len, 1,
			         MSG_NOSIGNAL | MSG_DONTWAIT) == 1) {
				trickled[i]++;
				sl->bytes_sent[i]++;
			}
		}
	}
	for (int i = 0; i < SLOWLORIS_SOCKS; i++)
		if (fds[i] >= 0)
			close(fds[i]);
}

static void test_slowloris_handshake_is_timed_out(void **state)
{
	struct hc *h = *state;
	struct slowloris *sl = calloc(1, sizeof(*sl));
	int64_t min_ms = INT64_MAX, max_ms = 0;

	assert_non_null(sl);
	good_start(h, h->sc, h->backend, "good-slowloris");
	sl->port = h->sc->port;
	sl->good_path = token_path(h->sc, "hc-slowloris-normal", NULL);
	run_abuse(h, "24 slowloris handshakes (--handshake-timeout 2s)",
	          slowloris_main, sl);
	free(sl->good_path);
	if (sl->error[0])
		fail_msg("%s", sl->error);
	assert_int_equal(sl->normal_status, 101);
	assert_int_equal(sl->got_101, 0);
	for (int i = 0; i < SLOWLORIS_SOCKS; i++) {
		int64_t ms = sl->closed_after_ms[i];

		if (ms < 0)
			fail_msg("slowloris socket %d (kind %d, %zu bytes "
			         "sent) still open after %d s",
			         i, i % 3, sl->bytes_sent[i],
			         HS_TIMEOUT_S + 20);
		/* Closed by the timeout, not refused at once. */
		if (ms < 1000)
			fail_msg("slowloris socket %d (kind %d) closed after "
			         "%lld ms, before any timeout",
			         i, i % 3, (long long)ms);
		if (ms < min_ms)
			min_ms = ms;
		if (ms > max_ms)
			max_ms = ms;
	}
	print_message("    all %d closed by the sidecar %lld..%lld ms after "
	              "connecting\n",
	              SLOWLORIS_SOCKS, (long long)min_ms, (long long)max_ms);
	assert_true(sidecar_running(h->sc, NULL));
	free(sl);
	h->passed++;
}

/* ------------------------------------------------------------------ */
/* 10,000 connections opened and dropped.                              */
/* ------------------------------------------------------------------ */

struct churn {
	uint16_t port;
	char **tokens; /* CHURN_BATCH users */
	int opened;    /* 101 answers */
	int half_open; /* handshakes dropped half-way */
	char error[300];
};

static const char masked_close[] = {(char)0x88, (char)0x82, 0,    0,
                                    0,          0,          0x03, (char)0xe8};

static void churn_main(void *arg)
{
	struct churn *ch = arg;
	int fds[CHURN_BATCH];
	char *req = malloc(16384);
	int64_t deadline = test_now_ms() + ABUSE_MS;

	if (!req) {
		snprintf(ch->error, sizeof(ch->error), "out of memory");
		return;
	}
	for (int b = 0; b < CHURN_CONNS / CHURN_BATCH && !ch->error[0]; b++) {
		if (test_now_ms() > deadline) {
			snprintf(ch->error, sizeof(ch->error),
			         "not done within %d ms", ABUSE_MS);
			break;
		}
		/* All requests of the batch first, then all answers. */
		for (int i = 0; i < CHURN_BATCH; i++) {
			int n = snprintf(
			    req, 16384,
			    "GET /ws?access_token=%s HTTP/1.1\r\n"
			    "Host: 127.0.0.1\r\nUpgrade: websocket\r\n"
			    "Connection: Upgrade\r\n"
			    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
			    "Sec-WebSocket-Version: 13\r\n\r\n",
			    ch->tokens[i]);

			fds[i] = tcp_open(ch->port);
			if (fds[i] < 0 || send_str(fds[i], req, (size_t)n)) {
				snprintf(ch->error, sizeof(ch->error),
				         "batch %d, connection %d: %s", b, i,
				         strerror(errno));
				break;
			}
		}
		for (int i = 0; i < CHURN_BATCH && !ch->error[0]; i++) {
			int st = read_status(fds[i]);

			if (st != 101)
				snprintf(ch->error, sizeof(ch->error),
				         "batch %d, connection %d: status %d",
				         b, i, st);
			else
				ch->opened++;
		}
		/* Dropped three ways: RST, close frame then FIN, bare FIN. */
		for (int i = 0; i < CHURN_BATCH; i++) {
			if (fds[i] < 0)
				continue;
			if (i % 3 == 0) {
				close_rst(fds[i]);
				continue;
			}
			if (i % 3 == 1)
				send_str(fds[i], masked_close,
				         sizeof(masked_close));
			close(fds[i]);
		}
		/* And a few handshakes abandoned half-way. */
		for (int i = 0; i < 10; i++) {
			int fd = tcp_open(ch->port);

			if (fd < 0)
				continue;
			send_str(fd, "GET /ws?access_token=eyJ", 24);
			if (i % 2)
				close_rst(fd);
			else
				close(fd);
			ch->half_open++;
		}
	}
	free(req);
}

static void test_10000_connections_opened_and_dropped(void **state)
{
	struct hc *h = *state;
	struct churn ch = {.port = h->sc->port};
	long rss0, rss1, metric;
	int64_t open_rows;
	uint32_t conns;

	good_start(h, h->sc, h->backend, "good-churn");
	/* Only the good user's connection is left from earlier tests. */
	conns = wait_connections(h->backend, 1);
	if (conns != 1)
		fail_msg("%u connections before the churn, want 1", conns);
	ch.tokens = calloc(CHURN_BATCH, sizeof(*ch.tokens));
	assert_non_null(ch.tokens);
	for (int i = 0; i < CHURN_BATCH; i++) {
		char user[32];

		snprintf(user, sizeof(user), "hc-churn-%d", i);
		ch.tokens[i] = sidecar_token(h->sc, user, 600);
		assert_non_null(ch.tokens[i]);
	}
	rss0 = proc_status_field(h->sc->pid, "VmRSS");
	run_abuse(h, "10,000 connections opened and dropped", churn_main, &ch);
	if (ch.error[0])
		fail_msg("churn: %s", ch.error);
	assert_int_equal(ch.opened, CHURN_CONNS);

	/* Every one of them is gone again: GetStats, /metrics. */
	conns = wait_connections(h->backend, 1);
	if (conns != 1)
		fail_msg("%u connections after the churn, want 1", conns);
	metric = metrics_connections(h->sc);
	assert_int_equal(metric, 1);
	assert_true(sidecar_running(h->sc, NULL));
	/* And with the good user gone too: none at all. */
	ws_client_close(h->good.c, RECV_MS);
	h->good.c = NULL;
	assert_int_equal(wait_connections(h->backend, 0), 0);
	assert_int_equal(metrics_connections(h->sc), 0);
	rss1 = proc_status_field(h->sc->pid, "VmRSS");
	/* Each had its session, and each session is closed. */
	assert_true(sidecar_db_wait(h->sc,
	                            "SELECT count(*) FROM sessions WHERE "
	                            "user_id LIKE 'hc-churn-%' AND closed_at "
	                            "IS NOT NULL",
	                            NULL, NULL, CHURN_CONNS,
	                            POLL_MS) == CHURN_CONNS);
	open_rows =
	    sidecar_db_int(h->sc,
	                   "SELECT count(*) FROM sessions WHERE user_id LIKE "
	                   "'hc-churn-%' AND closed_at IS NULL",
	                   NULL, NULL);
	assert_int_equal(open_rows, 0);
	print_message("    %d opened, %d abandoned mid-handshake; sidecar RSS "
	              "%ld kB before, %ld kB after\n",
	              ch.opened, ch.half_open, rss0, rss1);
	for (int i = 0; i < CHURN_BATCH; i++)
		free(ch.tokens[i]);
	free(ch.tokens);
	h->passed++;
}

/* ------------------------------------------------------------------ */
/* --max-conns: 429 past the global limit.                             */
/* ------------------------------------------------------------------ */

struct refused_abuse {
	uint16_t port;
	char *paths[8];
	int n_paths, tries;
	int want, got_want;
	char error[300];
};

static void refused_abuse_main(void *arg)
{
	struct refused_abuse *ra = arg;

	for (int i = 0; i < ra->tries && !ra->error[0]; i++) {
		struct ws_client *c = NULL;
		int st = ws_client_connect(
		    &c, ra->port, ra->paths[i % ra->n_paths], NULL, RECV_MS);

		ws_client_abort(c);
		if (st == ra->want)
			ra->got_want++;
		else
			snprintf(ra->error, sizeof(ra->error),
			         "handshake %d: %d, want %d", i, st, ra->want);
	}
}

static void test_global_max_conns_gives_429(void **state)
{
	struct hc *h = *state;
	static const char *const args[] = {"--max-conns", "4", NULL};
	struct ws_client *held[MAX_CONNS - 1];
	struct refused_abuse ra = {.tries = 100, .want = 429};
	int64_t t0 = wall_us(), rows;
	char *path;
	int st = 0;
	int64_t deadline;

	assert_int_equal(sidecar_start(&h->own_sc, args), 0);
	assert_int_equal(wsgate_client_open(&h->own_backend,
	                                    h->own_sc->control_url, CALL_MS),
	                 WSGATE_OK);
	good_start(h, h->own_sc, h->own_backend, "good-max-conns");
	for (int i = 0; i < MAX_CONNS - 1; i++) {
		char user[32];

		snprintf(user, sizeof(user), "hc-max-%d", i);
		held[i] = open_user(h, h->own_sc, user, NULL);
	}
	assert_int_equal(wait_connections(h->own_backend, MAX_CONNS),
	                 MAX_CONNS);

	/* Full: a valid token and garbage alike get 429, 100 times over,
	 * while HTTP and the connections already open are served. */
	ra.port = h->own_sc->port;
	ra.paths[ra.n_paths++] = token_path(h->own_sc, "hc-max-extra", NULL);
	ra.paths[ra.n_paths++] = strdup("/ws?access_token=garbage");
	run_abuse(h, "100 handshakes over --max-conns 4", refused_abuse_main,
	          &ra);
	if (ra.error[0])
		fail_msg("%s", ra.error);
	assert_int_equal(ra.got_want, ra.tries);
	assert_int_equal(sidecar_http_get(h->own_sc, "/healthz", NULL), 200);
	rows = failures_since(h->own_sc, t0, "too many connections (global)",
	                      ra.tries);
	assert_true(rows >= ra.tries);
	expect_pong(held[0], "hc-max-0");

	/* One leaves: there is room for one more, and then none again. */
	ws_client_set_forget(&h->clients, held[0]);
	ws_client_close(held[0], RECV_MS);
	deadline = test_now_ms() + POLL_MS;
	for (int i = 0; i < 1000 && test_now_ms() < deadline; i++) {
		struct ws_client *c = NULL;

		st = ws_client_connect(&c, h->own_sc->port, ra.paths[0], NULL,
		                       RECV_MS);
		if (st == 101) {
			track(h, c);
			break;
		}
		assert_int_equal(st, 429);
		test_pause_ms(20);
	}
	assert_int_equal(st, 101);
	path = token_path(h->own_sc, "hc-max-late", NULL);
	{
		struct ws_client *c = NULL;

		assert_int_equal(
		    ws_client_connect(&c, h->own_sc->port, path, NULL, RECV_MS),
		    429);
	}
	free(path);
	assert_true(sidecar_running(h->own_sc, NULL));
	for (int i = 0; i < ra.n_paths; i++)
		free(ra.paths[i]);
	h->passed++;
}

/* ------------------------------------------------------------------ */
/* --ping-interval / --idle-timeout: a silent peer is pinged, then     */
/* closed; one that answers pings stays.                               */
/* ------------------------------------------------------------------ */

static void test_silent_client_is_pinged_then_closed(void **state)
{
	struct hc *h = *state;
	static const char *const args[] = {"--ping-interval", "1s",
	                                   "--idle-timeout", "3s", NULL};
	struct ws_client *live, *mute;
	struct ws_msg m = {0};
	int64_t deadline;
	uint32_t conns = 2;

	assert_int_equal(sidecar_start(&h->own_sc, args), 0);
	assert_int_equal(wsgate_client_open(&h->own_backend,
	                                    h->own_sc->control_url, CALL_MS),
	                 WSGATE_OK);
	live = open_user(h, h->own_sc, "hc-live", NULL);
	mute = open_user(h, h->own_sc, "hc-mute", NULL);
	assert_int_equal(wait_connections(h->own_backend, 2), 2);

	/* live reads (and so answers the sidecar's pings); mute never
	 * reads: its pings go unanswered until the idle timeout. */
	deadline = test_now_ms() + POLL_MS;
	while (test_now_ms() < deadline) {
		int rc = ws_client_recv(live, &m, 200);
		if (rc == WS_CLIENT_OK)
			ws_msg_free(&m);
		else if (rc != WS_CLIENT_TIMEOUT)
			fail_msg("the answering client was closed (%d)", rc);
		struct wsgate_stats st;
		assert_int_equal(wsgate_get_stats(h->own_backend, &st),
		                 WSGATE_OK);
		conns = st.connections;
		if (conns == 1 && ws_client_pings_answered(live) >= 3)
			break;
	}
	assert_int_equal(conns, 1);
	/* 1 s pings over the >= 3 s it took: the live one answered some. */
	assert_true(ws_client_pings_answered(live) >= 3);
	assert_int_equal(ws_client_pings_answered(mute), 0);
	assert_true(sidecar_db_wait(h->own_sc,
	                            "SELECT count(*) FROM sessions WHERE "
	                            "user_id = ?1 AND close_reason = ?2",
	                            "hc-mute", "idle timeout", 1,
	                            POLL_MS) == 1);
	/* The live one is still served. */
	send_to(h->own_backend, "hc-live", 1);
	expect_event(live, "hc-live", 1);
	assert_true(sidecar_running(h->own_sc, NULL));
	h->passed++;
}

/* ------------------------------------------------------------------ */
/* --handshake-rate-per-peer: 429 past the rate of one address.        */
/* ------------------------------------------------------------------ */

struct rate_abuse {
	uint16_t port;
	char *paths[RATE_TRIES];
	int status[RATE_TRIES];
	int64_t elapsed_us;
};

static void rate_abuse_main(void *arg)
{
	struct rate_abuse *ra = arg;
	int64_t t0 = now_us();

	for (int i = 0; i < RATE_TRIES; i++) {
		struct ws_client *c = NULL;

		ra->status[i] = ws_client_connect(&c, ra->port, ra->paths[i],
		                                  NULL, RECV_MS);
		ws_client_abort(c);
	}
	ra->elapsed_us = now_us() - t0;
}

static void test_per_peer_handshake_rate_gives_429(void **state)
{
	struct hc *h = *state;
	static const char *const args[] = {"--handshake-rate-per-peer", "5",
	                                   NULL};
	struct rate_abuse *ra = calloc(1, sizeof(*ra));
	int64_t t0 = wall_us(), rows, deadline, allowed_max;
	int n101 = 0, n429 = 0, st = 0;
	char *path;

	assert_non_null(ra);
	assert_int_equal(sidecar_start(&h->own_sc, args), 0);
	assert_int_equal(wsgate_client_open(&h->own_backend,
	                                    h->own_sc->control_url, CALL_MS),
	                 WSGATE_OK);
	good_start(h, h->own_sc, h->own_backend, "good-rate");
	ra->port = h->own_sc->port;
	for (int i = 0; i < RATE_TRIES; i++) {
		char user[32];

		snprintf(user, sizeof(user), "hc-rate-%d", i);
		ra->paths[i] = token_path(h->own_sc, user, NULL);
	}
	run_abuse(h, "60 handshakes back to back from one address (5/s)",
	          rate_abuse_main, ra);
	for (int i = 0; i < RATE_TRIES; i++) {
		if (ra->status[i] == 101)
			n101++;
		else if (ra->status[i] == 429)
			n429++;
		else
			fail_msg("handshake %d: %d, want 101 or 429", i,
			         ra->status[i]);
	}
	/* The burst (2 x 5, less the good user's) and the refill of the
	 * time it took, no more. */
	allowed_max = 10 + (ra->elapsed_us * RATE_PER_PEER) / 1000000 + 1;
	print_message("    %d accepted, %d refused with 429 in %.2f s (at "
	              "most %lld may pass)\n",
	              n101, n429, ra->elapsed_us / 1e6, (long long)allowed_max);
	assert_true(n101 >= 1);
	assert_true(n429 >= 1);
	assert_true(n101 <= allowed_max);
	assert_int_equal(ra->status[0], 101);
	rows = failures_since(h->own_sc, t0, "handshake rate of this address",
	                      n429);
	assert_int_equal(rows, n429);

	/* HTTP is not limited, and the address is welcome again soon. */
	assert_int_equal(sidecar_http_get(h->own_sc, "/healthz", NULL), 200);
	path = token_path(h->own_sc, "hc-rate-later", NULL);
	deadline = test_now_ms() + POLL_MS;
	for (int i = 0; i < 1000 && test_now_ms() < deadline; i++) {
		struct ws_client *c = NULL;

		st =
		    ws_client_connect(&c, h->own_sc->port, path, NULL, RECV_MS);
		ws_client_abort(c);
		if (st == 101)
			break;
		assert_int_equal(st, 429);
		test_pause_ms(50);
	}
	assert_int_equal(st, 101);
	free(path);
	assert_true(sidecar_running(h->own_sc, NULL));
	for (int i = 0; i < RATE_TRIES; i++)
		free(ra->paths[i]);
	free(ra);
	h->passed++;
}

/* --- group setup --- */

static int group_setup(void **state)
{
	static const char *const args[] = {"--queue-limit",
	                                   "64K",
	                                   "--max-client-frame",
	                                   "64K",
	                                   "--handshake-timeout",
	                                   "2s",
	                                   "--handshake-rate-per-peer",
	                                   "0",
	                                   NULL};
	struct hc *h = calloc(1, sizeof(*h));

	srand((unsigned)time(NULL));
	if (!h || sidecar_start(&h->sc, args) != 0) {
		free(h);
		return -1;
	}
	if (wsgate_client_open(&h->backend, h->sc->control_url, CALL_MS) !=
	    WSGATE_OK) {
		fprintf(stderr, "wsgate_client_open %s failed\n",
		        h->sc->control_url);
		sidecar_free(h->sc, true);
		free(h);
		return -1;
	}
	*state = h;
	return 0;
}

static int group_teardown(void **state)
{
	struct hc *h = *state;
	bool failed = h->passed != N_TESTS;

	wsgate_client_close(h->backend);
	if (failed)
		sidecar_print_log(h->sc, 4096);
	sidecar_free(h->sc, failed);
	free(h);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_teardown(
	        test_handshakes_without_or_with_garbage_tokens_get_401,
	        test_teardown),
	    cmocka_unit_test_teardown(
	        test_since_of_another_user_replays_only_own_events,
	        test_teardown),
	    cmocka_unit_test_teardown(test_oversize_frames_close_1009,
	                              test_teardown),
	    cmocka_unit_test_teardown(test_binary_frames_close_1003,
	                              test_teardown),
	    cmocka_unit_test_teardown(test_invalid_utf8_closes_1007,
	                              test_teardown),
	    cmocka_unit_test_teardown(
	        test_unfinished_fragmented_message_is_bounded, test_teardown),
	    cmocka_unit_test_teardown(
	        test_client_that_never_reads_is_closed_4008, test_teardown),
	    cmocka_unit_test_teardown(test_slowloris_handshake_is_timed_out,
	                              test_teardown),
	    cmocka_unit_test_teardown(test_10000_connections_opened_and_dropped,
	                              test_teardown),
	    cmocka_unit_test_teardown(test_global_max_conns_gives_429,
	                              test_teardown),
	    cmocka_unit_test_teardown(test_per_peer_handshake_rate_gives_429,
	                              test_teardown),
	    cmocka_unit_test_teardown(test_silent_client_is_pinged_then_closed,
	                              test_teardown),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
