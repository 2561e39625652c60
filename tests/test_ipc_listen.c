/*
 * test_ipc_listen: the sidecar's IPC listeners (sidecar/sp_server.c) keep
 * serving through storms of connections that never become backends --
 * reset before the SP header exchange (what killed NNG 1.5.2's accept loop
 * for good), or sending a wrong header.
 *
 * One real sidecar process serves the file. Each test storms one of its
 * IPC sockets with plain Unix-socket connections (bounded), then proves
 * that a new backend can use that socket at once: a libwsgate ping for
 * control, a client frame arriving at a libwsgate pull for inbound.
 * Every wait is polled against a deadline; nothing sleeps to synchronise.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "child_proc.h"
#include "test_clock.h"
#include "sidecar_proc.h"
#include "ws_client.h"
#include "wsgate.h"

#define STORM_CONNECTIONS 1000 /* NNG 1.5.2's listener: dead after dozens */
#define RECOVER_MS        6000
#define CALL_MS           500 /* one ping, one inbound receive */
#define CONNECT_MS        5000
#define N_TESTS           2 /* the tests of main() */

/* One per file: the sidecar every test talks to. */
/* n connections to the socket file of an ipc:// URL: even ones close
 * at once, never sending a byte (each close races the listener's SP
 * header); odd ones send a header of a protocol nobody speaks first. */
static void reset_storm(const char *url, int n)
{
	static const char bad_header[8] = {0, 'S', 'P', 0, 0x7f, 0x7f, 0, 0};
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	struct timeval tv = {.tv_sec = 1};
	int connected = 0;

	assert_true(strncmp(url, "ipc://", 6) == 0);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", url + 6);
	for (int i = 0; i < n; i++) {
		int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		assert_true(fd >= 0);
		/* Bounds a connect to a full backlog. */
		setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
		if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
			connected++;
			if (i % 2 && send(fd, bad_header, sizeof(bad_header),
			                  MSG_NOSIGNAL) < 0)
				connected--;
		}
		close(fd);
	}
	/* The storm must have reached the listener to prove anything. */
	assert_true(connected > n / 2);
}

static void test_control_accepts_backends_after_reset_storm(void **state)
{
	struct sidecar_fixture *fx = *state;
	wsgate_client *c;
	enum wsgate_status st = WSGATE_ERR_TRANSPORT;
	int64_t deadline;

	reset_storm(fx->sc->control_url, STORM_CONNECTIONS);

	/* A backend that arrives after the storm. */
	assert_int_equal(wsgate_client_open(&c, fx->sc->control_url, CALL_MS),
	                 WSGATE_OK);
	deadline = test_now_ms() + RECOVER_MS;
	while (test_now_ms() < deadline && (st = wsgate_ping(c)) != WSGATE_OK)
		;
	if (st != WSGATE_OK)
		fail_msg("no ping within %d ms after the storm: %s", RECOVER_MS,
		         wsgate_client_error(c));
	wsgate_client_close(c);
	assert_true(sidecar_running(fx->sc, NULL));
	fx->passed++;
}

/*
 * Child mode "--inbound-backend URL USER": a backend that pulls from the
 * inbound socket and writes "ok" to stdout when a client message of USER
 * arrives (within RECOVER_MS), then exits.
 */
static int inbound_backend(const char *url, const char *user)
{
	struct wsgate_inbound_msg msg = {0};
	wsgate_inbound *in;
	int64_t deadline = test_now_ms() + RECOVER_MS;

	if (wsgate_inbound_open(&in, url) != WSGATE_OK)
		_exit(2);
	while (test_now_ms() < deadline) {
		if (wsgate_inbound_recv(in, &msg, CALL_MS) != WSGATE_OK)
			continue;
		bool mine = msg.kind == WSGATE_INBOUND_CLIENT_MESSAGE &&
		            strcmp(msg.user_id, user) == 0;
		wsgate_inbound_msg_clear(&msg);
		if (mine) {
			if (write(1, "ok\n", 3) != 3)
				_exit(2);
			_exit(0);
		}
	}
	_exit(1);
}

static char self_exe[512];

static void test_inbound_reaches_backends_after_reset_storm(void **state)
{
	struct sidecar_fixture *fx = *state;
	const char *user = "ln-inbound";
	const char *argv[] = {self_exe, "--inbound-backend",
	                      fx->sc->inbound_url, user, NULL};
	char path[1024], frame[64], got[4] = "";
	struct ws_client *ws;
	char *token;
	int fds[2], wstatus;
	int64_t deadline;
	pid_t pid;

	reset_storm(fx->sc->inbound_url, STORM_CONNECTIONS);

	/* A backend that starts pulling after the storm, and a browser. */
	assert_int_equal(pipe2(fds, O_CLOEXEC), 0);
	pid = proc_spawn(argv, -1, fds[1], -1);
	close(fds[1]);
	assert_true(pid > 0);
	token = sidecar_token(fx->sc, user, 600);
	assert_non_null(token);
	snprintf(path, sizeof(path), "/ws?access_token=%s", token);
	free(token);
	assert_int_equal(
	    ws_client_connect(&ws, fx->sc->port, path, NULL, CONNECT_MS), 101);

	/* Until the pull has a pipe the sidecar answers backend_unavailable,
	 * so the browser sends a numbered frame per attempt. */
	deadline = test_now_ms() + RECOVER_MS;
	for (int i = 0; got[0] == '\0' && test_now_ms() < deadline; i++) {
		struct pollfd pfd = {.fd = fds[0], .events = POLLIN};
		snprintf(frame, sizeof(frame), "{\"attempt\":%d}", i);
		assert_int_equal(ws_client_send_text(ws, frame), WS_CLIENT_OK);
		if (poll(&pfd, 1, CALL_MS) == 1 && read(fds[0], got, 3) != 3)
			got[0] = '\0';
	}
	ws_client_abort(ws);
	close(fds[0]);
	if (got[0] == '\0')
		kill(pid, SIGKILL);
	waitpid(pid, &wstatus, 0);
	if (strncmp(got, "ok", 2) != 0)
		fail_msg("no client message on inbound within %d ms after "
		         "the storm",
		         RECOVER_MS);
	assert_true(WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0);
	assert_true(sidecar_running(fx->sc, NULL));
	fx->passed++;
}

static int group_setup(void **state)
{
	return sidecar_fixture_setup(state, sizeof(struct sidecar_fixture),
	                             NULL);
}

static int group_teardown(void **state)
{
	return sidecar_fixture_teardown(state, N_TESTS);
}

int main(int argc, char **argv)
{
	if (argc == 4 && strcmp(argv[1], "--inbound-backend") == 0)
		return inbound_backend(argv[2], argv[3]);
	ssize_t n = readlink("/proc/self/exe", self_exe, sizeof(self_exe) - 1);
	if (n <= 0)
		return 2;
	self_exe[n] = '\0';
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_control_accepts_backends_after_reset_storm),
	    cmocka_unit_test(test_inbound_reaches_backends_after_reset_storm),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
