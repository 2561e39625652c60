/*
 * peer_limit: the per-address handshake rate limit
 * (--handshake-rate-per-peer): a fixed-size table of token buckets (GCRA),
 * see peer_limit_allow. Service thread only.
 */
#include "peer_limit.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

#include "hash.h"

#define PEER_SLOTS   4096 /* a power of two: 96 KiB, whatever the load */
#define PEER_PROBE   8    /* slots an address may occupy */
#define PEER_KEY_LEN 16

/* One per address seen recently: the state of its token bucket. */
struct peer_slot {
	unsigned char key[PEER_KEY_LEN];
	/* GCRA's theoretical arrival time: the bucket is full again, and
	 * the slot free for any address, once tat <= now. */
	int64_t tat;
};

/* One per server when --handshake-rate-per-peer is on. */
struct peer_limit {
	int64_t interval_us;  /* the refill time of one handshake */
	int64_t tolerance_us; /* the burst: 2 x rate handshakes */
	struct peer_slot slots[PEER_SLOTS];
};

struct peer_limit *peer_limit_new(uint64_t rate)
{
	struct peer_limit *pl = calloc(1, sizeof(*pl));
	if (!pl)
		return NULL;
	pl->interval_us = 1000000 / (int64_t)rate;
	if (pl->interval_us < 1)
		pl->interval_us = 1;
	pl->tolerance_us = pl->interval_us * 2 * (int64_t)rate;
	return pl;
}

/* The bucket key of a peer: an IPv4 address (plain or v4-mapped), the /64
 * of an IPv6 one (a single host usually holds a whole /64), or the text
 * itself for anything else. */
static void peer_key(const char *peer, unsigned char key[PEER_KEY_LEN])
{
	struct in6_addr a6;
	struct in_addr a4;
	memset(key, 0, PEER_KEY_LEN);
	if (inet_pton(AF_INET, peer, &a4) == 1) {
		memcpy(key, &a4, 4);
	} else if (inet_pton(AF_INET6, peer, &a6) == 1) {
		if (IN6_IS_ADDR_V4MAPPED(&a6)) {
			memcpy(key, &a6.s6_addr[12], 4);
		} else {
			key[4] = 6; /* never equal to an IPv4 key */
			memcpy(key + 8, &a6, 8);
		}
	} else {
		size_t n = strlen(peer);
		memcpy(key, peer, n < PEER_KEY_LEN ? n : PEER_KEY_LEN);
	}
}

/*
 * Per-peer handshake rate policy: each address has a token bucket of
 * 2 x rate handshakes, refilled at rate per second (GCRA: one timestamp
 * per address). A handshake over it is refused with 429 before its token
 * is looked at, so a flood from one address costs a table lookup.
 *
 * The table has a fixed size. An address lives in one of PEER_PROBE
 * slots; a slot whose bucket is full again holds nothing worth keeping,
 * so entries expire by themselves. When all PEER_PROBE slots are live,
 * the fullest bucket is forgotten: its address starts again with a full
 * bucket, at most one burst more than its due. Returns 1 to allow, 0 to
 * refuse.
 */
int peer_limit_allow(struct peer_limit *pl, const char *peer, int64_t now)
{
	unsigned char key[PEER_KEY_LEN];
	peer_key(peer, key);
	size_t h = (size_t)hash_bytes((const char *)key, sizeof(key));
	struct peer_slot *slot = NULL, *spare = NULL;
	for (size_t i = 0; i < PEER_PROBE; i++) {
		struct peer_slot *s = &pl->slots[(h + i) & (PEER_SLOTS - 1)];
		if (s->tat > now && memcmp(s->key, key, sizeof(key)) == 0) {
			slot = s;
			break;
		}
		/* A free slot, else the live one closest to full. */
		if (!spare || (spare->tat > now && s->tat < spare->tat))
			spare = s;
	}
	if (!slot) {
		slot = spare;
		memcpy(slot->key, key, sizeof(key));
		slot->tat = now;
	}
	int64_t tat = slot->tat > now ? slot->tat : now;
	if (tat + pl->interval_us - now > pl->tolerance_us)
		return 0;
	slot->tat = tat + pl->interval_us;
	return 1;
}

void peer_limit_free(struct peer_limit *pl)
{
	free(pl);
}
