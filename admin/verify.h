/*
 * verify: `wsgatectl verify`, the proof that the audit log is whole and
 * that no user was sent another user's event (DESIGN.md, "Audit store" and
 * "Precise semantics": audit chain format, audit key).
 *
 * Over the whole deliveries table, in id order, in one snapshot:
 *   isolation  user_id = conn_user_id on every row, and the session of the
 *              row's connection (when still in the sessions table) belongs
 *              to conn_user_id;
 *   ids        dense: the first id is anchor_id + 1 (1 with no anchor),
 *              each next one + 1; a gap is named by the rows around it;
 *   chain      each row's chain recomputed with the audit key
 *              (sidecar/audit_chain.h) from the previous row's stored chain
 *              (the anchor's, or 32 zero bytes, for the first): a mismatch
 *              names the row, and the check goes on from the stored chain,
 *              so each altered row is named once; the row after a gap
 *              cannot be checked (its predecessor is gone: the gap is
 *              reported instead);
 *   tail       every chain head the sidecar logged (chain_heads) must name
 *              an id <= the last row's, and the stored chain of that id (or
 *              of the anchor) must equal the logged one: rows cut off the
 *              end, or rewritten and re-chained, are found.
 *
 * One line (or JSON object) per violation, then a summary. Exit status:
 * EXIT_CHECK on any violation; else EXIT_USAGE when the chain could not be
 * checked for want of the key (one line on stderr); else EXIT_OK.
 */
#ifndef WSGATE_VERIFY_H
#define WSGATE_VERIFY_H

#include <stdbool.h>

int verify_run(const char *db_path, const char *audit_key_path, bool json);

#endif
