/*
 * test_nats_proc: the nats_proc support code the cluster tests stand on.
 * A real nats-server starts on a random port with JetStream, takes a
 * stream and an acked publish from libnats, dies of kill -9, comes back
 * on the same port and store directory with the message still there, and
 * stops cleanly. Skipped (with the reason) when nats-server is missing.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include <nats/nats.h>

#include "nats_proc.h"

#define STREAM  "NPTEST"
#define SUBJECT "np.one"

/* A JetStream context on url; fails the test when there is none. */
static void js_open(const char *url, natsConnection **nc, jsCtx **js)
{
	natsStatus s = natsConnection_ConnectTo(nc, url);

	if (s != NATS_OK)
		fail_msg("connect %s: %s", url, natsStatus_GetText(s));
	s = natsConnection_JetStream(js, *nc, NULL);
	if (s != NATS_OK)
		fail_msg("JetStream context: %s", natsStatus_GetText(s));
}

static void js_close(natsConnection *nc, jsCtx *js)
{
	jsCtx_Destroy(js);
	natsConnection_Destroy(nc);
}

static void test_start_kill9_restart_keeps_messages(void **state)
{
	const char *subjects[] = {"np.>"};
	struct nats_proc *n = NULL;
	natsConnection *nc = NULL;
	jsCtx *js = NULL;
	jsStreamConfig cfg;
	jsStreamInfo *si = NULL;
	jsPubAck *pa = NULL;
	natsMsg *msg = NULL;
	jsErrCode jerr = 0;
	natsStatus s;
	uint16_t port;

	(void)state;
	if (!nats_proc_binary())
		skip(); /* nats-server is not installed (make deps has it) */
	assert_int_equal(nats_proc_start(&n), 0);
	assert_true(nats_proc_running(n));
	assert_int_not_equal(n->port, 0);
	assert_int_not_equal(n->port, 4222);
	port = n->port;

	js_open(n->url, &nc, &js);
	jsStreamConfig_Init(&cfg);
	cfg.Name = STREAM;
	cfg.Subjects = subjects;
	cfg.SubjectsLen = 1;
	cfg.Storage = js_FileStorage;
	s = js_AddStream(&si, js, &cfg, NULL, &jerr);
	if (s != NATS_OK)
		fail_msg("js_AddStream: %s (%d)", natsStatus_GetText(s),
		         (int)jerr);
	jsStreamInfo_Destroy(si);
	s = js_Publish(&pa, js, SUBJECT, "kept", 4, NULL, &jerr);
	if (s != NATS_OK)
		fail_msg("js_Publish: %s (%d)", natsStatus_GetText(s),
		         (int)jerr);
	assert_int_equal(pa->Sequence, 1);
	jsPubAck_Destroy(pa);
	js_close(nc, js);

	/* A crash: the acked message must survive it. */
	assert_int_equal(nats_proc_kill9(n), 128 + SIGKILL);
	assert_false(nats_proc_running(n));
	assert_int_equal(nats_proc_restart(n), 0);
	assert_int_equal(n->port, port);

	js_open(n->url, &nc, &js);
	s = js_GetLastMsg(&msg, js, STREAM, SUBJECT, NULL, &jerr);
	if (s != NATS_OK)
		fail_msg("js_GetLastMsg after the restart: %s (%d)",
		         natsStatus_GetText(s), (int)jerr);
	assert_int_equal(natsMsg_GetDataLength(msg), 4);
	assert_memory_equal(natsMsg_GetData(msg), "kept", 4);
	assert_int_equal(natsMsg_GetSequence(msg), 1);
	natsMsg_Destroy(msg);
	js_close(nc, js);

	/* A clean stop, then nothing runs. */
	assert_true(nats_proc_stop(n, NATS_STOP_TIMEOUT_MS) >= 0);
	assert_false(nats_proc_running(n));
	assert_int_equal(nats_proc_kill9(n), -1);
	nats_proc_free(n, false);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_start_kill9_restart_keeps_messages),
	};
	int rc = cmocka_run_group_tests(tests, NULL, NULL);

	nats_Close(); /* libnats' threads and memory, for the sanitizers */
	return rc;
}
