/*
 * test_peer_limit: the per-address handshake rate limit (sidecar/
 * peer_limit.c): its burst and refill, and which addresses share a bucket.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdio.h>

#include "peer_limit.h"

#define RATE 5 /* per second: bursts of 10 */

/* How many handshakes from peer are allowed at time now, in a row. */
static int allowed_in_a_row(struct peer_limit *pl, const char *peer,
                            int64_t now)
{
	int n = 0;
	while (n < 1000 && peer_limit_allow(pl, peer, now))
		n++;
	return n;
}

static void test_burst_then_refill(void **state)
{
	(void)state;
	struct peer_limit *pl = peer_limit_new(RATE);
	assert_non_null(pl);
	int64_t t = 1000000000;
	assert_int_equal(allowed_in_a_row(pl, "10.0.0.1", t), 2 * RATE);
	assert_false(peer_limit_allow(pl, "10.0.0.1", t));
	/* Another address has its own bucket. */
	assert_int_equal(allowed_in_a_row(pl, "10.0.0.2", t), 2 * RATE);
	/* One handshake's worth of refill (200 ms at 5/s) allows one. */
	assert_int_equal(allowed_in_a_row(pl, "10.0.0.1", t + 200000), 1);
	/* A full refill allows a whole burst again. */
	assert_int_equal(allowed_in_a_row(pl, "10.0.0.1", t + 10000000),
	                 2 * RATE);
	peer_limit_free(pl);
}

static void test_addresses_that_share_a_bucket(void **state)
{
	(void)state;
	struct peer_limit *pl = peer_limit_new(RATE);
	assert_non_null(pl);
	int64_t t = 1000000000;
	/* v4-mapped IPv6 is the IPv4 address. */
	assert_int_equal(allowed_in_a_row(pl, "192.0.2.7", t), 2 * RATE);
	assert_false(peer_limit_allow(pl, "::ffff:192.0.2.7", t));
	/* One IPv6 /64 is one bucket; the next /64 is another. */
	assert_int_equal(allowed_in_a_row(pl, "2001:db8::1", t), 2 * RATE);
	assert_false(peer_limit_allow(pl, "2001:db8::ffff:2", t));
	assert_true(peer_limit_allow(pl, "2001:db8:0:1::1", t));
	peer_limit_free(pl);
}

/* The table is fixed: many addresses never refuse a newcomer's first
 * handshake (a full slot is forgotten), and memory does not grow. */
static void test_many_addresses_fit(void **state)
{
	(void)state;
	struct peer_limit *pl = peer_limit_new(RATE);
	assert_non_null(pl);
	char addr[32];
	for (int i = 0; i < 100000; i++) {
		snprintf(addr, sizeof(addr), "10.%d.%d.%d", (i >> 16) & 255,
		         (i >> 8) & 255, i & 255);
		assert_true(peer_limit_allow(pl, addr, 1000000000));
	}
	peer_limit_free(pl);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_burst_then_refill),
	    cmocka_unit_test(test_addresses_that_share_a_bucket),
	    cmocka_unit_test(test_many_addresses_fit),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
