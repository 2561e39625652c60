/*
 * test_golden_path: the end-to-end contract of one real sidecar process.
 *
 * One wsgate process serves the whole file (group setup and teardown);
 * every test uses its own user ids, so tests do not see each other's events.
 * Browsers are ws_client connections, the backend is libwsgate (plus a raw
 * NNG req0 socket for requests libwsgate would refuse to build). Nothing
 * here sleeps to synchronise: every wait is a receive or a polled condition
 * with a deadline.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>
#include <openssl/rand.h>

#include "test_clock.h"
#include "jwt_mint.h"
#include "sidecar_proc.h"
#include "ws_client.h"
#include "wsgate.h"
#include "wsgate.pb-c.h"

#define RECV_MS          5000 /* one frame, one inbound message, one reply */
#define CALL_MS          5000 /* libwsgate and raw NNG calls */
#define POLL_MS          5000 /* deadline of a polled condition */
#define N_TESTS          13   /* the tests of main(); see group_teardown */
#define N_FLOW           200  /* events sent while malformed requests fly */
#define MAX_CLIENT_FRAME 65536

/* One of these for the whole file: the sidecar and a backend connection. */
struct golden {
	struct sidecar *sc;
	wsgate_client *backend;
	int passed; /* tests that reached their last line */
	/* The current test's WebSockets; those a failed test leaves open are
	 * dropped by test_teardown, so that they do not upset later tests. */
	struct ws_client_set clients;
};

static const char *const critical_types[5] = {
    "agent_started",  "agent_thinking",  "tool_executing",
    "tool_completed", "agent_completed",
};

#define assert_wsgate_ok(g, call)                                              \
	do {                                                                   \
		enum wsgate_status st_ = (call);                               \
		if (st_ != WSGATE_OK)                                          \
			fail_msg("%s: %s (%s)", #call,                         \
			         wsgate_status_name(st_),                      \
			         wsgate_client_error((g)->backend));           \
	} while (0)

/* --- WebSockets of the current test --- */

static void track_client(struct golden *g, struct ws_client *c)
{
	if (ws_client_set_add(&g->clients, c))
		fail_msg("a test opened more than %d WebSockets",
		         WS_CLIENT_SET_MAX);
}

/* Closing handshake, then forgets c. */
static void close_client(struct golden *g, struct ws_client *c)
{
	ws_client_set_forget(&g->clients, c);
	ws_client_close(c, RECV_MS);
}

static int test_teardown(void **state)
{
	struct golden *g = *state;

	ws_client_set_abort_all(&g->clients);
	return 0;
}

/* --- JSON frames --- */

static json_t *recv_json(struct ws_client *c, char **raw)
{
	char *text = ws_client_recv_text(c, RECV_MS);
	json_error_t err;
	json_t *obj;

	if (!text)
		fail_msg("no text frame: %s", ws_client_error());
	obj = json_loads(text, 0, &err);
	if (!json_is_object(obj))
		fail_msg("frame is not a JSON object (%s): %s", err.text, text);
	if (raw)
		*raw = text;
	else
		free(text);
	return obj;
}

static void expect_str(json_t *obj, const char *key, const char *want)
{
	json_t *v = json_object_get(obj, key);

	if (!json_is_string(v))
		fail_msg("\"%s\" is not a string (want \"%s\")", key, want);
	if (strcmp(json_string_value(v), want) != 0)
		fail_msg("\"%s\" is \"%s\", want \"%s\"", key,
		         json_string_value(v), want);
}

static json_int_t get_int(json_t *obj, const char *key)
{
	json_t *v = json_object_get(obj, key);

	if (!json_is_integer(v))
		fail_msg("\"%s\" is not an integer", key);
	return json_integer_value(v);
}

/* The next frame is {"type":"pong"}: everything the sidecar meant to send
 * before it answered our ping has arrived. */
static void expect_pong(struct ws_client *c)
{
	json_t *obj;

	assert_int_equal(ws_client_send_text(c, "{\"type\":\"ping\"}"),
	                 WS_CLIENT_OK);
	obj = recv_json(c, NULL);
	expect_str(obj, "type", "pong");
	json_decref(obj);
}

/* Opens a connection for user with ?access_token= and checks its first
 * frame, {"type":"connected",...}; conn_id (64 bytes) gets its id. */
static struct ws_client *connect_user(struct golden *g, const char *user,
                                      char *conn_id, json_int_t want_seq)
{
	char *token = sidecar_token(g->sc, user, 600);
	char path[2048];
	struct ws_client *c;
	json_t *obj;
	int status;

	assert_non_null(token);
	snprintf(path, sizeof(path), "/ws?access_token=%s", token);
	free(token);
	status = ws_client_connect(&c, g->sc->port, path, NULL, RECV_MS);
	if (status != 101)
		fail_msg("connect %s: %d (%s)", user, status,
		         ws_client_error());
	track_client(g, c);
	obj = recv_json(c, NULL);
	expect_str(obj, "type", "connected");
	expect_str(obj, "user_id", user);
	assert_int_equal(get_int(obj, "seq"), want_seq);
	if (!json_is_string(json_object_get(obj, "conn_id")) ||
	    !json_string_length(json_object_get(obj, "conn_id")))
		fail_msg("connected frame without conn_id");
	if (conn_id)
		snprintf(conn_id, 64, "%s",
		         json_string_value(json_object_get(obj, "conn_id")));
	json_decref(obj);
	return c;
}

/* --- group setup --- */

static int group_setup(void **state)
{
	struct golden *g = calloc(1, sizeof(*g));

	if (!g || sidecar_start(&g->sc, NULL) != 0) {
		free(g);
		return -1;
	}
	if (wsgate_client_open(&g->backend, g->sc->control_url, CALL_MS) !=
	    WSGATE_OK) {
		fprintf(stderr, "wsgate_client_open %s failed\n",
		        g->sc->control_url);
		sidecar_free(g->sc, true);
		free(g);
		return -1;
	}
	*state = g;
	return 0;
}

static int group_teardown(void **state)
{
	struct golden *g = *state;
	bool failed = g->passed != N_TESTS;

	wsgate_client_close(g->backend);
	if (failed)
		sidecar_print_log(g->sc, 4096);
	sidecar_free(g->sc, failed);
	free(g);
	return 0;
}

/* --- events --- */

struct sent_event {
	const char *type;
	char event_id[64];
	char run_id[16];
	char thread_id[32];
	char payload[160];
	uint64_t seq;
};

/* Three users with two connections each; two runs of the five critical
 * events per user, sent interleaved across users and runs. Each connection
 * gets exactly its user's ten events, in seq order, payloads verbatim. */
static void test_events_reach_only_their_user(void **state)
{
	struct golden *g = *state;
	static const char *const users[3] = {"gp-u1", "gp-u2", "gp-u3"};
	struct ws_client *conns[3][2];
	struct sent_event sent[3][10];
	size_t nsent[3] = {0, 0, 0};

	for (int u = 0; u < 3; u++)
		for (int k = 0; k < 2; k++)
			conns[u][k] = connect_user(g, users[u], NULL, 0);

	for (int e = 0; e < 5; e++) {
		for (int r = 0; r < 2; r++) {
			for (int u = 0; u < 3; u++) {
				struct sent_event *s = &sent[u][nsent[u]];
				struct wsgate_event ev = {0};
				struct wsgate_event_result res;

				s->type = critical_types[e];
				snprintf(s->event_id, sizeof(s->event_id),
				         "%s-r%d-e%d", users[u], r + 1, e + 1);
				snprintf(s->run_id, sizeof(s->run_id), "r%d",
				         r + 1);
				snprintf(s->thread_id, sizeof(s->thread_id),
				         "t-%s", users[u]);
				/* Odd spacing, escapes and raw UTF-8: only a
				 * verbatim copy keeps these bytes. */
				snprintf(s->payload, sizeof(s->payload),
				         "{ \"user\" : \"%s\",\"step\":%d , "
				         "\"text\":\"caf\\u00e9 na\xc3\xafve\","
				         "\"n\":[1, 2.50 ,-0] }",
				         users[u], e + 1);
				ev.event_id = s->event_id;
				ev.user_id = users[u];
				ev.thread_id = s->thread_id;
				ev.run_id = s->run_id;
				ev.type = (enum wsgate_event_type)(e + 1);
				ev.payload_json = s->payload;
				ev.payload_len = strlen(s->payload);
				assert_wsgate_ok(g, wsgate_send_event(
				                        g->backend, &ev, &res));
				assert_int_equal(res.status, WSGATE_OK);
				assert_int_equal(res.seq, nsent[u] + 1);
				assert_int_equal(res.connections, 2);
				assert_false(res.retained);
				assert_false(res.duplicate);
				s->seq = res.seq;
				nsent[u]++;
			}
		}
	}

	for (int u = 0; u < 3; u++) {
		for (int k = 0; k < 2; k++) {
			for (size_t i = 0; i < 10; i++) {
				const struct sent_event *s = &sent[u][i];
				char *raw;
				json_t *obj = recv_json(conns[u][k], &raw);
				json_t *want;

				expect_str(obj, "type", s->type);
				expect_str(obj, "user_id", users[u]);
				assert_int_equal(get_int(obj, "seq"), i + 1);
				expect_str(obj, "event_id", s->event_id);
				expect_str(obj, "run_id", s->run_id);
				expect_str(obj, "thread_id", s->thread_id);
				assert_true(get_int(obj, "ts") > 0);
				want = json_loads(s->payload, 0, NULL);
				assert_non_null(want);
				assert_true(json_equal(
				    json_object_get(obj, "payload"), want));
				if (!strstr(raw, s->payload))
					fail_msg("payload not verbatim: %s",
					         raw);
				json_decref(want);
				json_decref(obj);
				free(raw);
			}
			/* Nothing else was queued for this connection. */
			expect_pong(conns[u][k]);
		}
	}

	for (int u = 0; u < 3; u++)
		for (int k = 0; k < 2; k++)
			close_client(g, conns[u][k]);
	g->passed++;
}

/* --- authentication --- */

static int connect_status(struct golden *g, const char *path,
                          const char *header, struct ws_client **out)
{
	const char *headers[2] = {header, NULL};
	struct ws_client *c = NULL;
	int status = ws_client_connect(&c, g->sc->port, path,
	                               header ? headers : NULL, RECV_MS);

	if (out && c)
		track_client(g, c);
	if (out)
		*out = c;
	else
		ws_client_close(c, RECV_MS);
	return status;
}

static void expect_connected_as(struct ws_client *c, const char *user)
{
	json_t *obj = recv_json(c, NULL);

	expect_str(obj, "type", "connected");
	expect_str(obj, "user_id", user);
	json_decref(obj);
}

static void test_auth_bearer_header(void **state)
{
	struct golden *g = *state;
	char *token = sidecar_token(g->sc, "gp-auth-h", 600);
	char header[2048];
	struct ws_client *c;

	assert_non_null(token);
	snprintf(header, sizeof(header), "Authorization: Bearer %s", token);
	free(token);
	assert_int_equal(connect_status(g, "/ws", header, &c), 101);
	expect_connected_as(c, "gp-auth-h");
	close_client(g, c);
	g->passed++;
}

/* libwebsockets 4.1.6 cannot negotiate a Sec-WebSocket-Protocol header
 * longer than 126 bytes, so an ordinary JWT (about 200 bytes with "typ",
 * "iat" and "jti") cannot travel as "bearer.<JWT>": the sidecar answers
 * 431 (lws used to drop it without an answer). Also tested: the
 * subprotocol is negotiated when the token comes another way, a
 * bearer.<JWT> that fits (a minimal HS256 token) authenticates, and a bad
 * one is refused. */
static void test_auth_subprotocol(void **state)
{
	struct golden *g = *state;
	char *token = sidecar_token(g->sc, "gp-auth-sp", 600);
	char path[2048], claims[96], header[256];
	struct ws_client *c;

	assert_non_null(token);
	snprintf(path, sizeof(path), "/ws?access_token=%s", token);
	free(token);
	assert_int_equal(
	    connect_status(g, path, "Sec-WebSocket-Protocol: wsgate.v1", &c),
	    101);
	assert_string_equal(ws_client_subprotocol(c), "wsgate.v1");
	expect_connected_as(c, "gp-auth-sp");
	close_client(g, c);

	snprintf(claims, sizeof(claims), "{\"sub\":\"sp\",\"exp\":%lld}",
	         (long long)time(NULL) + 600);
	token = jwt_mint_raw("{\"alg\":\"HS256\"}", claims, "HS256",
	                     g->sc->secret, g->sc->secret_len, NULL);
	assert_non_null(token);
	snprintf(header, sizeof(header),
	         "Sec-WebSocket-Protocol: wsgate.v1, bearer.%s", token);
	free(token);
	assert_true(strlen(header) - strlen("Sec-WebSocket-Protocol: ") <= 126);
	assert_int_equal(connect_status(g, "/ws", header, &c), 101);
	assert_string_equal(ws_client_subprotocol(c), "wsgate.v1");
	expect_connected_as(c, "sp");
	close_client(g, c);

	token = sidecar_token(g->sc, "gp-auth-long", 600);
	assert_non_null(token);
	snprintf(path, sizeof(path),
	         "Sec-WebSocket-Protocol: wsgate.v1, bearer.%s", token);
	free(token);
	assert_true(strlen(path) - strlen("Sec-WebSocket-Protocol: ") > 126);
	assert_int_equal(connect_status(g, "/ws", path, NULL), 431);

	assert_int_equal(connect_status(g, "/ws",
	                                "Sec-WebSocket-Protocol: wsgate.v1, "
	                                "bearer.not-a-jwt",
	                                NULL),
	                 401);
	g->passed++;
}

static void test_auth_refuses_bad_expired_and_missing_tokens(void **state)
{
	struct golden *g = *state;
	static const char other_secret[] =
	    "0123456789abcdef0123456789abcdef0123456789abcdef";
	char path[2048];
	char *token;

	/* Signed with another key. */
	token = jwt_mint_hs256(other_secret, strlen(other_secret), "gp-bad",
	                       (int64_t)time(NULL), 600);
	assert_non_null(token);
	snprintf(path, sizeof(path), "/ws?access_token=%s", token);
	free(token);
	assert_int_equal(connect_status(g, path, NULL, NULL), 401);

	/* Not a JWT at all. */
	assert_int_equal(
	    connect_status(g, "/ws?access_token=abc.def.ghi", NULL, NULL), 401);

	/* Expired an hour ago: far beyond the 30 s leeway. */
	token = jwt_mint_hs256(g->sc->secret, g->sc->secret_len, "gp-expired",
	                       (int64_t)time(NULL) - 7200, 3600);
	assert_non_null(token);
	snprintf(path, sizeof(path), "/ws?access_token=%s", token);
	free(token);
	assert_int_equal(connect_status(g, path, NULL, NULL), 401);

	/* An empty token, and a header without one (a handshake with no
	 * token at all authenticates with its first message instead). */
	assert_int_equal(connect_status(g, "/ws?access_token=", NULL, NULL),
	                 401);
	assert_int_equal(
	    connect_status(g, "/ws", "Authorization: Bearer", NULL), 401);
	g->passed++;
}

/* --- client frames --- */

static void test_client_ping_and_invalid_json(void **state)
{
	struct golden *g = *state;
	struct ws_client *c = connect_user(g, "gp-frames", NULL, 0);
	static const char ping[] = "{\"type\":\"ping\"}";
	char *big;
	json_t *obj;

	expect_pong(c);

	assert_int_equal(ws_client_send_text(c, "this is {not json"),
	                 WS_CLIENT_OK);
	obj = recv_json(c, NULL);
	expect_str(obj, "type", "error");
	expect_str(obj, "code", "invalid_json");
	json_decref(obj);
	expect_pong(c); /* still open */

	/* A fragmented message is one message. */
	assert_int_equal(
	    ws_client_send_fragmented(c, WS_OP_TEXT, ping, strlen(ping), 4),
	    WS_CLIENT_OK);
	obj = recv_json(c, NULL);
	expect_str(obj, "type", "pong");
	json_decref(obj);

	/* Exactly the limit is allowed. */
	big = malloc(MAX_CLIENT_FRAME + 1);
	assert_non_null(big);
	memset(big, 'a', MAX_CLIENT_FRAME);
	memcpy(big, "{\"type\":\"x\",\"pad\":\"", 19);
	memcpy(big + MAX_CLIENT_FRAME - 2, "\"}", 2);
	big[MAX_CLIENT_FRAME] = '\0';
	assert_int_equal(ws_client_send_text(c, big), WS_CLIENT_OK);
	free(big);
	expect_pong(c);

	close_client(g, c);
	g->passed++;
}

static void test_binary_frame_closes_1003(void **state)
{
	struct golden *g = *state;
	struct ws_client *c = connect_user(g, "gp-binary", NULL, 0);

	assert_int_equal(ws_client_send_binary(c, "\x01\x02\x03", 3),
	                 WS_CLIENT_OK);
	assert_int_equal(ws_client_recv_close(c, RECV_MS), 1003);
	close_client(g, c);
	g->passed++;
}

static void test_oversize_frame_closes_1009(void **state)
{
	struct golden *g = *state;
	struct ws_client *c = connect_user(g, "gp-oversize", NULL, 0);
	size_t len = MAX_CLIENT_FRAME + 1;
	char *big = malloc(len + 1);

	assert_non_null(big);
	memset(big, 'a', len);
	memcpy(big, "{\"pad\":\"", 8);
	memcpy(big + len - 2, "\"}", 2);
	big[len] = '\0';
	assert_int_equal(ws_client_send_text(c, big), WS_CLIENT_OK);
	free(big);
	assert_int_equal(ws_client_recv_close(c, RECV_MS), 1009);
	close_client(g, c);
	g->passed++;
}

/* --- malformed control requests --- */

/* A backend sending N_FLOW events to one user, on its own thread. cmocka's
 * assertions are for the main thread only, so it records its first
 * failure for the main thread to report. */
struct flow {
	wsgate_client *c;
	const char *user;
	atomic_bool done;
	int failures;
	char first_error[320];
};

static void *flow_send(void *arg)
{
	struct flow *f = arg;

	for (int i = 0; i < N_FLOW; i++) {
		char event_id[32], payload[32];
		struct wsgate_event ev = {0};
		struct wsgate_event_result res;
		enum wsgate_status st;

		snprintf(event_id, sizeof(event_id), "flow-%d", i);
		snprintf(payload, sizeof(payload), "{\"i\":%d}", i);
		ev.event_id = event_id;
		ev.user_id = f->user;
		ev.run_id = "r-flow";
		ev.type = WSGATE_AGENT_THINKING;
		ev.payload_json = payload;
		ev.payload_len = strlen(payload);
		st = wsgate_send_event(f->c, &ev, &res);
		if ((st != WSGATE_OK || res.seq != (uint64_t)i + 1) &&
		    f->failures++ == 0)
			snprintf(f->first_error, sizeof(f->first_error),
			         "event %d: %s, seq %llu (%s)", i,
			         wsgate_status_name(st),
			         (unsigned long long)res.seq,
			         wsgate_client_error(f->c));
	}
	atomic_store(&f->done, true);
	return NULL;
}

/* Sends raw bytes on a req0 socket and decodes the reply. */
static Wsgate__V1__Reply *raw_request(nng_socket req, const void *data,
                                      size_t len)
{
	Wsgate__V1__Reply *reply;
	void *buf = NULL;
	size_t n = 0;
	int rv;

	rv = nng_send(req, (void *)data, len, 0);
	if (rv != 0)
		fail_msg("nng_send: %s", nng_strerror(rv));
	rv = nng_recv(req, &buf, &n, NNG_FLAG_ALLOC);
	if (rv != 0)
		fail_msg("nng_recv: %s", nng_strerror(rv));
	reply = wsgate__v1__reply__unpack(NULL, n, buf);
	nng_free(buf, n);
	if (!reply)
		fail_msg("reply of %zu bytes is not a wsgate.v1.Reply", n);
	return reply;
}

static Wsgate__V1__Reply *raw_send_event(nng_socket req, uint64_t id,
                                         Wsgate__V1__Event *ev)
{
	Wsgate__V1__Request rq = WSGATE__V1__REQUEST__INIT;
	Wsgate__V1__SendEvent se = WSGATE__V1__SEND_EVENT__INIT;
	uint8_t buf[1024];
	size_t len;

	se.event = ev;
	rq.request_id = id;
	rq.body_case = WSGATE__V1__REQUEST__BODY_SEND_EVENT;
	rq.send_event = &se;
	len = wsgate__v1__request__get_packed_size(&rq);
	assert_true(len <= sizeof(buf));
	wsgate__v1__request__pack(&rq, buf);
	return raw_request(req, buf, len);
}

static void expect_invalid(Wsgate__V1__Reply *reply, uint64_t id,
                           const char *field)
{
	if (reply->status != WSGATE__V1__STATUS__INVALID_ARGUMENT)
		fail_msg("request %llu: status %d, want INVALID_ARGUMENT (%s)",
		         (unsigned long long)id, reply->status, reply->error);
	assert_int_equal(reply->request_id, id);
	if (field && !strstr(reply->error, field))
		fail_msg("error \"%s\" does not name %s", reply->error, field);
	wsgate__v1__reply__free_unpacked(reply, NULL);
}

/* One round of hostile requests: bytes that are no protobuf, an event
 * without user_id, a payload that is not JSON, a request without body. */
static void send_malformed_round(nng_socket req, uint64_t id, const char *user)
{
	Wsgate__V1__Event ev = WSGATE__V1__EVENT__INIT;
	Wsgate__V1__Request rq = WSGATE__V1__REQUEST__INIT;
	unsigned char junk[48], buf[32];
	size_t len;

	/* Field 1 with wire type 7, which does not exist: never decodable. */
	junk[0] = 0x0f;
	assert_int_equal(RAND_bytes(junk + 1, sizeof(junk) - 1), 1);
	expect_invalid(raw_request(req, junk, sizeof(junk)), 0, NULL);

	ev.event_id = "bad-no-user";
	ev.user_id = "";
	ev.type = WSGATE__V1__EVENT_TYPE__AGENT_STARTED;
	ev.payload_json.data = (uint8_t *)"{}";
	ev.payload_json.len = 2;
	expect_invalid(raw_send_event(req, id, &ev), id, "user_id");

	ev.event_id = "bad-payload";
	ev.user_id = (char *)user;
	ev.payload_json.data = (uint8_t *)"{not json";
	ev.payload_json.len = 9;
	expect_invalid(raw_send_event(req, id + 1, &ev), id + 1,
	               "payload_json");

	rq.request_id = id + 2;
	len = wsgate__v1__request__get_packed_size(&rq);
	wsgate__v1__request__pack(&rq, buf);
	expect_invalid(raw_request(req, buf, len), id + 2, NULL);
}

static void test_malformed_requests_do_not_disturb_events(void **state)
{
	struct golden *g = *state;
	const char *user = "gp-flow";
	struct ws_client *c = connect_user(g, user, NULL, 0);
	struct flow f = {.user = user};
	pthread_t thread;
	nng_socket req;
	uint64_t id = 1000;
	int rounds = 0;

	assert_int_equal(nng_req0_open(&req), 0);
	assert_int_equal(nng_socket_set_ms(req, NNG_OPT_RECVTIMEO, CALL_MS), 0);
	assert_int_equal(nng_socket_set_ms(req, NNG_OPT_SENDTIMEO, CALL_MS), 0);
	assert_int_equal(nng_dial(req, g->sc->control_url, NULL, 0), 0);
	assert_wsgate_ok(g,
	                 wsgate_client_open(&f.c, g->sc->control_url, CALL_MS));

	assert_int_equal(pthread_create(&thread, NULL, flow_send, &f), 0);
	/* At least three rounds, and more while the flow lasts. */
	while (rounds < 3 || (!atomic_load(&f.done) && rounds < 1000)) {
		send_malformed_round(req, id, user);
		id += 3;
		rounds++;
	}
	pthread_join(thread, NULL);
	nng_close(req);
	wsgate_client_close(f.c);
	if (f.failures)
		fail_msg("%d of %d events failed; first: %s", f.failures,
		         N_FLOW, f.first_error);

	for (int i = 0; i < N_FLOW; i++) {
		json_t *obj = recv_json(c, NULL);
		char event_id[32];

		snprintf(event_id, sizeof(event_id), "flow-%d", i);
		expect_str(obj, "type", "agent_thinking");
		assert_int_equal(get_int(obj, "seq"), i + 1);
		expect_str(obj, "event_id", event_id);
		assert_int_equal(get_int(json_object_get(obj, "payload"), "i"),
		                 i);
		json_decref(obj);
	}
	expect_pong(c);
	close_client(g, c);
	g->passed++;
}

/* --- inbound channel --- */

/* Receives inbound messages until one about conn_id arrives (messages
 * about other connections, left by earlier tests, are skipped). */
static void recv_inbound_for(wsgate_inbound *in, const char *conn_id,
                             struct wsgate_inbound_msg *msg)
{
	int64_t deadline = test_now_ms() + RECV_MS;

	for (;;) {
		int64_t left = deadline - test_now_ms();
		enum wsgate_status st;

		if (left <= 0)
			fail_msg("no inbound message for %s", conn_id);
		st = wsgate_inbound_recv(in, msg, (int)left);
		if (st == WSGATE_ERR_TIMEOUT)
			fail_msg("no inbound message for %s", conn_id);
		if (st != WSGATE_OK)
			fail_msg("wsgate_inbound_recv: %s",
			         wsgate_status_name(st));
		if (strcmp(msg->conn_id, conn_id) == 0)
			return;
		wsgate_inbound_msg_clear(msg);
	}
}

static void expect_client_message(wsgate_inbound *in, const char *conn_id,
                                  const char *user, const char *data)
{
	struct wsgate_inbound_msg msg = {0};

	recv_inbound_for(in, conn_id, &msg);
	assert_int_equal(msg.kind, WSGATE_INBOUND_CLIENT_MESSAGE);
	assert_string_equal(msg.user_id, user);
	assert_int_equal(msg.data_len, strlen(data));
	assert_memory_equal(msg.data, data, msg.data_len);
	assert_true(msg.at > 0);
	wsgate_inbound_msg_clear(&msg);
}

static void test_client_message_reaches_backend(void **state)
{
	struct golden *g = *state;
	const char *user = "gp-inbound";
	static const char odd[] =
	    "{ \"hello\" : \"x\\u00e9 \xc3\xa9\" ,\"n\":[1, 2.0 ] }";
	struct wsgate_inbound_msg msg = {0};
	wsgate_inbound *in;
	struct ws_client *c;
	char conn_id[64];

	assert_int_equal(wsgate_inbound_open(&in, g->sc->inbound_url),
	                 WSGATE_OK);
	c = connect_user(g, user, conn_id, 0);

	recv_inbound_for(in, conn_id, &msg);
	assert_int_equal(msg.kind, WSGATE_INBOUND_OPENED);
	assert_string_equal(msg.user_id, user);
	wsgate_inbound_msg_clear(&msg);

	assert_int_equal(ws_client_send_text(c, "{\"hello\":\"x\"}"),
	                 WS_CLIENT_OK);
	expect_client_message(in, conn_id, user, "{\"hello\":\"x\"}");
	assert_int_equal(ws_client_send_text(c, odd), WS_CLIENT_OK);
	expect_client_message(in, conn_id, user, odd);

	/* Larger than the sidecar's receive buffer: arrives whole. */
	char *big = malloc(10001);
	assert_non_null(big);
	memset(big, 'b', 10000);
	memcpy(big, "{\"big\":\"", 8);
	memcpy(big + 10000 - 2, "\"}", 2);
	big[10000] = '\0';
	assert_int_equal(ws_client_send_text(c, big), WS_CLIENT_OK);
	expect_client_message(in, conn_id, user, big);
	free(big);

	/* A ping is answered by the sidecar and not forwarded: the next
	 * message of this connection is the one sent after it. */
	expect_pong(c);
	assert_int_equal(ws_client_send_text(c, "[\"after ping\"]"),
	                 WS_CLIENT_OK);
	expect_client_message(in, conn_id, user, "[\"after ping\"]");

	close_client(g, c);
	recv_inbound_for(in, conn_id, &msg);
	assert_int_equal(msg.kind, WSGATE_INBOUND_CLOSED);
	assert_string_equal(msg.user_id, user);
	assert_int_equal(msg.code, 1000);
	wsgate_inbound_msg_clear(&msg);
	wsgate_inbound_close(in);
	g->passed++;
}

/* --- admin requests --- */

static struct wsgate_stats stats_now(struct golden *g)
{
	struct wsgate_stats st;

	assert_wsgate_ok(g, wsgate_get_stats(g->backend, &st));
	return st;
}

/* Polls GetStats until it counts want connections. */
static void wait_connections(struct golden *g, uint32_t want)
{
	int64_t deadline = test_now_ms() + POLL_MS;
	struct wsgate_stats st;

	while ((st = stats_now(g)).connections != want) {
		if (test_now_ms() > deadline)
			fail_msg("GetStats: %u connections, want %u",
			         st.connections, want);
		test_pause_ms(2);
	}
}

static bool listed(const struct wsgate_connection *list, size_t n,
                   const char *conn_id, const char *user)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(list[i].conn_id, conn_id) == 0)
			return strcmp(list[i].user_id, user) == 0;
	return false;
}

static void test_disconnect_closes_only_that_user(void **state)
{
	struct golden *g = *state;
	char id1a[64], id1b[64], id2[64];
	struct ws_client *c1a, *c1b, *c2;
	struct wsgate_connection *list = NULL;
	struct wsgate_stats st;
	uint32_t n = 0;
	size_t count = 0;

	/* Earlier tests closed theirs; wait until the sidecar agrees. */
	wait_connections(g, 0);
	c1a = connect_user(g, "gp-kick1", id1a, 0);
	c1b = connect_user(g, "gp-kick1", id1b, 0);
	c2 = connect_user(g, "gp-kick2", id2, 0);

	assert_wsgate_ok(
	    g, wsgate_list_connections(g->backend, "gp-kick1", &list, &count));
	assert_int_equal(count, 2);
	assert_true(listed(list, count, id1a, "gp-kick1"));
	assert_true(listed(list, count, id1b, "gp-kick1"));
	assert_true(list[0].opened_at > 0);
	free(list);
	assert_wsgate_ok(
	    g, wsgate_list_connections(g->backend, NULL, &list, &count));
	assert_int_equal(count, 3);
	assert_true(listed(list, count, id1a, "gp-kick1"));
	assert_true(listed(list, count, id1b, "gp-kick1"));
	assert_true(listed(list, count, id2, "gp-kick2"));
	free(list);
	st = stats_now(g);
	assert_int_equal(st.connections, 3);
	assert_int_equal(st.users, 2);
	/* One pod: no cluster to report. */
	assert_false(st.cluster);
	assert_string_equal(st.node_id, "");

	assert_wsgate_ok(
	    g, wsgate_disconnect(g->backend, "gp-kick1", NULL, "test", &n));
	assert_int_equal(n, 2);
	assert_int_equal(ws_client_recv_close(c1a, RECV_MS), 4003);
	assert_int_equal(ws_client_recv_close(c1b, RECV_MS), 4003);
	expect_pong(c2);
	wait_connections(g, 1);
	assert_wsgate_ok(
	    g, wsgate_list_connections(g->backend, "gp-kick1", &list, &count));
	assert_int_equal(count, 0);
	free(list);

	/* Matching nothing is OK with 0; a connection of another user is
	 * not closed when both fields are given. */
	assert_wsgate_ok(
	    g, wsgate_disconnect(g->backend, "gp-nobody", NULL, NULL, &n));
	assert_int_equal(n, 0);
	assert_wsgate_ok(
	    g, wsgate_disconnect(g->backend, "gp-kick1", id2, NULL, &n));
	assert_int_equal(n, 0);
	expect_pong(c2);
	assert_wsgate_ok(g, wsgate_disconnect(g->backend, NULL, id2, NULL, &n));
	assert_int_equal(n, 1);
	assert_int_equal(ws_client_recv_close(c2, RECV_MS), 4003);

	close_client(g, c1a);
	close_client(g, c1b);
	close_client(g, c2);
	wait_connections(g, 0);
	g->passed++;
}

/* --- HTTP --- */

/* A token accepted within its leeway (exp 28 s ago, leeway 30 s) is
 * closed with 4001 when the leeway runs out, by the once-a-second sweep. */
static void test_expired_token_closes_4001(void **state)
{
	struct golden *g = *state;
	char *token =
	    jwt_mint_hs256(g->sc->secret, g->sc->secret_len, "gp-expiring",
	                   (int64_t)time(NULL) - 3628, 3600);
	char path[2048];
	struct ws_client *c;

	assert_non_null(token);
	snprintf(path, sizeof(path), "/ws?access_token=%s", token);
	free(token);
	assert_int_equal(
	    ws_client_connect(&c, g->sc->port, path, NULL, RECV_MS), 101);
	track_client(g, c);
	assert_int_equal(ws_client_recv_close(c, RECV_MS), 4001);
	close_client(g, c);
	g->passed++;
}

static void test_healthz_and_metrics(void **state)
{
	struct golden *g = *state;
	char *body = NULL;

	assert_int_equal(sidecar_http_get(g->sc, "/healthz", NULL), 200);
	assert_int_equal(sidecar_http_get(g->sc, "/metrics", &body), 200);
	assert_non_null(body);
	assert_non_null(strstr(body, "\nwsgate_connections "));
	/* One pod: no cluster lines. */
	assert_null(strstr(body, "wsgate_cluster_"));
	free(body);
	g->passed++;
}

/* --- shutdown: last, it stops the sidecar --- */

static void test_sigterm_closes_connections_1001(void **state)
{
	struct golden *g = *state;
	struct ws_client *c = connect_user(g, "gp-last", NULL, 0);

	assert_int_equal(sidecar_signal(g->sc, SIGTERM), 0);
	assert_int_equal(ws_client_recv_close(c, RECV_MS), 1001);
	close_client(g, c);
	assert_int_equal(sidecar_wait(g->sc, SIDECAR_STOP_TIMEOUT_MS), 0);
	g->passed++;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_teardown(test_events_reach_only_their_user,
	                              test_teardown),
	    cmocka_unit_test_teardown(test_auth_bearer_header, test_teardown),
	    cmocka_unit_test_teardown(test_auth_subprotocol, test_teardown),
	    cmocka_unit_test_teardown(
	        test_auth_refuses_bad_expired_and_missing_tokens,
	        test_teardown),
	    cmocka_unit_test_teardown(test_client_ping_and_invalid_json,
	                              test_teardown),
	    cmocka_unit_test_teardown(test_binary_frame_closes_1003,
	                              test_teardown),
	    cmocka_unit_test_teardown(test_oversize_frame_closes_1009,
	                              test_teardown),
	    cmocka_unit_test_teardown(
	        test_malformed_requests_do_not_disturb_events, test_teardown),
	    cmocka_unit_test_teardown(test_client_message_reaches_backend,
	                              test_teardown),
	    cmocka_unit_test_teardown(test_disconnect_closes_only_that_user,
	                              test_teardown),
	    cmocka_unit_test_teardown(test_expired_token_closes_4001,
	                              test_teardown),
	    cmocka_unit_test_teardown(test_healthz_and_metrics, test_teardown),
	    cmocka_unit_test_teardown(test_sigterm_closes_connections_1001,
	                              test_teardown),
	};

	_Static_assert(sizeof(tests) / sizeof(tests[0]) == N_TESTS,
	               "N_TESTS counts the tests");
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
