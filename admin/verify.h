/*
 * verify: `wsgatectl verify`, the proof that the audit log is whole and
 * that no user was sent another user's event (docs/DESIGN.md, "Audit
 * store" and "Precise semantics": audit chain format, audit key).
 *
 * In one snapshot of a database of audit format 2 (an older one is refused,
 * EXIT_USAGE):
 *   heads      chain_heads in n order: n dense, each mac recomputed with
 *              the key over the previous head's mac (zeros for head 1 and
 *              a prune record); the first head is head 1 or a prune record,
 *              and it gives the anchor: id 0 and 32 zero bytes, or the id
 *              and chain the prune record names. So the start of the log
 *              cannot be cut, nor a head forged, altered or dropped,
 *              without the key;
 *   isolation  user_id = conn_user_id on every row, and the session of the
 *              row's connection (when still in the sessions table) belongs
 *              to conn_user_id;
 *   ids        dense: the first id is the anchor's + 1, each next one + 1;
 *              a gap is named by the rows around it;
 *   chain      each row's chain recomputed with the audit key
 *              (sidecar/audit_chain.h) from the previous row's stored chain
 *              (the anchor's for the first): a mismatch names the row, and
 *              the check goes on from the stored chain, so each altered row
 *              is named once; the row after a gap cannot be checked (its
 *              predecessor is gone: the gap is reported instead);
 *   events     while a row's event (user_id, seq) is in the events table,
 *              it has the row's event_id and payload_sha256; every event's
 *              payload hashes to its payload_sha256;
 *   tail       every head names a row that exists (or the anchor) with the
 *              chain it logged; and the head given with --head (kept
 *              elsewhere, or the running sidecar's) too. Rows cut off the
 *              end together with their heads are found only that way.
 *
 * One line (or JSON object) per violation, then a summary. Exit status:
 * EXIT_CHECK on any violation; else EXIT_USAGE when the chain could not be
 * checked for want of the key, or the given head lies before the anchor
 * (pruned: nothing to compare), with one line on stderr; else EXIT_OK.
 */
#ifndef WSGATE_VERIFY_H
#define WSGATE_VERIFY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* "ID:HEX": a decimal id, a colon, 64 hex digits. */
#define VERIFY_HEAD_TEXT_MAX (20 + 1 + 64 + 1)

/* A chain head to find in the database: the last row's id and chain. */
struct verify_head {
	int64_t id;
	unsigned char chain[32];
	bool live; /* the running sidecar's, else given by the user */
};

/* Parses "ID:HEX"; false when it is not that. */
bool verify_head_parse(const char *text, struct verify_head *out);
/* Writes "ID:HEX" into buf (VERIFY_HEAD_TEXT_MAX) and returns buf. */
char *verify_head_format(int64_t id, const unsigned char chain[32], char *buf,
                         size_t cap);

/* head: NULL, or a head the database must contain. */
int verify_run(const char *db_path, const char *audit_key_path, bool json,
               const struct verify_head *head);

#endif
