/*
 * test_audit: the forensic trail of a real sidecar, checked from the
 * database (read-only, as wsgatectl reads it) and through wsgatectl itself.
 *
 * - After a golden-path style run: verify passes, audit --user lists exactly
 *   the deliveries to that user's connections, trace tells one event's
 *   story, every session has its row.
 * - Every kind of refused handshake leaves an auth_failures row.
 * - A SIGKILL during a stream: the dead process's sessions are closed with
 *   a reason at restart, every frame a client received has a committed
 *   queued row naming its connection, queued rows without an outcome read
 *   as "outcome unknown: sidecar stopped", and the chain still verifies.
 * - The ends of the trail (docs/DESIGN.md, "Audit chain format"): edits
 *   made with sqlite3 alone, without the key, to a database the sidecar
 *   wrote -- the start cut and the anchor moved, the tail cut with its
 *   heads, an event's payload changed, a chain head forged or dropped --
 *   make verify exit 1 (the tail: against the running sidecar's head or a
 *   head kept elsewhere), and the untouched database verifies across a
 *   prune and restarts.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <openssl/sha.h>
#include <sqlite3.h>

#include "jwt_mint.h"
#include "sidecar_proc.h"
#include "test_clock.h"
#include "ws_client.h"
#include "wsgate.h"

#define RECV_MS 5000
#define CALL_MS 5000

/* --- helpers --- */

/* Runs sql on s's database with a writable connection of the test's own:
 * what anyone with sqlite3 and no key can do. */
static void db_edit(const struct sidecar *s, const char *sql)
{
	sqlite3 *db;
	char *err = NULL;
	assert_int_equal(sqlite3_open(s->db_path, &db), SQLITE_OK);
	sqlite3_busy_timeout(db, 5000);
	if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK)
		fail_msg("%s: %s", sql, err);
	sqlite3_close(db);
}

static sqlite3 *db_open(const struct sidecar *s)
{
	sqlite3 *db;
	assert_int_equal(
	    sqlite3_open_v2(s->db_path, &db, SQLITE_OPEN_READONLY, NULL),
	    SQLITE_OK);
	return db;
}

/* The single integer a query returns (bound with up to 3 text args). */
/* Checks payload_sha256 against the payload of each of user's events;
 * returns how many were checked. */
static int payload_digests_checked(sqlite3 *db, const char *user)
{
	sqlite3_stmt *st;
	assert_int_equal(sqlite3_prepare_v2(db,
	                                    "SELECT payload, payload_sha256"
	                                    " FROM events WHERE user_id=?",
	                                    -1, &st, NULL),
	                 SQLITE_OK);
	sqlite3_bind_text(st, 1, user, -1, SQLITE_STATIC);
	int n = 0;
	while (sqlite3_step(st) == SQLITE_ROW) {
		unsigned char want[SHA256_DIGEST_LENGTH];
		SHA256(sqlite3_column_blob(st, 0),
		       (size_t)sqlite3_column_bytes(st, 0), want);
		assert_int_equal(sqlite3_column_bytes(st, 1), sizeof(want));
		assert_memory_equal(sqlite3_column_blob(st, 1), want,
		                    sizeof(want));
		n++;
	}
	sqlite3_finalize(st);
	return n;
}

static int64_t db_int(sqlite3 *db, const char *sql, const char *a,
                      const char *b, const char *c)
{
	sqlite3_stmt *st;
	if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
		fail_msg("%s: %s", sql, sqlite3_errmsg(db));
	const char *args[3] = {a, b, c};
	for (int i = 0; i < 3; i++)
		if (args[i])
			sqlite3_bind_text(st, i + 1, args[i], -1,
			                  SQLITE_STATIC);
	int64_t v = -1;
	if (sqlite3_step(st) == SQLITE_ROW)
		v = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	return v;
}

static struct ws_client *connect_path(const struct sidecar *s, const char *path,
                                      const char *const *hdr, int *status)
{
	struct ws_client *c = NULL;
	*status = ws_client_connect(&c, s->port, path, hdr, RECV_MS);
	return c;
}

/* Connects user and reads `connected`; conn_id gets its id. */
static struct ws_client *connect_user(const struct sidecar *s, const char *user,
                                      const char *query, char conn_id[64])
{
	char *tok = sidecar_token(s, user, 600);
	char path[2048];
	int status;
	snprintf(path, sizeof(path), "/ws?access_token=%s%s", tok,
	         query ? query : "");
	free(tok);
	struct ws_client *c = connect_path(s, path, NULL, &status);
	if (status != 101)
		fail_msg("connect %s: %d", user, status);
	char *text = ws_client_recv_text(c, RECV_MS);
	assert_non_null(text);
	json_t *obj = json_loads(text, 0, NULL);
	assert_string_equal(json_string_value(json_object_get(obj, "type")),
	                    "connected");
	snprintf(conn_id, 64, "%s",
	         json_string_value(json_object_get(obj, "conn_id")));
	json_decref(obj);
	free(text);
	return c;
}

/* Reads one event frame; returns its seq, and its event_id in id. */
static int64_t recv_event(struct ws_client *c, char id[160], int timeout_ms)
{
	char *text = ws_client_recv_text(c, timeout_ms);
	if (!text)
		return -1;
	json_t *obj = json_loads(text, 0, NULL);
	free(text);
	if (!obj)
		return -1;
	int64_t seq = json_integer_value(json_object_get(obj, "seq"));
	const char *eid = json_string_value(json_object_get(obj, "event_id"));
	snprintf(id, 160, "%s", eid ? eid : "");
	json_decref(obj);
	return seq;
}

static void send_one(wsgate_client *b, const char *user, const char *id,
                     enum wsgate_event_type type, const char *run)
{
	struct wsgate_event ev = {.event_id = id,
	                          .user_id = user,
	                          .run_id = run,
	                          .thread_id = "t1",
	                          .type = type,
	                          .payload_json = "{\"ok\":true}",
	                          .payload_len = 11};
	struct wsgate_event_result res;
	if (wsgate_send_event(b, &ev, &res) != WSGATE_OK)
		fail_msg("send %s: %s", id, wsgate_client_error(b));
}

/* --- tests --- */

static void test_golden_run_verifies_and_is_attributed(void **state)
{
	(void)state;
	struct sidecar *s;
	assert_int_equal(sidecar_start(&s, NULL), 0);
	wsgate_client *b;
	assert_int_equal(wsgate_client_open(&b, s->control_url, CALL_MS),
	                 WSGATE_OK);
	const char *users[2] = {"audit-a", "audit-b"};
	char ids[2][2][64];
	struct ws_client *conns[2][2];
	for (int u = 0; u < 2; u++)
		for (int k = 0; k < 2; k++)
			conns[u][k] =
			    connect_user(s, users[u], NULL, ids[u][k]);
	/* Five critical events per user, interleaved across users. */
	for (int t = 1; t <= 5; t++)
		for (int u = 0; u < 2; u++) {
			char id[64];
			snprintf(id, sizeof(id), "%s-e%d", users[u], t);
			send_one(b, users[u], id, (enum wsgate_event_type)t,
			         "r1");
		}
	for (int u = 0; u < 2; u++)
		for (int k = 0; k < 2; k++)
			for (int t = 1; t <= 5; t++) {
				char id[160];
				assert_int_equal(
				    recv_event(conns[u][k], id, RECV_MS), t);
				if (t == 5) {
					assert_int_equal(
					    ws_client_send_text(
					        conns[u][k],
					        "{\"type\":\"ack\","
					        "\"seq\":5}"),
					    WS_CLIENT_OK);
				}
			}
	/* A ping round trip after the ack: the ack has been processed. */
	for (int u = 0; u < 2; u++)
		for (int k = 0; k < 2; k++) {
			ws_client_send_text(conns[u][k], "{\"type\":\"ping\"}");
			char *pong = ws_client_recv_text(conns[u][k], RECV_MS);
			assert_non_null(pong);
			assert_non_null(strstr(pong, "pong"));
			free(pong);
			ws_client_close(conns[u][k], RECV_MS);
		}
	wsgate_client_close(b);
	assert_int_equal(sidecar_stop(s, SIDECAR_STOP_TIMEOUT_MS), 0);

	char *out;
	assert_int_equal(sidecar_ctl(s, "verify", &out), 0);
	free(out);

	/* audit --user lists exactly that user's deliveries: 5 events x 2
	 * connections x (queued, written, acked). */
	assert_int_equal(sidecar_ctl(s, "--json audit --user audit-a", &out),
	                 0);
	int rows = 0;
	char *copy = strdup(out);
	for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n")) {
		json_t *row = json_loads(line, 0, NULL);
		if (!row)
			continue;
		rows++;
		assert_string_equal(
		    json_string_value(json_object_get(row, "user_id")),
		    "audit-a");
		assert_string_equal(
		    json_string_value(json_object_get(row, "conn_user_id")),
		    "audit-a");
		const char *cid =
		    json_string_value(json_object_get(row, "conn_id"));
		assert_true(strcmp(cid, ids[0][0]) == 0 ||
		            strcmp(cid, ids[0][1]) == 0);
		json_decref(row);
	}
	free(out);
	if (rows != 5 * 2 * 3)
		fail_msg("audit --user audit-a: %d rows, want 30:\n%s", rows,
		         copy);
	free(copy);

	/* trace: the event, both connections, each outcome. */
	assert_int_equal(sidecar_ctl(s, "trace audit-b-e3", &out), 0);
	assert_non_null(strstr(out, ids[1][0]));
	assert_non_null(strstr(out, ids[1][1]));
	assert_non_null(strstr(out, "queued"));
	assert_non_null(strstr(out, "written"));
	assert_null(strstr(out, ids[0][0]));
	free(out);

	sqlite3 *db = db_open(s);
	assert_int_equal(db_int(db,
	                        "SELECT count(*) FROM sessions WHERE user_id=?"
	                        " AND closed_at IS NOT NULL",
	                        "audit-a", NULL, NULL),
	                 2);
	assert_int_equal(db_int(db,
	                        "SELECT count(*) FROM deliveries"
	                        " WHERE user_id <> conn_user_id",
	                        NULL, NULL, NULL),
	                 0);
	assert_int_equal(db_int(db,
	                        "SELECT count(*) FROM events WHERE user_id=?"
	                        " AND length(payload_sha256)=32",
	                        "audit-b", NULL, NULL),
	                 5);
	assert_int_equal(payload_digests_checked(db, "audit-b"), 5);
	sqlite3_close(db);
	sidecar_free(s, false);
}

static void test_each_refused_handshake_leaves_a_row(void **state)
{
	(void)state;
	struct sidecar *s;
	const char *args[] = {"--max-conns-per-user", "1", "--allowed-origin",
	                      "https://app.example", NULL};
	assert_int_equal(sidecar_start(&s, args), 0);
	int64_t now = time(NULL);
	char path[4096];
	int status;
	const char *origin_ok[] = {"Origin: https://app.example", NULL};
	const char *origin_bad[] = {"Origin: https://evil.example", NULL};

	struct {
		const char *claims;
		const char *secret;
		const char *alg;
		const char *reason;
	} cases[] = {
	    {"{\"sub\":\"x\",\"exp\":%lld}", "wrong-secret-wrong-secret-wrong",
	     "HS256", "bad_signature"},
	    {"{\"sub\":\"x\",\"exp\":%lld}", NULL, "none", "wrong_alg"},
	    {"{\"exp\":%lld}", NULL, "HS256", "missing_sub"},
	    {"{\"sub\":\"x\",\"exp\":%lld}", NULL, "HS256", "expired"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char claims[128];
		long long exp = strcmp(cases[i].reason, "expired") == 0
		                    ? now - 3600
		                    : now + 600;
		snprintf(claims, sizeof(claims), cases[i].claims, exp);
		const char *secret =
		    cases[i].secret ? cases[i].secret : s->secret;
		char header[64];
		snprintf(header, sizeof(header),
		         "{\"alg\":\"%s\",\"typ\":\"JWT\"}", cases[i].alg);
		char *tok = jwt_mint_raw(header, claims, cases[i].alg, secret,
		                         strlen(secret), NULL);
		assert_non_null(tok);
		snprintf(path, sizeof(path), "/ws?access_token=%s", tok);
		free(tok);
		assert_null(connect_path(s, path, origin_ok, &status));
		assert_int_equal(status, 401);
	}
	/* An empty token (no token at all would be first-message auth). */
	assert_null(connect_path(s, "/ws?access_token=", origin_ok, &status));
	assert_int_equal(status, 401);

	char *tok = sidecar_token(s, "limited", 600);
	snprintf(path, sizeof(path), "/ws?access_token=%s", tok);
	free(tok);
	assert_null(connect_path(s, path, origin_bad, &status));
	assert_int_equal(status, 403);
	struct ws_client *first = connect_path(s, path, origin_ok, &status);
	assert_int_equal(status, 101);
	assert_null(connect_path(s, path, origin_ok, &status));
	assert_int_equal(status, 429);
	ws_client_close(first, RECV_MS);
	assert_int_equal(sidecar_stop(s, SIDECAR_STOP_TIMEOUT_MS), 0);

	sqlite3 *db = db_open(s);
	const char *reasons[] = {"bad_signature",       "wrong_alg",
	                         "missing_sub",         "expired",
	                         "missing_token",       "origin not allowed",
	                         "too many connections"};
	for (size_t i = 0; i < sizeof(reasons) / sizeof(reasons[0]); i++)
		if (db_int(db,
		           "SELECT count(*) FROM auth_failures WHERE reason=?",
		           reasons[i], NULL, NULL) != 1)
			fail_msg("no auth_failures row for %s", reasons[i]);
	assert_int_equal(
	    db_int(db, "SELECT count(*) FROM sessions", NULL, NULL, NULL), 1);
	sqlite3_close(db);
	sidecar_free(s, false);
}

#define CRASH_USERS  3
#define CRASH_EVENTS 600

struct seen {
	char conn_id[64];
	int64_t seq;
	char event_id[160];
};

static void test_crash_leaves_a_consistent_record(void **state)
{
	(void)state;
	struct sidecar *s;
	assert_int_equal(sidecar_start(&s, NULL), 0);
	wsgate_client *b;
	assert_int_equal(wsgate_client_open(&b, s->control_url, 2000),
	                 WSGATE_OK);
	struct ws_client *c[CRASH_USERS];
	char conn_ids[CRASH_USERS][64];
	char user[CRASH_USERS][32];
	for (int u = 0; u < CRASH_USERS; u++) {
		snprintf(user[u], sizeof(user[u]), "crash-%d", u);
		c[u] = connect_user(s, user[u], NULL, conn_ids[u]);
	}
	struct seen *seen = calloc(CRASH_EVENTS, sizeof(*seen));
	size_t n_seen = 0;
	/* Stream; kill the sidecar half way, while frames are in flight. */
	for (int i = 0; i < CRASH_EVENTS / 2; i++) {
		char id[64];
		snprintf(id, sizeof(id), "crash-e%d", i);
		send_one(b, user[i % CRASH_USERS], id, WSGATE_AGENT_THINKING,
		         "r1");
	}
	assert_int_equal(sidecar_kill9(s), 128 + SIGKILL);
	/* Everything the clients got before the kill. */
	for (int u = 0; u < CRASH_USERS; u++) {
		int64_t seq;
		char id[160];
		while ((seq = recv_event(c[u], id, 200)) > 0) {
			memcpy(seen[n_seen].conn_id, conn_ids[u], 64);
			seen[n_seen].seq = seq;
			snprintf(seen[n_seen].event_id, 160, "%s", id);
			n_seen++;
		}
		ws_client_abort(c[u]);
	}
	assert_true(n_seen > 0);
	assert_int_equal(sidecar_restart(s), 0);
	wsgate_client_close(b);
	assert_int_equal(sidecar_stop(s, SIDECAR_STOP_TIMEOUT_MS), 0);

	sqlite3 *db = db_open(s);
	/* The dead process's sessions were closed at restart, saying so. */
	for (int u = 0; u < CRASH_USERS; u++) {
		assert_int_equal(db_int(db,
		                        "SELECT count(*) FROM sessions WHERE"
		                        " conn_id=? AND closed_at IS NOT NULL"
		                        " AND close_reason='sidecar stopped'",
		                        conn_ids[u], NULL, NULL),
		                 1);
	}
	/* Write-ahead, from the clients' side: each frame they received has
	 * its committed queued row naming their connection. */
	for (size_t i = 0; i < n_seen; i++) {
		char seq[24];
		snprintf(seq, sizeof(seq), "%lld", (long long)seen[i].seq);
		if (db_int(db,
		           "SELECT count(*) FROM deliveries WHERE conn_id=?"
		           " AND seq=CAST(? AS INTEGER) AND event_id=?"
		           " AND status='queued'",
		           seen[i].conn_id, seq, seen[i].event_id) != 1)
			fail_msg("frame %s seq %s on %s has no queued row",
			         seen[i].event_id, seq, seen[i].conn_id);
	}
	int64_t unknown = db_int(
	    db,
	    "SELECT count(*) FROM deliveries q WHERE status='queued' AND"
	    " NOT EXISTS (SELECT 1 FROM deliveries o WHERE"
	    " o.conn_id=q.conn_id AND o.seq=q.seq AND o.user_id=q.user_id"
	    " AND o.status IN ('written','dropped'))",
	    NULL, NULL, NULL);
	sqlite3_close(db);
	print_message("crash: %zu frames received before SIGKILL, %lld queued"
	              " rows without outcome\n",
	              n_seen, (long long)unknown);

	char *out;
	assert_int_equal(sidecar_ctl(s, "verify", &out), 0);
	free(out);
	if (unknown > 0) {
		assert_int_equal(
		    sidecar_ctl(s, "audit --user crash-0 --limit 100000",
		                &out) +
		        sidecar_ctl(s,
		                    "audit --user crash-1 --limit "
		                    "100000",
		                    NULL),
		    0);
		char *all;
		sidecar_ctl(s, "audit --limit 100000", &all);
		assert_non_null(
		    strstr(all, "outcome unknown: sidecar stopped"));
		free(all);
		free(out);
	}
	free(seen);
	sidecar_free(s, false);
}

/* --- the ends of the trail --- */

#define ENDS_EVENTS 4

/* Runs `wsgatectl ARGS` and checks its exit status; prints its output
 * when the status is not the one wanted. */
static void expect_ctl(const struct sidecar *s, const char *args, int want,
                       const char *needle)
{
	char *out;
	int rc = sidecar_ctl(s, args, &out);
	if (rc != want)
		fail_msg("wsgatectl %s: exit %d, want %d:\n%s", args, rc, want,
		         out);
	if (needle && !strstr(out, needle))
		fail_msg("wsgatectl %s: no \"%s\" in:\n%s", args, needle, out);
	free(out);
}

/* Waits until the sidecar has committed everything submitted so far. */
static void wait_committed(wsgate_client *b)
{
	int64_t deadline = test_now_ms() + 10000;
	struct wsgate_stats st;
	for (;;) {
		assert_int_equal(wsgate_get_stats(b, &st), WSGATE_OK);
		if (st.audit_backlog == 0)
			return;
		if (test_now_ms() > deadline)
			fail_msg("audit backlog still %llu",
			         (unsigned long long)st.audit_backlog);
		test_pause_ms(20);
	}
}

/* One connection of user gets n events (ids PREFIX-1..n), acks the last
 * and closes: queued, written and acked rows; with replay, a second one
 * then reads them from the log. */
static void traffic(const struct sidecar *s, wsgate_client *b, const char *user,
                    const char *prefix, int n, bool replay)
{
	char conn_id[64];
	struct ws_client *c = connect_user(s, user, NULL, conn_id);
	int64_t last = 0;
	for (int i = 1; i <= n; i++) {
		char id[64], got[160];
		snprintf(id, sizeof(id), "%s-%d", prefix, i);
		send_one(b, user, id, WSGATE_AGENT_THINKING, "r1");
		last = recv_event(c, got, RECV_MS);
		assert_true(last > 0);
		assert_string_equal(got, id);
	}
	char ack[64];
	snprintf(ack, sizeof(ack), "{\"type\":\"ack\",\"seq\":%lld}",
	         (long long)last);
	assert_int_equal(ws_client_send_text(c, ack), WS_CLIENT_OK);
	ws_client_send_text(c, "{\"type\":\"ping\"}");
	char *pong = ws_client_recv_text(c, RECV_MS);
	assert_non_null(pong);
	assert_non_null(strstr(pong, "pong"));
	free(pong);
	ws_client_close(c, RECV_MS);
	if (replay) {
		c = connect_user(s, user, "&since=0", conn_id);
		for (int i = 1; i <= n; i++) {
			char got[160];
			assert_true(recv_event(c, got, RECV_MS) > 0);
		}
		ws_client_close(c, RECV_MS);
	}
	wait_committed(b);
}

/* The sidecar's current chain head as `wsgatectl status` prints it for
 * `verify --head`: "ID:HEX". */
static void live_head(const struct sidecar *s, char head[128])
{
	char *out;
	assert_int_equal(sidecar_ctl(s, "--json status", &out), 0);
	json_t *o = json_loads(out, 0, NULL);
	const char *h = json_string_value(json_object_get(o, "audit_head"));
	if (!h)
		fail_msg("no audit_head in: %s", out);
	snprintf(head, 128, "%s", h);
	json_decref(o);
	free(out);
}

/* Deletes the rows after id and the heads naming them: the tail cut so
 * that the database alone looks whole. */
static void cut_tail(const struct sidecar *s, int64_t id)
{
	char sql[256];
	snprintf(sql, sizeof(sql),
	         "DELETE FROM deliveries WHERE id > %lld;"
	         "DELETE FROM chain_heads WHERE id > %lld;",
	         (long long)id, (long long)id);
	db_edit(s, sql);
}

/* A run with a restart between two batches of traffic, so that the
 * database holds several chain heads; the sidecar is stopped after it. */
static struct sidecar *ends_run(void)
{
	struct sidecar *s;
	wsgate_client *b;
	assert_int_equal(sidecar_start(&s, NULL), 0);
	assert_int_equal(wsgate_client_open(&b, s->control_url, CALL_MS),
	                 WSGATE_OK);
	traffic(s, b, "ends-a", "ends-e", ENDS_EVENTS, true);
	wsgate_client_close(b);
	assert_int_equal(sidecar_stop(s, SIDECAR_STOP_TIMEOUT_MS), 0);
	assert_int_equal(sidecar_restart(s), 0);
	assert_int_equal(wsgate_client_open(&b, s->control_url, CALL_MS),
	                 WSGATE_OK);
	traffic(s, b, "ends-a", "ends-f", ENDS_EVENTS, true);
	wsgate_client_close(b);
	assert_int_equal(sidecar_stop(s, SIDECAR_STOP_TIMEOUT_MS), 0);
	expect_ctl(s, "verify", 0, NULL);
	return s;
}

/* Cutting the oldest rows and moving the anchor over them, as pruning
 * would, without the key. */
static void test_verify_catches_a_cut_start(void **state)
{
	(void)state;
	struct sidecar *s = ends_run();
	sqlite3 *db = db_open(s);
	int64_t k =
	    db_int(db, "SELECT max(id) / 2 FROM deliveries", NULL, NULL, NULL);
	sqlite3_close(db);
	assert_true(k > 2);
	char sql[1024];
	/* What pruning at row k once wrote: an anchor in meta. */
	snprintf(
	    sql, sizeof(sql),
	    "INSERT OR REPLACE INTO meta(key, value)"
	    " VALUES('anchor_id', %lld);"
	    "INSERT OR REPLACE INTO meta(key, value)"
	    " SELECT 'anchor_chain', chain FROM deliveries WHERE id = %lld;"
	    "DELETE FROM deliveries WHERE id <= %lld;"
	    "DELETE FROM chain_heads WHERE id < %lld;",
	    (long long)k, (long long)k, (long long)k, (long long)k);
	db_edit(s, sql);
	expect_ctl(s, "verify", 1, "(the start of the log was cut)");
	/* And the first head left made to look like a prune record. */
	db_edit(s, "UPDATE chain_heads SET reason = 'pruned' WHERE rowid ="
	           " (SELECT min(rowid) FROM chain_heads)");
	expect_ctl(s, "verify", 1, "its mac does not match");
	sidecar_free(s, false);
}

/* Rows cut off the end together with the heads naming them, while the
 * sidecar runs: only its own head can tell; its shutdown head then tells
 * the database too. */
static void test_verify_against_the_live_head_catches_a_cut_tail(void **state)
{
	(void)state;
	struct sidecar *s;
	wsgate_client *b;
	assert_int_equal(sidecar_start(&s, NULL), 0);
	assert_int_equal(wsgate_client_open(&b, s->control_url, CALL_MS),
	                 WSGATE_OK);
	traffic(s, b, "tail-a", "tail-e", ENDS_EVENTS, true);
	expect_ctl(s, "verify --head live", 0, NULL);
	sqlite3 *db = db_open(s);
	int64_t k =
	    db_int(db, "SELECT max(id) / 2 FROM deliveries", NULL, NULL, NULL);
	sqlite3_close(db);
	cut_tail(s, k);
	expect_ctl(s, "verify --head live", 1, "cut off the end");
	wsgate_client_close(b);
	assert_int_equal(sidecar_stop(s, SIDECAR_STOP_TIMEOUT_MS), 0);
	expect_ctl(s, "verify", 1, "cut off the end");
	sidecar_free(s, false);
}

/* The same cut after the sidecar stopped: the database alone cannot tell
 * (it says so: "database only"), a head kept elsewhere can. */
static void test_verify_against_a_kept_head_catches_a_cut_tail(void **state)
{
	(void)state;
	struct sidecar *s;
	wsgate_client *b;
	char head[128], args[256];
	assert_int_equal(sidecar_start(&s, NULL), 0);
	assert_int_equal(wsgate_client_open(&b, s->control_url, CALL_MS),
	                 WSGATE_OK);
	traffic(s, b, "kept-a", "kept-e", ENDS_EVENTS, true);
	live_head(s, head);
	wsgate_client_close(b);
	assert_int_equal(sidecar_stop(s, SIDECAR_STOP_TIMEOUT_MS), 0);
	snprintf(args, sizeof(args), "verify --head %s", head);
	expect_ctl(s, args, 0, NULL);

	int64_t id = strtoll(head, NULL, 10);
	assert_true(id > 4);
	cut_tail(s, id - 3);
	expect_ctl(s, "verify", 0, "database only");
	expect_ctl(s, args, 1, "cut off the end");
	sidecar_free(s, false);
}

/* An event's payload changed after it was delivered: alone, and with its
 * payload_sha256 recomputed to match. */
static void test_verify_catches_an_altered_payload(void **state)
{
	(void)state;
	struct sidecar *s = ends_run();
	db_edit(s, "UPDATE events SET payload = '{\"ok\":false}'"
	           " WHERE event_id = 'ends-e-2'");
	expect_ctl(s, "verify", 1, "does not hash to its payload_sha256");

	static const char forged[] = "{\"ok\":\"forged\"}";
	unsigned char sha[SHA256_DIGEST_LENGTH];
	char hex[2 * SHA256_DIGEST_LENGTH + 1], sql[512];
	SHA256((const unsigned char *)forged, strlen(forged), sha);
	for (int i = 0; i < SHA256_DIGEST_LENGTH; i++)
		snprintf(hex + 2 * i, 3, "%02x", sha[i]);
	snprintf(sql, sizeof(sql),
	         "UPDATE events SET payload = '%s', payload_sha256 = x'%s'"
	         " WHERE event_id IN ('ends-e-2', 'ends-f-3')",
	         forged, hex);
	db_edit(s, sql);
	expect_ctl(s, "verify", 1, "has another payload_sha256 than the row");
	sidecar_free(s, false);
}

/* A chain head altered, then one dropped from the middle. */
static void test_verify_catches_forged_and_dropped_heads(void **state)
{
	(void)state;
	struct sidecar *s = ends_run();
	static const char second[] =
	    "(SELECT rowid FROM chain_heads ORDER BY rowid LIMIT 1 OFFSET 1)";
	sqlite3 *db = db_open(s);
	assert_true(db_int(db, "SELECT count(*) FROM chain_heads", NULL, NULL,
	                   NULL) >= 2);
	sqlite3_close(db);
	char sql[256];
	snprintf(sql, sizeof(sql),
	         "UPDATE chain_heads SET at = at - 1 WHERE rowid = %s", second);
	db_edit(s, sql);
	expect_ctl(s, "verify", 1, "its mac does not match");
	snprintf(sql, sizeof(sql),
	         "UPDATE chain_heads SET at = at + 1 WHERE rowid = %s", second);
	db_edit(s, sql);
	expect_ctl(s, "verify", 0, NULL);
	snprintf(sql, sizeof(sql), "DELETE FROM chain_heads WHERE rowid = %s",
	         second);
	db_edit(s, sql);
	expect_ctl(s, "verify", 1, "missing, between heads");
	sidecar_free(s, false);
}

/* Untouched, the trail verifies across a prune (--retention 1s) and
 * restarts, offline and against the live head. */
static void test_untouched_trail_verifies_across_prune_and_restart(void **state)
{
	(void)state;
	struct sidecar *s;
	wsgate_client *b;
	const char *args[] = {"--retention", "1s", NULL};
	assert_int_equal(sidecar_start(&s, args), 0);
	assert_int_equal(wsgate_client_open(&b, s->control_url, CALL_MS),
	                 WSGATE_OK);
	traffic(s, b, "prune-a", "prune-e", ENDS_EVENTS, false);
	wsgate_client_close(b);
	assert_int_equal(sidecar_stop(s, SIDECAR_STOP_TIMEOUT_MS), 0);
	expect_ctl(s, "verify", 0, NULL);
	assert_int_equal(sidecar_restart(s), 0);
	/* Row 1 goes once a head older than a second exists. */
	int64_t deadline = test_now_ms() + 20000;
	for (;;) {
		sqlite3 *db = db_open(s);
		int64_t left = db_int(db,
		                      "SELECT count(*) FROM deliveries"
		                      " WHERE id = 1",
		                      NULL, NULL, NULL);
		sqlite3_close(db);
		if (left == 0)
			break;
		if (test_now_ms() > deadline)
			fail_msg("row 1 not pruned within 20 s");
		test_pause_ms(50);
	}
	expect_ctl(s, "verify --head live", 0, NULL);
	assert_int_equal(wsgate_client_open(&b, s->control_url, CALL_MS),
	                 WSGATE_OK);
	traffic(s, b, "prune-a", "prune-f", ENDS_EVENTS, false);
	expect_ctl(s, "verify --head live", 0, NULL);
	wsgate_client_close(b);
	assert_int_equal(sidecar_stop(s, SIDECAR_STOP_TIMEOUT_MS), 0);
	expect_ctl(s, "verify", 0, NULL);
	assert_int_equal(sidecar_restart(s), 0);
	expect_ctl(s, "verify --head live", 0, NULL);
	assert_int_equal(sidecar_stop(s, SIDECAR_STOP_TIMEOUT_MS), 0);
	expect_ctl(s, "verify", 0, NULL);
	sidecar_free(s, false);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_golden_run_verifies_and_is_attributed),
	    cmocka_unit_test(test_each_refused_handshake_leaves_a_row),
	    cmocka_unit_test(test_crash_leaves_a_consistent_record),
	    cmocka_unit_test(test_verify_catches_a_cut_start),
	    cmocka_unit_test(
	        test_verify_against_the_live_head_catches_a_cut_tail),
	    cmocka_unit_test(
	        test_verify_against_a_kept_head_catches_a_cut_tail),
	    cmocka_unit_test(test_verify_catches_an_altered_payload),
	    cmocka_unit_test(test_verify_catches_forged_and_dropped_heads),
	    cmocka_unit_test(
	        test_untouched_trail_verifies_across_prune_and_restart),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
