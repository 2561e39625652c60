/*
 * test_inbound: the sidecar's inbound socket (sidecar/inbound.c) with pull
 * peers that cannot take what it sends them.
 *
 * One real sidecar process serves the file; browsers are ws_client
 * connections, pull peers are plain Unix sockets speaking SP, and the
 * backend that finally reads is libwsgate. A peer that shut its receiving
 * side down makes the sidecar's next send to it fail (EPIPE): the sidecar
 * must survive that, close the peer, and keep the message for the next
 * backend. Every wait is polled against a deadline; nothing sleeps to
 * synchronise.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "sidecar_proc.h"
#include "sp_wire.h"
#include "test_clock.h"
#include "ws_client.h"
#include "wsgate.h"

#define CALL_MS    5000 /* one WebSocket frame, one inbound message */
#define CONNECT_MS 5000
#define N_TESTS    2 /* the tests of main() */

/* One per file: the sidecar every test talks to. */
struct fixture {
	struct sidecar_fixture base;
	/* The WebSockets a failed test leaves open, aborted at teardown. */
	struct ws_client_set clients;
};

/* A browser of user, aborted at teardown if the test fails. */
static struct ws_client *browser_open(struct fixture *fx, const char *user)
{
	struct ws_client *ws = sidecar_ws_open(fx->base.sc, user, CONNECT_MS);

	assert_non_null(ws);
	assert_int_equal(ws_client_set_add(&fx->clients, ws), 0);
	return ws;
}

/* Sends a ping and waits for its pong: every frame sent before it has been
 * handled by the sidecar. */
static void browser_sync(struct ws_client *ws)
{
	char *pong;

	assert_int_equal(ws_client_send_text(ws, "{\"type\":\"ping\"}"),
	                 WS_CLIENT_OK);
	pong = ws_client_recv_text(ws, CALL_MS);
	if (!pong || !strstr(pong, "\"pong\""))
		fail_msg("expected a pong, got %s",
		         pong ? pong : ws_client_error());
	free(pong);
}

/*
 * A pull0 peer made of a plain Unix socket: it connects to the inbound
 * socket, reads the sidecar's SP header and sends a valid pull0 one. With
 * shut_first it shuts its receiving side down before its header (the
 * sidecar's first send to it fails with EPIPE), so that the sidecar tries
 * to hand it the queue at once and cannot.
 */
static int raw_puller_open(const char *url, bool shut_first)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	struct timeval tv = {.tv_sec = CALL_MS / 1000};
	uint8_t theirs[SP_HEADER_LEN], ours[SP_HEADER_LEN];
	int fd;

	assert_true(strncmp(url, "ipc://", 6) == 0);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", url + 6);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(fd >= 0);
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(recv(fd, theirs, sizeof(theirs), MSG_WAITALL),
	                 (ssize_t)sizeof(theirs));
	assert_true(sp_wire_header_is(theirs, SP_PROTO_PUSH0));
	if (shut_first)
		assert_int_equal(shutdown(fd, SHUT_RD), 0);
	sp_wire_header(ours, SP_PROTO_PULL0);
	assert_int_equal(send(fd, ours, sizeof(ours), MSG_NOSIGNAL),
	                 (ssize_t)sizeof(ours));
	return fd;
}

/* Reads what the sidecar sends fd until text shows up in it. */
static void raw_puller_wait_for(int fd, const char *text)
{
	char buf[4096];
	size_t len = 0, tlen = strlen(text);
	int64_t deadline = test_now_ms() + CALL_MS;

	while (test_now_ms() < deadline) {
		struct pollfd pfd = {.fd = fd, .events = POLLIN};
		ssize_t n;
		if (poll(&pfd, 1, 100) != 1)
			continue;
		n = recv(fd, buf + len, sizeof(buf) - len, MSG_DONTWAIT);
		assert_true(n > 0);
		len += (size_t)n;
		if (memmem(buf, len, text, tlen))
			return;
		/* Keep the tail: text may be split across two reads. */
		if (len > sizeof(buf) / 2) {
			memmove(buf, buf + len - tlen, tlen);
			len = tlen;
		}
	}
	fail_msg("%s did not reach the raw puller within %d ms", text, CALL_MS);
}

/* Returns once the sidecar has closed its end of fd (both directions are
 * shut then); a crash closes it too, so the caller checks the process. */
static void raw_puller_wait_closed(int fd)
{
	struct pollfd pfd = {.fd = fd, .events = POLLOUT};
	int64_t deadline = test_now_ms() + CALL_MS;

	while (test_now_ms() < deadline) {
		pfd.revents = 0;
		if (poll(&pfd, 1, 100) == 1 && (pfd.revents & POLLHUP))
			return;
	}
	fail_msg("the sidecar kept a pull peer that cannot read for %d ms",
	         CALL_MS);
}

static void expect_sidecar_alive(struct fixture *fx, const char *after)
{
	if (sidecar_http_get(fx->base.sc, "/healthz", NULL) != 200)
		fail_msg("the sidecar died (status %d) after %s",
		         sidecar_wait(fx->base.sc, CALL_MS), after);
}

/* The next inbound message of user (other tests' notices are skipped):
 * of kind, with data unless NULL. */
static void expect_inbound(wsgate_inbound *in, enum wsgate_inbound_kind kind,
                           const char *user, const char *data)
{
	struct wsgate_inbound_msg msg = {0};
	int64_t deadline = test_now_ms() + CALL_MS;

	for (;;) {
		enum wsgate_status st = wsgate_inbound_recv(in, &msg, CALL_MS);
		if (st != WSGATE_OK)
			fail_msg("no inbound message of %s within %d ms: %s",
			         user, CALL_MS, wsgate_status_name(st));
		if (strcmp(msg.user_id, user) == 0)
			break;
		wsgate_inbound_msg_clear(&msg);
		if (test_now_ms() >= deadline)
			fail_msg("no inbound message of %s within %d ms", user,
			         CALL_MS);
	}
	assert_int_equal(msg.kind, kind);
	if (data) {
		assert_int_equal(msg.data_len, strlen(data));
		assert_memory_equal(msg.data, data, msg.data_len);
	}
	wsgate_inbound_msg_clear(&msg);
}

/* The reviewer's crash: with two or more messages queued, the first send
 * to a peer that cannot read closed its pipe, which freed the peer, and
 * the loop over the queue read the peer again. */
static void test_puller_that_cannot_read_loses_nothing(void **state)
{
	struct fixture *fx = *state;
	const char *user = "ib-unreadable";
	wsgate_inbound *in;
	struct ws_client *ws;
	int fd;

	/* Queued with no backend: the opened notice and two messages. */
	ws = browser_open(fx, user);
	assert_int_equal(ws_client_send_text(ws, "{\"n\":1}"), WS_CLIENT_OK);
	assert_int_equal(ws_client_send_text(ws, "{\"n\":2}"), WS_CLIENT_OK);
	browser_sync(ws);

	fd = raw_puller_open(fx->base.sc->inbound_url, true);
	raw_puller_wait_closed(fd);
	close(fd);
	expect_sidecar_alive(fx, "a pull peer that cannot read arrived");

	/* A backend that can read gets the whole queue, oldest first. */
	assert_int_equal(wsgate_inbound_open(&in, fx->base.sc->inbound_url),
	                 WSGATE_OK);
	expect_inbound(in, WSGATE_INBOUND_OPENED, user, NULL);
	expect_inbound(in, WSGATE_INBOUND_CLIENT_MESSAGE, user, "{\"n\":1}");
	expect_inbound(in, WSGATE_INBOUND_CLIENT_MESSAGE, user, "{\"n\":2}");
	wsgate_inbound_close(in);
	ws_client_set_forget(&fx->clients, ws);
	ws_client_close(ws, CALL_MS);
	assert_true(sidecar_running(fx->base.sc, NULL));
	fx->base.passed++;
}

/* A backend that stops reading while it is the only puller: the send that
 * fails closes it, and the message waits for the next backend instead of
 * being lost (the browser is not told backend_unavailable). */
static void test_message_for_a_puller_that_left_waits(void **state)
{
	struct fixture *fx = *state;
	const char *user = "ib-left";
	wsgate_inbound *in;
	struct ws_client *ws;
	int fd;

	fd = raw_puller_open(fx->base.sc->inbound_url, false);
	ws = browser_open(fx, user);
	raw_puller_wait_for(fd, user); /* its opened notice: fd is a pipe */
	assert_int_equal(shutdown(fd, SHUT_RD), 0);

	assert_int_equal(ws_client_send_text(ws, "{\"n\":3}"), WS_CLIENT_OK);
	browser_sync(ws); /* a pong, not an error, answers the ping */
	raw_puller_wait_closed(fd);
	close(fd);
	expect_sidecar_alive(fx, "a pull peer stopped reading");

	assert_int_equal(wsgate_inbound_open(&in, fx->base.sc->inbound_url),
	                 WSGATE_OK);
	expect_inbound(in, WSGATE_INBOUND_CLIENT_MESSAGE, user, "{\"n\":3}");
	wsgate_inbound_close(in);
	ws_client_set_forget(&fx->clients, ws);
	ws_client_close(ws, CALL_MS);
	assert_true(sidecar_running(fx->base.sc, NULL));
	fx->base.passed++;
}

static int group_setup(void **state)
{
	return sidecar_fixture_setup(state, sizeof(struct fixture), NULL);
}

static int group_teardown(void **state)
{
	struct fixture *fx = *state;

	ws_client_set_abort_all(&fx->clients);
	return sidecar_fixture_teardown(state, N_TESTS);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_message_for_a_puller_that_left_waits),
	    cmocka_unit_test(test_puller_that_cannot_read_loses_nothing),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
