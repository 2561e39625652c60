/*
 * test_epoch: the `epoch` of `connected` and the ?epoch= of a resume,
 * against a real sidecar process. The epoch names the history the seqs
 * belong to: kept by the database across restarts, new with a new
 * database; a since of another epoch gets resume_failed and everything
 * retained. Nothing sleeps: every wait is a receive with a deadline.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "sidecar_proc.h"
#include "ws_client.h"
#include "wsgate.h"

#define RECV_MS 5000 /* one frame, one reply */
#define STOP_MS 10000

struct etest {
	struct sidecar *sc;
	struct ws_client_set clients;
};

static json_t *recv_json(struct ws_client *c)
{
	char *text = ws_client_recv_text(c, RECV_MS);
	if (!text)
		fail_msg("no text frame: %s", ws_client_error());
	json_error_t err;
	json_t *obj = json_loads(text, 0, &err);
	if (!obj)
		fail_msg("not JSON: %s", text);
	free(text);
	return obj;
}

static const char *jstr(json_t *obj, const char *key)
{
	const char *s = json_string_value(json_object_get(obj, key));
	return s ? s : "";
}

static json_int_t jint(json_t *obj, const char *key)
{
	return json_integer_value(json_object_get(obj, key));
}

/* A WebSocket of user with the query after the token ("" or
 * "&since=1&epoch=..."); its epoch, from `connected`, goes to epoch. */
static struct ws_client *open_ws(struct etest *t, const char *user,
                                 const char *query, char *epoch, size_t cap)
{
	char *token = sidecar_token(t->sc, user, 3600);
	assert_non_null(token);
	char path[2048];
	snprintf(path, sizeof(path), "/ws?access_token=%s%s", token, query);
	free(token);
	struct ws_client *c = NULL;
	int status = ws_client_connect(&c, t->sc->port, path, NULL, RECV_MS);
	if (status != 101)
		fail_msg("connect %s%s: %d (%s)", user, query, status,
		         ws_client_error());
	assert_int_equal(ws_client_set_add(&t->clients, c), 0);
	json_t *obj = recv_json(c);
	if (strcmp(jstr(obj, "type"), "connected") != 0)
		fail_msg("first frame is not connected: %s", jstr(obj, "type"));
	snprintf(epoch, cap, "%s", jstr(obj, "epoch"));
	json_decref(obj);
	return c;
}

static void close_ws(struct etest *t, struct ws_client *c)
{
	ws_client_set_forget(&t->clients, c);
	ws_client_close(c, RECV_MS);
}

/* The next frame is an event with this seq. */
static void expect_seq(struct ws_client *c, json_int_t seq)
{
	json_t *obj = recv_json(c);
	if (jint(obj, "seq") != seq ||
	    strcmp(jstr(obj, "type"), "connected") == 0)
		fail_msg("want event seq %lld, got %s %lld", (long long)seq,
		         jstr(obj, "type"), (long long)jint(obj, "seq"));
	json_decref(obj);
}

static void expect_resume_failed(struct ws_client *c, json_int_t oldest)
{
	json_t *obj = recv_json(c);
	if (strcmp(jstr(obj, "type"), "resume_failed") != 0 ||
	    jint(obj, "oldest_seq") != oldest)
		fail_msg("want resume_failed oldest_seq %lld, got %s",
		         (long long)oldest, jstr(obj, "type"));
	json_decref(obj);
}

/* Sends one event to user through a fresh backend connection; returns its
 * seq. */
static uint64_t send_one(struct etest *t, const char *user, const char *id)
{
	wsgate_client *b = NULL;
	assert_int_equal(wsgate_client_open(&b, t->sc->control_url, RECV_MS),
	                 WSGATE_OK);
	struct wsgate_event ev = {
	    .user_id = user, .event_id = id, .type = WSGATE_AGENT_STARTED};
	struct wsgate_event_result res;
	if (wsgate_send_event(b, &ev, &res) != WSGATE_OK)
		fail_msg("send %s: %s", id, wsgate_client_error(b));
	wsgate_client_close(b);
	return res.seq;
}

static bool is_epoch(const char *e)
{
	if (strlen(e) != 16)
		return false;
	for (const char *p = e; *p; p++)
		if (!strchr("0123456789abcdef", *p))
			return false;
	return true;
}

static void restart(struct etest *t)
{
	ws_client_set_abort_all(&t->clients);
	assert_int_equal(sidecar_stop(t->sc, STOP_MS), 0);
	assert_int_equal(sidecar_restart(t->sc), 0);
}

static void test_epoch_survives_restarts_and_names_the_database(void **state)
{
	struct etest *t = *state;
	char e1[64], e[64];

	struct ws_client *a = open_ws(t, "ann", "", e1, sizeof(e1));
	if (!is_epoch(e1))
		fail_msg("connected.epoch \"%s\" is not 16 hex digits", e1);
	for (int i = 1; i <= 3; i++) {
		char id[16];
		snprintf(id, sizeof(id), "a-%d", i);
		assert_int_equal(send_one(t, "ann", id), i);
		expect_seq(a, i);
	}
	close_ws(t, a);

	/* The same epoch: an ordinary resume. */
	char q[128];
	snprintf(q, sizeof(q), "&since=1&epoch=%s", e1);
	a = open_ws(t, "ann", q, e, sizeof(e));
	assert_string_equal(e, e1);
	expect_seq(a, 2);
	expect_seq(a, 3);
	close_ws(t, a);

	/* Another epoch: resume_failed, then everything retained. */
	a = open_ws(t, "ann", "&since=1&epoch=00000000deadbeef", e, sizeof(e));
	expect_resume_failed(a, 1);
	expect_seq(a, 1);
	expect_seq(a, 2);
	expect_seq(a, 3);
	close_ws(t, a);

	/* A restart on the same database keeps it. */
	restart(t);
	a = open_ws(t, "ann", q, e, sizeof(e));
	assert_string_equal(e, e1);
	expect_seq(a, 2);
	expect_seq(a, 3);

	/* A new database: a new epoch, and a client of the old one is
	 * told, then gets the new history from seq 1 although its since
	 * is higher. */
	ws_client_set_abort_all(&t->clients);
	assert_int_equal(sidecar_stop(t->sc, STOP_MS), 0);
	const char *suffix[] = {"", "-wal", "-shm"};
	for (size_t i = 0; i < 3; i++) {
		char path[128];
		snprintf(path, sizeof(path), "%s%s", t->sc->db_path, suffix[i]);
		unlink(path);
	}
	assert_int_equal(sidecar_restart(t->sc), 0);
	snprintf(q, sizeof(q), "&since=3&epoch=%s", e1);
	a = open_ws(t, "ann", q, e, sizeof(e));
	if (!is_epoch(e) || strcmp(e, e1) == 0)
		fail_msg("new database: epoch \"%s\", old \"%s\"", e, e1);
	expect_resume_failed(a, 1);
	assert_int_equal(send_one(t, "ann", "b-1"), 1);
	expect_seq(a, 1);
	close_ws(t, a);
}

static void test_bad_epoch_is_refused(void **state)
{
	struct etest *t = *state;
	char *token = sidecar_token(t->sc, "bob", 3600);
	assert_non_null(token);
	char path[2048];
	snprintf(path, sizeof(path), "/ws?access_token=%s&since=1&epoch=a-b",
	         token);
	free(token);
	struct ws_client *c = NULL;
	assert_int_equal(
	    ws_client_connect(&c, t->sc->port, path, NULL, RECV_MS), 400);
	assert_null(c);
}

static int group_setup(void **state)
{
	struct etest *t = calloc(1, sizeof(*t));
	if (!t || sidecar_start(&t->sc, NULL))
		return -1;
	*state = t;
	return 0;
}

static int group_teardown(void **state)
{
	struct etest *t = *state;
	ws_client_set_abort_all(&t->clients);
	int rc = sidecar_finish(t->sc, true);
	free(t);
	return rc;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(
	        test_epoch_survives_restarts_and_names_the_database),
	    cmocka_unit_test(test_bad_epoch_is_refused),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
