/*
 * child_proc: child processes of a test, waited for with a deadline and
 * killed after it, so that nothing a child gets stuck in can hang the test
 * (NNG 1.5.2's nng_close of a client socket has been seen to hang: the
 * tests run their abusive NNG clients in children).
 *
 * A child is usually this test binary itself (CHILD_PROC_SELF) run with a
 * role argument. The test talks to it through a pipe to its stdin and one
 * from its stdout, read and written with deadlines; the children of the
 * tests take EOF on stdin as "stop". Its stderr is the test's.
 */
#ifndef WSGATE_TEST_CHILD_PROC_H
#define WSGATE_TEST_CHILD_PROC_H

#include <stddef.h>
#include <sys/types.h>

/* argv[0] that runs this test binary again (Linux). */
#define CHILD_PROC_SELF "/proc/self/exe"

/* proc_wait: the process still runs at the deadline. */
#define PROC_RUNNING (-2)

/* Starts argv[0] with argv (NULL-terminated) in a child process whose
 * stdin, stdout and stderr are in_fd, out_fd and err_fd (-1: the test's
 * own), and which dies with the test (PR_SET_PDEATHSIG). Between fork and
 * execv only async-signal-safe calls run: the test may have threads.
 * Returns the pid, or -1. */
pid_t proc_spawn(const char *const argv[], int in_fd, int out_fd, int err_fd);

/* Waits up to timeout_ms (0: only looks) for the child pid to exit and
 * reaps it. Returns its exit status (0-255), 128 + the signal it died of,
 * PROC_RUNNING when it still runs at the deadline (it is left alone), or
 * -1 when pid is not a child of ours. */
int proc_wait(pid_t pid, int timeout_ms);

/* SIGKILL, then reaps it. Returns like proc_wait. */
int proc_kill(pid_t pid);

/* One of these per child with pipes. All zero: no child. */
struct child_proc {
	pid_t pid;      /* > 0 while it is ours (running or not yet reaped) */
	int to_fd;      /* its stdin; -1 once closed */
	int from_fd;    /* its stdout */
	char buf[4096]; /* read from its stdout, not yet consumed */
	size_t have;
};

/* Starts argv (see proc_spawn) with pipes to its stdin and from its
 * stdout. Returns 0, or -1 with nothing started. */
int child_proc_start(struct child_proc *c, const char *const argv[]);

/* Writes n bytes to its stdin within timeout_ms. 0, or -1 (timeout, or the
 * child closed its stdin). */
int child_proc_write(struct child_proc *c, const void *data, size_t n,
                     int timeout_ms);

/* Reads exactly n bytes of its stdout within timeout_ms. 0, or -1
 * (timeout, EOF). */
int child_proc_read(struct child_proc *c, void *data, size_t n, int timeout_ms);

/* Reads one line of its stdout within timeout_ms (0: only what is there
 * already) into line, without the newline, NUL-terminated (cut at cap - 1).
 * Returns 1, 0 when no whole line came in time, or -1 at EOF. */
int child_proc_read_line(struct child_proc *c, char *line, size_t cap,
                         int timeout_ms);

/* Waits up to timeout_ms for it to exit by itself, SIGKILLs it after that,
 * reaps it and closes the pipes. Returns its exit status (0-255), 128 + the
 * signal it died of, or -1 when it had to be killed (or there was none). */
int child_proc_wait(struct child_proc *c, int timeout_ms);

/* Closes its stdin ("stop"), then child_proc_wait. */
int child_proc_finish(struct child_proc *c, int timeout_ms);

/* SIGKILL, reap, close the pipes: for a child that is meant to die, or
 * one a failed test left behind. Returns like proc_wait (128 + SIGKILL
 * when the kill did it), -1 when there was no child. */
int child_proc_kill(struct child_proc *c);

#endif
