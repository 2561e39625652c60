/*
 * ws_client: the tests' blocking RFC 6455 client (see ws_client.h).
 *
 * One struct ws_client per connection. Bytes read from the socket go into
 * rbuf and frames are parsed out of it, so partial reads and many frames per
 * read both work; a fragmented message is collected in frag until its final
 * frame. The socket is non-blocking and every wait is a poll() bounded by the
 * caller's deadline.
 */
#include "ws_client.h"
#include "test_clock.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/rand.h>

#define WS_GUID            "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#define WS_MAX_HEAD        16384
#define WS_MAX_MESSAGE     (256u * 1024 * 1024)
#define WS_SEND_TIMEOUT_MS 5000
#define WS_READ_CHUNK      65536

/* One of these per connection; owned by the one thread that uses it. */
struct ws_client {
	int fd;
	unsigned char *rbuf; /* bytes read but not yet parsed */
	size_t rlen;
	size_t rcap;
	unsigned char *frag; /* a fragmented message being collected */
	size_t frag_len;
	size_t frag_cap;
	int frag_opcode; /* 0: no fragmented message in progress */
	char subprotocol[128];
	unsigned pings;
	bool close_sent;
	bool close_received;
	bool eof;
};

static _Thread_local char ws_err[512];

static void set_err(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(ws_err, sizeof(ws_err), fmt, ap);
	va_end(ap);
}

const char *ws_client_error(void)
{
	return ws_err;
}

static int remaining_ms(int64_t deadline)
{
	int64_t r = deadline - test_now_ms();

	if (r < 0)
		return 0;
	return r > 1000000 ? 1000000 : (int)r;
}

/* Grows *buf so that it holds at least need bytes. */
static int grow(unsigned char **buf, size_t *cap, size_t need)
{
	size_t ncap = *cap ? *cap : 256;
	unsigned char *nb;

	if (need <= *cap)
		return 0;
	while (ncap < need)
		ncap *= 2;
	nb = realloc(*buf, ncap);
	if (!nb) {
		set_err("out of memory");
		return -1;
	}
	*buf = nb;
	*cap = ncap;
	return 0;
}

static int send_all(int fd, const void *data, size_t len, int64_t deadline)
{
	const unsigned char *p = data;

	while (len > 0) {
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL);

		if (n > 0) {
			p += n;
			len -= (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			struct pollfd pfd = {.fd = fd, .events = POLLOUT};
			int rem = remaining_ms(deadline);

			if (rem == 0) {
				set_err("send: timed out");
				return WS_CLIENT_TIMEOUT;
			}
			if (poll(&pfd, 1, rem) < 0 && errno != EINTR) {
				set_err("poll: %s", strerror(errno));
				return WS_CLIENT_ERROR;
			}
			continue;
		}
		set_err("send: %s", n < 0 ? strerror(errno) : "no progress");
		return WS_CLIENT_ERROR;
	}
	return WS_CLIENT_OK;
}

static void base64(const unsigned char *in, size_t len, char *out)
{
	EVP_EncodeBlock((unsigned char *)out, in, (int)len);
}

/* The Sec-WebSocket-Accept value for key (RFC 6455, section 4.2.2). */
static int accept_for_key(const char *key, char out[29])
{
	char cat[128];
	unsigned char digest[EVP_MAX_MD_SIZE];
	unsigned int dlen = 0;

	snprintf(cat, sizeof(cat), "%s%s", key, WS_GUID);
	if (!EVP_Digest(cat, strlen(cat), digest, &dlen, EVP_sha1(), NULL) ||
	    dlen != 20)
		return -1;
	base64(digest, 20, out);
	return 0;
}

/* Finds header name in an HTTP head (lines after the first); copies its
 * value, trimmed, into out. Returns 0 when found. */
static int head_header(const char *head, const char *name, char *out,
                       size_t outlen)
{
	size_t nlen = strlen(name);
	const char *line = strstr(head, "\r\n");

	while (line && line[2] != '\0' && line[2] != '\r') {
		const char *start = line + 2;
		const char *end = strstr(start, "\r\n");

		if (!end)
			break;
		if ((size_t)(end - start) > nlen && start[nlen] == ':' &&
		    strncasecmp(start, name, nlen) == 0) {
			const char *v = start + nlen + 1;
			size_t vlen;

			while (v < end && (*v == ' ' || *v == '\t'))
				v++;
			vlen = (size_t)(end - v);
			while (vlen > 0 &&
			       (v[vlen - 1] == ' ' || v[vlen - 1] == '\t'))
				vlen--;
			if (vlen >= outlen)
				vlen = outlen - 1;
			memcpy(out, v, vlen);
			out[vlen] = '\0';
			return 0;
		}
		line = end;
	}
	return -1;
}

static int tcp_connect(uint16_t port, int rcvbuf)
{
	struct sockaddr_in sa = {.sin_family = AF_INET,
	                         .sin_port = htons(port)};
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	int one = 1;

	if (fd < 0) {
		set_err("socket: %s", strerror(errno));
		return -1;
	}
	if (rcvbuf > 0 && setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf,
	                             sizeof(rcvbuf)) < 0) {
		set_err("SO_RCVBUF: %s", strerror(errno));
		close(fd);
		return -1;
	}
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		set_err("connect 127.0.0.1:%u: %s", port, strerror(errno));
		close(fd);
		return -1;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
	return fd;
}

/* Builds the upgrade request; returns a malloc'd string. */
static char *build_request(uint16_t port, const char *path, const char *key,
                           const char *const *headers)
{
	size_t len = strlen(path) + strlen(key) + 256;
	char *req;
	size_t off;

	for (size_t i = 0; headers && headers[i]; i++)
		len += strlen(headers[i]) + 2;
	req = malloc(len);
	if (!req)
		return NULL;
	off = (size_t)snprintf(req, len,
	                       "GET %s HTTP/1.1\r\n"
	                       "Host: 127.0.0.1:%u\r\n"
	                       "Upgrade: websocket\r\n"
	                       "Connection: Upgrade\r\n"
	                       "Sec-WebSocket-Key: %s\r\n"
	                       "Sec-WebSocket-Version: 13\r\n",
	                       path, port, key);
	for (size_t i = 0; headers && headers[i]; i++)
		off += (size_t)snprintf(req + off, len - off, "%s\r\n",
		                        headers[i]);
	snprintf(req + off, len - off, "\r\n");
	return req;
}

/* Reads until the end of the HTTP head. On success head[0..*head_len) is the
 * NUL-terminated head and buf[*head_len..*got) what followed it. */
static int read_head(int fd, char *buf, size_t cap, size_t *got,
                     size_t *head_len, int64_t deadline)
{
	*got = 0;
	for (;;) {
		struct pollfd pfd = {.fd = fd, .events = POLLIN};
		char *end;
		ssize_t n;
		int rem;

		buf[*got] = '\0';
		end = strstr(buf, "\r\n\r\n");
		if (end) {
			*head_len = (size_t)(end - buf) + 4;
			return 0;
		}
		if (*got + 1 >= cap) {
			set_err("handshake: response head over %zu bytes", cap);
			return WS_CLIENT_ERROR;
		}
		n = recv(fd, buf + *got, cap - 1 - *got, 0);
		if (n > 0) {
			*got += (size_t)n;
			continue;
		}
		if (n == 0) {
			set_err("handshake: EOF after %zu bytes", *got);
			return WS_CLIENT_ERROR;
		}
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK) {
			set_err("handshake: recv: %s", strerror(errno));
			return WS_CLIENT_ERROR;
		}
		rem = remaining_ms(deadline);
		if (rem == 0) {
			set_err("handshake: no response in time");
			return WS_CLIENT_TIMEOUT;
		}
		poll(&pfd, 1, rem);
	}
}

int ws_client_connect(struct ws_client **out, uint16_t port, const char *path,
                      const char *const *headers, int timeout_ms)
{
	return ws_client_connect_rcvbuf(out, port, path, headers, 0,
	                                timeout_ms);
}

int ws_client_connect_rcvbuf(struct ws_client **out, uint16_t port,
                             const char *path, const char *const *headers,
                             int rcvbuf, int timeout_ms)
{
	int64_t deadline = test_now_ms() + timeout_ms;
	unsigned char nonce[16];
	char key[32], want[29], got_accept[64], value[256];
	char *req, *buf = NULL;
	size_t got = 0, head_len = 0;
	int fd, status, rc;
	struct ws_client *c;

	*out = NULL;
	if (RAND_bytes(nonce, sizeof(nonce)) != 1) {
		set_err("RAND_bytes failed");
		return WS_CLIENT_ERROR;
	}
	base64(nonce, sizeof(nonce), key);
	if (accept_for_key(key, want) < 0) {
		set_err("SHA-1 failed");
		return WS_CLIENT_ERROR;
	}
	fd = tcp_connect(port, rcvbuf);
	if (fd < 0)
		return WS_CLIENT_ERROR;
	req = build_request(port, path, key, headers);
	buf = malloc(WS_MAX_HEAD);
	if (!req || !buf) {
		set_err("out of memory");
		rc = WS_CLIENT_ERROR;
		goto fail;
	}
	rc = send_all(fd, req, strlen(req), deadline);
	if (rc != WS_CLIENT_OK)
		goto fail;
	rc = read_head(fd, buf, WS_MAX_HEAD, &got, &head_len, deadline);
	if (rc != 0)
		goto fail;
	buf[head_len - 2] = '\0'; /* keep the last header's CRLF */
	if (sscanf(buf, "HTTP/%*d.%*d %d", &status) != 1) {
		set_err("handshake: bad status line");
		rc = WS_CLIENT_ERROR;
		goto fail;
	}
	if (status != 101) {
		set_err("handshake: HTTP %d", status);
		rc = status;
		goto fail;
	}
	if (head_header(buf, "Upgrade", value, sizeof(value)) != 0 ||
	    strcasecmp(value, "websocket") != 0) {
		set_err("handshake: 101 without Upgrade: websocket");
		rc = WS_CLIENT_ERROR;
		goto fail;
	}
	if (head_header(buf, "Sec-WebSocket-Accept", got_accept,
	                sizeof(got_accept)) != 0 ||
	    strcmp(got_accept, want) != 0) {
		set_err("handshake: Sec-WebSocket-Accept is not %s", want);
		rc = WS_CLIENT_ERROR;
		goto fail;
	}
	c = calloc(1, sizeof(*c));
	if (!c) {
		set_err("out of memory");
		rc = WS_CLIENT_ERROR;
		goto fail;
	}
	c->fd = fd;
	head_header(buf, "Sec-WebSocket-Protocol", c->subprotocol,
	            sizeof(c->subprotocol));
	if (got > head_len) {
		if (grow(&c->rbuf, &c->rcap, got - head_len) < 0) {
			free(c);
			rc = WS_CLIENT_ERROR;
			goto fail;
		}
		memcpy(c->rbuf, buf + head_len, got - head_len);
		c->rlen = got - head_len;
	}
	free(req);
	free(buf);
	*out = c;
	return 101;
fail:
	free(req);
	free(buf);
	close(fd);
	return rc;
}

const char *ws_client_subprotocol(const struct ws_client *c)
{
	return c->subprotocol;
}

unsigned ws_client_pings_answered(const struct ws_client *c)
{
	return c->pings;
}

int ws_client_set_rcvbuf(struct ws_client *c, int bytes)
{
	if (setsockopt(c->fd, SOL_SOCKET, SO_RCVBUF, &bytes, sizeof(bytes)) <
	    0) {
		set_err("SO_RCVBUF: %s", strerror(errno));
		return -1;
	}
	return 0;
}

int ws_client_send_raw(struct ws_client *c, const void *data, size_t len)
{
	return send_all(c->fd, data, len, test_now_ms() + WS_SEND_TIMEOUT_MS);
}

int ws_client_send_frame(struct ws_client *c, int opcode, bool fin,
                         const void *data, size_t len)
{
	unsigned char *frame = malloc(len + 14);
	unsigned char mask[4];
	size_t h = 0;
	int rc;

	if (!frame) {
		set_err("out of memory");
		return WS_CLIENT_ERROR;
	}
	if (RAND_bytes(mask, sizeof(mask)) != 1) {
		free(frame);
		set_err("RAND_bytes failed");
		return WS_CLIENT_ERROR;
	}
	frame[h++] = (unsigned char)((fin ? 0x80 : 0) | (opcode & 0x0f));
	if (len < 126) {
		frame[h++] = (unsigned char)(0x80 | len);
	} else if (len <= 0xffff) {
		frame[h++] = 0x80 | 126;
		frame[h++] = (unsigned char)(len >> 8);
		frame[h++] = (unsigned char)len;
	} else {
		frame[h++] = 0x80 | 127;
		for (int i = 7; i >= 0; i--)
			frame[h++] = (unsigned char)((uint64_t)len >> (8 * i));
	}
	memcpy(frame + h, mask, 4);
	h += 4;
	for (size_t i = 0; i < len; i++)
		frame[h + i] = ((const unsigned char *)data)[i] ^ mask[i % 4];
	if (opcode == WS_OP_CLOSE)
		c->close_sent = true;
	rc = ws_client_send_raw(c, frame, h + len);
	free(frame);
	return rc;
}

int ws_client_send_text(struct ws_client *c, const char *text)
{
	return ws_client_send_frame(c, WS_OP_TEXT, true, text, strlen(text));
}

int ws_client_send_binary(struct ws_client *c, const void *data, size_t len)
{
	return ws_client_send_frame(c, WS_OP_BINARY, true, data, len);
}

int ws_client_send_ping(struct ws_client *c, const void *data, size_t len)
{
	return ws_client_send_frame(c, WS_OP_PING, true, data, len);
}

int ws_client_send_close(struct ws_client *c, int code, const char *reason)
{
	unsigned char body[125];
	size_t len = 0;

	if (code > 0) {
		size_t rlen = reason ? strlen(reason) : 0;

		if (rlen > sizeof(body) - 2)
			rlen = sizeof(body) - 2;
		body[0] = (unsigned char)(code >> 8);
		body[1] = (unsigned char)code;
		if (rlen)
			memcpy(body + 2, reason, rlen);
		len = 2 + rlen;
	}
	return ws_client_send_frame(c, WS_OP_CLOSE, true, body, len);
}

int ws_client_send_fragmented(struct ws_client *c, int opcode, const void *data,
                              size_t len, size_t fragment)
{
	const unsigned char *p = data;
	size_t off = 0;
	bool first = true;

	if (fragment == 0 || fragment >= len)
		fragment = len / 2 ? len / 2 : 1;
	do {
		size_t n = len - off < fragment ? len - off : fragment;
		bool fin = off + n == len && !first;
		int rc;

		/* A message that fits in one fragment still goes out as two
		 * frames: the first non-final, the second empty and final. */
		rc = ws_client_send_frame(
		    c, first ? opcode : WS_OP_CONTINUATION, fin, p + off, n);
		if (rc != WS_CLIENT_OK)
			return rc;
		off += n;
		first = false;
		if (fin)
			return WS_CLIENT_OK;
	} while (off < len);
	return ws_client_send_frame(c, WS_OP_CONTINUATION, true, "", 0);
}

/* One parsed frame; payload points into rbuf until the frame is consumed. */
struct frame {
	bool fin;
	int opcode;
	unsigned char *payload;
	size_t len;
	size_t size; /* header + payload bytes in rbuf */
};

/* Returns 1 with *f filled, 0 when rbuf holds no whole frame yet, or
 * WS_CLIENT_ERROR. */
static int parse_frame(struct ws_client *c, struct frame *f)
{
	unsigned char *b = c->rbuf;
	size_t h = 2;
	uint64_t len;
	bool masked;

	if (c->rlen < 2)
		return 0;
	f->fin = b[0] & 0x80;
	f->opcode = b[0] & 0x0f;
	if (b[0] & 0x70) {
		set_err("frame: reserved bits 0x%02x set", b[0] & 0x70);
		return WS_CLIENT_ERROR;
	}
	masked = b[1] & 0x80;
	len = b[1] & 0x7f;
	if (len == 126) {
		if (c->rlen < 4)
			return 0;
		len = (uint64_t)b[2] << 8 | b[3];
		h = 4;
	} else if (len == 127) {
		if (c->rlen < 10)
			return 0;
		len = 0;
		for (int i = 0; i < 8; i++)
			len = len << 8 | b[2 + i];
		h = 10;
	}
	if (len > WS_MAX_MESSAGE) {
		set_err("frame: length %llu too large",
		        (unsigned long long)len);
		return WS_CLIENT_ERROR;
	}
	if (masked)
		h += 4;
	if (c->rlen < h + len)
		return 0;
	f->payload = b + h;
	f->len = (size_t)len;
	f->size = h + (size_t)len;
	/* RFC 6455 forbids masked server frames; unmask and carry on. */
	if (masked)
		for (size_t i = 0; i < f->len; i++)
			f->payload[i] ^= b[h - 4 + i % 4];
	return 1;
}

static void consume(struct ws_client *c, size_t n)
{
	memmove(c->rbuf, c->rbuf + n, c->rlen - n);
	c->rlen -= n;
}

static int deliver(struct ws_msg *m, int opcode, const void *data, size_t len)
{
	if (grow(&m->data, &m->cap, len + 1) < 0)
		return WS_CLIENT_ERROR;
	if (len)
		memcpy(m->data, data, len);
	m->data[len] = '\0';
	m->len = len;
	m->opcode = (enum ws_opcode)opcode;
	m->close_code = 0;
	m->close_reason[0] = '\0';
	return WS_CLIENT_OK;
}

/* Handles one parsed frame. Returns 1 when a message was stored in *m, 0
 * when the frame was absorbed (ping, fragment), or WS_CLIENT_ERROR. */
static int handle_frame(struct ws_client *c, const struct frame *f,
                        struct ws_msg *m)
{
	switch (f->opcode) {
	case WS_OP_PING:
		c->pings++;
		if (!c->close_sent &&
		    ws_client_send_frame(c, WS_OP_PONG, true, f->payload,
		                         f->len) != WS_CLIENT_OK)
			return WS_CLIENT_ERROR;
		return 0;
	case WS_OP_PONG:
		return deliver(m, WS_OP_PONG, f->payload, f->len) < 0
		           ? WS_CLIENT_ERROR
		           : 1;
	case WS_OP_CLOSE: {
		size_t rlen = f->len > 2 ? f->len - 2 : 0;
		int code = 1005;

		if (deliver(m, WS_OP_CLOSE, f->payload, f->len) < 0)
			return WS_CLIENT_ERROR;
		if (f->len >= 2)
			code = f->payload[0] << 8 | f->payload[1];
		if (rlen >= sizeof(m->close_reason))
			rlen = sizeof(m->close_reason) - 1;
		memcpy(m->close_reason, f->payload + 2, rlen);
		m->close_reason[rlen] = '\0';
		m->close_code = code;
		c->close_received = true;
		/* Echo the close, as RFC 6455 asks; the server then closes TCP.
		 */
		if (!c->close_sent)
			ws_client_send_close(c, code == 1005 ? 0 : code, NULL);
		return 1;
	}
	case WS_OP_TEXT:
	case WS_OP_BINARY:
		if (c->frag_opcode) {
			set_err("frame: new message inside a fragmented one");
			return WS_CLIENT_ERROR;
		}
		if (f->fin)
			return deliver(m, f->opcode, f->payload, f->len) < 0
			           ? WS_CLIENT_ERROR
			           : 1;
		c->frag_opcode = f->opcode;
		c->frag_len = 0;
		/* The first fragment's data is collected below. */
		/* fall through */
	case WS_OP_CONTINUATION:
		if (!c->frag_opcode) {
			set_err("frame: continuation without a message");
			return WS_CLIENT_ERROR;
		}
		if (c->frag_len + f->len > WS_MAX_MESSAGE ||
		    grow(&c->frag, &c->frag_cap, c->frag_len + f->len) < 0) {
			set_err("frame: fragmented message too large");
			return WS_CLIENT_ERROR;
		}
		if (f->len)
			memcpy(c->frag + c->frag_len, f->payload, f->len);
		c->frag_len += f->len;
		if (!f->fin)
			return 0;
		{
			int opcode = c->frag_opcode;

			c->frag_opcode = 0;
			return deliver(m, opcode, c->frag, c->frag_len) < 0
			           ? WS_CLIENT_ERROR
			           : 1;
		}
	default:
		set_err("frame: unknown opcode 0x%x", f->opcode);
		return WS_CLIENT_ERROR;
	}
}

/* Reads what the socket has, waiting until deadline for at least a byte. */
static int fill(struct ws_client *c, int64_t deadline)
{
	for (;;) {
		struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
		ssize_t n;
		int rem;

		if (grow(&c->rbuf, &c->rcap, c->rlen + WS_READ_CHUNK) < 0)
			return WS_CLIENT_ERROR;
		n = recv(c->fd, c->rbuf + c->rlen, WS_READ_CHUNK, 0);
		if (n > 0) {
			c->rlen += (size_t)n;
			return WS_CLIENT_OK;
		}
		if (n == 0) {
			c->eof = true;
			set_err("connection closed by the server");
			return WS_CLIENT_EOF;
		}
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK) {
			int e = errno;

			set_err("recv: %s", strerror(e));
			if (e != ECONNRESET)
				return WS_CLIENT_ERROR;
			c->eof = true;
			return WS_CLIENT_EOF;
		}
		rem = remaining_ms(deadline);
		if (rem == 0) {
			set_err("no message within the timeout");
			return WS_CLIENT_TIMEOUT;
		}
		if (poll(&pfd, 1, rem) < 0 && errno != EINTR) {
			set_err("poll: %s", strerror(errno));
			return WS_CLIENT_ERROR;
		}
	}
}

int ws_client_recv(struct ws_client *c, struct ws_msg *m, int timeout_ms)
{
	int64_t deadline = test_now_ms() + timeout_ms;

	/* After the server's close nothing more is a message. */
	if (c->close_received) {
		set_err("the server already sent its close frame");
		return WS_CLIENT_EOF;
	}
	for (;;) {
		struct frame f;
		int rc = parse_frame(c, &f);

		if (rc < 0)
			return rc;
		if (rc == 1) {
			rc = handle_frame(c, &f, m);
			consume(c, f.size);
			if (rc < 0)
				return rc;
			if (rc == 1)
				return WS_CLIENT_OK;
			continue;
		}
		if (c->eof) {
			set_err("connection closed by the server");
			return WS_CLIENT_EOF;
		}
		rc = fill(c, deadline);
		if (rc != WS_CLIENT_OK)
			return rc;
	}
}

char *ws_client_recv_text(struct ws_client *c, int timeout_ms)
{
	struct ws_msg m = {0};
	char *text = NULL;
	int rc = ws_client_recv(c, &m, timeout_ms);

	if (rc != WS_CLIENT_OK) {
		/* ws_client_error() already says why */
	} else if (m.opcode == WS_OP_TEXT) {
		text = (char *)m.data;
		m.data = NULL;
	} else if (m.opcode == WS_OP_CLOSE) {
		set_err("expected a text message, got close %d \"%s\"",
		        m.close_code, m.close_reason);
	} else {
		set_err("expected a text message, got opcode 0x%x (%zu bytes)",
		        m.opcode, m.len);
	}
	ws_msg_free(&m);
	return text;
}

int ws_client_recv_close(struct ws_client *c, int timeout_ms)
{
	int64_t deadline = test_now_ms() + timeout_ms;
	struct ws_msg m = {0};

	for (;;) {
		int rc = ws_client_recv(c, &m, remaining_ms(deadline));

		if (rc != WS_CLIENT_OK) {
			ws_msg_free(&m);
			return rc;
		}
		if (m.opcode == WS_OP_CLOSE) {
			rc = m.close_code;
			ws_msg_free(&m);
			return rc;
		}
	}
}

void ws_msg_free(struct ws_msg *m)
{
	free(m->data);
	m->data = NULL;
	m->len = m->cap = 0;
}

void ws_client_close(struct ws_client *c, int timeout_ms)
{
	int64_t deadline = test_now_ms() + timeout_ms;
	struct ws_msg m = {0};

	if (!c)
		return;
	if (!c->close_sent && !c->eof)
		ws_client_send_close(c, 1000, NULL);
	while (!c->close_received && !c->eof) {
		if (ws_client_recv(c, &m, remaining_ms(deadline)) !=
		    WS_CLIENT_OK)
			break;
	}
	ws_msg_free(&m);
	ws_client_abort(c);
}

void ws_client_abort(struct ws_client *c)
{
	if (!c)
		return;
	close(c->fd);
	free(c->rbuf);
	free(c->frag);
	free(c);
}

int ws_client_set_add(struct ws_client_set *s, struct ws_client *c)
{
	for (size_t i = 0; i < WS_CLIENT_SET_MAX; i++) {
		if (!s->c[i]) {
			s->c[i] = c;
			return 0;
		}
	}
	return -1;
}

void ws_client_set_forget(struct ws_client_set *s, struct ws_client *c)
{
	for (size_t i = 0; i < WS_CLIENT_SET_MAX; i++)
		if (s->c[i] == c)
			s->c[i] = NULL;
}

void ws_client_set_abort_all(struct ws_client_set *s)
{
	for (size_t i = 0; i < WS_CLIENT_SET_MAX; i++) {
		ws_client_abort(s->c[i]);
		s->c[i] = NULL;
	}
}
