/*
 * nats_proc: starting, crashing, restarting and removing a real
 * nats-server with JetStream for the cluster tests (see nats_proc.h).
 *
 * Readiness is polled with a deadline, never a fixed sleep: first the
 * ports file the server writes once it listens (the random port), then a
 * client connection whose INFO line must say "jetstream":true. The process
 * is started, waited for and killed with child_proc's helpers.
 */
#include "nats_proc.h"
#include "child_proc.h"
#include "test_clock.h"
#include "test_dir.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define POLL_INTERVAL_MS 10

const char *nats_proc_binary(void)
{
	static const char *const dirs[] = {"/usr/local/bin", "/usr/bin",
	                                   "/usr/sbin", "/usr/local/sbin"};
	static char found[256];
	const char *path = getenv("PATH");

	/* PATH first (a newer server installed by hand wins). */
	while (path && *path) {
		const char *colon = strchr(path, ':');
		size_t len = colon ? (size_t)(colon - path) : strlen(path);

		if (len && len < sizeof(found) - 16) {
			snprintf(found, sizeof(found), "%.*s/nats-server",
			         (int)len, path);
			if (access(found, X_OK) == 0)
				return found;
		}
		path = colon ? colon + 1 : NULL;
	}
	for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
		snprintf(found, sizeof(found), "%s/nats-server", dirs[i]);
		if (access(found, X_OK) == 0)
			return found;
	}
	return NULL;
}

static int remaining_ms(int64_t deadline)
{
	int64_t r = deadline - test_now_ms();

	return r < 0 ? 0 : (int)r;
}

/* The port in DIR/nats-server_<pid>.ports ({"nats":["nats://H:PORT"]}),
 * 0 while the file is not (completely) there. */
static uint16_t read_ports_file(const struct nats_proc *n)
{
	char path[128], buf[256];
	const char *p;
	FILE *f;
	size_t len;
	long port;

	snprintf(path, sizeof(path), "%s/nats-server_%d.ports", n->dir,
	         (int)n->pid);
	f = fopen(path, "r");
	if (!f)
		return 0;
	len = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[len] = '\0';
	p = strstr(buf, "nats://127.0.0.1:");
	if (!p || !strchr(p, ']'))
		return 0;
	port = strtol(p + strlen("nats://127.0.0.1:"), NULL, 10);
	return port > 0 && port < 65536 ? (uint16_t)port : 0;
}

/* 1 when a client connection gets an INFO line with JetStream on, 0 when
 * not (yet). */
static int jetstream_answers(uint16_t port, int timeout_ms)
{
	int64_t deadline = test_now_ms() + timeout_ms;
	struct sockaddr_in sa = {.sin_family = AF_INET,
	                         .sin_port = htons(port)};
	char buf[4096];
	size_t len = 0;
	int fd, ok = 0;

	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return 0;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		goto out;
	while (len < sizeof(buf) - 1 && !memchr(buf, '\n', len)) {
		struct pollfd pfd = {.fd = fd, .events = POLLIN};
		ssize_t r;

		if (poll(&pfd, 1, remaining_ms(deadline)) <= 0)
			goto out;
		r = recv(fd, buf + len, sizeof(buf) - 1 - len, 0);
		if (r <= 0)
			goto out;
		len += (size_t)r;
	}
	buf[len] = '\0';
	ok = strncmp(buf, "INFO ", 5) == 0 &&
	     strstr(buf, "\"jetstream\":true") != NULL;
out:
	close(fd);
	return ok;
}

/* Forks and execs nats-server on port (0: a random one). */
static int spawn(struct nats_proc *n, const char *bin)
{
	char port[16];
	const char *argv[] = {bin,  "-js", "-a",   "127.0.0.1",        "-p",
	                      port, "-sd", n->dir, "--ports_file_dir", n->dir,
	                      NULL};
	int logfd, nullfd;

	snprintf(port, sizeof(port), "%d", n->port ? (int)n->port : -1);
	logfd =
	    open(n->log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	nullfd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (logfd >= 0 && nullfd >= 0)
		n->pid = proc_spawn(argv, nullfd, logfd, logfd);
	if (logfd >= 0)
		close(logfd);
	if (nullfd >= 0)
		close(nullfd);
	if (n->pid <= 0) {
		n->pid = 0;
		fprintf(stderr, "nats-server: cannot start %s: %s\n", bin,
		        strerror(errno));
		return -1;
	}
	return 0;
}

/* Polls for the port, then for JetStream, until the deadline or the
 * process' exit. */
static int wait_ready(struct nats_proc *n, int timeout_ms)
{
	int64_t deadline = test_now_ms() + timeout_ms;

	for (;;) {
		if (!nats_proc_running(n)) {
			fprintf(stderr,
			        "nats-server: exited before it was ready "
			        "(log: %s)\n",
			        n->log_path);
			return -1;
		}
		if (!n->port)
			n->port = read_ports_file(n);
		if (n->port && jetstream_answers(n->port, 1000))
			return 0;
		if (remaining_ms(deadline) == 0) {
			fprintf(
			    stderr,
			    "nats-server: not ready within %d ms (log: %s)\n",
			    timeout_ms, n->log_path);
			return -1;
		}
		test_pause_ms(POLL_INTERVAL_MS);
	}
}

bool nats_proc_running(struct nats_proc *n)
{
	if (n->pid <= 0)
		return false;
	if (proc_wait(n->pid, 0) == PROC_RUNNING)
		return true;
	n->pid = 0;
	return false;
}

int nats_proc_start(struct nats_proc **out)
{
	const char *bin = nats_proc_binary();
	struct nats_proc *n;

	*out = NULL;
	if (!bin) {
		fprintf(stderr, "nats-server is not installed\n");
		return -1;
	}
	n = calloc(1, sizeof(*n));
	if (!n)
		return -1;
	if (test_dir_make(n->dir, sizeof(n->dir), "nats")) {
		fprintf(stderr, "nats-server: mkdtemp: %s\n", strerror(errno));
		free(n);
		return -1;
	}
	snprintf(n->log_path, sizeof(n->log_path), "%s/nats.log", n->dir);
	if (spawn(n, bin) < 0 || wait_ready(n, NATS_READY_TIMEOUT_MS) < 0) {
		nats_proc_free(n, true);
		return -1;
	}
	snprintf(n->url, sizeof(n->url), "nats://127.0.0.1:%u", n->port);
	*out = n;
	return 0;
}

int nats_proc_kill9(struct nats_proc *n)
{
	int status;

	if (n->pid <= 0)
		return -1;
	status = proc_kill(n->pid);
	n->pid = 0;
	return status;
}

int nats_proc_freeze(struct nats_proc *n, bool frozen)
{
	int64_t deadline = test_now_ms() + NATS_STOP_TIMEOUT_MS;
	int status;
	pid_t r;

	if (n->pid <= 0 || kill(n->pid, frozen ? SIGSTOP : SIGCONT) < 0)
		return -1;
	if (!frozen)
		return 0;
	/* kill returns at once, but the group stop needs one thread to take
	 * the signal first: under load the others serve clients meanwhile
	 * (an ack after the SIGSTOP was seen with 2 busy cores). The parent
	 * hears of the stop once every thread has stopped. */
	while ((r = waitpid(n->pid, &status, WNOHANG | WUNTRACED)) == 0 &&
	       test_now_ms() < deadline)
		test_pause_ms(1);
	return r == n->pid && WIFSTOPPED(status) ? 0 : -1;
}

int nats_proc_stop(struct nats_proc *n, int timeout_ms)
{
	int status;

	if (n->pid <= 0 || kill(n->pid, SIGTERM) < 0)
		return -1;
	status = proc_wait(n->pid, timeout_ms);
	if (status == PROC_RUNNING) {
		fprintf(stderr,
		        "nats-server: still running after %d ms; "
		        "SIGKILL\n",
		        timeout_ms);
		status = proc_kill(n->pid);
	}
	n->pid = 0;
	return status;
}

int nats_proc_restart(struct nats_proc *n)
{
	const char *bin = nats_proc_binary();

	if (nats_proc_running(n)) {
		fprintf(stderr, "nats-server: restart while pid %d runs\n",
		        (int)n->pid);
		return -1;
	}
	/* The port stays n->port: the sidecars reconnect to the same URL. A
	 * killed server's listening socket leaves no TIME_WAIT behind it, so
	 * the port can be bound again at once. */
	if (!bin || spawn(n, bin) < 0)
		return -1;
	return wait_ready(n, NATS_READY_TIMEOUT_MS);
}

void nats_proc_free(struct nats_proc *n, bool failed)
{
	if (!n)
		return;
	if (n->pid > 0)
		nats_proc_stop(n, NATS_STOP_TIMEOUT_MS);
	if (failed || getenv("WSGATE_TEST_KEEP"))
		fprintf(stderr, "nats-server: kept %s (log: %s)\n", n->dir,
		        n->log_path);
	else if (n->dir[0])
		test_dir_remove(n->dir);
	free(n);
}
