/*
 * sidecar_proc: starting, watching and stopping a real wsgate process for
 * integration tests (see sidecar_proc.h), and the small HTTP GET client the
 * tests use for /healthz, /metrics and refused handshakes.
 *
 * Readiness is a condition polled with a deadline (GET /healthz == 200, the
 * child still alive), never a fixed sleep; the process is started, waited
 * for and killed with child_proc's proc_spawn, proc_wait and proc_kill.
 */
#include "sidecar_proc.h"
#include "child_proc.h"
#include "test_clock.h"

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
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/rand.h>
#include <sqlite3.h>

#include "jwt_mint.h"
#include "test_dir.h"
#include "ws_client.h"

#ifndef WSGATE_BIN
#error "WSGATE_BIN (path of the built sidecar) must be defined by the build"
#endif

#define POLL_INTERVAL_MS 5
#define HTTP_MAX_HEAD    16384

static int remaining_ms(int64_t deadline)
{
	int64_t r = deadline - test_now_ms();

	return r < 0 ? 0 : (int)r;
}

uint16_t free_tcp_port(void)
{
	struct sockaddr_in sa = {.sin_family = AF_INET};
	socklen_t len = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	uint16_t port = 0;

	if (fd < 0)
		return 0;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
	    getsockname(fd, (struct sockaddr *)&sa, &len) == 0)
		port = ntohs(sa.sin_port);
	close(fd);
	return port;
}

/* --- HTTP GET --- */

struct growbuf {
	char *p;
	size_t len;
	size_t cap;
};

static int growbuf_reserve(struct growbuf *b, size_t extra)
{
	size_t need = b->len + extra + 1;
	size_t ncap = b->cap ? b->cap : 4096;
	char *np;

	if (need <= b->cap)
		return 0;
	while (ncap < need)
		ncap *= 2;
	np = realloc(b->p, ncap);
	if (!np)
		return -1;
	b->p = np;
	b->cap = ncap;
	return 0;
}

/* Decodes a chunked body. Returns 1 when complete (out gets the data), 0
 * when more bytes are needed, -1 when malformed. */
static int dechunk(const char *src, size_t len, struct growbuf *out)
{
	size_t pos = 0;

	out->len = 0;
	for (;;) {
		const char *eol = memmem(src + pos, len - pos, "\r\n", 2);
		char *end;
		unsigned long n;

		if (!eol)
			return 0;
		n = strtoul(src + pos, &end, 16);
		if (end == src + pos)
			return -1;
		pos = (size_t)(eol - src) + 2;
		if (n == 0)
			return 1; /* trailers are not needed */
		if (len - pos < n + 2)
			return 0;
		if (growbuf_reserve(out, n) < 0)
			return -1;
		memcpy(out->p + out->len, src + pos, n);
		out->len += n;
		out->p[out->len] = '\0';
		pos += n + 2;
	}
}

static int head_value(const char *head, const char *name, char *out,
                      size_t outlen)
{
	size_t nlen = strlen(name);

	for (const char *l = strstr(head, "\r\n"); l;
	     l = strstr(l + 2, "\r\n")) {
		const char *s = l + 2;

		if (strncasecmp(s, name, nlen) == 0 && s[nlen] == ':') {
			const char *v = s + nlen + 1;
			const char *e = strstr(v, "\r\n");
			size_t vlen;

			while (*v == ' ' || *v == '\t')
				v++;
			vlen = e ? (size_t)(e - v) : strlen(v);
			if (vlen >= outlen)
				vlen = outlen - 1;
			memcpy(out, v, vlen);
			out[vlen] = '\0';
			return 0;
		}
	}
	return -1;
}

int http_get(uint16_t port, const char *path, const char *const *headers,
             char **body, int timeout_ms)
{
	int64_t deadline = test_now_ms() + timeout_ms;
	struct sockaddr_in sa = {.sin_family = AF_INET,
	                         .sin_port = htons(port)};
	struct growbuf req = {0}, resp = {0}, chunked = {0};
	size_t head_len = 0, content_length = 0;
	bool have_length = false, is_chunked = false, done = false;
	int fd, status = -1;
	char value[64];

	if (body)
		*body = NULL;
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		goto out;
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);

	if (growbuf_reserve(&req, strlen(path) + 128) < 0)
		goto out;
	req.len = (size_t)snprintf(req.p, req.cap,
	                           "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%u\r\n"
	                           "Connection: close\r\n",
	                           path, port);
	for (size_t i = 0; headers && headers[i]; i++) {
		if (growbuf_reserve(&req, strlen(headers[i]) + 2) < 0)
			goto out;
		req.len += (size_t)snprintf(req.p + req.len, req.cap - req.len,
		                            "%s\r\n", headers[i]);
	}
	if (growbuf_reserve(&req, 2) < 0)
		goto out;
	req.len += (size_t)snprintf(req.p + req.len, req.cap - req.len, "\r\n");
	for (size_t off = 0; off < req.len;) {
		struct pollfd pfd = {.fd = fd, .events = POLLOUT};
		ssize_t n = send(fd, req.p + off, req.len - off, MSG_NOSIGNAL);

		if (n > 0) {
			off += (size_t)n;
			continue;
		}
		if (n < 0 && errno != EAGAIN && errno != EINTR)
			goto out;
		if (remaining_ms(deadline) == 0 ||
		    poll(&pfd, 1, remaining_ms(deadline)) < 0)
			goto out;
	}

	while (!done) {
		struct pollfd pfd = {.fd = fd, .events = POLLIN};
		ssize_t n;

		if (growbuf_reserve(&resp, 16384) < 0)
			goto out;
		n = recv(fd, resp.p + resp.len, 16384, 0);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN && errno != EWOULDBLOCK)
				goto out;
			if (remaining_ms(deadline) == 0)
				goto out;
			poll(&pfd, 1, remaining_ms(deadline));
			continue;
		}
		resp.len += (size_t)n;
		resp.p[resp.len] = '\0';
		if (!head_len) {
			char *end = strstr(resp.p, "\r\n\r\n");

			if (!end) {
				if (n == 0 || resp.len > HTTP_MAX_HEAD)
					goto out;
				continue;
			}
			head_len = (size_t)(end - resp.p) + 4;
			if (sscanf(resp.p, "HTTP/%*d.%*d %d", &status) != 1) {
				status = -1;
				goto out;
			}
			resp.p[head_len - 2] = '\0';
			if (head_value(resp.p, "Content-Length", value,
			               sizeof(value)) == 0) {
				have_length = true;
				content_length = strtoul(value, NULL, 10);
			}
			if (head_value(resp.p, "Transfer-Encoding", value,
			               sizeof(value)) == 0 &&
			    strcasecmp(value, "chunked") == 0)
				is_chunked = true;
		}
		if (is_chunked) {
			int r = dechunk(resp.p + head_len, resp.len - head_len,
			                &chunked);

			if (r < 0 || (r == 0 && n == 0)) {
				status = -1;
				goto out;
			}
			done = r == 1;
		} else if (have_length) {
			done = resp.len - head_len >= content_length;
			if (!done && n == 0) {
				status = -1;
				goto out;
			}
		} else {
			done = n == 0;
		}
	}
	if (body) {
		if (is_chunked) {
			*body = chunked.p ? chunked.p : strdup("");
			chunked.p = NULL;
		} else {
			size_t blen = resp.len - head_len;

			if (have_length && blen > content_length)
				blen = content_length;
			*body = malloc(blen + 1);
			if (*body) {
				memcpy(*body, resp.p + head_len, blen);
				(*body)[blen] = '\0';
			}
		}
	}
out:
	if (!done)
		status = -1;
	close(fd);
	free(req.p);
	free(resp.p);
	free(chunked.p);
	return status;
}

/* --- the process --- */

bool sidecar_running(struct sidecar *s, int *status)
{
	int st;

	if (s->pid <= 0)
		return false;
	st = proc_wait(s->pid, 0);
	if (st == PROC_RUNNING)
		return true;
	if (st >= 0 && status)
		*status = st;
	s->pid = 0;
	return false;
}

int64_t sidecar_db_int(const struct sidecar *s, const char *sql, const char *a,
                       const char *b)
{
	sqlite3 *db = NULL;
	sqlite3_stmt *st = NULL;
	int64_t v = -1;

	if (sqlite3_open_v2(s->db_path, &db, SQLITE_OPEN_READONLY, NULL) !=
	    SQLITE_OK) {
		fprintf(stderr, "open %s: %s\n", s->db_path,
		        sqlite3_errmsg(db));
		sqlite3_close(db);
		return -1;
	}
	sqlite3_busy_timeout(db, 2000);
	if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
		fprintf(stderr, "%s: %s\n", sql, sqlite3_errmsg(db));
		sqlite3_close(db);
		return -1;
	}
	if (a)
		sqlite3_bind_text(st, 1, a, -1, SQLITE_STATIC);
	if (b)
		sqlite3_bind_text(st, 2, b, -1, SQLITE_STATIC);
	if (sqlite3_step(st) == SQLITE_ROW &&
	    sqlite3_column_type(st, 0) != SQLITE_NULL)
		v = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	sqlite3_close(db);
	return v;
}

int64_t sidecar_db_wait(const struct sidecar *s, const char *sql, const char *a,
                        const char *b, int64_t want, int timeout_ms)
{
	int64_t deadline = test_now_ms() + timeout_ms, v;

	while ((v = sidecar_db_int(s, sql, a, b)) < want &&
	       test_now_ms() < deadline)
		test_pause_ms(POLL_INTERVAL_MS * 4);
	return v;
}

bool sidecar_log_contains(const struct sidecar *s, const char *text)
{
	FILE *f = fopen(s->log_path, "r");
	char line[1024];
	bool found = false;

	if (!f)
		return false;
	while (!found && fgets(line, sizeof(line), f))
		found = strstr(line, text) != NULL;
	fclose(f);
	return found;
}

int sidecar_fixture_setup(void **state, size_t size,
                          const char *const *extra_args)
{
	struct sidecar_fixture *fx = calloc(1, size);

	if (!fx)
		return -1;
	if (sidecar_start(&fx->sc, extra_args) != 0) {
		free(fx);
		return -1;
	}
	*state = fx;
	return 0;
}

int sidecar_fixture_teardown(void **state, int n_tests)
{
	struct sidecar_fixture *fx = *state;
	int rc = sidecar_finish(fx->sc, fx->passed == n_tests);

	free(fx);
	*state = NULL;
	return rc;
}

int sidecar_ctl(const struct sidecar *s, const char *args, char **out)
{
	char cmd[1024];
	size_t cap = 4096, len = 0, n;
	char *buf = malloc(cap);
	FILE *p;
	int status;

	snprintf(cmd, sizeof(cmd),
	         "%s --db %s --audit-key-file %s --control %s %s 2>&1",
	         WSGATECTL_BIN, s->db_path, s->audit_key_path, s->control_url,
	         args);
	if (!buf || !(p = popen(cmd, "r"))) {
		free(buf);
		if (out)
			*out = strdup("wsgatectl did not run");
		return -1;
	}
	while ((n = fread(buf + len, 1, cap - len - 1, p)) > 0) {
		len += n;
		if (cap - len < 2048) {
			char *more = realloc(buf, cap * 2);
			if (!more)
				break;
			buf = more;
			cap *= 2;
		}
	}
	buf[len] = '\0';
	while (fread(cmd, 1, sizeof(cmd), p) > 0)
		; /* the rest, if realloc failed: let it finish */
	status = pclose(p);
	if (out)
		*out = buf;
	else
		free(buf);
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

void sidecar_print_log(const struct sidecar *s, size_t max_bytes)
{
	FILE *f = fopen(s->log_path, "r");
	char buf[4096];
	long size;
	size_t n;

	if (!f) {
		fprintf(stderr, "  (no sidecar log at %s)\n", s->log_path);
		return;
	}
	fseek(f, 0, SEEK_END);
	size = ftell(f);
	if (size > (long)max_bytes)
		fseek(f, size - (long)max_bytes, SEEK_SET);
	else
		fseek(f, 0, SEEK_SET);
	fprintf(stderr, "--- %s (last %zu bytes) ---\n", s->log_path,
	        max_bytes);
	while ((n = fread(buf, 1, sizeof(buf), f)) > 0)
		fwrite(buf, 1, n, stderr);
	fprintf(stderr, "--- end of sidecar log ---\n");
	fclose(f);
}

/* Forks and execs the sidecar; returns 0 with s->pid set, or -1. */
static int spawn(struct sidecar *s)
{
	char listen[32];
	const char *argv[32 + SIDECAR_MAX_ARGS];
	size_t argc = 0;
	int logfd, nullfd;
	pid_t pid;

	snprintf(listen, sizeof(listen), "127.0.0.1:%u", s->port);
	/* WSGATE_TEST_VALGRIND: run the sidecar under memcheck; a definite
	 * leak or a memory error makes it exit 99, which the tests that
	 * check the exit status see. */
	const char *exe = WSGATE_BIN;
	if (getenv("WSGATE_TEST_VALGRIND")) {
		exe = "/usr/bin/valgrind";
		argv[argc++] = exe;
		argv[argc++] = "--quiet";
		argv[argc++] = "--leak-check=full";
		argv[argc++] = "--errors-for-leak-kinds=definite";
		argv[argc++] = "--error-exitcode=99";
	}
	argv[argc++] = WSGATE_BIN;
	argv[argc++] = "--listen";
	argv[argc++] = listen;
	argv[argc++] = "--control";
	argv[argc++] = s->control_url;
	argv[argc++] = "--inbound";
	argv[argc++] = s->inbound_url;
	argv[argc++] = "--db";
	argv[argc++] = s->db_path;
	argv[argc++] = "--audit-key-file";
	argv[argc++] = s->audit_key_path;
	argv[argc++] = "--jwt-secret-file";
	argv[argc++] = s->secret_path;
	argv[argc++] = "--log-level";
	argv[argc++] = "warn";
	for (size_t i = 0; s->extra_args[i]; i++)
		argv[argc++] = s->extra_args[i];
	argv[argc] = NULL;

	logfd =
	    open(s->log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	nullfd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (logfd < 0 || nullfd < 0) {
		fprintf(stderr, "sidecar: cannot open %s: %s\n", s->log_path,
		        strerror(errno));
		if (logfd >= 0)
			close(logfd);
		if (nullfd >= 0)
			close(nullfd);
		return -1;
	}
	pid = proc_spawn(argv, nullfd, logfd, logfd);
	close(logfd);
	close(nullfd);
	if (pid < 0) {
		fprintf(stderr, "sidecar: fork: %s\n", strerror(errno));
		return -1;
	}
	s->pid = pid;
	return 0;
}

/* Polls GET /healthz until 200, the child's exit, or the deadline. */
static int wait_ready(struct sidecar *s, int timeout_ms, int *exit_status)
{
	int64_t deadline = test_now_ms() + timeout_ms;

	*exit_status = -1;
	for (;;) {
		if (!sidecar_running(s, exit_status)) {
			fprintf(stderr,
			        "sidecar: exited with status %d before it was "
			        "ready\n",
			        *exit_status);
			return -1;
		}
		if (s->ready ? s->ready(s, s->ready_arg) == 1
		             : http_get(s->port, "/healthz", NULL, NULL,
		                        1000) == 200)
			return 0;
		if (remaining_ms(deadline) == 0) {
			fprintf(stderr, "sidecar: not ready within %d ms\n",
			        timeout_ms);
			return -1;
		}
		test_pause_ms(POLL_INTERVAL_MS);
	}
}

static int write_secret(struct sidecar *s)
{
	unsigned char raw[32];
	static const char hex[] = "0123456789abcdef";
	int fd;
	bool ok;

	if (RAND_bytes(raw, sizeof(raw)) != 1)
		return -1;
	for (size_t i = 0; i < sizeof(raw); i++) {
		s->secret[2 * i] = hex[raw[i] >> 4];
		s->secret[2 * i + 1] = hex[raw[i] & 15];
	}
	s->secret[64] = '\0';
	s->secret_len = 64;
	fd =
	    open(s->secret_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0)
		return -1;
	/* A trailing newline, as `openssl rand -hex 32` writes it: the
	 * sidecar must strip it. */
	ok = write(fd, s->secret, 64) == 64 && write(fd, "\n", 1) == 1;
	close(fd);
	return ok ? 0 : -1;
}

int sidecar_restart(struct sidecar *s)
{
	int exit_status;

	if (sidecar_running(s, NULL)) {
		fprintf(stderr, "sidecar: restart while pid %d runs\n",
		        (int)s->pid);
		return -1;
	}
	if (spawn(s) < 0)
		return -1;
	if (wait_ready(s, SIDECAR_READY_TIMEOUT_MS, &exit_status) < 0) {
		sidecar_print_log(s, 4096);
		return -1;
	}
	return 0;
}

int sidecar_run_to_exit(struct sidecar *s, int timeout_ms)
{
	if (sidecar_running(s, NULL) || spawn(s) < 0)
		return -1;
	return sidecar_wait(s, timeout_ms);
}

int sidecar_set_args(struct sidecar *s, const char *const *extra_args)
{
	size_t nargs = 0;

	for (size_t i = 0; s->extra_args[i]; i++) {
		free(s->extra_args[i]);
		s->extra_args[i] = NULL;
	}
	for (; extra_args && extra_args[nargs]; nargs++) {
		if (nargs == SIDECAR_MAX_ARGS) {
			fprintf(stderr, "sidecar: over %d extra arguments\n",
			        SIDECAR_MAX_ARGS);
			return -1;
		}
		s->extra_args[nargs] = strdup(extra_args[nargs]);
		if (!s->extra_args[nargs])
			return -1;
	}
	return 0;
}

int sidecar_start(struct sidecar **out, const char *const *extra_args)
{
	struct sidecar *s = calloc(1, sizeof(*s));

	*out = NULL;
	if (!s)
		return -1;
	if (test_dir_make(s->dir, sizeof(s->dir), "test")) {
		fprintf(stderr, "sidecar: mkdtemp: %s\n", strerror(errno));
		free(s);
		return -1;
	}
	snprintf(s->secret_path, sizeof(s->secret_path), "%s/jwt.secret",
	         s->dir);
	snprintf(s->log_path, sizeof(s->log_path), "%s/sidecar.log", s->dir);
	snprintf(s->db_path, sizeof(s->db_path), "%s/wsgate.db", s->dir);
	snprintf(s->audit_key_path, sizeof(s->audit_key_path), "%s/audit.key",
	         s->dir);
	snprintf(s->control_url, sizeof(s->control_url), "ipc://%s/control.ipc",
	         s->dir);
	snprintf(s->inbound_url, sizeof(s->inbound_url), "ipc://%s/inbound.ipc",
	         s->dir);
	if (sidecar_set_args(s, extra_args) < 0)
		goto fail;
	if (write_secret(s) < 0) {
		fprintf(stderr, "sidecar: cannot write %s\n", s->secret_path);
		goto fail;
	}
	/* The port was free when we looked; if someone took it meanwhile the
	 * sidecar exits at once and another port is tried. */
	for (int attempt = 0; attempt < 3; attempt++) {
		int exit_status;

		s->port = free_tcp_port();
		if (!s->port || spawn(s) < 0)
			goto fail;
		if (wait_ready(s, SIDECAR_READY_TIMEOUT_MS, &exit_status) ==
		    0) {
			*out = s;
			return 0;
		}
		if (s->pid > 0 || exit_status != 2)
			break;
	}
	sidecar_print_log(s, 4096);
fail:
	sidecar_free(s, true);
	return -1;
}

int sidecar_signal(struct sidecar *s, int sig)
{
	if (s->pid <= 0)
		return -1;
	return kill(s->pid, sig);
}

int sidecar_wait(struct sidecar *s, int timeout_ms)
{
	int status;

	if (s->pid <= 0)
		return -1;
	status = proc_wait(s->pid, timeout_ms);
	if (status == PROC_RUNNING) {
		fprintf(stderr, "sidecar: still running after %d ms; SIGKILL\n",
		        timeout_ms);
		return sidecar_kill9(s);
	}
	s->pid = 0;
	return status;
}

int sidecar_stop(struct sidecar *s, int timeout_ms)
{
	if (sidecar_signal(s, SIGTERM) < 0)
		return -1;
	return sidecar_wait(s, timeout_ms);
}

int sidecar_kill9(struct sidecar *s)
{
	int status;

	if (s->pid <= 0)
		return -1;
	status = proc_kill(s->pid);
	s->pid = 0;
	return status;
}

char *sidecar_token(const struct sidecar *s, const char *user, int64_t ttl_s)
{
	return jwt_mint_hs256(s->secret, s->secret_len, user,
	                      (int64_t)time(NULL), ttl_s);
}

struct ws_client *sidecar_ws_open(const struct sidecar *s, const char *user,
                                  int timeout_ms)
{
	char path[2048];
	struct ws_client *ws;
	char *token = sidecar_token(s, user, 600);
	char *first;
	int status;

	if (!token) {
		fprintf(stderr, "sidecar: cannot mint a token for %s\n", user);
		return NULL;
	}
	snprintf(path, sizeof(path), "/ws?access_token=%s", token);
	free(token);
	status = ws_client_connect(&ws, s->port, path, NULL, timeout_ms);
	if (status != 101) {
		fprintf(stderr, "sidecar: WebSocket of %s: %d (%s)\n", user,
		        status, ws_client_error());
		return NULL;
	}
	first = ws_client_recv_text(ws, timeout_ms);
	if (!first || !strstr(first, "\"type\":\"connected\"")) {
		fprintf(stderr, "sidecar: WebSocket of %s: first frame %s\n",
		        user, first ? first : ws_client_error());
		free(first);
		ws_client_abort(ws);
		return NULL;
	}
	free(first);
	return ws;
}

int sidecar_http_get(const struct sidecar *s, const char *path, char **body)
{
	return http_get(s->port, path, NULL, body, 5000);
}

int sidecar_finish(struct sidecar *s, bool passed)
{
	int status = s->pid > 0 ? sidecar_stop(s, SIDECAR_STOP_TIMEOUT_MS) : -1;

	if (status != 0)
		fprintf(stderr, "sidecar exited with status %d\n", status);
	sidecar_free(s, status != 0 || !passed);
	return status == 0 ? 0 : -1;
}

void sidecar_free(struct sidecar *s, bool failed)
{
	if (!s)
		return;
	if (s->pid > 0)
		sidecar_stop(s, SIDECAR_STOP_TIMEOUT_MS);
	if (failed || s->keep_dir || getenv("WSGATE_TEST_KEEP")) {
		fprintf(stderr, "sidecar: kept %s (log: %s)\n", s->dir,
		        s->log_path);
	} else if (s->dir[0]) {
		test_dir_remove(s->dir);
	}
	for (size_t i = 0; s->extra_args[i]; i++)
		free(s->extra_args[i]);
	free(s);
}
