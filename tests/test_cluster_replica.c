/*
 * test_cluster_replica: a sidecar's replica of the cluster stream, fed by
 * records published by hand with libnats (as another node would): they
 * reach the user's tab with the seqs they carry, the replica's position is
 * committed with their rows, and after kill -9 the replica resumes after
 * it, applying every record once (docs/CLUSTER.md, build plan step 5).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>
#include <nats/nats.h>
#include <stdio.h>
#include <string.h>

#include "cluster.pb-c.h"
#include "clock.h"
#include "cluster_proc.h"
#include "nats_proc.h"
#include "sidecar_proc.h"

#define WAIT_MS 10000

static struct cluster_fixture fixture;

/* Publishes a record of user's events first..first+n-1 (ids "<user>-<seq>")
 * as node "hand" would, acked. Returns its stream seq, 0 on failure. */
static uint64_t publish_record(jsCtx *js, const char *user, uint64_t first,
                               size_t n)
{
	Wsgate__V1__Event ev[8];
	Wsgate__Cluster__V1__ClusterEvent ce[8];
	Wsgate__Cluster__V1__ClusterEvent *ptrs[8];
	char ids[8][64], subject[600], num[24];
	Wsgate__Cluster__V1__ClusterRecord rec =
	    WSGATE__CLUSTER__V1__CLUSTER_RECORD__INIT;
	static char payload[] = "{\"by\":\"hand\"}";

	assert_true(n <= 8);
	for (size_t i = 0; i < n; i++) {
		wsgate__v1__event__init(&ev[i]);
		wsgate__cluster__v1__cluster_event__init(&ce[i]);
		snprintf(ids[i], sizeof(ids[i]), "%s-%llu", user,
		         (unsigned long long)(first + i));
		ev[i].event_id = ids[i];
		ev[i].user_id = (char *)user;
		ev[i].type = WSGATE__V1__EVENT_TYPE__AGENT_THINKING;
		ev[i].payload_json.data = (uint8_t *)payload;
		ev[i].payload_json.len = strlen(payload);
		ce[i].event = &ev[i];
		ce[i].accepted_at = clock_now_us();
		ptrs[i] = &ce[i];
	}
	rec.n_events = n;
	rec.events = ptrs;
	uint8_t body[4096];
	size_t len = wsgate__cluster__v1__cluster_record__pack(&rec, body);
	int at = snprintf(subject, sizeof(subject), "wsgate.ev.");
	for (const char *p = user; *p; p++)
		at += snprintf(subject + at, sizeof(subject) - (size_t)at,
		               "%02x", (unsigned char)*p);
	natsMsg *m = NULL;
	jsPubAck *pa = NULL;
	uint64_t seq = 0;
	if (natsMsg_Create(&m, subject, NULL, (const char *)body, (int)len) !=
	    NATS_OK)
		return 0;
	snprintf(num, sizeof(num), "%llu", (unsigned long long)first);
	natsMsgHeader_Set(m, "Wsgate-Seq", num);
	snprintf(num, sizeof(num), "%zu", n);
	natsMsgHeader_Set(m, "Wsgate-Count", num);
	natsMsgHeader_Set(m, "Wsgate-Node", "hand");
	if (js_PublishMsg(&pa, js, m, NULL, NULL) == NATS_OK)
		seq = pa->Sequence;
	jsPubAck_Destroy(pa);
	natsMsg_Destroy(m);
	return seq;
}

static int group_setup(void **state)
{
	(void)state;
	return cluster_fixture_start(&fixture, 1);
}

static int group_teardown(void **state)
{
	(void)state;
	int rc = cluster_free(fixture.c, false);
	nats_Close();
	return rc;
}

static void test_hand_records_reach_a_tab_and_survive_kill9(void **state)
{
	(void)state;
	CLUSTER_SKIP_UNLESS(&fixture);
	struct cluster *c = fixture.c;
	struct sidecar *s = c->sc[0];
	natsConnection *nc = NULL;
	jsCtx *js = NULL;
	struct tab t = {0};
	char id[128];
	uint64_t seq;

	assert_int_equal(natsConnection_ConnectTo(&nc, c->nats->url), NATS_OK);
	assert_int_equal(natsConnection_JetStream(&js, nc, NULL), NATS_OK);
	assert_int_equal(tab_open(&t, s, "hand", -1, NULL, WAIT_MS), 0);

	/* Two records of another node: the tab gets 1, 2, 3 in order. */
	uint64_t s1 = publish_record(js, "hand", 1, 2);
	uint64_t s2 = publish_record(js, "hand", 3, 1);
	assert_true(s1 > 0 && s2 > s1);
	for (uint64_t k = 1; k <= 3; k++) {
		char want[64];
		snprintf(want, sizeof(want), "hand-%llu",
		         (unsigned long long)k);
		assert_int_equal(tab_next(&t, id, &seq, WAIT_MS), 1);
		assert_string_equal(id, want);
		assert_int_equal(seq, k);
	}
	/* The position is committed with the rows. */
	assert_true(sidecar_db_wait(s,
	                            "SELECT value FROM meta"
	                            " WHERE key = 'stream_seq'",
	                            NULL, NULL, (int64_t)s2,
	                            WAIT_MS) >= (int64_t)s2);
	assert_int_equal(sidecar_db_int(s,
	                                "SELECT COUNT(*) FROM events"
	                                " WHERE user_id = ? AND node_id = ?",
	                                "hand", "hand"),
	                 3);
	tab_close(&t);

	/* kill -9, a record while it is down, restart: applied once. */
	assert_int_equal(sidecar_kill9(s), 128 + 9);
	uint64_t s3 = publish_record(js, "hand", 4, 1);
	assert_true(s3 > s2);
	assert_int_equal(sidecar_restart(s), 0);
	assert_true(sidecar_db_wait(s,
	                            "SELECT value FROM meta"
	                            " WHERE key = 'stream_seq'",
	                            NULL, NULL, (int64_t)s3,
	                            WAIT_MS) >= (int64_t)s3);
	assert_int_equal(sidecar_db_int(s,
	                                "SELECT COUNT(*) FROM events"
	                                " WHERE user_id = ?",
	                                "hand", NULL),
	                 4);
	assert_int_equal(tab_open(&t, s, "hand", 3, NULL, WAIT_MS), 0);
	assert_int_equal(t.connected_seq, 4);
	assert_int_equal(tab_next(&t, id, &seq, WAIT_MS), 1);
	assert_string_equal(id, "hand-4");
	assert_int_equal(seq, 4);
	tab_close(&t);
	assert_int_equal(cluster_verify(c, 0), 0);
	jsCtx_Destroy(js);
	natsConnection_Destroy(nc);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_hand_records_reach_a_tab_and_survive_kill9),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
