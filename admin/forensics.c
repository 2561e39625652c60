/* forensics: sessions, audit and trace over the audit store (see .h). */
#include "forensics.h"

#include "auditdb.h"
#include "ctl_exit.h"
#include "output.h"
#include "time_arg.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define JI(x) ((json_int_t)(x))

/* What a queued row without an outcome row means (see .h). */
static const char *outcome_note(bool no_outcome, bool session_open)
{
	if (!no_outcome)
		return NULL;
	return session_open ? FORENSICS_NOTE_IN_FLIGHT : FORENSICS_NOTE_STOPPED;
}

/* SQLite's LIMIT for "limit rows, plus one to tell whether there are
 * more"; -1 is no limit. */
static int64_t limit_plus_one(int64_t limit)
{
	return limit > 0 ? limit + 1 : -1;
}

static void more_rows_note(const char *cmd, int64_t limit, const char *which)
{
	fprintf(stderr,
	        "wsgatectl: %s: more rows match; showing the %s %" PRId64
	        " (raise --limit, or narrow with --since)\n",
	        cmd, which, limit);
}

static char *fmt_time(int64_t us, char *buf)
{
	return time_arg_format(us, buf, TIME_ARG_TEXT_MAX);
}

static char *fmt_int(int64_t v, char *buf, size_t cap)
{
	snprintf(buf, cap, "%" PRId64, v);
	return buf;
}

/* ------------------------------------------------------------------ */
/* sessions                                                            */

/* JWT exp is in seconds; a value too large for seconds is taken as
 * microseconds, like every other time in the database. */
static int64_t token_exp_us(int64_t v)
{
	return v < INT64_C(100000000000) ? v * 1000000 : v;
}

static const char sessions_sql[] =
    "SELECT conn_id, user_id, opened_at, closed_at, close_code,"
    " close_reason, peer, user_agent, token_jti, token_exp"
    " FROM sessions"
    " WHERE (?1 IS NULL OR user_id = ?1)"
    " AND (?2 IS NULL OR closed_at IS NULL OR closed_at >= ?2)"
    " ORDER BY opened_at DESC, conn_id DESC LIMIT ?3";

enum {
	S_CONN,
	S_USER,
	S_OPENED,
	S_CLOSED,
	S_CODE,
	S_REASON,
	S_PEER,
	S_UA,
	S_JTI,
	S_EXP
};

static json_t *session_json(sqlite3_stmt *st)
{
	json_t *o = json_object();
	int64_t opened = sqlite3_column_int64(st, S_OPENED), closed, code, exp;
	bool has_closed = auditdb_int(st, S_CLOSED, &closed);
	bool has_exp = auditdb_int(st, S_EXP, &exp);
	char text[TIME_ARG_TEXT_MAX];

	json_object_set_new(o, "conn_id",
	                    out_json_text(auditdb_text(st, S_CONN)));
	json_object_set_new(o, "user_id",
	                    out_json_text(auditdb_text(st, S_USER)));
	out_json_time(o, "opened_at", opened, true);
	out_json_time(o, "closed_at", has_closed ? closed : 0, has_closed);
	json_object_set_new(o, "open", json_boolean(!has_closed));
	json_object_set_new(o, "close_code",
	                    auditdb_int(st, S_CODE, &code)
	                        ? json_integer(JI(code))
	                        : json_null());
	json_object_set_new(o, "close_reason",
	                    out_json_text(auditdb_text(st, S_REASON)));
	json_object_set_new(o, "peer", out_json_text(auditdb_text(st, S_PEER)));
	json_object_set_new(o, "user_agent",
	                    out_json_text(auditdb_text(st, S_UA)));
	json_object_set_new(o, "token_jti",
	                    out_json_text(auditdb_text(st, S_JTI)));
	json_object_set_new(o, "token_exp",
	                    has_exp ? json_integer(JI(exp)) : json_null());
	json_object_set_new(o, "token_exp_iso",
	                    has_exp
	                        ? json_string(fmt_time(token_exp_us(exp), text))
	                        : json_null());
	return o;
}

static int session_row(struct out_table *t, sqlite3_stmt *st)
{
	char opened[TIME_ARG_TEXT_MAX], closed[TIME_ARG_TEXT_MAX];
	char exp_text[TIME_ARG_TEXT_MAX], code[24];
	int64_t v;
	const char *cells[10] = {
	    auditdb_text(st, S_CONN),
	    auditdb_text(st, S_USER),
	    fmt_time(sqlite3_column_int64(st, S_OPENED), opened),
	    auditdb_int(st, S_CLOSED, &v) ? fmt_time(v, closed) : "open",
	    auditdb_int(st, S_CODE, &v) ? fmt_int(v, code, sizeof(code)) : NULL,
	    auditdb_text(st, S_REASON),
	    auditdb_text(st, S_PEER),
	    auditdb_text(st, S_JTI),
	    auditdb_int(st, S_EXP, &v) ? fmt_time(token_exp_us(v), exp_text)
	                               : NULL,
	    auditdb_text(st, S_UA),
	};
	return out_table_add(t, cells);
}

int forensics_sessions(const char *db_path, bool json,
                       const struct sessions_query *q)
{
	static const char *const headers[] = {
	    "CONN_ID", "USER_ID", "OPENED",    "CLOSED",    "CODE",
	    "REASON",  "PEER",    "TOKEN_JTI", "TOKEN_EXP", "USER_AGENT"};
	struct out_table *t = NULL;
	struct auditdb a;
	sqlite3_stmt *st;
	int64_t n = 0;
	int rc, step;

	if ((rc = auditdb_open(&a, db_path)) != EXIT_OK)
		return rc;
	if ((st = auditdb_prepare(&a, sessions_sql)) == NULL) {
		auditdb_close(&a);
		return EXIT_USAGE;
	}
	auditdb_bind_text(st, 1, q->user);
	if (q->has_since)
		sqlite3_bind_int64(st, 2, q->since_us);
	sqlite3_bind_int64(st, 3, limit_plus_one(q->limit));
	if (!json && (t = out_table_new(10, headers)) == NULL) {
		fprintf(stderr, "wsgatectl: out of memory\n");
		rc = EXIT_USAGE;
	}
	while (rc == EXIT_OK && (step = sqlite3_step(st)) == SQLITE_ROW) {
		if (q->limit > 0 && n == q->limit) {
			more_rows_note("sessions", q->limit, "newest");
			break;
		}
		n++;
		if (json)
			rc = out_json_line(session_json(st));
		else if (session_row(t, st) != 0)
			rc = EXIT_USAGE;
	}
	if (rc == EXIT_OK && step != SQLITE_ROW && step != SQLITE_DONE)
		rc = auditdb_fail(&a);
	if (rc == EXIT_OK && !json) {
		if (n == 0)
			printf("no sessions\n");
		else
			out_table_print(t, stdout, 0);
	}
	out_table_free(t);
	sqlite3_finalize(st);
	auditdb_close(&a);
	return rc;
}

/* ------------------------------------------------------------------ */
/* audit                                                               */

/*
 * sel: the matching rows, newest first, one more than the limit.
 * q/done: which of sel's queued rows have an outcome row. There is no index
 * on (conn_id, user_id, seq), so the outcome rows are found in one pass
 * over the ids from the oldest queued row on (outcomes come after their
 * queued row), each looked up in an automatic index of the few queued rows
 * (CROSS JOIN keeps that order).
 */
static const char audit_sql[] =
    "WITH sel AS ("
    "  SELECT d.id, d.user_id, d.seq, d.event_id, d.conn_id,"
    "   d.conn_user_id, d.status, d.at FROM deliveries d"
    "  WHERE (?1 IS NULL OR d.user_id = ?1 OR d.conn_user_id = ?1)"
    "  AND (?2 IS NULL OR d.event_id = ?2)"
    "  AND (?3 IS NULL OR d.conn_id = ?3)"
    "  AND (?4 IS NULL OR d.at >= ?4)"
    "  AND (?5 IS NULL OR EXISTS (SELECT 1 FROM events e"
    "   WHERE e.user_id = d.user_id AND e.seq = d.seq AND e.run_id = ?5))"
    "  ORDER BY d.id DESC LIMIT ?6),"
    " q AS MATERIALIZED (SELECT id, conn_id, user_id, seq FROM sel"
    "  WHERE status = 'queued'),"
    " done AS (SELECT DISTINCT q.id AS id FROM deliveries o CROSS JOIN q"
    "  ON o.conn_id = q.conn_id AND o.user_id = q.user_id"
    "  AND o.seq = q.seq AND o.id > q.id"
    "  WHERE o.id > (SELECT MIN(id) FROM q)"
    "  AND o.status IN ('written', 'dropped'))"
    " SELECT sel.id, sel.user_id, sel.seq, sel.event_id, sel.conn_id,"
    "  sel.conn_user_id, sel.status, sel.at,"
    "  sel.status = 'queued' AND sel.id NOT IN done,"
    "  s.conn_id IS NOT NULL AND s.closed_at IS NULL,"
    "  (SELECT COUNT(*) FROM sel)"
    " FROM sel LEFT JOIN sessions s ON s.conn_id = sel.conn_id"
    " ORDER BY sel.id";

enum {
	A_ID,
	A_USER,
	A_SEQ,
	A_EVENT,
	A_CONN,
	A_CONN_USER,
	A_STATUS,
	A_AT,
	A_NO_OUTCOME,
	A_SESSION_OPEN,
	A_COUNT
};

#define NOTE_ISOLATION "ISOLATION VIOLATION: user_id != conn_user_id"

/* The row's note: isolation first, then the outcome. */
static const char *audit_note(sqlite3_stmt *st, char *buf, size_t cap)
{
	const char *user = auditdb_text(st, A_USER);
	const char *conn_user = auditdb_text(st, A_CONN_USER);
	bool mismatch =
	    user == NULL || conn_user == NULL || strcmp(user, conn_user) != 0;
	const char *outcome =
	    outcome_note(sqlite3_column_int(st, A_NO_OUTCOME) != 0,
	                 sqlite3_column_int(st, A_SESSION_OPEN) != 0);

	if (mismatch && outcome != NULL)
		snprintf(buf, cap, "%s; %s", NOTE_ISOLATION, outcome);
	else if (mismatch)
		snprintf(buf, cap, "%s", NOTE_ISOLATION);
	else if (outcome != NULL)
		snprintf(buf, cap, "%s", outcome);
	else
		return NULL;
	return buf;
}

static json_t *audit_json(sqlite3_stmt *st)
{
	json_t *o = json_object();
	char note[128];

	json_object_set_new(o, "id",
	                    json_integer(sqlite3_column_int64(st, A_ID)));
	out_json_time(o, "at", sqlite3_column_int64(st, A_AT), true);
	json_object_set_new(o, "status",
	                    out_json_text(auditdb_text(st, A_STATUS)));
	json_object_set_new(o, "user_id",
	                    out_json_text(auditdb_text(st, A_USER)));
	json_object_set_new(o, "seq",
	                    json_integer(sqlite3_column_int64(st, A_SEQ)));
	json_object_set_new(o, "event_id",
	                    out_json_text(auditdb_text(st, A_EVENT)));
	json_object_set_new(o, "conn_id",
	                    out_json_text(auditdb_text(st, A_CONN)));
	json_object_set_new(o, "conn_user_id",
	                    out_json_text(auditdb_text(st, A_CONN_USER)));
	json_object_set_new(o, "note",
	                    out_json_text(audit_note(st, note, sizeof(note))));
	return o;
}

static int audit_row(struct out_table *t, sqlite3_stmt *st)
{
	char id[24], seq[24], at[TIME_ARG_TEXT_MAX], note[128];
	const char *cells[9] = {
	    fmt_int(sqlite3_column_int64(st, A_ID), id, sizeof(id)),
	    fmt_time(sqlite3_column_int64(st, A_AT), at),
	    auditdb_text(st, A_STATUS),
	    auditdb_text(st, A_USER),
	    fmt_int(sqlite3_column_int64(st, A_SEQ), seq, sizeof(seq)),
	    auditdb_text(st, A_EVENT),
	    auditdb_text(st, A_CONN),
	    auditdb_text(st, A_CONN_USER),
	    audit_note(st, note, sizeof(note)),
	};
	if (cells[8] == NULL)
		cells[8] = "";
	return out_table_add(t, cells);
}

int forensics_audit(const char *db_path, bool json, const struct audit_query *q)
{
	static const char *const headers[] = {
	    "ID",       "AT",      "STATUS",       "USER_ID", "SEQ",
	    "EVENT_ID", "CONN_ID", "CONN_USER_ID", "NOTE"};
	struct out_table *t = NULL;
	bool first = true, more = false;
	struct auditdb a;
	sqlite3_stmt *st;
	int rc, step;

	if ((rc = auditdb_open(&a, db_path)) != EXIT_OK)
		return rc;
	if ((st = auditdb_prepare(&a, audit_sql)) == NULL) {
		auditdb_close(&a);
		return EXIT_USAGE;
	}
	auditdb_bind_text(st, 1, q->user);
	auditdb_bind_text(st, 2, q->event_id);
	auditdb_bind_text(st, 3, q->conn_id);
	if (q->has_since)
		sqlite3_bind_int64(st, 4, q->since_us);
	auditdb_bind_text(st, 5, q->run_id);
	sqlite3_bind_int64(st, 6, limit_plus_one(q->limit));
	if (!json && (t = out_table_new(9, headers)) == NULL) {
		fprintf(stderr, "wsgatectl: out of memory\n");
		rc = EXIT_USAGE;
	}
	while (rc == EXIT_OK && (step = sqlite3_step(st)) == SQLITE_ROW) {
		/* Ascending: the one row past the limit is the oldest. */
		if (first && q->limit > 0 &&
		    sqlite3_column_int64(st, A_COUNT) > q->limit) {
			first = false;
			more = true;
			continue;
		}
		first = false;
		if (json)
			rc = out_json_line(audit_json(st));
		else if (audit_row(t, st) != 0)
			rc = EXIT_USAGE;
	}
	if (rc == EXIT_OK && step != SQLITE_DONE)
		rc = auditdb_fail(&a);
	if (rc == EXIT_OK && !json) {
		if (out_table_rows(t) == 0)
			printf("no delivery rows\n");
		else
			out_table_print(t, stdout, 0);
	}
	if (rc == EXIT_OK && more)
		more_rows_note("audit", q->limit, "newest");
	out_table_free(t);
	sqlite3_finalize(st);
	auditdb_close(&a);
	return rc;
}

/* ------------------------------------------------------------------ */
/* trace                                                               */

/* One (user, seq) an event id names. */
struct trace_key {
	char *user_id;
	int64_t seq;
};

/* One delivery row of the event, with its connection's session. */
struct trace_row {
	int64_t id, at;
	char *event_id, *conn_id, *conn_user_id, *status;
	bool has_session, session_closed, has_code;
	char *session_user, *close_reason;
	int64_t opened_at, closed_at, close_code;
	const char *note; /* static text or NULL */
	bool conn_first;  /* first row of its connection */
};

/* The event row itself, when still retained. */
struct trace_event {
	bool retained;
	char *event_id, *type, *thread_id, *run_id;
	int64_t accepted_at, payload_bytes;
	char sha256_hex[65];
	bool pending;
};

static const char trace_keys_sql[] =
    "SELECT user_id, seq FROM events"
    " WHERE event_id = ?1 AND (?2 IS NULL OR user_id = ?2)"
    " UNION SELECT user_id, seq FROM deliveries"
    " WHERE event_id = ?1 AND (?2 IS NULL OR user_id = ?2)"
    " ORDER BY 1, 2";

static const char trace_event_sql[] =
    "SELECT event_id, type, thread_id, run_id, accepted_at,"
    " length(payload), payload_sha256, pending"
    " FROM events WHERE user_id = ? AND seq = ?";

static const char trace_rows_sql[] =
    "SELECT d.id, d.at, d.event_id, d.conn_id, d.conn_user_id, d.status,"
    " s.conn_id IS NOT NULL, s.user_id, s.opened_at, s.closed_at,"
    " s.close_code, s.close_reason"
    " FROM deliveries d LEFT JOIN sessions s ON s.conn_id = d.conn_id"
    " WHERE d.user_id = ? AND d.seq = ? ORDER BY d.id";

static char *dup_text(sqlite3_stmt *st, int col)
{
	const char *s = auditdb_text(st, col);

	return strdup(s != NULL ? s : "");
}

static void trace_rows_free(struct trace_row *rows, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(rows[i].event_id);
		free(rows[i].conn_id);
		free(rows[i].conn_user_id);
		free(rows[i].status);
		free(rows[i].session_user);
		free(rows[i].close_reason);
	}
	free(rows);
}

static void trace_event_free(struct trace_event *ev)
{
	free(ev->event_id);
	free(ev->type);
	free(ev->thread_id);
	free(ev->run_id);
	memset(ev, 0, sizeof(*ev));
}

static int load_event(struct auditdb *a, const struct trace_key *k,
                      struct trace_event *ev)
{
	sqlite3_stmt *st = auditdb_prepare(a, trace_event_sql);
	int step, rc = EXIT_OK;

	memset(ev, 0, sizeof(*ev));
	if (st == NULL)
		return EXIT_USAGE;
	sqlite3_bind_text(st, 1, k->user_id, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, k->seq);
	step = sqlite3_step(st);
	if (step == SQLITE_ROW) {
		const unsigned char *sha = sqlite3_column_blob(st, 6);
		int sha_len = sqlite3_column_bytes(st, 6);

		ev->retained = true;
		ev->event_id = dup_text(st, 0);
		ev->type = dup_text(st, 1);
		ev->thread_id = dup_text(st, 2);
		ev->run_id = dup_text(st, 3);
		ev->accepted_at = sqlite3_column_int64(st, 4);
		ev->payload_bytes = sqlite3_column_int64(st, 5);
		for (int i = 0; i < sha_len && i < 32; i++)
			sprintf(ev->sha256_hex + 2 * i, "%02x", sha[i]);
		ev->pending = sqlite3_column_int(st, 7) != 0;
	} else if (step != SQLITE_DONE) {
		rc = auditdb_fail(a);
	}
	sqlite3_finalize(st);
	return rc;
}

/* The rows, grouped by connection (connections in order of their first
 * row, rows in id order), each queued row given its outcome note. */
static void trace_group(struct trace_row *rows, size_t n)
{
	struct trace_row tmp;
	size_t i, j, k;

	/* Stable: move each later row of the same connection up behind
	 * the group it belongs to. */
	for (i = 0; i < n; i = j) {
		rows[i].conn_first = true;
		for (j = i + 1;
		     j < n && strcmp(rows[j].conn_id, rows[i].conn_id) == 0;
		     j++)
			;
		for (k = j; k < n; k++) {
			if (strcmp(rows[k].conn_id, rows[i].conn_id) != 0)
				continue;
			tmp = rows[k];
			memmove(&rows[j + 1], &rows[j],
			        (k - j) * sizeof(*rows));
			rows[j++] = tmp;
		}
	}
	for (i = 0; i < n; i = j) {
		bool has_outcome = false;

		for (j = i; j < n && (j == i || !rows[j].conn_first); j++)
			if (strcmp(rows[j].status, "written") == 0 ||
			    strcmp(rows[j].status, "dropped") == 0)
				has_outcome = true;
		for (k = i; k < j; k++)
			if (strcmp(rows[k].status, "queued") == 0)
				rows[k].note = outcome_note(
				    !has_outcome, rows[k].has_session &&
				                      !rows[k].session_closed);
	}
}

static int load_rows(struct auditdb *a, const struct trace_key *k,
                     struct trace_row **out, size_t *out_n)
{
	sqlite3_stmt *st = auditdb_prepare(a, trace_rows_sql);
	struct trace_row *rows = NULL, *r;
	size_t n = 0, cap = 0;
	int step;

	*out = NULL;
	*out_n = 0;
	if (st == NULL)
		return EXIT_USAGE;
	sqlite3_bind_text(st, 1, k->user_id, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, k->seq);
	while ((step = sqlite3_step(st)) == SQLITE_ROW) {
		if (n == cap) {
			size_t ncap = cap == 0 ? 8 : cap * 2;
			struct trace_row *grown =
			    realloc(rows, ncap * sizeof(*rows));

			if (grown == NULL)
				break;
			rows = grown;
			cap = ncap;
		}
		r = &rows[n++];
		memset(r, 0, sizeof(*r));
		r->id = sqlite3_column_int64(st, 0);
		r->at = sqlite3_column_int64(st, 1);
		r->event_id = dup_text(st, 2);
		r->conn_id = dup_text(st, 3);
		r->conn_user_id = dup_text(st, 4);
		r->status = dup_text(st, 5);
		r->has_session = sqlite3_column_int(st, 6) != 0;
		if (r->has_session) {
			r->session_user = dup_text(st, 7);
			r->opened_at = sqlite3_column_int64(st, 8);
			r->session_closed = auditdb_int(st, 9, &r->closed_at);
			r->has_code = auditdb_int(st, 10, &r->close_code);
			r->close_reason = dup_text(st, 11);
		}
		if (r->event_id == NULL || r->conn_id == NULL ||
		    r->conn_user_id == NULL || r->status == NULL ||
		    (r->has_session &&
		     (r->session_user == NULL || r->close_reason == NULL))) {
			step = SQLITE_NOMEM;
			break;
		}
	}
	sqlite3_finalize(st);
	if (step != SQLITE_DONE) {
		trace_rows_free(rows, n);
		if (step == SQLITE_NOMEM || step == SQLITE_ROW) {
			fprintf(stderr, "wsgatectl: out of memory\n");
			return EXIT_USAGE;
		}
		return auditdb_fail(a);
	}
	trace_group(rows, n);
	*out = rows;
	*out_n = n;
	return EXIT_OK;
}

/* "opened T, closed T (code reason)" or "opened T, open" or "no session
 * row"; with an isolation warning when the connection is another user's. */
static void conn_summary(const struct trace_row *r, const char *user, char *buf,
                         size_t cap)
{
	char opened[TIME_ARG_TEXT_MAX], closed[TIME_ARG_TEXT_MAX];
	char who[320], reason[160];
	size_t len;

	out_clean(r->conn_user_id, who, sizeof(who));
	if (!r->has_session)
		len = (size_t)snprintf(buf, cap, "of %s, no session row", who);
	else if (!r->session_closed)
		len = (size_t)snprintf(buf, cap, "of %s, opened %s, open", who,
		                       fmt_time(r->opened_at, opened));
	else
		len = (size_t)snprintf(
		    buf, cap, "of %s, opened %s, closed %s (%" PRId64 " %s)",
		    who, fmt_time(r->opened_at, opened),
		    fmt_time(r->closed_at, closed),
		    r->has_code ? r->close_code : 0,
		    out_clean(r->close_reason, reason, sizeof(reason)));
	if (len < cap && strcmp(r->conn_user_id, user) != 0)
		snprintf(
		    buf + len, cap - len,
		    "; ISOLATION VIOLATION: the event is for another user");
	else if (len < cap && r->has_session &&
	         strcmp(r->session_user, r->conn_user_id) != 0)
		snprintf(
		    buf + len, cap - len,
		    "; ISOLATION VIOLATION: the session belongs to user %s",
		    out_clean(r->session_user, who, sizeof(who)));
}

static int trace_print_text(const struct trace_key *k,
                            const struct trace_event *ev,
                            const struct trace_row *rows, size_t n,
                            const char *event_id)
{
	static const char *const headers[] = {"CONN_ID", "ROW",   "STATUS",
	                                      "AT",      "DELAY", "NOTE"};
	char a[320], b[320], t1[TIME_ARG_TEXT_MAX], id[24], delay[48];
	char line[1024], other[400];
	struct out_table *t;
	size_t i;

	printf("event %s of user %s\n", out_clean(event_id, a, sizeof(a)),
	       out_clean(k->user_id, b, sizeof(b)));
	printf("  %-11s %" PRId64 "\n", "seq", k->seq);
	if (!ev->retained) {
		printf("  %-11s %s\n", "event",
		       "no longer in the events table (pruned)");
	} else {
		printf("  %-11s %s\n", "type",
		       out_clean(ev->type, a, sizeof(a)));
		printf("  %-11s %s\n", "run",
		       out_clean(ev->run_id, a, sizeof(a)));
		printf("  %-11s %s\n", "thread",
		       out_clean(ev->thread_id, a, sizeof(a)));
		printf("  %-11s %s\n", "accepted",
		       fmt_time(ev->accepted_at, t1));
		printf("  %-11s %" PRId64 " bytes, sha256 %s\n", "payload",
		       ev->payload_bytes, ev->sha256_hex);
		printf("  %-11s %s\n", "pending", ev->pending ? "yes" : "no");
	}
	if (n == 0) {
		printf("  %-11s none%s\n", "deliveries",
		       ev->retained && ev->pending
		           ? " (pending: no connection of the user yet)"
		           : "");
		return EXIT_OK;
	}
	for (i = 0; i < n; i++) {
		if (!rows[i].conn_first)
			continue;
		conn_summary(&rows[i], k->user_id, line, sizeof(line));
		printf("  %-11s %s %s\n", "connection",
		       out_clean(rows[i].conn_id, a, sizeof(a)), line);
	}
	if ((t = out_table_new(6, headers)) == NULL) {
		fprintf(stderr, "wsgatectl: out of memory\n");
		return EXIT_USAGE;
	}
	for (i = 0; i < n; i++) {
		const struct trace_row *r = &rows[i];
		const char *note = r->note;

		if (ev->retained)
			snprintf(delay, sizeof(delay), "%+.3f ms",
			         (double)(r->at - ev->accepted_at) / 1000.0);
		else
			snprintf(delay, sizeof(delay), "-");
		/* What the connection's summary line cannot say: a row
		 * unlike the others of its connection. */
		if (strcmp(r->conn_user_id, k->user_id) != 0) {
			snprintf(other, sizeof(other),
			         "ISOLATION VIOLATION: conn user %s%s%s",
			         r->conn_user_id, note ? "; " : "",
			         note ? note : "");
			note = other;
		} else if (ev->retained &&
		           strcmp(r->event_id, ev->event_id) != 0) {
			snprintf(other, sizeof(other), "row names event %s%s%s",
			         r->event_id, note ? "; " : "",
			         note ? note : "");
			note = other;
		}
		const char *cells[6] = {
		    r->conn_id, fmt_int(r->id, id, sizeof(id)),
		    r->status,  fmt_time(r->at, t1),
		    delay,      note != NULL ? note : ""};
		if (out_table_add(t, cells) != 0) {
			out_table_free(t);
			fprintf(stderr, "wsgatectl: out of memory\n");
			return EXIT_USAGE;
		}
	}
	out_table_print(t, stdout, 2);
	out_table_free(t);
	return EXIT_OK;
}

static json_t *trace_session_json(const struct trace_row *r)
{
	json_t *o;

	if (!r->has_session)
		return json_null();
	o = json_object();
	json_object_set_new(o, "user_id", out_json_text(r->session_user));
	out_json_time(o, "opened_at", r->opened_at, true);
	out_json_time(o, "closed_at", r->closed_at, r->session_closed);
	json_object_set_new(o, "close_code",
	                    r->has_code ? json_integer(JI(r->close_code))
	                                : json_null());
	json_object_set_new(o, "close_reason",
	                    r->session_closed ? out_json_text(r->close_reason)
	                                      : json_null());
	return o;
}

static json_t *trace_json(const struct trace_key *k,
                          const struct trace_event *ev,
                          const struct trace_row *rows, size_t n,
                          const char *event_id)
{
	json_t *o = json_object(), *conns = json_array(), *conn = NULL;
	json_t *dels = NULL;

	json_object_set_new(o, "event_id", out_json_text(event_id));
	json_object_set_new(o, "user_id", out_json_text(k->user_id));
	json_object_set_new(o, "seq", json_integer(JI(k->seq)));
	json_object_set_new(o, "retained", json_boolean(ev->retained));
	json_object_set_new(o, "type", out_json_text(ev->type));
	json_object_set_new(o, "thread_id", out_json_text(ev->thread_id));
	json_object_set_new(o, "run_id", out_json_text(ev->run_id));
	out_json_time(o, "accepted_at", ev->accepted_at, ev->retained);
	json_object_set_new(o, "payload_bytes",
	                    ev->retained ? json_integer(JI(ev->payload_bytes))
	                                 : json_null());
	json_object_set_new(o, "payload_sha256",
	                    ev->retained ? json_string(ev->sha256_hex)
	                                 : json_null());
	json_object_set_new(o, "pending",
	                    ev->retained ? json_boolean(ev->pending)
	                                 : json_null());
	for (size_t i = 0; i < n; i++) {
		const struct trace_row *r = &rows[i];
		json_t *d = json_object();

		if (r->conn_first) {
			conn = json_object();
			dels = json_array();
			json_object_set_new(conn, "conn_id",
			                    out_json_text(r->conn_id));
			json_object_set_new(conn, "conn_user_id",
			                    out_json_text(r->conn_user_id));
			json_object_set_new(conn, "session",
			                    trace_session_json(r));
			json_object_set_new(conn, "deliveries", dels);
			json_array_append_new(conns, conn);
		}
		json_object_set_new(d, "id", json_integer(JI(r->id)));
		json_object_set_new(d, "status", out_json_text(r->status));
		out_json_time(d, "at", r->at, true);
		json_object_set_new(
		    d, "delay_us",
		    ev->retained ? json_integer(JI(r->at - ev->accepted_at))
		                 : json_null());
		json_object_set_new(d, "event_id", out_json_text(r->event_id));
		json_object_set_new(d, "conn_user_id",
		                    out_json_text(r->conn_user_id));
		json_object_set_new(d, "note", out_json_text(r->note));
		json_array_append_new(dels, d);
	}
	json_object_set_new(o, "connections", conns);
	return o;
}

static int load_keys(struct auditdb *a, const char *event_id, const char *user,
                     struct trace_key **out, size_t *out_n)
{
	sqlite3_stmt *st = auditdb_prepare(a, trace_keys_sql);
	struct trace_key *keys = NULL;
	size_t n = 0;
	int step;

	*out = NULL;
	*out_n = 0;
	if (st == NULL)
		return EXIT_USAGE;
	sqlite3_bind_text(st, 1, event_id, -1, SQLITE_STATIC);
	auditdb_bind_text(st, 2, user);
	while ((step = sqlite3_step(st)) == SQLITE_ROW) {
		struct trace_key *grown =
		    realloc(keys, (n + 1) * sizeof(*keys));

		if (grown == NULL ||
		    (grown[n].user_id = dup_text(st, 0)) == NULL) {
			keys = grown != NULL ? grown : keys;
			step = SQLITE_NOMEM;
			break;
		}
		keys = grown;
		keys[n++].seq = sqlite3_column_int64(st, 1);
	}
	sqlite3_finalize(st);
	if (step != SQLITE_DONE) {
		for (size_t i = 0; i < n; i++)
			free(keys[i].user_id);
		free(keys);
		if (step == SQLITE_NOMEM) {
			fprintf(stderr, "wsgatectl: out of memory\n");
			return EXIT_USAGE;
		}
		return auditdb_fail(a);
	}
	*out = keys;
	*out_n = n;
	return EXIT_OK;
}

int forensics_trace(const char *db_path, bool json, const char *event_id,
                    const char *user)
{
	struct trace_key *keys;
	struct auditdb a;
	size_t nkeys, i;
	char e[320], u[320];
	int rc;

	if ((rc = auditdb_open(&a, db_path)) != EXIT_OK)
		return rc;
	if ((rc = load_keys(&a, event_id, user, &keys, &nkeys)) != EXIT_OK) {
		auditdb_close(&a);
		return rc;
	}
	if (nkeys == 0) {
		out_clean(event_id, e, sizeof(e));
		if (user != NULL)
			fprintf(stderr, "wsgatectl: no event %s for user %s\n",
			        e, out_clean(user, u, sizeof(u)));
		else
			fprintf(stderr, "wsgatectl: no event %s\n", e);
		rc = EXIT_CHECK;
	}
	for (i = 0; i < nkeys && rc == EXIT_OK; i++) {
		struct trace_event ev;
		struct trace_row *rows = NULL;
		size_t n = 0;

		rc = load_event(&a, &keys[i], &ev);
		if (rc == EXIT_OK)
			rc = load_rows(&a, &keys[i], &rows, &n);
		if (rc == EXIT_OK && json) {
			rc = out_json_line(
			    trace_json(&keys[i], &ev, rows, n, event_id));
		} else if (rc == EXIT_OK) {
			if (i > 0)
				printf("\n");
			rc = trace_print_text(&keys[i], &ev, rows, n, event_id);
		}
		trace_rows_free(rows, n);
		trace_event_free(&ev);
	}
	for (i = 0; i < nkeys; i++)
		free(keys[i].user_id);
	free(keys);
	auditdb_close(&a);
	return rc;
}
