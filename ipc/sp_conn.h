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
enum sp_io sp_conn_write(int fd, const void *buf, size_t len, int64_t deadline);
/* Reads buf[*done..len), advancing *done as bytes arrive, so that a read
 * cut short by the deadline can be resumed by a later call. */
enum sp_io sp_conn_read(int fd, void *buf, size_t len, size_t *done,
                        int64_t deadline);

#endif
