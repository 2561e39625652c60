/*
 * wsclient: the epoll WebSocket client pool (see wsclient.h).
 *
 * Reads go through one shared scratch buffer: a connection keeps only the
 * tail of an incomplete frame (usually nothing), so 10,000 idle
 * connections cost a few hundred bytes each here, not a read buffer each.
 */
#include "wsclient.h"
#include "bench_common.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define SCRATCH_SIZE   (1024 * 1024)
#define MAX_MESSAGE    (512 * 1024) /* larger server messages: error */
#define MAX_HEADERS    8192
#define READS_PER_WAKE 8
#define EPOLL_BATCH    512

/* The RFC 6455 example key and its accept value: the key need not be
 * random for a load generator, and the answer is still checked. */
#define WS_KEY    "dGhlIHNhbXBsZSBub25jZQ=="
#define WS_ACCEPT "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

enum conn_state {
	CS_IDLE = 0,   /* not started */
	CS_CONNECTING, /* connect() in progress */
	CS_HANDSHAKE,  /* request sent (or being sent), waiting for 101 */
	CS_OPEN,       /* 101 received */
	CS_CLOSING,    /* we sent a close frame */
	CS_DONE,       /* fd closed */
};

struct conn {
	int fd;
	uint32_t user;
	uint8_t state;
	bool ready;
	bool failed;
	bool want_out; /* EPOLLOUT registered */
	uint8_t frag_op;
	int64_t t_start;
	uint64_t last_seq; /* connected.seq, then each event's */
	bool got_event;
	uint64_t received; /* own events */
	char *in;          /* unparsed tail */
	uint32_t in_len;
	char *out; /* unsent bytes */
	uint32_t out_len, out_off;
	char *frag; /* fragmented message being reassembled */
	uint32_t frag_len;
};

struct pool {
	struct pool_cfg cfg;
	int ep;
	struct conn *c;
	unsigned next; /* next connection to start */
	bool connecting;
	bool closing;
	int64_t t0;
	int64_t last_timeout_scan;
	char *scratch;
	struct pool_stats st;
};

static void set_error(struct pool *p, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void set_error(struct pool *p, const char *fmt, ...)
{
	if (p->st.first_error[0] != '\0')
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(p->st.first_error, sizeof(p->st.first_error), fmt, ap);
	va_end(ap);
}

struct pool *pool_new(const struct pool_cfg *cfg)
{
	struct pool *p = calloc(1, sizeof(*p));
	if (p == NULL)
		return NULL;
	p->cfg = *cfg;
	p->st.total = cfg->users * cfg->conns_per_user;
	p->c = calloc(p->st.total ? p->st.total : 1, sizeof(*p->c));
	p->scratch = malloc(SCRATCH_SIZE);
	p->ep = epoll_create1(EPOLL_CLOEXEC);
	if (p->c == NULL || p->scratch == NULL || p->ep < 0) {
		pool_free(p);
		return NULL;
	}
	for (unsigned i = 0; i < p->st.total; i++) {
		p->c[i].fd = -1;
		p->c[i].user = i % cfg->users;
	}
	if (p->cfg.handshake_timeout_ms <= 0)
		p->cfg.handshake_timeout_ms = 30000;
	histo_init(&p->st.handshake);
	histo_init(&p->st.latency);
	return p;
}

static void conn_release(struct pool *p, struct conn *c)
{
	if (c->fd >= 0) {
		epoll_ctl(p->ep, EPOLL_CTL_DEL, c->fd, NULL);
		close(c->fd);
		c->fd = -1;
	}
	free(c->in);
	free(c->out);
	free(c->frag);
	c->in = c->out = c->frag = NULL;
	c->in_len = c->out_len = c->out_off = c->frag_len = 0;
	c->state = CS_DONE;
}

void pool_free(struct pool *p)
{
	if (p == NULL)
		return;
	if (p->c != NULL)
		for (unsigned i = 0; i < p->st.total; i++)
			conn_release(p, &p->c[i]);
	if (p->ep >= 0)
		close(p->ep);
	free(p->c);
	free(p->scratch);
	free(p);
}

void pool_start_connecting(struct pool *p)
{
	p->connecting = true;
	p->t0 = bench_now_ns();
	p->st.first_start_ns = p->t0;
}

int pool_connect_done(const struct pool *p)
{
	return p->st.ready + p->st.failed >= p->st.total;
}

const struct pool_stats *pool_stats(const struct pool *p)
{
	return &p->st;
}

static void conn_fail(struct pool *p, struct conn *c, const char *why)
{
	if (!c->ready && !c->failed) {
		c->failed = true;
		p->st.failed++;
		set_error(p, "connection %u (user %s): %s",
		          (unsigned)(c - p->c), p->cfg.user_names[c->user],
		          why);
	} else if (c->ready && !p->closing && c->state != CS_CLOSING &&
	           c->state != CS_DONE) {
		p->st.closed_by_server++;
		set_error(p, "connection %u (user %s): %s",
		          (unsigned)(c - p->c), p->cfg.user_names[c->user],
		          why);
	}
	conn_release(p, c);
}

static void conn_set_out(struct pool *p, struct conn *c, bool want)
{
	if (c->fd < 0 || c->want_out == want)
		return;
	struct epoll_event ev = {.events = EPOLLIN | (want ? EPOLLOUT : 0),
	                         .data.u32 = (uint32_t)(c - p->c)};
	epoll_ctl(p->ep, EPOLL_CTL_MOD, c->fd, &ev);
	c->want_out = want;
}

/* Writes what is pending; keeps EPOLLOUT only while something is left. */
static int conn_flush(struct pool *p, struct conn *c)
{
	while (c->out_off < c->out_len) {
		ssize_t n = send(c->fd, c->out + c->out_off,
		                 c->out_len - c->out_off, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK) {
				conn_set_out(p, c, true);
				return 0;
			}
			if (errno == EINTR)
				continue;
			return -1;
		}
		c->out_off += (uint32_t)n;
	}
	free(c->out);
	c->out = NULL;
	c->out_len = c->out_off = 0;
	conn_set_out(p, c, false);
	return 0;
}

static int conn_queue(struct conn *c, const void *data, size_t len)
{
	char *n = realloc(c->out, c->out_len + len);
	if (n == NULL)
		return -1;
	memcpy(n + c->out_len, data, len);
	c->out = n;
	c->out_len += (uint32_t)len;
	return 0;
}

/* Queues one masked client frame (payload <= 125 bytes). */
static int conn_queue_frame(struct conn *c, int opcode, const void *data,
                            size_t len)
{
	unsigned char f[6 + 125];
	const unsigned char *d = data;
	if (len > 125)
		len = 125;
	f[0] = (unsigned char)(0x80 | opcode);
	f[1] = (unsigned char)(0x80 | len);
	uint32_t mask = (uint32_t)rand();
	memcpy(f + 2, &mask, 4);
	for (size_t i = 0; i < len; i++)
		f[6 + i] = d[i] ^ f[2 + (i & 3)];
	return conn_queue(c, f, 6 + len);
}

static void conn_start(struct pool *p, struct conn *c)
{
	char req[8192];
	struct sockaddr_in sa = {.sin_family = AF_INET,
	                         .sin_port = htons(p->cfg.port),
	                         .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	int one = 1;

	p->st.started++;
	c->t_start = bench_now_ns();
	c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (c->fd < 0) {
		conn_fail(p, c, strerror(errno));
		return;
	}
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	int n = snprintf(req, sizeof(req),
	                 "GET %s HTTP/1.1\r\n"
	                 "Host: 127.0.0.1:%u\r\n"
	                 "Upgrade: websocket\r\n"
	                 "Connection: Upgrade\r\n"
	                 "Sec-WebSocket-Key: " WS_KEY "\r\n"
	                 "Sec-WebSocket-Version: 13\r\n"
	                 "User-Agent: wsbench\r\n\r\n",
	                 p->cfg.paths[c->user], (unsigned)p->cfg.port);
	if (n <= 0 || (size_t)n >= sizeof(req) || conn_queue(c, req, n) < 0) {
		conn_fail(p, c, "request too long");
		return;
	}
	struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT,
	                         .data.u32 = (uint32_t)(c - p->c)};
	c->want_out = true;
	if (epoll_ctl(p->ep, EPOLL_CTL_ADD, c->fd, &ev) < 0) {
		conn_fail(p, c, strerror(errno));
		return;
	}
	if (connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 &&
	    errno != EINPROGRESS) {
		conn_fail(p, c, strerror(errno));
		return;
	}
	c->state = CS_CONNECTING;
}

static void conn_ready(struct pool *p, struct conn *c, int64_t now)
{
	if (c->ready)
		return;
	c->ready = true;
	p->st.ready++;
	p->st.last_ready_ns = now;
	histo_add(&p->st.handshake, (uint64_t)(now - c->t_start));
}

static const char *find(const char *s, size_t len, const char *lit,
                        size_t lit_len)
{
	const char *f = memmem(s, len, lit, lit_len);
	return f ? f + lit_len : NULL;
}
#define FIND(s, len, lit) find(s, len, lit, sizeof(lit) - 1)

static uint64_t parse_u64(const char *s, const char *end)
{
	uint64_t v = 0;
	while (s < end && *s >= '0' && *s <= '9')
		v = v * 10 + (uint64_t)(*s++ - '0');
	return v;
}

/* The user name in s (after the opening quote) is exactly name. */
static bool user_is(const char *s, const char *end, const char *name)
{
	size_t n = strlen(name);
	return s != NULL && (size_t)(end - s) > n && memcmp(s, name, n) == 0 &&
	       s[n] == '"';
}

static void on_latency(struct pool *p, const char *t, const char *end,
                       int64_t now)
{
	if (t == NULL)
		return;
	int64_t sent = (int64_t)parse_u64(t, end);
	if (sent > 0 && now >= sent)
		histo_add(&p->st.latency, (uint64_t)(now - sent));
}

static void on_event_counted(struct pool *p, int64_t now)
{
	p->st.frames++;
	if (p->st.first_recv_ns == 0)
		p->st.first_recv_ns = now;
	p->st.last_recv_ns = now;
}

static void on_text_wsgate(struct pool *p, struct conn *c, const char *d,
                           size_t len, int64_t now)
{
	const char *end = d + len;
	static const char connected[] = "{\"type\":\"connected\"";

	if (len >= sizeof(connected) - 1 &&
	    memcmp(d, connected, sizeof(connected) - 1) == 0) {
		const char *s = FIND(d, len, "\"seq\":");
		c->last_seq = s ? parse_u64(s, end) : 0;
		conn_ready(p, c, now);
		return;
	}
	const char *seq = FIND(d, len, "\"seq\":");
	if (seq == NULL) {
		p->st.other_frames++;
		if (FIND(d, len < 16 ? len : 16, "\"error\"")) {
			p->st.error_frames++;
			set_error(p, "error frame: %.*s",
			          (int)(len > 160 ? 160 : len), d);
		}
		return;
	}
	on_event_counted(p, now);
	uint64_t s = parse_u64(seq, end);
	const char *u = FIND(d, len, "\"user_id\":\"");
	if (!user_is(u, end, p->cfg.user_names[c->user])) {
		p->st.foreign++;
		set_error(p, "foreign frame on a connection of %s: %.*s",
		          p->cfg.user_names[c->user],
		          (int)(len > 160 ? 160 : len), d);
		return;
	}
	c->received++;
	if (c->got_event && s != c->last_seq + 1) {
		p->st.out_of_order++;
		set_error(p, "user %s: seq %llu after %llu",
		          p->cfg.user_names[c->user], (unsigned long long)s,
		          (unsigned long long)c->last_seq);
	}
	c->got_event = true;
	c->last_seq = s;
	const char *pl = FIND(d, len, "\"payload\":");
	if (pl != NULL)
		on_latency(p, FIND(pl, (size_t)(end - pl), "\"t\":"), end, now);
}

static void on_text_nchan(struct pool *p, struct conn *c, const char *d,
                          size_t len, int64_t now)
{
	const char *end = d + len;
	const char *t = FIND(d, len < 8 ? len : 8, "{\"t\":");
	if (t == NULL) {
		p->st.other_frames++;
		return;
	}
	on_event_counted(p, now);
	if (!user_is(FIND(d, len, "\"u\":\""), end,
	             p->cfg.user_names[c->user])) {
		p->st.foreign++;
		set_error(p, "foreign message on a subscriber of %s: %.*s",
		          p->cfg.user_names[c->user],
		          (int)(len > 160 ? 160 : len), d);
		return;
	}
	c->received++;
	on_latency(p, t, end, now);
}

static void on_close_frame(struct pool *p, struct conn *c,
                           const unsigned char *d, size_t len)
{
	int code = len >= 2 ? (d[0] << 8 | d[1]) : 1005;
	p->st.last_close_code = code;
	if (!p->closing && c->state != CS_CLOSING) {
		char why[160];
		snprintf(why, sizeof(why), "server closed with %d %.*s", code,
		         (int)(len > 2 ? (len - 2 > 100 ? 100 : len - 2) : 0),
		         (const char *)d + 2);
		unsigned char body[2] = {d[0], d[1]};
		conn_queue_frame(c, 0x8, body, len >= 2 ? 2 : 0);
		conn_flush(p, c);
		conn_fail(p, c, why);
		return;
	}
	conn_release(p, c);
}

/* Handles the frames in buf[0..len); returns how many bytes were used
 * (the rest is an incomplete frame), or -1 after closing c. */
static ssize_t conn_frames(struct pool *p, struct conn *c, unsigned char *buf,
                           size_t len, int64_t now)
{
	size_t off = 0;
	while (len - off >= 2) {
		unsigned char *f = buf + off;
		int fin = f[0] & 0x80, op = f[0] & 0x0f;
		int masked = f[1] & 0x80;
		uint64_t plen = f[1] & 0x7f;
		size_t hdr = 2;
		if (plen == 126) {
			if (len - off < 4)
				break;
			plen = (uint64_t)f[2] << 8 | f[3];
			hdr = 4;
		} else if (plen == 127) {
			if (len - off < 10)
				break;
			plen = 0;
			for (int i = 0; i < 8; i++)
				plen = plen << 8 | f[2 + i];
			hdr = 10;
		}
		if (masked)
			hdr += 4;
		if (plen > MAX_MESSAGE) {
			conn_fail(p, c, "server frame too large");
			return -1;
		}
		if (len - off < hdr + plen)
			break;
		unsigned char *d = f + hdr;
		if (masked) /* servers must not mask; tolerate it */
			for (uint64_t i = 0; i < plen; i++)
				d[i] ^= f[hdr - 4 + (i & 3)];
		off += hdr + plen;

		if (op == 0x9) { /* ping */
			p->st.pings++;
			if (conn_queue_frame(c, 0xA, d, plen) < 0 ||
			    conn_flush(p, c) < 0) {
				conn_fail(p, c, "cannot answer ping");
				return -1;
			}
			continue;
		}
		if (op == 0xA)
			continue;
		if (op == 0x8) {
			on_close_frame(p, c, d, plen);
			return -1;
		}
		if (op == 0x1 || op == 0x2 || op == 0x0) {
			if (op != 0x0 && fin && c->frag_len == 0) {
				if (p->cfg.proto == POOL_WSGATE)
					on_text_wsgate(p, c, (char *)d, plen,
					               now);
				else
					on_text_nchan(p, c, (char *)d, plen,
					              now);
				continue;
			}
			/* Fragmented: reassemble. */
			if (op != 0x0)
				c->frag_op = (uint8_t)op;
			if (c->frag_len + plen > MAX_MESSAGE) {
				conn_fail(p, c, "fragmented message too large");
				return -1;
			}
			char *n = realloc(c->frag, c->frag_len + plen + 1);
			if (n == NULL) {
				conn_fail(p, c, "out of memory");
				return -1;
			}
			memcpy(n + c->frag_len, d, plen);
			c->frag = n;
			c->frag_len += (uint32_t)plen;
			if (fin) {
				if (p->cfg.proto == POOL_WSGATE)
					on_text_wsgate(p, c, c->frag,
					               c->frag_len, now);
				else
					on_text_nchan(p, c, c->frag,
					              c->frag_len, now);
				free(c->frag);
				c->frag = NULL;
				c->frag_len = 0;
			}
			continue;
		}
		conn_fail(p, c, "unknown opcode");
		return -1;
	}
	return (ssize_t)off;
}

/* Parses the 101 in buf; returns the header length, 0 when incomplete, -1
 * after failing c. */
static ssize_t conn_handshake(struct pool *p, struct conn *c, char *buf,
                              size_t len, int64_t now)
{
	char *e = memmem(buf, len, "\r\n\r\n", 4);
	if (e == NULL) {
		if (len > MAX_HEADERS) {
			conn_fail(p, c, "handshake response too long");
			return -1;
		}
		return 0;
	}
	size_t hlen = (size_t)(e - buf) + 4;
	int status = 0;
	if (sscanf(buf, "HTTP/1.%*c %d", &status) != 1 || status != 101) {
		char why[96];
		snprintf(why, sizeof(why), "handshake got HTTP %d", status);
		conn_fail(p, c, why);
		return -1;
	}
	if (memmem(buf, hlen, WS_ACCEPT, sizeof(WS_ACCEPT) - 1) == NULL) {
		conn_fail(p, c, "bad Sec-WebSocket-Accept");
		return -1;
	}
	c->state = CS_OPEN;
	if (p->cfg.proto == POOL_NCHAN)
		conn_ready(p, c, now);
	return (ssize_t)hlen;
}

static void conn_readable(struct pool *p, struct conn *c)
{
	for (int r = 0; r < READS_PER_WAKE && c->fd >= 0; r++) {
		size_t have = c->in_len;
		if (have)
			memcpy(p->scratch, c->in, have);
		size_t room = SCRATCH_SIZE - have;
		ssize_t n = recv(c->fd, p->scratch + have, room, 0);
		if (n < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return;
			if (errno == EINTR)
				continue;
			conn_fail(p, c, strerror(errno));
			return;
		}
		if (n == 0) {
			if (c->state == CS_CLOSING) {
				conn_release(p, c);
				return;
			}
			conn_fail(p, c, "server closed TCP");
			return;
		}
		int64_t now = bench_now_ns();
		size_t len = have + (size_t)n, off = 0;
		if (c->state == CS_HANDSHAKE || c->state == CS_CONNECTING) {
			ssize_t h = conn_handshake(p, c, p->scratch, len, now);
			if (h < 0)
				return;
			off = (size_t)h;
		} else {
			p->st.bytes += (uint64_t)n;
		}
		if (c->state == CS_OPEN || c->state == CS_CLOSING) {
			ssize_t used =
			    conn_frames(p, c, (unsigned char *)p->scratch + off,
			                len - off, now);
			if (used < 0)
				return;
			off += (size_t)used;
		}
		/* Keep the incomplete tail. */
		size_t tail = len - off;
		if (tail == 0) {
			free(c->in);
			c->in = NULL;
			c->in_len = 0;
		} else {
			char *t = malloc(tail);
			if (t == NULL) {
				conn_fail(p, c, "out of memory");
				return;
			}
			memcpy(t, p->scratch + off, tail);
			free(c->in);
			c->in = t;
			c->in_len = (uint32_t)tail;
		}
		if ((size_t)n < room)
			return; /* drained */
	}
}

static void conn_writable(struct pool *p, struct conn *c)
{
	if (c->state == CS_CONNECTING) {
		int err = 0;
		socklen_t el = sizeof(err);
		getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
		if (err != 0) {
			conn_fail(p, c, strerror(err));
			return;
		}
		c->state = CS_HANDSHAKE;
	}
	if (conn_flush(p, c) < 0)
		conn_fail(p, c, strerror(errno));
}

static void scan_timeouts(struct pool *p, int64_t now)
{
	int64_t limit = (int64_t)p->cfg.handshake_timeout_ms * 1000000;
	if (now - p->last_timeout_scan < 100000000)
		return;
	p->last_timeout_scan = now;
	for (unsigned i = 0; i < p->next; i++) {
		struct conn *c = &p->c[i];
		if (!c->ready && !c->failed && c->state != CS_DONE &&
		    now - c->t_start > limit)
			conn_fail(p, c, "handshake timed out");
	}
}

int pool_service(struct pool *p, int timeout_ms)
{
	struct epoll_event evs[EPOLL_BATCH];
	int64_t now = bench_now_ns();
	bool more = false;

	if (p->connecting && p->next < p->st.total) {
		uint64_t allowed = p->st.total;
		if (p->cfg.connect_rate > 0) {
			double a =
			    (double)(now - p->t0) / 1e9 * p->cfg.connect_rate +
			    1;
			if (a < allowed)
				allowed = (uint64_t)a;
		}
		while (p->next < allowed) {
			unsigned inflight =
			    p->st.started - p->st.ready - p->st.failed;
			if (p->cfg.max_inflight &&
			    inflight >= p->cfg.max_inflight)
				break;
			conn_start(p, &p->c[p->next++]);
		}
		more = p->next < p->st.total;
		if (more && timeout_ms > 1)
			timeout_ms = 1;
	}
	if (p->connecting && !pool_connect_done(p))
		scan_timeouts(p, now);

	int n = epoll_wait(p->ep, evs, EPOLL_BATCH, timeout_ms);
	if (n < 0)
		return errno == EINTR ? 0 : -1;
	for (int i = 0; i < n; i++) {
		struct conn *c = &p->c[evs[i].data.u32];
		if (c->fd < 0)
			continue;
		if (evs[i].events & (EPOLLOUT | EPOLLERR))
			conn_writable(p, c);
		if (c->fd >= 0 && (evs[i].events & (EPOLLIN | EPOLLHUP)))
			conn_readable(p, c);
	}
	return n;
}

void pool_verify(const struct pool *p, const uint64_t *expected,
                 struct pool_verify *v)
{
	memset(v, 0, sizeof(*v));
	v->foreign = p->st.foreign;
	v->out_of_order = p->st.out_of_order;
	for (unsigned i = 0; i < p->st.total; i++) {
		const struct conn *c = &p->c[i];
		uint64_t e = expected[c->user];
		v->expected += e;
		v->received += c->received;
		if (c->received < e) {
			v->missing += e - c->received;
			v->conns_short++;
		} else {
			v->extra += c->received - e;
		}
	}
}

void pool_close_all(struct pool *p, int timeout_ms)
{
	static const unsigned char normal[2] = {0x03, 0xE8}; /* 1000 */
	unsigned open = 0;

	p->closing = true;
	p->connecting = false;
	for (unsigned i = 0; i < p->st.total; i++) {
		struct conn *c = &p->c[i];
		if (c->fd < 0)
			continue;
		if (c->state != CS_OPEN) {
			conn_release(p, c);
			continue;
		}
		c->state = CS_CLOSING;
		if (conn_queue_frame(c, 0x8, normal, 2) < 0 ||
		    conn_flush(p, c) < 0) {
			conn_release(p, c);
			continue;
		}
		open++;
	}
	int64_t deadline = bench_now_ns() + (int64_t)timeout_ms * 1000000;
	while (open > 0 && bench_now_ns() < deadline) {
		pool_service(p, 10);
		open = 0;
		for (unsigned i = 0; i < p->st.total; i++)
			open += p->c[i].fd >= 0;
	}
	for (unsigned i = 0; i < p->st.total; i++)
		conn_release(p, &p->c[i]);
}
