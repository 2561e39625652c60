/* auditdb: the sidecar's database, read-only, one snapshot (see .h). */
#include "auditdb.h"

#include "ctl_exit.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#define BUSY_TIMEOUT_MS 5000

/* The tables the forensic commands read (sidecar/store.c creates them
 * all at start). */
static const char *const required_tables[] = {
    "events", "sessions", "deliveries", "chain_heads", "meta", NULL};

int auditdb_fail(struct auditdb *a)
{
	fprintf(stderr, "wsgatectl: %s: %s\n", a->path, sqlite3_errmsg(a->db));
	return EXIT_USAGE;
}

sqlite3_stmt *auditdb_prepare(struct auditdb *a, const char *sql)
{
	sqlite3_stmt *st = NULL;

	if (sqlite3_prepare_v2(a->db, sql, -1, &st, NULL) != SQLITE_OK) {
		auditdb_fail(a);
		sqlite3_finalize(st);
		return NULL;
	}
	return st;
}

const char *auditdb_text(sqlite3_stmt *st, int col)
{
	if (sqlite3_column_type(st, col) == SQLITE_NULL)
		return NULL;
	return (const char *)sqlite3_column_text(st, col);
}

void auditdb_bind_text(sqlite3_stmt *st, int idx, const char *s)
{
	if (s == NULL)
		sqlite3_bind_null(st, idx);
	else
		sqlite3_bind_text(st, idx, s, -1, SQLITE_TRANSIENT);
}

bool auditdb_int(sqlite3_stmt *st, int col, int64_t *out)
{
	if (sqlite3_column_type(st, col) == SQLITE_NULL)
		return false;
	*out = sqlite3_column_int64(st, col);
	return true;
}

/* Says which required table is missing, if one is. */
static int check_schema(struct auditdb *a)
{
	sqlite3_stmt *st = auditdb_prepare(
	    a, "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?");
	int rc = EXIT_OK;

	if (st == NULL)
		return EXIT_USAGE;
	for (size_t i = 0; required_tables[i] != NULL && rc == EXIT_OK; i++) {
		sqlite3_bind_text(st, 1, required_tables[i], -1, SQLITE_STATIC);
		switch (sqlite3_step(st)) {
		case SQLITE_ROW:
			break;
		case SQLITE_DONE:
			fprintf(stderr,
			        "wsgatectl: %s is not a wsgate database (no "
			        "table %s)\n",
			        a->path, required_tables[i]);
			rc = EXIT_USAGE;
			break;
		default:
			rc = auditdb_fail(a);
		}
		sqlite3_reset(st);
	}
	sqlite3_finalize(st);
	return rc;
}

int auditdb_open(struct auditdb *a, const char *path)
{
	struct stat sb;

	a->db = NULL;
	a->path = path;
	if (stat(path, &sb) != 0) {
		if (errno == ENOENT || errno == ENOTDIR)
			fprintf(stderr, "wsgatectl: no database at %s\n", path);
		else
			fprintf(stderr,
			        "wsgatectl: cannot open database %s: %s\n",
			        path, strerror(errno));
		return EXIT_USAGE;
	}
	if (!S_ISREG(sb.st_mode)) {
		fprintf(stderr, "wsgatectl: %s is not a database file\n", path);
		return EXIT_USAGE;
	}
	if (sqlite3_open_v2(path, &a->db, SQLITE_OPEN_READONLY, NULL) !=
	    SQLITE_OK) {
		fprintf(
		    stderr, "wsgatectl: cannot open database %s: %s\n", path,
		    a->db != NULL ? sqlite3_errmsg(a->db) : "out of memory");
		auditdb_close(a);
		return EXIT_USAGE;
	}
	/* WAL readers wait only in rare moments (recovery after a crash of
	 * the writer, a checkpoint restarting the log): wait those out. */
	sqlite3_busy_timeout(a->db, BUSY_TIMEOUT_MS);
	/* Deferred: the snapshot is taken by the first read, the schema
	 * check, and kept until auditdb_close. */
	if (sqlite3_exec(a->db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK) {
		auditdb_fail(a);
		auditdb_close(a);
		return EXIT_USAGE;
	}
	if (check_schema(a) != EXIT_OK) {
		auditdb_close(a);
		return EXIT_USAGE;
	}
	return EXIT_OK;
}

void auditdb_close(struct auditdb *a)
{
	if (a->db == NULL)
		return;
	if (!sqlite3_get_autocommit(a->db))
		sqlite3_exec(a->db, "COMMIT", NULL, NULL, NULL);
	sqlite3_close(a->db);
	a->db = NULL;
}

int auditdb_format(struct auditdb *a, int64_t *format)
{
	sqlite3_stmt *st = auditdb_prepare(
	    a, "SELECT value FROM meta WHERE key = 'audit_format'");
	int rc;

	*format = 1;
	if (st == NULL)
		return EXIT_USAGE;
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		auditdb_int(st, 0, format);
	else if (rc != SQLITE_DONE)
		auditdb_fail(a);
	sqlite3_finalize(st);
	return rc == SQLITE_ROW || rc == SQLITE_DONE ? EXIT_OK : EXIT_USAGE;
}
