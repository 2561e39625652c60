/*
 * http_pub: pipelined HTTP/1.1 POSTs for the nchan publisher (see
 * http_pub.h).
 */
#include "http_pub.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#define HTTP_MAX_RESPONSE (64 * 1024)

int http_open(struct http_conn *h, uint16_t port, int timeout_ms)
{
	struct sockaddr_in sa = {.sin_family = AF_INET,
	                         .sin_port = htons(port),
	                         .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	struct timeval tv = {.tv_sec = timeout_ms / 1000,
	                     .tv_usec = (timeout_ms % 1000) * 1000};
	int one = 1;

	h->port = port;
	h->timeout_ms = timeout_ms;
	h->len = 0;
	h->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (h->fd < 0) {
		snprintf(h->err, sizeof(h->err), "socket: %s", strerror(errno));
		return -1;
	}
	setsockopt(h->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	setsockopt(h->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(h->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if (connect(h->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		snprintf(h->err, sizeof(h->err), "connect to port %u: %s",
		         (unsigned)port, strerror(errno));
		close(h->fd);
		h->fd = -1;
		return -1;
	}
	return 0;
}

void http_close(struct http_conn *h)
{
	if (h->fd >= 0)
		close(h->fd);
	h->fd = -1;
	free(h->buf);
	free(h->out);
	h->buf = h->out = NULL;
	h->len = h->cap = h->out_cap = 0;
}

static int fail(struct http_conn *h, const char *what)
{
	if (what != NULL)
		snprintf(h->err, sizeof(h->err), "%s", what);
	if (h->fd >= 0)
		close(h->fd);
	h->fd = -1;
	h->len = 0;
	return -1;
}

/* Reads more bytes into h->buf. */
static int fill(struct http_conn *h)
{
	if (h->cap - h->len < 16384) {
		size_t nc = h->cap ? h->cap * 2 : 65536;
		if (nc > HTTP_MAX_RESPONSE * 64)
			return fail(h, "response buffer overflow");
		char *n = realloc(h->buf, nc);
		if (n == NULL)
			return fail(h, "out of memory");
		h->buf = n;
		h->cap = nc;
	}
	for (;;) {
		ssize_t r = recv(h->fd, h->buf + h->len, h->cap - h->len, 0);
		if (r > 0) {
			h->len += (size_t)r;
			return 0;
		}
		if (r < 0 && errno == EINTR)
			continue;
		if (r == 0)
			return fail(h, "server closed the connection");
		char e[96];
		snprintf(e, sizeof(e), "recv: %s",
		         errno == EAGAIN ? "timed out" : strerror(errno));
		return fail(h, e);
	}
}

/* Length of the chunked body at b[0..len), or 0 when incomplete. */
static size_t chunked_len(const char *b, size_t len)
{
	size_t off = 0;
	for (;;) {
		const char *e = memmem(b + off, len - off, "\r\n", 2);
		if (e == NULL)
			return 0;
		size_t sz = strtoul(b + off, NULL, 16);
		off = (size_t)(e - b) + 2 + sz + 2;
		if (off > len)
			return 0;
		if (sz == 0)
			return off;
	}
}

/* Parses one complete response at the front of h->buf; returns its status,
 * 0 when incomplete, -1 on garbage. */
static int take_response(struct http_conn *h)
{
	char *e = memmem(h->buf, h->len, "\r\n\r\n", 4);
	if (e == NULL)
		return h->len > HTTP_MAX_RESPONSE ? -1 : 0;
	size_t hlen = (size_t)(e - h->buf) + 4;
	int status = 0;
	if (sscanf(h->buf, "HTTP/1.%*c %d", &status) != 1)
		return -1;
	size_t body = 0;
	int chunked = 0;
	for (char *l = h->buf; l < e;) {
		char *nl = memmem(l, (size_t)(e - l) + 2, "\r\n", 2);
		if (nl == NULL)
			break;
		if (strncasecmp(l, "Content-Length:", 15) == 0)
			body = strtoul(l + 15, NULL, 10);
		else if (strncasecmp(l, "Transfer-Encoding:", 18) == 0 &&
		         memmem(l, (size_t)(nl - l), "chunked", 7))
			chunked = 1;
		l = nl + 2;
	}
	if (chunked) {
		body = chunked_len(h->buf + hlen, h->len - hlen);
		if (body == 0)
			return 0;
	} else if (h->len - hlen < body) {
		return 0;
	}
	size_t total = hlen + body;
	memmove(h->buf, h->buf + total, h->len - total);
	h->len -= total;
	return status;
}

int http_post_pipelined(struct http_conn *h, const char *const *paths,
                        const char *const *bodies, const size_t *lens,
                        unsigned n, int *status)
{
	size_t need = 0, off = 0;
	for (unsigned i = 0; i < n; i++) {
		need += strlen(paths[i]) + lens[i] + 160;
		status[i] = 0;
	}
	if (h->fd < 0 && http_open(h, h->port, h->timeout_ms) < 0)
		return -1;
	if (need > h->out_cap) {
		char *o = realloc(h->out, need);
		if (o == NULL)
			return fail(h, "out of memory");
		h->out = o;
		h->out_cap = need;
	}
	for (unsigned i = 0; i < n; i++) {
		off += (size_t)snprintf(h->out + off, need - off,
		                        "POST %s HTTP/1.1\r\n"
		                        "Host: 127.0.0.1\r\n"
		                        "Content-Type: application/json\r\n"
		                        "Content-Length: %zu\r\n\r\n",
		                        paths[i], lens[i]);
		memcpy(h->out + off, bodies[i], lens[i]);
		off += lens[i];
	}
	for (size_t sent = 0; sent < off;) {
		ssize_t w =
		    send(h->fd, h->out + sent, off - sent, MSG_NOSIGNAL);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			char e[96];
			snprintf(e, sizeof(e), "send: %s", strerror(errno));
			return fail(h, e);
		}
		sent += (size_t)w;
	}
	for (unsigned i = 0; i < n;) {
		int st = h->len ? take_response(h) : 0;
		if (st < 0)
			return fail(h, "malformed HTTP response");
		if (st > 0) {
			status[i++] = st;
			continue;
		}
		if (fill(h) < 0)
			return -1;
	}
	return 0;
}
