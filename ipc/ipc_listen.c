/*
 * ipc_listen: the NNG listeners of the sidecar's sockets and the watchdog
 * that restarts one whose accept loop died (see ipc_listen.h for why).
 *
 * struct ipc_listener is owned by the caller's thread for set-up and
 * shutdown; in between, the watchdog thread and NNG's pipe callback share
 * it under lk.
 */
#include "ipc_listen.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <nng/transport/ipc/ipc.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

enum probe_kind { PROBE_NONE, PROBE_IPC, PROBE_TCP };

/* UNKNOWN: the probe could not tell (out of descriptors, backlog full). */
enum probe_result { PROBE_ALIVE, PROBE_DEAD, PROBE_UNKNOWN };

/* One per listening URL: the current NNG listener and its watchdog. */
struct ipc_listener {
	nng_socket sock;
	char what[32];
	char url[512];
	int ipc_mode;
	enum probe_kind kind;
	uint8_t header[8]; /* what a dialer of the socket's peer sends */
	ipc_listen_log_fn on_restart;
	void *log_arg;
	uint64_t pid; /* ours: the peer pid of an ipc probe's pipe */
	pthread_t thread;
	bool thread_running;
	/* lk guards the fields below; cv wakes the watchdog when it is
	 * stopped or when its probe's pipe arrives. */
	pthread_mutex_t lk;
	pthread_cond_t cv;
	bool stopping;
	bool listening; /* nl is open */
	nng_listener nl;
	struct sockaddr_storage addr; /* where a probe dials */
	socklen_t addrlen;
	unsigned probes_pending; /* ipc probes whose pipe has not come */
	uint16_t probe_port;     /* tcp: the current probe's, network order */
	bool probe_seen;
	unsigned restarts;
};

static int64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits on l->cv (lk held) until the monotonic time deadline_ms. */
static int wait_until(struct ipc_listener *l, int64_t deadline_ms)
{
	struct timespec ts = {.tv_sec = deadline_ms / 1000,
	                      .tv_nsec = (deadline_ms % 1000) * 1000000};
	return pthread_cond_timedwait(&l->cv, &l->lk, &ts);
}

/* mkdir -p of the directory of an ipc:// path. */
static void ipc_prepare_dir(const char *url)
{
	char path[512];
	snprintf(path, sizeof(path), "%s", url + strlen("ipc://"));
	for (char *p = path + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		mkdir(path, 0755);
		*p = '/';
	}
}

static enum probe_kind probe_kind_of(const char *url)
{
	if (strncmp(url, "ipc://", 6) == 0)
		return PROBE_IPC;
	if (strncmp(url, "tcp://", 6) == 0 || strncmp(url, "tcp4://", 7) == 0 ||
	    strncmp(url, "tcp6://", 7) == 0)
		return PROBE_TCP;
	return PROBE_NONE;
}

/* Where a probe of nl dials: the socket file, or the bound TCP address
 * (a wildcard one through loopback). 0 or -1. */
static int probe_addr(struct ipc_listener *l, nng_listener nl,
                      struct sockaddr_storage *ss, socklen_t *len)
{
	nng_sockaddr sa;
	memset(ss, 0, sizeof(*ss));
	if (l->kind == PROBE_IPC) {
		struct sockaddr_un *un = (struct sockaddr_un *)ss;
		const char *path = l->url + strlen("ipc://");
		if (strlen(path) >= sizeof(un->sun_path))
			return -1;
		un->sun_family = AF_UNIX;
		strcpy(un->sun_path, path);
		*len = sizeof(*un);
		return 0;
	}
	if (nng_listener_get_addr(nl, NNG_OPT_LOCADDR, &sa) != 0)
		return -1;
	if (sa.s_family == NNG_AF_INET) {
		struct sockaddr_in *in = (struct sockaddr_in *)ss;
		in->sin_family = AF_INET;
		in->sin_port = sa.s_in.sa_port;
		in->sin_addr.s_addr = sa.s_in.sa_addr != 0
		                          ? sa.s_in.sa_addr
		                          : htonl(INADDR_LOOPBACK);
		*len = sizeof(*in);
		return 0;
	}
	if (sa.s_family == NNG_AF_INET6) {
		static const uint8_t any[16];
		struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
		in6->sin6_family = AF_INET6;
		in6->sin6_port = sa.s_in6.sa_port;
		if (memcmp(sa.s_in6.sa_addr, any, sizeof(any)) == 0)
			in6->sin6_addr = in6addr_loopback;
		else
			memcpy(&in6->sin6_addr, sa.s_in6.sa_addr, 16);
		*len = sizeof(*in6);
		return 0;
	}
	return -1;
}

/* Creates and starts a listener on l->url and makes it the current one.
 * 0, or -1 with a one-line reason in err. */
static int listener_start(struct ipc_listener *l, char *err, size_t errlen)
{
	nng_listener nl;
	struct sockaddr_storage ss;
	socklen_t sslen = 0;
	int rv, is_ipc = l->kind == PROBE_IPC;
	if (is_ipc)
		ipc_prepare_dir(l->url);
	if ((rv = nng_listener_create(&nl, l->sock, l->url)) != 0) {
		snprintf(err, errlen, "%s: bad address %s: %s", l->what, l->url,
		         nng_strerror(rv));
		return -1;
	}
	if (is_ipc && (rv = nng_listener_set_int(nl, NNG_OPT_IPC_PERMISSIONS,
	                                         l->ipc_mode))) {
		snprintf(err, errlen, "%s: cannot set mode of %s: %s", l->what,
		         l->url, nng_strerror(rv));
		nng_listener_close(nl);
		return -1;
	}
	if ((rv = nng_listener_start(nl, 0)) != 0) {
		snprintf(err, errlen, "%s: cannot listen on %s: %s", l->what,
		         l->url, nng_strerror(rv));
		nng_listener_close(nl);
		return -1;
	}
	/* Without a probe address the listener works, unwatched. */
	if (l->kind != PROBE_NONE && probe_addr(l, nl, &ss, &sslen) != 0)
		sslen = 0;
	pthread_mutex_lock(&l->lk);
	l->nl = nl;
	l->listening = true;
	l->addr = ss;
	l->addrlen = sslen;
	l->probes_pending = 0;
	l->probe_port = 0;
	pthread_mutex_unlock(&l->lk);
	return 0;
}

/* Whether p is a probe's connection (lk held). */
static bool pipe_is_probe(struct ipc_listener *l, nng_pipe p)
{
	if (l->kind == PROBE_IPC) {
		uint64_t pid;
		if (l->probes_pending == 0 ||
		    nng_pipe_get_uint64(p, NNG_OPT_IPC_PEER_PID, &pid) != 0 ||
		    pid != l->pid)
			return false;
		l->probes_pending--;
		return true;
	}
	if (l->kind == PROBE_TCP && l->probe_port != 0) {
		nng_sockaddr sa;
		uint16_t port = 0;
		if (nng_pipe_get_addr(p, NNG_OPT_REMADDR, &sa) != 0)
			return false;
		if (sa.s_family == NNG_AF_INET)
			port = sa.s_in.sa_port;
		else if (sa.s_family == NNG_AF_INET6)
			port = sa.s_in6.sa_port;
		if (port != l->probe_port)
			return false;
		l->probe_port = 0;
		return true;
	}
	return false;
}

/*
 * NNG_PIPE_EV_ADD_PRE: the listener delivered a pipe, so its accept loop
 * is alive. A probe's pipe is closed here, before the protocol sees it.
 */
static void listener_pipe_cb(nng_pipe p, nng_pipe_ev ev, void *arg)
{
	struct ipc_listener *l = arg;
	nng_listener from = nng_pipe_listener(p);
	bool probe = false;
	(void)ev;
	pthread_mutex_lock(&l->lk);
	if (l->listening && nng_listener_id(from) == nng_listener_id(l->nl) &&
	    pipe_is_probe(l, p)) {
		probe = true;
		l->probe_seen = true;
		pthread_cond_broadcast(&l->cv);
	}
	pthread_mutex_unlock(&l->lk);
	if (probe)
		nng_pipe_close(p);
}

/* Waits up to deadline_ms for fd to be ready for events; >0, 0 or -1. */
static int fd_wait(int fd, short events, int64_t deadline_ms)
{
	for (;;) {
		struct pollfd pfd = {.fd = fd, .events = events};
		int64_t left = deadline_ms - mono_ms();
		int rv = poll(&pfd, 1, left > 0 ? (int)left : 0);
		if (rv >= 0 || errno != EINTR)
			return rv;
	}
}

/* Dials l->addr. The fd, or -1 with *res saying what that means. */
static int probe_connect(const struct sockaddr_storage *ss, socklen_t len,
                         int64_t deadline_ms, enum probe_result *res)
{
	int fd = socket(ss->ss_family,
	                SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	int soerr = 0;
	socklen_t soerrlen = sizeof(soerr);
	*res = PROBE_UNKNOWN;
	if (fd < 0)
		return -1;
	if (connect(fd, (const struct sockaddr *)ss, len) == 0)
		return fd;
	if (errno == EINPROGRESS && fd_wait(fd, POLLOUT, deadline_ms) > 0 &&
	    getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &soerrlen) == 0) {
		if (soerr == 0)
			return fd;
		errno = soerr;
	}
	/* Refused or gone: nothing listens there any more. EAGAIN (a full
	 * backlog of an AF_UNIX socket) and timeouts say nothing of the
	 * accept loop this watchdog is about. */
	if (errno == ECONNREFUSED || errno == ENOENT)
		*res = PROBE_DEAD;
	close(fd);
	return -1;
}

/*
 * One probe: dial, exchange SP headers, and wait for the listener to
 * deliver the connection as a pipe. The probe closes only after it has
 * read the listener's header, so it cannot itself trigger the bug.
 */
static enum probe_result probe_once(struct ipc_listener *l)
{
	struct sockaddr_storage ss, local;
	socklen_t len, locallen = sizeof(local);
	enum probe_result res;
	uint8_t hdr[8];
	size_t got = 0;
	int fd;
	int64_t deadline = mono_ms() + IPC_LISTEN_PROBE_WAIT_MS;

	pthread_mutex_lock(&l->lk);
	ss = l->addr;
	len = l->addrlen;
	pthread_mutex_unlock(&l->lk);
	if (len == 0)
		return PROBE_UNKNOWN;
	if ((fd = probe_connect(&ss, len, deadline, &res)) < 0)
		return res;

	pthread_mutex_lock(&l->lk);
	l->probe_seen = false;
	if (l->kind == PROBE_IPC)
		l->probes_pending++;
	else if (getsockname(fd, (struct sockaddr *)&local, &locallen) == 0)
		l->probe_port = local.ss_family == AF_INET6
		                    ? ((struct sockaddr_in6 *)&local)->sin6_port
		                    : ((struct sockaddr_in *)&local)->sin_port;
	pthread_mutex_unlock(&l->lk);

	/* 8 bytes always fit in a new socket's send buffer. */
	if (send(fd, l->header, sizeof(l->header), MSG_NOSIGNAL) !=
	    (ssize_t)sizeof(l->header)) {
		close(fd);
		return PROBE_UNKNOWN;
	}
	res = PROBE_DEAD;
	while (got < sizeof(hdr) && fd_wait(fd, POLLIN, deadline) > 0) {
		ssize_t n = recv(fd, hdr + got, sizeof(hdr) - got, 0);
		if (n <= 0 && !(n < 0 && (errno == EINTR || errno == EAGAIN)))
			break;
		if (n > 0)
			got += (size_t)n;
	}
	if (got == sizeof(hdr) && hdr[0] == 0 && hdr[1] == 'S' &&
	    hdr[2] == 'P' && hdr[3] == 0) {
		deadline = mono_ms() + IPC_LISTEN_PROBE_WAIT_MS;
		pthread_mutex_lock(&l->lk);
		while (!l->probe_seen && !l->stopping &&
		       wait_until(l, deadline) != ETIMEDOUT)
			;
		if (l->probe_seen)
			res = PROBE_ALIVE;
		else if (l->stopping)
			res = PROBE_UNKNOWN;
		pthread_mutex_unlock(&l->lk);
	}
	close(fd);
	return res;
}

/* Replaces the current listener (if any) with a new one on the same URL
 * and says so through on_restart. */
static void watchdog_restart(struct ipc_listener *l, bool *failing)
{
	char err[384], line[1024];
	nng_listener old;
	bool had;
	unsigned n;

	pthread_mutex_lock(&l->lk);
	old = l->nl;
	had = l->listening;
	l->listening = false;
	pthread_mutex_unlock(&l->lk);
	/* Closing unlinks the socket file at once, so the new listener binds
	 * the same path; it also drops the old listener's pipes. */
	if (had)
		nng_listener_close(old);
	if (listener_start(l, err, sizeof(err)) != 0) {
		if (!*failing && l->on_restart) {
			snprintf(line, sizeof(line),
			         "%s: listener on %s stopped accepting and "
			         "cannot be restarted (retrying): %s",
			         l->what, l->url, err);
			l->on_restart(l->log_arg, line);
		}
		*failing = true;
		return;
	}
	*failing = false;
	pthread_mutex_lock(&l->lk);
	n = ++l->restarts;
	pthread_mutex_unlock(&l->lk);
	if (l->on_restart) {
		snprintf(line, sizeof(line),
		         "%s: listener on %s stopped accepting connections; "
		         "restarted it (%u restart%s so far)",
		         l->what, l->url, n, n == 1 ? "" : "s");
		l->on_restart(l->log_arg, line);
	}
}

static void *watchdog_main(void *arg)
{
	struct ipc_listener *l = arg;
	unsigned failures = 0;
	bool failing = false;

	pthread_mutex_lock(&l->lk);
	for (;;) {
		int64_t next = mono_ms() + IPC_LISTEN_PROBE_MS;
		bool listening;
		enum probe_result res;
		while (!l->stopping && wait_until(l, next) != ETIMEDOUT)
			;
		if (l->stopping)
			break;
		listening = l->listening;
		pthread_mutex_unlock(&l->lk);

		res = listening ? probe_once(l) : PROBE_DEAD;
		if (res == PROBE_DEAD)
			failures++;
		else if (res == PROBE_ALIVE)
			failures = 0;
		if (!listening || failures >= IPC_LISTEN_PROBE_FAILURES) {
			failures = 0;
			watchdog_restart(l, &failing);
		}
		pthread_mutex_lock(&l->lk);
	}
	pthread_mutex_unlock(&l->lk);
	return NULL;
}

int ipc_listen(struct ipc_listener **out, nng_socket sock, const char *what,
               const char *url, int ipc_mode, ipc_listen_log_fn on_restart,
               void *log_arg, char *err, size_t errlen)
{
	struct ipc_listener *l = calloc(1, sizeof(*l));
	pthread_condattr_t ca;
	int peer = 0, rv;

	if (!l) {
		snprintf(err, errlen, "%s: out of memory", what);
		return -1;
	}
	if (strlen(url) >= sizeof(l->url)) {
		snprintf(err, errlen, "%s: address too long: %s", what, url);
		free(l);
		return -1;
	}
	l->sock = sock;
	snprintf(l->what, sizeof(l->what), "%s", what);
	snprintf(l->url, sizeof(l->url), "%s", url);
	l->ipc_mode = ipc_mode;
	l->kind = probe_kind_of(url);
	l->on_restart = on_restart;
	l->log_arg = log_arg;
	l->pid = (uint64_t)getpid();
	/* The SP header: 0, 'S', 'P', 0, peer protocol (big-endian), 0, 0. */
	nng_socket_get_int(sock, NNG_OPT_PEER, &peer);
	l->header[1] = 'S';
	l->header[2] = 'P';
	l->header[4] = (uint8_t)(peer >> 8);
	l->header[5] = (uint8_t)peer;
	pthread_mutex_init(&l->lk, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&l->cv, &ca);
	pthread_condattr_destroy(&ca);

	if (listener_start(l, err, errlen) != 0)
		goto fail;
	if (l->kind == PROBE_NONE) {
		*out = l;
		return 0;
	}
	if ((rv = pthread_create(&l->thread, NULL, watchdog_main, l)) != 0) {
		snprintf(err, errlen, "%s: cannot start watchdog: %s", what,
		         strerror(rv));
		goto fail_listener;
	}
	l->thread_running = true;
	/* Last, so that on failure above no callback can hold l. */
	if ((rv = nng_pipe_notify(sock, NNG_PIPE_EV_ADD_PRE, listener_pipe_cb,
	                          l)) != 0) {
		snprintf(err, errlen, "%s: %s", what, nng_strerror(rv));
		ipc_listener_stop(l);
		goto fail_listener;
	}
	*out = l;
	return 0;

fail_listener:
	nng_listener_close(l->nl);
fail:
	pthread_cond_destroy(&l->cv);
	pthread_mutex_destroy(&l->lk);
	free(l);
	return -1;
}

void ipc_listener_stop(struct ipc_listener *l)
{
	if (!l || !l->thread_running)
		return;
	pthread_mutex_lock(&l->lk);
	l->stopping = true;
	pthread_cond_broadcast(&l->cv);
	pthread_mutex_unlock(&l->lk);
	pthread_join(l->thread, NULL);
	l->thread_running = false;
}

void ipc_listener_free(struct ipc_listener *l)
{
	if (!l)
		return;
	ipc_listener_stop(l);
	pthread_cond_destroy(&l->cv);
	pthread_mutex_destroy(&l->lk);
	free(l);
}

unsigned ipc_listener_restarts(struct ipc_listener *l)
{
	unsigned n;
	pthread_mutex_lock(&l->lk);
	n = l->restarts;
	pthread_mutex_unlock(&l->lk);
	return n;
}
