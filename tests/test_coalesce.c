/*
 * test_coalesce: libwsgate's merging of concurrent wsgate_send_event calls
 * (ipc/wsgate_coalesce.c), driven with fake senders so that who waits for
 * whom is decided by the test, not by timing.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "test_clock.h"
#include "wsgate_coalesce.h"

/* The fake link: sends block while the gate is closed. */
struct fake_link {
	pthread_mutex_t lk;
	pthread_cond_t cv;
	int gate_open;
	int in_send;      /* senders inside a fake send right now */
	int singles;      /* send_one calls */
	int batches;      /* send_batch calls */
	size_t last_n;    /* events in the last batch */
	int fail_batches; /* answer batches with this status (0: answer) */
};

static struct fake_link link_state;

static void fake_enter(void)
{
	pthread_mutex_lock(&link_state.lk);
	link_state.in_send++;
	while (!link_state.gate_open)
		pthread_cond_wait(&link_state.cv, &link_state.lk);
	link_state.in_send--;
	pthread_mutex_unlock(&link_state.lk);
}

/* seq = the number in the event id, so each caller can check it got the
 * result of its own event. */
static void fake_result(const struct wsgate_event *ev,
                        struct wsgate_event_result *res)
{
	memset(res, 0, sizeof(*res));
	res->status = WSGATE_OK;
	res->seq = strtoull(ev->event_id, NULL, 10);
	res->connections = 1;
}

static enum wsgate_status fake_one(wsgate_client *c,
                                   const struct wsgate_event *ev,
                                   struct wsgate_event_result *res)
{
	(void)c;
	fake_enter();
	pthread_mutex_lock(&link_state.lk);
	link_state.singles++;
	pthread_mutex_unlock(&link_state.lk);
	fake_result(ev, res);
	return res->status;
}

static enum wsgate_status fake_batch(wsgate_client *c,
                                     const struct wsgate_event *ev, size_t n,
                                     struct wsgate_event_result *res)
{
	(void)c;
	fake_enter();
	pthread_mutex_lock(&link_state.lk);
	link_state.batches++;
	link_state.last_n = n;
	int fail = link_state.fail_batches;
	pthread_mutex_unlock(&link_state.lk);
	for (size_t i = 0; i < n; i++) {
		fake_result(&ev[i], &res[i]);
		if (fail)
			res[i].status = (enum wsgate_status)fail;
	}
	return fail ? (enum wsgate_status)fail : WSGATE_OK;
}

struct caller {
	struct coalescer *co;
	unsigned id;
	enum wsgate_status st;
	struct wsgate_event_result res;
	pthread_t thread;
};

static void *caller_run(void *arg)
{
	struct caller *c = arg;
	char id[16];
	snprintf(id, sizeof(id), "%u", c->id);
	struct wsgate_event ev = {.event_id = id, .user_id = "u"};
	c->st = coalescer_send_event(c->co, &ev, &c->res);
	return NULL;
}

static int in_send(void)
{
	pthread_mutex_lock(&link_state.lk);
	int n = link_state.in_send;
	pthread_mutex_unlock(&link_state.lk);
	return n;
}

/* Polls until cond() (deadline 10 s). */
static int wait_in_send(int want)
{
	int64_t deadline = test_now_ms() + 10000;
	while (in_send() != want)
		if (test_now_ms() > deadline)
			return -1;
	return 0;
}

static int wait_waiting(struct coalescer *co, size_t want)
{
	int64_t deadline = test_now_ms() + 10000;
	while (coalescer_waiting(co) != want)
		if (test_now_ms() > deadline)
			return -1;
	return 0;
}

static int setup(void **state)
{
	(void)state;
	memset(&link_state, 0, sizeof(link_state));
	pthread_mutex_init(&link_state.lk, NULL);
	pthread_cond_init(&link_state.cv, NULL);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	pthread_mutex_destroy(&link_state.lk);
	pthread_cond_destroy(&link_state.cv);
	return 0;
}

static void open_gate(void)
{
	pthread_mutex_lock(&link_state.lk);
	link_state.gate_open = 1;
	pthread_cond_broadcast(&link_state.cv);
	pthread_mutex_unlock(&link_state.lk);
}

/* Two callers fill the request slots; three more queue up behind them and
 * leave together as one batch of three, each with its own result. */
static void test_waiting_events_leave_as_one_batch(void **state)
{
	(void)state;
	struct coalescer *co = coalescer_new(NULL, fake_one, fake_batch);
	struct caller c[5];
	assert_non_null(co);
	for (int i = 0; i < 5; i++) {
		c[i] = (struct caller){.co = co, .id = 100 + (unsigned)i};
		assert_int_equal(
		    pthread_create(&c[i].thread, NULL, caller_run, &c[i]), 0);
		if (i == 1)
			assert_int_equal(wait_in_send(2), 0);
	}
	assert_int_equal(wait_waiting(co, 3), 0);
	assert_int_equal(in_send(), 2); /* no third request while full */
	open_gate();
	for (int i = 0; i < 5; i++) {
		pthread_join(c[i].thread, NULL);
		assert_int_equal(c[i].st, WSGATE_OK);
		assert_int_equal(c[i].res.status, WSGATE_OK);
		assert_int_equal(c[i].res.seq, 100 + i);
	}
	assert_int_equal(link_state.singles, 2);
	assert_int_equal(link_state.batches, 1);
	assert_int_equal(link_state.last_n, 3);
	assert_int_equal(coalescer_waiting(co), 0);
	coalescer_free(co);
}

/* A lone caller is not held back: it sends a single request at once. */
static void test_lone_caller_sends_alone(void **state)
{
	(void)state;
	struct coalescer *co = coalescer_new(NULL, fake_one, fake_batch);
	struct caller c = {.co = co, .id = 7};
	assert_non_null(co);
	open_gate();
	caller_run(&c);
	assert_int_equal(c.st, WSGATE_OK);
	assert_int_equal(c.res.seq, 7);
	assert_int_equal(link_state.singles, 1);
	assert_int_equal(link_state.batches, 0);
	coalescer_free(co);
}

/* A batch refused whole gives every caller in it the request's status. */
static void test_refused_batch_reaches_every_caller(void **state)
{
	(void)state;
	struct coalescer *co = coalescer_new(NULL, fake_one, fake_batch);
	struct caller c[4];
	assert_non_null(co);
	link_state.fail_batches = WSGATE_RESOURCE_EXHAUSTED;
	for (int i = 0; i < 4; i++) {
		c[i] = (struct caller){.co = co, .id = 1 + (unsigned)i};
		assert_int_equal(
		    pthread_create(&c[i].thread, NULL, caller_run, &c[i]), 0);
		if (i == 1)
			assert_int_equal(wait_in_send(2), 0);
	}
	assert_int_equal(wait_waiting(co, 2), 0);
	open_gate();
	for (int i = 0; i < 4; i++)
		pthread_join(c[i].thread, NULL);
	for (int i = 2; i < 4; i++) {
		assert_int_equal(c[i].st, WSGATE_RESOURCE_EXHAUSTED);
		assert_int_equal(c[i].res.status, WSGATE_RESOURCE_EXHAUSTED);
	}
	assert_int_equal(c[0].st, WSGATE_OK);
	assert_int_equal(link_state.batches, 1);
	coalescer_free(co);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(
	        test_waiting_events_leave_as_one_batch, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_lone_caller_sends_alone, setup,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(
	        test_refused_batch_reaches_every_caller, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
