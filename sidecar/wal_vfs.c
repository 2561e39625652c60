/*
 * wal_vfs: the writer's SQLite VFS, which gathers each transaction's WAL
 * writes into one pwrite (see wal_vfs.h).
 *
 * SQLite appends a WAL frame as two writes (a 24-byte header, then the
 * page), so a commit that dirties 130 pages -- one event of each of 130
 * users touches 130 leaves of the events key -- costs 260 pwrite calls;
 * on this kind of VM each is a few microseconds of kernel entry, and they
 * were half the writer thread's CPU. Here the frames of a transaction wait
 * in memory and reach the file together, when the commit frame is
 * written.
 *
 * Invariants kept here (per WAL file):
 * - Buffered bytes are always one run [buf_off, buf_off + len) that was
 *   written after everything already in the file: a write anywhere else
 *   first flushes the run, so the file sees the writes in their order.
 * - A commit frame is in the file before its xWrite returns: other
 *   connections (the checkpointer, wsgatectl) only read frames of
 *   committed transactions, and those are never in the buffer. A failed
 *   flush fails that write, so SQLite rolls the transaction back.
 * - Every other method of the WAL file that reads or measures it flushes
 *   first, so this connection never sees a stale file either.
 * The database file and the shared memory are the unix VFS's own, untouched.
 *
 * Threads: a file is used by the connection that opened it; the store's
 * connection is opened SQLITE_OPEN_NOMUTEX and used by one thread at a
 * time (see the store's `writing`).
 */
#include "wal_vfs.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

/* The most bytes per write: the unix VFS writes at most 128 KiB - 1 in
 * one call (and calls a shorter write a full disk). A transaction larger
 * than this reaches the file in several writes. */
#define WAL_VFS_BUFFER_MAX (124u << 10)
/* Size of a WAL frame header (https://sqlite.org/fileformat.html#walformat) */
#define WAL_FRAME_HEADER 24

struct wal_vfs {
	sqlite3_vfs vfs; /* registered; pAppData points here */
	sqlite3_vfs *os; /* the VFS files are really opened with */
	char name[32];
};

/* A WAL file; its real file follows the struct. */
struct wal_file {
	sqlite3_file base;
	sqlite3_file *os_file;
	unsigned char *buf;
	size_t len, cap;
	sqlite3_int64 buf_off;
	int commit_frame_next; /* the next write ends a commit frame */
};

static int wal_flush(struct wal_file *f)
{
	if (f->len == 0)
		return SQLITE_OK;
	int rc = f->os_file->pMethods->xWrite(f->os_file, f->buf, (int)f->len,
	                                      f->buf_off);
	f->len = 0;
	return rc;
}

static int wal_close(sqlite3_file *file)
{
	struct wal_file *f = (struct wal_file *)file;
	int rc = wal_flush(f);
	int rc2 = f->os_file->pMethods->xClose(f->os_file);
	free(f->buf);
	f->buf = NULL;
	return rc != SQLITE_OK ? rc : rc2;
}

static int wal_read(sqlite3_file *file, void *out, int amt, sqlite3_int64 off)
{
	struct wal_file *f = (struct wal_file *)file;
	int rc = wal_flush(f);
	if (rc != SQLITE_OK)
		return rc;
	return f->os_file->pMethods->xRead(f->os_file, out, amt, off);
}

/* A frame header whose "database size after commit" field is set. */
static int is_commit_frame_header(const unsigned char *p, int amt)
{
	return amt == WAL_FRAME_HEADER && (p[4] | p[5] | p[6] | p[7]) != 0;
}

static int wal_write(sqlite3_file *file, const void *data, int amt,
                     sqlite3_int64 off)
{
	struct wal_file *f = (struct wal_file *)file;
	int rc;
	if (f->len && (off != f->buf_off + (sqlite3_int64)f->len ||
	               f->len + (size_t)amt > WAL_VFS_BUFFER_MAX)) {
		rc = wal_flush(f);
		if (rc != SQLITE_OK)
			return rc;
	}
	if ((size_t)amt > WAL_VFS_BUFFER_MAX)
		return f->os_file->pMethods->xWrite(f->os_file, data, amt, off);
	if (f->len + (size_t)amt > f->cap) {
		size_t cap = f->cap ? f->cap : 64 * 1024;
		while (cap < f->len + (size_t)amt)
			cap *= 2;
		unsigned char *nb = realloc(f->buf, cap);
		if (nb == NULL) {
			rc = wal_flush(f);
			if (rc != SQLITE_OK)
				return rc;
			return f->os_file->pMethods->xWrite(f->os_file, data,
			                                    amt, off);
		}
		f->buf = nb;
		f->cap = cap;
	}
	if (f->len == 0)
		f->buf_off = off;
	memcpy(f->buf + f->len, data, (size_t)amt);
	f->len += (size_t)amt;
	if (f->commit_frame_next) {
		f->commit_frame_next = 0;
		return wal_flush(f);
	}
	f->commit_frame_next = is_commit_frame_header(data, amt);
	return SQLITE_OK;
}

static int wal_truncate(sqlite3_file *file, sqlite3_int64 size)
{
	struct wal_file *f = (struct wal_file *)file;
	int rc = wal_flush(f);
	if (rc != SQLITE_OK)
		return rc;
	return f->os_file->pMethods->xTruncate(f->os_file, size);
}

static int wal_sync(sqlite3_file *file, int flags)
{
	struct wal_file *f = (struct wal_file *)file;
	int rc = wal_flush(f);
	if (rc != SQLITE_OK)
		return rc;
	return f->os_file->pMethods->xSync(f->os_file, flags);
}

static int wal_file_size(sqlite3_file *file, sqlite3_int64 *size)
{
	struct wal_file *f = (struct wal_file *)file;
	int rc = wal_flush(f);
	if (rc != SQLITE_OK)
		return rc;
	return f->os_file->pMethods->xFileSize(f->os_file, size);
}

static int wal_lock(sqlite3_file *file, int level)
{
	struct wal_file *f = (struct wal_file *)file;
	return f->os_file->pMethods->xLock(f->os_file, level);
}

static int wal_unlock(sqlite3_file *file, int level)
{
	struct wal_file *f = (struct wal_file *)file;
	return f->os_file->pMethods->xUnlock(f->os_file, level);
}

static int wal_check_reserved_lock(sqlite3_file *file, int *out)
{
	struct wal_file *f = (struct wal_file *)file;
	return f->os_file->pMethods->xCheckReservedLock(f->os_file, out);
}

static int wal_file_control(sqlite3_file *file, int op, void *arg)
{
	struct wal_file *f = (struct wal_file *)file;
	int rc = wal_flush(f);
	if (rc != SQLITE_OK)
		return rc;
	return f->os_file->pMethods->xFileControl(f->os_file, op, arg);
}

static int wal_sector_size(sqlite3_file *file)
{
	struct wal_file *f = (struct wal_file *)file;
	return f->os_file->pMethods->xSectorSize(f->os_file);
}

static int wal_device_characteristics(sqlite3_file *file)
{
	struct wal_file *f = (struct wal_file *)file;
	return f->os_file->pMethods->xDeviceCharacteristics(f->os_file);
}

/* Version 1: a WAL file has no shared memory nor memory map of its own. */
static const sqlite3_io_methods wal_methods = {
    .iVersion = 1,
    .xClose = wal_close,
    .xRead = wal_read,
    .xWrite = wal_write,
    .xTruncate = wal_truncate,
    .xSync = wal_sync,
    .xFileSize = wal_file_size,
    .xLock = wal_lock,
    .xUnlock = wal_unlock,
    .xCheckReservedLock = wal_check_reserved_lock,
    .xFileControl = wal_file_control,
    .xSectorSize = wal_sector_size,
    .xDeviceCharacteristics = wal_device_characteristics,
};

/* The real file's place inside ours, aligned for any type. */
static size_t os_file_offset(void)
{
	const size_t a = sizeof(max_align_t);
	return (sizeof(struct wal_file) + a - 1) / a * a;
}

static int wal_vfs_open(sqlite3_vfs *vfs, sqlite3_filename name,
                        sqlite3_file *file, int flags, int *out_flags)
{
	struct wal_vfs *wv = vfs->pAppData;
	if (!(flags & SQLITE_OPEN_WAL)) /* the real file, as it is */
		return wv->os->xOpen(wv->os, name, file, flags, out_flags);
	struct wal_file *f = (struct wal_file *)file;
	memset(f, 0, sizeof(*f));
	f->os_file = (sqlite3_file *)((char *)file + os_file_offset());
	int rc = wv->os->xOpen(wv->os, name, f->os_file, flags, out_flags);
	if (rc == SQLITE_OK && f->os_file->pMethods)
		f->base.pMethods = &wal_methods;
	return rc;
}

/* The rest is the real VFS's. */
static int wal_vfs_delete(sqlite3_vfs *vfs, const char *name, int sync_dir)
{
	struct wal_vfs *wv = vfs->pAppData;
	return wv->os->xDelete(wv->os, name, sync_dir);
}

static int wal_vfs_access(sqlite3_vfs *vfs, const char *name, int flags,
                          int *out)
{
	struct wal_vfs *wv = vfs->pAppData;
	return wv->os->xAccess(wv->os, name, flags, out);
}

static int wal_vfs_full_pathname(sqlite3_vfs *vfs, const char *name, int n,
                                 char *out)
{
	struct wal_vfs *wv = vfs->pAppData;
	return wv->os->xFullPathname(wv->os, name, n, out);
}

static void *wal_vfs_dl_open(sqlite3_vfs *vfs, const char *name)
{
	struct wal_vfs *wv = vfs->pAppData;
	return wv->os->xDlOpen(wv->os, name);
}

static void wal_vfs_dl_error(sqlite3_vfs *vfs, int n, char *out)
{
	struct wal_vfs *wv = vfs->pAppData;
	wv->os->xDlError(wv->os, n, out);
}

static void (*wal_vfs_dl_sym(sqlite3_vfs *vfs, void *lib,
                             const char *sym))(void)
{
	struct wal_vfs *wv = vfs->pAppData;
	return wv->os->xDlSym(wv->os, lib, sym);
}

static void wal_vfs_dl_close(sqlite3_vfs *vfs, void *lib)
{
	struct wal_vfs *wv = vfs->pAppData;
	wv->os->xDlClose(wv->os, lib);
}

static int wal_vfs_randomness(sqlite3_vfs *vfs, int n, char *out)
{
	struct wal_vfs *wv = vfs->pAppData;
	return wv->os->xRandomness(wv->os, n, out);
}

static int wal_vfs_sleep(sqlite3_vfs *vfs, int us)
{
	struct wal_vfs *wv = vfs->pAppData;
	return wv->os->xSleep(wv->os, us);
}

static int wal_vfs_current_time(sqlite3_vfs *vfs, double *out)
{
	struct wal_vfs *wv = vfs->pAppData;
	return wv->os->xCurrentTime(wv->os, out);
}

static int wal_vfs_get_last_error(sqlite3_vfs *vfs, int n, char *out)
{
	struct wal_vfs *wv = vfs->pAppData;
	return wv->os->xGetLastError(wv->os, n, out);
}

static int wal_vfs_current_time_int64(sqlite3_vfs *vfs, sqlite3_int64 *out)
{
	struct wal_vfs *wv = vfs->pAppData;
	return wv->os->xCurrentTimeInt64(wv->os, out);
}

struct wal_vfs *wal_vfs_register(const char *name)
{
	sqlite3_vfs *os = sqlite3_vfs_find(NULL);
	if (os == NULL || os->iVersion < 2 || strlen(name) >= 32)
		return NULL;
	struct wal_vfs *wv = calloc(1, sizeof(*wv));
	if (wv == NULL)
		return NULL;
	strcpy(wv->name, name);
	wv->os = os;
	wv->vfs = (sqlite3_vfs){
	    .iVersion = 2,
	    .szOsFile = (int)(os_file_offset() + (size_t)os->szOsFile),
	    .mxPathname = os->mxPathname,
	    .zName = wv->name,
	    .pAppData = wv,
	    .xOpen = wal_vfs_open,
	    .xDelete = wal_vfs_delete,
	    .xAccess = wal_vfs_access,
	    .xFullPathname = wal_vfs_full_pathname,
	    .xDlOpen = wal_vfs_dl_open,
	    .xDlError = wal_vfs_dl_error,
	    .xDlSym = wal_vfs_dl_sym,
	    .xDlClose = wal_vfs_dl_close,
	    .xRandomness = wal_vfs_randomness,
	    .xSleep = wal_vfs_sleep,
	    .xCurrentTime = wal_vfs_current_time,
	    .xGetLastError = wal_vfs_get_last_error,
	    .xCurrentTimeInt64 = wal_vfs_current_time_int64,
	};
	if (sqlite3_vfs_register(&wv->vfs, 0) != SQLITE_OK) {
		free(wv);
		return NULL;
	}
	return wv;
}

const char *wal_vfs_name(const struct wal_vfs *wv)
{
	return wv->name;
}

void wal_vfs_unregister(struct wal_vfs *wv)
{
	if (wv == NULL)
		return;
	sqlite3_vfs_unregister(&wv->vfs);
	free(wv);
}
