/*
 * test_refused_handshakes: how a real sidecar answers the WebSocket
 * upgrades it refuses, byte for byte as a strict client reads them: an
 * HTTP/1.1 status line (never HTTP/1.0 to an HTTP/1.1 request), a text
 * body naming the reason, a Content-Length that matches it, and
 * "Connection: close" followed by the end of the connection.
 *
 * The requests are written on raw TCP sockets so that nothing between the
 * test and the sidecar normalises the answer. One sidecar, with an origin
 * allowlist, --max-conns-per-user 1 and --max-conns 2, serves every kind of
 * refusal; another one is shut down while it serves, for the 503.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "event_flood.h"
#include "sidecar_proc.h"
#include "test_clock.h"
#include "ws_client.h"
#include "wsgate.h"

#define RECV_MS   5000  /* one answer */
#define POLL_MS   10000 /* a polled condition */
#define ORIGIN_OK "https://ok.example"
#define RESP_MAX  8192

#define FILL_EVENT_BYTES 32768
#define FILL_BATCH       16
#define FILL_MAX_EVENTS  1600 /* 50 MiB: far past any socket buffer */

/* An upgrade request for path with one extra header line (or NULL). */
static char *upgrade_request(uint16_t port, const char *path,
                             const char *upgrade, const char *origin,
                             const char *extra)
{
	char *req = NULL;
	int n = asprintf(&req,
	                 "GET %s HTTP/1.1\r\n"
	                 "Host: 127.0.0.1:%u\r\n"
	                 "Upgrade: %s\r\n"
	                 "Connection: Upgrade\r\n"
	                 "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
	                 "Sec-WebSocket-Version: 13\r\n"
	                 "Origin: %s\r\n"
	                 "%s%s\r\n",
	                 path, port, upgrade, origin, extra ? extra : "",
	                 extra ? "\r\n" : "");
	assert_true(n > 0);
	return req;
}

/*
 * Sends req on a new connection and reads the answer. until_eof: read
 * until the sidecar closes (a refusal); otherwise until the end of the
 * head (a 101). Returns the malloc'd answer, or NULL when the connection
 * could not be made (the sidecar is gone); fails the test on a timeout.
 */
static char *raw_exchange(uint16_t port, const char *req, int until_eof)
{
	struct sockaddr_in sa = {.sin_family = AF_INET,
	                         .sin_port = htons(port)};
	int64_t deadline = test_now_ms() + RECV_MS;
	char *buf = calloc(1, RESP_MAX + 1);
	size_t got = 0;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	assert_non_null(buf);
	assert_true(fd >= 0);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		close(fd);
		free(buf);
		return NULL;
	}
	if (send(fd, req, strlen(req), MSG_NOSIGNAL) != (ssize_t)strlen(req)) {
		close(fd);
		free(buf);
		return NULL;
	}
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
	for (;;) {
		struct pollfd pfd = {.fd = fd, .events = POLLIN};
		int64_t left = deadline - test_now_ms();
		ssize_t n;

		if (!until_eof && strstr(buf, "\r\n\r\n"))
			break;
		if (left <= 0)
			fail_msg("no %s within %d ms; got: %s",
			         until_eof ? "end of connection" : "answer",
			         RECV_MS, buf);
		poll(&pfd, 1, (int)left);
		n = recv(fd, buf + got, RESP_MAX - got, 0);
		if (n == 0)
			break;
		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR)
				continue;
			if (errno == ECONNRESET && got)
				break;
			fail_msg("recv: %s after %zu bytes; request: %.80s",
			         strerror(errno), got, req);
		}
		got += (size_t)n;
		if (got == RESP_MAX)
			fail_msg("answer over %d bytes", RESP_MAX);
	}
	close(fd);
	return buf;
}

/* The value of header name in the head of resp, or "" (static buffer). */
static const char *header_value(const char *resp, const char *name)
{
	static char value[256];
	size_t nlen = strlen(name);
	const char *end = strstr(resp, "\r\n\r\n");

	value[0] = '\0';
	for (const char *l = strstr(resp, "\r\n"); l && l < end;
	     l = strstr(l + 2, "\r\n")) {
		const char *s = l + 2;

		if (strncasecmp(s, name, nlen) == 0 && s[nlen] == ':') {
			const char *v = s + nlen + 1;
			size_t vlen;

			while (*v == ' ')
				v++;
			vlen = strcspn(v, "\r");
			if (vlen >= sizeof(value))
				vlen = sizeof(value) - 1;
			memcpy(value, v, vlen);
			value[vlen] = '\0';
			break;
		}
	}
	return value;
}

/* resp is a whole refusal: status, body (without its newline), length,
 * Connection: close, and nothing after the body. */
static void expect_refusal(const char *resp, int status, const char *body)
{
	char line[64];
	const char *end = strstr(resp, "\r\n\r\n");
	const char *got_body;

	if (!end)
		fail_msg("no complete head: %s", resp);
	snprintf(line, sizeof(line), "HTTP/1.1 %d ", status);
	if (strncmp(resp, line, strlen(line)) != 0)
		fail_msg("want a status line starting \"%s\", got: %.*s", line,
		         (int)strcspn(resp, "\r"), resp);
	got_body = end + 4;
	if (strcasecmp(header_value(resp, "Connection"), "close") != 0)
		fail_msg("%d without Connection: close: %s", status, resp);
	if (strtoul(header_value(resp, "Content-Length"), NULL, 10) !=
	    strlen(got_body))
		fail_msg("Content-Length %s, body of %zu bytes: %s",
		         header_value(resp, "Content-Length"), strlen(got_body),
		         resp);
	if (strncmp(got_body, body, strlen(body)) != 0 ||
	    strcmp(got_body + strlen(body), "\n") != 0)
		fail_msg("%d: want body \"%s\\n\", got \"%s\"", status, body,
		         got_body);
}

static void refused(const struct sidecar *sc, const char *path,
                    const char *upgrade, const char *origin, const char *extra,
                    int status, const char *body)
{
	char *req = upgrade_request(sc->port, path, upgrade, origin, extra);
	char *resp = raw_exchange(sc->port, req, 1);

	assert_non_null(resp);
	expect_refusal(resp, status, body);
	free(resp);
	free(req);
}

static char *token_path(const struct sidecar *sc, const char *user,
                        const char *query)
{
	char *tok = sidecar_token(sc, user, 600);
	char *path = NULL;

	assert_non_null(tok);
	assert_true(asprintf(&path, "/ws?access_token=%s%s", tok,
	                     query ? query : "") > 0);
	free(tok);
	return path;
}

static struct ws_client *open_user(const struct sidecar *sc, const char *user,
                                   int rcvbuf)
{
	static const char *const hdr[] = {"Origin: " ORIGIN_OK, NULL};
	char *path = token_path(sc, user, NULL);
	struct ws_client *c = NULL;
	int st =
	    ws_client_connect_rcvbuf(&c, sc->port, path, hdr, rcvbuf, RECV_MS);

	free(path);
	if (st != 101)
		fail_msg("%s: handshake %d (%s)", user, st, ws_client_error());
	return c;
}

static long metrics_connections(const struct sidecar *sc)
{
	char *body = NULL;
	long n = -1;

	if (sidecar_http_get(sc, "/metrics", &body) == 200) {
		const char *p = strstr(body, "\nwsgate_connections ");
		if (p)
			n = strtol(p + strlen("\nwsgate_connections "), NULL,
			           10);
	}
	free(body);
	return n;
}

static void test_refusals_are_http_1_1_with_reason_and_close(void **state)
{
	static const char *const args[] = {"--allowed-origin",
	                                   ORIGIN_OK,
	                                   "--max-conns-per-user",
	                                   "1",
	                                   "--max-conns",
	                                   "2",
	                                   NULL};
	struct sidecar *sc;
	struct ws_client *a1, *b1;
	char *path, *req, *resp;
	int64_t deadline;

	(void)state;
	assert_int_equal(sidecar_start(&sc, args), 0);

	/* The Upgrade token is case-insensitive: accepted, then gone. */
	path = token_path(sc, "rf-case", NULL);
	req = upgrade_request(sc->port, path, "WebSocket", ORIGIN_OK, NULL);
	resp = raw_exchange(sc->port, req, 0);
	assert_non_null(resp);
	if (strncmp(resp, "HTTP/1.1 101 ", 13) != 0)
		fail_msg("Upgrade: WebSocket: %.*s", (int)strcspn(resp, "\r"),
		         resp);
	free(resp);
	free(req);
	free(path);
	deadline = test_now_ms() + POLL_MS;
	while (metrics_connections(sc) != 0 && test_now_ms() < deadline)
		test_pause_ms(20);
	assert_int_equal(metrics_connections(sc), 0);

	/* 401: a token that is not one. */
	refused(sc, "/ws?access_token=abc", "websocket", ORIGIN_OK, NULL, 401,
	        "malformed");
	refused(sc, "/ws", "websocket", ORIGIN_OK,
	        "Authorization: Bearer x.y.z", 401, "malformed");
	/* 400: a since that is not a position; an upgrade to something else. */
	path = token_path(sc, "rf-since", "&since=abc");
	refused(sc, path, "websocket", ORIGIN_OK, NULL, 400,
	        "since: not an integer >= 0");
	free(path);
	path = token_path(sc, "rf-h2c", NULL);
	refused(sc, path, "h2c", ORIGIN_OK, "HTTP2-Settings: AAMAAABkAAQAAP__",
	        400, "not a websocket upgrade");
	refused(sc, "/elsewhere", "websocket", ORIGIN_OK, NULL, 404,
	        "not found");
	free(path);
	/* 403: an origin not on the list. */
	path = token_path(sc, "rf-origin", NULL);
	refused(sc, path, "websocket", "https://evil.example", NULL, 403,
	        "origin not allowed");
	free(path);

	/* 429: the user's one connection is open; then --max-conns. */
	a1 = open_user(sc, "rf-a", 0);
	path = token_path(sc, "rf-a", NULL);
	refused(sc, path, "websocket", ORIGIN_OK, NULL, 429,
	        "too many connections");
	free(path);
	b1 = open_user(sc, "rf-b", 0);
	path = token_path(sc, "rf-c", NULL);
	refused(sc, path, "websocket", ORIGIN_OK, NULL, 429,
	        "too many connections (global)");

	free(path);
	ws_client_abort(a1);
	ws_client_abort(b1);
	sidecar_free(sc, false);
}

/*
 * 503 while the sidecar shuts down. Its drain waits for the close of a
 * connection that cannot be written to (the client reads nothing and its
 * buffers are full), which keeps the sidecar serving for a while: before
 * the drain a handshake gets 429 (--max-conns 1, taken), during it 503,
 * after it no connection at all.
 */
static void test_handshake_while_shutting_down_gets_503(void **state)
{
	static const char *const args[] = {"--max-conns", "1", "--queue-limit",
	                                   "64M", NULL};
	struct sidecar *sc;
	wsgate_client *backend;
	struct ws_client *stuck;
	char *path, *req, *resp, err[300];
	int64_t deadline;
	int saw_503 = 0, tries = 0, sent = 0;

	(void)state;
	assert_int_equal(sidecar_start(&sc, args), 0);
	assert_int_equal(wsgate_client_open(&backend, sc->control_url, RECV_MS),
	                 WSGATE_OK);
	stuck = open_user(sc, "rf-stuck", 4096);
	if (event_flood_until_stuck(backend, "rf-stuck", FILL_BATCH,
	                            FILL_EVENT_BYTES, FILL_MAX_EVENTS, &sent,
	                            err, sizeof(err)))
		fail_msg("%s", err);

	path = token_path(sc, "rf-late", NULL);
	req = upgrade_request(sc->port, path, "websocket", ORIGIN_OK, NULL);
	assert_int_equal(sidecar_signal(sc, SIGTERM), 0);
	deadline = test_now_ms() + POLL_MS;
	while (!saw_503 && test_now_ms() < deadline) {
		resp = raw_exchange(sc->port, req, 1);
		tries++;
		if (!resp)
			break; /* gone */
		if (strncmp(resp, "HTTP/1.1 503 ", 13) == 0) {
			expect_refusal(resp, 503, "shutting down");
			saw_503 = 1;
		} else {
			expect_refusal(resp, 429,
			               "too many connections (global)");
		}
		free(resp);
	}
	free(req);
	free(path);
	if (!saw_503)
		fail_msg("no 503 while shutting down (%d handshakes)", tries);
	assert_int_equal(sidecar_wait(sc, SIDECAR_STOP_TIMEOUT_MS), 0);
	ws_client_abort(stuck);
	wsgate_client_close(backend);
	sidecar_free(sc, false);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_refusals_are_http_1_1_with_reason_and_close),
	    cmocka_unit_test(test_handshake_while_shutting_down_gets_503),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
