/*
 * test_signals: the signals a real sidecar process gets besides the
 * SIGINT/SIGTERM that stop it (test_golden_path covers SIGTERM). SIGHUP (a
 * closed terminal, an operator's reload habit) and SIGPIPE must change
 * nothing: the process keeps serving and its WebSocket sessions stay open.
 *
 * One real sidecar (at --log-level info, to see its "SIGHUP ignored"
 * line) with one browser and a libwsgate backend. Every wait is polled
 * against a deadline; nothing sleeps to synchronise.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sidecar_proc.h"
#include "test_clock.h"
#include "ws_client.h"
#include "wsgate.h"

#define CALL_MS    5000 /* one libwsgate call, one WebSocket frame */
#define CONNECT_MS 5000
#define N_TESTS    1 /* the tests of main() */

/* One per file: the sidecar, a backend and the browsers a test holds. */
struct fixture {
	struct sidecar_fixture base;
	wsgate_client *backend;
	struct ws_client_set clients; /* aborted at teardown */
};

/* A browser of user, aborted at teardown if the test fails. */
static struct ws_client *browser_open(struct fixture *fx, const char *user)
{
	struct ws_client *ws = sidecar_ws_open(fx->base.sc, user, CONNECT_MS);

	assert_non_null(ws);
	assert_int_equal(ws_client_set_add(&fx->clients, ws), 0);
	return ws;
}

/* The sidecar still serves: a ping over control, and an event sent now
 * reaches ws, the session opened before. */
static void expect_serving(struct fixture *fx, struct ws_client *ws,
                           const char *user, const char *event_id)
{
	struct wsgate_event ev = {
	    .event_id = event_id,
	    .user_id = user,
	    .type = WSGATE_AGENT_THINKING,
	};
	struct wsgate_event_result res;
	char *frame;

	if (wsgate_ping(fx->backend) != WSGATE_OK)
		fail_msg("ping: %s", wsgate_client_error(fx->backend));
	assert_int_equal(wsgate_send_event(fx->backend, &ev, &res), WSGATE_OK);
	assert_int_equal(res.connections, 1);
	frame = ws_client_recv_text(ws, CALL_MS);
	if (!frame || !strstr(frame, event_id))
		fail_msg("expected event %s on the open session, got %s",
		         event_id, frame ? frame : ws_client_error());
	free(frame);
}

/* Sends sig and waits until the log has text; fails at once if the
 * process died of it. */
static void signal_and_wait_log(struct fixture *fx, int sig, const char *text)
{
	int64_t deadline = test_now_ms() + CALL_MS;
	int status = -1;

	assert_int_equal(sidecar_signal(fx->base.sc, sig), 0);
	while (!sidecar_log_contains(fx->base.sc, text)) {
		if (!sidecar_running(fx->base.sc, &status))
			fail_msg("the sidecar died of signal %d (status %d)",
			         sig, status);
		if (test_now_ms() >= deadline)
			fail_msg("no \"%s\" in the log within %d ms", text,
			         CALL_MS);
		test_pause_ms(5);
	}
}

static void test_sighup_and_sigpipe_change_nothing(void **state)
{
	struct fixture *fx = *state;
	const char *user = "sig-user";
	struct ws_client *ws = browser_open(fx, user);

	expect_serving(fx, ws, user, "before");
	signal_and_wait_log(fx, SIGHUP, "SIGHUP ignored");
	expect_serving(fx, ws, user, "after-hup");

	/* SIGPIPE logs nothing; a signal whose action is to terminate
	 * kills the process as it is sent, so serving after it is proof. */
	assert_int_equal(sidecar_signal(fx->base.sc, SIGPIPE), 0);
	expect_serving(fx, ws, user, "after-pipe");
	assert_true(sidecar_running(fx->base.sc, NULL));

	ws_client_set_forget(&fx->clients, ws);
	ws_client_close(ws, CALL_MS);
	fx->base.passed++;
}

static int group_setup(void **state)
{
	static const char *const args[] = {"--log-level", "info", NULL};
	struct fixture *fx;

	if (sidecar_fixture_setup(state, sizeof(*fx), args) != 0)
		return -1;
	fx = *state;
	if (wsgate_client_open(&fx->backend, fx->base.sc->control_url,
	                       CALL_MS) != WSGATE_OK) {
		sidecar_free(fx->base.sc, true);
		free(fx);
		*state = NULL;
		return -1;
	}
	return 0;
}

static int group_teardown(void **state)
{
	struct fixture *fx = *state;

	ws_client_set_abort_all(&fx->clients);
	wsgate_client_close(fx->backend);
	return sidecar_fixture_teardown(state, N_TESTS);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_sighup_and_sigpipe_change_nothing),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
