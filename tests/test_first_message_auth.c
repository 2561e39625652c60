/*
 * test_first_message_auth: the WebSocket protocol additions of issue 13 on
 * a real sidecar -- a handshake without any token authenticates with its
 * first frame, {"type":"auth","token":JWT}, within --auth-timeout, and an
 * open connection renews its token with {"type":"refresh","token":JWT}.
 *
 * What is asserted is the wire as PROTOCOL-ADDITIONS.md writes it: the
 * `connected` frame of the token's user, error frames with their codes
 * (auth_failed, auth_timeout, too_many_connections, refresh_failed,
 * already_authenticated), close codes 4401 and 4429, `refreshed` with the
 * new exp, and the auth_failures rows. One sidecar (--auth-timeout 2s,
 * --max-conns-per-user 1) serves most tests, each with its own users; the
 * limit tests start their own. Every wait is a receive or a polled
 * condition with a deadline.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "jwt_mint.h"
#include "sidecar_proc.h"
#include "test_clock.h"
#include "ws_client.h"
#include "wsgate.h"

#define RECV_MS         5000  /* one frame, one handshake, one call */
#define POLL_MS         10000 /* a polled condition */
#define AUTH_TIMEOUT_MS 2000  /* --auth-timeout of the shared sidecar */
#define SWEEP_MS        1000  /* the sidecar checks deadlines this often */
#define LEEWAY_S        30    /* tokens live until exp + 30 s */
#define N_TESTS         10    /* the tests on the shared sidecar */
#define TOO_SOON        "too soon: one refresh a second"

/* One for the whole file. */
struct fm {
	struct sidecar *sc;
	wsgate_client *backend;
	int passed;
	struct ws_client_set clients; /* the current test's */
	struct sidecar *own_sc;       /* a test's own sidecar */
};

static int test_teardown(void **state)
{
	struct fm *f = *state;

	ws_client_set_abort_all(&f->clients);
	if (f->own_sc)
		sidecar_free(f->own_sc, false);
	f->own_sc = NULL;
	return 0;
}

static struct ws_client *track(struct fm *f, struct ws_client *c)
{
	if (ws_client_set_add(&f->clients, c))
		fail_msg("a test opened more than %d WebSockets",
		         WS_CLIENT_SET_MAX);
	return c;
}

/* A handshake on path (no token unless the path has one): 101 or fail. */
static struct ws_client *open_path(struct fm *f, const struct sidecar *sc,
                                   const char *path)
{
	struct ws_client *c = NULL;
	int st = ws_client_connect(&c, sc->port, path, NULL, RECV_MS);

	if (st != 101)
		fail_msg("%s: handshake %d (%s)", path, st, ws_client_error());
	return track(f, c);
}

static int handshake_status(const struct sidecar *sc, const char *path)
{
	struct ws_client *c = NULL;
	int st = ws_client_connect(&c, sc->port, path, NULL, RECV_MS);

	ws_client_abort(c);
	return st;
}

static char *token(const struct sidecar *sc, const char *user, int64_t ttl)
{
	char *t = sidecar_token(sc, user, ttl);

	assert_non_null(t);
	return t;
}

/* "/ws?access_token=" and a token of user living ttl seconds; malloc'd. */
static char *token_path(const struct sidecar *sc, const char *user, int64_t ttl)
{
	char *tok = token(sc, user, ttl), *path = NULL;

	assert_true(asprintf(&path, "/ws?access_token=%s", tok) > 0);
	free(tok);
	return path;
}

/* Sends {"type":TYPE,"token":TOK}. */
static void send_token_frame(struct ws_client *c, const char *type,
                             const char *tok)
{
	char *text = NULL;

	assert_true(asprintf(&text, "{\"type\":\"%s\",\"token\":\"%s\"}", type,
	                     tok) > 0);
	assert_int_equal(ws_client_send_text(c, text), WS_CLIENT_OK);
	free(text);
}

static void send_auth(struct ws_client *c, const struct sidecar *sc,
                      const char *user)
{
	char *tok = token(sc, user, 600);

	send_token_frame(c, "auth", tok);
	free(tok);
}

static json_t *recv_json(struct ws_client *c)
{
	char *text = ws_client_recv_text(c, RECV_MS);
	json_t *obj;

	if (!text)
		fail_msg("no text frame: %s", ws_client_error());
	obj = json_loads(text, 0, NULL);
	if (!json_is_object(obj))
		fail_msg("not a JSON object: %s", text);
	free(text);
	return obj;
}

static const char *jstr(json_t *obj, const char *key)
{
	const char *v = json_string_value(json_object_get(obj, key));

	return v ? v : "";
}

/* The next frame is `connected` for user with seq; returns its conn_id
 * (malloc'd). */
static char *expect_connected(struct ws_client *c, const char *user,
                              json_int_t seq)
{
	json_t *obj = recv_json(c);
	char *id;

	if (strcmp(jstr(obj, "type"), "connected") != 0 ||
	    strcmp(jstr(obj, "user_id"), user) != 0 ||
	    json_integer_value(json_object_get(obj, "seq")) != seq)
		fail_msg("want connected of %s with seq %lld, got %s", user,
		         (long long)seq, json_dumps(obj, JSON_COMPACT));
	id = strdup(jstr(obj, "conn_id"));
	json_decref(obj);
	return id;
}

/* The next frame is {"type":"error","code":CODE[,"message":MESSAGE]}
 * (message NULL: not checked). */
static void expect_error(struct ws_client *c, const char *code,
                         const char *message)
{
	json_t *obj = recv_json(c);

	if (strcmp(jstr(obj, "type"), "error") != 0 ||
	    strcmp(jstr(obj, "code"), code) != 0 ||
	    (message && strcmp(jstr(obj, "message"), message) != 0))
		fail_msg("want error %s (%s), got %s", code,
		         message ? message : "any message",
		         json_dumps(obj, JSON_COMPACT));
	json_decref(obj);
}

/* Sends a refresh with tok until it is no longer answered "too soon"
 * (one refresh a second per connection); returns that answer. */
static json_t *refresh_when_allowed(struct ws_client *c, const char *tok)
{
	int64_t deadline = test_now_ms() + POLL_MS;

	for (;;) {
		json_t *obj;

		send_token_frame(c, "refresh", tok);
		obj = recv_json(c);
		if (strcmp(jstr(obj, "code"), "refresh_failed") != 0 ||
		    strcmp(jstr(obj, "message"), TOO_SOON) != 0)
			return obj;
		json_decref(obj);
		if (test_now_ms() > deadline)
			fail_msg("refresh still too soon after %d ms", POLL_MS);
		test_pause_ms(100);
	}
}

static void expect_close(struct ws_client *c, int code)
{
	int got = ws_client_recv_close(c, RECV_MS);

	if (got != code)
		fail_msg("want close %d, got %d (%s)", code, got,
		         ws_client_error());
}

static void expect_pong(struct ws_client *c)
{
	json_t *obj;

	assert_int_equal(ws_client_send_text(c, "{\"type\":\"ping\"}"),
	                 WS_CLIENT_OK);
	obj = recv_json(c);
	assert_string_equal(jstr(obj, "type"), "pong");
	json_decref(obj);
}

/* Sends user an event with id "<user>-<n>"; returns its seq. */
static uint64_t send_event(struct fm *f, const char *user, int n,
                           uint32_t *connections)
{
	struct wsgate_event ev = {0};
	struct wsgate_event_result res;
	char id[96];
	enum wsgate_status st;

	snprintf(id, sizeof(id), "%s-%d", user, n);
	ev.event_id = id;
	ev.user_id = user;
	ev.thread_id = "t1";
	ev.run_id = "r1";
	ev.type = WSGATE_AGENT_THINKING;
	st = wsgate_send_event(f->backend, &ev, &res);
	if (st != WSGATE_OK || res.status != WSGATE_OK)
		fail_msg("send %s: %s", id, wsgate_status_name(st));
	if (connections)
		*connections = res.connections;
	return res.seq;
}

static void expect_event(struct ws_client *c, const char *user, int n,
                         json_int_t seq)
{
	json_t *obj = recv_json(c);
	char id[96];

	snprintf(id, sizeof(id), "%s-%d", user, n);
	if (strcmp(jstr(obj, "event_id"), id) != 0 ||
	    strcmp(jstr(obj, "user_id"), user) != 0 ||
	    json_integer_value(json_object_get(obj, "seq")) != seq)
		fail_msg("want event %s seq %lld, got %s", id, (long long)seq,
		         json_dumps(obj, JSON_COMPACT));
	json_decref(obj);
}

/* --- the audit store, read-only --- */

static int64_t wall_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Polls until an auth_failures row with reason written at or after
 * since_us is there; fails the test otherwise. */
static void expect_failure_row(const struct sidecar *sc, int64_t since_us,
                               const char *reason)
{
	static const char sql[] = "SELECT count(*) FROM auth_failures WHERE "
	                          "at >= CAST(?1 AS INTEGER) AND reason = ?2";
	char at[32];

	snprintf(at, sizeof(at), "%lld", (long long)since_us);
	if (sidecar_db_wait(sc, sql, at, reason, 1, POLL_MS) < 1)
		fail_msg("no auth_failures row \"%s\"", reason);
}

static uint32_t stats_connections(struct fm *f)
{
	struct wsgate_stats st;

	assert_int_equal(wsgate_get_stats(f->backend, &st), WSGATE_OK);
	return st.connections;
}

/* ------------------------------------------------------------------ */

static void test_auth_frame_connects_as_its_user(void **state)
{
	struct fm *f = *state;
	static const char user[] = "fm-auth";
	struct ws_client *c = open_path(f, f->sc, "/ws");
	uint32_t conns = 99;
	char *id;

	/* Not yet anyone's: not counted, and an event finds no connection
	 * (it is kept for the user's next one). */
	assert_int_equal(stats_connections(f), 0);
	assert_int_equal(send_event(f, user, 1, &conns), 1);
	assert_int_equal(conns, 0);

	send_auth(c, f->sc, user);
	id = expect_connected(c, user, 1);
	expect_event(c, user, 1, 1); /* the pending one */
	assert_int_equal(send_event(f, user, 2, &conns), 2);
	assert_int_equal(conns, 1);
	expect_event(c, user, 2, 2);
	expect_pong(c);
	assert_int_equal(sidecar_db_int(f->sc,
	                                "SELECT count(*) FROM sessions WHERE "
	                                "conn_id = ?1 AND user_id = ?2",
	                                id, user),
	                 1);
	free(id);
	f->passed++;
}

static void test_bad_auth_frames_get_auth_failed_and_4401(void **state)
{
	struct fm *f = *state;
	int64_t t0 = wall_us();
	struct ws_client *c;
	char *tok;

	/* A token that is not one. */
	c = open_path(f, f->sc, "/ws");
	send_token_frame(c, "auth", "abc.def.ghi");
	expect_error(c, "auth_failed", "malformed");
	expect_close(c, 4401);
	expect_failure_row(f->sc, t0, "malformed");

	/* An expired one. */
	c = open_path(f, f->sc, "/ws");
	tok = token(f->sc, "fm-bad", -2 * LEEWAY_S);
	send_token_frame(c, "auth", tok);
	free(tok);
	expect_error(c, "auth_failed", "expired");
	expect_close(c, 4401);
	expect_failure_row(f->sc, t0, "expired");

	/* Anything else first: a ping, a message for backends. */
	c = open_path(f, f->sc, "/ws");
	assert_int_equal(ws_client_send_text(c, "{\"type\":\"ping\"}"),
	                 WS_CLIENT_OK);
	expect_error(c, "auth_failed", "expected an auth frame");
	expect_close(c, 4401);
	c = open_path(f, f->sc, "/ws");
	assert_int_equal(ws_client_send_text(c, "{\"type\":\"chat\"}"),
	                 WS_CLIENT_OK);
	expect_error(c, "auth_failed", "expected an auth frame");
	expect_close(c, 4401);
	expect_failure_row(f->sc, t0, "expected an auth frame");
	assert_int_equal(stats_connections(f), 0);
	f->passed++;
}

static void test_no_auth_frame_in_time_gets_4401(void **state)
{
	struct fm *f = *state;
	int64_t t0 = wall_us(), opened;
	struct ws_client *c = open_path(f, f->sc, "/ws");
	struct ws_msg m = {0};
	json_t *obj;
	int rc;

	opened = test_now_ms();
	/* Nothing until the deadline, then auth_timeout and 4401. */
	rc = ws_client_recv(c, &m, AUTH_TIMEOUT_MS + SWEEP_MS + RECV_MS);
	if (rc != WS_CLIENT_OK || m.opcode != WS_OP_TEXT)
		fail_msg("want the auth_timeout frame, got %d (%s)", rc,
		         ws_client_error());
	obj = json_loadb((const char *)m.data, m.len, 0, NULL);
	assert_non_null(obj);
	assert_string_equal(jstr(obj, "code"), "auth_timeout");
	json_decref(obj);
	ws_msg_free(&m);
	print_message("    auth_timeout %lld ms after the handshake\n",
	              (long long)(test_now_ms() - opened));
	assert_true(test_now_ms() - opened >= AUTH_TIMEOUT_MS - 100);
	expect_close(c, 4401);
	expect_failure_row(f->sc, t0, "auth_timeout");
	f->passed++;
}

static void test_refresh_keeps_a_connection_past_its_first_exp(void **state)
{
	struct fm *f = *state;
	/* Tokens expired LEEWAY_S - 5 s ago: accepted, closed 4001 in 5 s. */
	char *old_a = token(f->sc, "fm-refresh", 5 - LEEWAY_S);
	char *old_b = token_path(f->sc, "fm-norefresh", 5 - LEEWAY_S);
	char *fresh = token(f->sc, "fm-refresh", 600);
	struct ws_client *a, *b;
	json_t *obj;
	json_int_t exp;
	int64_t now = (int64_t)time(NULL);

	/* a by its first message, b by its handshake. */
	a = open_path(f, f->sc, "/ws");
	send_token_frame(a, "auth", old_a);
	free(expect_connected(a, "fm-refresh", 0));
	b = open_path(f, f->sc, old_b);
	free(expect_connected(b, "fm-norefresh", 0));

	send_token_frame(a, "refresh", fresh);
	obj = recv_json(a);
	assert_string_equal(jstr(obj, "type"), "refreshed");
	exp = json_integer_value(json_object_get(obj, "exp"));
	json_decref(obj);
	if (exp < now + 590 || exp > now + 610)
		fail_msg("refreshed exp %lld, want about %lld", (long long)exp,
		         (long long)now + 600);

	/* b is closed when its token runs out; a, refreshed, stays. */
	assert_int_equal(ws_client_recv_close(b, 5000 + SWEEP_MS + RECV_MS),
	                 4001);
	expect_pong(a);
	send_event(f, "fm-refresh", 1, NULL);
	expect_event(a, "fm-refresh", 1, 1);
	free(old_a);
	free(old_b);
	free(fresh);
	f->passed++;
}

static void test_refresh_for_another_user_changes_nothing(void **state)
{
	struct fm *f = *state;
	static const char user[] = "fm-keep";
	int64_t t0 = wall_us();
	char *path = token_path(f->sc, user, 600);
	char *other = token(f->sc, "fm-x", 600);
	struct ws_client *c = open_path(f, f->sc, path);
	json_t *obj;

	free(path);
	free(expect_connected(c, user, 0));

	send_token_frame(c, "refresh", other);
	expect_error(c, "refresh_failed", "sub is another user");
	obj = refresh_when_allowed(c, "not-a-token");
	assert_string_equal(jstr(obj, "code"), "refresh_failed");
	assert_string_equal(jstr(obj, "message"), "malformed");
	json_decref(obj);
	/* auth on an authenticated connection: refused, it stays. */
	send_token_frame(c, "auth", other);
	expect_error(c, "already_authenticated", NULL);

	/* Still user's: its events, not fm-x's. */
	send_event(f, "fm-x", 1, NULL);
	send_event(f, user, 1, NULL);
	expect_event(c, user, 1, 1);
	expect_pong(c);
	expect_failure_row(f->sc, t0, "refresh: sub is another user");
	expect_failure_row(f->sc, t0, "refresh: malformed");
	free(other);
	f->passed++;
}

/* A refresh moves the session row to the new token's jti and exp (what
 * `wsgatectl sessions` shows), and the audit still verifies. */
static void test_refresh_updates_the_session_row(void **state)
{
	struct fm *f = *state;
	static const char user[] = "fm-row";
	char *path = token_path(f->sc, user, 600), *claims = NULL, *tok, *id;
	char *out = NULL, sql[160];
	int64_t exp = (int64_t)time(NULL) + 1200;
	struct ws_client *c = open_path(f, f->sc, path);
	json_t *obj;

	free(path);
	id = expect_connected(c, user, 0);
	assert_true(asprintf(&claims,
	                     "{\"sub\":\"%s\",\"iat\":%lld,\"exp\":%lld,"
	                     "\"jti\":\"fm-row-second\"}",
	                     user, (long long)exp - 1200, (long long)exp) > 0);
	tok = jwt_mint_raw("{\"alg\":\"HS256\",\"typ\":\"JWT\"}", claims,
	                   "HS256", f->sc->secret, f->sc->secret_len, NULL);
	assert_non_null(tok);
	send_token_frame(c, "refresh", tok);
	obj = recv_json(c);
	assert_string_equal(jstr(obj, "type"), "refreshed");
	assert_int_equal(json_integer_value(json_object_get(obj, "exp")), exp);
	json_decref(obj);

	snprintf(sql, sizeof(sql),
	         "SELECT count(*) FROM sessions WHERE conn_id = ?1 AND "
	         "token_jti = ?2 AND token_exp = %lld",
	         (long long)exp * 1000000);
	if (sidecar_db_wait(f->sc, sql, id, "fm-row-second", 1, POLL_MS) != 1)
		fail_msg("session %s does not name the refreshed token", id);
	assert_int_equal(
	    sidecar_ctl(f->sc, "--json sessions --user fm-row", &out), 0);
	if (!strstr(out, "\"token_jti\":\"fm-row-second\""))
		fail_msg("wsgatectl sessions: %s", out);
	free(out);
	if (sidecar_ctl(f->sc, "verify", &out) != 0)
		fail_msg("wsgatectl verify: %s", out);
	free(out);
	expect_pong(c);
	free(claims);
	free(tok);
	free(id);
	f->passed++;
}

/* One refresh a second per connection (sooner: "too soon", no row), and
 * the third refused one closes it with 4401: at most three auth_failures
 * rows per connection. */
static void test_refreshes_are_rate_limited_and_bounded(void **state)
{
	struct fm *f = *state;
	static const char user[] = "fm-spam";
	int64_t t0 = wall_us();
	char *path = token_path(f->sc, user, 600), *id, at[32];
	struct ws_client *c = open_path(f, f->sc, path);
	json_t *obj;

	free(path);
	id = expect_connected(c, user, 0);
	/* Back to back: the second is not judged. */
	send_token_frame(c, "refresh", "not-a-token");
	send_token_frame(c, "refresh", "not-a-token");
	expect_error(c, "refresh_failed", "malformed");
	expect_error(c, "refresh_failed", TOO_SOON);
	expect_pong(c);

	for (int i = 2; i <= 3; i++) {
		obj = refresh_when_allowed(c, "not-a-token");
		assert_string_equal(jstr(obj, "code"), "refresh_failed");
		assert_string_equal(jstr(obj, "message"), "malformed");
		json_decref(obj);
	}
	expect_close(c, 4401);
	if (sidecar_db_wait(f->sc,
	                    "SELECT count(*) FROM sessions WHERE conn_id = ?1"
	                    " AND close_code = 4401",
	                    id, NULL, 1, POLL_MS) != 1)
		fail_msg("session %s not recorded closed with 4401", id);
	/* Rows are committed in order: the close's after the refusals'. */
	snprintf(at, sizeof(at), "%lld", (long long)t0);
	assert_int_equal(sidecar_db_int(f->sc,
	                                "SELECT count(*) FROM auth_failures "
	                                "WHERE at >= CAST(?1 AS INTEGER) AND "
	                                "reason LIKE 'refresh: %'",
	                                at, NULL),
	                 3);
	free(id);
	f->passed++;
}

static void test_since_works_with_first_message_auth(void **state)
{
	struct fm *f = *state;
	static const char user[] = "fm-since";
	char *path = token_path(f->sc, user, 600);
	struct ws_client *c;
	int64_t deadline;

	/* Three events delivered to a first connection (so none is pending
	 * any more), which then leaves. */
	c = open_path(f, f->sc, path);
	free(path);
	free(expect_connected(c, user, 0));
	for (int i = 1; i <= 3; i++) {
		send_event(f, user, i, NULL);
		expect_event(c, user, i, i);
	}
	ws_client_set_forget(&f->clients, c);
	ws_client_close(c, RECV_MS);
	deadline = test_now_ms() + POLL_MS;
	while ((stats_connections(f) != 0 ||
	        sidecar_db_int(
	            f->sc,
	            "SELECT count(*) FROM events WHERE user_id = ?1 AND "
	            "pending = 1",
	            user, NULL) != 0) &&
	       test_now_ms() < deadline)
		test_pause_ms(20);

	/* since=1 in the URL, the token in the first frame: 2 and 3. */
	c = open_path(f, f->sc, "/ws?since=1");
	send_auth(c, f->sc, user);
	free(expect_connected(c, user, 3));
	expect_event(c, user, 2, 2);
	expect_event(c, user, 3, 3);
	send_event(f, user, 4, NULL);
	expect_event(c, user, 4, 4);
	f->passed++;
}

static void test_auth_over_the_per_user_limit_gets_4429(void **state)
{
	struct fm *f = *state;
	static const char user[] = "fm-limit";
	int64_t t0 = wall_us();
	char *path = token_path(f->sc, user, 600);
	struct ws_client *first = open_path(f, f->sc, path), *second;

	free(path);
	free(expect_connected(first, user, 0));

	second = open_path(f, f->sc, "/ws");
	send_auth(second, f->sc, user);
	expect_error(second, "too_many_connections", NULL);
	expect_close(second, 4429);
	expect_failure_row(f->sc, t0, "too many connections");
	expect_pong(first);
	f->passed++;
}

static void test_bad_since_is_refused_at_the_handshake(void **state)
{
	struct fm *f = *state;

	assert_int_equal(handshake_status(f->sc, "/ws?since=abc"), 400);
	/* A token that is there but empty is judged at the handshake. */
	assert_int_equal(handshake_status(f->sc, "/ws?access_token="), 401);
	f->passed++;
}

/* ------------------------------------------------------------------ */

static void test_unauthenticated_connections_are_bounded(void **state)
{
	struct fm *f = *state;
	static const char *const args[] = {"--auth-timeout",
	                                   "2s",
	                                   "--max-unauthenticated",
	                                   "3",
	                                   "--max-conns",
	                                   "4",
	                                   NULL};
	struct ws_client *waiting[3];
	char *path;
	int64_t deadline;
	int st;

	assert_int_equal(sidecar_start(&f->own_sc, args), 0);
	for (int i = 0; i < 3; i++)
		waiting[i] = open_path(f, f->own_sc, "/ws");
	/* A fourth without a token: 503; one with a token still gets in,
	 * and then --max-conns (which counts the waiting ones) is full. */
	assert_int_equal(handshake_status(f->own_sc, "/ws"), 503);
	path = token_path(f->own_sc, "fm-bound", 600);
	free(expect_connected(open_path(f, f->own_sc, path), "fm-bound", 0));
	free(path);
	path = token_path(f->own_sc, "fm-bound-2", 600);
	assert_int_equal(handshake_status(f->own_sc, path), 429);

	/* They are closed at their deadline, and there is room again. */
	for (int i = 0; i < 3; i++) {
		expect_error(waiting[i], "auth_timeout", NULL);
		expect_close(waiting[i], 4401);
	}
	deadline = test_now_ms() + POLL_MS;
	while ((st = handshake_status(f->own_sc, path)) != 101 &&
	       test_now_ms() < deadline) {
		assert_int_equal(st, 429);
		test_pause_ms(20);
	}
	assert_int_equal(st, 101);
	free(path);
	assert_int_equal(handshake_status(f->own_sc, "/ws"), 101);
}

static void test_auth_timeout_0_requires_a_token(void **state)
{
	struct fm *f = *state;
	static const char *const args[] = {"--auth-timeout", "0", NULL};

	assert_int_equal(sidecar_start(&f->own_sc, args), 0);
	assert_int_equal(handshake_status(f->own_sc, "/ws"), 401);
}

static void test_connection_awaiting_auth_gets_1001_at_shutdown(void **state)
{
	struct fm *f = *state;
	struct ws_client *c;

	assert_int_equal(sidecar_start(&f->own_sc, NULL), 0);
	c = open_path(f, f->own_sc, "/ws");
	assert_int_equal(sidecar_stop(f->own_sc, SIDECAR_STOP_TIMEOUT_MS), 0);
	expect_close(c, 1001);
}

/* ------------------------------------------------------------------ */

static int group_setup(void **state)
{
	static const char *const args[] = {"--auth-timeout", "2s",
	                                   "--max-conns-per-user", "1", NULL};
	struct fm *f = calloc(1, sizeof(*f));

	if (!f || sidecar_start(&f->sc, args) != 0) {
		free(f);
		return -1;
	}
	if (wsgate_client_open(&f->backend, f->sc->control_url, RECV_MS) !=
	    WSGATE_OK) {
		sidecar_free(f->sc, true);
		free(f);
		return -1;
	}
	*state = f;
	return 0;
}

static int group_teardown(void **state)
{
	struct fm *f = *state;
	if (!f)
		return 0; /* group_setup failed */
	bool failed = f->passed != N_TESTS;

	wsgate_client_close(f->backend);
	if (failed)
		sidecar_print_log(f->sc, 4096);
	sidecar_free(f->sc, failed);
	free(f);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_teardown(test_auth_frame_connects_as_its_user,
	                              test_teardown),
	    cmocka_unit_test_teardown(
	        test_bad_auth_frames_get_auth_failed_and_4401, test_teardown),
	    cmocka_unit_test_teardown(test_no_auth_frame_in_time_gets_4401,
	                              test_teardown),
	    cmocka_unit_test_teardown(
	        test_refresh_keeps_a_connection_past_its_first_exp,
	        test_teardown),
	    cmocka_unit_test_teardown(
	        test_refresh_for_another_user_changes_nothing, test_teardown),
	    cmocka_unit_test_teardown(test_refresh_updates_the_session_row,
	                              test_teardown),
	    cmocka_unit_test_teardown(
	        test_refreshes_are_rate_limited_and_bounded, test_teardown),
	    cmocka_unit_test_teardown(test_since_works_with_first_message_auth,
	                              test_teardown),
	    cmocka_unit_test_teardown(
	        test_auth_over_the_per_user_limit_gets_4429, test_teardown),
	    cmocka_unit_test_teardown(
	        test_bad_since_is_refused_at_the_handshake, test_teardown),
	    cmocka_unit_test_teardown(
	        test_unauthenticated_connections_are_bounded, test_teardown),
	    cmocka_unit_test_teardown(test_auth_timeout_0_requires_a_token,
	                              test_teardown),
	    cmocka_unit_test_teardown(
	        test_connection_awaiting_auth_gets_1001_at_shutdown,
	        test_teardown),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
