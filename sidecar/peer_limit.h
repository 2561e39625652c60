/*
 * peer_limit: the per-address handshake rate limit of ws_server
 * (--handshake-rate-per-peer). One per server; service thread only.
 */
#ifndef WSGATE_PEER_LIMIT_H
#define WSGATE_PEER_LIMIT_H

#include <stdint.h>

struct peer_limit;

/* rate > 0 handshakes per second per address, bursts of 2 x rate. NULL
 * when out of memory. */
struct peer_limit *peer_limit_new(uint64_t rate);
void peer_limit_free(struct peer_limit *pl);
/* 1: a handshake from peer (its address as text) at now (us) is allowed
 * and counted; 0: it is over the rate. */
int peer_limit_allow(struct peer_limit *pl, const char *peer, int64_t now);

#endif
