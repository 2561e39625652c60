/*
 * child_proc: starting, talking to, waiting for and killing a test's child
 * processes (see child_proc.h). Every wait is a deadline: waitpid with
 * WNOHANG polled, poll() on the pipes; a child still running at its
 * deadline is killed, never waited for without end.
 */
#include "child_proc.h"
#include "test_clock.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#define WAIT_POLL_MS 2

pid_t proc_spawn(const char *const argv[], int in_fd, int out_fd, int err_fd)
{
	pid_t parent = getpid();
	pid_t pid = fork();

	if (pid == 0) {
		sigset_t none;

		/* Async-signal-safe calls only from here to execv. */
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		if (in_fd >= 0)
			dup2(in_fd, 0);
		if (out_fd >= 0)
			dup2(out_fd, 1);
		if (err_fd >= 0)
			dup2(err_fd, 2);
		/* Dies with the test (with the forking thread, strictly) so
		 * that a crashed test leaves no process behind. */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(127);
		execv(argv[0], (char *const *)argv);
		_exit(127);
	}
	return pid;
}

static int status_code(int wstatus)
{
	if (WIFEXITED(wstatus))
		return WEXITSTATUS(wstatus);
	if (WIFSIGNALED(wstatus))
		return 128 + WTERMSIG(wstatus);
	return -1;
}

static int remaining_ms(int64_t deadline)
{
	int64_t r = deadline - test_now_ms();

	return r < 0 ? 0 : (int)r;
}

int proc_wait(pid_t pid, int timeout_ms)
{
	int64_t deadline = test_now_ms() + timeout_ms;
	int wstatus;

	for (;;) {
		pid_t r = waitpid(pid, &wstatus, WNOHANG);

		if (r == pid)
			return status_code(wstatus);
		if (r < 0 && errno != EINTR)
			return -1;
		if (r == 0 && remaining_ms(deadline) == 0)
			return PROC_RUNNING;
		if (r == 0)
			test_pause_ms(WAIT_POLL_MS);
	}
}

int proc_kill(pid_t pid)
{
	int wstatus;

	kill(pid, SIGKILL);
	/* Blocking, but bounded: nothing survives SIGKILL for long. */
	for (;;) {
		if (waitpid(pid, &wstatus, 0) == pid)
			return status_code(wstatus);
		if (errno != EINTR)
			return -1;
	}
}

int child_proc_start(struct child_proc *c, const char *const argv[])
{
	int in[2], out[2];

	memset(c, 0, sizeof(*c));
	c->to_fd = c->from_fd = -1;
	if (pipe2(in, O_CLOEXEC) < 0)
		return -1;
	if (pipe2(out, O_CLOEXEC) < 0) {
		close(in[0]);
		close(in[1]);
		return -1;
	}
	/* Our ends never block (every wait is a poll with a deadline); the
	 * child's ends are plain blocking stdin and stdout. */
	fcntl(in[1], F_SETFL, O_NONBLOCK);
	fcntl(out[0], F_SETFL, O_NONBLOCK);
	c->pid = proc_spawn(argv, in[0], out[1], -1);
	close(in[0]);
	close(out[1]);
	if (c->pid <= 0) {
		close(in[1]);
		close(out[0]);
		c->pid = 0;
		return -1;
	}
	c->to_fd = in[1];
	c->from_fd = out[0];
	return 0;
}

/* Waits until fd is ready for events; 1, or 0 at the deadline. */
static int fd_wait(int fd, short events, int64_t deadline)
{
	for (;;) {
		struct pollfd pfd = {.fd = fd, .events = events};
		int r = poll(&pfd, 1, remaining_ms(deadline));

		if (r > 0)
			return 1;
		if (r == 0 || errno != EINTR)
			return 0;
	}
}

int child_proc_write(struct child_proc *c, const void *data, size_t n,
                     int timeout_ms)
{
	int64_t deadline = test_now_ms() + timeout_ms;
	const char *p = data;

	if (c->pid <= 0 || c->to_fd < 0)
		return -1;
	while (n > 0) {
		ssize_t w = write(c->to_fd, p, n);

		if (w > 0) {
			p += w;
			n -= (size_t)w;
		} else if (w < 0 && errno != EAGAIN && errno != EINTR) {
			return -1;
		} else if (!fd_wait(c->to_fd, POLLOUT, deadline)) {
			return -1;
		}
	}
	return 0;
}

/* Reads what the pipe has into c->buf, waiting until the deadline for
 * something. 1: got bytes, 0: none in time, -1: EOF or error. */
static int fill(struct child_proc *c, int64_t deadline)
{
	for (;;) {
		ssize_t r = read(c->from_fd, c->buf + c->have,
		                 sizeof(c->buf) - c->have);

		if (r > 0) {
			c->have += (size_t)r;
			return 1;
		}
		if (r == 0 || (errno != EAGAIN && errno != EINTR))
			return -1;
		if (remaining_ms(deadline) == 0 ||
		    !fd_wait(c->from_fd, POLLIN, deadline))
			return 0;
	}
}

int child_proc_read(struct child_proc *c, void *data, size_t n, int timeout_ms)
{
	int64_t deadline = test_now_ms() + timeout_ms;
	char *p = data;

	if (c->pid <= 0 || c->from_fd < 0)
		return -1;
	while (n > 0) {
		size_t take = c->have < n ? c->have : n;

		memcpy(p, c->buf, take);
		memmove(c->buf, c->buf + take, c->have - take);
		c->have -= take;
		p += take;
		n -= take;
		if (n > 0 && fill(c, deadline) <= 0)
			return -1;
	}
	return 0;
}

int child_proc_read_line(struct child_proc *c, char *line, size_t cap,
                         int timeout_ms)
{
	int64_t deadline = test_now_ms() + timeout_ms;

	if (c->pid <= 0 || c->from_fd < 0 || cap == 0)
		return -1;
	for (;;) {
		char *nl = memchr(c->buf, '\n', c->have);

		if (nl) {
			size_t len = (size_t)(nl - c->buf);
			size_t keep = len < cap - 1 ? len : cap - 1;

			memcpy(line, c->buf, keep);
			line[keep] = '\0';
			c->have -= len + 1;
			memmove(c->buf, nl + 1, c->have);
			return 1;
		}
		/* A line longer than the buffer is cut where it is full. */
		if (c->have == sizeof(c->buf)) {
			memcpy(line, c->buf, cap - 1);
			line[cap - 1] = '\0';
			c->have = 0;
			return 1;
		}
		int r = fill(c, deadline);
		if (r <= 0)
			return r;
	}
}

static void close_pipes(struct child_proc *c)
{
	if (c->to_fd >= 0)
		close(c->to_fd);
	if (c->from_fd >= 0)
		close(c->from_fd);
	c->to_fd = c->from_fd = -1;
	c->have = 0;
	c->pid = 0;
}

int child_proc_wait(struct child_proc *c, int timeout_ms)
{
	int status;

	if (c->pid <= 0)
		return -1;
	status = proc_wait(c->pid, timeout_ms);
	if (status == PROC_RUNNING) {
		proc_kill(c->pid);
		status = -1;
	}
	close_pipes(c);
	return status;
}

int child_proc_finish(struct child_proc *c, int timeout_ms)
{
	if (c->pid > 0 && c->to_fd >= 0) {
		close(c->to_fd);
		c->to_fd = -1;
	}
	return child_proc_wait(c, timeout_ms);
}

int child_proc_kill(struct child_proc *c)
{
	int status;

	if (c->pid <= 0)
		return -1;
	status = proc_kill(c->pid);
	close_pipes(c);
	return status;
}
