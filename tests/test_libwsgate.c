/*
 * Unit tests of libwsgate (ipc/wsgate.h) against a fake sidecar in this
 * process: a rep0 socket on an ipc:// path in a private temporary directory,
 * answered by one thread with canned replies chosen by the request's
 * contents, and a push0 socket standing in for the inbound channel.
 * Synchronisation is NNG's own blocking send/receive: no sleeps.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include "wsgate.h"
#include "wsgate.pb-c.h"
#include "test_dir.h"

#include <nng/nng.h>
#include <nng/protocol/pipeline0/push.h>
#include <nng/protocol/reqrep0/rep.h>

#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define TIMEOUT_MS 5000 /* generous: only a broken test waits this long */

/*
 * The fake sidecar's behaviour, keyed by what the request carries:
 *   user "silent"  no reply at all
 *   user "liar"    a reply carrying another request_id
 *   user "garbage" a reply that is not a protobuf Reply
 *   user "busy"    RESOURCE_EXHAUSTED
 *   user "away"    UNAVAILABLE
 *   user "offline" OK, retained
 *   event_id ""    INVALID_ARGUMENT "event_id: required"
 *   event_id "dup" OK, duplicate
 *   event_id "n-N" OK with seq N (lets concurrent callers check that each
 *                  reply is the one for their request)
 *   otherwise      OK, seq = number of requests answered so far
 */
struct fake_sidecar {
	nng_socket sock;
	pthread_t thread;
	pthread_mutex_t lk;     /* protects the fields below */
	uint64_t requests;      /* requests received */
	char last_user[300];    /* of the last SendEvent or Disconnect */
	char last_custom[80];   /* of the last SendEvent */
	int last_type;          /* of the last SendEvent */
	char last_payload[256]; /* of the last SendEvent */
	char last_reason[128];  /* of the last Disconnect */
};

/* Per-group state: a directory, a fake sidecar in it and a client. */
struct fixture {
	char dir[64];
	char control_url[128];
	char inbound_url[128];
	struct fake_sidecar fake;
	wsgate_client *client;
};

static void fake_send_reply(struct fake_sidecar *f, Wsgate__V1__Reply *rep)
{
	nng_msg *m;

	if (nng_msg_alloc(&m, wsgate__v1__reply__get_packed_size(rep)) != 0)
		return;
	wsgate__v1__reply__pack(rep, nng_msg_body(m));
	if (nng_sendmsg(f->sock, m, 0) != 0)
		nng_msg_free(m);
}

static void fake_send_raw(struct fake_sidecar *f, const void *data, size_t n)
{
	nng_msg *m;

	if (nng_msg_alloc(&m, n) != 0)
		return;
	memcpy(nng_msg_body(m), data, n);
	if (nng_sendmsg(f->sock, m, 0) != 0)
		nng_msg_free(m);
}

static void fake_event_result(const Wsgate__V1__Event *ev, uint64_t count,
                              Wsgate__V1__EventResult *r)
{
	if (ev->event_id[0] == '\0') {
		r->status = WSGATE__V1__STATUS__INVALID_ARGUMENT;
		r->error = "event_id: required";
		return;
	}
	r->status = WSGATE__V1__STATUS__OK;
	r->seq = count;
	if (strncmp(ev->event_id, "n-", 2) == 0)
		r->seq = strtoull(ev->event_id + 2, NULL, 10);
	if (strcmp(ev->user_id, "offline") == 0)
		r->retained = 1;
	else
		r->connections = 2;
	if (strcmp(ev->event_id, "dup") == 0) {
		r->duplicate = 1;
		r->connections = 0;
		r->seq = 7;
	}
}

static void fake_answer_send_event(struct fake_sidecar *f,
                                   const Wsgate__V1__Request *req,
                                   uint64_t count)
{
	const Wsgate__V1__Event *ev = req->send_event->event;
	Wsgate__V1__Reply rep = WSGATE__V1__REPLY__INIT;
	Wsgate__V1__EventResult r = WSGATE__V1__EVENT_RESULT__INIT;

	pthread_mutex_lock(&f->lk);
	snprintf(f->last_user, sizeof(f->last_user), "%s", ev->user_id);
	snprintf(f->last_custom, sizeof(f->last_custom), "%s", ev->custom_type);
	f->last_type = ev->type;
	snprintf(f->last_payload, sizeof(f->last_payload), "%.*s",
	         (int)ev->payload_json.len,
	         ev->payload_json.data ? (const char *)ev->payload_json.data
	                               : "");
	pthread_mutex_unlock(&f->lk);

	rep.request_id = req->request_id;
	if (strcmp(ev->user_id, "silent") == 0)
		return;
	if (strcmp(ev->user_id, "garbage") == 0) {
		fake_send_raw(f, "\xff\xff\xff\xff", 4);
		return;
	}
	if (strcmp(ev->user_id, "liar") == 0)
		rep.request_id++;
	if (strcmp(ev->user_id, "busy") == 0) {
		rep.status = WSGATE__V1__STATUS__RESOURCE_EXHAUSTED;
		rep.error = "overloaded: retry later";
		fake_send_reply(f, &rep);
		return;
	}
	if (strcmp(ev->user_id, "away") == 0) {
		rep.status = WSGATE__V1__STATUS__UNAVAILABLE;
		rep.error = "cluster unavailable: retry later";
		fake_send_reply(f, &rep);
		return;
	}
	fake_event_result(ev, count, &r);
	rep.status = r.status;
	if (r.status == WSGATE__V1__STATUS__OK) {
		rep.body_case = WSGATE__V1__REPLY__BODY_EVENT;
		rep.event = &r;
	} else {
		rep.error = r.error;
	}
	fake_send_reply(f, &rep);
}

static void fake_answer_send_batch(struct fake_sidecar *f,
                                   const Wsgate__V1__Request *req,
                                   uint64_t count)
{
	const Wsgate__V1__SendBatch *b = req->send_batch;
	Wsgate__V1__Reply rep = WSGATE__V1__REPLY__INIT;
	Wsgate__V1__BatchResult batch = WSGATE__V1__BATCH_RESULT__INIT;
	Wsgate__V1__EventResult *rs = calloc(b->n_events, sizeof(*rs));
	Wsgate__V1__EventResult **ptrs = calloc(b->n_events, sizeof(*ptrs));

	for (size_t i = 0; i < b->n_events; i++) {
		wsgate__v1__event_result__init(&rs[i]);
		fake_event_result(b->events[i], count, &rs[i]);
		ptrs[i] = &rs[i];
	}
	batch.n_results = b->n_events;
	batch.results = ptrs;
	rep.request_id = req->request_id;
	rep.status = WSGATE__V1__STATUS__OK;
	rep.body_case = WSGATE__V1__REPLY__BODY_BATCH;
	rep.batch = &batch;
	fake_send_reply(f, &rep);
	free(ptrs);
	free(rs);
}

static void fake_answer_disconnect(struct fake_sidecar *f,
                                   const Wsgate__V1__Request *req)
{
	const Wsgate__V1__Disconnect *d = req->disconnect;
	Wsgate__V1__Reply rep = WSGATE__V1__REPLY__INIT;

	pthread_mutex_lock(&f->lk);
	snprintf(f->last_user, sizeof(f->last_user), "%s", d->user_id);
	snprintf(f->last_reason, sizeof(f->last_reason), "%s", d->reason);
	pthread_mutex_unlock(&f->lk);

	rep.request_id = req->request_id;
	if (d->user_id[0] == '\0' && d->conn_id[0] == '\0') {
		rep.status = WSGATE__V1__STATUS__INVALID_ARGUMENT;
		rep.error = "user_id or conn_id: required";
	} else {
		rep.status = WSGATE__V1__STATUS__OK;
		rep.body_case = WSGATE__V1__REPLY__BODY_DISCONNECTED;
		rep.disconnected = strcmp(d->user_id, "u1") == 0 ? 2 : 0;
	}
	fake_send_reply(f, &rep);
}

static void fake_answer_list(struct fake_sidecar *f,
                             const Wsgate__V1__Request *req)
{
	static char long_user[301];
	Wsgate__V1__Reply rep = WSGATE__V1__REPLY__INIT;
	Wsgate__V1__ConnectionList list = WSGATE__V1__CONNECTION_LIST__INIT;
	Wsgate__V1__Connection c[2] = {WSGATE__V1__CONNECTION__INIT,
	                               WSGATE__V1__CONNECTION__INIT};
	Wsgate__V1__Connection *ptrs[2] = {&c[0], &c[1]};
	const char *want = req->list_connections->user_id;

	/* 300 bytes: longer than the struct's user_id, to see truncation. */
	memset(long_user, 'x', 300);
	c[0].conn_id = "c-1";
	c[0].user_id = "u1";
	c[0].opened_at = 1764130000123456;
	c[0].peer = "127.0.0.1:5000";
	c[0].queued = 3;
	c[0].written = 40;
	c[1].conn_id = "c-2";
	c[1].user_id = long_user;
	c[1].opened_at = 1764130001000000;
	c[1].peer = "[::1]:6000";

	rep.request_id = req->request_id;
	rep.status = WSGATE__V1__STATUS__OK;
	rep.body_case = WSGATE__V1__REPLY__BODY_CONNECTIONS;
	rep.connections = &list;
	list.connections = ptrs;
	if (want[0] == '\0')
		list.n_connections = 2;
	else if (strcmp(want, "u1") == 0)
		list.n_connections = 1;
	fake_send_reply(f, &rep);
}

static void fake_answer_stats(struct fake_sidecar *f,
                              const Wsgate__V1__Request *req)
{
	Wsgate__V1__Reply rep = WSGATE__V1__REPLY__INIT;
	Wsgate__V1__Stats s = WSGATE__V1__STATS__INIT;

	s.uptime_s = 3723;
	s.connections = 5;
	s.users = 3;
	s.events_accepted = 1000;
	s.frames_written = 2000;
	s.frames_dropped = 1;
	s.audit_backlog = 17;
	s.notices_dropped = 4;
	s.version = "9.9.9-test";
	s.node_id = "pod-7";
	s.cluster = 1;
	s.cluster_available = 0;
	s.cluster_down_ms = 1500;
	s.cluster_position = 42;
	s.cluster_publish_queued = 3;
	s.cluster_unavailable_answers = 9;
	rep.request_id = req->request_id;
	rep.status = WSGATE__V1__STATUS__OK;
	rep.body_case = WSGATE__V1__REPLY__BODY_STATS;
	rep.stats = &s;
	fake_send_reply(f, &rep);
}

static void *fake_run(void *arg)
{
	struct fake_sidecar *f = arg;
	Wsgate__V1__Request *req;
	Wsgate__V1__Reply rep = WSGATE__V1__REPLY__INIT;
	uint64_t count;
	nng_msg *m;
	int rv;

	/* Ends when the test closes the socket. */
	while ((rv = nng_recvmsg(f->sock, &m, 0)) != NNG_ECLOSED) {
		if (rv != 0)
			continue;
		req = wsgate__v1__request__unpack(NULL, nng_msg_len(m),
		                                  nng_msg_body(m));
		nng_msg_free(m);
		if (req == NULL)
			continue;
		pthread_mutex_lock(&f->lk);
		count = ++f->requests;
		pthread_mutex_unlock(&f->lk);
		switch (req->body_case) {
		case WSGATE__V1__REQUEST__BODY_SEND_EVENT:
			fake_answer_send_event(f, req, count);
			break;
		case WSGATE__V1__REQUEST__BODY_SEND_BATCH:
			fake_answer_send_batch(f, req, count);
			break;
		case WSGATE__V1__REQUEST__BODY_DISCONNECT:
			fake_answer_disconnect(f, req);
			break;
		case WSGATE__V1__REQUEST__BODY_LIST_CONNECTIONS:
			fake_answer_list(f, req);
			break;
		case WSGATE__V1__REQUEST__BODY_GET_STATS:
			fake_answer_stats(f, req);
			break;
		default: /* Ping */
			rep.request_id = req->request_id;
			rep.status = WSGATE__V1__STATUS__OK;
			fake_send_reply(f, &rep);
			break;
		}
		wsgate__v1__request__free_unpacked(req, NULL);
	}
	return NULL;
}

static int fake_start(struct fake_sidecar *f, const char *url)
{
	memset(f, 0, sizeof(*f));
	pthread_mutex_init(&f->lk, NULL);
	if (nng_rep0_open(&f->sock) != 0)
		return -1;
	if (nng_listen(f->sock, url, NULL, 0) != 0) {
		nng_close(f->sock);
		return -1;
	}
	return pthread_create(&f->thread, NULL, fake_run, f) == 0 ? 0 : -1;
}

static void fake_stop(struct fake_sidecar *f)
{
	nng_close(f->sock);
	pthread_join(f->thread, NULL);
	pthread_mutex_destroy(&f->lk);
}

static int fixture_setup(void **state)
{
	struct fixture *fx = calloc(1, sizeof(*fx));

	if (fx == NULL)
		return -1;
	if (test_dir_make(fx->dir, sizeof(fx->dir), "libtest"))
		return -1;
	snprintf(fx->control_url, sizeof(fx->control_url),
	         "ipc://%s/control.ipc", fx->dir);
	snprintf(fx->inbound_url, sizeof(fx->inbound_url),
	         "ipc://%s/inbound.ipc", fx->dir);
	if (fake_start(&fx->fake, fx->control_url) != 0)
		return -1;
	if (wsgate_client_open(&fx->client, fx->control_url, TIMEOUT_MS) !=
	    WSGATE_OK)
		return -1;
	*state = fx;
	return 0;
}

static int fixture_teardown(void **state)
{
	struct fixture *fx = *state;

	wsgate_client_close(fx->client);
	fake_stop(&fx->fake);
	test_dir_remove(fx->dir);
	free(fx);
	nng_fini(); /* frees NNG's globals, so leak checkers see a clean exit */
	return 0;
}

static double elapsed_ms(const struct timespec *t0)
{
	struct timespec t1;

	clock_gettime(CLOCK_MONOTONIC, &t1);
	return (t1.tv_sec - t0->tv_sec) * 1e3 +
	       (t1.tv_nsec - t0->tv_nsec) / 1e6;
}

/* ---------------------------------------------------------------------- */

static void test_status_and_type_names(void **state)
{
	(void)state;
	assert_string_equal(wsgate_status_name(WSGATE_OK), "OK");
	assert_string_equal(wsgate_status_name(WSGATE_INVALID_ARGUMENT),
	                    "INVALID_ARGUMENT");
	assert_string_equal(wsgate_status_name(WSGATE_RESOURCE_EXHAUSTED),
	                    "RESOURCE_EXHAUSTED");
	assert_string_equal(wsgate_status_name(WSGATE_NOT_FOUND), "NOT_FOUND");
	assert_string_equal(wsgate_status_name(WSGATE_INTERNAL), "INTERNAL");
	assert_string_equal(wsgate_status_name(WSGATE_UNAVAILABLE),
	                    "UNAVAILABLE");
	assert_string_equal(wsgate_status_name(WSGATE_ERR_TIMEOUT), "TIMEOUT");
	assert_string_equal(wsgate_status_name(WSGATE_ERR_TRANSPORT),
	                    "TRANSPORT");
	assert_string_equal(wsgate_status_name(WSGATE_ERR_PROTOCOL),
	                    "PROTOCOL");
	assert_string_equal(wsgate_status_name(WSGATE_ERR_ARGUMENT),
	                    "ARGUMENT");

	for (int t = WSGATE_AGENT_STARTED; t <= WSGATE_AGENT_ERROR; t++)
		assert_int_equal(wsgate_event_type_parse(wsgate_event_type_name(
		                     (enum wsgate_event_type)t)),
		                 t);
	assert_string_equal(wsgate_event_type_name(WSGATE_TOOL_COMPLETED),
	                    "tool_completed");
	assert_string_equal(wsgate_event_type_name(WSGATE_CUSTOM), "custom");
	assert_int_equal(wsgate_event_type_parse("my.progress"), WSGATE_CUSTOM);
	assert_int_equal(wsgate_event_type_parse("Agent_Started"),
	                 WSGATE_CUSTOM);
}

static void test_send_event_maps_the_reply_into_the_result(void **state)
{
	struct fixture *fx = *state;
	struct wsgate_event ev = {
	    .event_id = "e-1",
	    .user_id = "u1",
	    .run_id = "r1",
	    .type = WSGATE_CUSTOM,
	    .custom_type = "my.progress",
	    .payload_json = "{\"pct\":50}",
	    .payload_len = 10,
	};
	struct wsgate_event_result res;

	assert_int_equal(wsgate_send_event(fx->client, &ev, &res), WSGATE_OK);
	assert_int_equal(res.status, WSGATE_OK);
	assert_true(res.seq > 0);
	assert_int_equal(res.connections, 2);
	assert_false(res.retained);
	assert_false(res.duplicate);
	assert_string_equal(res.error, "");

	/* The request carried the event as given. */
	pthread_mutex_lock(&fx->fake.lk);
	assert_string_equal(fx->fake.last_user, "u1");
	assert_int_equal(fx->fake.last_type, WSGATE_CUSTOM);
	assert_string_equal(fx->fake.last_custom, "my.progress");
	assert_string_equal(fx->fake.last_payload, "{\"pct\":50}");
	pthread_mutex_unlock(&fx->fake.lk);

	ev.user_id = "offline";
	assert_int_equal(wsgate_send_event(fx->client, &ev, &res), WSGATE_OK);
	assert_true(res.retained);
	assert_int_equal(res.connections, 0);

	ev.user_id = "u1";
	ev.event_id = "dup";
	assert_int_equal(wsgate_send_event(fx->client, &ev, &res), WSGATE_OK);
	assert_true(res.duplicate);
	assert_int_equal(res.seq, 7);
}

static void test_sequential_requests_get_their_own_replies(void **state)
{
	struct fixture *fx = *state;
	struct wsgate_event ev = {.user_id = "u1",
	                          .type = WSGATE_AGENT_STARTED};
	struct wsgate_event_result res;
	char id[32];

	for (uint64_t i = 1; i <= 50; i++) {
		snprintf(id, sizeof(id), "n-%" PRIu64, i * 3);
		ev.event_id = id;
		assert_int_equal(wsgate_send_event(fx->client, &ev, &res),
		                 WSGATE_OK);
		assert_int_equal(res.seq, i * 3);
	}
}

static void test_error_status_and_text_reach_the_caller(void **state)
{
	struct fixture *fx = *state;
	struct wsgate_event ev = {
	    .user_id = "u1", .event_id = "", .type = WSGATE_AGENT_STARTED};
	struct wsgate_event_result res;

	assert_int_equal(wsgate_send_event(fx->client, &ev, &res),
	                 WSGATE_INVALID_ARGUMENT);
	assert_int_equal(res.status, WSGATE_INVALID_ARGUMENT);
	assert_string_equal(res.error, "event_id: required");
	assert_string_equal(wsgate_client_error(fx->client),
	                    "event_id: required");

	ev.event_id = "e-2";
	ev.user_id = "busy";
	assert_int_equal(wsgate_send_event(fx->client, &ev, &res),
	                 WSGATE_RESOURCE_EXHAUSTED);
	assert_int_equal(res.status, WSGATE_RESOURCE_EXHAUSTED);
	assert_string_equal(res.error, "overloaded: retry later");
	assert_int_equal(res.seq, 0);

	ev.event_id = "e-3";
	ev.user_id = "away";
	assert_int_equal(wsgate_send_event(fx->client, &ev, &res),
	                 WSGATE_UNAVAILABLE);
	assert_int_equal(res.status, WSGATE_UNAVAILABLE);
	assert_string_equal(res.error, "cluster unavailable: retry later");
}

static void test_reply_for_another_request_is_a_protocol_error(void **state)
{
	struct fixture *fx = *state;
	struct wsgate_event ev = {
	    .user_id = "liar", .event_id = "e-3", .type = WSGATE_AGENT_STARTED};
	struct wsgate_event_result res;

	assert_int_equal(wsgate_send_event(fx->client, &ev, &res),
	                 WSGATE_ERR_PROTOCOL);
	assert_int_equal(res.status, WSGATE_ERR_PROTOCOL);
	assert_non_null(strstr(res.error, "request"));

	ev.user_id = "garbage";
	assert_int_equal(wsgate_send_event(fx->client, &ev, &res),
	                 WSGATE_ERR_PROTOCOL);
	assert_non_null(strstr(wsgate_client_error(fx->client), "undecodable"));

	/* The client is still usable afterwards. */
	assert_int_equal(wsgate_ping(fx->client), WSGATE_OK);
}

static void test_batch_results_keep_request_order(void **state)
{
	struct fixture *fx = *state;
	struct wsgate_event ev[5];
	struct wsgate_event_result res[5];

	/* "n-N" is answered with seq N: distinct per position, to prove the
	 * order is kept. */
	static const char *const ids[5] = {"n-100", "", "n-102", NULL, "n-104"};
	/* ids[1] "" and ids[3] NULL are invalid: the others are still
	 * accepted. */
	for (int i = 0; i < 5; i++)
		ev[i] = (struct wsgate_event){.event_id = ids[i],
		                              .user_id = "u1",
		                              .type = WSGATE_AGENT_THINKING};

	assert_int_equal(wsgate_send_batch(fx->client, ev, 5, res), WSGATE_OK);
	for (int i = 0; i < 5; i++) {
		if (i == 1 || i == 3) {
			assert_int_equal(res[i].status,
			                 WSGATE_INVALID_ARGUMENT);
			assert_string_equal(res[i].error, "event_id: required");
			assert_int_equal(res[i].seq, 0);
		} else {
			assert_int_equal(res[i].status, WSGATE_OK);
			assert_int_equal(res[i].seq, 100 + i);
			assert_int_equal(res[i].connections, 2);
		}
	}
}

static void test_batch_size_is_checked_before_sending(void **state)
{
	struct fixture *fx = *state;
	struct wsgate_event *ev = calloc(WSGATE_MAX_BATCH + 1, sizeof(*ev));
	struct wsgate_event_result *res =
	    calloc(WSGATE_MAX_BATCH + 1, sizeof(*res));
	uint64_t before, after;

	assert_non_null(ev);
	assert_non_null(res);
	for (int i = 0; i <= WSGATE_MAX_BATCH; i++)
		ev[i] = (struct wsgate_event){.event_id = "e-m",
		                              .user_id = "u1",
		                              .type = WSGATE_AGENT_STARTED};
	pthread_mutex_lock(&fx->fake.lk);
	before = fx->fake.requests;
	pthread_mutex_unlock(&fx->fake.lk);

	assert_int_equal(wsgate_send_batch(fx->client, ev, 0, res),
	                 WSGATE_ERR_ARGUMENT);
	assert_int_equal(
	    wsgate_send_batch(fx->client, ev, WSGATE_MAX_BATCH + 1, res),
	    WSGATE_ERR_ARGUMENT);
	assert_int_equal(res[0].status, WSGATE_ERR_ARGUMENT);
	assert_int_equal(wsgate_send_batch(fx->client, NULL, 1, res),
	                 WSGATE_ERR_ARGUMENT);

	/* A full batch is fine ("n-N" is answered with seq N). */
	ev[WSGATE_MAX_BATCH - 1].event_id = "n-4321";
	assert_int_equal(
	    wsgate_send_batch(fx->client, ev, WSGATE_MAX_BATCH, res),
	    WSGATE_OK);
	assert_int_equal(res[WSGATE_MAX_BATCH - 1].seq, 4321);

	pthread_mutex_lock(&fx->fake.lk);
	after = fx->fake.requests;
	pthread_mutex_unlock(&fx->fake.lk);
	assert_int_equal(after - before, 1); /* only the full batch was sent */
	free(ev);
	free(res);
}

static void test_disconnect_list_stats_and_ping(void **state)
{
	struct fixture *fx = *state;
	struct wsgate_connection *conns;
	struct wsgate_stats st;
	uint32_t n_disc = 99;
	size_t n;

	assert_int_equal(
	    wsgate_disconnect(fx->client, "u1", NULL, "bye", &n_disc),
	    WSGATE_OK);
	assert_int_equal(n_disc, 2);
	pthread_mutex_lock(&fx->fake.lk);
	assert_string_equal(fx->fake.last_reason, "bye");
	pthread_mutex_unlock(&fx->fake.lk);
	assert_int_equal(
	    wsgate_disconnect(fx->client, NULL, "c-77", NULL, &n_disc),
	    WSGATE_OK);
	assert_int_equal(n_disc, 0);
	assert_int_equal(wsgate_disconnect(fx->client, NULL, NULL, NULL, NULL),
	                 WSGATE_INVALID_ARGUMENT);
	assert_string_equal(wsgate_client_error(fx->client),
	                    "user_id or conn_id: required");

	assert_int_equal(wsgate_list_connections(fx->client, NULL, &conns, &n),
	                 WSGATE_OK);
	assert_int_equal(n, 2);
	assert_string_equal(conns[0].conn_id, "c-1");
	assert_string_equal(conns[0].user_id, "u1");
	assert_int_equal(conns[0].opened_at, 1764130000123456);
	assert_string_equal(conns[0].peer, "127.0.0.1:5000");
	assert_int_equal(conns[0].queued, 3);
	assert_int_equal(conns[0].written, 40);
	assert_string_equal(conns[1].peer, "[::1]:6000");
	/* Truncated to the field, still NUL-terminated. */
	assert_int_equal(strlen(conns[1].user_id),
	                 sizeof(conns[1].user_id) - 1);
	free(conns);

	assert_int_equal(wsgate_list_connections(fx->client, "u1", &conns, &n),
	                 WSGATE_OK);
	assert_int_equal(n, 1);
	free(conns);
	assert_int_equal(
	    wsgate_list_connections(fx->client, "nobody", &conns, &n),
	    WSGATE_OK);
	assert_int_equal(n, 0);
	assert_null(conns);

	assert_int_equal(wsgate_get_stats(fx->client, &st), WSGATE_OK);
	assert_int_equal(st.uptime_s, 3723);
	assert_int_equal(st.connections, 5);
	assert_int_equal(st.users, 3);
	assert_int_equal(st.events_accepted, 1000);
	assert_int_equal(st.frames_written, 2000);
	assert_int_equal(st.frames_dropped, 1);
	assert_int_equal(st.audit_backlog, 17);
	assert_int_equal(st.notices_dropped, 4);
	assert_string_equal(st.version, "9.9.9-test");
	assert_string_equal(st.node_id, "pod-7");
	assert_int_equal(st.cluster, 1);
	assert_int_equal(st.cluster_available, 0);
	assert_int_equal(st.cluster_down_ms, 1500);
	assert_int_equal(st.cluster_position, 42);
	assert_int_equal(st.cluster_publish_queued, 3);
	assert_int_equal(st.cluster_unavailable_answers, 9);

	assert_int_equal(wsgate_ping(fx->client), WSGATE_OK);
}

static void test_no_listener_times_out(void **state)
{
	struct fixture *fx = *state;
	wsgate_client *c;
	struct timespec t0;
	char url[160];
	double ms;

	snprintf(url, sizeof(url), "ipc://%s/nobody.ipc", fx->dir);
	assert_int_equal(wsgate_client_open(&c, url, 300), WSGATE_OK);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	assert_int_equal(wsgate_ping(c), WSGATE_ERR_TIMEOUT);
	ms = elapsed_ms(&t0);
	assert_true(ms >= 250 && ms < 3000);
	assert_non_null(strstr(wsgate_client_error(c), "no reply"));
	wsgate_client_close(c);
}

static void test_silent_sidecar_times_out(void **state)
{
	struct fixture *fx = *state;
	wsgate_client *c;
	struct wsgate_event ev = {.user_id = "silent",
	                          .event_id = "e-4",
	                          .type = WSGATE_AGENT_STARTED};
	struct wsgate_event_result res;

	assert_int_equal(wsgate_client_open(&c, fx->control_url, 300),
	                 WSGATE_OK);
	assert_int_equal(wsgate_send_event(c, &ev, &res), WSGATE_ERR_TIMEOUT);
	assert_int_equal(res.status, WSGATE_ERR_TIMEOUT);
	assert_non_null(strstr(res.error, "within 300 ms"));
	wsgate_client_close(c);
}

static void test_client_opened_before_the_sidecar_listens(void **state)
{
	struct fixture *fx = *state;
	struct fake_sidecar late;
	wsgate_client *c;
	char url[160];

	snprintf(url, sizeof(url), "ipc://%s/late.ipc", fx->dir);
	assert_int_equal(wsgate_client_open(&c, url, TIMEOUT_MS), WSGATE_OK);
	assert_int_equal(fake_start(&late, url), 0);
	/* The request waits for NNG's redial, within the timeout. */
	assert_int_equal(wsgate_ping(c), WSGATE_OK);
	wsgate_client_close(c);
	fake_stop(&late);
}

/* A plain Unix stream listener that never accepts; -1 on failure. */
static int unix_listen(const char *path)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -1;
	if (strlen(path) >= sizeof(sa.sun_path)) {
		close(fd);
		return -1;
	}
	memcpy(sa.sun_path, path, strlen(path) + 1);
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 ||
	    listen(fd, 4) != 0) {
		close(fd);
		return -1;
	}
	return fd;
}

/*
 * The sidecar dies while a call's connection waits in its backlog, never
 * answered (the call times out), and comes back on the same path: the
 * next call reaches it. (NNG 1.5.2's own dialer gave up for good here.)
 */
static void test_client_recovers_when_the_sidecar_dies_mid_connect(void **state)
{
	struct fixture *fx = *state;
	struct fake_sidecar back;
	struct pollfd pfd = {.events = POLLIN};
	wsgate_client *c = NULL;
	char path[160], url[168];

	snprintf(path, sizeof(path), "%s/dying.ipc", fx->dir);
	snprintf(url, sizeof(url), "ipc://%s", path);
	pfd.fd = unix_listen(path);
	assert_true(pfd.fd >= 0);

	assert_int_equal(wsgate_client_open(&c, url, 300), WSGATE_OK);
	assert_int_equal(wsgate_ping(c), WSGATE_ERR_TIMEOUT);
	/* The call's connection waited in the backlog, never accepted. */
	assert_int_equal(poll(&pfd, 1, 0), 1);
	close(pfd.fd);
	unlink(path);

	assert_int_equal(fake_start(&back, url), 0);
	assert_int_equal(wsgate_ping(c), WSGATE_OK);
	wsgate_client_close(c);
	fake_stop(&back);
}

/*
 * A sidecar restart cuts the client's idle connection: the next call
 * finds it broken, sends its request again on a new connection and gets
 * its reply -- within one call, as NNG's req0 resends.
 */
static void test_call_survives_a_sidecar_restart(void **state)
{
	struct fixture *fx = *state;
	struct fake_sidecar again;
	wsgate_client *c = NULL;
	char url[168];

	snprintf(url, sizeof(url), "ipc://%s/restart.ipc", fx->dir);
	assert_int_equal(fake_start(&again, url), 0);
	assert_int_equal(wsgate_client_open(&c, url, TIMEOUT_MS), WSGATE_OK);
	assert_int_equal(wsgate_ping(c), WSGATE_OK);
	fake_stop(&again);
	assert_int_equal(fake_start(&again, url), 0);
	assert_int_equal(wsgate_ping(c), WSGATE_OK);
	wsgate_client_close(c);
	fake_stop(&again);
}

static void test_bad_arguments_are_refused_locally(void **state)
{
	struct fixture *fx = *state;
	wsgate_client *c = (wsgate_client *)1;
	struct wsgate_event ev = {.user_id = "u1",
	                          .event_id = "e",
	                          .payload_len = 3}; /* but no payload */
	struct wsgate_event_result res;

	assert_int_equal(wsgate_client_open(&c, fx->control_url, 0),
	                 WSGATE_ERR_ARGUMENT);
	assert_null(c);
	assert_int_equal(wsgate_client_open(&c, "nonsense://x", 100),
	                 WSGATE_ERR_ARGUMENT);
	assert_null(c);
	assert_int_equal(wsgate_send_event(fx->client, &ev, &res),
	                 WSGATE_ERR_ARGUMENT);
	assert_int_equal(res.status, WSGATE_ERR_ARGUMENT);
	assert_int_equal(wsgate_send_event(fx->client, NULL, &res),
	                 WSGATE_ERR_ARGUMENT);
}

/* Concurrent callers on one client: every reply must reach the caller
 * whose request it answers. cmocka asserts are main-thread only, so the
 * workers count mismatches. */
struct worker {
	wsgate_client *c;
	int base;
	int failures;
};

static void *worker_run(void *arg)
{
	struct worker *w = arg;
	struct wsgate_event ev = {.user_id = "u1",
	                          .type = WSGATE_AGENT_STARTED};
	struct wsgate_event_result res;
	char id[32];

	for (int i = 0; i < 100; i++) {
		snprintf(id, sizeof(id), "n-%d", w->base + i);
		ev.event_id = id;
		if (wsgate_send_event(w->c, &ev, &res) != WSGATE_OK ||
		    res.seq != (uint64_t)(w->base + i))
			w->failures++;
	}
	return NULL;
}

static void test_concurrent_calls_share_one_client(void **state)
{
	struct fixture *fx = *state;
	struct worker w[4];
	pthread_t t[4];

	for (int i = 0; i < 4; i++) {
		w[i] = (struct worker){.c = fx->client, .base = (i + 1) * 1000};
		assert_int_equal(pthread_create(&t[i], NULL, worker_run, &w[i]),
		                 0);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(t[i], NULL);
		assert_int_equal(w[i].failures, 0);
	}
}

/* ---------------------------------------------------------------------- */

static void push_inbound(nng_socket push, const Wsgate__V1__Inbound *in)
{
	nng_msg *m;

	assert_int_equal(
	    nng_msg_alloc(&m, wsgate__v1__inbound__get_packed_size(in)), 0);
	wsgate__v1__inbound__pack(in, nng_msg_body(m));
	/* Buffered until the pull side connects (its next receive), as
	 * the sidecar's --inbound-buffer keeps messages for backends. */
	assert_int_equal(nng_sendmsg(push, m, 0), 0);
}

static void test_inbound_delivers_messages_and_notices(void **state)
{
	struct fixture *fx = *state;
	Wsgate__V1__Inbound in = WSGATE__V1__INBOUND__INIT;
	Wsgate__V1__ClientMessage cm = WSGATE__V1__CLIENT_MESSAGE__INIT;
	Wsgate__V1__ConnectionOpened op = WSGATE__V1__CONNECTION_OPENED__INIT;
	Wsgate__V1__ConnectionClosed cl = WSGATE__V1__CONNECTION_CLOSED__INIT;
	const char *data = "{\"type\":\"chat\",\"text\":\"hi\"}";
	struct wsgate_inbound_msg msg;
	wsgate_inbound *pull;
	nng_socket push;
	nng_msg *raw;

	/* The backend may start first: it dials before anyone listens. */
	assert_int_equal(wsgate_inbound_open(&pull, fx->inbound_url),
	                 WSGATE_OK);
	assert_int_equal(nng_push0_open(&push), 0);
	assert_int_equal(nng_socket_set_ms(push, NNG_OPT_SENDTIMEO, TIMEOUT_MS),
	                 0);
	assert_int_equal(nng_socket_set_int(push, NNG_OPT_SENDBUF, 16), 0);
	assert_int_equal(nng_listen(push, fx->inbound_url, NULL, 0), 0);

	cm.conn_id = "c-1";
	cm.user_id = "u1";
	cm.data.data = (uint8_t *)data;
	cm.data.len = strlen(data);
	cm.received_at = 1764130000000001;
	in.body_case = WSGATE__V1__INBOUND__BODY_CLIENT_MESSAGE;
	in.client_message = &cm;
	push_inbound(push, &in);

	op.conn_id = "c-2";
	op.user_id = "u2";
	op.at = 1764130000000002;
	op.peer = "10.0.0.1:4444";
	in.body_case = WSGATE__V1__INBOUND__BODY_OPENED;
	in.opened = &op;
	push_inbound(push, &in);

	cl.conn_id = "c-2";
	cl.user_id = "u2";
	cl.at = 1764130000000003;
	cl.code = 4003;
	cl.reason = "kicked";
	in.body_case = WSGATE__V1__INBOUND__BODY_CLOSED;
	in.closed = &cl;
	push_inbound(push, &in);

	assert_int_equal(wsgate_inbound_recv(pull, &msg, TIMEOUT_MS),
	                 WSGATE_OK);
	assert_int_equal(msg.kind, WSGATE_INBOUND_CLIENT_MESSAGE);
	assert_string_equal(msg.conn_id, "c-1");
	assert_string_equal(msg.user_id, "u1");
	assert_int_equal(msg.at, 1764130000000001);
	assert_int_equal(msg.data_len, strlen(data));
	assert_memory_equal(msg.data, data, msg.data_len);
	assert_int_equal(msg.data[msg.data_len], '\0');
	wsgate_inbound_msg_clear(&msg);

	assert_int_equal(wsgate_inbound_recv(pull, &msg, TIMEOUT_MS),
	                 WSGATE_OK);
	assert_int_equal(msg.kind, WSGATE_INBOUND_OPENED);
	assert_string_equal(msg.conn_id, "c-2");
	assert_string_equal(msg.user_id, "u2");
	assert_string_equal(msg.peer, "10.0.0.1:4444");
	assert_int_equal(msg.at, 1764130000000002);
	assert_null(msg.data);
	wsgate_inbound_msg_clear(&msg);

	assert_int_equal(wsgate_inbound_recv(pull, &msg, TIMEOUT_MS),
	                 WSGATE_OK);
	assert_int_equal(msg.kind, WSGATE_INBOUND_CLOSED);
	assert_int_equal(msg.code, 4003);
	assert_string_equal(msg.reason, "kicked");
	assert_int_equal(msg.at, 1764130000000003);
	wsgate_inbound_msg_clear(&msg);

	/* Undecodable, and decodable but empty: consumed, PROTOCOL. */
	assert_int_equal(nng_msg_alloc(&raw, 3), 0);
	memcpy(nng_msg_body(raw), "\xff\xff\xff", 3);
	assert_int_equal(nng_sendmsg(push, raw, 0), 0);
	assert_int_equal(wsgate_inbound_recv(pull, &msg, TIMEOUT_MS),
	                 WSGATE_ERR_PROTOCOL);
	in.body_case = WSGATE__V1__INBOUND__BODY__NOT_SET;
	push_inbound(push, &in);
	assert_int_equal(wsgate_inbound_recv(pull, &msg, TIMEOUT_MS),
	                 WSGATE_ERR_PROTOCOL);

	/* Nothing more queued. */
	assert_int_equal(wsgate_inbound_recv(pull, &msg, 100),
	                 WSGATE_ERR_TIMEOUT);
	assert_int_equal(wsgate_inbound_recv(pull, &msg, 0),
	                 WSGATE_ERR_TIMEOUT);
	assert_int_equal(wsgate_inbound_recv(pull, &msg, -2),
	                 WSGATE_ERR_ARGUMENT);

	wsgate_inbound_close(pull);
	nng_close(push);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_status_and_type_names),
	    cmocka_unit_test(test_send_event_maps_the_reply_into_the_result),
	    cmocka_unit_test(test_sequential_requests_get_their_own_replies),
	    cmocka_unit_test(test_error_status_and_text_reach_the_caller),
	    cmocka_unit_test(
	        test_reply_for_another_request_is_a_protocol_error),
	    cmocka_unit_test(test_batch_results_keep_request_order),
	    cmocka_unit_test(test_batch_size_is_checked_before_sending),
	    cmocka_unit_test(test_disconnect_list_stats_and_ping),
	    cmocka_unit_test(test_no_listener_times_out),
	    cmocka_unit_test(test_silent_sidecar_times_out),
	    cmocka_unit_test(test_client_opened_before_the_sidecar_listens),
	    cmocka_unit_test(
	        test_client_recovers_when_the_sidecar_dies_mid_connect),
	    cmocka_unit_test(test_call_survives_a_sidecar_restart),
	    cmocka_unit_test(test_bad_arguments_are_refused_locally),
	    cmocka_unit_test(test_concurrent_calls_share_one_client),
	    cmocka_unit_test(test_inbound_delivers_messages_and_notices),
	};

	int failed =
	    cmocka_run_group_tests(tests, fixture_setup, fixture_teardown);
	/* Pipes of closed sockets are freed when NNG is finalised. */
	nng_fini();
	return failed;
}
