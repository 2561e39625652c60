/*
 * Tests of the forensic commands of wsgatectl (sessions, audit, trace,
 * verify) against databases built here: the sidecar's own schema
 * (store_schema_sql()), delivery rows and chain heads MAC'd with the real
 * audit_chain_next and audit_head_mac, then tampered with in the ways
 * verify must catch. Each
 * test runs the real WSGATECTL_BIN with --db/--audit-key-file and checks its
 * exit status and output. No sidecar, no sleeps.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include "audit_chain.h"
#include "store.h"
#include "time_arg.h"
#include "test_dir.h"

#include <jansson.h>
#include <openssl/sha.h>
#include <sqlite3.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define KEY_TEXT                                                               \
	"00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"

/* 2025-11-26T09:17:57.123456Z: fixed times, well in the past. */
#define T0  INT64_C(1764148677123456)
#define SEC INT64_C(1000000)

struct fx {
	char dir[64];
	char db_path[128];
	char key_path[128];
	sqlite3 *db; /* the test's writer */
	struct audit_key key;
	unsigned char prev[AUDIT_CHAIN_LEN]; /* chain of the last row */
	int64_t next_id;
	int64_t head_n; /* the last chain head's number and mac */
	unsigned char head_mac[AUDIT_CHAIN_LEN];
};

struct run {
	int status; /* exit status, or 128 + signal */
	char *out, *err;
};

/* --- building the database --- */

static void exec_sql(struct fx *f, const char *sql)
{
	char *err = NULL;

	if (sqlite3_exec(f->db, sql, NULL, NULL, &err) != SQLITE_OK)
		fail_msg("%s: %s", sql, err);
}

static void add_session(struct fx *f, const char *conn, const char *user,
                        int64_t opened, int64_t closed, int code,
                        const char *reason)
{
	sqlite3_stmt *st;

	assert_int_equal(
	    sqlite3_prepare_v2(f->db,
	                       "INSERT INTO sessions(conn_id, user_id, "
	                       "opened_at, closed_at, close_code, "
	                       "close_reason, peer, user_agent, token_jti, "
	                       "token_exp) VALUES(?,?,?,?,?,?,?,?,?,?)",
	                       -1, &st, NULL),
	    SQLITE_OK);
	sqlite3_bind_text(st, 1, conn, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, user, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 3, opened);
	if (closed > 0) {
		sqlite3_bind_int64(st, 4, closed);
		sqlite3_bind_int(st, 5, code);
		sqlite3_bind_text(st, 6, reason, -1, SQLITE_STATIC);
	}
	sqlite3_bind_text(st, 7, "127.0.0.1:40000", -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 8, "test-agent/1.0", -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 9, "jti-1", -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 10, opened / SEC + 3600);
	assert_int_equal(sqlite3_step(st), SQLITE_DONE);
	sqlite3_finalize(st);
}

static void add_event(struct fx *f, const char *user, int64_t seq,
                      const char *event_id, const char *run, int64_t at)
{
	unsigned char sha[SHA256_DIGEST_LENGTH];
	sqlite3_stmt *st;

	SHA256((const unsigned char *)"{}", 2, sha);
	assert_int_equal(
	    sqlite3_prepare_v2(f->db,
	                       "INSERT INTO events(user_id, seq, event_id, "
	                       "type, thread_id, run_id, accepted_at, payload, "
	                       "payload_sha256, pending) "
	                       "VALUES(?,?,?,'agent_started','t-1',?,?,"
	                       "'{}',?,0)",
	                       -1, &st, NULL),
	    SQLITE_OK);
	sqlite3_bind_text(st, 1, user, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, seq);
	sqlite3_bind_text(st, 3, event_id, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 4, run, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 5, at);
	sqlite3_bind_blob(st, 6, sha, sizeof(sha), SQLITE_STATIC);
	assert_int_equal(sqlite3_step(st), SQLITE_DONE);
	sqlite3_finalize(st);
}

/* The payload digest of user's event seq, as the sidecar records it in
 * each delivery row of the event. */
static void event_digest(struct fx *f, const char *user, uint64_t seq,
                         unsigned char out[AUDIT_DIGEST_LEN])
{
	sqlite3_stmt *st;

	assert_int_equal(sqlite3_prepare_v2(f->db,
	                                    "SELECT payload_sha256 FROM events"
	                                    " WHERE user_id = ? AND seq = ?",
	                                    -1, &st, NULL),
	                 SQLITE_OK);
	sqlite3_bind_text(st, 1, user, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, (int64_t)seq);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	assert_int_equal(sqlite3_column_bytes(st, 0), AUDIT_DIGEST_LEN);
	memcpy(out, sqlite3_column_blob(st, 0), AUDIT_DIGEST_LEN);
	sqlite3_finalize(st);
}

static void insert_delivery(struct fx *f, const struct audit_row *r,
                            const unsigned char chain[AUDIT_CHAIN_LEN])
{
	sqlite3_stmt *st;

	assert_int_equal(
	    sqlite3_prepare_v2(f->db,
	                       "INSERT INTO deliveries(id, user_id, seq, "
	                       "event_id, conn_id, conn_user_id, status, at, "
	                       "payload_sha256, chain) "
	                       "VALUES(?,?,?,?,?,?,?,?,?,?)",
	                       -1, &st, NULL),
	    SQLITE_OK);
	sqlite3_bind_int64(st, 1, r->id);
	sqlite3_bind_text(st, 2, r->user_id, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 3, (int64_t)r->seq);
	sqlite3_bind_text(st, 4, r->event_id, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 5, r->conn_id, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 6, r->conn_user_id, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 7, r->status, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 8, r->at);
	sqlite3_bind_blob(st, 9, r->payload_sha256, (int)r->payload_sha256_len,
	                  SQLITE_STATIC);
	sqlite3_bind_blob(st, 10, chain, AUDIT_CHAIN_LEN, SQLITE_STATIC);
	assert_int_equal(sqlite3_step(st), SQLITE_DONE);
	sqlite3_finalize(st);
}

/* Appends a row the way the sidecar does: next id, chained with the key. */
static int64_t add_delivery(struct fx *f, const char *user, uint64_t seq,
                            const char *event_id, const char *conn,
                            const char *conn_user, const char *status,
                            int64_t at)
{
	unsigned char digest[AUDIT_DIGEST_LEN];
	struct audit_row r = {
	    .id = f->next_id++,
	    .user_id = user,
	    .seq = seq,
	    .event_id = event_id,
	    .conn_id = conn,
	    .conn_user_id = conn_user,
	    .status = status,
	    .at = at,
	    .payload_sha256 = digest,
	    .payload_sha256_len = AUDIT_DIGEST_LEN,
	};
	unsigned char chain[AUDIT_CHAIN_LEN];

	event_digest(f, user, seq, digest);
	audit_chain_next(&f->key, f->prev, &r, chain);
	insert_delivery(f, &r, chain);
	memcpy(f->prev, chain, AUDIT_CHAIN_LEN);
	return r.id;
}

/* Appends chain head n + 1 naming row id and its chain, MAC'd the way the
 * sidecar does (over the last head's mac; zeros for a prune record). */
static void add_head(struct fx *f, int64_t at, int64_t id,
                     const unsigned char chain[AUDIT_CHAIN_LEN],
                     const char *reason)
{
	static const unsigned char zeros[AUDIT_CHAIN_LEN];
	struct audit_head h = {
	    .n = f->head_n + 1,
	    .at = at,
	    .id = id,
	    .chain = chain,
	    .chain_len = AUDIT_CHAIN_LEN,
	    .reason = reason,
	};
	bool pruned = strcmp(reason, AUDIT_HEAD_PRUNED) == 0;
	sqlite3_stmt *st;

	audit_head_mac(&f->key, pruned || h.n == 1 ? zeros : f->head_mac, &h,
	               f->head_mac);
	f->head_n = h.n;
	assert_int_equal(sqlite3_prepare_v2(f->db,
	                                    "INSERT INTO chain_heads(n, at, id,"
	                                    " chain, reason, mac)"
	                                    " VALUES(?,?,?,?,?,?)",
	                                    -1, &st, NULL),
	                 SQLITE_OK);
	sqlite3_bind_int64(st, 1, h.n);
	sqlite3_bind_int64(st, 2, at);
	sqlite3_bind_int64(st, 3, id);
	sqlite3_bind_blob(st, 4, chain, AUDIT_CHAIN_LEN, SQLITE_STATIC);
	sqlite3_bind_text(st, 5, reason, -1, SQLITE_STATIC);
	sqlite3_bind_blob(st, 6, f->head_mac, AUDIT_CHAIN_LEN, SQLITE_STATIC);
	assert_int_equal(sqlite3_step(st), SQLITE_DONE);
	sqlite3_finalize(st);
}

/* What the sidecar logs every 10 s: the last id and its chain. */
static void add_chain_head(struct fx *f, int64_t at, const char *reason)
{
	add_head(f, at, f->next_id - 1, f->prev, reason);
}

/*
 * The log every test starts from:
 *   c-a1 alice, closed; c-a2 alice, open; c-b1 bob, closed (1001).
 *   alice e-1 (seq 1, run r-1), bob e-1 (seq 1, run r-2: event ids are
 *   per user), bob e-2 (seq 2, run r-2), alice e-3 (seq 2, run r-1).
 *
 *   id  user   seq event conn  status
 *    1  alice  1   e-1   c-a1  queued
 *    2  alice  1   e-1   c-a2  queued
 *    3  alice  1   e-1   c-a1  written
 *    4  alice  1   e-1   c-a2  written
 *    5  bob    1   e-1   c-b1  queued
 *    6  bob    1   e-1   c-b1  written
 *    7  bob    2   e-2   c-b1  queued    no outcome, session closed
 *    8  alice  2   e-3   c-a1  queued
 *    9  alice  2   e-3   c-a2  queued    no outcome, session open
 *   10  alice  2   e-3   c-a1  dropped
 *   11  alice  1   e-1   c-a1  acked
 *   chain heads: 1 at start (id 0), 2 at id 11.
 */
static void build_log(struct fx *f)
{
	add_chain_head(f, T0 - 90 * SEC, "start");
	add_session(f, "c-a1", "alice", T0 - 60 * SEC, T0 + 60 * SEC, 1000,
	            "client closed");
	add_session(f, "c-a2", "alice", T0 - 30 * SEC, 0, 0, NULL);
	add_session(f, "c-b1", "bob", T0 - 20 * SEC, T0 + 90 * SEC, 1001,
	            "sidecar shutting down");
	add_event(f, "alice", 1, "e-1", "r-1", T0);
	add_event(f, "bob", 1, "e-1", "r-2", T0 + 1000);
	add_event(f, "bob", 2, "e-2", "r-2", T0 + 3000);
	add_event(f, "alice", 2, "e-3", "r-1", T0 + 4000);
	add_delivery(f, "alice", 1, "e-1", "c-a1", "alice", "queued", T0);
	add_delivery(f, "alice", 1, "e-1", "c-a2", "alice", "queued", T0);
	add_delivery(f, "alice", 1, "e-1", "c-a1", "alice", "written",
	             T0 + 2104);
	add_delivery(f, "alice", 1, "e-1", "c-a2", "alice", "written",
	             T0 + 2500);
	add_delivery(f, "bob", 1, "e-1", "c-b1", "bob", "queued", T0 + 1000);
	add_delivery(f, "bob", 1, "e-1", "c-b1", "bob", "written", T0 + 1900);
	add_delivery(f, "bob", 2, "e-2", "c-b1", "bob", "queued", T0 + 3000);
	add_delivery(f, "alice", 2, "e-3", "c-a1", "alice", "queued",
	             T0 + 4000);
	add_delivery(f, "alice", 2, "e-3", "c-a2", "alice", "queued",
	             T0 + 4000);
	add_delivery(f, "alice", 2, "e-3", "c-a1", "alice", "dropped",
	             T0 + 5000);
	add_delivery(f, "alice", 1, "e-1", "c-a1", "alice", "acked",
	             T0 + 180000);
	add_chain_head(f, T0 + 10 * SEC, "interval");
}

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	char err[256];
	FILE *kf;

	assert_non_null(f);
	assert_int_equal(test_dir_make(f->dir, sizeof(f->dir), "forensics"), 0);
	snprintf(f->db_path, sizeof(f->db_path), "%s/wsgate.db", f->dir);
	snprintf(f->key_path, sizeof(f->key_path), "%s/wsgate.audit-key",
	         f->dir);
	kf = fopen(f->key_path, "w");
	assert_non_null(kf);
	fputs(KEY_TEXT "\n", kf);
	fclose(kf);
	assert_int_equal(
	    audit_key_load(&f->key, f->key_path, 0, err, sizeof(err)), 0);
	assert_int_equal(sqlite3_open(f->db_path, &f->db), SQLITE_OK);
	exec_sql(f, store_schema_sql());
	f->next_id = 1;
	build_log(f);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;

	sqlite3_close(f->db);
	audit_key_clear(&f->key);
	test_dir_remove(f->dir);
	free(f);
	return 0;
}

/* --- running wsgatectl --- */

/* Runs wsgatectl --db DB --audit-key-file KEY args... (NULL-terminated),
 * collecting stdout and stderr. */
static struct run ctl(struct fx *f, ...)
{
	char *argv[32];
	int argc = 0, out[2], err[2], status;
	struct run r = {0};
	size_t len[2] = {0, 0};
	char **buf[2] = {&r.out, &r.err};
	struct pollfd p[2];
	const char *a;
	va_list ap;
	pid_t pid;

	argv[argc++] = (char *)WSGATECTL_BIN;
	argv[argc++] = (char *)"--db";
	argv[argc++] = f->db_path;
	argv[argc++] = (char *)"--audit-key-file";
	argv[argc++] = f->key_path;
	va_start(ap, f);
	while ((a = va_arg(ap, const char *)) != NULL && argc < 31)
		argv[argc++] = (char *)a;
	va_end(ap);
	argv[argc] = NULL;

	assert_int_equal(pipe2(out, O_CLOEXEC), 0);
	assert_int_equal(pipe2(err, O_CLOEXEC), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		dup2(out[1], 1);
		dup2(err[1], 2);
		execv(argv[0], argv);
		_exit(127);
	}
	close(out[1]);
	close(err[1]);
	r.out = calloc(1, 1);
	r.err = calloc(1, 1);
	p[0] = (struct pollfd){.fd = out[0], .events = POLLIN};
	p[1] = (struct pollfd){.fd = err[0], .events = POLLIN};
	while (p[0].fd >= 0 || p[1].fd >= 0) {
		if (poll(p, 2, -1) < 0) {
			assert_int_equal(errno, EINTR);
			continue;
		}
		for (int i = 0; i < 2; i++) {
			char chunk[4096];
			ssize_t n;

			if (p[i].fd < 0 || p[i].revents == 0)
				continue;
			n = read(p[i].fd, chunk, sizeof(chunk));
			if (n <= 0) {
				close(p[i].fd);
				p[i].fd = -1;
				continue;
			}
			*buf[i] = realloc(*buf[i], len[i] + (size_t)n + 1);
			assert_non_null(*buf[i]);
			memcpy(*buf[i] + len[i], chunk, (size_t)n);
			len[i] += (size_t)n;
			(*buf[i])[len[i]] = '\0';
		}
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	r.status =
	    WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
	return r;
}

static void run_free(struct run *r)
{
	free(r->out);
	free(r->err);
}

#define assert_has(hay, needle)                                                \
	do {                                                                   \
		if (strstr((hay), (needle)) == NULL)                           \
			fail_msg("expected \"%s\" in:\n%s", (needle), (hay));  \
	} while (0)

#define assert_lacks(hay, needle)                                              \
	do {                                                                   \
		if (strstr((hay), (needle)) != NULL)                           \
			fail_msg("did not expect \"%s\" in:\n%s", (needle),    \
			         (hay));                                       \
	} while (0)

#define assert_status(r, want)                                                 \
	do {                                                                   \
		if ((r).status != (want))                                      \
			fail_msg("exit status %d, want %d\nstdout:\n%s\n"      \
			         "stderr:\n%s",                                \
			         (r).status, (want), (r).out, (r).err);        \
	} while (0)

/* The lines of a --json run, parsed; fails on a line that is not JSON. */
static json_t *json_lines(const char *out)
{
	json_t *all = json_array();
	const char *p = out;

	while (*p != '\0') {
		const char *nl = strchr(p, '\n');
		size_t len = nl != NULL ? (size_t)(nl - p) : strlen(p);
		json_error_t jerr;
		json_t *o = json_loadb(p, len, 0, &jerr);

		if (o == NULL)
			fail_msg("not a JSON line (%s): %.*s", jerr.text,
			         (int)len, p);
		json_array_append_new(all, o);
		p += len + (nl != NULL);
	}
	return all;
}

/* --- verify --- */

static void test_verify_passes_on_a_clean_log(void **state)
{
	struct run r = ctl(*state, "verify", NULL);

	assert_status(r, 0);
	assert_has(r.out, "verify: 11 rows (ids 1..11), isolation ok, ids ok, "
	                  "chain ok, events ok, heads ok, tail ok (database "
	                  "only)\n");
	assert_string_equal(r.err, "");
	run_free(&r);
}

static void test_verify_names_an_altered_row_once(void **state)
{
	struct fx *f = *state;
	struct run r;

	exec_sql(f, "UPDATE deliveries SET conn_id = 'c-zz' WHERE id = 4");
	r = ctl(f, "verify", NULL);
	assert_status(r, 1);
	assert_has(r.out, "chain: row 4: ");
	/* The check goes on from the stored chain: its successor is fine. */
	assert_lacks(r.out, "row 5");
	assert_lacks(r.out, "row 3");
	assert_has(r.out,
	           "verify: FAILED: 11 rows (ids 1..11), isolation ok, "
	           "ids ok, chain: 1 mismatch, events ok, heads ok, tail "
	           "ok (database only)\n");
	run_free(&r);
	/* Pointed at another user's connection: its session says so. */
	exec_sql(f, "UPDATE deliveries SET conn_id = 'c-b1' WHERE id = 4");
	r = ctl(f, "verify", NULL);
	assert_status(r, 1);
	assert_has(r.out,
	           "isolation: row 4: connection c-b1 is recorded as user "
	           "'alice' but its session belongs to user 'bob'\n");
	assert_has(r.out, "chain: row 4: ");
	run_free(&r);
}

static void test_verify_names_a_gap(void **state)
{
	struct fx *f = *state;
	struct run r;

	exec_sql(f, "DELETE FROM deliveries WHERE id = 6");
	r = ctl(f, "verify", NULL);
	assert_status(r, 1);
	assert_has(r.out, "ids: gap: id 6 missing, between rows 5 and 7\n");
	/* Row 7's predecessor is gone: the gap is the finding, not row 7. */
	assert_lacks(r.out, "chain: row");
	assert_has(r.out, "ids: 1 gap (1 missing)");
	run_free(&r);

	exec_sql(f, "DELETE FROM deliveries WHERE id IN (2, 3)");
	r = ctl(f, "verify", NULL);
	assert_status(r, 1);
	assert_has(r.out, "ids: gap: ids 2..3 missing (2 rows), between rows 1 "
	                  "and 4\n");
	assert_has(r.out, "ids: gap: id 6 missing, between rows 5 and 7\n");
	run_free(&r);
}

static void test_verify_names_a_row_for_another_user(void **state)
{
	struct fx *f = *state;
	unsigned char chain[AUDIT_CHAIN_LEN];
	struct audit_key wrong = {.len = 5};
	struct audit_row row = {
	    .id = 12,
	    .user_id = "alice",
	    .seq = 2,
	    .event_id = "e-3",
	    .conn_id = "c-b1",
	    .conn_user_id = "bob",
	    .status = "queued",
	    .at = T0 + 4000,
	};
	unsigned char digest[AUDIT_DIGEST_LEN];
	struct run r;

	event_digest(f, "alice", 2, digest);
	row.payload_sha256 = digest;
	row.payload_sha256_len = AUDIT_DIGEST_LEN;
	/* A chain that looks like one: random bytes. */
	for (int i = 0; i < AUDIT_CHAIN_LEN; i++)
		chain[i] = (unsigned char)(i * 37 + 11);
	insert_delivery(f, &row, chain);
	r = ctl(f, "verify", NULL);
	assert_status(r, 1);
	assert_has(r.out,
	           "isolation: row 12: event e-3 (seq 2) of user 'alice' "
	           "went to connection c-b1 of user 'bob' (queued)\n");
	assert_has(r.out, "chain: row 12: ");
	assert_lacks(r.out, "row 11");
	run_free(&r);

	/* Chained, but with another key. */
	memcpy(wrong.bytes, "wrong", 5);
	audit_chain_next(&wrong, f->prev, &row, chain);
	exec_sql(f, "DELETE FROM deliveries WHERE id = 12");
	insert_delivery(f, &row, chain);
	r = ctl(f, "verify", NULL);
	assert_status(r, 1);
	assert_has(r.out, "isolation: row 12: ");
	assert_has(r.out, "chain: row 12: ");
	run_free(&r);

	/* Chained with the right key (whoever holds it): the chain is
	 * fine, the isolation check is what catches it. */
	audit_chain_next(&f->key, f->prev, &row, chain);
	exec_sql(f, "DELETE FROM deliveries WHERE id = 12");
	insert_delivery(f, &row, chain);
	r = ctl(f, "verify", NULL);
	assert_status(r, 1);
	assert_has(r.out, "isolation: row 12: ");
	assert_lacks(r.out, "chain: row");
	assert_has(r.out, "verify: FAILED: 12 rows (ids 1..12), isolation: 1 "
	                  "violation, ids ok, chain ok, events ok, heads ok, "
	                  "tail ok (database only)\n");
	run_free(&r);
}

static void test_verify_checks_sessions_of_connections(void **state)
{
	struct fx *f = *state;
	struct run r;

	exec_sql(f, "UPDATE sessions SET user_id = 'mallory'"
	            " WHERE conn_id = 'c-b1'");
	r = ctl(f, "verify", NULL);
	assert_status(r, 1);
	assert_has(r.out,
	           "isolation: row 5: connection c-b1 is recorded as user "
	           "'bob' but its session belongs to user 'mallory'\n");
	assert_has(r.out, "isolation: row 7: ");
	assert_has(r.out, "isolation: 3 violations");
	run_free(&r);
}

static void test_verify_finds_rows_cut_off_the_end(void **state)
{
	struct fx *f = *state;
	struct run r;

	exec_sql(f, "DELETE FROM deliveries WHERE id >= 10");
	r = ctl(f, "verify", NULL);
	assert_status(r, 1);
	assert_has(r.out,
	           "tail: the chain head logged 2025-11-26T09:18:07.123Z "
	           "(interval) names id 11 but the last row is 9: rows "
	           "10..11 are missing (cut off the end)\n");
	assert_lacks(r.out, "ids:");
	assert_lacks(r.out, "chain:");
	run_free(&r);

	/* All of them. */
	exec_sql(f, "DELETE FROM deliveries");
	r = ctl(f, "verify", NULL);
	assert_status(r, 1);
	assert_has(r.out, "but there are no rows: rows 1..11 are missing");
	run_free(&r);
}

static void test_verify_finds_a_rechained_tail(void **state)
{
	struct fx *f = *state;
	struct run r;

	/* Rewritten after the head was logged ("dropped" made "written"),
	 * and re-chained with the key from there on: only the logged head
	 * tells. */
	exec_sql(f, "DELETE FROM deliveries WHERE id >= 10");
	f->next_id = 10;
	sqlite3_stmt *st;
	assert_int_equal(sqlite3_prepare_v2(f->db,
	                                    "SELECT chain FROM deliveries "
	                                    "WHERE id = 9",
	                                    -1, &st, NULL),
	                 SQLITE_OK);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	memcpy(f->prev, sqlite3_column_blob(st, 0), AUDIT_CHAIN_LEN);
	sqlite3_finalize(st);
	add_delivery(f, "alice", 2, "e-3", "c-a1", "alice", "written",
	             T0 + 5000);
	add_delivery(f, "alice", 1, "e-1", "c-a1", "alice", "acked",
	             T0 + 180000);
	r = ctl(f, "verify", NULL);
	assert_status(r, 1);
	assert_has(r.out,
	           "tail: the chain head logged 2025-11-26T09:18:07.123Z "
	           "(interval) for id 11 differs from row 11's stored "
	           "chain");
	assert_lacks(r.out, "chain: row");
	run_free(&r);
}

static void test_verify_without_the_key(void **state)
{
	struct fx *f = *state;
	char want[256];
	struct run r;

	assert_int_equal(unlink(f->key_path), 0);
	r = ctl(f, "verify", NULL);
	assert_status(r, 2);
	snprintf(want, sizeof(want),
	         "verify: chain not checked: no audit key at %s\n",
	         f->key_path);
	assert_has(r.err, want);
	assert_has(r.out, "verify: 11 rows (ids 1..11), isolation ok, ids ok, "
	                  "chain not checked (no key), events ok, heads not "
	                  "checked (no key), tail ok (database only)\n");
	run_free(&r);

	/* Isolation and ids are still checked, and a violation wins. */
	exec_sql(f, "DELETE FROM deliveries WHERE id = 6");
	r = ctl(f, "verify", NULL);
	assert_status(r, 1);
	assert_has(r.out, "ids: gap: id 6 missing");
	run_free(&r);
}

static void test_verify_with_another_key(void **state)
{
	struct fx *f = *state;
	struct run r;
	FILE *kf;

	kf = fopen(f->key_path, "w");
	assert_non_null(kf);
	fputs("not the sidecar's key\n", kf);
	fclose(kf);
	r = ctl(f, "verify", NULL);
	assert_status(r, 1);
	assert_has(r.out, "chain: row 1: ");
	assert_has(r.out, "chain: 11 mismatches");
	assert_has(r.err, "the sidecar's audit key?");
	run_free(&r);
}

/* The stored chain of row id. */
static void row_chain(struct fx *f, int64_t id,
                      unsigned char chain[AUDIT_CHAIN_LEN])
{
	sqlite3_stmt *st;

	assert_int_equal(sqlite3_prepare_v2(f->db,
	                                    "SELECT chain FROM deliveries"
	                                    " WHERE id = ?",
	                                    -1, &st, NULL),
	                 SQLITE_OK);
	sqlite3_bind_int64(st, 1, id);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	assert_int_equal(sqlite3_column_bytes(st, 0), AUDIT_CHAIN_LEN);
	memcpy(chain, sqlite3_column_blob(st, 0), AUDIT_CHAIN_LEN);
	sqlite3_finalize(st);
}

/* What retention does at row id: a prune record naming it, the rows up to
 * it and the heads before the record deleted, a head naming the tail. */
static void prune_at(struct fx *f, int64_t id, int64_t at)
{
	unsigned char chain[AUDIT_CHAIN_LEN];
	char sql[128];

	row_chain(f, id, chain);
	add_head(f, at, id, chain, AUDIT_HEAD_PRUNED);
	snprintf(sql, sizeof(sql),
	         "DELETE FROM deliveries WHERE id <= %lld;"
	         "DELETE FROM chain_heads WHERE n < %lld",
	         (long long)id, (long long)f->head_n);
	exec_sql(f, sql);
	add_chain_head(f, at, "interval");
}

/* After pruning: rows start after the anchor and chain on from it. */
static void test_verify_from_a_prune_record(void **state)
{
	struct fx *f = *state;
	struct run r;

	prune_at(f, 4, T0 + 20 * SEC);
	r = ctl(f, "verify", NULL);
	assert_status(r, 0);
	assert_has(r.out, "verify: 7 rows (ids 5..11, anchor 4), isolation ok, "
	                  "ids ok, chain ok, events ok, heads ok, tail ok "
	                  "(database only)\n");
	run_free(&r);

	exec_sql(f, "DELETE FROM deliveries WHERE id = 5");
	r = ctl(f, "verify", NULL);
	assert_status(r, 1);
	assert_has(r.out, "ids: gap: id 5 missing, between the anchor (id 4) "
	                  "and row 6\n");
	run_free(&r);
}

/* The start of the log cut without the key: the anchor of format 1 (meta)
 * means nothing any more, and a prune record cannot be made up. */
static void test_verify_from_a_forged_prune_record(void **state)
{
	struct fx *f = *state;
	struct run r;

	exec_sql(f, "INSERT INTO meta(key, value) VALUES('anchor_id', 4);"
	            "INSERT INTO meta(key, value) SELECT 'anchor_chain', chain"
	            " FROM deliveries WHERE id = 4;"
	            "DELETE FROM deliveries WHERE id <= 4;");
	r = ctl(f, "verify", NULL);
	assert_status(r, 1);
	assert_has(r.out, "ids: gap: ids 1..4 missing (4 rows), between the "
	                  "start of the log and row 5\n");
	run_free(&r);

	/* A prune record with a made-up mac, as the first head. */
	exec_sql(f, "DELETE FROM chain_heads;"
	            "INSERT INTO chain_heads(n, at, id, chain, reason, mac)"
	            " SELECT 7, 1, id, chain, 'pruned', randomblob(32)"
	            " FROM deliveries WHERE id = 5;"
	            "DELETE FROM deliveries WHERE id = 5;");
	r = ctl(f, "verify", NULL);
	assert_status(r, 1);
	assert_has(r.out, "heads: head 7 (logged 1970-01-01T00:00:00.000Z, "
	                  "pruned, id 5): its mac does not match");
	assert_lacks(r.out, "ids:");
	assert_lacks(r.out, "chain:");
	run_free(&r);

	/* No heads at all. */
	exec_sql(f, "DELETE FROM chain_heads");
	r = ctl(f, "verify", NULL);
	assert_status(r, 1);
	assert_has(r.out, "heads: no chain heads: ");
	run_free(&r);
}

/* Heads are numbered, MAC'd and chained: a gap, an edit, a prune record
 * after the first head. */
static void test_verify_checks_the_heads(void **state)
{
	struct fx *f = *state;
	struct run r;

	add_chain_head(f, T0 + 20 * SEC, "shutdown");
	add_chain_head(f, T0 + 30 * SEC, "start");
	exec_sql(f, "DELETE FROM chain_heads WHERE n = 3");
	r = ctl(f, "verify", NULL);
	assert_status(r, 1);
	assert_has(r.out, "heads: gap: head 3 missing, between heads 2 "
	                  "and 4 (heads deleted)\n");
	assert_has(r.out, "heads: 1 violation");
	run_free(&r);

	exec_sql(f, "UPDATE chain_heads SET reason = 'shutdown' WHERE n = 2");
	r = ctl(f, "verify", NULL);
	assert_status(r, 1);
	assert_has(r.out, "heads: head 2 (logged 2025-11-26T09:18:07.123Z, "
	                  "shutdown, id 11): its mac does not match");
	run_free(&r);

	exec_sql(f, "UPDATE chain_heads SET reason = 'interval' WHERE n = 2;"
	            "DELETE FROM chain_heads WHERE n = 4");
	f->head_n = 2;
	r = ctl(f, "verify", NULL);
	assert_status(r, 0);
	run_free(&r);
	add_head(f, T0 + 40 * SEC, 11, f->prev, AUDIT_HEAD_PRUNED);
	r = ctl(f, "verify", NULL);
	assert_status(r, 1);
	assert_has(r.out,
	           "heads: head 3 (logged 2025-11-26T09:18:37.123Z) is a "
	           "prune record but not the first head\n");
	run_free(&r);
}

static char *head_arg(int64_t id, const unsigned char chain[AUDIT_CHAIN_LEN],
                      char *buf, size_t cap)
{
	int n = snprintf(buf, cap, "%lld:", (long long)id);

	for (int i = 0; i < AUDIT_CHAIN_LEN; i++)
		n += snprintf(buf + n, cap - (size_t)n, "%02x", chain[i]);
	return buf;
}

/* --head ID:HEX: a head kept elsewhere must be in the log. */
static void test_verify_against_a_given_head(void **state)
{
	struct fx *f = *state;
	unsigned char chain[AUDIT_CHAIN_LEN];
	char arg[128];
	struct run r;

	row_chain(f, 9, chain);
	r = ctl(f, "verify", "--head", head_arg(9, chain, arg, sizeof(arg)),
	        NULL);
	assert_status(r, 0);
	assert_has(r.out, ", tail ok (reaches the given head, id 9)\n");
	run_free(&r);

	r = ctl(f, "verify", "--head", head_arg(12, chain, arg, sizeof(arg)),
	        NULL);
	assert_status(r, 1);
	assert_has(r.out, "tail: the given head names id 12 but the last row "
	                  "is 11: row 12 is missing (cut off the end)\n");
	run_free(&r);

	r = ctl(f, "verify", "--head", head_arg(8, chain, arg, sizeof(arg)),
	        NULL);
	assert_status(r, 1);
	assert_has(r.out, "tail: the given head (id 8) differs from row 8's "
	                  "stored chain");
	run_free(&r);

	r = ctl(f, "verify", "--head", "9:abc", NULL);
	assert_status(r, 2);
	assert_has(r.err, "--head wants live or ID:HEX");
	run_free(&r);

	/* Pruned past it: nothing to compare, and it says so. */
	prune_at(f, 10, T0 + 20 * SEC);
	r = ctl(f, "verify", "--head", head_arg(9, chain, arg, sizeof(arg)),
	        NULL);
	assert_status(r, 2);
	assert_has(r.err, "tail not checked: the given head (id 9) is before "
	                  "the anchor (id 10)");
	run_free(&r);
}

static void test_verify_refuses_an_older_format(void **state)
{
	struct fx *f = *state;
	struct run r;

	exec_sql(f, "DELETE FROM meta WHERE key = 'audit_format'");
	r = ctl(f, "verify", NULL);
	assert_status(r, 2);
	assert_has(r.err, "audit format 1 database; verify checks format 2");
	assert_string_equal(r.out, "");
	run_free(&r);
}

/* The event a row names is still the one delivered. */
static void test_verify_checks_events_of_rows(void **state)
{
	struct fx *f = *state;
	struct run r;

	exec_sql(f, "UPDATE events SET event_id = 'e-9'"
	            " WHERE user_id = 'bob' AND seq = 2");
	r = ctl(f, "verify", NULL);
	assert_status(r, 1);
	assert_has(r.out, "event: row 7 names event e-2 (seq 2 of user 'bob') "
	                  "but the event log has event e-9 there\n");
	assert_has(r.out, "events: 1 mismatch");
	run_free(&r);
}

static void test_verify_json(void **state)
{
	struct fx *f = *state;
	json_t *lines, *v, *sum;
	struct run r;

	exec_sql(f, "UPDATE deliveries SET status = 'written' WHERE id = 7");
	r = ctl(f, "--json", "verify", NULL);
	assert_status(r, 1);
	lines = json_lines(r.out);
	assert_int_equal(json_array_size(lines), 2);
	v = json_array_get(lines, 0);
	assert_string_equal(json_string_value(json_object_get(v, "check")),
	                    "chain");
	assert_int_equal(json_integer_value(json_object_get(v, "id")), 7);
	assert_string_equal(json_string_value(json_object_get(v, "at_iso")),
	                    "2025-11-26T09:17:57.126Z");
	sum = json_array_get(lines, 1);
	assert_string_equal(json_string_value(json_object_get(sum, "summary")),
	                    "verify");
	assert_true(json_is_false(json_object_get(sum, "ok")));
	assert_int_equal(json_integer_value(json_object_get(sum, "rows")), 11);
	assert_int_equal(
	    json_integer_value(json_object_get(sum, "chain_mismatches")), 1);
	json_decref(lines);
	run_free(&r);
}

/* The sidecar writes while wsgatectl reads: a read-only reader sees the
 * last commit and neither waits for the writer nor makes it wait. */
static void test_verify_reads_beside_a_writer(void **state)
{
	struct fx *f = *state;
	struct run r;

	exec_sql(f, "BEGIN IMMEDIATE");
	add_delivery(f, "alice", 2, "e-3", "c-a2", "bob", "written", T0 + 6000);
	r = ctl(f, "verify", NULL);
	assert_status(r, 0);
	assert_has(r.out, "verify: 11 rows");
	run_free(&r);
	/* The writer was not blocked by the reader either. */
	add_delivery(f, "alice", 2, "e-3", "c-a2", "alice", "acked", T0 + 7000);
	exec_sql(f, "COMMIT");
	r = ctl(f, "verify", NULL);
	assert_status(r, 1);
	assert_has(r.out, "isolation: row 12: ");
	assert_has(r.out, "verify: FAILED: 13 rows");
	run_free(&r);
}

/* --- audit --- */

/* The ids of the rows a --json audit printed, as "1,2,3". */
static char *audit_ids(struct fx *f, ...)
{
	const char *args[12];
	json_t *lines, *o;
	size_t n = 0, i;
	char *ids = calloc(1, 256);
	struct run r;
	va_list ap;

	va_start(ap, f);
	while ((args[n] = va_arg(ap, const char *)) != NULL && n < 10)
		n++;
	va_end(ap);
	r = ctl(f, "--json", "audit", n > 0 ? args[0] : NULL,
	        n > 1 ? args[1] : NULL, n > 2 ? args[2] : NULL,
	        n > 3 ? args[3] : NULL, NULL);
	assert_status(r, 0);
	lines = json_lines(r.out);
	json_array_foreach(lines, i, o)
	{
		snprintf(ids + strlen(ids), 256 - strlen(ids), "%s%" PRId64,
		         i > 0 ? "," : "",
		         (int64_t)json_integer_value(json_object_get(o, "id")));
	}
	json_decref(lines);
	run_free(&r);
	return ids;
}

#define assert_ids(f, want, ...)                                               \
	do {                                                                   \
		char *got_ = audit_ids((f), __VA_ARGS__, NULL);                \
		assert_string_equal(got_, (want));                             \
		free(got_);                                                    \
	} while (0)

static void test_audit_filters(void **state)
{
	struct fx *f = *state;
	struct run r;

	assert_ids(f, "1,2,3,4,5,6,7,8,9,10,11", "--limit", "0");
	assert_ids(f, "5,6,7", "--user", "bob");
	assert_ids(f, "3,4,5,6,11", "--event", "e-1", "--since",
	           "2025-11-26T09:17:57.124Z");
	assert_ids(f, "5,6", "--event", "e-1", "--user", "bob");
	assert_ids(f, "2,4,9", "--conn", "c-a2");
	assert_ids(f, "5,6,7", "--run", "r-2");
	assert_ids(f, "7,8,9,10,11", "--since", "2025-11-26T09:17:57.126Z");
	assert_ids(f, "8,9,10,11", "--since", "2025-11-26T10:17:57.127+01:00");

	/* --user U: rows of U's events and rows of U's connections. */
	r = ctl(f, "audit", "--user", "bob", NULL);
	assert_status(r, 0);
	assert_has(r.out, "e-2");
	assert_lacks(r.out, "alice");
	run_free(&r);
	add_delivery(f, "alice", 2, "e-3", "c-b1", "bob", "queued", T0 + 4000);
	assert_ids(f, "5,6,7,12", "--user", "bob");
	assert_ids(f, "1,2,3,4,8,9,10,11,12", "--user", "alice");
	r = ctl(f, "audit", "--conn", "c-b1", "--event", "e-3", NULL);
	assert_status(r, 0);
	assert_has(r.out, "ISOLATION VIOLATION: user_id != conn_user_id");
	run_free(&r);
}

static void test_audit_limit_keeps_the_newest(void **state)
{
	struct run r;

	assert_ids(*state, "10,11", "--limit", "2");
	r = ctl(*state, "audit", "--limit", "2", NULL);
	assert_status(r, 0);
	assert_has(r.err, "more rows match; showing the newest 2");
	run_free(&r);
	r = ctl(*state, "audit", "--limit", "-1", NULL);
	assert_status(r, 2);
	run_free(&r);
}

static void test_audit_notes_queued_rows_without_outcome(void **state)
{
	struct run r = ctl(*state, "--json", "audit", NULL);
	json_t *lines, *o;
	size_t i;

	assert_status(r, 0);
	lines = json_lines(r.out);
	assert_int_equal(json_array_size(lines), 11);
	json_array_foreach(lines, i, o)
	{
		json_int_t id = json_integer_value(json_object_get(o, "id"));
		const char *note =
		    json_string_value(json_object_get(o, "note"));

		if (id == 7)
			assert_string_equal(note,
			                    "outcome unknown: sidecar stopped");
		else if (id == 9)
			assert_string_equal(note, "in flight");
		else
			assert_null(note);
	}
	json_decref(lines);
	run_free(&r);

	/* A session that is gone reads like a closed one. */
	exec_sql(*state, "DELETE FROM sessions WHERE conn_id = 'c-a2'");
	r = ctl(*state, "audit", "--conn", "c-a2", NULL);
	assert_status(r, 0);
	assert_has(r.out, "queued   alice    2    e-3       c-a2     alice"
	                  "         outcome unknown: sidecar stopped\n");
	run_free(&r);
}

/* --- trace --- */

static void test_trace_tells_the_story(void **state)
{
	struct run r = ctl(*state, "trace", "e-2", NULL);

	assert_status(r, 0);
	assert_has(r.out, "event e-2 of user bob\n");
	assert_has(r.out, "  seq         2\n");
	assert_has(r.out, "  run         r-2\n");
	assert_has(r.out, "  accepted    2025-11-26T09:17:57.126Z\n");
	assert_has(r.out, "  connection  c-b1 of bob, opened "
	                  "2025-11-26T09:17:37.123Z, closed "
	                  "2025-11-26T09:19:27.123Z (1001 sidecar shutting "
	                  "down)\n");
	assert_has(r.out, "  c-b1     7    queued  2025-11-26T09:17:57.126Z  "
	                  "+0.000 ms  outcome unknown: sidecar stopped\n");
	run_free(&r);

	r = ctl(*state, "trace", "e-3", NULL);
	assert_status(r, 0);
	assert_has(r.out, "  c-a1     8    queued   2025-11-26T09:17:57.127Z  "
	                  "+0.000 ms\n");
	assert_has(r.out, "  c-a1     10   dropped  2025-11-26T09:17:57.128Z  "
	                  "+1.000 ms\n");
	assert_has(r.out, "  c-a2     9    queued   2025-11-26T09:17:57.127Z  "
	                  "+0.000 ms  in flight\n");
	run_free(&r);
}

static void test_trace_of_an_id_several_users_used(void **state)
{
	struct run r = ctl(*state, "trace", "e-1", NULL);

	assert_status(r, 0);
	assert_has(r.out, "event e-1 of user alice\n");
	assert_has(r.out, "event e-1 of user bob\n");
	assert_has(r.out, "  c-a1     3    written  2025-11-26T09:17:57.125Z  "
	                  "+2.104 ms\n");
	assert_has(r.out, "  c-a1     11   acked    2025-11-26T09:17:57.303Z  "
	                  "+180.000 ms\n");
	run_free(&r);

	r = ctl(*state, "trace", "--user", "bob", "e-1", NULL);
	assert_status(r, 0);
	assert_lacks(r.out, "alice");
	assert_has(r.out, "event e-1 of user bob\n");
	run_free(&r);
}

static void test_trace_json(void **state)
{
	struct run r = ctl(*state, "trace", "e-3", "--json", NULL);
	json_t *lines, *ev, *conns, *c, *d;

	assert_status(r, 0);
	lines = json_lines(r.out);
	assert_int_equal(json_array_size(lines), 1);
	ev = json_array_get(lines, 0);
	assert_string_equal(json_string_value(json_object_get(ev, "user_id")),
	                    "alice");
	assert_int_equal(json_integer_value(json_object_get(ev, "accepted_at")),
	                 T0 + 4000);
	conns = json_object_get(ev, "connections");
	assert_int_equal(json_array_size(conns), 2);
	c = json_array_get(conns, 1);
	assert_string_equal(json_string_value(json_object_get(c, "conn_id")),
	                    "c-a2");
	assert_true(json_is_null(
	    json_object_get(json_object_get(c, "session"), "closed_at")));
	d = json_array_get(json_object_get(c, "deliveries"), 0);
	assert_string_equal(json_string_value(json_object_get(d, "note")),
	                    "in flight");
	c = json_array_get(conns, 0);
	d = json_array_get(json_object_get(c, "deliveries"), 1);
	assert_string_equal(json_string_value(json_object_get(d, "status")),
	                    "dropped");
	assert_int_equal(json_integer_value(json_object_get(d, "delay_us")),
	                 1000);
	json_decref(lines);
	run_free(&r);
}

static void test_trace_of_no_event(void **state)
{
	struct run r = ctl(*state, "trace", "e-nope", NULL);

	assert_status(r, 1);
	assert_string_equal(r.err, "wsgatectl: no event e-nope\n");
	assert_string_equal(r.out, "");
	run_free(&r);

	r = ctl(*state, "trace", "e-2", "--user", "alice", NULL);
	assert_status(r, 1);
	assert_has(r.err, "wsgatectl: no event e-2 for user alice\n");
	run_free(&r);

	r = ctl(*state, "trace", NULL);
	assert_status(r, 2);
	run_free(&r);
}

/* --- sessions --- */

static void test_sessions(void **state)
{
	struct fx *f = *state;
	int64_t now = time_arg_now_us();
	json_t *lines, *o;
	struct run r;

	r = ctl(f, "sessions", "--user", "alice", NULL);
	assert_status(r, 0);
	/* Newest first. */
	assert_true(strstr(r.out, "c-a2") < strstr(r.out, "c-a1"));
	assert_has(r.out, "c-a2     alice    2025-11-26T09:17:27.123Z  open ");
	assert_has(r.out, "1000  client closed");
	assert_lacks(r.out, "c-b1");
	run_free(&r);

	/* --since: sessions open at any time since then. */
	r = ctl(f, "sessions", "--since", "2025-11-26T09:19:00Z", NULL);
	assert_status(r, 0);
	assert_has(r.out, "c-a2");
	assert_has(r.out, "c-b1");
	assert_lacks(r.out, "c-a1");
	run_free(&r);

	/* Relative: now minus the duration. */
	add_session(f, "c-recent", "carol", now - 30 * 60 * SEC,
	            now - 20 * 60 * SEC, 1000, "client closed");
	add_session(f, "c-old", "carol", now - 3 * 3600 * SEC,
	            now - 2 * 3600 * SEC, 1000, "client closed");
	r = ctl(f, "--json", "sessions", "--user", "carol", "--since", "1h",
	        NULL);
	assert_status(r, 0);
	lines = json_lines(r.out);
	assert_int_equal(json_array_size(lines), 1);
	o = json_array_get(lines, 0);
	assert_string_equal(json_string_value(json_object_get(o, "conn_id")),
	                    "c-recent");
	assert_int_equal(json_integer_value(json_object_get(o, "opened_at")),
	                 now - 30 * 60 * SEC);
	assert_non_null(json_string_value(json_object_get(o, "opened_at_iso")));
	assert_int_equal(json_integer_value(json_object_get(o, "close_code")),
	                 1000);
	json_decref(lines);
	run_free(&r);

	r = ctl(f, "sessions", "--since", "yesterday", NULL);
	assert_status(r, 2);
	assert_has(r.err, "--since wants an ISO 8601 UTC time");
	run_free(&r);

	r = ctl(f, "sessions", "--limit", "1", NULL);
	assert_status(r, 0);
	assert_has(r.out, "c-recent");
	assert_lacks(r.out, "c-a2");
	run_free(&r);
}

/* --- the database itself --- */

static void test_no_database(void **state)
{
	struct fx *f = *state;
	const char *cmds[] = {"sessions", "audit", "verify", NULL};
	char want[256];

	snprintf(f->db_path, sizeof(f->db_path), "%s/absent.db", f->dir);
	snprintf(want, sizeof(want), "wsgatectl: no database at %s\n",
	         f->db_path);
	for (int i = 0; cmds[i] != NULL; i++) {
		struct run r = ctl(f, cmds[i], NULL);

		assert_status(r, 2);
		assert_string_equal(r.err, want);
		run_free(&r);
	}
	/* Opened read-only: nothing was created. */
	assert_int_equal(access(f->db_path, F_OK), -1);
	snprintf(f->db_path, sizeof(f->db_path), "%s/wsgate.db", f->dir);
}

/* --- time arguments (admin/time_arg.c, linked directly) --- */

static void test_time_arguments(void **state)
{
	const int64_t now = INT64_C(1795684677123456);
	char text[TIME_ARG_TEXT_MAX];
	int64_t t;

	(void)state;
	assert_int_equal(time_arg_parse("2026-11-26T09:00:00Z", now, &t), 0);
	assert_int_equal(t, INT64_C(1795683600000000));
	assert_int_equal(time_arg_parse("2026-11-26T11:00:00+02:00", now, &t),
	                 0);
	assert_int_equal(t, INT64_C(1795683600000000));
	assert_int_equal(time_arg_parse("2026-11-26 09:00", now, &t), 0);
	assert_int_equal(t, INT64_C(1795683600000000));
	assert_int_equal(time_arg_parse("2026-11-26T09:17:57.123456Z", now, &t),
	                 0);
	assert_int_equal(t, now);
	assert_int_equal(time_arg_parse("2026-11-26", now, &t), 0);
	assert_int_equal(t, INT64_C(1795651200000000));
	assert_int_equal(time_arg_parse("2024-02-29T00:00:00Z", now, &t), 0);
	assert_int_equal(time_arg_parse("1h", now, &t), 0);
	assert_int_equal(t, now - 3600 * SEC);
	assert_int_equal(time_arg_parse("30m", now, &t), 0);
	assert_int_equal(t, now - 1800 * SEC);
	assert_int_equal(time_arg_parse("1h30m", now, &t), 0);
	assert_int_equal(t, now - 5400 * SEC);
	assert_int_equal(time_arg_parse("250ms", now, &t), 0);
	assert_int_equal(t, now - 250000);
	assert_int_equal(time_arg_parse("2d", now, &t), 0);
	assert_int_equal(t, now - 2 * 86400 * SEC);

	static const char *const bad[] = {"",
	                                  "1",
	                                  "h",
	                                  "1x",
	                                  "-1h",
	                                  "1h ",
	                                  "yesterday",
	                                  "2026-13-01",
	                                  "2025-02-29",
	                                  "2026-11-26T24:00:00Z",
	                                  "2026-11-26T09:00:00Q",
	                                  "2026-11-26T09",
	                                  "99999999999999999999h",
	                                  NULL};
	for (int i = 0; bad[i] != NULL; i++) {
		t = 42;
		if (time_arg_parse(bad[i], now, &t) == 0)
			fail_msg("'%s' was accepted", bad[i]);
		assert_int_equal(t, 42);
	}

	assert_string_equal(time_arg_format(now, text, sizeof(text)),
	                    "2026-11-26T09:17:57.123Z");
	assert_string_equal(time_arg_format(0, text, sizeof(text)),
	                    "1970-01-01T00:00:00.000Z");
	assert_string_equal(time_arg_format(-1, text, sizeof(text)),
	                    "1969-12-31T23:59:59.999Z");
	assert_string_equal(
	    time_arg_format(INT64_C(951782400000000), text, sizeof(text)),
	    "2000-02-29T00:00:00.000Z");
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
	    T(test_verify_passes_on_a_clean_log),
	    T(test_verify_names_an_altered_row_once),
	    T(test_verify_names_a_gap),
	    T(test_verify_names_a_row_for_another_user),
	    T(test_verify_checks_sessions_of_connections),
	    T(test_verify_finds_rows_cut_off_the_end),
	    T(test_verify_finds_a_rechained_tail),
	    T(test_verify_without_the_key),
	    T(test_verify_with_another_key),
	    T(test_verify_from_a_prune_record),
	    T(test_verify_from_a_forged_prune_record),
	    T(test_verify_checks_the_heads),
	    T(test_verify_against_a_given_head),
	    T(test_verify_refuses_an_older_format),
	    T(test_verify_checks_events_of_rows),
	    T(test_verify_json),
	    T(test_verify_reads_beside_a_writer),
	    T(test_audit_filters),
	    T(test_audit_limit_keeps_the_newest),
	    T(test_audit_notes_queued_rows_without_outcome),
	    T(test_trace_tells_the_story),
	    T(test_trace_of_an_id_several_users_used),
	    T(test_trace_json),
	    T(test_trace_of_no_event),
	    T(test_sessions),
	    T(test_no_database),
	    cmocka_unit_test(test_time_arguments),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
