/*
 * sp_conn: dialing, header exchange and deadline-bounded reads and writes
 * of an SP connection over ipc:// (see sp_conn.h).
 */
#include "sp_conn.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "sp_wire.h"

int64_t sp_conn_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int sp_conn_addr(struct sockaddr_un *addr, const char *url)
{
	const char *path;
	if (url == NULL || strncmp(url, "ipc://", 6) != 0)
		return -1;
	path = url + 6;
	if (*path == '\0' || strlen(path) >= sizeof(addr->sun_path))
		return -1;
	memset(addr, 0, sizeof(*addr));
	addr->sun_family = AF_UNIX;
	memcpy(addr->sun_path, path, strlen(path) + 1);
	return 0;
}

/* Waits until fd is ready for events or the deadline passes. */
static enum sp_io io_wait(int fd, short events, int64_t deadline)
{
	for (;;) {
		struct pollfd pfd = {.fd = fd, .events = events};
		int timeout = -1, rv;
		if (deadline != SP_CONN_FOREVER) {
			int64_t left = deadline - sp_conn_now_ms();
			if (left <= 0)
				return SP_IO_TIMEOUT;
			timeout = left > 1000000 ? 1000000 : (int)left;
		}
		rv = poll(&pfd, 1, timeout);
		if (rv > 0)
			return SP_IO_OK;
		if (rv < 0 && errno != EINTR)
			return SP_IO_BROKEN;
	}
}

enum sp_io sp_conn_write(int fd, const void *buf, size_t len, int64_t deadline)
{
	const uint8_t *p = buf;
	while (len > 0) {
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n > 0) {
			p += n;
			len -= (size_t)n;
		} else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			enum sp_io r = io_wait(fd, POLLOUT, deadline);
			if (r != SP_IO_OK)
				return r;
		} else if (!(n < 0 && errno == EINTR)) {
			return SP_IO_BROKEN;
		}
	}
	return SP_IO_OK;
}

enum sp_io sp_conn_read(int fd, void *buf, size_t len, size_t *done,
                        int64_t deadline)
{
	uint8_t *p = buf;
	while (*done < len) {
		ssize_t n = recv(fd, p + *done, len - *done, MSG_DONTWAIT);
		if (n > 0) {
			*done += (size_t)n;
		} else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			enum sp_io r = io_wait(fd, POLLIN, deadline);
			if (r != SP_IO_OK)
				return r;
		} else if (!(n < 0 && errno == EINTR)) {
			return SP_IO_BROKEN; /* EOF or error */
		}
	}
	return SP_IO_OK;
}

int sp_conn_dial(const struct sockaddr_un *addr, uint16_t proto, uint16_t peer,
                 int64_t deadline, enum sp_io *res, char *err, size_t errlen)
{
	uint8_t ours[SP_HEADER_LEN], theirs[SP_HEADER_LEN];
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	*res = SP_IO_BROKEN;
	if (fd < 0 ||
	    connect(fd, (const struct sockaddr *)addr, sizeof(*addr)) != 0) {
		snprintf(err, errlen, "cannot dial ipc://%s: %s",
		         addr->sun_path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	sp_wire_header(ours, proto);
	*res = sp_conn_write(fd, ours, sizeof(ours), deadline);
	if (*res == SP_IO_OK) {
		size_t got = 0;
		*res = sp_conn_read(fd, theirs, sizeof(theirs), &got, deadline);
	}
	if (*res == SP_IO_OK && !sp_wire_header_is(theirs, peer)) {
		snprintf(err, errlen,
		         "ipc://%s does not speak SP protocol 0x%x",
		         addr->sun_path, peer);
		*res = SP_IO_BROKEN;
	} else if (*res == SP_IO_BROKEN) {
		snprintf(err, errlen, "ipc://%s closed the connection",
		         addr->sun_path);
	} else if (*res == SP_IO_TIMEOUT) {
		snprintf(err, errlen, "ipc://%s did not answer",
		         addr->sun_path);
	}
	if (*res != SP_IO_OK) {
		close(fd);
		return -1;
	}
	return fd;
}

bool sp_conn_pause(int64_t deadline)
{
	int64_t left = deadline - sp_conn_now_ms();
	if (left <= 0)
		return false;
	if (left > SP_CONN_RETRY_MS)
		left = SP_CONN_RETRY_MS;
	nanosleep(&(struct timespec){0, left * 1000000L}, NULL);
	return true;
}

int sp_conn_dial_until(const struct sockaddr_un *addr, uint16_t proto,
                       uint16_t peer, int64_t deadline, int64_t min_wait_ms,
                       char *err, size_t errlen)
{
	for (;;) {
		int64_t soonest = sp_conn_now_ms() + min_wait_ms;
		enum sp_io res;
		int fd = sp_conn_dial(addr, proto, peer,
		                      deadline > soonest ? deadline : soonest,
		                      &res, err, errlen);
		if (fd >= 0)
			return fd;
		if (res == SP_IO_TIMEOUT || !sp_conn_pause(deadline))
			return -1;
	}
}
