/*
 * http_pub: a minimal blocking HTTP/1.1 keep-alive client for publishing to
 * nchan: POSTs n requests back to back on one connection (pipelined) and
 * then reads the n responses (Content-Length or chunked bodies). Every
 * wait is bounded by the socket timeouts given at open.
 */
#ifndef WSBENCH_HTTP_PUB_H
#define WSBENCH_HTTP_PUB_H

#include <stddef.h>
#include <stdint.h>

struct http_conn {
	int fd;
	uint16_t port;
	int timeout_ms;
	char *buf; /* response bytes read but not yet parsed */
	size_t len, cap;
	char *out; /* the requests being sent */
	size_t out_cap;
	char err[160];
};

int http_open(struct http_conn *h, uint16_t port, int timeout_ms);
void http_close(struct http_conn *h);
/* POSTs bodies[i] (lens[i] bytes) to paths[i] for i < n, pipelined, and
 * stores each response's status in status[i]. Returns 0, or -1 with h->err
 * set and the connection closed (statuses not filled are 0); the next call
 * reconnects. */
int http_post_pipelined(struct http_conn *h, const char *const *paths,
                        const char *const *bodies, const size_t *lens,
                        unsigned n, int *status);

#endif
