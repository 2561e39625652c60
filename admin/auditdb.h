/*
 * auditdb: read-only access to the sidecar's database for the forensic
 * commands (DESIGN.md, "Audit store").
 *
 * The database is opened with SQLITE_OPEN_READONLY and read inside one
 * transaction: every query of a command sees the same snapshot while the
 * sidecar goes on writing (WAL mode: a reader never blocks the writer, nor
 * the writer a reader). Errors are reported here, one line on stderr
 * starting "wsgatectl: ", and turned into exit statuses (ctl_exit.h).
 */
#ifndef WSGATE_AUDITDB_H
#define WSGATE_AUDITDB_H

#include <sqlite3.h>

#include <stdbool.h>
#include <stdint.h>

struct auditdb {
	sqlite3 *db;
	const char *path;
};

/* Opens path and starts the snapshot. Returns EXIT_OK, or EXIT_USAGE after
 * saying why ("no database at PATH", not a wsgate database, ...). */
int auditdb_open(struct auditdb *a, const char *path);

void auditdb_close(struct auditdb *a);

/* Prepares sql; on failure reports it and returns NULL. */
sqlite3_stmt *auditdb_prepare(struct auditdb *a, const char *sql);

/* Reports the last error of the database ("wsgatectl: PATH: ...") and
 * returns EXIT_USAGE. */
int auditdb_fail(struct auditdb *a);

/* Column col as text, or NULL when it is SQL NULL. */
const char *auditdb_text(sqlite3_stmt *st, int col);

/* Binds text, or NULL when s is NULL. */
void auditdb_bind_text(sqlite3_stmt *st, int idx, const char *s);

/* Column col as an integer; false when it is SQL NULL. */
bool auditdb_int(sqlite3_stmt *st, int col, int64_t *out);

/* The database's audit format (meta audit_format; 1 when absent: the
 * databases of wsgate before format 2 did not record it). Returns EXIT_OK
 * or EXIT_USAGE. */
int auditdb_format(struct auditdb *a, int64_t *format);

#endif
