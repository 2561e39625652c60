/*
 * sidecar_proc: a real wsgate process for an integration test.
 *
 * sidecar_start makes a private temporary directory holding everything the
 * process uses (HS256 secret, control and inbound IPC sockets, database,
 * audit key, log), picks a free TCP port, starts WSGATE_BIN on them and
 * returns once GET /healthz answers 200. The test then mints tokens for
 * users, talks to the process over WebSocket, libwsgate or HTTP, may stop,
 * kill or restart it on the same directory, and finally frees it, which
 * stops the process and removes the directory (kept, with its log path
 * printed, when the test says it failed or WSGATE_TEST_KEEP is set).
 *
 * The sidecar runs with --log-level warn; its stdout and stderr go to
 * DIR/sidecar.log (appended across restarts).
 */
#ifndef WSGATE_TEST_SIDECAR_PROC_H
#define WSGATE_TEST_SIDECAR_PROC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct ws_client;

#define SIDECAR_READY_TIMEOUT_MS 10000
#define SIDECAR_STOP_TIMEOUT_MS  10000
#define SIDECAR_MAX_ARGS         32

/* One of these per started sidecar; the paths stay valid until
 * sidecar_free, across restarts. */
struct sidecar {
	char dir[64];
	char secret_path[96];
	char log_path[96];
	char db_path[96];
	char audit_key_path[96];
	char control_url[112];
	char inbound_url[112];
	uint16_t port;
	pid_t pid;       /* 0 when not running */
	char secret[65]; /* the HS256 key: 64 hex characters */
	size_t secret_len;
	char *extra_args[SIDECAR_MAX_ARGS + 1]; /* copies, NULL-terminated */
	bool keep_dir;
	/* Readiness (NULL: GET /healthz answers 200); 1 when ready. */
	int (*ready)(const struct sidecar *s, void *arg);
	void *ready_arg;
};

/* Starts a sidecar with the standard flags plus extra_args (NULL or a
 * NULL-terminated list, e.g. {"--max-conns-per-user", "2", NULL}).
 * Returns 0 and sets *out, or -1 after printing why (and the log tail) on
 * stderr. */
int sidecar_start(struct sidecar **out, const char *const *extra_args);

/* Starts the process again on the same directory, port and arguments.
 * Returns 0 once it is ready, -1 otherwise. The previous process must have
 * been stopped or killed. */
int sidecar_restart(struct sidecar *s);

/* Starts the process again on the same directory, port and arguments, for
 * a start that must fail: waits up to timeout_ms for it to exit and
 * returns like sidecar_wait (SIGKILL after timeout_ms: 137). -1 if the
 * previous process still runs or the new one cannot be started. */
int sidecar_run_to_exit(struct sidecar *s, int timeout_ms);

/* Replaces the extra arguments of the next sidecar_restart (e.g. flags
 * naming files made in s->dir). 0, or -1 when there are too many. */
int sidecar_set_args(struct sidecar *s, const char *const *extra_args);

/* SIGTERM, then sidecar_wait. */
int sidecar_stop(struct sidecar *s, int timeout_ms);

/* Sends sig to the process; 0 or -1 (not running). */
int sidecar_signal(struct sidecar *s, int sig);

/* Waits up to timeout_ms for the process to exit (SIGKILL after that).
 * Returns the exit status (0-255), 128 + signal when it died of a signal,
 * or -1. */
int sidecar_wait(struct sidecar *s, int timeout_ms);

/* SIGKILL and reap: a crash. Returns like sidecar_stop. */
int sidecar_kill9(struct sidecar *s);

/* Whether the process is still running (reaps it if it has exited; then
 * *status, if not NULL, gets what sidecar_stop would return). */
bool sidecar_running(struct sidecar *s, int *status);

/* A valid HS256 token for user, issued now and expiring in ttl_s seconds.
 * malloc'd; NULL on failure. */
char *sidecar_token(const struct sidecar *s, const char *user, int64_t ttl_s);

/* A browser of user: a WebSocket to the sidecar with a fresh token in
 * ?access_token=, returned once its first frame, {"type":"connected",...},
 * has arrived (within timeout_ms for each step). NULL after printing why
 * on stderr. */
struct ws_client *sidecar_ws_open(const struct sidecar *s, const char *user,
                                  int timeout_ms);

/* GET path on the sidecar's HTTP port; see http_get. */
int sidecar_http_get(const struct sidecar *s, const char *path, char **body);

/* Stops the process if it still runs and frees s. The directory is removed
 * unless failed is true, s->keep_dir is set or WSGATE_TEST_KEEP is in the
 * environment; then its path and the log's path are printed on stderr. */
void sidecar_free(struct sidecar *s, bool failed);

/* The end of a test file's sidecar: stops it if it still runs, then
 * sidecar_free (the directory is kept unless passed and it exited 0).
 * Returns 0 when it exited with status 0, which under a sanitizer or
 * valgrind also means no report; else -1 after printing the status (a
 * sidecar that died earlier is a failure too). */
int sidecar_finish(struct sidecar *s, bool passed);

/* The start of the cmocka group fixture of a test file with one sidecar
 * for all its tests: struct fixture { struct sidecar_fixture base; ... }. */
struct sidecar_fixture {
	struct sidecar *sc;
	int passed; /* tests that reached their last line */
};

/* Group setup: *state = a zeroed fixture of size bytes (starting with a
 * struct sidecar_fixture) whose sidecar runs with extra_args. 0, or -1
 * with nothing left behind. */
int sidecar_fixture_setup(void **state, size_t size,
                          const char *const *extra_args);
/* Group teardown: sidecar_finish (passed when base.passed == n_tests: a
 * clean exit, which also means no sanitizer report from the sidecar),
 * then frees the fixture. Returns 0, or -1 like sidecar_finish. */
int sidecar_fixture_teardown(void **state, int n_tests);

/* The first column of the first row that sql (with up to two text
 * parameters, a and b, or NULL) returns from the sidecar's database,
 * opened read-only; -1 when there is no row or the value is NULL, and on
 * an error (printed on stderr). */
int64_t sidecar_db_int(const struct sidecar *s, const char *sql, const char *a,
                       const char *b);
/* Polls sidecar_db_int until it returns at least want, for up to
 * timeout_ms (the store writes a moment after the fact); returns the last
 * value. */
int64_t sidecar_db_wait(const struct sidecar *s, const char *sql, const char *a,
                        const char *b, int64_t want, int timeout_ms);

/* Runs WSGATECTL_BIN with args (e.g. "verify") against s's database,
 * audit key and control socket; returns its exit status (-1 when it could
 * not run or died of a signal) and, if out is not NULL, its stdout and
 * stderr (or why it did not run) in *out, malloc'd. */
int sidecar_ctl(const struct sidecar *s, const char *args, char **out);

/* Prints the last lines of the sidecar's log on stderr. */
void sidecar_print_log(const struct sidecar *s, size_t max_bytes);
/* Whether a line of the sidecar's log contains text. */
bool sidecar_log_contains(const struct sidecar *s, const char *text);

/* GET http://127.0.0.1:port/path with "Connection: close" and optional
 * extra header lines (NULL-terminated, without CRLF). Returns the HTTP
 * status, or -1 on a transport error or timeout. If body is not NULL it
 * gets the malloc'd, NUL-terminated body (Content-Length, chunked, or up to
 * EOF). */
int http_get(uint16_t port, const char *path, const char *const *headers,
             char **body, int timeout_ms);

/* A TCP port on 127.0.0.1 that was free a moment ago; 0 on failure. */
uint16_t free_tcp_port(void);

#endif
