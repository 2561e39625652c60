/*
 * test_sp_server: sidecar/sp_server.c, the SP-over-ipc:// listener on a
 * libev loop, against real NNG 1.5.2 clients (req0, pull0, push0) and raw
 * Unix-socket peers: round trips, the header exchange and its protocol
 * check, bad and split frames, the socket file (mode, parent directories,
 * stale and live files, removal), a pipe whose peer does not read its
 * output, pausing and closing pipes, and held pipes that outlive their
 * close and their server.
 *
 * The test thread runs the loop (EVRUN_ONCE, woken at least every TICK_S
 * by a timer) while it polls a condition against a deadline. Well-behaved
 * NNG clients run on their own threads with bounded timeouts; the push0
 * client that dials with the wrong protocol runs in a child process (this
 * binary with "--push0-dialer") that the test can kill, since NNG 1.5.2's
 * close of such a socket is not to be trusted; raw peers are non-blocking
 * sockets polled between loop turns. Nothing sleeps to synchronise: the
 * only fixed waits (settle) are windows in which something must NOT
 * happen.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <linux/sockios.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <nng/nng.h>
#include <nng/protocol/pipeline0/pull.h>
#include <nng/protocol/pipeline0/push.h>
#include <nng/protocol/reqrep0/req.h>

#include "child_proc.h"
#include "sp_server.h"
#include "test_clock.h"
#include "test_dir.h"

#define WAIT_MS      5000 /* every condition a test waits for */
#define SETTLE_MS    300  /* a window in which nothing may happen */
#define TICK_S       0.005
#define NNG_TIMEO_MS 5000
#define BIG_REPLY    (256u << 10)
#define PUSH_BIG     (512u << 10)
#define MAX_CLIENTS  4
#define MAX_RAW      8
#define MAX_HOLDS    4
#define PATH_CAP     160

/* What on_message does besides counting and keeping a copy. */
enum reply_mode {
	REPLY_NONE,  /* nothing */
	REPLY_ECHO,  /* the message back, unchanged */
	REPLY_BIG,   /* its first word (the backtrace), then BIG_REPLY bytes */
	REPLY_HOLD,  /* holds the pipe (the first time) */
	REPLY_PAUSE, /* stops reading the pipe after the first message */
	REPLY_CLOSE, /* closes the pipe */
};

enum client_kind { CLIENT_REQ, CLIENT_PULL };

/* One NNG client on its own thread. Only done is shared while it runs. */
struct nng_client {
	pthread_t tid;
	bool started;
	atomic_int done;
	enum client_kind kind;
	char url[PATH_CAP + 8];
	char tag[16];
	int n;        /* requests to make, or messages to receive */
	int answered; /* replies that matched their request */
	int rv;       /* 0, an NNG error, or -1 for a wrong reply */
	char err[160];
	uint8_t *got[2]; /* pull: copies of the first two messages */
	size_t got_len[2];
};

struct harness {
	char dir[64];
	char path[PATH_CAP];
	char url[PATH_CAP + 8];
	char url2[PATH_CAP + 8];
	struct ev_loop *loop;
	ev_timer tick;
	struct sp_server_config cfg;
	struct sp_server *srv, *srv2;
	enum reply_mode mode;
	/* what the callbacks saw */
	int opens, closes, messages, drains, logs, send_failures;
	struct sp_pipe *pipe;   /* the last opened, NULL once it closed */
	size_t max_unsent_seen; /* most unsent output when on_message ran */
	uint8_t *last;          /* copy of the last message */
	size_t last_len;
	uint8_t *big; /* REPLY_BIG's body */
	/* on_open sends these when open_n > 0 (push0 server) */
	struct iovec open_iov[3];
	int open_n;
	uint8_t *open_big;
	size_t unsent_after_open;
	bool hold_on_open;
	struct sp_pipe *holds[MAX_HOLDS]; /* released by the teardown */
	struct nng_client clients[MAX_CLIENTS];
	int raw[MAX_RAW];
	struct child_proc push0; /* the wrong-protocol dialer */
	bool push0_pipe_removed; /* it reported NNG dropped its pipe */
};

/* --- the loop and waiting --- */

static void tick_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop;
	(void)w;
	(void)revents;
}

/* One turn of the loop: returns after at most about TICK_S. */
static void pump(struct harness *h)
{
	ev_run(h->loop, EVRUN_ONCE);
}

/* Runs the loop until cond holds or WAIT_MS passed, then asserts cond. */
#define WAIT_FOR(h, cond)                                                      \
	do {                                                                   \
		int64_t deadline_ = test_now_ms() + WAIT_MS;                   \
		while (!(cond) && test_now_ms() < deadline_)                   \
			pump(h);                                               \
		assert_true(cond);                                             \
	} while (0)

/* Runs the loop for ms: the window of a check that nothing happens. */
static void settle(struct harness *h, int ms)
{
	int64_t end = test_now_ms() + ms;
	while (test_now_ms() < end)
		pump(h);
}

/* --- the server's callbacks --- */

static void hold(struct harness *h, struct sp_pipe *p)
{
	for (int i = 0; i < MAX_HOLDS; i++) {
		if (!h->holds[i]) {
			sp_pipe_hold(p);
			h->holds[i] = p;
			return;
		}
	}
	fail_msg("more than %d held pipes", MAX_HOLDS);
}

/* Releases a pipe hold() took. */
static void release(struct harness *h, struct sp_pipe *p)
{
	for (int i = 0; i < MAX_HOLDS; i++) {
		if (h->holds[i] == p) {
			h->holds[i] = NULL;
			sp_pipe_release(p);
			return;
		}
	}
	fail_msg("releasing a pipe that is not held");
}

static void on_message(void *arg, struct sp_pipe *p, const uint8_t *msg,
                       size_t len)
{
	struct harness *h = arg;
	size_t unsent = sp_pipe_unsent(p);
	struct iovec v[2];
	if (unsent > h->max_unsent_seen)
		h->max_unsent_seen = unsent;
	h->messages++;
	free(h->last);
	h->last = malloc(len ? len : 1);
	assert_non_null(h->last);
	memcpy(h->last, msg, len);
	h->last_len = len;
	switch (h->mode) {
	case REPLY_NONE:
		break;
	case REPLY_ECHO:
		v[0].iov_base = (void *)msg;
		v[0].iov_len = len;
		if (sp_pipe_send(p, v, 1) != 0)
			h->send_failures++;
		break;
	case REPLY_BIG:
		v[0].iov_base = (void *)msg;
		v[0].iov_len = len < 4 ? len : 4;
		v[1].iov_base = h->big;
		v[1].iov_len = BIG_REPLY;
		if (sp_pipe_send(p, v, 2) != 0)
			h->send_failures++;
		break;
	case REPLY_HOLD:
		if (!h->holds[0]) {
			hold(h, p);
			sp_pipe_set_data(p, h);
		}
		break;
	case REPLY_PAUSE:
		if (h->messages == 1)
			sp_pipe_set_reading(p, false);
		break;
	case REPLY_CLOSE:
		sp_pipe_close(p);
		break;
	}
}

static void on_open(void *arg, struct sp_pipe *p)
{
	struct harness *h = arg;
	h->opens++;
	h->pipe = p;
	if (h->hold_on_open)
		hold(h, p);
	if (h->open_n > 0) {
		struct iovec big = {.iov_base = h->open_big,
		                    .iov_len = PUSH_BIG};
		if (sp_pipe_send(p, h->open_iov, h->open_n) != 0)
			h->send_failures++;
		if (sp_pipe_send(p, &big, 1) != 0)
			h->send_failures++;
		h->unsent_after_open = sp_pipe_unsent(p);
	}
}

static void on_drained(void *arg, struct sp_pipe *p)
{
	struct harness *h = arg;
	(void)p;
	h->drains++;
}

static void on_close(void *arg, struct sp_pipe *p)
{
	struct harness *h = arg;
	h->closes++;
	if (h->pipe == p)
		h->pipe = NULL;
}

static void on_log(void *arg, const char *line)
{
	struct harness *h = arg;
	(void)line;
	h->logs++;
}

static const struct sp_server_ops ops = {
    .on_message = on_message,
    .on_open = on_open,
    .on_drained = on_drained,
    .on_close = on_close,
    .on_log = on_log,
};

/* sp_server_listen with h->cfg on path with mode; url_buf (in h) keeps
 * the URL for as long as the server may look at it. */
static int listen_on(struct harness *h, struct sp_server **out, char *url_buf,
                     const char *path, int mode, char *err, size_t errlen)
{
	struct sp_server_config cfg = h->cfg;
	snprintf(url_buf, PATH_CAP + 8, "ipc://%s", path);
	cfg.url = url_buf;
	cfg.ipc_mode = mode;
	return sp_server_listen(out, h->loop, &cfg, &ops, h, err, errlen);
}

static void start_server(struct harness *h)
{
	char err[256] = "";
	int rc = listen_on(h, &h->srv, h->url, h->path, h->cfg.ipc_mode, err,
	                   sizeof(err));
	if (rc != 0)
		print_message("sp_server_listen: %s\n", err);
	assert_int_equal(rc, 0);
	assert_non_null(h->srv);
}

/* --- raw peers: non-blocking Unix sockets --- */

static void put_be64(uint8_t *out, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		out[i] = (uint8_t)(v >> (56 - 8 * i));
}

static void put_be32(uint8_t *out, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		out[i] = (uint8_t)(v >> (24 - 8 * i));
}

/* The 8-byte header of a side speaking proto, written out by hand. */
static void header_of(uint8_t out[8], uint16_t proto)
{
	const uint8_t h[8] = {
	    0, 'S', 'P', 0, (uint8_t)(proto >> 8), (uint8_t)proto, 0, 0};
	memcpy(out, h, 8);
}

/* A message frame: type 0x01, 64-bit big-endian length, body. Returns
 * its size. */
static size_t frame(uint8_t *out, const void *body, size_t len)
{
	out[0] = 0x01;
	put_be64(out + 1, len);
	memcpy(out + 9, body, len);
	return 9 + len;
}

/* Fills in sa for path, which must fit. */
static void unix_addr(struct sockaddr_un *sa, const char *path)
{
	size_t len = strlen(path);
	assert_true(len < sizeof(sa->sun_path));
	memcpy(sa->sun_path, path, len + 1);
}

static int raw_connect(struct harness *h, const char *path)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	int slot = -1;
	assert_true(fd >= 0);
	for (int i = 0; i < MAX_RAW && slot < 0; i++)
		if (h->raw[i] < 0)
			slot = i;
	if (slot < 0)
		close(fd);
	assert_true(slot >= 0);
	h->raw[slot] = fd;
	unix_addr(&sa, path);
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	return fd;
}

static void raw_close(struct harness *h, int fd)
{
	for (int i = 0; i < MAX_RAW; i++)
		if (h->raw[i] == fd)
			h->raw[i] = -1;
	close(fd);
}

/* Writes all of buf, running the loop while the socket is full. */
static void raw_send_all(struct harness *h, int fd, const void *buf, size_t len)
{
	const uint8_t *b = buf;
	int64_t deadline = test_now_ms() + WAIT_MS;
	while (len > 0 && test_now_ms() < deadline) {
		ssize_t n = send(fd, b, len, MSG_NOSIGNAL);
		if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
			pump(h);
			continue;
		}
		assert_true(n > 0);
		b += n;
		len -= (size_t)n;
	}
	assert_int_equal(len, 0);
}

/* Reads exactly len bytes, running the loop while none are there. */
static void raw_recv_exact(struct harness *h, int fd, void *buf, size_t len)
{
	uint8_t *b = buf;
	int64_t deadline = test_now_ms() + WAIT_MS;
	while (len > 0 && test_now_ms() < deadline) {
		ssize_t n = recv(fd, b, len, 0);
		if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
			pump(h);
			continue;
		}
		assert_true(n > 0); /* not EOF, not an error */
		b += n;
		len -= (size_t)n;
	}
	assert_int_equal(len, 0);
}

/* Reads and drops everything until the server closes: 0 at EOF, the errno
 * of a failed read, or -1 when the connection is still open at the
 * deadline. */
static int raw_wait_closed(struct harness *h, int fd)
{
	uint8_t buf[4096];
	int64_t deadline = test_now_ms() + WAIT_MS;
	while (test_now_ms() < deadline) {
		ssize_t n = recv(fd, buf, sizeof(buf), 0);
		if (n == 0)
			return 0;
		if (n < 0 && errno != EAGAIN && errno != EINTR)
			return errno;
		if (n < 0)
			pump(h);
	}
	return -1;
}

/* Bytes written on fd that the server has not read yet (SIOCOUTQ). */
static int outq(int fd)
{
	int n = -1;
	assert_int_equal(ioctl(fd, SIOCOUTQ, &n), 0);
	return n;
}

/* The header exchange as a peer speaking ours, with a server speaking
 * theirs; returns once the server has opened the pipe. */
static void raw_open_pipe(struct harness *h, int fd, uint16_t ours,
                          uint16_t theirs)
{
	uint8_t hdr[8], got[8], want[8];
	int opens = h->opens;
	header_of(hdr, ours);
	header_of(want, theirs);
	raw_send_all(h, fd, hdr, sizeof(hdr));
	raw_recv_exact(h, fd, got, sizeof(got));
	assert_memory_equal(got, want, sizeof(want));
	WAIT_FOR(h, h->opens == opens + 1);
}

/* A req0 request frame whose body is just the request id i (high bit
 * set): 13 bytes. */
static size_t request(uint8_t out[13], uint32_t i)
{
	uint8_t id[4];
	put_be32(id, 0x80000000u | i);
	return frame(out, id, sizeof(id));
}

/* Splits the frames a raw peer reads and checks each against REPLY_BIG's
 * reply to request number frames. */
struct frame_reader {
	uint8_t head[9];
	size_t head_got;
	uint64_t left; /* of the current frame's body */
	uint8_t id[4];
	size_t id_got;
	int frames; /* whole frames read */
	int bad;    /* frames of the wrong type, length or request id */
};

static void reader_feed(struct frame_reader *r, const uint8_t *b, size_t n)
{
	while (n > 0) {
		if (r->head_got < 9) {
			r->head[r->head_got++] = *b++;
			n--;
			if (r->head_got < 9)
				continue;
			uint64_t len = 0;
			for (int i = 1; i < 9; i++)
				len = len << 8 | r->head[i];
			if (r->head[0] != 0x01 || len != 4 + BIG_REPLY)
				r->bad++;
			r->left = len;
			r->id_got = 0;
		} else {
			size_t take = n < r->left ? n : (size_t)r->left;
			for (size_t i = 0; i < take && r->id_got < 4; i++)
				r->id[r->id_got++] = b[i];
			b += take;
			n -= take;
			r->left -= take;
		}
		if (r->head_got == 9 && r->left == 0) {
			uint8_t want[4];
			put_be32(want, 0x80000000u | (uint32_t)r->frames);
			if (r->id_got != 4 || memcmp(r->id, want, 4) != 0)
				r->bad++;
			r->frames++;
			r->head_got = 0;
		}
	}
}

/* Reads whatever fd has now into r; false at EOF or on an error. */
static bool raw_read_frames(int fd, struct frame_reader *r)
{
	static uint8_t buf[64 << 10];
	for (int i = 0; i < 64; i++) {
		ssize_t n = recv(fd, buf, sizeof(buf), 0);
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return true;
		if (n <= 0)
			return false;
		reader_feed(r, buf, (size_t)n);
	}
	return true;
}

/* --- NNG clients on their own threads --- */

static int client_fail(struct nng_client *c, const char *what, int rv)
{
	snprintf(c->err, sizeof(c->err), "%s: %s", what,
	         rv > 0 ? nng_strerror(rv) : "wrong reply");
	return rv;
}

static int client_run(struct nng_client *c, nng_socket s)
{
	int rv;
	if ((rv = nng_socket_set_ms(s, NNG_OPT_RECVTIMEO, NNG_TIMEO_MS)) ||
	    (rv = nng_socket_set_ms(s, NNG_OPT_SENDTIMEO, NNG_TIMEO_MS)))
		return client_fail(c, "options", rv);
	if ((rv = nng_dial(s, c->url, NULL, 0)))
		return client_fail(c, "nng_dial", rv);
	for (int i = 0; i < c->n; i++) {
		char req[64];
		int len = 0;
		void *buf = NULL;
		size_t sz = 0;
		if (c->kind == CLIENT_REQ) {
			len = c->n == 1
			          ? snprintf(req, sizeof(req), "%s", c->tag)
			          : snprintf(req, sizeof(req), "%s-%d", c->tag,
			                     i);
			if ((rv = nng_send(s, req, (size_t)len, 0)))
				return client_fail(c, "nng_send", rv);
		}
		if ((rv = nng_recv(s, &buf, &sz, NNG_FLAG_ALLOC)))
			return client_fail(c, "nng_recv", rv);
		if (c->kind == CLIENT_REQ) {
			bool same =
			    sz == (size_t)len && memcmp(buf, req, sz) == 0;
			nng_free(buf, sz);
			if (!same)
				return client_fail(c, req, -1);
			c->answered++;
		} else {
			if (i < 2) {
				c->got[i] = malloc(sz ? sz : 1);
				if (c->got[i]) {
					memcpy(c->got[i], buf, sz);
					c->got_len[i] = sz;
				}
			}
			nng_free(buf, sz);
		}
	}
	return 0;
}

static void *client_main(void *arg)
{
	struct nng_client *c = arg;
	nng_socket s;
	int rv = c->kind == CLIENT_REQ ? nng_req0_open(&s) : nng_pull0_open(&s);
	if (rv == 0) {
		rv = client_run(c, s);
		nng_close(s);
	} else
		client_fail(c, "open", rv);
	c->rv = rv;
	atomic_store(&c->done, 1);
	return NULL;
}

static struct nng_client *start_client(struct harness *h, int i,
                                       enum client_kind kind, const char *tag,
                                       int n)
{
	struct nng_client *c = &h->clients[i];
	c->kind = kind;
	snprintf(c->url, sizeof(c->url), "%s", h->url);
	snprintf(c->tag, sizeof(c->tag), "%s", tag);
	c->n = n;
	atomic_store(&c->done, 0);
	assert_int_equal(pthread_create(&c->tid, NULL, client_main, c), 0);
	c->started = true;
	return c;
}

/* Runs the loop until the client is done, then joins it. */
static void join_client(struct harness *h, struct nng_client *c)
{
	WAIT_FOR(h, atomic_load(&c->done));
	pthread_join(c->tid, NULL);
	c->started = false;
	if (c->rv != 0)
		print_message("NNG client %s: %s\n", c->tag, c->err);
}

/* --- setup and teardown --- */

static int setup(void **state)
{
	struct harness *h = calloc(1, sizeof(*h));
	if (!h)
		return -1;
	if (test_dir_make(h->dir, sizeof(h->dir), "sp-server") != 0) {
		free(h);
		return -1;
	}
	snprintf(h->path, sizeof(h->path), "%s/ctl.ipc", h->dir);
	h->loop = ev_loop_new(EVFLAG_AUTO);
	h->big = malloc(BIG_REPLY);
	if (!h->loop || !h->big)
		return -1;
	for (size_t i = 0; i < BIG_REPLY; i++)
		h->big[i] = (uint8_t)(i * 7 + 3);
	ev_timer_init(&h->tick, tick_cb, TICK_S, TICK_S);
	ev_timer_start(h->loop, &h->tick);
	h->cfg = (struct sp_server_config){
	    .what = "test",
	    .ipc_mode = 0600,
	    .proto = SP_PROTO_REP0,
	    .peer = SP_PROTO_REQ0,
	    .max_message = 1u << 20,
	    .max_unsent = 1u << 20,
	};
	h->mode = REPLY_ECHO;
	for (int i = 0; i < MAX_RAW; i++)
		h->raw[i] = -1;
	*state = h;
	return 0;
}

static int teardown(void **state)
{
	struct harness *h = *state;
	/* Servers first: clients still running lose their pipes and end
	 * within their timeouts. */
	sp_server_close(h->srv);
	sp_server_close(h->srv2);
	for (int i = 0; i < MAX_CLIENTS; i++) {
		struct nng_client *c = &h->clients[i];
		if (c->started)
			pthread_join(c->tid, NULL);
		free(c->got[0]);
		free(c->got[1]);
	}
	for (int i = 0; i < MAX_RAW; i++)
		if (h->raw[i] >= 0)
			close(h->raw[i]);
	child_proc_kill(&h->push0);
	for (int i = 0; i < MAX_HOLDS; i++)
		if (h->holds[i])
			sp_pipe_release(h->holds[i]);
	ev_timer_stop(h->loop, &h->tick);
	ev_loop_destroy(h->loop);
	free(h->last);
	free(h->big);
	free(h->open_big);
	test_dir_remove(h->dir);
	free(h);
	return 0;
}

/* --- req0 clients --- */

/* An NNG req0 client gets "hello" back; the server saw the request-id
 * word (high bit set) before the body. */
static void test_req0_request_is_echoed(void **state)
{
	struct harness *h = *state;
	start_server(h);
	struct nng_client *c = start_client(h, 0, CLIENT_REQ, "hello", 1);
	join_client(h, c);
	assert_int_equal(c->rv, 0);
	assert_int_equal(c->answered, 1);
	assert_int_equal(h->opens, 1);
	assert_int_equal(h->messages, 1);
	assert_int_equal(h->send_failures, 0);
	assert_int_equal(h->last_len, 4 + 5);
	assert_true(h->last[0] & 0x80);
	assert_memory_equal(h->last + 4, "hello", 5);
	/* The client closed its socket: the pipe closes. */
	WAIT_FOR(h, h->closes == 1);
}

static void test_req0_requests_in_a_row_are_answered(void **state)
{
	struct harness *h = *state;
	start_server(h);
	struct nng_client *c = start_client(h, 0, CLIENT_REQ, "row", 20);
	join_client(h, c);
	assert_int_equal(c->rv, 0);
	assert_int_equal(c->answered, 20);
	assert_int_equal(h->opens, 1);
	assert_int_equal(h->messages, 20);
	assert_int_equal(h->send_failures, 0);
}

static void test_two_req0_clients_are_served_at_once(void **state)
{
	struct harness *h = *state;
	start_server(h);
	struct nng_client *a = start_client(h, 0, CLIENT_REQ, "alice", 10);
	struct nng_client *b = start_client(h, 1, CLIENT_REQ, "bob", 10);
	join_client(h, a);
	join_client(h, b);
	assert_int_equal(a->rv, 0);
	assert_int_equal(b->rv, 0);
	assert_int_equal(a->answered, 10);
	assert_int_equal(b->answered, 10);
	assert_int_equal(h->opens, 2);
	assert_int_equal(h->messages, 20);
	WAIT_FOR(h, h->closes == 2);
}

/* --- push0 to pull0 --- */

/* A push0 server sends on_open a message in three pieces and a big one
 * the kernel cannot take at once; a pull0 client gets both, byte for
 * byte, in order. */
static void test_push0_messages_reach_pull0_byte_for_byte(void **state)
{
	struct harness *h = *state;
	static const char first[] = "first";
	uint8_t middle[256];
	static const char last[] = "last";
	for (int i = 0; i < 256; i++)
		middle[i] = (uint8_t)i;
	h->cfg.proto = SP_PROTO_PUSH0;
	h->cfg.peer = SP_PROTO_PULL0;
	h->open_iov[0] = (struct iovec){(void *)first, 5};
	h->open_iov[1] = (struct iovec){middle, sizeof(middle)};
	h->open_iov[2] = (struct iovec){(void *)last, 4};
	h->open_n = 3;
	h->open_big = malloc(PUSH_BIG);
	assert_non_null(h->open_big);
	for (size_t i = 0; i < PUSH_BIG; i++)
		h->open_big[i] = (uint8_t)(i * 13 + i / 251);
	start_server(h);

	struct nng_client *c = start_client(h, 0, CLIENT_PULL, "pull", 2);
	join_client(h, c);
	assert_int_equal(c->rv, 0);
	assert_int_equal(h->opens, 1);
	assert_int_equal(h->send_failures, 0);

	uint8_t want[5 + 256 + 4];
	memcpy(want, first, 5);
	memcpy(want + 5, middle, 256);
	memcpy(want + 5 + 256, last, 4);
	assert_non_null(c->got[0]);
	assert_int_equal(c->got_len[0], sizeof(want));
	assert_memory_equal(c->got[0], want, sizeof(want));
	assert_non_null(c->got[1]);
	assert_int_equal(c->got_len[1], PUSH_BIG);
	assert_memory_equal(c->got[1], h->open_big, PUSH_BIG);
	/* What the kernel did not take at once was kept, then drained. */
	if (h->unsent_after_open > 0)
		WAIT_FOR(h, h->drains >= 1);
	WAIT_FOR(h, h->closes == 1);
}

/* --- the peer's protocol --- */

static void on_nng_pipe_removed(nng_pipe pipe, nng_pipe_ev ev, void *arg)
{
	(void)pipe;
	(void)ev;
	atomic_fetch_add((atomic_int *)arg, 1);
}

/*
 * Role "--push0-dialer URL" (a child process): an NNG push0 socket dialing
 * URL once. Reports "removed" when NNG dropped the pipe the server refused,
 * keeps the socket until stdin becomes readable (the test closed it), and
 * leaves without nng_close: NNG 1.5.2 redials at once after a rejected
 * pipe about half the time (its back-off is "(int)random % back_off",
 * often negative), and closing a socket while such a redial is under way
 * leaks the dialer (seen under LeakSanitizer in about 1 of 10 such closes);
 * its client-side closes have been seen to hang too. The kernel closes the
 * socket at exit.
 */
static _Noreturn void role_push0_dialer(const char *url)
{
	struct pollfd in = {.fd = 0, .events = POLLIN};
	int64_t deadline = test_now_ms() + WAIT_MS;
	atomic_int removed = 0;
	nng_socket s;

	if (nng_push0_open(&s) != 0 ||
	    nng_socket_set_ms(s, NNG_OPT_RECONNMINT, 3600000) != 0 ||
	    nng_pipe_notify(s, NNG_PIPE_EV_REM_POST, on_nng_pipe_removed,
	                    &removed) != 0 ||
	    nng_dial(s, url, NULL, NNG_FLAG_NONBLOCK) != 0)
		_exit(2);
	while (atomic_load(&removed) < 1 && test_now_ms() < deadline)
		test_pause_ms(5);
	if (atomic_load(&removed) < 1)
		_exit(3);
	if (printf("removed\n") < 0 || fflush(stdout) != 0)
		_exit(4);
	poll(&in, 1, 60000);
	_exit(0);
}

/* Whether the push0 dialer reported its pipe removed (latched). */
static bool push0_pipe_removed(struct harness *h)
{
	char line[32];

	if (!h->push0_pipe_removed &&
	    child_proc_read_line(&h->push0, line, sizeof(line), 0) == 1)
		h->push0_pipe_removed = strcmp(line, "removed") == 0;
	return h->push0_pipe_removed;
}

/* An NNG push0 client dialing a rep0 server (which accepts req0 only)
 * never opens a pipe; a req0 client after it does, and is the only one. */
static void test_push0_peer_of_a_rep0_server_never_opens_a_pipe(void **state)
{
	struct harness *h = *state;
	const char *argv[] = {CHILD_PROC_SELF, "--push0-dialer", h->url, NULL};
	start_server(h);
	assert_int_equal(child_proc_start(&h->push0, argv), 0);
	/* The server logs the refused connection; NNG drops its pipe too
	 * (push0 takes pull0 peers only). */
	WAIT_FOR(h, h->logs >= 1 && push0_pipe_removed(h));
	struct nng_client *c = start_client(h, 0, CLIENT_REQ, "good", 1);
	join_client(h, c);
	assert_int_equal(c->rv, 0);
	assert_int_equal(h->opens, 1);
	assert_int_equal(h->messages, 1);
	assert_int_equal(child_proc_finish(&h->push0, WAIT_MS), 0);
}

/* A raw peer sending the header of another protocol, or no SP header at
 * all, is closed without on_open or on_close; the listener keeps
 * serving. */
static void test_header_of_a_wrong_protocol_is_closed(void **state)
{
	struct harness *h = *state;
	uint8_t hdr[8], got[8];
	start_server(h);

	int fd = raw_connect(h, h->path);
	header_of(hdr, SP_PROTO_PUSH0);
	raw_send_all(h, fd, hdr, sizeof(hdr));
	raw_recv_exact(h, fd, got, sizeof(got)); /* the server's header */
	assert_int_equal(raw_wait_closed(h, fd), 0);
	raw_close(h, fd);

	fd = raw_connect(h, h->path);
	raw_send_all(h, fd, "GET / HT", 8);
	assert_int_equal(raw_wait_closed(h, fd), 0);
	raw_close(h, fd);

	assert_int_equal(h->opens, 0);
	assert_int_equal(h->closes, 0);
	fd = raw_connect(h, h->path);
	raw_open_pipe(h, fd, SP_PROTO_REQ0, SP_PROTO_REP0);
	assert_int_equal(h->opens, 1);
}

/* --- frames --- */

static void test_frame_of_another_type_closes_the_pipe(void **state)
{
	struct harness *h = *state;
	uint8_t f[9 + 5];
	start_server(h);
	int fd = raw_connect(h, h->path);
	raw_open_pipe(h, fd, SP_PROTO_REQ0, SP_PROTO_REP0);
	frame(f, "hello", 5);
	f[0] = 0x02;
	raw_send_all(h, fd, f, sizeof(f));
	assert_int_equal(raw_wait_closed(h, fd), 0);
	WAIT_FOR(h, h->closes == 1);
	assert_int_equal(h->messages, 0);
	assert_null(h->pipe);
}

/* Frame heads announcing max_message + 1 bytes, and 2^64 - 1 bytes, close
 * their pipes before any body arrives. */
static void test_frame_over_max_message_closes_the_pipe(void **state)
{
	struct harness *h = *state;
	const uint64_t lens[] = {1025, UINT64_MAX};
	h->cfg.max_message = 1024;
	start_server(h);
	for (int i = 0; i < 2; i++) {
		uint8_t head[9] = {0x01};
		int fd = raw_connect(h, h->path);
		raw_open_pipe(h, fd, SP_PROTO_REQ0, SP_PROTO_REP0);
		put_be64(head + 1, lens[i]);
		raw_send_all(h, fd, head, sizeof(head));
		assert_int_equal(raw_wait_closed(h, fd), 0);
		WAIT_FOR(h, h->closes == i + 1);
		raw_close(h, fd);
	}
	assert_int_equal(h->messages, 0);
}

/* An empty message and one of exactly max_message bytes are delivered. */
static void test_frames_up_to_max_message_are_delivered(void **state)
{
	struct harness *h = *state;
	static uint8_t body[1024], f[9 + 1024];
	h->cfg.max_message = 1024;
	h->mode = REPLY_NONE;
	for (size_t i = 0; i < sizeof(body); i++)
		body[i] = (uint8_t)(255 - i);
	start_server(h);
	int fd = raw_connect(h, h->path);
	raw_open_pipe(h, fd, SP_PROTO_REQ0, SP_PROTO_REP0);

	raw_send_all(h, fd, f, frame(f, "", 0));
	WAIT_FOR(h, h->messages == 1);
	assert_int_equal(h->last_len, 0);

	raw_send_all(h, fd, f, frame(f, body, sizeof(body)));
	WAIT_FOR(h, h->messages == 2);
	assert_int_equal(h->last_len, sizeof(body));
	assert_memory_equal(h->last, body, sizeof(body));
	assert_int_equal(h->closes, 0);
	assert_true(sp_pipe_is_open(h->pipe));
}

/* A frame larger than the first read buffer, written in six pieces each
 * read by the server before the next is written, is one whole message;
 * two frames in one write are two. */
static void test_frame_split_across_writes_is_delivered_whole(void **state)
{
	struct harness *h = *state;
	const size_t len = 100000;
	const size_t cuts[] = {0, 1, 5, 9, 10, 70000, 9 + len};
	uint8_t *f = malloc(9 + len);
	uint8_t *body = malloc(len);
	assert_non_null(f);
	assert_non_null(body);
	for (size_t i = 0; i < len; i++)
		body[i] = (uint8_t)(i ^ (i >> 8));
	frame(f, body, len);
	h->mode = REPLY_NONE;
	start_server(h);
	int fd = raw_connect(h, h->path);
	raw_open_pipe(h, fd, SP_PROTO_REQ0, SP_PROTO_REP0);

	for (int i = 0; i < 6; i++) {
		raw_send_all(h, fd, f + cuts[i], cuts[i + 1] - cuts[i]);
		if (i < 5) {
			WAIT_FOR(h, outq(fd) == 0);
			assert_int_equal(h->messages, 0);
		}
	}
	WAIT_FOR(h, h->messages == 1);
	assert_int_equal(h->last_len, len);
	assert_memory_equal(h->last, body, len);
	free(f);
	free(body);

	uint8_t two[9 + 3 + 9 + 5];
	size_t n = frame(two, "abc", 3);
	n += frame(two + n, "defgh", 5);
	raw_send_all(h, fd, two, n);
	WAIT_FOR(h, h->messages == 3);
	assert_int_equal(h->last_len, 5);
	assert_memory_equal(h->last, "defgh", 5);
	assert_int_equal(h->closes, 0);
}

/* --- the socket file --- */

/* The file has ipc_mode from listen on, whatever the umask. */
static void test_socket_file_has_ipc_mode(void **state)
{
	struct harness *h = *state;
	char path2[PATH_CAP], err[256] = "";
	struct stat st;
	snprintf(path2, sizeof(path2), "%s/ctl2.ipc", h->dir);
	mode_t old = umask(077);
	int rc1 =
	    listen_on(h, &h->srv, h->url, h->path, 0600, err, sizeof(err));
	int rc2 =
	    listen_on(h, &h->srv2, h->url2, path2, 0660, err, sizeof(err));
	umask(old);
	assert_int_equal(rc1, 0);
	assert_int_equal(rc2, 0);
	assert_int_equal(stat(h->path, &st), 0);
	assert_true(S_ISSOCK(st.st_mode));
	assert_int_equal(st.st_mode & 07777, 0600);
	assert_int_equal(stat(path2, &st), 0);
	assert_true(S_ISSOCK(st.st_mode));
	assert_int_equal(st.st_mode & 07777, 0660);
}

static void test_missing_parent_directories_are_created(void **state)
{
	struct harness *h = *state;
	char parent[96];
	struct stat st;
	snprintf(parent, sizeof(parent), "%s/a/b", h->dir);
	snprintf(h->path, sizeof(h->path), "%s/ctl.ipc", parent);
	assert_int_equal(stat(parent, &st), -1);
	start_server(h);
	assert_int_equal(stat(parent, &st), 0);
	assert_true(S_ISDIR(st.st_mode));
	assert_int_equal(stat(h->path, &st), 0);
	assert_true(S_ISSOCK(st.st_mode));
	int fd = raw_connect(h, h->path);
	raw_open_pipe(h, fd, SP_PROTO_REQ0, SP_PROTO_REP0);
}

/* What listen creates is the user's alone, whatever the umask: 0700,
 * plus search permission (only) for the group when ipc_mode admits it. */
static void test_created_directories_are_the_users_alone(void **state)
{
	struct harness *h = *state;
	char a[96], ab[112], g[96], path2[PATH_CAP], err[512] = "";
	struct stat st;
	snprintf(a, sizeof(a), "%s/a", h->dir);
	snprintf(ab, sizeof(ab), "%s/b", a);
	snprintf(h->path, sizeof(h->path), "%s/ctl.ipc", ab);
	snprintf(g, sizeof(g), "%s/g", h->dir);
	snprintf(path2, sizeof(path2), "%s/ctl.ipc", g);
	mode_t old = umask(0);
	int rc1 =
	    listen_on(h, &h->srv, h->url, h->path, 0600, err, sizeof(err));
	umask(077);
	int rc2 =
	    listen_on(h, &h->srv2, h->url2, path2, 0660, err, sizeof(err));
	umask(old);
	if (rc1 || rc2)
		print_message("sp_server_listen: %s\n", err);
	assert_int_equal(rc1, 0);
	assert_int_equal(rc2, 0);
	assert_int_equal(stat(a, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0700);
	assert_int_equal(stat(ab, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0700);
	assert_int_equal(stat(g, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0710);
}

/* Listening in dir fails, with a reason naming dir and containing want,
 * and leaves no socket file. */
static void expect_refused(struct harness *h, const char *dir, const char *want)
{
	char err[512] = "";
	struct stat st;
	int rc = listen_on(h, &h->srv, h->url, h->path, h->cfg.ipc_mode, err,
	                   sizeof(err));
	if (rc == 0)
		fail_msg("listen on %s succeeded", h->path);
	assert_null(h->srv);
	if (!strstr(err, dir) || !strstr(err, want))
		fail_msg("reason without '%s' or '%s': %s", dir, want, err);
	errno = 0;
	assert_int_equal(lstat(h->path, &st), -1);
	assert_int_equal(errno, ENOENT);
}

/* Whoever can write the directory can replace the socket file: group- or
 * other-writable directories are refused, with the fix in the reason. */
static void test_directory_others_can_write_is_refused(void **state)
{
	struct harness *h = *state;
	assert_int_equal(chmod(h->dir, 0777), 0);
	expect_refused(h, h->dir, "chmod go-w");
	assert_int_equal(chmod(h->dir, 0730), 0);
	expect_refused(h, h->dir, "writable by group or others (mode 0730)");
	assert_int_equal(chmod(h->dir, 0755), 0);
	start_server(h);
}

/* So is a directory that belongs to another user, or is reached through
 * a symbolic link of another user (who could point it elsewhere). */
static void test_directory_of_another_user_is_refused(void **state)
{
	struct harness *h = *state;
	char real[96], link[96];
	if (geteuid() != 0)
		skip(); /* only root can give a directory away */
	assert_int_equal(chown(h->dir, 65534, 65534), 0);
	expect_refused(h, h->dir, "belongs to uid 65534");
	assert_int_equal(chown(h->dir, 0, 0), 0);

	snprintf(real, sizeof(real), "%s/real", h->dir);
	snprintf(link, sizeof(link), "%s/link", h->dir);
	assert_int_equal(mkdir(real, 0700), 0);
	assert_int_equal(symlink(real, link), 0);
	assert_int_equal(lchown(link, 65534, 65534), 0);
	snprintf(h->path, sizeof(h->path), "%s/ctl.ipc", link);
	expect_refused(h, link, "belongs to uid 65534");
	assert_int_equal(lchown(link, 0, 0), 0);
	start_server(h);
}

/* /tmp itself (1777) is refused like any directory others can write:
 * the socket needs a directory of its own. */
static void test_socket_directly_in_tmp_is_refused(void **state)
{
	struct harness *h = *state;
	snprintf(h->path, sizeof(h->path), "/tmp/wsgate-sp-%ld.ipc",
	         (long)getpid());
	expect_refused(h, "/tmp",
	               geteuid() == 0 ? "is shared (mode 1777)" : "uid");
}

/* A socket file nothing listens on (its socket closed, the file left)
 * is replaced, and the new one serves. */
static void test_stale_socket_file_is_replaced(void **state)
{
	struct harness *h = *state;
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	struct stat st;
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(fd >= 0);
	unix_addr(&sa, h->path);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	close(fd);
	assert_int_equal(lstat(h->path, &st), 0);
	assert_true(S_ISSOCK(st.st_mode));

	start_server(h);
	fd = raw_connect(h, h->path);
	raw_open_pipe(h, fd, SP_PROTO_REQ0, SP_PROTO_REP0);
	struct nng_client *c = start_client(h, 0, CLIENT_REQ, "stale", 1);
	join_client(h, c);
	assert_int_equal(c->rv, 0);
	assert_int_equal(h->opens, 2);
}

/* Listening where a live server listens fails with a reason and leaves
 * the live server and its file alone. */
static void test_listen_on_a_live_socket_fails_with_a_reason(void **state)
{
	struct harness *h = *state;
	char err[256] = "";
	struct stat before, after;
	start_server(h);
	assert_int_equal(stat(h->path, &before), 0);

	assert_int_equal(
	    listen_on(h, &h->srv2, h->url2, h->path, 0600, err, sizeof(err)),
	    -1);
	assert_null(h->srv2);
	assert_true(err[0] != '\0');
	assert_non_null(memchr(err, '\0', sizeof(err)));

	assert_int_equal(stat(h->path, &after), 0);
	assert_true(before.st_ino == after.st_ino);
	int fd = raw_connect(h, h->path);
	raw_open_pipe(h, fd, SP_PROTO_REQ0, SP_PROTO_REP0);
	assert_int_equal(h->opens, 1);
}

/* sp_server_close closes every pipe (on_close for each; the peer reads
 * EOF) and removes the socket file. */
static void test_close_closes_pipes_and_removes_the_socket_file(void **state)
{
	struct harness *h = *state;
	struct stat st;
	start_server(h);
	int a = raw_connect(h, h->path);
	raw_open_pipe(h, a, SP_PROTO_REQ0, SP_PROTO_REP0);
	int b = raw_connect(h, h->path);
	raw_open_pipe(h, b, SP_PROTO_REQ0, SP_PROTO_REP0);
	assert_int_equal(stat(h->path, &st), 0);

	sp_server_close(h->srv);
	h->srv = NULL;
	assert_int_equal(h->closes, 2);
	assert_int_equal(raw_wait_closed(h, a), 0);
	assert_int_equal(raw_wait_closed(h, b), 0);
	errno = 0;
	assert_int_equal(lstat(h->path, &st), -1);
	assert_int_equal(errno, ENOENT);
}

/* --- output the peer does not read --- */

/* A raw peer that never reads sends requests one at a time, each answered
 * with BIG_REPLY bytes: once more than max_unsent is kept, the server
 * stops reading (later requests wait in the socket, on_message is not
 * called). When the peer reads, the output drains (on_drained) and the
 * waiting requests are answered, in order. */
static void test_unread_output_over_max_unsent_stops_reading(void **state)
{
	struct harness *h = *state;
	uint8_t req[13];
	h->cfg.max_unsent = 64u << 10;
	h->mode = REPLY_BIG;
	start_server(h);
	int fd = raw_connect(h, h->path);
	raw_open_pipe(h, fd, SP_PROTO_REQ0, SP_PROTO_REP0);
	struct sp_pipe *p = h->pipe;
	hold(h, p);

	int sent = 0;
	while (sp_pipe_unsent(p) <= h->cfg.max_unsent && sent < 64) {
		raw_send_all(h, fd, req, request(req, (uint32_t)sent++));
		WAIT_FOR(h, h->messages == sent);
	}
	assert_true(sp_pipe_unsent(p) > h->cfg.max_unsent);
	assert_int_equal(h->send_failures, 0);

	int frozen = h->messages;
	size_t unsent = sp_pipe_unsent(p);
	for (int i = 0; i < 3; i++)
		raw_send_all(h, fd, req, request(req, (uint32_t)sent++));
	settle(h, SETTLE_MS);
	assert_int_equal(h->messages, frozen);
	assert_int_equal(sp_pipe_unsent(p), unsent);
	assert_true(outq(fd) > 0); /* the requests wait, unread */
	assert_int_equal(h->drains, 0);

	struct frame_reader r = {0};
	int64_t deadline = test_now_ms() + WAIT_MS;
	while ((r.frames < sent || h->messages < sent) &&
	       test_now_ms() < deadline) {
		assert_true(raw_read_frames(fd, &r));
		pump(h);
	}
	assert_int_equal(h->messages, sent);
	assert_int_equal(r.frames, sent);
	assert_int_equal(r.bad, 0);
	assert_true(h->drains >= 1);
	assert_int_equal(sp_pipe_unsent(p), 0);
	assert_true(sp_pipe_is_open(p));
	assert_int_equal(h->send_failures, 0);
}

/* The same peer sends eight requests in one write, which the server reads
 * at once. Once more than max_unsent is kept, the requests already read
 * must wait too: no on_message runs while unsent output is over
 * max_unsent (else a peer that does not read makes the server keep a
 * reply for every request that fits in one read). */
static void test_no_message_is_delivered_while_unsent_is_over_max(void **state)
{
	struct harness *h = *state;
	uint8_t batch[8 * 13];
	size_t n = 0;
	h->cfg.max_unsent = 64u << 10;
	h->mode = REPLY_BIG;
	start_server(h);
	int fd = raw_connect(h, h->path);
	raw_open_pipe(h, fd, SP_PROTO_REQ0, SP_PROTO_REP0);

	for (uint32_t i = 0; i < 8; i++)
		n += request(batch + n, i);
	raw_send_all(h, fd, batch, n);
	WAIT_FOR(h, h->messages >= 1);
	settle(h, SETTLE_MS);
	assert_true(h->pipe && sp_pipe_unsent(h->pipe) > h->cfg.max_unsent);
	if (h->max_unsent_seen > h->cfg.max_unsent)
		print_message(
		    "on_message ran %d times for 8 requests; the most "
		    "unsent output it saw: %zu (max_unsent %zu)\n",
		    h->messages, h->max_unsent_seen, h->cfg.max_unsent);
	assert_true(h->max_unsent_seen <= h->cfg.max_unsent);
	assert_true(h->messages < 8);

	struct frame_reader r = {0};
	int64_t deadline = test_now_ms() + WAIT_MS;
	while ((r.frames < 8 || h->messages < 8) && test_now_ms() < deadline) {
		assert_true(raw_read_frames(fd, &r));
		pump(h);
	}
	assert_int_equal(h->messages, 8);
	assert_int_equal(r.frames, 8);
	assert_int_equal(r.bad, 0);
}

/* --- pausing and closing from on_message --- */

/* on_message stops reading after the first of three frames sent in one
 * write; sp_pipe_set_reading(true) delivers the other two without the
 * peer sending anything more. */
static void test_paused_pipe_delivers_read_frames_on_resume(void **state)
{
	struct harness *h = *state;
	uint8_t three[3 * (9 + 3)];
	size_t n = 0;
	h->mode = REPLY_PAUSE;
	start_server(h);
	int fd = raw_connect(h, h->path);
	raw_open_pipe(h, fd, SP_PROTO_REQ0, SP_PROTO_REP0);
	n += frame(three + n, "one", 3);
	n += frame(three + n, "two", 3);
	n += frame(three + n, "six", 3);
	raw_send_all(h, fd, three, n);
	WAIT_FOR(h, h->messages == 1);
	settle(h, SETTLE_MS);
	assert_int_equal(h->messages, 1);
	assert_memory_equal(h->last, "one", 3);

	sp_pipe_set_reading(h->pipe, true);
	WAIT_FOR(h, h->messages == 3);
	assert_int_equal(h->last_len, 3);
	assert_memory_equal(h->last, "six", 3);
	assert_int_equal(h->closes, 0);
}

/* A pipe on_message closes gets no further message, even one already
 * read; on_close runs once and the peer reads EOF. */
static void test_pipe_closed_in_on_message_gets_no_more_messages(void **state)
{
	struct harness *h = *state;
	uint8_t two[2 * (9 + 3)];
	size_t n = 0;
	h->mode = REPLY_CLOSE;
	start_server(h);
	int fd = raw_connect(h, h->path);
	raw_open_pipe(h, fd, SP_PROTO_REQ0, SP_PROTO_REP0);
	n += frame(two + n, "one", 3);
	n += frame(two + n, "two", 3);
	raw_send_all(h, fd, two, n);
	assert_int_equal(raw_wait_closed(h, fd), 0);
	WAIT_FOR(h, h->closes == 1);
	settle(h, SETTLE_MS);
	assert_int_equal(h->messages, 1);
	assert_int_equal(h->closes, 1);
	assert_null(h->pipe);
}

/* --- held pipes --- */

/* A pipe held in on_message stays valid after its peer left: closed,
 * sends refused, closing again does nothing, its data kept; the last
 * release frees it. */
static void test_held_pipe_stays_valid_after_the_peer_leaves(void **state)
{
	struct harness *h = *state;
	uint8_t f[9 + 4];
	h->mode = REPLY_HOLD;
	start_server(h);
	int fd = raw_connect(h, h->path);
	raw_open_pipe(h, fd, SP_PROTO_REQ0, SP_PROTO_REP0);
	raw_send_all(h, fd, f, frame(f, "ping", 4));
	WAIT_FOR(h, h->messages == 1);
	struct sp_pipe *p = h->holds[0];
	assert_non_null(p);
	assert_true(sp_pipe_is_open(p));

	raw_close(h, fd);
	WAIT_FOR(h, h->closes == 1);
	assert_false(sp_pipe_is_open(p));
	struct iovec v = {.iov_base = "pong", .iov_len = 4};
	assert_int_equal(sp_pipe_send(p, &v, 1), -1);
	assert_int_equal(sp_pipe_unsent(p), 0);
	assert_ptr_equal(sp_pipe_data(p), h);
	sp_pipe_set_reading(p, true);
	sp_pipe_close(p);
	assert_int_equal(h->closes, 1);
	settle(h, 50);
	assert_int_equal(h->messages, 1);
	release(h, p); /* freed here: AddressSanitizer checks */
}

/* A pipe held past sp_server_close is closed with the server (on_close
 * ran) and freed by its last release. */
static void test_held_pipe_outlives_the_server(void **state)
{
	struct harness *h = *state;
	h->hold_on_open = true;
	start_server(h);
	int fd = raw_connect(h, h->path);
	raw_open_pipe(h, fd, SP_PROTO_REQ0, SP_PROTO_REP0);
	struct sp_pipe *p = h->holds[0];
	assert_non_null(p);

	sp_server_close(h->srv);
	h->srv = NULL;
	assert_int_equal(h->closes, 1);
	assert_false(sp_pipe_is_open(p));
	struct iovec v = {.iov_base = "late", .iov_len = 4};
	assert_int_equal(sp_pipe_send(p, &v, 1), -1);
	sp_pipe_close(p);
	assert_int_equal(h->closes, 1);
	assert_int_equal(raw_wait_closed(h, fd), 0);
	release(h, p);
}

int main(int argc, char **argv)
{
	if (argc == 3 && strcmp(argv[1], "--push0-dialer") == 0)
		role_push0_dialer(argv[2]);
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
	const struct CMUnitTest tests[] = {
	    T(test_req0_request_is_echoed),
	    T(test_req0_requests_in_a_row_are_answered),
	    T(test_two_req0_clients_are_served_at_once),
	    T(test_push0_messages_reach_pull0_byte_for_byte),
	    T(test_push0_peer_of_a_rep0_server_never_opens_a_pipe),
	    T(test_header_of_a_wrong_protocol_is_closed),
	    T(test_frame_of_another_type_closes_the_pipe),
	    T(test_frame_over_max_message_closes_the_pipe),
	    T(test_frames_up_to_max_message_are_delivered),
	    T(test_frame_split_across_writes_is_delivered_whole),
	    T(test_socket_file_has_ipc_mode),
	    T(test_missing_parent_directories_are_created),
	    T(test_created_directories_are_the_users_alone),
	    T(test_directory_others_can_write_is_refused),
	    T(test_directory_of_another_user_is_refused),
	    T(test_socket_directly_in_tmp_is_refused),
	    T(test_stale_socket_file_is_replaced),
	    T(test_listen_on_a_live_socket_fails_with_a_reason),
	    T(test_close_closes_pipes_and_removes_the_socket_file),
	    T(test_unread_output_over_max_unsent_stops_reading),
	    T(test_no_message_is_delivered_while_unsent_is_over_max),
	    T(test_paused_pipe_delivers_read_frames_on_resume),
	    T(test_pipe_closed_in_on_message_gets_no_more_messages),
	    T(test_held_pipe_stays_valid_after_the_peer_leaves),
	    T(test_held_pipe_outlives_the_server),
	};
#undef T
	int failed = cmocka_run_group_tests(tests, NULL, NULL);
	nng_fini();
	return failed;
}
