/*
 * forensics: the commands that read the audit store rather than ask the
 * sidecar: sessions, audit, trace (verify has its own file). Each opens the
 * database read-only (auditdb.h), prints a table or JSON lines (output.h)
 * and returns the exit status (ctl_exit.h).
 *
 * A `queued` delivery row without an outcome row (`written` or `dropped`)
 * for the same connection, user and seq is shown as "in flight" while that
 * connection's session is open, and as "outcome unknown: sidecar stopped"
 * once the session is closed or gone.
 */
#ifndef WSGATE_FORENSICS_H
#define WSGATE_FORENSICS_H

#include <stdbool.h>
#include <stdint.h>

#define FORENSICS_NOTE_STOPPED   "outcome unknown: sidecar stopped"
#define FORENSICS_NOTE_IN_FLIGHT "in flight"

/* Filters; NULL / false means "any". limit 0 means no limit. */
struct sessions_query {
	const char *user;
	bool has_since;
	int64_t since_us; /* sessions open at any time since then */
	int64_t limit;
};

struct audit_query {
	const char *user; /* user_id = user OR conn_user_id = user */
	const char *event_id;
	const char *run_id;
	const char *conn_id;
	bool has_since;
	int64_t since_us; /* rows with at >= since */
	int64_t limit;    /* the newest rows are kept */
};

/* Newest first. */
int forensics_sessions(const char *db_path, bool json,
                       const struct sessions_query *q);

/* Delivery rows in id order (the newest `limit` of those that match). */
int forensics_audit(const char *db_path, bool json,
                    const struct audit_query *q);

/* The story of event_id (of user, when not NULL; of every user that has
 * one by that id otherwise). EXIT_CHECK when there is none. */
int forensics_trace(const char *db_path, bool json, const char *event_id,
                    const char *user);

#endif
