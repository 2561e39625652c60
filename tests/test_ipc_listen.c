/*
 * test_ipc_listen: the sidecar's listeners survive connections that are
 * reset before the SP handshake (NNG 1.5.2 listener_accept_cb does not
 * re-arm accept after NNG_ECLOSED; see ipc/ipc_listen.h).
 *
 * One real sidecar process serves the file. Each test storms one of its
 * IPC sockets with plain Unix-socket connect()+close() (bounded), then
 * proves that a new backend can still use that socket: a libwsgate ping
 * for control, a client frame arriving at a libwsgate pull for inbound.
 * Every wait is polled against a deadline; nothing sleeps to synchronise.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "sidecar_proc.h"
#include "ws_client.h"
#include "wsgate.h"

#define STORM_CONNECTIONS 1000 /* old code: dead after a few dozen */
#define RECOVER_MS        6000 /* watchdog: about 2-4 s */
#define STORMS            5
#define CALL_MS           500 /* one ping, one inbound receive */
#define CONNECT_MS        5000
#define N_TESTS           2 /* the tests of main() */

/* One per file: the sidecar every test talks to. */
struct fixture {
	struct sidecar *sc;
	int passed; /* tests that reached their last line */
	char
	    lsan_supp[64]; /* suppression file of the sidecar's LeakSanitizer */
};

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* connect()+close() n times on the socket file of an ipc:// URL, never
 * sending a byte: each close races the listener's SP header. */
static void reset_storm(const char *url, int n)
{
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
		if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
			connected++;
		close(fd);
	}
	/* The storm must have reached the listener to prove anything. */
	assert_true(connected > n / 2);
}

/* Whether the sidecar's log holds text. */
static bool log_contains(const struct sidecar *sc, const char *text);

/* Polls the sidecar's log for the restart line of one listener: the storm
 * did kill it (else the test proves nothing about the bug), and the
 * watchdog restarted it. Backends are opened only after that: a client
 * whose connection NNG parked on the dead listener can hang in its own
 * nng_close later (NNG 1.5.2, client side; not the sidecar's to fix). */
static void storm_until_restart(const struct sidecar *sc, const char *url,
                                const char *line)
{
	/* The reset races the listener's header: a storm kills the accept
	 * loop nearly always, not always; a few storms make it certain. */
	for (int storm = 0; storm < STORMS; storm++) {
		reset_storm(url, STORM_CONNECTIONS);
		int64_t deadline = now_ms() + RECOVER_MS;
		while (now_ms() < deadline)
			if (log_contains(sc, line))
				return;
	}
	fail_msg("no '%s' in the sidecar log after %d storms", line, STORMS);
}

/* Whether the sidecar's log holds text. */
static bool log_contains(const struct sidecar *sc, const char *text)
{
	FILE *f = fopen(sc->log_path, "r");
	char line[1024];
	bool found = false;

	if (!f)
		return false;
	while (!found && fgets(line, sizeof(line), f))
		found = strstr(line, text) != NULL;
	fclose(f);
	return found;
}

static void test_control_accepts_backends_after_reset_storm(void **state)
{
	struct fixture *fx = *state;
	wsgate_client *c;
	enum wsgate_status st = WSGATE_ERR_TRANSPORT;
	int64_t deadline;

	storm_until_restart(fx->sc, fx->sc->control_url,
	                    "control: listener on");

	/* A backend that arrives after the storm. */
	assert_int_equal(wsgate_client_open(&c, fx->sc->control_url, CALL_MS),
	                 WSGATE_OK);
	deadline = now_ms() + RECOVER_MS;
	while (now_ms() < deadline && (st = wsgate_ping(c)) != WSGATE_OK)
		;
	if (st != WSGATE_OK)
		fail_msg("no ping within %d ms after the storm: %s", RECOVER_MS,
		         wsgate_client_error(c));
	wsgate_client_close(c);
	assert_true(sidecar_running(fx->sc, NULL));
	fx->passed++;
}

static void test_inbound_reaches_backends_after_reset_storm(void **state)
{
	struct fixture *fx = *state;
	struct wsgate_inbound_msg msg = {0};
	const char *user = "ln-inbound";
	char path[1024], frame[64];
	struct ws_client *ws;
	wsgate_inbound *in;
	char *token;
	bool arrived = false;
	int64_t deadline;

	storm_until_restart(fx->sc, fx->sc->inbound_url,
	                    "inbound: listener on");

	/* A backend that starts pulling after the storm, and a browser. */
	assert_int_equal(wsgate_inbound_open(&in, fx->sc->inbound_url),
	                 WSGATE_OK);
	token = sidecar_token(fx->sc, user, 600);
	assert_non_null(token);
	snprintf(path, sizeof(path), "/ws?access_token=%s", token);
	free(token);
	assert_int_equal(
	    ws_client_connect(&ws, fx->sc->port, path, NULL, CONNECT_MS), 101);

	/* Until the pull has a pipe the sidecar answers backend_unavailable,
	 * so the browser sends a numbered frame per attempt. */
	deadline = now_ms() + RECOVER_MS;
	for (int i = 0; !arrived && now_ms() < deadline; i++) {
		enum wsgate_status st;
		snprintf(frame, sizeof(frame), "{\"attempt\":%d}", i);
		assert_int_equal(ws_client_send_text(ws, frame), WS_CLIENT_OK);
		while (!arrived && (st = wsgate_inbound_recv(
		                        in, &msg, CALL_MS)) == WSGATE_OK) {
			arrived = msg.kind == WSGATE_INBOUND_CLIENT_MESSAGE &&
			          strcmp(msg.user_id, user) == 0;
			wsgate_inbound_msg_clear(&msg);
		}
	}
	if (!arrived)
		fail_msg("no client message on inbound within %d ms after "
		         "the storm",
		         RECOVER_MS);
	ws_client_abort(ws);
	wsgate_inbound_close(in);
	assert_true(sidecar_running(fx->sc, NULL));
	fx->passed++;
}

/*
 * NNG 1.5.2 never frees a closed listener's transport endpoint while it
 * holds connections that finished the SP handshake but were never
 * delivered to the socket -- exactly what a dead accept loop leaves behind
 * (ipc_ep_fini returns early on ep->ref_cnt, and those pipes are closed but
 * never reaped). The watchdog closes such a listener, so this test's
 * sidecar, in an ASan build, would report those NNG objects at exit. Only
 * allocations made inside libnng are suppressed, and only for the sidecar
 * of this test (LSAN_OPTIONS is read at start, so this process is not
 * affected); the sidecar's own allocations are still checked.
 */
static int suppress_nng_leaks(struct fixture *fx)
{
	static const char rule[] = "leak:libnng.so\n";
	const char *old = getenv("LSAN_OPTIONS");
	char opts[512];
	int fd;

	snprintf(fx->lsan_supp, sizeof(fx->lsan_supp),
	         "/tmp/wsgate-lsan-XXXXXX");
	if ((fd = mkstemp(fx->lsan_supp)) < 0)
		return -1;
	if (write(fd, rule, sizeof(rule) - 1) != (ssize_t)sizeof(rule) - 1) {
		close(fd);
		return -1;
	}
	close(fd);
	snprintf(opts, sizeof(opts), "%s%ssuppressions=%s:print_suppressions=0",
	         old ? old : "", old && *old ? ":" : "", fx->lsan_supp);
	return setenv("LSAN_OPTIONS", opts, 1);
}

static int group_setup(void **state)
{
	struct fixture *fx = calloc(1, sizeof(*fx));

	if (!fx)
		return -1;
	if (suppress_nng_leaks(fx) != 0 || sidecar_start(&fx->sc, NULL) != 0) {
		if (fx->lsan_supp[0])
			unlink(fx->lsan_supp);
		free(fx);
		return -1;
	}
	*state = fx;
	return 0;
}

/* A clean exit: 0 also means no sanitizer report from the sidecar. */
static int group_teardown(void **state)
{
	struct fixture *fx = *state;
	int status = sidecar_stop(fx->sc, SIDECAR_STOP_TIMEOUT_MS);

	if (status != 0)
		fprintf(stderr, "sidecar exited with status %d\n", status);
	sidecar_free(fx->sc, status != 0 || fx->passed != N_TESTS);
	unlink(fx->lsan_supp);
	free(fx);
	return status == 0 ? 0 : -1;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_control_accepts_backends_after_reset_storm),
	    cmocka_unit_test(test_inbound_reaches_backends_after_reset_storm),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
