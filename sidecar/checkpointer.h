/*
 * checkpointer: copies the WAL of the event log back into the database on
 * its own thread and connection, so the writer's commits never wait for a
 * checkpoint (and its fsyncs).
 *
 * The writer's connection gets a WAL hook instead of SQLite's automatic
 * checkpoint: after each commit it says how many pages the WAL holds; once
 * CHECKPOINT_PAGES of them are not yet copied, the checkpointer is woken
 * and runs a PASSIVE checkpoint (which never blocks the writer nor readers
 * such as wsgatectl).
 *
 * Threads: checkpointer_start / checkpointer_stop from the thread that
 * owns the writer's connection while no commit runs on it (before the
 * writer starts, after it stopped); the hook runs on the thread
 * that commits (the writer, or the service thread for a small group).
 */
#ifndef WSGATE_CHECKPOINTER_H
#define WSGATE_CHECKPOINTER_H

#include <sqlite3.h>
#include <stddef.h>

struct checkpointer;

/* Opens path a second time and hooks writer_db (a WAL database). */
int checkpointer_start(struct checkpointer **out, sqlite3 *writer_db,
                       const char *path, char *err, size_t errlen);
/* Unhooks the writer and frees everything; closing the writer's
 * connection afterwards checkpoints what is left. */
void checkpointer_stop(struct checkpointer *cp);

#endif
