/* verify: chain heads, isolation, dense ids, hash chain, event digests
 * and tail of the audit log (see .h). */
#include "verify.h"

#include "audit_chain.h"
#include "auditdb.h"
#include "ctl_exit.h"
#include "output.h"
#include "time_arg.h"

#include <openssl/sha.h>

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

	/* Where the chain starts: the first head (check_heads). */
	int64_t base_id;
	unsigned char base_chain[AUDIT_CHAIN_LEN];
	bool anchored, anchor_chain_ok;

	/* A head the database must contain (--head), or NULL. */
	const struct verify_head *want;

	/* What was seen. */
	uint64_t rows;
	int64_t first_id, last_id;
	uint64_t isolation;
	uint64_t gaps, missing_ids, below_anchor;
	uint64_t chain_checked, chain_bad, chain_unchecked;
	uint64_t events, event_bad;
	uint64_t heads, head_bad, heads_unchecked;
	uint64_t tail;
	bool want_before_anchor; /* the given head was pruned: not checked */
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
	       v->event_bad + v->head_bad + v->tail;
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
	R_DIGEST,
	R_CHAIN,
	R_SESSION_USER,
	R_EVENT_ID,    /* of the event at (user_id, seq), NULL when gone */
	R_EVENT_DIGEST /* its payload_sha256 */
};

static const char rows_sql[] =
    "SELECT d.id, d.user_id, d.seq, d.event_id, d.conn_id, d.conn_user_id,"
    " d.status, d.at, d.payload_sha256, d.chain, s.user_id, e.event_id,"
    " e.payload_sha256"
    " FROM deliveries d LEFT JOIN sessions s ON s.conn_id = d.conn_id"
    " LEFT JOIN events e ON e.user_id = d.user_id AND e.seq = d.seq"
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

static bool same_bytes(const void *a, int alen, const void *b, int blen)
{
	return a != NULL && b != NULL && alen == blen &&
	       memcmp(a, b, (size_t)alen) == 0;
}

/* The row's event, while the event log still has it, is the one the row
 * names, with the payload digest the row recorded. */
static void check_event_link(struct verify *v, const struct audit_row *r,
                             sqlite3_stmt *st)
{
	const char *event_id = auditdb_text(st, R_EVENT_ID);
	char want[TEXT_MAX], got[TEXT_MAX], user[TEXT_MAX];

	if (event_id == NULL)
		return; /* pruned, or never there: the chain covers the row */
	out_clean(r->user_id, user, sizeof(user));
	if (strcmp(event_id, r->event_id) != 0) {
		v->event_bad++;
		report(v, "event", row_fields(r),
		       "row %" PRId64 " names event %s (seq %" PRIu64
		       " of user '%s') but the event log has event %s there",
		       r->id, out_clean(r->event_id, want, sizeof(want)),
		       r->seq, user, out_clean(event_id, got, sizeof(got)));
		return;
	}
	if (!same_bytes(sqlite3_column_blob(st, R_EVENT_DIGEST),
	                sqlite3_column_bytes(st, R_EVENT_DIGEST),
	                r->payload_sha256, (int)r->payload_sha256_len)) {
		v->event_bad++;
		report(v, "event", row_fields(r),
		       "row %" PRId64 ": event %s (seq %" PRIu64
		       " of user '%s') has another payload_sha256 than the "
		       "row recorded (event altered after it was delivered)",
		       r->id, out_clean(r->event_id, want, sizeof(want)),
		       r->seq, user);
	}
}

/* Every event's payload hashes to its payload_sha256. */
static int check_events(struct verify *v)
{
	sqlite3_stmt *st = auditdb_prepare(
	    &v->a, "SELECT user_id, seq, event_id, payload, payload_sha256"
	           " FROM events ORDER BY user_id, seq");
	char user[TEXT_MAX], event[TEXT_MAX];
	int step;

	if (st == NULL)
		return EXIT_USAGE;
	while ((step = sqlite3_step(st)) == SQLITE_ROW) {
		unsigned char md[SHA256_DIGEST_LENGTH];
		int64_t seq = sqlite3_column_int64(st, 1);

		v->events++;
		SHA256(sqlite3_column_blob(st, 3),
		       (size_t)sqlite3_column_bytes(st, 3), md);
		if (same_bytes(sqlite3_column_blob(st, 4),
		               sqlite3_column_bytes(st, 4), md, sizeof(md)))
			continue;
		json_t *f = json_object();

		json_object_set_new(f, "user_id",
		                    out_json_text(text_or_empty(st, 0)));
		json_object_set_new(f, "seq", json_integer(JI(seq)));
		json_object_set_new(f, "event_id",
		                    out_json_text(text_or_empty(st, 2)));
		v->event_bad++;
		report(v, "event", f,
		       "event %s (seq %" PRId64 " of user '%s'): its payload "
		       "does not hash to its payload_sha256 (payload altered)",
		       out_clean(text_or_empty(st, 2), event, sizeof(event)),
		       seq,
		       out_clean(text_or_empty(st, 0), user, sizeof(user)));
	}
	sqlite3_finalize(st);
	return step == SQLITE_DONE ? EXIT_OK : auditdb_fail(&v->a);
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
		    .payload_sha256 = sqlite3_column_blob(st, R_DIGEST),
		    .payload_sha256_len =
		        (size_t)sqlite3_column_bytes(st, R_DIGEST),
		};
		bool is_blob = sqlite3_column_type(st, R_CHAIN) == SQLITE_BLOB;
		const void *chain =
		    is_blob ? sqlite3_column_blob(st, R_CHAIN) : NULL;
		int chain_len = is_blob ? sqlite3_column_bytes(st, R_CHAIN) : 0;
		bool dense = check_ids(v, prev_id, r.id);

		check_isolation(v, &r, auditdb_text(st, R_SESSION_USER));
		check_chain(v, &r, chain, chain_len, !dense, prev, &prev_known);
		check_event_link(v, &r, st);
		if (v->rows++ == 0)
			v->first_id = r.id;
		v->last_id = r.id;
		prev_id = r.id;
	}
	sqlite3_finalize(st);
	return step == SQLITE_DONE ? EXIT_OK : auditdb_fail(&v->a);
}

/* --- the chain heads: the start of the log, and its tail --- */

static json_t *head_fields(int64_t n, int64_t id, int64_t at,
                           const char *reason)
{
	json_t *o = json_object();

	if (n > 0)
		json_object_set_new(o, "head_n", json_integer(JI(n)));
	json_object_set_new(o, "head_id", json_integer(JI(id)));
	out_json_time(o, "head_at", at, true);
	json_object_set_new(o, "head_reason", out_json_text(reason));
	return o;
}

static bool blob_is(sqlite3_stmt *st, int col, const unsigned char *want)
{
	return sqlite3_column_type(st, col) == SQLITE_BLOB &&
	       same_bytes(sqlite3_column_blob(st, col),
	                  sqlite3_column_bytes(st, col), want, AUDIT_CHAIN_LEN);
}

static bool blob_is_chain(sqlite3_stmt *st, int col)
{
	return sqlite3_column_type(st, col) == SQLITE_BLOB &&
	       sqlite3_column_bytes(st, col) == AUDIT_CHAIN_LEN;
}

enum { H_N, H_AT, H_ID, H_CHAIN, H_REASON, H_MAC };

/* The first head gives the anchor: head 1 says the chain starts at id 0
 * from 32 zero bytes; a prune record names the last row pruned and its
 * chain. Anything else: the start was cut. */
static void head_anchor(struct verify *v, sqlite3_stmt *st, bool pruned)
{
	int64_t n = sqlite3_column_int64(st, H_N);
	int64_t id = sqlite3_column_int64(st, H_ID);
	int64_t at = sqlite3_column_int64(st, H_AT);
	char reason[64], when[TIME_ARG_TEXT_MAX];

	if (pruned) {
		v->anchored = true;
		v->base_id = id;
		v->anchor_chain_ok = blob_is_chain(st, H_CHAIN);
		if (v->anchor_chain_ok)
			memcpy(v->base_chain, sqlite3_column_blob(st, H_CHAIN),
			       AUDIT_CHAIN_LEN);
		return;
	}
	if (n == 1)
		return; /* id 0, zeros: set by verify_run */
	out_clean(text_or_empty(st, H_REASON), reason, sizeof(reason));
	v->head_bad++;
	report(v, "heads", head_fields(n, id, at, reason),
	       "the first chain head is head %" PRId64
	       " (logged %s, %s): heads 1..%" PRId64
	       " are gone and no prune record stands for them (the start of "
	       "the log was cut)",
	       n, time_arg_format(at, when, sizeof(when)), reason, n - 1);
}

/*
 * The heads in n order: dense, each mac recomputed over the previous
 * head's stored mac (zeros for head 1 and a prune record: a prune deletes
 * the heads before its record), a prune record only first. Sets the
 * anchor.
 */
static int check_heads(struct verify *v)
{
	static const unsigned char zeros[AUDIT_CHAIN_LEN];
	sqlite3_stmt *st = auditdb_prepare(
	    &v->a, "SELECT n, at, id, chain, reason, mac FROM chain_heads"
	           " ORDER BY n");
	unsigned char prev_mac[AUDIT_CHAIN_LEN];
	bool prev_mac_ok = false;
	int64_t prev_n = 0;
	char reason[64], when[TIME_ARG_TEXT_MAX];
	int step;

	if (st == NULL)
		return EXIT_USAGE;
	while ((step = sqlite3_step(st)) == SQLITE_ROW) {
		struct audit_head h = {
		    .n = sqlite3_column_int64(st, H_N),
		    .at = sqlite3_column_int64(st, H_AT),
		    .id = sqlite3_column_int64(st, H_ID),
		    .chain = sqlite3_column_blob(st, H_CHAIN),
		    .chain_len = (size_t)sqlite3_column_bytes(st, H_CHAIN),
		    .reason = text_or_empty(st, H_REASON),
		};
		bool pruned = strcmp(h.reason, AUDIT_HEAD_PRUNED) == 0;
		bool follows = v->heads > 0 && h.n == prev_n + 1;
		bool mac_ok = blob_is_chain(st, H_MAC);

		out_clean(h.reason, reason, sizeof(reason));
		time_arg_format(h.at, when, sizeof(when));
		if (v->heads == 0) {
			head_anchor(v, st, pruned);
		} else if (!follows) {
			json_t *f = json_object();

			json_object_set_new(f, "missing_from",
			                    json_integer(JI(prev_n + 1)));
			json_object_set_new(f, "missing_to",
			                    json_integer(JI(h.n - 1)));
			char missing[96];

			if (h.n - prev_n == 2)
				snprintf(missing, sizeof(missing),
				         "head %" PRId64 " missing",
				         prev_n + 1);
			else
				snprintf(missing, sizeof(missing),
				         "heads %" PRId64 "..%" PRId64
				         " missing",
				         prev_n + 1, h.n - 1);
			v->head_bad++;
			report(v, "heads", f,
			       "gap: %s, between heads %" PRId64 " and %" PRId64
			       " (heads deleted)",
			       missing, prev_n, h.n);
		} else if (pruned) {
			v->head_bad++;
			report(v, "heads", head_fields(h.n, h.id, h.at, reason),
			       "head %" PRId64 " (logged %s) is a prune record "
			       "but not the first head",
			       h.n, when);
		}
		if (v->have_key &&
		    (pruned || h.n == 1 || (follows && prev_mac_ok))) {
			unsigned char want[AUDIT_CHAIN_LEN];

			audit_head_mac(&v->key,
			               pruned || h.n == 1 ? zeros : prev_mac,
			               &h, want);
			if (!mac_ok || !blob_is(st, H_MAC, want)) {
				v->head_bad++;
				report(
				    v, "heads",
				    head_fields(h.n, h.id, h.at, reason),
				    "head %" PRId64
				    " (logged %s, %s, id %" PRId64
				    "): its mac does not match its fields and "
				    "the previous head's mac (head altered, "
				    "forged or written with another key)",
				    h.n, when, reason, h.id);
			}
		} else if (v->have_key) {
			/* After a gap or a malformed mac, or first: the
			 * previous mac is gone. */
			v->heads_unchecked++;
		} else if (!mac_ok) {
			v->head_bad++;
			report(v, "heads", head_fields(h.n, h.id, h.at, reason),
			       "head %" PRId64
			       ": its mac is not a %d-byte value",
			       h.n, AUDIT_CHAIN_LEN);
		}
		prev_mac_ok = mac_ok;
		if (mac_ok)
			memcpy(prev_mac, sqlite3_column_blob(st, H_MAC),
			       AUDIT_CHAIN_LEN);
		prev_n = h.n;
		v->heads++;
	}
	sqlite3_finalize(st);
	if (step != SQLITE_DONE)
		return auditdb_fail(&v->a);
	if (v->heads == 0) {
		v->head_bad++;
		report(v, "heads", NULL,
		       "no chain heads: where the chain starts is not recorded "
		       "(heads deleted)");
	}
	if (v->anchored && !v->anchor_chain_ok) {
		json_t *f = json_object();

		json_object_set_new(f, "anchor_id",
		                    json_integer(JI(v->base_id)));
		v->chain_bad++;
		report(v, "chain", f,
		       "the prune record (id %" PRId64
		       ") has no %d-byte chain: "
		       "the first row cannot be checked",
		       v->base_id, AUDIT_CHAIN_LEN);
	}
	return EXIT_OK;
}

static const char heads_sql[] =
    "SELECT h.at, h.id, h.chain, h.reason, d.id IS NOT NULL, d.chain, h.n"
    " FROM chain_heads h LEFT JOIN deliveries d ON d.id = h.id"
    " ORDER BY h.n";

/* "rows X..Y are" missing after the last row, for the tail messages. */
static void cut_text(int64_t last, int64_t beyond, char *buf, size_t cap)
{
	if (beyond == last + 1)
		snprintf(buf, cap, "row %" PRId64 " is", beyond);
	else
		snprintf(buf, cap, "rows %" PRId64 "..%" PRId64 " are",
		         last + 1, beyond);
}

static void last_row_text(const struct verify *v, char *buf, size_t cap)
{
	if (v->rows > 0)
		snprintf(buf, cap, "the last row is %" PRId64, v->last_id);
	else
		snprintf(buf, cap, "there are no rows");
}

/* Every head names a row that exists, with the chain it logged. */
static int check_tail(struct verify *v)
{
	sqlite3_stmt *st = auditdb_prepare(&v->a, heads_sql);
	int64_t last = v->rows > 0 ? v->last_id : v->base_id;
	int64_t beyond_id = 0, beyond_at = 0, beyond_n = 0;
	uint64_t beyond = 0;
	char beyond_reason[64] = "", reason[64], when[TIME_ARG_TEXT_MAX];
	int step;

	if (st == NULL)
		return EXIT_USAGE;
	while ((step = sqlite3_step(st)) == SQLITE_ROW) {
		int64_t at = sqlite3_column_int64(st, 0);
		int64_t id = sqlite3_column_int64(st, 1);
		int64_t n = sqlite3_column_int64(st, 6);
		bool chain_ok = blob_is_chain(st, 2);
		const unsigned char *chain =
		    chain_ok ? sqlite3_column_blob(st, 2) : NULL;

		out_clean(text_or_empty(st, 3), reason, sizeof(reason));
		time_arg_format(at, when, sizeof(when));
		if (id > last) {
			/* Rows cut off the end: name the newest head. */
			beyond++;
			beyond_id = id;
			beyond_at = at;
			beyond_n = n;
			memcpy(beyond_reason, reason, sizeof(reason));
		} else if (id < v->base_id) {
			v->head_bad++;
			report(v, "heads", head_fields(n, id, at, reason),
			       "head %" PRId64
			       " (logged %s, %s) names id %" PRId64
			       ", before the anchor (id %" PRId64 ")",
			       n, when, reason, id, v->base_id);
		} else if (id == v->base_id) {
			if (v->anchored && !v->anchor_chain_ok)
				continue; /* reported as the anchor's fault */
			if (chain_ok &&
			    memcmp(chain, v->base_chain, AUDIT_CHAIN_LEN) == 0)
				continue;
			v->tail++;
			report(v, "tail", head_fields(n, id, at, reason),
			       "the chain head logged %s (%s) for id %" PRId64
			       " does not match %s",
			       when, reason, id,
			       v->anchored ? "the anchor chain of the prune "
			                     "record"
			                   : "the start of the chain");
		} else if (sqlite3_column_int(st, 4) != 0) {
			if (chain_ok && blob_is(st, 5, chain))
				continue;
			v->tail++;
			report(v, "tail", head_fields(n, id, at, reason),
			       "the chain head logged %s (%s) for id %" PRId64
			       " differs from row %" PRId64
			       "'s stored chain (rows rewritten after it was "
			       "logged)",
			       when, reason, id, id);
		}
		/* else: the id lies in a gap, reported already. */
	}
	sqlite3_finalize(st);
	if (step != SQLITE_DONE)
		return auditdb_fail(&v->a);
	if (beyond > 0) {
		json_t *f =
		    head_fields(beyond_n, beyond_id, beyond_at, beyond_reason);
		char rows[96], missing[96];

		json_object_set_new(f, "last_id",
		                    v->rows > 0 ? json_integer(JI(last))
		                                : json_null());
		last_row_text(v, rows, sizeof(rows));
		cut_text(last, beyond_id, missing, sizeof(missing));
		v->tail++;
		report(v, "tail", f,
		       "the chain head logged %s (%s) names id %" PRId64
		       " but %s: %s missing (cut off the end)",
		       time_arg_format(beyond_at, when, sizeof(when)),
		       beyond_reason, beyond_id, rows, missing);
	}
	return EXIT_OK;
}

static const char *want_name(const struct verify *v)
{
	return v->want->live ? "the sidecar's current head" : "the given head";
}

/* The head given with --head: its row exists, with its chain. */
static int check_want(struct verify *v)
{
	const struct verify_head *w = v->want;
	int64_t last = v->rows > 0 ? v->last_id : v->base_id;
	char rows[96], missing[96];
	sqlite3_stmt *st;
	json_t *f;
	int step;

	if (w == NULL)
		return EXIT_OK;
	f = json_object();
	json_object_set_new(f, "head_id", json_integer(JI(w->id)));
	json_object_set_new(f, "head_live", json_boolean(w->live));
	if (w->id > last) {
		json_object_set_new(f, "last_id",
		                    v->rows > 0 ? json_integer(JI(last))
		                                : json_null());
		last_row_text(v, rows, sizeof(rows));
		cut_text(last, w->id, missing, sizeof(missing));
		v->tail++;
		report(v, "tail", f,
		       "%s names id %" PRId64 " but %s: %s missing (cut off "
		       "the end)",
		       want_name(v), w->id, rows, missing);
		return EXIT_OK;
	}
	if (w->id < v->base_id) {
		v->want_before_anchor = true;
		json_decref(f);
		return EXIT_OK;
	}
	if (w->id == v->base_id) {
		if (memcmp(w->chain, v->base_chain, AUDIT_CHAIN_LEN) != 0) {
			v->tail++;
			report(v, "tail", f,
			       "%s (id %" PRId64 ") does not match %s",
			       want_name(v), w->id,
			       v->anchored
			           ? "the anchor chain of the prune record"
			           : "the start of the chain");
		} else {
			json_decref(f);
		}
		return EXIT_OK;
	}
	st =
	    auditdb_prepare(&v->a, "SELECT chain FROM deliveries WHERE id = ?");
	if (st == NULL) {
		json_decref(f);
		return EXIT_USAGE;
	}
	sqlite3_bind_int64(st, 1, w->id);
	step = sqlite3_step(st);
	if (step == SQLITE_ROW && blob_is(st, 0, w->chain)) {
		json_decref(f);
	} else if (step == SQLITE_ROW || step == SQLITE_DONE) {
		v->tail++;
		report(v, "tail", f,
		       step == SQLITE_ROW
		           ? "%s (id %" PRId64 ") differs from row %" PRId64
		             "'s stored chain (rows rewritten, or not this "
		             "sidecar's database)"
		           : "%s names id %" PRId64 " and row %" PRId64
		             " is missing",
		       want_name(v), w->id, w->id);
	} else {
		json_decref(f);
	}
	sqlite3_finalize(st);
	return step == SQLITE_ROW || step == SQLITE_DONE ? EXIT_OK
	                                                 : auditdb_fail(&v->a);
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

/* Only format 2 has what is checked here. */
static int check_format(struct verify *v)
{
	int64_t format;
	int rc = auditdb_format(&v->a, &format);

	if (rc != EXIT_OK || format == AUDIT_FORMAT)
		return rc;
	fprintf(stderr,
	        "wsgatectl: %s: audit format %" PRId64 " database; verify "
	        "checks format %d only (the sidecar refuses to continue it: "
	        "start it with a new --db)\n",
	        v->a.path, format, AUDIT_FORMAT);
	return EXIT_USAGE;
}

static const char *tail_source(const struct verify *v)
{
	if (v->want == NULL)
		return "database";
	return v->want->live ? "sidecar" : "given";
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
	json_object_set_new(o, "events", json_integer(JI(v->events)));
	json_object_set_new(o, "event_mismatches",
	                    json_integer(JI(v->event_bad)));
	json_object_set_new(o, "chain_heads", json_integer(JI(v->heads)));
	json_object_set_new(o, "head_violations",
	                    json_integer(JI(v->head_bad)));
	json_object_set_new(o, "tail_violations", json_integer(JI(v->tail)));
	json_object_set_new(o, "tail_checked_against",
	                    json_string(tail_source(v)));
	json_object_set_new(o, "tail_head_id",
	                    v->want != NULL ? json_integer(JI(v->want->id))
	                                    : json_null());
	json_object_set_new(o, "tail_head_before_anchor",
	                    json_boolean(v->want_before_anchor));
	return o;
}

static const char *plural(uint64_t n, const char *one, const char *many)
{
	return n == 1 ? one : many;
}

/* "NAME ok", "NAME: N mismatches", and ", rest not checked (no key)" or
 * "NAME not checked (no key)" without the key. */
static void keyed_text(const struct verify *v, const char *name, uint64_t bad,
                       const char *one, const char *many, char *buf, size_t cap)
{
	size_t len = 0;

	if (bad > 0)
		len = (size_t)snprintf(buf, cap, "%s: %" PRIu64 " %s", name,
		                       bad, plural(bad, one, many));
	else if (v->have_key)
		len = (size_t)snprintf(buf, cap, "%s ok", name);
	else
		buf[0] = '\0';
	if (!v->have_key)
		snprintf(buf + len, cap - len, "%s not checked (no key)",
		         len > 0 ? ", rest" : name);
}

static void summary_text(const struct verify *v)
{
	char rows[128], isolation[64], ids[128], chain[160], events[64];
	char heads[128], tail[96];
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

	keyed_text(v, "chain", v->chain_bad, "mismatch", "mismatches", chain,
	           sizeof(chain));
	len = strlen(chain);
	if (v->have_key && v->chain_unchecked > 0)
		snprintf(chain + len, sizeof(chain) - len,
		         " (%" PRIu64 " %s after a gap not checkable)",
		         v->chain_unchecked,
		         plural(v->chain_unchecked, "row", "rows"));

	if (v->event_bad == 0)
		snprintf(events, sizeof(events), "events ok");
	else
		snprintf(events, sizeof(events), "events: %" PRIu64 " %s",
		         v->event_bad,
		         plural(v->event_bad, "mismatch", "mismatches"));

	keyed_text(v, "heads", v->head_bad, "violation", "violations", heads,
	           sizeof(heads));

	if (v->tail > 0)
		snprintf(tail, sizeof(tail), "tail: %" PRIu64 " %s", v->tail,
		         plural(v->tail, "violation", "violations"));
	else if (v->want == NULL)
		snprintf(tail, sizeof(tail), "tail ok (database only)");
	else if (v->want_before_anchor)
		snprintf(tail, sizeof(tail),
		         "tail not checked (%s is before the anchor)",
		         want_name(v));
	else
		snprintf(tail, sizeof(tail),
		         "tail ok (reaches %s, id %" PRId64 ")", want_name(v),
		         v->want->id);

	printf("verify: %s%s, %s, %s, %s, %s, %s, %s\n",
	       violations(v) > 0 ? "FAILED: " : "", rows, isolation, ids, chain,
	       events, heads, tail);
}

static int run_checks(struct verify *v)
{
	int rc = check_format(v);

	if (rc == EXIT_OK)
		rc = check_heads(v);
	if (rc == EXIT_OK)
		rc = check_rows(v);
	if (rc == EXIT_OK)
		rc = check_events(v);
	if (rc == EXIT_OK)
		rc = check_tail(v);
	if (rc == EXIT_OK)
		rc = check_want(v);
	return rc;
}

int verify_run(const char *db_path, const char *audit_key_path, bool json,
               const struct verify_head *head)
{
	static struct verify v; /* the key is 1 KiB: keep it off the stack */
	char why[600];
	const char *no_key;
	int rc;

	memset(&v, 0, sizeof(v));
	v.json = json;
	v.key_path = audit_key_path;
	v.want = head;
	if ((rc = auditdb_open(&v.a, db_path)) != EXIT_OK)
		return rc;
	no_key = load_key(&v, why, sizeof(why));
	rc = run_checks(&v);
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
	if (v.want_before_anchor) {
		fprintf(stderr,
		        "wsgatectl: verify: tail not checked: %s (id %" PRId64
		        ") is before the anchor (id %" PRId64
		        "): its rows were pruned\n",
		        want_name(&v), head->id, v.base_id);
		return EXIT_USAGE;
	}
	return EXIT_OK;
}

static int hex_digit(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

bool verify_head_parse(const char *text, struct verify_head *out)
{
	const char *colon = strchr(text, ':');
	int64_t id = 0;

	if (colon == NULL || colon == text || colon - text > 18 ||
	    strlen(colon + 1) != 2 * AUDIT_CHAIN_LEN)
		return false;
	for (const char *p = text; p < colon; p++) {
		if (*p < '0' || *p > '9')
			return false;
		id = id * 10 + (*p - '0');
	}
	for (int i = 0; i < AUDIT_CHAIN_LEN; i++) {
		int hi = hex_digit(colon[1 + 2 * i]);
		int lo = hex_digit(colon[2 + 2 * i]);

		if (hi < 0 || lo < 0)
			return false;
		out->chain[i] = (unsigned char)(hi << 4 | lo);
	}
	out->id = id;
	out->live = false;
	return true;
}

char *verify_head_format(int64_t id, const unsigned char chain[32], char *buf,
                         size_t cap)
{
	int n = snprintf(buf, cap, "%" PRId64 ":", id);

	for (int i = 0; i < AUDIT_CHAIN_LEN && n > 0 && (size_t)n + 2 < cap;
	     i++)
		n += snprintf(buf + n, cap - (size_t)n, "%02x", chain[i]);
	return buf;
}
