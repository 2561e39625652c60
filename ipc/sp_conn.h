/*
 * sp_conn: the dialing side of an SP connection over ipc:// (sp_wire.h),
 * with blocking-style calls bounded by a deadline, for libwsgate's control
 * client and inbound puller. The caller's own thread does the I/O: no
 * threads, no callbacks.
 *
 * Deadlines are CLOCK_MONOTONIC milliseconds (sp_conn_now_ms);
 * SP_CONN_FOREVER waits without end.
 */
#ifndef WSGATE_SP_CONN_H
#define WSGATE_SP_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/un.h>

#define SP_CONN_FOREVER INT64_MAX

enum sp_io {
	SP_IO_OK,
	SP_IO_TIMEOUT, /* the deadline passed */
	SP_IO_BROKEN,  /* closed, reset, refused, or not our peer */
};

int64_t sp_conn_now_ms(void);
/* The socket address of an ipc:// URL; 0, or -1 if url is not one. */
int sp_conn_addr(struct sockaddr_un *addr, const char *url);
/* Connects to addr and exchanges SP headers (ours: proto; theirs must be
 * peer). The descriptor, or -1 with *res and a reason in err. */
int sp_conn_dial(const struct sockaddr_un *addr, uint16_t proto, uint16_t peer,
                 int64_t deadline, enum sp_io *res, char *err, size_t errlen);
/* Pause between two dials while nothing listens (NNG's reconnect time). */
#define SP_CONN_RETRY_MS 100

/* Waits SP_CONN_RETRY_MS, or what is left until the deadline; false when
 * nothing is left. */
bool sp_conn_pause(int64_t deadline);
/* sp_conn_dial, again after each pause while nothing listens (a sidecar
 * starting or restarting), until the deadline. The header exchange gets
 * at least min_wait_ms even when the deadline is sooner. The descriptor,
 * or -1 with the last attempt's reason in err. */
int sp_conn_dial_until(const struct sockaddr_un *addr, uint16_t proto,
                       uint16_t peer, int64_t deadline, int64_t min_wait_ms,
                       char *err, size_t errlen);
enum sp_io sp_conn_write(int fd, const void *buf, size_t len, int64_t deadline);
/* Reads buf[*done..len), advancing *done as bytes arrive, so that a read
 * cut short by the deadline can be resumed by a later call. */
enum sp_io sp_conn_read(int fd, void *buf, size_t len, size_t *done,
                        int64_t deadline);

#endif
