/*
 * test_wal_vfs: the writer's VFS gathers a transaction's WAL frames into
 * few writes, and nobody can tell otherwise: other connections see every
 * commit at once, spilled and rolled-back transactions read back right,
 * and commits survive the death of the process.
 *
 * A counting VFS under it (registered as the default, which wal_vfs wraps)
 * counts the writes that reach the WAL file.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "wal_vfs.h"
#include "test_dir.h"

/* --- a VFS that counts the writes to WAL files --- */

struct count_file {
	sqlite3_file base;
	sqlite3_file *real;
};

static sqlite3_vfs *unix_vfs;
static unsigned long wal_writes;

static int count_close(sqlite3_file *f)
{
	return ((struct count_file *)f)
	    ->real->pMethods->xClose(((struct count_file *)f)->real);
}
static int count_read(sqlite3_file *f, void *p, int n, sqlite3_int64 o)
{
	sqlite3_file *r = ((struct count_file *)f)->real;
	return r->pMethods->xRead(r, p, n, o);
}
static int count_write(sqlite3_file *f, const void *p, int n, sqlite3_int64 o)
{
	sqlite3_file *r = ((struct count_file *)f)->real;
	wal_writes++;
	return r->pMethods->xWrite(r, p, n, o);
}
static int count_truncate(sqlite3_file *f, sqlite3_int64 n)
{
	sqlite3_file *r = ((struct count_file *)f)->real;
	return r->pMethods->xTruncate(r, n);
}
static int count_sync(sqlite3_file *f, int flags)
{
	sqlite3_file *r = ((struct count_file *)f)->real;
	return r->pMethods->xSync(r, flags);
}
static int count_size(sqlite3_file *f, sqlite3_int64 *n)
{
	sqlite3_file *r = ((struct count_file *)f)->real;
	return r->pMethods->xFileSize(r, n);
}
static int count_lock(sqlite3_file *f, int l)
{
	sqlite3_file *r = ((struct count_file *)f)->real;
	return r->pMethods->xLock(r, l);
}
static int count_unlock(sqlite3_file *f, int l)
{
	sqlite3_file *r = ((struct count_file *)f)->real;
	return r->pMethods->xUnlock(r, l);
}
static int count_reserved(sqlite3_file *f, int *out)
{
	sqlite3_file *r = ((struct count_file *)f)->real;
	return r->pMethods->xCheckReservedLock(r, out);
}
static int count_fcntl(sqlite3_file *f, int op, void *arg)
{
	sqlite3_file *r = ((struct count_file *)f)->real;
	return r->pMethods->xFileControl(r, op, arg);
}
static int count_sector(sqlite3_file *f)
{
	sqlite3_file *r = ((struct count_file *)f)->real;
	return r->pMethods->xSectorSize(r);
}
static int count_devchar(sqlite3_file *f)
{
	sqlite3_file *r = ((struct count_file *)f)->real;
	return r->pMethods->xDeviceCharacteristics(r);
}

static const sqlite3_io_methods count_methods = {
    .iVersion = 1,
    .xClose = count_close,
    .xRead = count_read,
    .xWrite = count_write,
    .xTruncate = count_truncate,
    .xSync = count_sync,
    .xFileSize = count_size,
    .xLock = count_lock,
    .xUnlock = count_unlock,
    .xCheckReservedLock = count_reserved,
    .xFileControl = count_fcntl,
    .xSectorSize = count_sector,
    .xDeviceCharacteristics = count_devchar,
};

static int count_open(sqlite3_vfs *vfs, sqlite3_filename name,
                      sqlite3_file *file, int flags, int *out)
{
	(void)vfs;
	if (!(flags & SQLITE_OPEN_WAL))
		return unix_vfs->xOpen(unix_vfs, name, file, flags, out);
	struct count_file *f = (struct count_file *)file;
	f->base.pMethods = NULL;
	f->real = (sqlite3_file *)(f + 1);
	int rc = unix_vfs->xOpen(unix_vfs, name, f->real, flags, out);
	if (rc == SQLITE_OK && f->real->pMethods)
		f->base.pMethods = &count_methods;
	return rc;
}

static sqlite3_vfs count_vfs;

static void count_vfs_register(void)
{
	if (unix_vfs)
		return;
	unix_vfs = sqlite3_vfs_find("unix");
	assert_non_null(unix_vfs);
	count_vfs = *unix_vfs;
	count_vfs.zName = "count";
	count_vfs.szOsFile =
	    (int)(sizeof(struct count_file) + (size_t)unix_vfs->szOsFile);
	count_vfs.xOpen = count_open;
	count_vfs.pNext = NULL;
	assert_int_equal(sqlite3_vfs_register(&count_vfs, 1), SQLITE_OK);
}

/* --- helpers --- */

static char dir[64];
static char path[96];

static void exec_ok(sqlite3 *db, const char *sql)
{
	char *err = NULL;
	int rc = sqlite3_exec(db, sql, NULL, NULL, &err);
	if (rc != SQLITE_OK)
		fail_msg("%s: %s", sql, err ? err : "?");
}

static sqlite3_int64 query_int(sqlite3 *db, const char *sql)
{
	sqlite3_stmt *st;
	assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	sqlite3_int64 v = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	return v;
}

static sqlite3 *open_db(const char *vfs)
{
	sqlite3 *db;
	assert_int_equal(
	    sqlite3_open_v2(path, &db,
	                    SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, vfs),
	    SQLITE_OK);
	sqlite3_busy_timeout(db, 5000);
	exec_ok(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
	            "CREATE TABLE IF NOT EXISTS t(k INTEGER PRIMARY KEY,"
	            " r INTEGER, v BLOB);"
	            "CREATE INDEX IF NOT EXISTS t_r ON t(r);");
	return db;
}

/* Inserts n rows of bytes each, keys from *next. */
static void insert_rows(sqlite3 *db, int *next, int n, int bytes)
{
	sqlite3_stmt *st;
	assert_int_equal(sqlite3_prepare_v2(db,
	                                    "INSERT INTO t(k, r, v) VALUES(?,"
	                                    " abs(random() % 100000),"
	                                    " zeroblob(?))",
	                                    -1, &st, NULL),
	                 SQLITE_OK);
	for (int i = 0; i < n; i++) {
		sqlite3_bind_int(st, 1, (*next)++);
		sqlite3_bind_int(st, 2, bytes);
		assert_int_equal(sqlite3_step(st), SQLITE_DONE);
		sqlite3_reset(st);
	}
	sqlite3_finalize(st);
}

static int setup(void **state)
{
	(void)state;
	count_vfs_register();
	assert_int_equal(test_dir_make(dir, sizeof(dir), "walvfs"), 0);
	snprintf(path, sizeof(path), "%s/t.db", dir);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	return test_dir_remove(dir);
}

/* --- tests --- */

/* ~30 pages in one transaction: two writes per frame without the VFS,
 * one or two in all with it. */
static void test_a_commit_is_few_writes(void **state)
{
	(void)state;
	int next = 1;
	sqlite3 *plain = open_db("count");
	unsigned long before = wal_writes;
	exec_ok(plain, "BEGIN");
	insert_rows(plain, &next, 100, 1000);
	exec_ok(plain, "COMMIT");
	unsigned long plain_writes = wal_writes - before;
	sqlite3_close(plain);

	struct wal_vfs *wv = wal_vfs_register("wsgate-wal-test");
	assert_non_null(wv);
	sqlite3 *db = open_db(wal_vfs_name(wv));
	before = wal_writes;
	exec_ok(db, "BEGIN");
	insert_rows(db, &next, 100, 1000);
	exec_ok(db, "COMMIT");
	unsigned long buffered_writes = wal_writes - before;
	print_message("WAL writes for one 100-row transaction: %lu without,"
	              " %lu with wal_vfs\n",
	              plain_writes, buffered_writes);
	assert_true(plain_writes >= 2 * 25);
	assert_true(buffered_writes <= 2);
	assert_int_equal(query_int(db, "SELECT count(*) FROM t"), 200);
	sqlite3_close(db);
	wal_vfs_unregister(wv);
}

/* After every commit, a connection of the default VFS sees exactly the
 * committed rows: small, large (several 124 KiB writes), spilled. */
static void test_readers_see_every_commit(void **state)
{
	(void)state;
	struct wal_vfs *wv = wal_vfs_register("wsgate-wal-test");
	assert_non_null(wv);
	sqlite3 *db = open_db(wal_vfs_name(wv));
	exec_ok(db, "PRAGMA cache_size=20"); /* big transactions spill */
	sqlite3 *reader = open_db(NULL);
	int next = 1;
	for (int round = 0; round < 120; round++) {
		int n = 1 + (round * 37) % 150;
		exec_ok(db, "BEGIN");
		insert_rows(db, &next, n, 100 + (round % 7) * 900);
		exec_ok(db, "COMMIT");
		assert_int_equal(query_int(reader, "SELECT count(*) FROM t"),
		                 next - 1);
		assert_int_equal(query_int(reader, "SELECT max(k) FROM t"),
		                 next - 1);
	}
	/* A spilled transaction rolled back leaves nothing behind. */
	exec_ok(db, "BEGIN");
	int lost = next;
	insert_rows(db, &lost, 400, 2000);
	exec_ok(db, "ROLLBACK");
	assert_int_equal(query_int(db, "SELECT count(*) FROM t"), next - 1);
	assert_int_equal(query_int(reader, "SELECT count(*) FROM t"), next - 1);
	/* Checkpoints through the buffered connection, then more commits
	 * into the restarted WAL. */
	exec_ok(db, "PRAGMA wal_checkpoint(TRUNCATE)");
	exec_ok(db, "BEGIN");
	insert_rows(db, &next, 50, 3000);
	exec_ok(db, "COMMIT");
	assert_int_equal(query_int(reader, "SELECT count(*) FROM t"), next - 1);
	sqlite3_stmt *st;
	assert_int_equal(
	    sqlite3_prepare_v2(reader, "PRAGMA integrity_check", -1, &st, NULL),
	    SQLITE_OK);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	assert_string_equal((const char *)sqlite3_column_text(st, 0), "ok");
	sqlite3_finalize(st);
	sqlite3_close(reader);
	sqlite3_close(db);
	wal_vfs_unregister(wv);
}

/* A process that dies without closing keeps every commit it made, and
 * none of the transaction it was in the middle of. */
static void test_commits_survive_the_process(void **state)
{
	(void)state;
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct wal_vfs *wv = wal_vfs_register("wsgate-wal-child");
		sqlite3 *db;
		if (!wv ||
		    sqlite3_open_v2(path, &db,
		                    SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE,
		                    wal_vfs_name(wv)) != SQLITE_OK)
			_exit(3);
		sqlite3_exec(
		    db,
		    "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
		    "PRAGMA cache_size=20;"
		    "CREATE TABLE t(k INTEGER PRIMARY KEY, r INTEGER,"
		    " v BLOB); CREATE INDEX t_r ON t(r);",
		    NULL, NULL, NULL);
		int next = 1;
		for (int i = 0; i < 50; i++) {
			sqlite3_exec(db, "BEGIN", NULL, NULL, NULL);
			insert_rows(db, &next, 40, 1500);
			if (sqlite3_exec(db, "COMMIT", NULL, NULL, NULL))
				_exit(4);
		}
		sqlite3_exec(db, "BEGIN", NULL, NULL, NULL);
		insert_rows(db, &next, 500, 1500); /* spills, never commits */
		_exit(0);                          /* no close, no checkpoint */
	}
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	sqlite3 *db = open_db(NULL);
	assert_int_equal(query_int(db, "SELECT count(*) FROM t"), 50 * 40);
	assert_int_equal(query_int(db, "SELECT max(k) FROM t"), 50 * 40);
	sqlite3_close(db);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_a_commit_is_few_writes, setup,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(test_readers_see_every_commit,
	                                    setup, teardown),
	    cmocka_unit_test_setup_teardown(test_commits_survive_the_process,
	                                    setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
