/*
 * checkpointer: WAL checkpoints off the writer thread (see checkpointer.h).
 *
 * Invariant: a checkpoint is due when the WAL holds CHECKPOINT_PAGES
 * frames that no checkpoint has copied yet. SQLite restarts the WAL from
 * the beginning at the writer's next transaction once a checkpoint has
 * copied every frame and no reader holds an old snapshot. Should the
 * checkpointer fall far behind (a reader pinning an old snapshot), the WAL
 * only grows: nothing is lost or blocked.
 *
 * Why "not yet copied" and not "WAL size": under a steady write load the
 * WAL rarely restarts (frames arrive while a checkpoint runs), so a
 * threshold on its size would start a checkpoint after every commit --
 * each one copying a few frames and paying two fdatasync calls (measured:
 * ~170 fdatasync/s at 3,000 events/s).
 */
#include "checkpointer.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

#include "log.h"

/* SQLite's own automatic checkpoint threshold (pages of the WAL). */
#define CHECKPOINT_PAGES 1000

struct checkpointer {
	sqlite3 *writer_db; /* hooked; owned by the store */
	sqlite3 *db;        /* the checkpointer thread's own connection */
	pthread_t thread;
	pthread_mutex_t lk; /* guards due, stopping */
	pthread_cond_t cv;
	bool due;
	bool stopping;
	int copied; /* WAL frames the last checkpoint left copied */
};

/* On the writer thread after each commit: never blocks on the checkpoint. */
static int checkpointer_wal_hook(void *arg, sqlite3 *db, const char *name,
                                 int pages)
{
	struct checkpointer *cp = arg;
	(void)db;
	(void)name;
	if (pages < CHECKPOINT_PAGES)
		return SQLITE_OK;
	pthread_mutex_lock(&cp->lk);
	if (pages < cp->copied) /* the WAL restarted since */
		cp->copied = 0;
	if (!cp->due && pages - cp->copied >= CHECKPOINT_PAGES) {
		cp->due = true;
		pthread_cond_signal(&cp->cv);
	}
	pthread_mutex_unlock(&cp->lk);
	return SQLITE_OK;
}

static void *checkpointer_main(void *arg)
{
	struct checkpointer *cp = arg;
	pthread_setname_np(pthread_self(), "wsgate:ckpt"); /* top, perf */
	pthread_mutex_lock(&cp->lk);
	for (;;) {
		while (!cp->due && !cp->stopping)
			pthread_cond_wait(&cp->cv, &cp->lk);
		if (cp->stopping)
			break;
		cp->due = false;
		pthread_mutex_unlock(&cp->lk);
		int wal_pages = 0, copied = 0;
		int rc = sqlite3_wal_checkpoint_v2(cp->db, NULL,
		                                   SQLITE_CHECKPOINT_PASSIVE,
		                                   &wal_pages, &copied);
		if (rc != SQLITE_OK && rc != SQLITE_BUSY)
			log_warn("store: checkpoint failed: %s",
			         sqlite3_errmsg(cp->db));
		pthread_mutex_lock(&cp->lk);
		cp->copied = rc == SQLITE_OK && copied > 0 ? copied : 0;
	}
	pthread_mutex_unlock(&cp->lk);
	return NULL;
}

int checkpointer_start(struct checkpointer **out, sqlite3 *writer_db,
                       const char *path, char *err, size_t errlen)
{
	struct checkpointer *cp = calloc(1, sizeof(*cp));
	if (cp == NULL) {
		snprintf(err, errlen, "checkpointer: out of memory");
		return -1;
	}
	cp->writer_db = writer_db;
	pthread_mutex_init(&cp->lk, NULL);
	pthread_cond_init(&cp->cv, NULL);
	if (sqlite3_open_v2(path, &cp->db,
	                    SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX,
	                    NULL) != SQLITE_OK) {
		snprintf(err, errlen, "%s: checkpointer cannot open: %s", path,
		         cp->db ? sqlite3_errmsg(cp->db) : "out of memory");
		goto fail;
	}
	sqlite3_busy_timeout(cp->db, 5000);
	/* A connection only learns the journal mode from its first read;
	 * until then it would take the database for a rollback one and
	 * checkpoint nothing. */
	if (sqlite3_exec(cp->db, "PRAGMA journal_mode=WAL", NULL, NULL, NULL) !=
	    SQLITE_OK) {
		snprintf(err, errlen, "%s: checkpointer: %s", path,
		         sqlite3_errmsg(cp->db));
		goto fail;
	}
	if (pthread_create(&cp->thread, NULL, checkpointer_main, cp) != 0) {
		snprintf(err, errlen, "checkpointer: cannot start its thread");
		goto fail;
	}
	/* Replaces (and so turns off) SQLite's automatic checkpoint. */
	sqlite3_wal_hook(writer_db, checkpointer_wal_hook, cp);
	*out = cp;
	return 0;
fail:
	sqlite3_close(cp->db);
	pthread_mutex_destroy(&cp->lk);
	pthread_cond_destroy(&cp->cv);
	free(cp);
	return -1;
}

void checkpointer_stop(struct checkpointer *cp)
{
	if (cp == NULL)
		return;
	sqlite3_wal_hook(cp->writer_db, NULL, NULL);
	pthread_mutex_lock(&cp->lk);
	cp->stopping = true;
	pthread_cond_signal(&cp->cv);
	pthread_mutex_unlock(&cp->lk);
	pthread_join(cp->thread, NULL);
	sqlite3_close(cp->db);
	pthread_mutex_destroy(&cp->lk);
	pthread_cond_destroy(&cp->cv);
	free(cp);
}
