/*
 * test_socket_dir: a real sidecar refuses to start (exit status 2, one
 * line on stderr naming the path and the fix) when the directory of its
 * IPC sockets could let someone else replace them: writable by group or
 * others, owned by another user, or /tmp itself. The same process starts
 * once the directory is made safe again. (sp_server's own checks, in
 * process: test_sp_server.c.)
 *
 * The sidecar's stderr is its log file (sidecar_proc.h). Every wait is a
 * process exit or start with a deadline; nothing sleeps to synchronise.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sidecar_proc.h"

/* A refusal comes after the keys and the database are open: seconds
 * under valgrind. */
#define EXIT_MS SIDECAR_READY_TIMEOUT_MS
#define N_TESTS 1 /* the tests of main() */

/* Runs s again, which must exit 2 having logged each of the texts (each
 * within one line). */
static void expect_refused(struct sidecar *s, const char *text1,
                           const char *text2)
{
	int status = sidecar_run_to_exit(s, EXIT_MS);

	if (status != 2) {
		sidecar_print_log(s, 2048);
		fail_msg("exit status %d, not 2", status);
	}
	if (!sidecar_log_contains(s, text1) ||
	    !sidecar_log_contains(s, text2)) {
		sidecar_print_log(s, 2048);
		fail_msg("no line with \"%s\" and one with \"%s\" in the log",
		         text1, text2);
	}
}

/* One per file: the sidecar, started once to prove its directory fine. */
static void test_unsafe_socket_directory_is_refused(void **state)
{
	struct sidecar_fixture *fx = *state;
	struct sidecar *s = fx->sc;
	char text1[512], text2[512], tmp_url[64];

	assert_int_equal(sidecar_stop(s, SIDECAR_STOP_TIMEOUT_MS), 0);

	/* Writable by others. The inbound socket is opened first. */
	assert_int_equal(chmod(s->dir, 0777), 0);
	snprintf(text1, sizeof(text1),
	         "wsgate: inbound: refusing %s: its directory %s is writable "
	         "by group or others (mode 0777)",
	         s->inbound_url, s->dir);
	snprintf(text2, sizeof(text2),
	         "chmod go-w %s, or choose another --inbound path", s->dir);
	expect_refused(s, text1, text2);
	assert_int_equal(chmod(s->dir, 0700), 0);

	/* Another user's. Only root can give it away. */
	if (geteuid() == 0) {
		assert_int_equal(chown(s->dir, 65534, 65534), 0);
		snprintf(text1, sizeof(text1),
		         "wsgate: inbound: refusing %s: its directory %s "
		         "belongs to uid 65534, not to uid 0",
		         s->inbound_url, s->dir);
		snprintf(text2, sizeof(text2),
		         "chown 0 %s, or choose another --inbound path",
		         s->dir);
		expect_refused(s, text1, text2);
		assert_int_equal(chown(s->dir, 0, 0), 0);
	}

	/* /tmp itself: 1777, and root's (the owner is refused first when
	 * the test is not root). */
	snprintf(tmp_url, sizeof(tmp_url), "ipc:///tmp/wsgate-sd-%ld.ipc",
	         (long)getpid());
	assert_int_equal(
	    sidecar_set_args(s,
	                     (const char *const[]){"--control", tmp_url, NULL}),
	    0);
	snprintf(text1, sizeof(text1),
	         "wsgate: control: refusing %s: its directory /tmp ", tmp_url);
	expect_refused(s, text1, "choose another --control path");
	assert_int_equal(access(tmp_url + 6, F_OK), -1);

	/* Safe again: the same sidecar starts. */
	assert_int_equal(sidecar_set_args(s, NULL), 0);
	assert_int_equal(sidecar_restart(s), 0);
	fx->passed++;
}

static int group_setup(void **state)
{
	/* Its directory is a fresh mkdtemp one: 0700, the test's user's. */
	return sidecar_fixture_setup(state, sizeof(struct sidecar_fixture),
	                             NULL);
}

/* A clean exit: 0 also means no sanitizer report from the sidecar. The
 * directory is given back first if a test left it unsafe. */
static int group_teardown(void **state)
{
	struct sidecar_fixture *fx = *state;

	chmod(fx->sc->dir, 0700);
	if (geteuid() == 0)
		chown(fx->sc->dir, 0, 0);
	return sidecar_fixture_teardown(state, N_TESTS);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_unsafe_socket_directory_is_refused),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
