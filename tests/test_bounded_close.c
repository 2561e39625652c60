/*
 * test_bounded_close: a connection the sidecar closes is over at once for
 * everyone, even when its client never reads and so the close frame can
 * never be written: it is no longer listed (ListConnections), counted
 * (GetStats) or counted toward --max-conns-per-user, and its socket is
 * hung up a short time later (its session row is then closed with the
 * code).
 *
 * Each test starts its own sidecar with --max-conns-per-user 1: a new
 * connection of the same user is only accepted once the old one no longer
 * counts. The client that never reads has a 4 KiB receive buffer and is
 * sent large events until its socket takes no more (event_flood.c): its
 * close frame can then never be written.
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

#include <jansson.h>
#include <sqlite3.h>

#include "event_flood.h"
#include "sidecar_proc.h"
#include "test_clock.h"
#include "ws_client.h"
#include "wsgate.h"

#define RECV_MS     5000  /* one frame, one handshake, one call */
#define GONE_MS     3000  /* a closed connection is unlisted by then */
#define POLL_MS     10000 /* a polled condition */
#define EVENT_BYTES 32768
#define BATCH       16
#define MAX_EVENTS  1600 /* 50 MiB: far past any socket buffer */
#define RCVBUF      4096
#define QUEUE_LIMIT "16M" /* more than a stuck socket's backlog */

/* One per test. */
struct bc {
	struct sidecar *sc;
	wsgate_client *backend;
	struct ws_client *old, *fresh;
};

static int bc_teardown(void **state)
{
	struct bc *b = *state;

	if (!b)
		return 0;
	ws_client_abort(b->old);
	ws_client_abort(b->fresh);
	if (b->backend)
		wsgate_client_close(b->backend);
	if (b->sc)
		sidecar_free(b->sc, false);
	free(b);
	*state = NULL;
	return 0;
}

static void bc_start(void **state)
{
	static const char *const args[] = {"--queue-limit", QUEUE_LIMIT,
	                                   "--max-conns-per-user", "1", NULL};
	struct bc *b = calloc(1, sizeof(*b));

	assert_non_null(b);
	*state = b;
	assert_int_equal(sidecar_start(&b->sc, args), 0);
	assert_int_equal(
	    wsgate_client_open(&b->backend, b->sc->control_url, RECV_MS),
	    WSGATE_OK);
}

/* Opens a WebSocket of user and reads `connected`: its conn_id into id,
 * its seq returned. */
static long long open_user(struct bc *b, const char *user, int rcvbuf,
                           struct ws_client **out, char id[64])
{
	char *tok = sidecar_token(b->sc, user, 600), *path = NULL, *text;
	json_t *obj;
	long long seq;
	int st;

	assert_non_null(tok);
	assert_true(asprintf(&path, "/ws?access_token=%s", tok) > 0);
	free(tok);
	st = ws_client_connect_rcvbuf(out, b->sc->port, path, NULL, rcvbuf,
	                              RECV_MS);
	free(path);
	if (st != 101)
		fail_msg("%s: handshake %d (%s)", user, st, ws_client_error());
	text = ws_client_recv_text(*out, RECV_MS);
	if (!text)
		fail_msg("%s: no connected frame: %s", user, ws_client_error());
	obj = json_loads(text, 0, NULL);
	if (!obj ||
	    strcmp(json_string_value(json_object_get(obj, "type")),
	           "connected") != 0 ||
	    strcmp(json_string_value(json_object_get(obj, "user_id")), user) !=
	        0)
		fail_msg("%s: first frame %s", user, text);
	snprintf(id, 64, "%s",
	         json_string_value(json_object_get(obj, "conn_id")));
	seq = json_integer_value(json_object_get(obj, "seq"));
	json_decref(obj);
	free(text);
	return seq;
}

static size_t listed(struct bc *b, const char *user)
{
	struct wsgate_connection *list = NULL;
	size_t n = 0;

	assert_int_equal(wsgate_list_connections(b->backend, user, &list, &n),
	                 WSGATE_OK);
	free(list);
	return n;
}

/* Polls ListConnections until user has no connection listed; returns how
 * long that took (ms), failing the test past GONE_MS. */
static int64_t wait_unlisted(struct bc *b, const char *user)
{
	int64_t t0 = test_now_ms(), deadline = t0 + GONE_MS;
	struct wsgate_stats st;

	while (listed(b, user) != 0) {
		if (test_now_ms() >= deadline)
			fail_msg("%s: still listed %d ms after its close", user,
			         GONE_MS);
		test_pause_ms(20);
	}
	assert_int_equal(wsgate_get_stats(b->backend, &st), WSGATE_OK);
	assert_int_equal(st.connections, 0);
	return test_now_ms() - t0;
}

/* The integer a query about conn_id returns, -1 when none. */
static int64_t db_int(const struct sidecar *sc, const char *sql,
                      const char *conn_id)
{
	sqlite3 *db;
	sqlite3_stmt *st;
	int64_t v = -1;

	if (sqlite3_open_v2(sc->db_path, &db, SQLITE_OPEN_READONLY, NULL) !=
	    SQLITE_OK)
		fail_msg("open %s: %s", sc->db_path, sqlite3_errmsg(db));
	sqlite3_busy_timeout(db, 2000);
	if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
		fail_msg("%s: %s", sql, sqlite3_errmsg(db));
	sqlite3_bind_text(st, 1, conn_id, -1, SQLITE_STATIC);
	if (sqlite3_step(st) == SQLITE_ROW &&
	    sqlite3_column_type(st, 0) != SQLITE_NULL)
		v = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	sqlite3_close(db);
	return v;
}

/* Polls until the session row of conn_id is closed; returns its code. */
static int64_t wait_session_closed(const struct sidecar *sc,
                                   const char *conn_id)
{
	static const char sql[] =
	    "SELECT close_code FROM sessions WHERE conn_id = ?1";
	int64_t deadline = test_now_ms() + POLL_MS, code;

	while ((code = db_int(sc, sql, conn_id)) < 0 &&
	       test_now_ms() < deadline)
		test_pause_ms(20);
	if (code < 0)
		fail_msg("session %s still open %d ms later (its socket was "
		         "not hung up)",
		         conn_id, POLL_MS);
	return code;
}

/* The old connection's user connects again (--max-conns-per-user 1). */
static void expect_room_for_user(struct bc *b, const char *user,
                                 long long want_seq)
{
	char id[64];

	assert_int_equal(open_user(b, user, 0, &b->fresh, id), want_seq);
}

static void test_never_reading_client_is_gone_at_once_on_4008(void **state)
{
	static const char user[] = "bc-slow";
	struct bc *b;
	char id[64], err[300];
	uint32_t conns = 1;
	int sent = 0, rc;
	int64_t ms, t0;

	bc_start(state);
	b = *state;
	open_user(b, user, RCVBUF, &b->old, id);
	if (event_flood_until_stuck(b->backend, user, BATCH, EVENT_BYTES,
	                            MAX_EVENTS, &sent, err, sizeof(err)))
		fail_msg("%s", err);
	/* Then until an event finds no connection: the queue passed its
	 * limit and the connection was closed. */
	while (conns > 0) {
		if (sent >= MAX_EVENTS)
			fail_msg("%d events and the connection that never "
			         "reads is still open",
			         sent);
		if (event_flood_batch(b->backend, user, sent + 1, BATCH,
		                      EVENT_BYTES, &conns, err, sizeof(err)))
			fail_msg("flood: %s", err);
		sent += BATCH;
	}

	t0 = test_now_ms();
	ms = wait_unlisted(b, user);
	print_message("    unlisted %lld ms after the event that found no "
	              "connection (%d events sent)\n",
	              (long long)ms, sent);
	expect_room_for_user(b, user, sent);
	assert_int_equal(wait_session_closed(b->sc, id), 4008);
	print_message("    session closed %lld ms after the close\n",
	              (long long)(test_now_ms() - t0));
	assert_true(db_int(b->sc,
	                   "SELECT count(*) FROM deliveries WHERE conn_id = ?1 "
	                   "AND status = 'dropped'",
	                   id) > 0);
	/* Its socket ends: the close frame if it got through in time, or
	 * just the end of the connection. */
	rc = ws_client_recv_close(b->old, POLL_MS);
	if (rc != 4008 && rc != WS_CLIENT_EOF && rc != WS_CLIENT_ERROR)
		fail_msg("old connection: %d (%s)", rc, ws_client_error());
}

static void test_kicked_client_that_never_reads_is_hung_up(void **state)
{
	static const char user[] = "bc-kicked";
	struct bc *b;
	char id[64], err[300];
	uint32_t kicked = 0;
	int sent = 0;
	int64_t t0;

	bc_start(state);
	b = *state;
	open_user(b, user, RCVBUF, &b->old, id);
	if (event_flood_until_stuck(b->backend, user, BATCH, EVENT_BYTES,
	                            MAX_EVENTS, &sent, err, sizeof(err)))
		fail_msg("%s", err);

	t0 = test_now_ms();
	assert_int_equal(
	    wsgate_disconnect(b->backend, user, NULL, "test kick", &kicked),
	    WSGATE_OK);
	assert_int_equal(kicked, 1);
	wait_unlisted(b, user);
	expect_room_for_user(b, user, sent);
	assert_int_equal(wait_session_closed(b->sc, id), 4003);
	print_message("    session closed %lld ms after the kick (%d events "
	              "sent)\n",
	              (long long)(test_now_ms() - t0), sent);
}

/* A drain cannot wait for it either: it is hung up in time for its
 * session row to be closed, and the sidecar exits cleanly. */
static void test_shutdown_hangs_up_a_client_that_never_reads(void **state)
{
	static const char user[] = "bc-stopped";
	struct bc *b;
	char id[64], err[300];
	int sent = 0;

	bc_start(state);
	b = *state;
	open_user(b, user, RCVBUF, &b->old, id);
	if (event_flood_until_stuck(b->backend, user, BATCH, EVENT_BYTES,
	                            MAX_EVENTS, &sent, err, sizeof(err)))
		fail_msg("%s", err);
	assert_int_equal(sidecar_stop(b->sc, SIDECAR_STOP_TIMEOUT_MS), 0);
	assert_int_equal(db_int(b->sc,
	                        "SELECT close_code FROM sessions WHERE "
	                        "conn_id = ?1",
	                        id),
	                 1001);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_teardown(
	        test_never_reading_client_is_gone_at_once_on_4008, bc_teardown),
	    cmocka_unit_test_teardown(
	        test_kicked_client_that_never_reads_is_hung_up, bc_teardown),
	    cmocka_unit_test_teardown(
	        test_shutdown_hangs_up_a_client_that_never_reads, bc_teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
