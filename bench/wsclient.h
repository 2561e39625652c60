/*
 * wsclient: the load generator's WebSocket side. One epoll loop, run by one
 * thread, owns every client connection: it opens them at a bounded rate
 * (so handshakes are measured, not a SYN backlog), performs the RFC 6455
 * handshake, parses the server's (unmasked) frames, answers pings, and
 * checks each delivered event as it arrives: whose it is (foreign), its
 * sequence number (strictly +1 per connection), and its latency from the
 * send time embedded in the payload (bench_common.h).
 *
 * Two servers are understood: wsgate (ready when the "connected" frame
 * arrives; events are envelopes with seq and user_id) and nchan (ready at
 * the 101; a message is the published body itself, with no seq).
 *
 * Not thread-safe: pool_service and everything else run on one thread.
 */
#ifndef WSBENCH_WSCLIENT_H
#define WSBENCH_WSCLIENT_H

#include "histo.h"

#include <stdint.h>

enum pool_proto {
	POOL_WSGATE = 0,
	POOL_NCHAN = 1,
};

struct pool_cfg {
	enum pool_proto proto;
	uint16_t port;
	unsigned users;
	unsigned conns_per_user;
	const char *const *user_names; /* [users] */
	const char *const *paths;      /* [users]: request target with query */
	double connect_rate;           /* new connections per second; 0: any */
	unsigned max_inflight;         /* handshakes in progress at once */
	int handshake_timeout_ms;
};

struct pool_stats {
	unsigned total;            /* users * conns_per_user */
	unsigned started;          /* connect() issued */
	unsigned ready;            /* usable: see the header comment */
	unsigned failed;           /* never became ready */
	unsigned closed_by_server; /* closed after ready, while not closing */
	int64_t first_start_ns;
	int64_t last_ready_ns;
	struct histo handshake; /* connect() to ready, ns */
	uint64_t frames;        /* event frames received, own and foreign */
	uint64_t foreign;       /* of which for another user */
	uint64_t out_of_order;  /* seq not previous + 1 */
	uint64_t other_frames;  /* pong, error, resume_failed, ... */
	uint64_t error_frames;  /* {"type":"error",...} */
	uint64_t pings;         /* server pings answered */
	uint64_t bytes;         /* bytes read after the handshakes */
	int64_t first_recv_ns;
	int64_t last_recv_ns;
	struct histo latency; /* embedded send time to receive, ns */
	int last_close_code;
	char first_error[256];
};

struct pool_verify {
	uint64_t expected; /* sum over connections of their user's events */
	uint64_t received; /* own events received */
	uint64_t missing;  /* sum of max(0, expected - received) */
	uint64_t extra;    /* sum of max(0, received - expected) */
	uint64_t foreign;
	uint64_t out_of_order;
	unsigned conns_short; /* connections missing at least one event */
};

struct pool;

struct pool *pool_new(const struct pool_cfg *cfg);
void pool_free(struct pool *p);
/* Starts opening connections (paced by connect_rate, max_inflight) from
 * the next pool_service call on. */
void pool_start_connecting(struct pool *p);
/* One round of the event loop: opens due connections, waits up to
 * timeout_ms for I/O and handles it. Returns -1 on a fatal epoll error. */
int pool_service(struct pool *p, int timeout_ms);
/* Every connection is either ready or failed. */
int pool_connect_done(const struct pool *p);
const struct pool_stats *pool_stats(const struct pool *p);
/* Compares what every connection got with expected[user]. */
void pool_verify(const struct pool *p, const uint64_t *expected,
                 struct pool_verify *v);
/* Sends a close frame on every open connection, waits up to timeout_ms
 * for the server to close, then closes what is left. */
void pool_close_all(struct pool *p, int timeout_ms);

#endif
