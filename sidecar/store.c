/*
 * store: SQLite event log and audit trail with group commit by one
 * committer at a time (see store.h).
 *
 * Invariants kept here:
 * - Write-ahead: a job's rows are committed before the job is handed back,
 *   and only handed-back jobs let frames leave (the service thread sends
 *   nothing else that carries an event).
 * - deliveries.id is dense and increasing (1, 2, 3, ... from the anchor);
 *   chain(id) = HMAC(key, chain(id-1) || fields(id)). Only the committer
 *   (the holder of `writing`) appends, so prev_chain/next_id in memory
 *   equal the table's tail; a rolled-back transaction restores them.
 * - chain_heads.n is dense and increasing too, each head MAC'd over the
 *   previous head's mac (audit_chain.h); heads are written by the
 *   committer only: at start, every 10 s when the chain moved, at
 *   shutdown, and by pruning, which writes a prune record naming the
 *   anchor and deletes the rows and heads before it in one transaction,
 *   so that the first head left always says where the chain starts.
 * - Jobs are committed in submission order: a committer always takes the
 *   queue from its head, and gives back (jobs_requeue) what it could not
 *   begin, at the head again.
 * - events is a rowid table: rows append in acceptance order and only
 *   the (user_id, seq) key index takes scattered inserts; as a WITHOUT
 *   ROWID table each whole row lands on its user's page, at half the speed.
 * - synchronous=NORMAL in WAL: a commit survives a crash of the process
 *   (SIGKILL included), not a power cut of the machine.
 */
#include "store.h"

#include <openssl/evp.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "checkpointer.h"
#include "clock.h"
#include "log.h"
#include "wal_vfs.h"

#define BATCH_MAX 4096 /* jobs per transaction */
/* Outcome and session rows wait up to LAZY_US or LAZY_MAX jobs for
 * company: nobody waits for them, and each commit has a fixed cost. Jobs
 * someone waits for (events, replays) are committed at once. */
#define LAZY_US  20000
#define LAZY_MAX 2048
/* Largest queue (in rows written) the service thread commits itself
 * (store_group_end): at most about 1 ms of commit on this kind of machine.
 * 0: never (the writer thread commits everything, as DESIGN.md recommends;
 * docs/DESIGN.md says why this departs from it). */
#define INLINE_MAX_ROWS     128
#define BUSY_TIMEOUT_MS     5000     /* SQLite's wait for another's lock */
#define CHAIN_HEAD_EVERY_US 10000000 /* log the chain head every 10 s */
#define PRUNE_EVERY_US      60000000 /* retention pass every minute */

static const char schema_sql[] =
    "PRAGMA journal_mode=WAL;"
    "PRAGMA synchronous=NORMAL;"
    /* The writer's working set (b-tree interiors of the hot tables). */
    "PRAGMA cache_size=-16384;"
    "CREATE TABLE IF NOT EXISTS events("
    " user_id TEXT NOT NULL, seq INTEGER NOT NULL, event_id TEXT NOT NULL,"
    " type TEXT NOT NULL, thread_id TEXT NOT NULL, run_id TEXT NOT NULL,"
    " accepted_at INTEGER NOT NULL, payload BLOB NOT NULL,"
    " payload_sha256 BLOB NOT NULL, pending INTEGER NOT NULL DEFAULT 0,"
    " node_id TEXT NOT NULL DEFAULT '', PRIMARY KEY(user_id, seq));"
    "CREATE INDEX IF NOT EXISTS events_by_time ON events(accepted_at);"
    "CREATE INDEX IF NOT EXISTS events_pending ON events(user_id, seq)"
    " WHERE pending = 1;"
    "CREATE TABLE IF NOT EXISTS user_seqs("
    " user_id TEXT PRIMARY KEY, last_seq INTEGER NOT NULL) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS sessions("
    " conn_id TEXT PRIMARY KEY, user_id TEXT NOT NULL,"
    " opened_at INTEGER NOT NULL, closed_at INTEGER, close_code INTEGER,"
    " close_reason TEXT, peer TEXT, user_agent TEXT, token_jti TEXT,"
    " token_exp INTEGER, node_id TEXT NOT NULL DEFAULT '');"
    "CREATE TABLE IF NOT EXISTS deliveries("
    " id INTEGER PRIMARY KEY, user_id TEXT NOT NULL, seq INTEGER NOT NULL,"
    " event_id TEXT NOT NULL, conn_id TEXT NOT NULL,"
    " conn_user_id TEXT NOT NULL, status TEXT NOT NULL, at INTEGER NOT NULL,"
    " payload_sha256 BLOB NOT NULL, chain BLOB NOT NULL,"
    " node_id TEXT NOT NULL DEFAULT '');"
    "CREATE TABLE IF NOT EXISTS auth_failures("
    " at INTEGER NOT NULL, peer TEXT, reason TEXT NOT NULL);"
    "CREATE TABLE IF NOT EXISTS chain_heads("
    " n INTEGER PRIMARY KEY, at INTEGER NOT NULL, id INTEGER NOT NULL,"
    " chain BLOB NOT NULL, reason TEXT NOT NULL, mac BLOB NOT NULL);"
    "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value)"
    " WITHOUT ROWID;"
    "INSERT OR IGNORE INTO meta(key, value)"
    " VALUES('audit_format', 2);"
    /* The history the seqs belong to: a new database, a new epoch. */
    "INSERT OR IGNORE INTO meta(key, value)"
    " VALUES('epoch', lower(hex(randomblob(8))));";

const char *store_schema_sql(void)
{
	return schema_sql;
}

enum stmt_id {
	ST_INSERT_EVENT,
	ST_INSERT_DELIVERY,
	ST_REPLAY_ROWS,
	ST_OLDEST_SEQ,
	ST_SESSION_OPEN,
	ST_SESSION_CLOSE,
	ST_AUTH_FAILURE,
	ST_PENDING_DONE,
	ST_CHAIN_HEAD,
	ST_PRUNE_POINT,
	ST_PRUNE_ROWS,
	ST_PRUNE_HEADS,
	ST_META_SET,
	ST_COUNT
};

static const char *const stmt_sql[ST_COUNT] = {
    [ST_INSERT_EVENT] =
        "INSERT INTO events(user_id, seq, event_id, type, thread_id,"
        " run_id, accepted_at, payload, payload_sha256, pending, node_id)"
        " VALUES(?,?,?,?,?,?,?,?,?,?,?)",
    [ST_INSERT_DELIVERY] =
        "INSERT INTO deliveries(id, user_id, seq, event_id, conn_id,"
        " conn_user_id, status, at, payload_sha256, chain, node_id)"
        " VALUES(?,?,?,?,?,?,?,?,?,?,?)",
    [ST_REPLAY_ROWS] =
        "SELECT seq, event_id, type, thread_id, run_id, accepted_at,"
        " payload, pending, user_id FROM events"
        " WHERE user_id = ?1 AND seq > ?2 AND seq <= ?3"
        " AND (seq > ?4 OR pending = 1) ORDER BY seq LIMIT ?5",
    [ST_OLDEST_SEQ] = "SELECT MIN(seq) FROM events WHERE user_id = ?",
    [ST_SESSION_OPEN] =
        "INSERT OR REPLACE INTO sessions(conn_id, user_id, opened_at,"
        " peer, user_agent, token_jti, token_exp, node_id)"
        " VALUES(?,?,?,?,?,?,?,?)",
    [ST_SESSION_CLOSE] = "UPDATE sessions SET closed_at = ?, close_code = ?,"
                         " close_reason = ? WHERE conn_id = ?",
    [ST_AUTH_FAILURE] =
        "INSERT INTO auth_failures(at, peer, reason) VALUES(?,?,?)",
    [ST_PENDING_DONE] = "UPDATE events SET pending = 0"
                        " WHERE user_id = ? AND seq <= ? AND pending = 1",
    [ST_CHAIN_HEAD] = "INSERT INTO chain_heads(n, at, id, chain, reason,"
                      " mac) VALUES(?,?,?,?,?,?)",
    /* Where retention cuts the chain: the newest head older than the
     * cutoff (heads are few: one per 10 s at most). */
    [ST_PRUNE_POINT] = "SELECT id, chain FROM chain_heads WHERE at < ?"
                       " ORDER BY n DESC LIMIT 1",
    [ST_PRUNE_ROWS] = "DELETE FROM deliveries WHERE id <= ?",
    [ST_PRUNE_HEADS] = "DELETE FROM chain_heads WHERE n < ?",
    [ST_META_SET] = "INSERT OR REPLACE INTO meta(key, value) VALUES(?, ?)",
};

/* One per sidecar. */
struct store {
	sqlite3 *db;
	struct wal_vfs *wal_vfs; /* the writer connection's VFS */
	sqlite3_stmt *stmt[ST_COUNT];
	struct checkpointer *checkpointer; /* WAL checkpoints, own thread */
	const struct audit_key *key;
	const char *node_id; /* "" for a single pod */
	uint64_t stream_seq; /* meta('stream_seq') when opened */
	char stream_epoch[STORE_EPOCH_MAX + 1];
	int64_t retention_us;
	int64_t prune_every_us; /* a quarter of the retention, 1 s to 1 min */
	store_wake_fn wake;
	void *wake_arg;

	/* The committer's (whoever holds `writing`). */
	EVP_MD_CTX *sha256; /* payload digests; fetched once: OpenSSL 3's
	                     * SHA256() looks the algorithm up per call */
	int64_t next_id;
	unsigned char prev_chain[AUDIT_CHAIN_LEN];
	int64_t anchor_id; /* rows up to it are pruned */
	int64_t head_n;    /* the last chain head's number and mac */
	unsigned char head_mac[AUDIT_CHAIN_LEN];
	int64_t head_logged_id;
	int64_t last_head_us;
	int64_t last_prune_us;
	char epoch[STORE_EPOCH_MAX + 1]; /* meta('epoch'), read at open */

	/* Service thread only: the group being submitted (store_group_*). */
	int group_open;
	struct store_job *group_head, *group_tail;
	size_t group_count, group_urgent, group_rows;

	pthread_t writer;
	pthread_mutex_t lk;     /* guards everything below */
	pthread_cond_t cv;      /* writer: work to do */
	pthread_cond_t flushed; /* store_flush: a batch finished */
	/* The connection's holder: the writer thread, or the service thread
	 * committing a small group itself (store_group_end). Only the
	 * holder touches db, stmt and the committer's fields above. */
	int writing;
	int writer_parked; /* the writer waits for `writing` to clear */
	int writer_idle;   /* the writer sleeps with an empty queue */
	struct store_job *jobs_head, *jobs_tail;
	size_t jobs_count;
	size_t jobs_urgent; /* events and replays among them */
	size_t jobs_rows;   /* about how many rows they write (job_rows) */
	int64_t lazy_since; /* when the oldest queued job arrived */
	int flush_requested;
	struct store_job *done_head, *done_tail;
	int stopping;
	uint64_t failures;
	char last_error[256];
	/* The committed tail of the chain (store_chain_head). */
	int64_t committed_id;
	unsigned char committed_chain[AUDIT_CHAIN_LEN];

	atomic_uint_fast64_t backlog;
};

/* --- jobs --- */

struct store_job *store_job_new(enum store_job_kind kind)
{
	struct store_job *job = calloc(1, sizeof(*job));
	if (job)
		job->kind = kind;
	return job;
}

/* Appends s (NULL: "") at *tail and returns where it went. */
static const char *job_copy_str(char **tail, const char *s, size_t len)
{
	char *at = *tail;
	memcpy(at, s ? s : "", len);
	at[len] = '\0';
	*tail += len + 1;
	return at;
}

struct store_job *store_job_new_delivery(const char *user_id,
                                         const char *event_id,
                                         const char *conn_user_id)
{
	/* A row per frame written: one allocation instead of four. */
	size_t lu = user_id ? strlen(user_id) : 0;
	size_t le = event_id ? strlen(event_id) : 0;
	size_t lc = conn_user_id ? strlen(conn_user_id) : 0;
	struct store_job *job = calloc(1, sizeof(*job) + lu + le + lc + 3);
	if (!job)
		return NULL;
	char *tail = (char *)(job + 1);
	job->kind = STORE_DELIVERY;
	job->delivery.user_id = job_copy_str(&tail, user_id, lu);
	job->delivery.event_id = job_copy_str(&tail, event_id, le);
	job->delivery.conn_user_id = job_copy_str(&tail, conn_user_id, lc);
	return job;
}

void store_job_free(struct store_job *job)
{
	if (!job)
		return;
	switch (job->kind) {
	case STORE_EVENT:
		free(job->event.conns);
		free(job->event.owned);
		break;
	case STORE_REPLAY:
		for (uint32_t i = 0; i < job->replay.n_frames; i++)
			frame_unref(job->replay.frames[i]);
		free(job->replay.frames);
		break;
	case STORE_DELIVERY:
		break; /* its strings live in the job's allocation */
	case STORE_SESSION_OPEN:
	case STORE_SESSION_CLOSE:
		free(job->session.user_id);
		free(job->session.peer);
		free(job->session.user_agent);
		free(job->session.token_jti);
		free(job->session.close_reason);
		break;
	case STORE_AUTH_FAILURE:
		free(job->auth_failure.peer);
		free(job->auth_failure.reason);
		break;
	case STORE_PENDING_DONE:
		free(job->pending_done.user_id);
		break;
	case STORE_STREAM_POS:
		break;
	}
	free(job);
}

static int job_is_urgent(const struct store_job *j)
{
	return j->kind == STORE_EVENT || j->kind == STORE_REPLAY;
}

/* About how many rows a job writes: an event fans out to a queued row per
 * connection, a replay step to one per event it reads. */
static size_t job_rows(const struct store_job *j)
{
	if (j->kind == STORE_EVENT)
		return 1 + (j->event.audit ? j->event.n_conns : 0);
	if (j->kind == STORE_REPLAY)
		return 1 + j->replay.limit;
	return 1;
}

/* Appends the list head..tail (count jobs, urgent of them events or
 * replays, writing about rows rows) to the queue (lock held). Returns 1
 * when the writer must be woken: a batch is due, or it sleeps without
 * knowing of the lazy jobs that now wait. */
static int jobs_append(struct store *s, struct store_job *head,
                       struct store_job *tail, size_t count, size_t urgent,
                       size_t rows)
{
	if (s->jobs_tail) {
		s->jobs_tail->next = head;
	} else {
		s->jobs_head = head;
		s->lazy_since = clock_now_us();
	}
	s->jobs_tail = tail;
	size_t before = s->jobs_count;
	s->jobs_count += count;
	s->jobs_urgent += urgent;
	s->jobs_rows += rows;
	/* A lazy job in an empty queue starts the writer's LAZY_US wait. */
	return urgent || (before < LAZY_MAX && s->jobs_count >= LAZY_MAX) ||
	       (before == 0 && s->writer_idle);
}

/* Takes up to BATCH_MAX queued jobs, one transaction's worth (lock
 * held); *n says how many. */
static struct store_job *jobs_take(struct store *s, size_t *n)
{
	struct store_job *batch = s->jobs_head, *last = batch;
	*n = batch ? 1 : 0;
	while (last && last->next && *n < BATCH_MAX) {
		last = last->next;
		(*n)++;
	}
	if (last) {
		s->jobs_head = last->next;
		if (!s->jobs_head)
			s->jobs_tail = NULL;
		last->next = NULL;
		s->jobs_count -= *n;
		for (struct store_job *j = batch; j; j = j->next) {
			s->jobs_urgent -= job_is_urgent(j);
			s->jobs_rows -= job_rows(j);
		}
		s->lazy_since = clock_now_us();
	}
	return batch;
}

/* Puts a taken batch of n jobs back at the head of the queue (lock held). */
static void jobs_requeue(struct store *s, struct store_job *batch, size_t n)
{
	struct store_job *last = batch;
	while (last->next)
		last = last->next;
	last->next = s->jobs_head;
	if (!s->jobs_head)
		s->jobs_tail = last;
	s->jobs_head = batch;
	s->jobs_count += n;
	for (struct store_job *j = batch; j; j = j->next) {
		s->jobs_urgent += job_is_urgent(j);
		s->jobs_rows += job_rows(j);
	}
}

/* Whether the writer has a batch to commit now (lock held). */
static int writer_has_work(const struct store *s)
{
	return s->stopping || (s->flush_requested && s->jobs_head) ||
	       s->jobs_urgent || s->jobs_count >= LAZY_MAX;
}

/*
 * Gives the connection back after a batch (see `writing`). The writer is
 * woken only if it waits for the connection or has work: it sleeps in a
 * timed wait most of the time, and a wake-up it does not need costs the
 * service thread a futex call per inline commit (6% of that thread).
 */
static void committer_release(struct store *s)
{
	pthread_mutex_lock(&s->lk);
	/* next_id and prev_chain are the committed tail again here (a failed
	 * transaction restored them). */
	s->committed_id = s->next_id - 1;
	memcpy(s->committed_chain, s->prev_chain, AUDIT_CHAIN_LEN);
	s->writing = 0;
	pthread_cond_broadcast(&s->flushed);
	if (s->writer_parked || writer_has_work(s))
		pthread_cond_signal(&s->cv);
	pthread_mutex_unlock(&s->lk);
}

static void commit_batch(struct store *s, struct store_job *batch, int begun);
static void finish_batch(struct store *s, struct store_job *batch, size_t n,
                         int wake);

void store_submit(struct store *s, struct store_job *job)
{
	job->next = NULL;
	size_t urgent = job_is_urgent(job), rows = job_rows(job);
	atomic_fetch_add(&s->backlog, 1);
	if (!s->group_open) {
		pthread_mutex_lock(&s->lk);
		if (jobs_append(s, job, job, 1, urgent, rows))
			pthread_cond_signal(&s->cv);
		pthread_mutex_unlock(&s->lk);
		return;
	}
	if (s->group_tail)
		s->group_tail->next = job;
	else
		s->group_head = job;
	s->group_tail = job;
	s->group_count++;
	s->group_urgent += urgent;
	s->group_rows += rows;
}

void store_group_begin(struct store *s)
{
	s->group_open = 1;
}

/*
 * A small group finding the writer idle is committed right here: handing
 * it over costs two thread wake-ups (to the writer and back), which on a
 * loaded 2-core machine took 100-500 us each, several times the commit.
 * A large group, or a busy writer, goes to the writer thread.
 */
void store_group_end(struct store *s)
{
	struct store_job *head = s->group_head, *tail = s->group_tail;
	size_t count = s->group_count, urgent = s->group_urgent,
	       rows = s->group_rows;
	s->group_open = 0;
	s->group_head = s->group_tail = NULL;
	s->group_count = s->group_urgent = s->group_rows = 0;
	if (!head)
		return;
	pthread_mutex_lock(&s->lk);
	int due = jobs_append(s, head, tail, count, urgent, rows);
	struct store_job *batch = NULL;
	size_t n = 0;
	if (urgent && !s->writing && !s->stopping &&
	    s->jobs_rows <= INLINE_MAX_ROWS) {
		batch = jobs_take(s, &n);
		s->writing = 1;
	} else if (due) {
		pthread_cond_signal(&s->cv);
	}
	pthread_mutex_unlock(&s->lk);
	if (!batch)
		return;
	/* The event loop must not wait for a lock another process holds
	 * (SQLite's busy wait is 5 s): then the writer thread waits instead. */
	sqlite3_busy_timeout(s->db, 0);
	int begun = sqlite3_exec(s->db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
	sqlite3_busy_timeout(s->db, BUSY_TIMEOUT_MS);
	if (begun != SQLITE_OK) {
		pthread_mutex_lock(&s->lk);
		jobs_requeue(s, batch, n);
		pthread_mutex_unlock(&s->lk);
		committer_release(s);
		return;
	}
	commit_batch(s, batch, 1);
	finish_batch(s, batch, n, 0);
	committer_release(s);
}

struct store_job *store_take_done(struct store *s)
{
	pthread_mutex_lock(&s->lk);
	struct store_job *list = s->done_head;
	s->done_head = s->done_tail = NULL;
	pthread_mutex_unlock(&s->lk);
	return list;
}

uint64_t store_backlog(const struct store *s)
{
	return atomic_load(&((struct store *)s)->backlog);
}

void store_chain_head(struct store *s, int64_t *id,
                      unsigned char chain[AUDIT_CHAIN_LEN])
{
	pthread_mutex_lock(&s->lk);
	*id = s->committed_id;
	memcpy(chain, s->committed_chain, AUDIT_CHAIN_LEN);
	pthread_mutex_unlock(&s->lk);
}

uint64_t store_stream_seq(const struct store *s)
{
	return s->stream_seq;
}

const char *store_stream_epoch(const struct store *s)
{
	return s->stream_epoch;
}

uint64_t store_failures(struct store *s, char *last_error, size_t cap)
{
	pthread_mutex_lock(&s->lk);
	uint64_t n = s->failures;
	snprintf(last_error, cap, "%s", s->last_error);
	pthread_mutex_unlock(&s->lk);
	return n;
}

/* --- writer: one job each --- */

static int step_done(struct store *s, sqlite3_stmt *st)
{
	int rc = sqlite3_step(st);
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	(void)s;
	return rc == SQLITE_DONE ? 0 : -1;
}

static void bind_text(sqlite3_stmt *st, int i, const char *v)
{
	if (v)
		sqlite3_bind_text(st, i, v, -1, SQLITE_STATIC);
	else
		sqlite3_bind_null(st, i);
}

/* Appends one delivery row to the chain. */
static int insert_delivery(struct store *s, const struct audit_row *row_in)
{
	struct audit_row row = *row_in;
	unsigned char chain[AUDIT_CHAIN_LEN];
	row.id = s->next_id;
	audit_chain_next(s->key, s->prev_chain, &row, chain);
	sqlite3_stmt *st = s->stmt[ST_INSERT_DELIVERY];
	sqlite3_bind_int64(st, 1, row.id);
	bind_text(st, 2, row.user_id);
	sqlite3_bind_int64(st, 3, (sqlite3_int64)row.seq);
	bind_text(st, 4, row.event_id);
	bind_text(st, 5, row.conn_id);
	bind_text(st, 6, row.conn_user_id);
	bind_text(st, 7, row.status);
	sqlite3_bind_int64(st, 8, row.at);
	sqlite3_bind_blob(st, 9, row.payload_sha256,
	                  (int)row.payload_sha256_len, SQLITE_STATIC);
	sqlite3_bind_blob(st, 10, chain, AUDIT_CHAIN_LEN, SQLITE_STATIC);
	bind_text(st, 11, s->node_id);
	if (step_done(s, st))
		return -1;
	s->next_id++;
	memcpy(s->prev_chain, chain, AUDIT_CHAIN_LEN);
	return 0;
}

/* SHA-256 of a payload into out; -1 on failure. */
static int payload_digest(struct store *s, const void *payload, size_t len,
                          unsigned char out[AUDIT_DIGEST_LEN])
{
	if (!EVP_DigestInit_ex2(s->sha256, NULL, NULL) ||
	    !EVP_DigestUpdate(s->sha256, payload, len) ||
	    !EVP_DigestFinal_ex(s->sha256, out, NULL)) {
		log_error("store: SHA-256 of a payload failed");
		return -1;
	}
	return 0;
}

static int run_event(struct store *s, struct store_job *job)
{
	static const char empty[] = "{}";
	const void *payload =
	    job->event.payload_len ? job->event.payload : empty;
	size_t plen = job->event.payload_len ? job->event.payload_len : 2;
	unsigned char *digest = job->event.payload_sha256;
	if (payload_digest(s, payload, plen, digest))
		return -1;

	sqlite3_stmt *st = s->stmt[ST_INSERT_EVENT];
	bind_text(st, 1, job->event.user_id);
	sqlite3_bind_int64(st, 2, (sqlite3_int64)job->event.seq);
	bind_text(st, 3, job->event.event_id);
	bind_text(st, 4, job->event.type);
	bind_text(st, 5, job->event.thread_id);
	bind_text(st, 6, job->event.run_id);
	sqlite3_bind_int64(st, 7, job->event.accepted_at);
	sqlite3_bind_blob(st, 8, payload, (int)plen, SQLITE_STATIC);
	sqlite3_bind_blob(st, 9, digest, AUDIT_DIGEST_LEN, SQLITE_STATIC);
	sqlite3_bind_int(st, 10, job->event.pending);
	bind_text(st, 11, job->event.node_id ? job->event.node_id : s->node_id);
	if (step_done(s, st))
		return -1;
	for (uint32_t i = 0; job->event.audit && i < job->event.n_conns; i++) {
		struct audit_row row = {
		    .user_id = job->event.user_id,
		    .seq = job->event.seq,
		    .event_id = job->event.event_id,
		    .conn_id = job->event.conns[i].conn_id,
		    .conn_user_id = job->event.conns[i].conn_user_id,
		    .status = "queued",
		    .at = job->event.accepted_at,
		    .payload_sha256 = digest,
		    .payload_sha256_len = AUDIT_DIGEST_LEN,
		};
		if (insert_delivery(s, &row))
			return -1;
	}
	return 0;
}

static int replay_push(struct store_job *job, struct frame *f)
{
	uint32_t n = job->replay.n_frames;
	struct frame **frames =
	    realloc(job->replay.frames, (n + 1) * sizeof(*frames));
	if (!frames)
		return -1;
	frames[n] = f;
	job->replay.frames = frames;
	job->replay.n_frames = n + 1;
	return 0;
}

/* Reads the next chunk of a connection's catch-up and commits a queued row
 * for each event in it, before any of them is sent. */
static int run_replay(struct store *s, struct store_job *job)
{
	int64_t now = clock_now_us();
	if (job->replay.has_since && job->replay.after == 0 &&
	    (job->replay.epoch_changed ||
	     job->replay.since < job->replay.upto)) {
		sqlite3_stmt *st = s->stmt[ST_OLDEST_SEQ];
		bind_text(st, 1, job->replay.user_id);
		uint64_t oldest = 0;
		if (sqlite3_step(st) == SQLITE_ROW &&
		    sqlite3_column_type(st, 0) != SQLITE_NULL)
			oldest = (uint64_t)sqlite3_column_int64(st, 0);
		sqlite3_reset(st);
		sqlite3_clear_bindings(st);
		if (oldest == 0)
			oldest = job->replay.upto + 1;
		if (job->replay.epoch_changed ||
		    oldest > job->replay.since + 1) {
			job->replay.resume_failed = 1;
			job->replay.oldest_seq = oldest;
		}
	}
	sqlite3_stmt *st = s->stmt[ST_REPLAY_ROWS];
	bind_text(st, 1, job->replay.user_id);
	uint64_t after = job->replay.after;
	if (job->replay.since_floor && after < job->replay.since)
		after = job->replay.since;
	sqlite3_bind_int64(st, 2, (sqlite3_int64)after);
	sqlite3_bind_int64(st, 3, (sqlite3_int64)job->replay.upto);
	sqlite3_bind_int64(st, 4,
	                   (sqlite3_int64)(job->replay.has_since
	                                       ? job->replay.since
	                                       : job->replay.upto));
	sqlite3_bind_int(st, 5, (int)job->replay.limit);
	int rc;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		const char *event_id = (const char *)sqlite3_column_text(st, 1);
		const char *user_id = (const char *)sqlite3_column_text(st, 8);
		const char *thread_id =
		    (const char *)sqlite3_column_text(st, 3);
		const char *run_id = (const char *)sqlite3_column_text(st, 4);
		struct frame_event fe = {
		    .type = (const char *)sqlite3_column_text(st, 2),
		    .seq = (uint64_t)sqlite3_column_int64(st, 0),
		    .event_id = event_id,
		    .event_id_len = strlen(event_id),
		    .user_id = user_id,
		    .user_id_len = strlen(user_id),
		    .thread_id = thread_id,
		    .thread_id_len = strlen(thread_id),
		    .run_id = run_id,
		    .run_id_len = strlen(run_id),
		    .ts_us = sqlite3_column_int64(st, 5),
		    .payload = sqlite3_column_blob(st, 6),
		    .payload_len = (size_t)sqlite3_column_bytes(st, 6),
		};
		struct frame *f = frame_build_event(&fe);
		if (!f || replay_push(job, f)) {
			frame_unref(f);
			rc = SQLITE_NOMEM;
			break;
		}
		f->pending = sqlite3_column_int(st, 7);
		/* The digest of the payload this frame carries, as read: its
		 * rows record what was sent. */
		if (payload_digest(s, fe.payload, fe.payload_len,
		                   f->payload_sha256)) {
			rc = SQLITE_ERROR;
			break;
		}
	}
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	if (rc != SQLITE_DONE)
		return -1;
	job->replay.more = job->replay.n_frames == job->replay.limit;
	for (uint32_t i = 0; job->replay.audit && i < job->replay.n_frames;
	     i++) {
		struct frame *f = job->replay.frames[i];
		struct audit_row row = {
		    .user_id = f->user_id,
		    .seq = f->seq,
		    .event_id = f->event_id,
		    .conn_id = job->replay.conn_id,
		    .conn_user_id = job->replay.conn_user_id,
		    .status = "queued",
		    .at = now,
		    .payload_sha256 = f->payload_sha256,
		    .payload_sha256_len = AUDIT_DIGEST_LEN,
		};
		if (insert_delivery(s, &row))
			return -1;
	}
	return 0;
}

/* meta(key) = value, inside the caller's transaction. */
static int meta_set_int(struct store *s, const char *key, uint64_t value)
{
	sqlite3_stmt *st = s->stmt[ST_META_SET];
	bind_text(st, 1, key);
	sqlite3_bind_int64(st, 2, (sqlite3_int64)value);
	return step_done(s, st);
}

static int run_job(struct store *s, struct store_job *job)
{
	sqlite3_stmt *st;
	switch (job->kind) {
	case STORE_EVENT:
		return run_event(s, job);
	case STORE_REPLAY:
		return run_replay(s, job);
	case STORE_DELIVERY: {
		struct audit_row row = {
		    .user_id = job->delivery.user_id,
		    .seq = job->delivery.seq,
		    .event_id = job->delivery.event_id,
		    .conn_id = job->delivery.conn_id,
		    .conn_user_id = job->delivery.conn_user_id,
		    .status = job->delivery.status,
		    .at = job->delivery.at,
		    .payload_sha256 = job->delivery.payload_sha256,
		    .payload_sha256_len = AUDIT_DIGEST_LEN,
		};
		return insert_delivery(s, &row);
	}
	case STORE_SESSION_OPEN:
		st = s->stmt[ST_SESSION_OPEN];
		bind_text(st, 1, job->session.conn_id);
		bind_text(st, 2, job->session.user_id);
		sqlite3_bind_int64(st, 3, job->session.at);
		bind_text(st, 4, job->session.peer);
		bind_text(st, 5, job->session.user_agent);
		bind_text(st, 6, job->session.token_jti);
		sqlite3_bind_int64(st, 7, job->session.token_exp);
		bind_text(st, 8, s->node_id);
		return step_done(s, st);
	case STORE_SESSION_CLOSE:
		st = s->stmt[ST_SESSION_CLOSE];
		sqlite3_bind_int64(st, 1, job->session.at);
		sqlite3_bind_int(st, 2, job->session.close_code);
		bind_text(st, 3, job->session.close_reason);
		bind_text(st, 4, job->session.conn_id);
		return step_done(s, st);
	case STORE_AUTH_FAILURE:
		st = s->stmt[ST_AUTH_FAILURE];
		sqlite3_bind_int64(st, 1, job->auth_failure.at);
		bind_text(st, 2, job->auth_failure.peer);
		bind_text(st, 3, job->auth_failure.reason);
		return step_done(s, st);
	case STORE_PENDING_DONE:
		st = s->stmt[ST_PENDING_DONE];
		bind_text(st, 1, job->pending_done.user_id);
		sqlite3_bind_int64(st, 2, (sqlite3_int64)job->pending_done.seq);
		return step_done(s, st);
	case STORE_STREAM_POS:
		if (job->stream_pos.epoch[0]) {
			st = s->stmt[ST_META_SET];
			bind_text(st, 1, "stream_epoch");
			bind_text(st, 2, job->stream_pos.epoch);
			if (step_done(s, st))
				return -1;
		}
		return meta_set_int(s, "stream_seq", job->stream_pos.seq);
	}
	return -1;
}

/* --- writer: transactions --- */

static int exec(struct store *s, const char *sql)
{
	return sqlite3_exec(s->db, sql, NULL, NULL, NULL) == SQLITE_OK ? 0 : -1;
}

/* The head chain's state, saved around a transaction that may fail. */
struct head_state {
	int64_t n, anchor_id;
	unsigned char mac[AUDIT_CHAIN_LEN];
};

static void head_state_save(const struct store *s, struct head_state *h)
{
	h->n = s->head_n;
	h->anchor_id = s->anchor_id;
	memcpy(h->mac, s->head_mac, AUDIT_CHAIN_LEN);
}

static void head_state_restore(struct store *s, const struct head_state *h)
{
	s->head_n = h->n;
	s->anchor_id = h->anchor_id;
	memcpy(s->head_mac, h->mac, AUDIT_CHAIN_LEN);
}

/* Appends chain head n + 1 naming row id and its chain, MAC'd over the
 * last head's mac (zeros for a prune record), inside the caller's
 * transaction. */
static int append_head(struct store *s, const char *reason, int64_t id,
                       const unsigned char chain[AUDIT_CHAIN_LEN], int64_t now)
{
	static const unsigned char zeros[AUDIT_CHAIN_LEN];
	struct audit_head h = {
	    .n = s->head_n + 1,
	    .at = now,
	    .id = id,
	    .chain = chain,
	    .chain_len = AUDIT_CHAIN_LEN,
	    .reason = reason,
	};
	unsigned char mac[AUDIT_CHAIN_LEN];
	int pruned = strcmp(reason, AUDIT_HEAD_PRUNED) == 0;
	audit_head_mac(s->key, pruned || h.n == 1 ? zeros : s->head_mac, &h,
	               mac);
	sqlite3_stmt *st = s->stmt[ST_CHAIN_HEAD];
	sqlite3_bind_int64(st, 1, h.n);
	sqlite3_bind_int64(st, 2, h.at);
	sqlite3_bind_int64(st, 3, h.id);
	sqlite3_bind_blob(st, 4, chain, AUDIT_CHAIN_LEN, SQLITE_STATIC);
	bind_text(st, 5, reason);
	sqlite3_bind_blob(st, 6, mac, AUDIT_CHAIN_LEN, SQLITE_STATIC);
	if (step_done(s, st))
		return -1;
	s->head_n = h.n;
	memcpy(s->head_mac, mac, AUDIT_CHAIN_LEN);
	return 0;
}

/* The head as `wsgatectl verify --head` takes it: "ID:HEX". */
static void log_head(const char *reason, int64_t id,
                     const unsigned char chain[AUDIT_CHAIN_LEN])
{
	char hex[2 * AUDIT_CHAIN_LEN + 1];
	for (int i = 0; i < AUDIT_CHAIN_LEN; i++)
		sprintf(hex + 2 * i, "%02x", chain[i]);
	log_info("audit chain head (%s): %lld:%s", reason, (long long)id, hex);
}

static void log_chain_head(struct store *s, const char *reason, int64_t now)
{
	if (s->next_id - 1 == s->head_logged_id &&
	    strcmp(reason, "interval") == 0)
		return;
	struct head_state saved;
	head_state_save(s, &saved);
	if (exec(s, "BEGIN") == 0 &&
	    append_head(s, reason, s->next_id - 1, s->prev_chain, now) == 0 &&
	    exec(s, "COMMIT") == 0) {
		log_head(reason, s->next_id - 1, s->prev_chain);
		s->head_logged_id = s->next_id - 1;
	} else {
		log_warn("store: chain head (%s) not written: %s", reason,
		         sqlite3_errmsg(s->db));
		exec(s, "ROLLBACK");
		head_state_restore(s, &saved);
	}
	s->last_head_us = now;
}

/* Deliveries: cut at the newest head older than cutoff, if it is past the
 * anchor. The prune record (reason "pruned", its mac over zeros) names
 * that head's row and chain, the new anchor; the rows up to it and every
 * earlier head go, so that the record is the first head; a head naming
 * the tail follows it. Inside the caller's transaction. */
static int prune_deliveries(struct store *s, int64_t cutoff, int64_t now)
{
	sqlite3_stmt *st = s->stmt[ST_PRUNE_POINT];
	sqlite3_bind_int64(st, 1, cutoff);
	int rc = sqlite3_step(st);
	int64_t id = 0;
	unsigned char chain[AUDIT_CHAIN_LEN];
	int found =
	    rc == SQLITE_ROW && sqlite3_column_bytes(st, 1) == AUDIT_CHAIN_LEN;
	if (found) {
		id = sqlite3_column_int64(st, 0);
		memcpy(chain, sqlite3_column_blob(st, 1), AUDIT_CHAIN_LEN);
	}
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		return -1;
	if (!found || id <= s->anchor_id)
		return 0;
	if (append_head(s, AUDIT_HEAD_PRUNED, id, chain, now))
		return -1;
	st = s->stmt[ST_PRUNE_ROWS];
	sqlite3_bind_int64(st, 1, id);
	if (step_done(s, st))
		return -1;
	st = s->stmt[ST_PRUNE_HEADS];
	sqlite3_bind_int64(st, 1, s->head_n);
	if (step_done(s, st))
		return -1;
	s->anchor_id = id;
	if (s->next_id - 1 > id &&
	    append_head(s, "interval", s->next_id - 1, s->prev_chain, now))
		return -1;
	return 0;
}

/*
 * Retention: events, sessions and auth failures older than --retention go,
 * and deliveries up to a head older than that (prune_deliveries).
 * Users whose events all go keep their last seq in user_seqs.
 */
static void prune(struct store *s, int64_t now)
{
	s->last_prune_us = now;
	int64_t cutoff = now - s->retention_us;
	char sql[768];
	snprintf(
	    sql, sizeof(sql),
	    "BEGIN;"
	    "INSERT INTO user_seqs(user_id, last_seq)"
	    " SELECT user_id, MAX(seq) FROM events WHERE accepted_at < %lld"
	    " GROUP BY user_id"
	    " ON CONFLICT(user_id) DO UPDATE"
	    " SET last_seq = MAX(last_seq, excluded.last_seq);"
	    "DELETE FROM events WHERE accepted_at < %lld;"
	    "DELETE FROM sessions WHERE closed_at < %lld;"
	    "DELETE FROM auth_failures WHERE at < %lld;",
	    (long long)cutoff, (long long)cutoff, (long long)cutoff,
	    (long long)cutoff);
	struct head_state saved;
	head_state_save(s, &saved);
	int64_t anchor = s->anchor_id;
	if (exec(s, sql) || prune_deliveries(s, cutoff, now) ||
	    exec(s, "COMMIT")) {
		log_warn("store: retention pass failed: %s",
		         sqlite3_errmsg(s->db));
		exec(s, "ROLLBACK");
		head_state_restore(s, &saved);
		return;
	}
	if (s->anchor_id != anchor) {
		log_info("store: audit rows through id %lld pruned",
		         (long long)s->anchor_id);
		log_head("after prune", s->next_id - 1, s->prev_chain);
		s->head_logged_id = s->next_id - 1;
	}
}

static void record_failure(struct store *s, const char *what)
{
	pthread_mutex_lock(&s->lk);
	s->failures++;
	snprintf(s->last_error, sizeof(s->last_error), "%s: %s", what,
	         sqlite3_errmsg(s->db));
	pthread_mutex_unlock(&s->lk);
	log_error("store: %s failed: %s", what, sqlite3_errmsg(s->db));
}

/* Runs a batch in one transaction (begun: its BEGIN is done); on any
 * failure every job of the batch is marked failed and the chain state is
 * rolled back with it. */
static void commit_batch(struct store *s, struct store_job *batch, int begun)
{
	int64_t saved_id = s->next_id;
	unsigned char saved_chain[AUDIT_CHAIN_LEN];
	memcpy(saved_chain, s->prev_chain, AUDIT_CHAIN_LEN);
	int ok = begun || exec(s, "BEGIN") == 0;
	for (struct store_job *j = batch; ok && j; j = j->next)
		ok = run_job(s, j) == 0;
	if (ok)
		ok = exec(s, "COMMIT") == 0;
	if (!ok) {
		record_failure(s, "commit");
		exec(s, "ROLLBACK");
		s->next_id = saved_id;
		memcpy(s->prev_chain, saved_chain, AUDIT_CHAIN_LEN);
		for (struct store_job *j = batch; j; j = j->next)
			j->failed = 1;
	}
}

/* Frees the jobs nobody waits for, queues the others as done; wake: tell
 * the service thread (not needed when it committed them itself). */
static void finish_batch(struct store *s, struct store_job *batch, size_t n,
                         int wake)
{
	struct store_job *keep_head = NULL, *keep_tail = NULL;
	while (batch) {
		struct store_job *j = batch;
		batch = j->next;
		j->next = NULL;
		if (j->kind == STORE_EVENT || j->kind == STORE_REPLAY) {
			if (keep_tail)
				keep_tail->next = j;
			else
				keep_head = j;
			keep_tail = j;
		} else {
			store_job_free(j);
		}
	}
	atomic_fetch_sub(&s->backlog, n);
	if (!keep_head)
		return;
	pthread_mutex_lock(&s->lk);
	if (s->done_tail)
		s->done_tail->next = keep_head;
	else
		s->done_head = keep_head;
	s->done_tail = keep_tail;
	pthread_mutex_unlock(&s->lk);
	if (wake)
		s->wake(s->wake_arg);
}

/* Waits (lock held) until a batch is due: jobs someone waits for, a full
 * lazy batch, a lazy batch LAZY_US old, a flush or a stop; or a second has
 * passed (periodic work). */
static void writer_wait(struct store *s)
{
	int64_t idle_until = clock_now_us() + 1000000;
	for (;;) {
		if (s->writing) { /* the service thread commits: it signals cv
			           */
			s->writer_parked = 1;
			pthread_cond_wait(&s->cv, &s->lk);
			s->writer_parked = 0;
			continue;
		}
		if (writer_has_work(s))
			return;
		int64_t now = clock_now_us();
		int64_t deadline =
		    s->jobs_head ? s->lazy_since + LAZY_US : idle_until;
		if (now >= deadline)
			return;
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		int64_t ns = ts.tv_nsec + (deadline - now) * 1000;
		ts.tv_sec += ns / 1000000000;
		ts.tv_nsec = ns % 1000000000;
		s->writer_idle = !s->jobs_head;
		pthread_cond_timedwait(&s->cv, &s->lk, &ts);
		s->writer_idle = 0;
	}
}

static void *writer_main(void *arg)
{
	struct store *s = arg;
	pthread_setname_np(pthread_self(), "wsgate:writer"); /* top, perf */
	for (;;) {
		pthread_mutex_lock(&s->lk);
		writer_wait(s);
		size_t n;
		struct store_job *batch = jobs_take(s, &n);
		int stopping = s->stopping && !s->jobs_head;
		/* Only the writer sets these two: no need to hold `writing`
		 * to read them. */
		int64_t now = clock_now_us();
		int head_due = now - s->last_head_us >= CHAIN_HEAD_EVERY_US;
		int prune_due = now - s->last_prune_us >= s->prune_every_us;
		/* Held only with work to do: a `writing` set on every pass
		 * would keep store_flush waiting for good. */
		s->writing = batch || head_due || prune_due;
		int holding = s->writing;
		pthread_mutex_unlock(&s->lk);

		if (batch) {
			int64_t t0 = clock_now_us();
			commit_batch(s, batch, 0);
			log_debug("store: %zu jobs committed in %lld us", n,
			          (long long)(clock_now_us() - t0));
			finish_batch(s, batch, n, 1);
		}
		if (head_due)
			log_chain_head(s, "interval", now);
		if (prune_due)
			prune(s, now);
		if (holding)
			committer_release(s);
		if (stopping && !batch)
			break;
	}
	log_chain_head(s, "shutdown", clock_now_us());
	return NULL;
}

/* --- open / close --- */

/* The first row of sql: column 0 into *id, column 1 into blob (zeros
 * unless it is AUDIT_CHAIN_LEN bytes), column 2 as text into text_buf when
 * text is given. 1 when there was a row, 0 when none, -1 on error. */
static int query_point(struct store *s, const char *sql, int64_t *id,
                       unsigned char blob[AUDIT_CHAIN_LEN], const char **text,
                       char *text_buf, size_t text_cap)
{
	sqlite3_stmt *st;
	if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) != SQLITE_OK)
		return -1;
	int rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		*id = sqlite3_column_int64(st, 0);
		memset(blob, 0, AUDIT_CHAIN_LEN);
		if (sqlite3_column_bytes(st, 1) == AUDIT_CHAIN_LEN)
			memcpy(blob, sqlite3_column_blob(st, 1),
			       AUDIT_CHAIN_LEN);
		if (text) {
			const char *t =
			    (const char *)sqlite3_column_text(st, 2);
			snprintf(text_buf, text_cap, "%s", t ? t : "");
			*text = text_buf;
		}
	}
	sqlite3_finalize(st);
	return rc == SQLITE_ROW ? 1 : rc == SQLITE_DONE ? 0 : -1;
}

/* Where the delivery chain and the head chain go on: after the last row,
 * or the anchor (the first head, when it is a prune record; else id 0
 * and 32 zero bytes), and after the last head. */
static int load_chain(struct store *s)
{
	char reason[16];
	const char *first_reason = "";
	int64_t id;
	unsigned char chain[AUDIT_CHAIN_LEN];
	s->next_id = 1;
	memset(s->prev_chain, 0, AUDIT_CHAIN_LEN);
	s->anchor_id = 0;
	s->head_n = 0;
	memset(s->head_mac, 0, AUDIT_CHAIN_LEN);
	int rc = query_point(s,
	                     "SELECT id, chain, reason FROM chain_heads"
	                     " ORDER BY n LIMIT 1",
	                     &id, chain, &first_reason, reason, sizeof(reason));
	if (rc < 0)
		return -1;
	if (rc && strcmp(first_reason, AUDIT_HEAD_PRUNED) == 0) {
		s->anchor_id = id;
		s->next_id = id + 1;
		memcpy(s->prev_chain, chain, AUDIT_CHAIN_LEN);
	}
	rc = query_point(s,
	                 "SELECT n, mac FROM chain_heads ORDER BY n DESC"
	                 " LIMIT 1",
	                 &s->head_n, s->head_mac, NULL, NULL, 0);
	if (rc < 0)
		return -1;
	rc = query_point(s,
	                 "SELECT id, chain FROM deliveries ORDER BY id DESC"
	                 " LIMIT 1",
	                 &id, chain, NULL, NULL, 0);
	if (rc < 0)
		return -1;
	if (rc && id >= s->next_id) {
		s->next_id = id + 1;
		memcpy(s->prev_chain, chain, AUDIT_CHAIN_LEN);
	}
	s->head_logged_id = s->next_id - 1;
	s->committed_id = s->next_id - 1;
	memcpy(s->committed_chain, s->prev_chain, AUDIT_CHAIN_LEN);
	return 0;
}

/* A database with a deliveries table must say it is in this audit format:
 * the chains of another cannot be continued (format 1 had no payload
 * digests and no MAC'd heads). */
static int check_format(struct store *s, const char *path, char *err,
                        size_t errlen)
{
	sqlite3_stmt *st;
	if (sqlite3_prepare_v2(
	        s->db,
	        "SELECT EXISTS(SELECT 1 FROM sqlite_master WHERE type = 'table'"
	        " AND name = 'deliveries'), EXISTS(SELECT 1 FROM sqlite_master"
	        " WHERE type = 'table' AND name = 'meta')",
	        -1, &st, NULL) != SQLITE_OK ||
	    sqlite3_step(st) != SQLITE_ROW) {
		snprintf(err, errlen, "%s: %s", path, sqlite3_errmsg(s->db));
		sqlite3_finalize(st);
		return -1;
	}
	int has_rows_table = sqlite3_column_int(st, 0);
	int has_meta = sqlite3_column_int(st, 1);
	sqlite3_finalize(st);
	if (!has_rows_table)
		return 0; /* a new database */
	int64_t format = 1;
	if (has_meta && sqlite3_prepare_v2(s->db,
	                                   "SELECT value FROM meta"
	                                   " WHERE key = 'audit_format'",
	                                   -1, &st, NULL) == SQLITE_OK) {
		if (sqlite3_step(st) == SQLITE_ROW)
			format = sqlite3_column_int64(st, 0);
		sqlite3_finalize(st);
	}
	if (format == AUDIT_FORMAT)
		return 0;
	snprintf(err, errlen,
	         "%s: audit format %lld database; this wsgate writes format %d"
	         " and cannot continue it: start with a new --db (wsgatectl"
	         " audit, trace and sessions still read the old one)",
	         path, (long long)format, AUDIT_FORMAT);
	return -1;
}

/* Databases made before cluster mode get the node_id columns (''). */
static int add_node_columns(struct store *s)
{
	static const char *const tables[] = {"events", "sessions",
	                                     "deliveries"};
	for (size_t i = 0; i < sizeof(tables) / sizeof(tables[0]); i++) {
		char sql[160];
		sqlite3_stmt *st;
		snprintf(sql, sizeof(sql),
		         "SELECT COUNT(*) FROM pragma_table_info('%s')"
		         " WHERE name = 'node_id'",
		         tables[i]);
		if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) != SQLITE_OK)
			return -1;
		int has = sqlite3_step(st) == SQLITE_ROW &&
		          sqlite3_column_int(st, 0) > 0;
		sqlite3_finalize(st);
		snprintf(sql, sizeof(sql),
		         "ALTER TABLE %s ADD COLUMN node_id TEXT NOT NULL"
		         " DEFAULT ''",
		         tables[i]);
		if (!has && exec(s, sql))
			return -1;
	}
	return 0;
}

/* meta(key) as text into buf ("" when absent); -1 on error. */
static int meta_get(struct store *s, const char *key, char *buf, size_t cap)
{
	sqlite3_stmt *st;
	buf[0] = '\0';
	if (sqlite3_prepare_v2(s->db, "SELECT value FROM meta WHERE key = ?",
	                       -1, &st, NULL) != SQLITE_OK)
		return -1;
	bind_text(st, 1, key);
	int rc = sqlite3_step(st);
	if (rc == SQLITE_ROW && sqlite3_column_text(st, 0))
		snprintf(buf, cap, "%s",
		         (const char *)sqlite3_column_text(st, 0));
	sqlite3_finalize(st);
	return rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : -1;
}

/*
 * Cluster mode: the database belongs to the node that first ran it
 * clustered (meta 'node_id'), so that two pods never share or swap one;
 * and the replica's position in the stream and the stream's epoch.
 */
static int load_cluster_meta(struct store *s, const struct store_config *cfg,
                             char *err, size_t errlen)
{
	char owner[80], seq[32];
	if (!*s->node_id)
		return 0;
	if (meta_get(s, "node_id", owner, sizeof(owner)) ||
	    meta_get(s, "stream_seq", seq, sizeof(seq)) ||
	    meta_get(s, "stream_epoch", s->stream_epoch,
	             sizeof(s->stream_epoch))) {
		snprintf(err, errlen, "%s: %s", cfg->path,
		         sqlite3_errmsg(s->db));
		return -1;
	}
	if (*owner && strcmp(owner, s->node_id) != 0) {
		snprintf(err, errlen,
		         "%s belongs to node '%s', not '%s' (--node-id): each"
		         " node keeps its own database",
		         cfg->path, owner, s->node_id);
		return -1;
	}
	s->stream_seq = strtoull(seq, NULL, 10);
	if (*owner)
		return 0;
	sqlite3_stmt *st = s->stmt[ST_META_SET];
	bind_text(st, 1, "node_id");
	bind_text(st, 2, s->node_id);
	if (step_done(s, st)) {
		snprintf(err, errlen, "%s: %s", cfg->path,
		         sqlite3_errmsg(s->db));
		return -1;
	}
	return 0;
}

static int load_epoch(struct store *s, const char *path, char *err,
                      size_t errlen)
{
	sqlite3_stmt *st;
	int n = -1;
	if (sqlite3_prepare_v2(s->db,
	                       "SELECT value FROM meta WHERE key = 'epoch'"
	                       " AND typeof(value) = 'text'",
	                       -1, &st, NULL) == SQLITE_OK &&
	    sqlite3_step(st) == SQLITE_ROW) {
		n = sqlite3_column_bytes(st, 0);
		if (n >= 1 && n <= STORE_EPOCH_MAX)
			memcpy(s->epoch, sqlite3_column_text(st, 0), (size_t)n);
	}
	sqlite3_finalize(st);
	if (n < 1 || n > STORE_EPOCH_MAX) {
		snprintf(err, errlen,
		         "%s: meta('epoch') missing or not 1-%d characters",
		         path, STORE_EPOCH_MAX);
		return -1;
	}
	s->epoch[n] = '\0';
	return 0;
}

static int load_state(struct store *s, const struct store_config *cfg,
                      char *err, size_t errlen)
{
	sqlite3_stmt *st;
	/* Sessions a dead process left open end now, saying so. */
	char sql[256];
	snprintf(sql, sizeof(sql),
	         "UPDATE sessions SET closed_at = %lld, close_code = 1006,"
	         " close_reason = 'sidecar stopped' WHERE closed_at IS NULL",
	         (long long)clock_now_us());
	if (exec(s, sql))
		goto fail;
	int n = sqlite3_changes(s->db);
	if (n)
		log_warn("store: %d session(s) of a stopped sidecar closed", n);

	if (sqlite3_prepare_v2(s->db,
	                       "SELECT user_id, MAX(last_seq) FROM ("
	                       " SELECT user_id, MAX(seq) AS last_seq FROM"
	                       " events GROUP BY user_id UNION ALL"
	                       " SELECT user_id, last_seq FROM user_seqs)"
	                       " GROUP BY user_id",
	                       -1, &st, NULL) != SQLITE_OK)
		goto fail;
	while (sqlite3_step(st) == SQLITE_ROW)
		cfg->on_user(cfg->loader_arg,
		             (const char *)sqlite3_column_text(st, 0),
		             (uint64_t)sqlite3_column_int64(st, 1));
	sqlite3_finalize(st);

	if (sqlite3_prepare_v2(s->db,
	                       "SELECT user_id, event_id, seq, accepted_at"
	                       " FROM events ORDER BY accepted_at",
	                       -1, &st, NULL) != SQLITE_OK)
		goto fail;
	while (sqlite3_step(st) == SQLITE_ROW)
		cfg->on_event_id(cfg->loader_arg,
		                 (const char *)sqlite3_column_text(st, 0),
		                 (const char *)sqlite3_column_text(st, 1),
		                 (uint64_t)sqlite3_column_int64(st, 2),
		                 sqlite3_column_int64(st, 3));
	sqlite3_finalize(st);

	if (load_chain(s))
		goto fail;
	return 0;
fail:
	snprintf(err, errlen, "%s: %s", cfg->path, sqlite3_errmsg(s->db));
	return -1;
}

int store_open(struct store **out, const struct store_config *cfg, char *err,
               size_t errlen)
{
	struct store *s = calloc(1, sizeof(*s));
	if (!s) {
		snprintf(err, errlen, "store: out of memory");
		return -1;
	}
	s->key = cfg->audit_key;
	s->node_id = cfg->node_id ? cfg->node_id : "";
	s->retention_us = cfg->retention_us;
	s->prune_every_us = cfg->retention_us / 4;
	if (s->prune_every_us > PRUNE_EVERY_US)
		s->prune_every_us = PRUNE_EVERY_US;
	if (s->prune_every_us < 1000000)
		s->prune_every_us = 1000000;
	s->wake = cfg->wake;
	s->wake_arg = cfg->wake_arg;
	pthread_mutex_init(&s->lk, NULL);
	pthread_cond_init(&s->cv, NULL);
	pthread_cond_init(&s->flushed, NULL);
	EVP_MD *sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
	s->sha256 = EVP_MD_CTX_new();
	int digest_ready =
	    sha256 && s->sha256 && EVP_DigestInit_ex2(s->sha256, sha256, NULL);
	EVP_MD_free(sha256); /* the context keeps its own reference */
	if (!digest_ready) {
		snprintf(err, errlen, "store: cannot set up SHA-256");
		goto fail;
	}
	char vfs_name[32];
	snprintf(vfs_name, sizeof(vfs_name), "wsgate-wal-%p", (void *)s);
	s->wal_vfs = wal_vfs_register(vfs_name);
	if (s->wal_vfs == NULL) {
		snprintf(err, errlen, "store: cannot register its SQLite VFS");
		goto fail;
	}
	/* The database holds every user's events: only its owner reads it. */
	mode_t old = umask(077);
	int rc = sqlite3_open_v2(cfg->path, &s->db,
	                         SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
	                             SQLITE_OPEN_NOMUTEX,
	                         wal_vfs_name(s->wal_vfs));
	umask(old);
	if (rc != SQLITE_OK) {
		snprintf(err, errlen, "%s: cannot open: %s", cfg->path,
		         s->db ? sqlite3_errmsg(s->db) : "out of memory");
		goto fail;
	}
	sqlite3_busy_timeout(s->db, BUSY_TIMEOUT_MS);
	if (check_format(s, cfg->path, err, errlen))
		goto fail;
	if (exec(s, schema_sql) || add_node_columns(s)) {
		snprintf(err, errlen, "%s: %s", cfg->path,
		         sqlite3_errmsg(s->db));
		goto fail;
	}
	for (int i = 0; i < ST_COUNT; i++) {
		if (sqlite3_prepare_v3(s->db, stmt_sql[i], -1,
		                       SQLITE_PREPARE_PERSISTENT, &s->stmt[i],
		                       NULL) != SQLITE_OK) {
			snprintf(err, errlen, "%s: %s", cfg->path,
			         sqlite3_errmsg(s->db));
			goto fail;
		}
	}
	if (load_epoch(s, cfg->path, err, errlen) ||
	    load_cluster_meta(s, cfg, err, errlen) ||
	    load_state(s, cfg, err, errlen))
		goto fail;
	if (checkpointer_start(&s->checkpointer, s->db, cfg->path, err, errlen))
		goto fail;
	int64_t now = clock_now_us();
	/* Head 1 of a new database says the chain starts at id 0; a head at
	 * every start marks restarts (after a crash: without a shutdown
	 * head before it). */
	log_chain_head(s, "start", now);
	prune(s, now);
	if (pthread_create(&s->writer, NULL, writer_main, s) != 0) {
		snprintf(err, errlen, "store: cannot start the writer thread");
		goto fail;
	}
	*out = s;
	return 0;
fail:
	checkpointer_stop(s->checkpointer);
	for (int i = 0; i < ST_COUNT; i++)
		sqlite3_finalize(s->stmt[i]);
	sqlite3_close(s->db);
	wal_vfs_unregister(s->wal_vfs);
	EVP_MD_CTX_free(s->sha256);
	pthread_mutex_destroy(&s->lk);
	pthread_cond_destroy(&s->cv);
	pthread_cond_destroy(&s->flushed);
	free(s);
	return -1;
}

const char *store_epoch(const struct store *s)
{
	return s->epoch;
}

void store_flush(struct store *s)
{
	pthread_mutex_lock(&s->lk);
	s->flush_requested = 1;
	pthread_cond_signal(&s->cv);
	while (s->jobs_head || s->writing)
		pthread_cond_wait(&s->flushed, &s->lk);
	s->flush_requested = 0;
	pthread_mutex_unlock(&s->lk);
}

void store_close(struct store *s)
{
	if (!s)
		return;
	pthread_mutex_lock(&s->lk);
	s->stopping = 1;
	pthread_cond_signal(&s->cv);
	pthread_mutex_unlock(&s->lk);
	pthread_join(s->writer, NULL);
	struct store_job *j = store_take_done(s);
	while (j) {
		struct store_job *next = j->next;
		store_job_free(j);
		j = next;
	}
	checkpointer_stop(s->checkpointer);
	for (int i = 0; i < ST_COUNT; i++)
		sqlite3_finalize(s->stmt[i]);
	sqlite3_close(s->db);
	wal_vfs_unregister(s->wal_vfs);
	EVP_MD_CTX_free(s->sha256);
	pthread_mutex_destroy(&s->lk);
	pthread_cond_destroy(&s->cv);
	pthread_cond_destroy(&s->flushed);
	free(s);
}
