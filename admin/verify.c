/* verify: isolation, dense ids, hash chain and tail of the audit log (see
 * .h). */
#include "verify.h"

#include "audit_chain.h"
#include "auditdb.h"
#include "ctl_exit.h"
#include "output.h"
#include "time_arg.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define JI(x) ((json_int_t)(x))

/* Enough for any id the sidecar writes (256 bytes) after cleaning. */
#define TEXT_MAX 320

struct verify {
	struct auditdb a;
	bool json;
	int out_rc; /* EXIT_USAGE once output could not be written */

	/* The key, when it could be read. */
	const char *key_path;
	bool have_key;
	struct audit_key key;

	/* Where the chain starts. */
	int64_t base_id;
	unsigned char base_chain[AUDIT_CHAIN_LEN];
	bool anchored, anchor_chain_ok;

	/* What was seen. */
	uint64_t rows;
	int64_t first_id, last_id;
	uint64_t isolation;
	uint64_t gaps, missing_ids, below_anchor;
	uint64_t chain_checked, chain_bad, chain_unchecked;
	uint64_t heads, tail;
};

/* One violation: "CHECK: message" for people, or fields plus check and
 * message as one JSON object. Takes fields (may be NULL). */
static void report(struct verify *v, const char *check, json_t *fields,
                   const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static void report(struct verify *v, const char *check, json_t *fields,
                   const char *fmt, ...)
{
	char msg[1536];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (!v->json) {
		printf("%s: %s\n", check, msg);
		json_decref(fields);
		return;
	}
	if (fields == NULL)
		fields = json_object();
	json_object_set_new(fields, "check", json_string(check));
	json_object_set_new(fields, "message", out_json_text(msg));
	if (out_json_line(fields) != EXIT_OK)
		v->out_rc = EXIT_USAGE;
}

static uint64_t violations(const struct verify *v)
{
	return v->isolation + v->gaps + v->below_anchor + v->chain_bad +
	       v->tail;
}

/* --- the row checks --- */

enum {
	R_ID,
	R_USER,
	R_SEQ,
	R_EVENT,
	R_CONN,
	R_CONN_USER,
	R_STATUS,
	R_AT,
	R_CHAIN,
	R_SESSION_USER
};

static const char rows_sql[] =
    "SELECT d.id, d.user_id, d.seq, d.event_id, d.conn_id, d.conn_user_id,"
    " d.status, d.at, d.chain, s.user_id"
    " FROM deliveries d LEFT JOIN sessions s ON s.conn_id = d.conn_id"
    " ORDER BY d.id";

static const char *text_or_empty(sqlite3_stmt *st, int col)
{
	const char *s = auditdb_text(st, col);

	return s != NULL ? s : "";
}

/* The fields naming a row in a JSON violation. */
static json_t *row_fields(const struct audit_row *r)
{
	json_t *o = json_object();

	json_object_set_new(o, "id", json_integer(JI(r->id)));
	json_object_set_new(o, "user_id", out_json_text(r->user_id));
	json_object_set_new(o, "seq", json_integer(JI(r->seq)));
	json_object_set_new(o, "event_id", out_json_text(r->event_id));
	json_object_set_new(o, "conn_id", out_json_text(r->conn_id));
	json_object_set_new(o, "conn_user_id", out_json_text(r->conn_user_id));
	json_object_set_new(o, "status", out_json_text(r->status));
	out_json_time(o, "at", r->at, true);
	return o;
}

static void check_isolation(struct verify *v, const struct audit_row *r,
                            const char *session_user)
{
	char user[TEXT_MAX], conn_user[TEXT_MAX], conn[TEXT_MAX];
	char event[TEXT_MAX], other[TEXT_MAX];

	out_clean(r->user_id, user, sizeof(user));
	out_clean(r->conn_user_id, conn_user, sizeof(conn_user));
	out_clean(r->conn_id, conn, sizeof(conn));
	if (strcmp(r->user_id, r->conn_user_id) != 0) {
		v->isolation++;
		report(v, "isolation", row_fields(r),
		       "row %" PRId64 ": event %s (seq %" PRIu64
		       ") of user '%s' went to connection %s of user '%s' (%s)",
		       r->id, out_clean(r->event_id, event, sizeof(event)),
		       r->seq, user, conn, conn_user, r->status);
	}
	if (session_user != NULL &&
	    strcmp(session_user, r->conn_user_id) != 0) {
		json_t *f = row_fields(r);

		json_object_set_new(f, "session_user_id",
		                    out_json_text(session_user));
		v->isolation++;
		report(v, "isolation", f,
		       "row %" PRId64 ": connection %s is recorded as user "
		       "'%s' but its session belongs to user '%s'",
		       r->id, conn, conn_user,
		       out_clean(session_user, other, sizeof(other)));
	}
}

/* prev_id: the id before this row (the anchor's before the first). */
static bool check_ids(struct verify *v, int64_t prev_id, int64_t id)
{
	json_t *f;

	if (id == prev_id + 1)
		return true;
	if (id <= prev_id) {
		/* Only the first row can be here (ids increase): it lies
		 * at or below the anchor pruning recorded. */
		v->below_anchor++;
		f = json_object();
		json_object_set_new(f, "id", json_integer(JI(id)));
		json_object_set_new(f, "anchor_id", json_integer(JI(prev_id)));
		report(v, "ids", f,
		       "row %" PRId64 " is at or below the anchor id %" PRId64
		       " (pruned rows are gone; this one should not exist)",
		       id, prev_id);
		return false;
	}
	v->gaps++;
	v->missing_ids += (uint64_t)(id - prev_id - 1);
	f = json_object();
	json_object_set_new(f, "missing_from", json_integer(JI(prev_id + 1)));
	json_object_set_new(f, "missing_to", json_integer(JI(id - 1)));
	json_object_set_new(f, "after_id",
	                    v->rows > 0 ? json_integer(JI(prev_id))
	                                : json_null());
	json_object_set_new(f, "before_id", json_integer(JI(id)));
	char missing[128], after[96];
	if (id - prev_id == 2)
		snprintf(missing, sizeof(missing), "id %" PRId64 " missing",
		         prev_id + 1);
	else
		snprintf(missing, sizeof(missing),
		         "ids %" PRId64 "..%" PRId64 " missing (%" PRId64
		         " rows)",
		         prev_id + 1, id - 1, id - prev_id - 1);
	if (v->rows > 0)
		snprintf(after, sizeof(after), "rows %" PRId64 " and", prev_id);
	else if (v->anchored)
		snprintf(after, sizeof(after),
		         "the anchor (id %" PRId64 ") and", prev_id);
	else
		snprintf(after, sizeof(after), "the start of the log and");
	report(v, "ids", f, "gap: %s, between %s %s%" PRId64, missing, after,
	       v->rows > 0 ? "" : "row ", id);
	return false;
}

/*
 * Checks row r against prev (when known) and stores in prev what the next
 * row must be chained from: the stored chain, so that one altered row is
 * named once.
 */
static void check_chain(struct verify *v, const struct audit_row *r,
                        const void *stored, int stored_len, bool follows_gap,
                        unsigned char prev[AUDIT_CHAIN_LEN], bool *prev_known)
{
	unsigned char want[AUDIT_CHAIN_LEN];
	bool stored_ok = stored != NULL && stored_len == AUDIT_CHAIN_LEN;
	bool computed = false;

	if (v->have_key && *prev_known && !follows_gap) {
		audit_chain_next(&v->key, prev, r, want);
		computed = true;
		v->chain_checked++;
		if (!stored_ok || memcmp(stored, want, AUDIT_CHAIN_LEN) != 0) {
			v->chain_bad++;
			report(v, "chain", row_fields(r),
			       "row %" PRId64 ": its chain does not match its "
			       "fields and the previous row's chain (row "
			       "altered, forged or chained with another key)",
			       r->id);
		}
	} else if (!stored_ok) {
		/* Seen without the key: not even the shape is right. */
		v->chain_bad++;
		report(v, "chain", row_fields(r),
		       "row %" PRId64 ": its chain is not a %d-byte value",
		       r->id, AUDIT_CHAIN_LEN);
	} else if (v->have_key) {
		v->chain_unchecked++;
	}
	if (stored_ok)
		memcpy(prev, stored, AUDIT_CHAIN_LEN);
	else if (computed)
		memcpy(prev, want, AUDIT_CHAIN_LEN);
	*prev_known = stored_ok || computed;
}

static int check_rows(struct verify *v)
{
	sqlite3_stmt *st = auditdb_prepare(&v->a, rows_sql);
	unsigned char prev[AUDIT_CHAIN_LEN];
	bool prev_known = !v->anchored || v->anchor_chain_ok;
	int64_t prev_id = v->base_id;
	int step;

	if (st == NULL)
		return EXIT_USAGE;
	memcpy(prev, v->base_chain, AUDIT_CHAIN_LEN);
	while ((step = sqlite3_step(st)) == SQLITE_ROW) {
		struct audit_row r = {
		    .id = sqlite3_column_int64(st, R_ID),
		    .user_id = text_or_empty(st, R_USER),
		    .seq = (uint64_t)sqlite3_column_int64(st, R_SEQ),
		    .event_id = text_or_empty(st, R_EVENT),
		    .conn_id = text_or_empty(st, R_CONN),
		    .conn_user_id = text_or_empty(st, R_CONN_USER),
		    .status = text_or_empty(st, R_STATUS),
		    .at = sqlite3_column_int64(st, R_AT),
		};
		bool is_blob = sqlite3_column_type(st, R_CHAIN) == SQLITE_BLOB;
		const void *chain =
		    is_blob ? sqlite3_column_blob(st, R_CHAIN) : NULL;
		int chain_len = is_blob ? sqlite3_column_bytes(st, R_CHAIN) : 0;
		bool dense = check_ids(v, prev_id, r.id);

		check_isolation(v, &r, auditdb_text(st, R_SESSION_USER));
		check_chain(v, &r, chain, chain_len, !dense, prev, &prev_known);
		if (v->rows++ == 0)
			v->first_id = r.id;
		v->last_id = r.id;
		prev_id = r.id;
	}
	sqlite3_finalize(st);
	return step == SQLITE_DONE ? EXIT_OK : auditdb_fail(&v->a);
}

/* --- the tail: chain heads --- */

static const char heads_sql[] =
    "SELECT h.at, h.id, h.chain, h.reason, d.id IS NOT NULL, d.chain"
    " FROM chain_heads h LEFT JOIN deliveries d ON d.id = h.id"
    " ORDER BY h.id, h.at";

static json_t *head_fields(int64_t id, int64_t at, const char *reason)
{
	json_t *o = json_object();

	json_object_set_new(o, "head_id", json_integer(JI(id)));
	out_json_time(o, "head_at", at, true);
	json_object_set_new(o, "head_reason", out_json_text(reason));
	return o;
}

static bool same_chain(sqlite3_stmt *st, int col, const unsigned char *want)
{
	return sqlite3_column_type(st, col) == SQLITE_BLOB &&
	       sqlite3_column_bytes(st, col) == AUDIT_CHAIN_LEN &&
	       memcmp(sqlite3_column_blob(st, col), want, AUDIT_CHAIN_LEN) == 0;
}

static int check_tail(struct verify *v)
{
	sqlite3_stmt *st = auditdb_prepare(&v->a, heads_sql);
	int64_t last = v->rows > 0 ? v->last_id : v->base_id;
	int64_t beyond_id = 0, beyond_at = 0;
	uint64_t beyond = 0;
	char beyond_reason[64] = "", reason[64], when[TIME_ARG_TEXT_MAX];
	int step;

	if (st == NULL)
		return EXIT_USAGE;
	while ((step = sqlite3_step(st)) == SQLITE_ROW) {
		int64_t at = sqlite3_column_int64(st, 0);
		int64_t id = sqlite3_column_int64(st, 1);
		const void *chain = sqlite3_column_type(st, 2) == SQLITE_BLOB
		                        ? sqlite3_column_blob(st, 2)
		                        : NULL;
		bool chain_ok = chain != NULL &&
		                sqlite3_column_bytes(st, 2) == AUDIT_CHAIN_LEN;

		out_clean(text_or_empty(st, 3), reason, sizeof(reason));
		v->heads++;
		if (id > last) {
			/* Rows cut off the end: name the newest head. */
			beyond++;
			beyond_id = id;
			beyond_at = at;
			memcpy(beyond_reason, reason, sizeof(reason));
		} else if (id < v->base_id) {
			continue; /* before the anchor: pruned */
		} else if (id == v->base_id) {
			if (v->anchored && !v->anchor_chain_ok)
				continue; /* reported as the anchor's fault */
			if (chain_ok &&
			    memcmp(chain, v->base_chain, AUDIT_CHAIN_LEN) == 0)
				continue;
			v->tail++;
			report(v, "tail", head_fields(id, at, reason),
			       "the chain head logged %s (%s) for id %" PRId64
			       " does not match %s",
			       time_arg_format(at, when, sizeof(when)), reason,
			       id,
			       v->anchored ? "the anchor chain recorded by "
			                     "pruning"
			                   : "the start of the chain");
		} else if (sqlite3_column_int(st, 4) != 0) {
			if (chain_ok && same_chain(st, 5, chain))
				continue;
			v->tail++;
			report(v, "tail", head_fields(id, at, reason),
			       "the chain head logged %s (%s) for id %" PRId64
			       " differs from row %" PRId64
			       "'s stored chain (rows rewritten after it was "
			       "logged)",
			       time_arg_format(at, when, sizeof(when)), reason,
			       id, id);
		}
		/* else: the id lies in a gap, reported already. */
	}
	sqlite3_finalize(st);
	if (step != SQLITE_DONE)
		return auditdb_fail(&v->a);
	if (beyond > 0) {
		json_t *f = head_fields(beyond_id, beyond_at, beyond_reason);
		char rows[96];

		json_object_set_new(f, "last_id",
		                    v->rows > 0 ? json_integer(JI(last))
		                                : json_null());
		if (v->rows > 0)
			snprintf(rows, sizeof(rows), "the last row is %" PRId64,
			         last);
		else
			snprintf(rows, sizeof(rows), "there are no rows");
		char missing[96];

		if (beyond_id == last + 1)
			snprintf(missing, sizeof(missing), "row %" PRId64 " is",
			         beyond_id);
		else
			snprintf(missing, sizeof(missing),
			         "rows %" PRId64 "..%" PRId64 " are", last + 1,
			         beyond_id);
		v->tail++;
		report(v, "tail", f,
		       "the chain head logged %s (%s) names id %" PRId64
		       " but %s: %s missing (cut off the end)",
		       time_arg_format(beyond_at, when, sizeof(when)),
		       beyond_reason, beyond_id, rows, missing);
	}
	return EXIT_OK;
}

/* --- set-up and summary --- */

/* Reads the key; without it the chain goes unchecked. Returns the reason
 * it could not be read, or NULL. */
static const char *load_key(struct verify *v, char *why, size_t cap)
{
	char err[512];

	if (access(v->key_path, F_OK) != 0 && errno == ENOENT) {
		snprintf(why, cap, "no audit key at %s", v->key_path);
		return why;
	}
	if (audit_key_load(&v->key, v->key_path, 0, err, sizeof(err)) != 0) {
		snprintf(why, cap, "%s", err);
		return why;
	}
	v->have_key = true;
	return NULL;
}

static int check_anchor(struct verify *v)
{
	int rc = auditdb_anchor(&v->a, &v->base_id, v->base_chain, &v->anchored,
	                        &v->anchor_chain_ok);

	if (rc == EXIT_OK && v->anchored && !v->anchor_chain_ok) {
		json_t *f = json_object();

		json_object_set_new(f, "anchor_id",
		                    json_integer(JI(v->base_id)));
		v->chain_bad++;
		report(
		    v, "chain", f,
		    "the anchor recorded by pruning (id %" PRId64
		    ") has no %d-byte chain: the first row cannot be checked",
		    v->base_id, AUDIT_CHAIN_LEN);
	}
	return rc;
}

static json_t *summary_json(const struct verify *v)
{
	json_t *o = json_object();

	json_object_set_new(o, "summary", json_string("verify"));
	json_object_set_new(o, "ok", json_boolean(violations(v) == 0));
	json_object_set_new(o, "rows", json_integer(JI(v->rows)));
	json_object_set_new(o, "first_id",
	                    v->rows > 0 ? json_integer(JI(v->first_id))
	                                : json_null());
	json_object_set_new(o, "last_id",
	                    v->rows > 0 ? json_integer(JI(v->last_id))
	                                : json_null());
	json_object_set_new(o, "anchor_id",
	                    v->anchored ? json_integer(JI(v->base_id))
	                                : json_null());
	json_object_set_new(o, "isolation_violations",
	                    json_integer(JI(v->isolation)));
	json_object_set_new(o, "gaps", json_integer(JI(v->gaps)));
	json_object_set_new(o, "missing_ids", json_integer(JI(v->missing_ids)));
	json_object_set_new(o, "ids_below_anchor",
	                    json_integer(JI(v->below_anchor)));
	json_object_set_new(o, "chain_checked", json_boolean(v->have_key));
	json_object_set_new(o, "chain_mismatches",
	                    json_integer(JI(v->chain_bad)));
	json_object_set_new(o, "rows_not_checkable",
	                    json_integer(JI(v->chain_unchecked)));
	json_object_set_new(o, "chain_heads", json_integer(JI(v->heads)));
	json_object_set_new(o, "tail_violations", json_integer(JI(v->tail)));
	return o;
}

static const char *plural(uint64_t n, const char *one, const char *many)
{
	return n == 1 ? one : many;
}

static void summary_text(const struct verify *v)
{
	char rows[128], isolation[64], ids[128], chain[128], tail[64];
	size_t len;

	len = (size_t)snprintf(rows, sizeof(rows), "%" PRIu64 " %s", v->rows,
	                       plural(v->rows, "row", "rows"));
	if (v->rows > 0 && v->anchored)
		snprintf(rows + len, sizeof(rows) - len,
		         " (ids %" PRId64 "..%" PRId64 ", anchor %" PRId64 ")",
		         v->first_id, v->last_id, v->base_id);
	else if (v->rows > 0)
		snprintf(rows + len, sizeof(rows) - len,
		         " (ids %" PRId64 "..%" PRId64 ")", v->first_id,
		         v->last_id);
	else if (v->anchored)
		snprintf(rows + len, sizeof(rows) - len,
		         " (anchor %" PRId64 ")", v->base_id);

	if (v->isolation == 0)
		snprintf(isolation, sizeof(isolation), "isolation ok");
	else
		snprintf(isolation, sizeof(isolation),
		         "isolation: %" PRIu64 " %s", v->isolation,
		         plural(v->isolation, "violation", "violations"));

	if (v->gaps == 0 && v->below_anchor == 0)
		len = (size_t)snprintf(ids, sizeof(ids), "ids ok");
	else
		len = (size_t)snprintf(
		    ids, sizeof(ids),
		    "ids: %" PRIu64 " %s (%" PRIu64 " missing)", v->gaps,
		    plural(v->gaps, "gap", "gaps"), v->missing_ids);
	if (v->below_anchor > 0)
		snprintf(ids + len, sizeof(ids) - len,
		         ", %" PRIu64 " below the anchor", v->below_anchor);

	if (v->chain_bad > 0)
		len = (size_t)snprintf(
		    chain, sizeof(chain), "chain: %" PRIu64 " %s", v->chain_bad,
		    plural(v->chain_bad, "mismatch", "mismatches"));
	else if (v->have_key)
		len = (size_t)snprintf(chain, sizeof(chain), "chain ok");
	else
		len = 0;
	if (!v->have_key)
		snprintf(chain + len, sizeof(chain) - len,
		         "%s not checked (no key)",
		         len > 0 ? ", rest" : "chain");
	else if (v->chain_unchecked > 0)
		snprintf(chain + len, sizeof(chain) - len,
		         " (%" PRIu64 " %s after a gap not checkable)",
		         v->chain_unchecked,
		         plural(v->chain_unchecked, "row", "rows"));

	if (v->tail > 0)
		snprintf(tail, sizeof(tail), "tail: %" PRIu64 " %s", v->tail,
		         plural(v->tail, "violation", "violations"));
	else if (v->heads == 0)
		snprintf(tail, sizeof(tail),
		         "tail ok (no chain head logged yet)");
	else
		snprintf(tail, sizeof(tail), "tail ok");

	printf("verify: %s%s, %s, %s, %s, %s\n",
	       violations(v) > 0 ? "FAILED: " : "", rows, isolation, ids, chain,
	       tail);
}

int verify_run(const char *db_path, const char *audit_key_path, bool json)
{
	static struct verify v; /* the key is 1 KiB: keep it off the stack */
	char why[600];
	const char *no_key;
	int rc;

	memset(&v, 0, sizeof(v));
	v.json = json;
	v.key_path = audit_key_path;
	if ((rc = auditdb_open(&v.a, db_path)) != EXIT_OK)
		return rc;
	no_key = load_key(&v, why, sizeof(why));
	rc = check_anchor(&v);
	if (rc == EXIT_OK)
		rc = check_rows(&v);
	if (rc == EXIT_OK)
		rc = check_tail(&v);
	auditdb_close(&v.a);
	if (rc == EXIT_OK) {
		if (json) {
			if (out_json_line(summary_json(&v)) != EXIT_OK)
				v.out_rc = EXIT_USAGE;
		} else {
			summary_text(&v);
		}
		if (v.have_key && v.chain_checked > 1 &&
		    v.chain_bad >= v.chain_checked)
			fprintf(
			    stderr,
			    "wsgatectl: verify: no row's chain matches: is %s "
			    "the sidecar's audit key?\n",
			    audit_key_path);
	}
	audit_key_clear(&v.key);
	explicit_bzero(&v.key, sizeof(v.key));
	if (rc != EXIT_OK)
		return rc;
	if (v.out_rc != EXIT_OK)
		return v.out_rc;
	if (violations(&v) > 0)
		return EXIT_CHECK;
	if (no_key != NULL) {
		fprintf(stderr, "wsgatectl: verify: chain not checked: %s\n",
		        no_key);
		return EXIT_USAGE;
	}
	return EXIT_OK;
}
