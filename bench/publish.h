/*
 * publish: the load generator's backends. K threads publish E events,
 * round robin over the users (event i goes to user i % N), either through
 * libwsgate (batch 1: wsgate_send_event; batch B > 1: wsgate_send_batch of
 * B; the K threads share one client, as the threads of one backend process
 * would, so concurrent single sends travel merged) or, in nchan mode, as HTTP
 * POSTs to /pub/<user> (B requests pipelined on one keep-alive connection per
 * thread). With a rate, events are paced on a steady schedule (event i is due
 * at start + i / rate); without one, each thread sends as fast as replies come
 * back.
 *
 * Each payload embeds its send time (bench_common.h). The number of events
 * the server accepted for each user is counted in accepted[user], which is
 * what every connection of that user must receive.
 */
#ifndef WSBENCH_PUBLISH_H
#define WSBENCH_PUBLISH_H

#include "histo.h"

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

struct pub_cfg {
	int nchan;               /* 0: libwsgate; 1: HTTP POST to nchan */
	const char *control_url; /* libwsgate */
	uint16_t nchan_port;     /* nchan */
	unsigned threads;
	unsigned batch;
	double rate;     /* events/s over all threads; 0: unpaced */
	uint64_t events; /* total */
	unsigned users;
	const char *const *user_names;
	size_t payload_bytes;
	const char *id_prefix; /* event ids: <prefix>-<i> */
	int timeout_ms;        /* per request */
	/* Flow control (0: off): wait while more than window frames are
	 * accepted but not yet received (accepted * conns_per_user minus
	 * *received), so that an unpaced run measures what the server can
	 * deliver without piling up queues until it closes slow consumers. */
	uint64_t window;
	unsigned conns_per_user;
	_Atomic uint64_t *received;
	int64_t stop_at_ns;  /* 0, or end of a timed run: stop sending */
	int64_t deadline_ns; /* stop (and stop retrying) after this */
};

struct pub_result {
	uint64_t attempted;  /* events handed to a request at least once */
	uint64_t accepted;   /* OK (wsgate) or 201/202 (nchan) */
	uint64_t errors;     /* events given up on */
	uint64_t retries;    /* resends after RESOURCE_EXHAUSTED or timeout */
	uint64_t duplicates; /* OK with duplicate: true (a retried event) */
	uint64_t requests;
	uint64_t window_waits; /* batches that waited for the window */
	int cut_short;         /* stopped at the deadline with events unsent */
	int64_t first_send_ns;
	int64_t last_reply_ns;
	double max_lag_ms; /* how late a paced request left */
	struct histo rtt;  /* request round trip, ns */
	char first_error[256];
};

struct publisher;

/* Starts cfg->threads threads; accepted has cfg->users counters. */
struct publisher *pub_start(const struct pub_cfg *cfg,
                            _Atomic uint64_t *accepted);
/* Every thread has finished. */
int pub_done(struct publisher *p);
/* Asks the threads to stop early (deadline or abort). */
void pub_stop(struct publisher *p);
/* Joins the threads, fills *out and frees p. */
void pub_join(struct publisher *p, struct pub_result *out);

#endif
