/*
 * store: the SQLite event log and audit trail (--db), written with group
 * commit by one committer at a time: its writer thread, or the service
 * thread itself for a small group that finds the writer idle.
 *
 * The service thread submits jobs; the committer takes every job waiting,
 * runs them in one transaction, commits, and hands the jobs that need an
 * answer (events, replays) back through a done queue (and, from the writer
 * thread, the wake function).
 * So a backend's OK and an event's frames both follow the commit of the
 * event's row and of its `queued` delivery rows (write-ahead), and jobs are
 * committed in the order they were submitted.
 *
 * Tables (DESIGN.md): events, sessions, deliveries, auth_failures; plus
 * user_seqs (last seq of users whose events were all pruned), chain_heads
 * (the MAC'd chain heads: at start, at intervals, at shutdown, and the
 * prune record naming the anchor) and meta (audit_format; epoch, a random
 * 64-bit id in hex made with the database: the history its seqs belong
 * to).
 *
 * Threads: store_submit, store_group_*, store_take_done and store_backlog
 * may be called from the service thread while the writer runs; store_open's
 * loaders run before the writer starts. Jobs belong to the submitter until
 * submitted, to the writer until done, then to the service thread again (which
 * frees them with store_job_free).
 */
#ifndef WSGATE_STORE_H
#define WSGATE_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "audit_chain.h"
#include "frame.h"

struct store;

enum store_job_kind {
	STORE_EVENT,    /* an accepted event and its queued rows */
	STORE_REPLAY,   /* read a chunk of a connection's catch-up */
	STORE_DELIVERY, /* an outcome row: written, dropped, acked */
	STORE_SESSION_OPEN,
	STORE_SESSION_CLOSE,
	STORE_AUTH_FAILURE,
	STORE_PENDING_DONE, /* the user's pending events up to seq delivered */
	STORE_STREAM_POS,   /* cluster: the replica's position in the stream */
};

#define STORE_CONN_ID_MAX 19
#define STORE_EPOCH_MAX   32 /* bytes of meta('epoch'); ours are 16 */

/* A connection named by a queued row. */
struct store_conn_ref {
	char conn_id[STORE_CONN_ID_MAX + 1];
	const char *conn_user_id; /* the connection's identity (registry) */
};

struct store_job {
	enum store_job_kind kind;
	struct store_job *next;
	int failed; /* set by the writer: not committed */
	union {
		struct {
			/* Borrowed from the request until the job is done. */
			const char *user_id;
			const char *event_id;
			const char *type;
			const char *thread_id;
			const char *run_id;
			const void *payload;
			size_t payload_len;
			const char *node_id; /* accepting node; NULL: ours */
			/* Freed with the job: what the strings above point
			 * into when nobody else holds them (a record applied
			 * from the cluster stream). */
			void *owned;
			uint64_t seq;
			int64_t accepted_at;
			int pending;
			int audit;    /* write the queued rows */
			int no_dedup; /* its event_id was known: no dedup entry
			               */
			int unowned; /* a stream record nobody here waits for */
			/* Set by the writer: the payload's SHA-256. */
			unsigned char payload_sha256[AUDIT_DIGEST_LEN];
			/* The service thread's: not touched by the writer. */
			struct frame *frame;
			void *owner;
			size_t index;
			uint32_t n_conns;
			struct store_conn_ref *conns;
		} event;
		struct {
			char conn_id[STORE_CONN_ID_MAX + 1];
			const char *user_id; /* whose events */
			const char
			    *conn_user_id; /* the connection's identity */
			uint64_t after;    /* cursor: last seq already sent */
			uint64_t upto;     /* the connection's live_from */
			uint64_t since; /* replay seq > since; pending always */
			int has_since;
			/* Cluster mode: since covers pending events too (the
			 * client saw them on another pod), has_since or not
			 * (a replica behind the client). */
			int since_floor;
			/* The client's epoch was not ours: resume_failed
			 * whatever is retained (since is then 0). */
			int epoch_changed;
			uint32_t limit;
			int audit; /* write the queued rows */
			/* Results. */
			struct frame **frames;
			uint32_t n_frames;
			int more;          /* more rows may follow */
			int resume_failed; /* part of (since, upto] is gone */
			uint64_t oldest_seq;
		} replay;
		struct {
			char conn_id[STORE_CONN_ID_MAX + 1];
			const char *status; /* "written", "dropped", "acked" */
			uint64_t seq;
			int64_t at;
			/* The event's, from its frame. */
			unsigned char payload_sha256[AUDIT_DIGEST_LEN];
			/* Copies, in the job's own allocation (one
			 * malloc per row: see store_job_new_delivery). */
			const char *user_id;
			const char *event_id;
			const char *conn_user_id;
		} delivery;
		struct {
			char conn_id[STORE_CONN_ID_MAX + 1];
			char *user_id; /* owned copies from here on */
			char *peer;
			char *user_agent;
			char *token_jti;
			int64_t token_exp;
			int64_t at;
			int close_code;
			char *close_reason;
		} session;
		struct {
			int64_t at;
			char *peer;
			char *reason;
		} auth_failure;
		struct {
			char *user_id;
			uint64_t seq;
		} pending_done;
		struct {
			uint64_t seq; /* last stream message applied */
			char epoch[STORE_EPOCH_MAX + 1]; /* "": unchanged */
		} stream_pos;
	};
};

typedef void (*store_wake_fn)(void *arg);
/* Loaders called by store_open for state the service thread keeps. */
typedef void (*store_user_fn)(void *arg, const char *user_id,
                              uint64_t last_seq);
typedef void (*store_event_id_fn)(void *arg, const char *user_id,
                                  const char *event_id, uint64_t seq,
                                  int64_t accepted_at);

struct store_config {
	const char *path;
	/* Cluster mode: this node's id (NULL or "": a single pod). The
	 * database is refused when another node's; rows get it. Must
	 * outlive the store. */
	const char *node_id;
	int64_t retention_us;
	const struct audit_key *audit_key;
	store_wake_fn wake;
	void *wake_arg;
	store_user_fn on_user;
	store_event_id_fn on_event_id;
	void *loader_arg;
};

/* Opens (creating) the database, closes the sessions a dead process left
 * open, runs the loaders, and starts the writer. 0, or -1 with a reason. */
int store_open(struct store **out, const struct store_config *cfg, char *err,
               size_t errlen);
/* The database's epoch (meta('epoch'), 1-STORE_EPOCH_MAX characters),
 * read by store_open. Any thread. */
const char *store_epoch(const struct store *s);
/* Waits until every job submitted so far is committed (or failed) and in
 * the done queue. For shutdown. */
void store_flush(struct store *s);
/* Commits what is queued, writes the shutdown chain head, stops the
 * writer, closes the database. Jobs still in the done queue are freed. */
void store_close(struct store *s);

/* The SQL that creates the tables, for tests and tools that build a
 * database by hand (wsgatectl only reads). */
const char *store_schema_sql(void);

struct store_job *store_job_new(enum store_job_kind kind);
/* A STORE_DELIVERY job carrying copies of the three strings (NULL: ""). */
struct store_job *store_job_new_delivery(const char *user_id,
                                         const char *event_id,
                                         const char *conn_user_id);
void store_job_free(struct store_job *job);
void store_submit(struct store *s, struct store_job *job);
/*
 * Service thread: jobs submitted between store_group_begin and
 * store_group_end reach the writer together at the end, so that they share
 * one transaction (up to its size limit) -- the events of the requests
 * taken in one wake-up are answered after one commit instead of being
 * split across the commits the first of them would start.
 */
void store_group_begin(struct store *s);
/* May commit a small group on the calling thread when the writer is idle:
 * its jobs are then done when this returns (store_take_done has them; no
 * wake function is called for them). */
void store_group_end(struct store *s);
/* Service thread: the done jobs, in submission order (a list via ->next). */
struct store_job *store_take_done(struct store *s);
/* Jobs submitted and not yet committed. */
uint64_t store_backlog(const struct store *s);
/* The last committed delivery row's id and chain (the anchor's when there
 * is none): what `wsgatectl verify --head live` looks for in the database.
 * Any thread. */
void store_chain_head(struct store *s, int64_t *id,
                      unsigned char chain[AUDIT_CHAIN_LEN]);
/* Cluster mode, as read by store_open: the last stream message applied
 * (0: none) and the stream epoch it belongs to ("" when none yet). Later
 * positions are written by STORE_STREAM_POS jobs. */
uint64_t store_stream_seq(const struct store *s);
const char *store_stream_epoch(const struct store *s);
/* Failed commits so far, and the last failure's text ("" when none). */
uint64_t store_failures(struct store *s, char *last_error, size_t cap);

#endif
