/*
 * inbound: the push0 socket (served by sp_server; backends dial it with
 * NNG pull0) that carries client messages and
 * connection notices to backends (wsgate.v1.Inbound).
 *
 * Sends never block: a queue of --inbound-buffer messages absorbs bursts,
 * and when it is full -- no backend pulling, or backends too slow -- the
 * send fails at once and the caller decides (the client gets
 * backend_unavailable; a notice is dropped and counted).
 *
 * Threads: the service thread only.
 */
#ifndef WSGATE_INBOUND_H
#define WSGATE_INBOUND_H

#include <ev.h>
#include <stddef.h>
#include <stdint.h>

struct inbound;

int inbound_open(struct inbound **out, struct ev_loop *loop, const char *url,
                 int ipc_mode, int buffer, char *err, size_t errlen);
/* Sends what the kernel takes without waiting, then closes; messages
 * still queued are dropped. */
void inbound_close(struct inbound *in);

/* Each returns 0 when queued, -1 when the buffer is full (or on error). */
int inbound_send_client_message(struct inbound *in, const char *conn_id,
                                const char *user_id, const void *data,
                                size_t len, int64_t received_at);
int inbound_send_opened(struct inbound *in, const char *conn_id,
                        const char *user_id, const char *peer, int64_t at);
int inbound_send_closed(struct inbound *in, const char *conn_id,
                        const char *user_id, int code, const char *reason,
                        int64_t at);

#endif
