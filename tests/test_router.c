/*
 * Unit tests of the registry and the router: who gets which frame, in
 * which order, and what happens at the limits. No sockets: connections are
 * registry entries with a fake transport.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sched.h>

#include <stdlib.h>
#include <unistd.h>

#include "audit_chain.h"
#include "clock.h"
#include "dedup.h"
#include "log.h"
#include "registry.h"
#include "router.h"
#include "store.h"
#include "test_dir.h"

#include <sqlite3.h>

/* A router over a real store in a temporary directory; wake-ups are
 * ignored and the tests pump the done queue themselves. */
struct harness {
	char dir[64];
	struct audit_key key;
	struct registry *reg;
	struct dedup *dedup;
	struct store *store;
	struct router *rt;
	int done_calls;
	struct router_result last;
	struct router_result by_index[8]; /* the last result of each index */
};

static int ready_calls;

static void on_ready(struct conn *c, void *arg)
{
	(void)c;
	(void)arg;
	ready_calls++;
}

static void ignore_wake(void *arg)
{
	(void)arg;
}

static void ignore_user(void *arg, const char *u, uint64_t seq)
{
	(void)arg, (void)u, (void)seq;
}

static void ignore_id(void *arg, const char *u, const char *e, uint64_t s,
                      int64_t at)
{
	(void)arg, (void)u, (void)e, (void)s, (void)at;
}

static struct harness *current;

static void on_event_done(void *owner, size_t index,
                          const struct router_result *res)
{
	(void)owner;
	current->done_calls++;
	current->last = *res;
	if (index < 8)
		current->by_index[index] = *res;
}

static struct harness *harness_new(size_t queue_limit)
{
	struct harness *h = calloc(1, sizeof(*h));
	char err[256], path[128];
	assert_int_equal(test_dir_make(h->dir, sizeof(h->dir), "router"), 0);
	snprintf(path, sizeof(path), "%s/key", h->dir);
	assert_int_equal(audit_key_load(&h->key, path, 1, err, sizeof(err)), 0);
	snprintf(path, sizeof(path), "%s/db", h->dir);
	h->reg = registry_new(queue_limit, on_ready, NULL);
	h->dedup = dedup_new();
	struct store_config scfg = {
	    .path = path,
	    .retention_us = 3600LL * 1000000,
	    .audit_key = &h->key,
	    .wake = ignore_wake,
	    .on_user = ignore_user,
	    .on_event_id = ignore_id,
	};
	assert_int_equal(store_open(&h->store, &scfg, err, sizeof(err)), 0);
	struct router_config rcfg = {
	    .epoch = "e1",
	    .registry = h->reg,
	    .store = h->store,
	    .dedup = h->dedup,
	    .max_backlog = 100000,
	    .replay_chunk = 2,
	    .audit = 1,
	    .on_event_done = on_event_done,
	};
	h->rt = router_new(&rcfg);
	assert_non_null(h->rt);
	current = h;
	return h;
}

static void harness_free(struct harness *h)
{
	store_flush(h->store);
	router_handle_done(h->rt);
	store_close(h->store);
	router_free(h->rt);
	dedup_free(h->dedup);
	registry_free(h->reg);
	audit_key_clear(&h->key);
	assert_int_equal(test_dir_remove(h->dir), 0);
	free(h);
}

/* Commits everything submitted and hands the results to the router. */
static void pump(struct harness *h)
{
	store_flush(h->store);
	router_handle_done(h->rt);
}

static Wsgate__V1__Event make_event(const char *user, const char *id,
                                    Wsgate__V1__EventType type,
                                    const char *payload)
{
	Wsgate__V1__Event ev = WSGATE__V1__EVENT__INIT;
	ev.event_id = (char *)id;
	ev.user_id = (char *)user;
	ev.thread_id = "t1";
	ev.run_id = "r1";
	ev.type = type;
	ev.payload_json.data = (uint8_t *)payload;
	ev.payload_json.len = payload ? strlen(payload) : 0;
	return ev;
}

static struct conn *open_conn_resume(struct harness *h, const char *user,
                                     const struct router_resume *from)
{
	struct user *u = registry_user(h->reg, user, strlen(user), true);
	assert_non_null(u);
	struct conn *c = registry_add_conn(h->reg, u, NULL, "127.0.0.1", 1);
	assert_non_null(c);
	assert_int_equal(router_conn_opened(h->rt, c, from), 0);
	pump(h);
	return c;
}

static struct conn *open_conn_since(struct harness *h, const char *user,
                                    int has_since, uint64_t since)
{
	struct router_resume from = {.has_since = has_since, .since = since};
	return open_conn_resume(h, user, &from);
}

static struct conn *open_conn(struct harness *h, const char *user)
{
	return open_conn_since(h, user, 0, 0);
}

/* Accepts an event and waits for its commit. */
static struct router_result send_event(struct harness *h,
                                       const Wsgate__V1__Event *ev)
{
	struct router_result res;
	int before = h->done_calls;
	if (router_accept_event(h->rt, ev, clock_now_us(), NULL, 0, &res))
		return res;
	pump(h);
	assert_int_equal(h->done_calls, before + 1);
	return h->last;
}

/* "Writes" the head frame and returns its text (caller frees). */
static char *pop_text(struct harness *h, struct conn *c)
{
	struct frame *f = frame_queue_peek(&c->queue);
	if (!f)
		return NULL;
	char *s = strndup((const char *)f->payload, f->len);
	router_conn_written(h->rt, c);
	pump(h);
	return s;
}

static void expect_prefix(struct harness *h, struct conn *c, const char *prefix)
{
	char *s = pop_text(h, c);
	assert_non_null(s);
	if (strncmp(s, prefix, strlen(prefix)) != 0)
		fail_msg("frame '%s' does not start with '%s'", s, prefix);
	free(s);
}

static void test_event_reaches_only_its_user(void **state)
{
	(void)state;
	struct harness *h = harness_new(1 << 20);
	struct conn *a1 = open_conn(h, "alice"), *a2 = open_conn(h, "alice");
	struct conn *b1 = open_conn(h, "bob");
	expect_prefix(h, a1, "{\"type\":\"connected\"");
	expect_prefix(h, a2, "{\"type\":\"connected\"");
	expect_prefix(h, b1, "{\"type\":\"connected\"");

	Wsgate__V1__Event ev = make_event(
	    "alice", "e1", WSGATE__V1__EVENT_TYPE__AGENT_STARTED, "{\"x\":1}");
	struct router_result res = send_event(h, &ev);
	assert_int_equal(res.status, ROUTER_OK);
	assert_int_equal(res.seq, 1);
	assert_int_equal(res.connections, 2);
	assert_false(res.retained);

	const char *want = "{\"type\":\"agent_started\",\"seq\":1,"
	                   "\"event_id\":\"e1\",\"user_id\":\"alice\","
	                   "\"thread_id\":\"t1\",\"run_id\":\"r1\",\"ts\":";
	char *s1 = pop_text(h, a1), *s2 = pop_text(h, a2);
	assert_non_null(strstr(s1, want));
	assert_non_null(strstr(s1, ",\"payload\":{\"x\":1}}"));
	assert_string_equal(s1, s2);
	free(s1);
	free(s2);
	assert_int_equal(b1->queue.len, 0);
	harness_free(h);
}

static void test_frame_waits_for_commit(void **state)
{
	(void)state;
	struct harness *h = harness_new(1 << 20);
	struct conn *a = open_conn(h, "alice");
	expect_prefix(h, a, "{\"type\":\"connected\"");
	Wsgate__V1__Event ev = make_event(
	    "alice", "e1", WSGATE__V1__EVENT_TYPE__AGENT_STARTED, NULL);
	struct router_result res;
	assert_int_equal(router_accept_event(h->rt, &ev, 1, NULL, 0, &res), 0);
	/* Write-ahead: nothing is queued before the store hands it back. */
	assert_int_equal(a->queue.len, 0);
	pump(h);
	assert_int_equal(a->queue.len, 1);
	harness_free(h);
}

static void test_seq_is_per_user_and_gapless(void **state)
{
	(void)state;
	struct harness *h = harness_new(1 << 20);
	struct conn *a = open_conn(h, "alice");
	expect_prefix(h, a, "{\"type\":\"connected\"");
	for (int i = 0; i < 5; i++) {
		char id[16];
		snprintf(id, sizeof(id), "e%d", i);
		Wsgate__V1__Event ea = make_event(
		    "alice", id, WSGATE__V1__EVENT_TYPE__AGENT_THINKING, NULL);
		Wsgate__V1__Event eb = make_event(
		    "bob", id, WSGATE__V1__EVENT_TYPE__AGENT_THINKING, NULL);
		assert_int_equal(send_event(h, &ea).seq, i + 1);
		assert_int_equal(send_event(h, &eb).seq, i + 1);
	}
	for (int i = 1; i <= 5; i++) {
		char want[64];
		snprintf(want, sizeof(want),
		         "{\"type\":\"agent_thinking\",\"seq\":%d,", i);
		expect_prefix(h, a, want);
	}
	harness_free(h);
}

/* The event log's WAL is copied back into the database while the store
 * runs (by the checkpointer thread), so it cannot grow without bound. */
static void test_wal_is_checkpointed_while_running(void **state)
{
	(void)state;
	struct harness *h = harness_new(1 << 20);
	char *payload = malloc(4001), path[160];
	struct stat st;
	assert_non_null(payload);
	memset(payload, 'x', 4000);
	memcpy(payload, "{\"p\":\"", 6);
	memcpy(payload + 3998, "\"}", 2);
	payload[4000] = '\0';
	/* ~1,500 pages of WAL: past the 1,000-page checkpoint mark. */
	for (int i = 0; i < 1500; i++) {
		char id[16];
		snprintf(id, sizeof(id), "w%d", i);
		Wsgate__V1__Event ev =
		    make_event("walter", id,
		               WSGATE__V1__EVENT_TYPE__AGENT_THINKING, payload);
		assert_int_equal(send_event(h, &ev).seq, i + 1);
	}
	snprintf(path, sizeof(path), "%s/db", h->dir);
	int64_t deadline = clock_now_us() + 10000000;
	for (;;) {
		assert_int_equal(stat(path, &st), 0);
		if (st.st_size > 2 * 1024 * 1024)
			break;
		if (clock_now_us() > deadline)
			fail_msg("database still %lld bytes: no checkpoint",
			         (long long)st.st_size);
		sched_yield();
	}
	free(payload);
	harness_free(h);
}

/* A request's events, submitted as one group while the writer is idle,
 * are committed by the caller itself: done when store_group_end returns. */
static void test_small_group_commits_on_the_calling_thread(void **state)
{
	(void)state;
	struct harness *h = harness_new(1 << 20);
	struct conn *a = open_conn(h, "alice");
	expect_prefix(h, a, "{\"type\":\"connected\"");
	store_flush(h->store);
	/* The jobs borrow the events' strings until they are done. */
	static const char *const ids[] = {"g0", "g1", "g2"};
	store_group_begin(h->store);
	for (int i = 0; i < 3; i++) {
		Wsgate__V1__Event ev =
		    make_event("alice", ids[i],
		               WSGATE__V1__EVENT_TYPE__TOOL_EXECUTING, NULL);
		struct router_result res;
		assert_int_equal(router_accept_event(h->rt, &ev, clock_now_us(),
		                                     NULL, 0, &res),
		                 0);
	}
	store_group_end(h->store);
	router_handle_done(h->rt); /* no flush: nothing left to wait for */
	assert_int_equal(h->done_calls, 3);
	assert_int_equal(h->last.status, ROUTER_OK);
	assert_int_equal(a->queue.len, 3);
	harness_free(h);
}

/* Another process holding the write lock must not stall the caller (the
 * event loop): the group goes to the writer thread, which waits for the
 * lock and commits once it is free. */
static void test_locked_database_does_not_stall_the_caller(void **state)
{
	(void)state;
	struct harness *h = harness_new(1 << 20);
	char path[128];
	snprintf(path, sizeof(path), "%s/db", h->dir);
	sqlite3 *other;
	assert_int_equal(sqlite3_open(path, &other), SQLITE_OK);
	assert_int_equal(
	    sqlite3_exec(other, "BEGIN IMMEDIATE", NULL, NULL, NULL),
	    SQLITE_OK);
	store_group_begin(h->store);
	Wsgate__V1__Event ev = make_event(
	    "bob", "locked", WSGATE__V1__EVENT_TYPE__AGENT_STARTED, NULL);
	struct router_result res;
	assert_int_equal(
	    router_accept_event(h->rt, &ev, clock_now_us(), NULL, 0, &res), 0);
	store_group_end(h->store);
	router_handle_done(h->rt);
	assert_int_equal(h->done_calls, 0); /* not committed, not failed */
	assert_int_equal(sqlite3_exec(other, "COMMIT", NULL, NULL, NULL),
	                 SQLITE_OK);
	sqlite3_close(other);
	pump(h);
	assert_int_equal(h->done_calls, 1);
	assert_int_equal(h->last.status, ROUTER_OK);
	assert_int_equal(h->last.seq, 1);
	harness_free(h);
}

static void test_repeated_event_id_is_a_duplicate(void **state)
{
	(void)state;
	struct harness *h = harness_new(1 << 20);
	struct conn *a = open_conn(h, "alice");
	expect_prefix(h, a, "{\"type\":\"connected\"");
	Wsgate__V1__Event ev = make_event(
	    "alice", "same", WSGATE__V1__EVENT_TYPE__AGENT_STARTED, NULL);
	assert_int_equal(send_event(h, &ev).seq, 1);
	struct router_result res = send_event(h, &ev);
	assert_int_equal(res.status, ROUTER_OK);
	assert_true(res.duplicate);
	assert_int_equal(res.seq, 1);
	assert_int_equal(res.connections, 0);
	expect_prefix(h, a, "{\"type\":\"agent_started\",\"seq\":1,");
	assert_int_equal(a->queue.len, 0); /* not delivered twice */
	/* Another user may use the same id. */
	Wsgate__V1__Event other = make_event(
	    "bob", "same", WSGATE__V1__EVENT_TYPE__AGENT_STARTED, NULL);
	assert_false(send_event(h, &other).duplicate);
	harness_free(h);
}

/* The harness's database opened beside the store, as another process
 * would. */
static sqlite3 *db_open_beside(struct harness *h)
{
	char path[128];
	sqlite3 *db;
	snprintf(path, sizeof(path), "%s/db", h->dir);
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	return db;
}

static void db_exec(sqlite3 *db, const char *sql)
{
	char *err = NULL;
	if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK)
		fail_msg("%s: %s", sql, err ? err : "?");
}

/* Until DROP TRIGGER inject: every commit of an event with this id fails,
 * and with it the whole transaction. */
static void db_inject_commit_failure(sqlite3 *db, const char *event_id)
{
	char sql[256];
	snprintf(sql, sizeof(sql),
	         "CREATE TRIGGER inject BEFORE INSERT ON events"
	         " WHEN NEW.event_id = '%s'"
	         " BEGIN SELECT RAISE(ABORT, 'injected failure'); END",
	         event_id);
	db_exec(db, sql);
}

/* Accepts ev (index 0), then its repeat (index 1), while another process
 * holds the write lock: the first's commit cannot be done, so neither may
 * be answered yet (an OK for the repeat would acknowledge a row not yet
 * written). */
static void accept_twice_uncommitted(struct harness *h,
                                     const Wsgate__V1__Event *ev)
{
	struct router_result res;
	assert_int_equal(
	    router_accept_event(h->rt, ev, clock_now_us(), NULL, 0, &res), 0);
	assert_int_equal(
	    router_accept_event(h->rt, ev, clock_now_us(), NULL, 1, &res), 0);
	router_handle_done(h->rt);
	assert_int_equal(h->done_calls, 0);
}

/* A repeat of a committed event is answered at once: seq, duplicate. */
static void expect_answered_duplicate(struct harness *h,
                                      const Wsgate__V1__Event *ev, uint64_t seq)
{
	struct router_result res;
	assert_int_equal(
	    router_accept_event(h->rt, ev, clock_now_us(), NULL, 7, &res), 1);
	assert_int_equal(res.status, ROUTER_OK);
	assert_true(res.duplicate);
	assert_int_equal(res.seq, seq);
}

/* A repeat (another request) of an event whose commit is not done yet --
 * held back by another process's write lock -- is answered only when that
 * commit is done, with the first one's seq. */
static void
test_repeat_of_an_uncommitted_event_waits_for_its_commit(void **state)
{
	(void)state;
	struct harness *h = harness_new(1 << 20);
	sqlite3 *other = db_open_beside(h);
	db_exec(other, "BEGIN IMMEDIATE");
	Wsgate__V1__Event ev = make_event(
	    "hana", "first", WSGATE__V1__EVENT_TYPE__AGENT_STARTED, NULL);
	accept_twice_uncommitted(h, &ev);

	db_exec(other, "COMMIT");
	sqlite3_close(other);
	pump(h);
	assert_int_equal(h->done_calls, 2);
	assert_int_equal(h->by_index[0].status, ROUTER_OK);
	assert_int_equal(h->by_index[0].seq, 1);
	assert_false(h->by_index[0].duplicate);
	assert_int_equal(h->by_index[1].status, ROUTER_OK);
	assert_int_equal(h->by_index[1].seq, 1);
	assert_true(h->by_index[1].duplicate);
	assert_int_equal(h->by_index[1].connections, 0);
	assert_false(h->by_index[1].retained);
	expect_answered_duplicate(h, &ev, 1);
	harness_free(h);
}

/* A repeat of an event whose commit then fails gets that failure, not an
 * OK for a row that was never written; the event_id is free again, so the
 * next retry is a new event. */
static void
test_repeat_of_an_event_whose_commit_fails_gets_the_failure(void **state)
{
	(void)state;
	struct harness *h = harness_new(1 << 20);
	sqlite3 *other = db_open_beside(h);
	db_exec(other, "BEGIN IMMEDIATE");
	db_inject_commit_failure(other, "doomed");
	Wsgate__V1__Event ev = make_event(
	    "ivan", "doomed", WSGATE__V1__EVENT_TYPE__AGENT_STARTED, NULL);
	accept_twice_uncommitted(h, &ev);

	db_exec(other, "COMMIT"); /* the trigger is in; the commit fails */
	pump(h);
	assert_int_equal(h->done_calls, 2);
	assert_int_equal(h->by_index[0].status, ROUTER_FAILED);
	assert_int_equal(h->by_index[1].status, ROUTER_FAILED);
	assert_false(h->by_index[1].duplicate);
	assert_string_equal(h->by_index[1].error, h->by_index[0].error);

	db_exec(other, "DROP TRIGGER inject");
	sqlite3_close(other);
	struct conn *c = open_conn(h, "ivan");
	expect_prefix(h, c, "{\"type\":\"connected\",");
	struct router_result res;
	assert_int_equal(
	    router_accept_event(h->rt, &ev, clock_now_us(), NULL, 2, &res), 0);
	pump(h);
	assert_int_equal(h->done_calls, 3);
	assert_int_equal(h->by_index[2].status, ROUTER_OK);
	assert_false(h->by_index[2].duplicate);
	assert_int_equal(h->by_index[2].seq, 1); /* the failed one's is back */
	assert_int_equal(h->by_index[2].connections, 1);
	expect_prefix(h, c, "{\"type\":\"agent_started\",\"seq\":1,");
	expect_answered_duplicate(h, &ev, 1);
	harness_free(h);
}

/* Accepts n events as one SendBatch (one store group, as dispatch submits
 * a request's events; index i for batch[i]) and waits for their commit.
 * None is final at once: here each is new or repeats one of the batch. */
static void send_batch(struct harness *h, const Wsgate__V1__Event *batch,
                       size_t n)
{
	struct router_result res;
	store_group_begin(h->store);
	for (size_t i = 0; i < n; i++)
		assert_int_equal(router_accept_event(h->rt, &batch[i],
		                                     clock_now_us(), NULL, i,
		                                     &res),
		                 0);
	store_group_end(h->store);
	pump(h);
}

/* One batch holding an event twice, and another event, whose commit fails:
 * every copy gets the failure; sent again, the ids are new. */
static void
test_repeat_in_the_batch_of_a_failed_event_gets_the_failure(void **state)
{
	(void)state;
	struct harness *h = harness_new(1 << 20);
	sqlite3 *other = db_open_beside(h);
	db_inject_commit_failure(other, "doomed");
	Wsgate__V1__Event batch[4] = {
	    make_event("jo", "doomed", WSGATE__V1__EVENT_TYPE__AGENT_STARTED,
	               NULL),
	    make_event("jo", "fine", WSGATE__V1__EVENT_TYPE__AGENT_THINKING,
	               NULL),
	    make_event("jo", "doomed", WSGATE__V1__EVENT_TYPE__AGENT_STARTED,
	               "{\"again\":1}"),
	    make_event("jo", "fine", WSGATE__V1__EVENT_TYPE__AGENT_THINKING,
	               NULL),
	};
	send_batch(h, batch, 4);
	assert_int_equal(h->done_calls, 4);
	for (size_t i = 0; i < 4; i++) {
		assert_int_equal(h->by_index[i].status, ROUTER_FAILED);
		assert_false(h->by_index[i].duplicate);
	}

	db_exec(other, "DROP TRIGGER inject");
	sqlite3_close(other);
	send_batch(h, batch, 4);
	assert_int_equal(h->done_calls, 8);
	for (size_t i = 0; i < 4; i++) {
		assert_int_equal(h->by_index[i].status, ROUTER_OK);
		assert_int_equal(h->by_index[i].duplicate, i >= 2);
		assert_int_equal(h->by_index[i].seq, h->by_index[i % 2].seq);
	}
	assert_int_equal(h->by_index[1].seq, h->by_index[0].seq + 1);
	harness_free(h);
}

/* Repeats waiting for a commit are bounded: past ROUTER_MAX_PARKED the
 * next one is told to retry later; every parked one is answered. */
static void test_parked_repeats_are_bounded(void **state)
{
	(void)state;
	struct harness *h = harness_new(1 << 20);
	Wsgate__V1__Event ev = make_event(
	    "kim", "popular", WSGATE__V1__EVENT_TYPE__AGENT_STARTED, NULL);
	struct router_result res;
	store_group_begin(h->store);
	for (size_t i = 0; i <= ROUTER_MAX_PARKED; i++)
		if (router_accept_event(h->rt, &ev, clock_now_us(), NULL, 0,
		                        &res))
			fail_msg("accept %zu was final (status %d)", i,
			         (int)res.status);
	assert_int_equal(
	    router_accept_event(h->rt, &ev, clock_now_us(), NULL, 0, &res), 1);
	assert_int_equal(res.status, ROUTER_EXHAUSTED);
	store_group_end(h->store);
	pump(h);
	assert_int_equal(h->done_calls, ROUTER_MAX_PARKED + 1);
	assert_int_equal(h->last.status, ROUTER_OK);
	assert_int_equal(h->last.seq, 1);
	assert_int_equal(dedup_parked(h->dedup), 0);
	expect_answered_duplicate(h, &ev, 1);
	harness_free(h);
}

static void test_early_events_wait_for_the_first_connection(void **state)
{
	(void)state;
	struct harness *h = harness_new(1 << 20);
	for (int i = 0; i < 3; i++) {
		char id[16];
		snprintf(id, sizeof(id), "e%d", i);
		Wsgate__V1__Event ev = make_event(
		    "carol", id, WSGATE__V1__EVENT_TYPE__TOOL_EXECUTING, "[]");
		struct router_result res = send_event(h, &ev);
		assert_true(res.retained);
		assert_int_equal(res.connections, 0);
	}
	struct conn *c = open_conn(h, "carol");
	expect_prefix(h, c, "{\"type\":\"connected\",\"conn_id\":");
	/* The catch-up comes in chunks of 2 as the queue drains. */
	for (int i = 1; i <= 3; i++) {
		char want[64];
		snprintf(want, sizeof(want),
		         "{\"type\":\"tool_executing\",\"seq\":%d,", i);
		expect_prefix(h, c, want);
	}
	assert_false(c->replaying);
	/* Written once: no longer pending for the next connection. */
	struct conn *c2 = open_conn(h, "carol");
	expect_prefix(h, c2, "{\"type\":\"connected\"");
	assert_int_equal(c2->queue.len, 0);
	harness_free(h);
}

static void test_since_replays_the_rest_then_live(void **state)
{
	(void)state;
	struct harness *h = harness_new(1 << 20);
	struct conn *a = open_conn(h, "dave");
	for (int i = 0; i < 5; i++) {
		char id[16];
		snprintf(id, sizeof(id), "e%d", i);
		Wsgate__V1__Event ev = make_event(
		    "dave", id, WSGATE__V1__EVENT_TYPE__AGENT_COMPLETED, NULL);
		send_event(h, &ev);
	}
	(void)a;
	struct conn *b = open_conn_since(h, "dave", 1, 2);
	char *s = pop_text(h, b);
	assert_non_null(
	    strstr(s, "\"user_id\":\"dave\",\"seq\":5,\"epoch\":\"e1\"}"));
	free(s);
	/* A live event arriving during the catch-up waits behind it. */
	Wsgate__V1__Event live = make_event(
	    "dave", "live", WSGATE__V1__EVENT_TYPE__AGENT_STARTED, NULL);
	assert_int_equal(send_event(h, &live).seq, 6);
	for (int i = 3; i <= 6; i++) {
		char want[64];
		snprintf(want, sizeof(want), "\"seq\":%d,", i);
		s = pop_text(h, b);
		assert_non_null(s);
		assert_non_null(strstr(s, want));
		free(s);
	}
	assert_int_equal(b->queue.len, 0);
	harness_free(h);
}

/* A client resuming from a seq this sidecar has not reached yet (it saw
 * it elsewhere: a lagging cluster replica) must not get seq <= since again
 * as live frames; such an event stays pending for the next connection. */
static void test_no_live_frame_at_or_below_since(void **state)
{
	(void)state;
	struct harness *h = harness_new(1 << 20);
	struct conn *c = open_conn_since(h, "erin", 1, 2);
	expect_prefix(h, c, "{\"type\":\"connected\"");
	for (int i = 1; i <= 3; i++) {
		char id[16];
		snprintf(id, sizeof(id), "e%d", i);
		Wsgate__V1__Event ev = make_event(
		    "erin", id, WSGATE__V1__EVENT_TYPE__AGENT_STARTED, NULL);
		struct router_result res = send_event(h, &ev);
		assert_int_equal(res.seq, i);
		assert_int_equal(res.connections, i > 2);
		assert_int_equal(res.retained, i <= 2);
	}
	expect_prefix(h, c, "{\"type\":\"agent_started\",\"seq\":3,");
	assert_int_equal(c->queue.len, 0);
	harness_free(h);
}

/* Sends n events to user, their ids prefix-1 .. prefix-n. */
static void send_n(struct harness *h, const char *user, const char *prefix,
                   int n)
{
	for (int i = 1; i <= n; i++) {
		char id[32];
		snprintf(id, sizeof(id), "%s-%d", prefix, i);
		Wsgate__V1__Event ev = make_event(
		    user, id, WSGATE__V1__EVENT_TYPE__AGENT_THINKING, NULL);
		assert_int_equal(send_event(h, &ev).status, ROUTER_OK);
	}
}

/* Pops frames with seq first..last, in order, then nothing is queued. */
static void expect_seqs(struct harness *h, struct conn *c, int first, int last)
{
	for (int i = first; i <= last; i++) {
		char want[64];
		snprintf(want, sizeof(want), "\"seq\":%d,", i);
		char *s = pop_text(h, c);
		assert_non_null(s);
		if (!strstr(s, want))
			fail_msg("frame '%s' is not seq %d", s, i);
		free(s);
	}
	assert_int_equal(c->queue.len, 0);
}

/* `connected` carries the epoch; a since of the same epoch resumes as
 * without one; a since of another epoch gets resume_failed and every
 * retained event, then live events from seq 1 on are not held back. */
static void test_epoch_names_the_history_of_since(void **state)
{
	(void)state;
	struct harness *h = harness_new(1 << 20);
	struct conn *a = open_conn(h, "fay");
	expect_prefix(h, a, "{\"type\":\"connected\"");
	send_n(h, "fay", "e", 4);
	expect_seqs(h, a, 1, 4);

	struct router_resume same = {.has_since = 1, .since = 2, .epoch = "e1"};
	struct conn *b = open_conn_resume(h, "fay", &same);
	char *s = pop_text(h, b);
	assert_non_null(strstr(s, ",\"seq\":4,\"epoch\":\"e1\"}"));
	free(s);
	expect_seqs(h, b, 3, 4);

	struct router_resume other = {
	    .has_since = 1, .since = 9, .epoch = "e0"};
	struct conn *c = open_conn_resume(h, "fay", &other);
	expect_prefix(h, c, "{\"type\":\"connected\"");
	expect_prefix(h, c, "{\"type\":\"resume_failed\",\"oldest_seq\":1}");
	expect_seqs(h, c, 1, 4);
	send_n(h, "fay", "f", 1); /* seq 5 <= 9, but of our history */
	expect_seqs(h, c, 5, 5);

	/* A user with no event yet: still told. */
	struct conn *d = open_conn_resume(h, "gus", &other);
	expect_prefix(h, d, "{\"type\":\"connected\"");
	expect_prefix(h, d, "{\"type\":\"resume_failed\",\"oldest_seq\":1}");
	assert_int_equal(d->queue.len, 0);
	assert_false(d->replaying);

	/* Replaced at run time: later connections see the new one, and the
	 * old one becomes another epoch. */
	assert_int_equal(router_set_epoch(h->rt, ""), -1);
	assert_int_equal(
	    router_set_epoch(h->rt, "123456789012345678901234567890123"), -1);
	assert_string_equal(router_epoch(h->rt), "e1");
	assert_int_equal(router_set_epoch(h->rt, "1764130000123456789"), 0);
	struct conn *e = open_conn_resume(h, "fay", &same);
	s = pop_text(h, e);
	assert_non_null(strstr(s, "\"epoch\":\"1764130000123456789\"}"));
	free(s);
	expect_prefix(h, e, "{\"type\":\"resume_failed\",\"oldest_seq\":1}");
	expect_seqs(h, e, 1, 5);
	harness_free(h);
}

static void test_overflowing_queue_closes_slow_consumer(void **state)
{
	(void)state;
	struct harness *h = harness_new(1000);
	struct conn *slow = open_conn(h, "erin");
	struct conn *other = open_conn(h, "frank");
	Wsgate__V1__Event warm = make_event(
	    "frank", "w", WSGATE__V1__EVENT_TYPE__AGENT_THINKING, NULL);
	send_event(h, &warm);
	int accepted = 0;
	for (int i = 0; i < 50; i++) {
		char id[16];
		snprintf(id, sizeof(id), "e%d", i);
		Wsgate__V1__Event ev = make_event(
		    "erin", id, WSGATE__V1__EVENT_TYPE__AGENT_THINKING,
		    "\"0123456789012345678901234567890123456789\"");
		struct router_result res = send_event(h, &ev);
		assert_int_equal(res.status, ROUTER_OK);
		accepted += res.connections;
	}
	assert_true(accepted < 50);
	assert_int_equal(slow->close_code, 4008);
	assert_int_equal(slow->queue.len, 0);
	assert_true(registry_counters(h->reg)->frames_dropped > 0);
	/* The other user is untouched. */
	assert_int_equal(other->close_code, 0);
	expect_prefix(h, other, "{\"type\":\"connected\"");
	expect_prefix(h, other, "{\"type\":\"agent_thinking\",\"seq\":1,");
	harness_free(h);
}

static void test_removed_connection_is_forgotten(void **state)
{
	(void)state;
	struct harness *h = harness_new(1 << 20);
	struct conn *a = open_conn(h, "gina");
	char id[REGISTRY_CONN_ID_LEN + 1];
	memcpy(id, a->id, sizeof(id));
	assert_ptr_equal(registry_find_conn(h->reg, id), a);
	assert_int_equal(registry_conn_count(h->reg), 1);
	assert_int_equal(registry_connected_user_count(h->reg), 1);
	router_conn_closing(h->rt, a);
	registry_remove_conn(h->reg, a);
	assert_null(registry_find_conn(h->reg, id));
	assert_int_equal(registry_conn_count(h->reg), 0);
	assert_int_equal(registry_connected_user_count(h->reg), 0);
	harness_free(h);
}

static void test_many_users_and_connections_are_found(void **state)
{
	(void)state;
	struct harness *h = harness_new(1 << 20);
	char name[32];
	struct conn *conns[500];
	for (int i = 0; i < 500; i++) {
		snprintf(name, sizeof(name), "user-%d", i);
		struct user *u = registry_user(h->reg, name, strlen(name), 1);
		conns[i] = registry_add_conn(h->reg, u, NULL, "", 1);
	}
	for (int i = 0; i < 500; i++) {
		snprintf(name, sizeof(name), "user-%d", i);
		struct user *u =
		    registry_user(h->reg, name, strlen(name), false);
		assert_non_null(u);
		assert_ptr_equal(u->conns, conns[i]);
		assert_ptr_equal(registry_find_conn(h->reg, conns[i]->id),
		                 conns[i]);
	}
	harness_free(h);
}

static void test_strings_are_json_escaped(void **state)
{
	(void)state;
	struct harness *h = harness_new(1 << 20);
	struct conn *c = open_conn(h, "q\"u\\o");
	expect_prefix(h, c, "{\"type\":\"connected\"");
	Wsgate__V1__Event ev = make_event("q\"u\\o", "id\x01",
	                                  WSGATE__V1__EVENT_TYPE__CUSTOM, NULL);
	ev.custom_type = "my.type";
	send_event(h, &ev);
	char *s = pop_text(h, c);
	assert_non_null(strstr(s, "\"type\":\"my.type\""));
	assert_non_null(strstr(s, "\"event_id\":\"id\\u0001\""));
	assert_non_null(strstr(s, "\"user_id\":\"q\\\"u\\\\o\""));
	assert_non_null(strstr(s, "\"payload\":{}}"));
	free(s);
	harness_free(h);
}

int main(void)
{
	log_set_level(LOG_WARN);
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_event_reaches_only_its_user),
	    cmocka_unit_test(test_frame_waits_for_commit),
	    cmocka_unit_test(test_seq_is_per_user_and_gapless),
	    cmocka_unit_test(test_repeated_event_id_is_a_duplicate),
	    cmocka_unit_test(
	        test_repeat_of_an_uncommitted_event_waits_for_its_commit),
	    cmocka_unit_test(
	        test_repeat_of_an_event_whose_commit_fails_gets_the_failure),
	    cmocka_unit_test(
	        test_repeat_in_the_batch_of_a_failed_event_gets_the_failure),
	    cmocka_unit_test(test_parked_repeats_are_bounded),
	    cmocka_unit_test(test_wal_is_checkpointed_while_running),
	    cmocka_unit_test(test_small_group_commits_on_the_calling_thread),
	    cmocka_unit_test(test_locked_database_does_not_stall_the_caller),
	    cmocka_unit_test(test_early_events_wait_for_the_first_connection),
	    cmocka_unit_test(test_since_replays_the_rest_then_live),
	    cmocka_unit_test(test_no_live_frame_at_or_below_since),
	    cmocka_unit_test(test_epoch_names_the_history_of_since),
	    cmocka_unit_test(test_overflowing_queue_closes_slow_consumer),
	    cmocka_unit_test(test_removed_connection_is_forgotten),
	    cmocka_unit_test(test_many_users_and_connections_are_found),
	    cmocka_unit_test(test_strings_are_json_escaped),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
