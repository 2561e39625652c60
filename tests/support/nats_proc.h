/*
 * nats_proc: a real nats-server with JetStream for the cluster tests and
 * the cluster benchmark, on 127.0.0.1 and a random port, with its store in
 * a private temporary directory.
 *
 * nats_proc_start runs `nats-server -js -a 127.0.0.1 -p -1 -sd DIR
 * --ports_file_dir DIR`, reads the port from DIR/nats-server_<pid>.ports
 * and returns once the server answers a client with an INFO line that
 * says JetStream is on. The test may then kill -9 it, stop it and start it
 * again on the same port and store (so that the sidecars' reconnects find
 * it, with every stored message), and finally frees it, which stops the
 * process and removes the directory (kept, with its log path printed, when
 * the test says it failed or WSGATE_TEST_KEEP is set). Never port 4222:
 * the package's systemd unit may own it.
 */
#ifndef WSGATE_TEST_NATS_PROC_H
#define WSGATE_TEST_NATS_PROC_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#define NATS_READY_TIMEOUT_MS 10000
#define NATS_STOP_TIMEOUT_MS  10000

struct nats_proc {
	char dir[64];      /* store dir (DIR/jetstream) and ports file */
	char log_path[96]; /* stdout and stderr, appended across restarts */
	char url[48];      /* nats://127.0.0.1:PORT */
	uint16_t port;
	pid_t pid; /* 0 when not running */
};

/* The path of the nats-server executable (PATH, then /usr/sbin), or NULL
 * when it is not installed: the caller skips then, saying why. */
const char *nats_proc_binary(void);

/* Starts a fresh server. Returns 0 and sets *out, or -1 after printing
 * why (and the log tail) on stderr. */
int nats_proc_start(struct nats_proc **out);

/* SIGKILL and reap: a crash. Returns 128 + 9, or -1 when not running. */
int nats_proc_kill9(struct nats_proc *n);

/* SIGSTOP (frozen) or SIGCONT: a server that neither answers nor closes
 * its connections, as a hung host looks to the sidecars. A freeze returns
 * once every thread of the server is stopped. The caller thaws it before
 * any stop or free. Returns 0, or -1 when not running (or, frozen, not
 * stopped within NATS_STOP_TIMEOUT_MS). */
int nats_proc_freeze(struct nats_proc *n, bool frozen);

/* SIGTERM, waits up to timeout_ms (then SIGKILL). Returns the exit status
 * or 128 + signal, -1 when not running. */
int nats_proc_stop(struct nats_proc *n, int timeout_ms);

/* Starts the server again on the same port and store directory after a
 * stop or kill; returns 0 once JetStream answers, -1 otherwise. */
int nats_proc_restart(struct nats_proc *n);

/* Whether the process still runs (reaps it when it has exited). */
bool nats_proc_running(struct nats_proc *n);

/* Stops the process if it runs and frees n; the directory is removed
 * unless failed or WSGATE_TEST_KEEP (then its path is printed). NULL is a
 * no-op. */
void nats_proc_free(struct nats_proc *n, bool failed);

#endif
