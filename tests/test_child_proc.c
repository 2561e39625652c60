/*
 * test_child_proc: tests/support/child_proc, which keeps a stuck child
 * process (an NNG client hung in nng_close, say) from hanging a test: a
 * child that never exits is killed at its deadline, a read that gets
 * nothing returns at its deadline, and what a child writes comes through
 * whole, lines and bytes, until EOF.
 *
 * The children are this binary run with a role argument: "--stuck" (never
 * exits by itself, ignores EOF on stdin), "--echo" (copies stdin to stdout
 * until EOF) and "--exit N".
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "child_proc.h"
#include "test_clock.h"

#define DEADLINE_MS 300
#define SLACK_MS    5000 /* a loaded machine's scheduling delay, at most */

static const char *const stuck[] = {CHILD_PROC_SELF, "--stuck", NULL};

static void test_child_that_never_exits_is_killed_at_its_deadline(void **state)
{
	struct child_proc c;
	int64_t t0;
	pid_t pid;
	int status;

	(void)state;
	assert_int_equal(child_proc_start(&c, stuck), 0);
	pid = c.pid;
	t0 = test_now_ms();
	status = child_proc_finish(&c, DEADLINE_MS);
	assert_int_equal(status, -1);
	assert_true(test_now_ms() - t0 >= DEADLINE_MS);
	assert_true(test_now_ms() - t0 < DEADLINE_MS + SLACK_MS);
	/* Reaped: no such process any more. */
	assert_int_equal(c.pid, 0);
	assert_int_equal(kill(pid, 0), -1);
	assert_int_equal(errno, ESRCH);
	/* Nothing left to wait for or kill. */
	assert_int_equal(child_proc_wait(&c, 0), -1);
	assert_int_equal(child_proc_kill(&c), -1);
}

static void test_reads_from_a_silent_child_end_at_their_deadline(void **state)
{
	struct child_proc c;
	char line[16], byte;
	int64_t t0;

	(void)state;
	assert_int_equal(child_proc_start(&c, stuck), 0);
	t0 = test_now_ms();
	assert_int_equal(child_proc_read_line(&c, line, sizeof(line), 0), 0);
	assert_int_equal(
	    child_proc_read_line(&c, line, sizeof(line), DEADLINE_MS), 0);
	assert_int_equal(child_proc_read(&c, &byte, 1, DEADLINE_MS), -1);
	assert_true(test_now_ms() - t0 >= 2 * DEADLINE_MS);
	assert_true(test_now_ms() - t0 < 2 * DEADLINE_MS + SLACK_MS);
	assert_int_equal(child_proc_kill(&c), 128 + SIGKILL);
}

static void test_lines_and_bytes_come_through_until_eof(void **state)
{
	const char *const echo[] = {CHILD_PROC_SELF, "--echo", NULL};
	struct child_proc c;
	char line[8], *block, *back;
	size_t n = 16384; /* under a pipe's capacity: no read needed first */

	(void)state;
	block = malloc(n);
	back = malloc(n);
	assert_non_null(block);
	assert_non_null(back);
	for (size_t i = 0; i < n; i++)
		block[i] = (char)(i * 7 + i / 256);
	assert_int_equal(child_proc_start(&c, echo), 0);
	assert_int_equal(
	    child_proc_write(&c, "one\ntwo and more\n", 17, DEADLINE_MS), 0);
	assert_int_equal(child_proc_write(&c, block, n, DEADLINE_MS), 0);
	assert_int_equal(child_proc_read_line(&c, line, sizeof(line), SLACK_MS),
	                 1);
	assert_string_equal(line, "one");
	/* A line longer than the caller's buffer is cut, not split. */
	assert_int_equal(child_proc_read_line(&c, line, sizeof(line), SLACK_MS),
	                 1);
	assert_string_equal(line, "two and");
	assert_int_equal(child_proc_read(&c, back, n, SLACK_MS), 0);
	assert_memory_equal(back, block, n);
	/* EOF on its stdin ends the echo; then EOF on ours. */
	close(c.to_fd);
	c.to_fd = -1;
	assert_int_equal(child_proc_read_line(&c, line, sizeof(line), SLACK_MS),
	                 -1);
	assert_int_equal(child_proc_wait(&c, SLACK_MS), 0);
	free(block);
	free(back);
}

static void test_exit_status_is_reported(void **state)
{
	const char *const exit7[] = {CHILD_PROC_SELF, "--exit", "7", NULL};
	struct child_proc c;

	(void)state;
	assert_int_equal(child_proc_start(&c, exit7), 0);
	assert_int_equal(child_proc_wait(&c, SLACK_MS), 7);
	assert_int_equal(proc_wait(getpid(), 0), -1); /* not our child */
}

/* The roles; each returns its exit status. */
static int role_main(int argc, char **argv)
{
	char buf[4096];
	ssize_t n;

	if (argc == 2 && strcmp(argv[1], "--stuck") == 0) {
		/* Bounded, but far past any deadline of the tests. */
		test_pause_ms(3600 * 1000);
		return 0;
	}
	if (argc == 2 && strcmp(argv[1], "--echo") == 0) {
		while ((n = read(0, buf, sizeof(buf))) > 0)
			if (write(1, buf, (size_t)n) != n)
				return 1;
		return n == 0 ? 0 : 1;
	}
	if (argc == 3 && strcmp(argv[1], "--exit") == 0)
		return atoi(argv[2]);
	return 2;
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(
	        test_child_that_never_exits_is_killed_at_its_deadline),
	    cmocka_unit_test(
	        test_reads_from_a_silent_child_end_at_their_deadline),
	    cmocka_unit_test(test_lines_and_bytes_come_through_until_eof),
	    cmocka_unit_test(test_exit_status_is_reported),
	};

	if (argc > 1)
		return role_main(argc, argv);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
