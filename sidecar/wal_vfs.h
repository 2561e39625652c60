/*
 * wal_vfs: a SQLite VFS over the default one that writes each
 * transaction's WAL frames to the file in one write instead of two per
 * page, and nothing else different (the database file and its shared
 * memory are the default VFS's).
 *
 * Durability is the default VFS's: a transaction is in the WAL file (the
 * kernel's page cache; fsync as synchronous= says) when its commit
 * returns; frames of a transaction not yet committed may wait in memory,
 * where nobody but this connection could read them, and it flushes them
 * before it reads.
 *
 * Threads: register and unregister while no connection uses it; a file
 * belongs to the connection that opened it.
 */
#ifndef WSGATE_WAL_VFS_H
#define WSGATE_WAL_VFS_H

#include <sqlite3.h>

struct wal_vfs;

/* Registers the VFS as name (not the default); NULL when it cannot. */
struct wal_vfs *wal_vfs_register(const char *name);
/* The name to pass to sqlite3_open_v2. */
const char *wal_vfs_name(const struct wal_vfs *wv);
/* After every connection opened with it is closed. */
void wal_vfs_unregister(struct wal_vfs *wv);

#endif
