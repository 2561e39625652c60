/*
 * ws_server: the libwebsockets server -- the /ws endpoint with its
 * handshake (JWT auth, origin, per-user limit, since), or first-message
 * auth for a handshake without a token, the client protocol (connected
 * frame, ping/pong, invalid_json, ack, token refresh, forwarding to
 * backends), writing each connection's queue, closes with their codes
 * (bounded in time), and the HTTP endpoints /healthz and /metrics.
 *
 * Threads: everything here runs on the one lws service thread, except
 * ws_server_wake, which any thread may call.
 *
 * Ownership: the server references the registry, verifier and inbound
 * socket given at creation; main owns them and frees them after
 * ws_server_destroy.
 */
#ifndef WSGATE_WS_SERVER_H
#define WSGATE_WS_SERVER_H

#include <ev.h>
#include <stddef.h>
#include <stdint.h>

#include "auth_jwt.h"
#include "cluster_replica.h"
#include "config.h"
#include "inbound.h"
#include "registry.h"
#include "router.h"
#include "store.h"

struct ws_server;

/* Called on the service thread after ws_server_wake. */
typedef void (*ws_server_wake_fn)(void *arg);

struct ws_server_deps {
	struct ev_loop *loop; /* the service thread's; outlives the server */
	struct registry *registry;
	struct router *router;
	struct store *store; /* sessions and auth_failures rows */
	const struct auth_jwt *auth;
	struct inbound *inbound;
	ws_server_wake_fn on_wake;
	void *wake_arg;
};

struct ws_server *ws_server_new(const struct config *cfg,
                                const struct ws_server_deps *deps, char *err,
                                size_t errlen);
/* Cluster mode: /metrics reports r's state too (wsgate_cluster_*). */
void ws_server_set_cluster(struct ws_server *srv, struct cluster_replica *r);
/* Runs one service iteration (blocks until there is something to do). */
int ws_server_service(struct ws_server *srv);
/* Thread-safe: makes the service thread call on_wake soon. */
void ws_server_wake(struct ws_server *srv);
/* Service thread, from a callback of the loop: calls on_wake now, as
 * after ws_server_wake, and writes the frames it queued. */
void ws_server_handle_wake(struct ws_server *srv);
/* Used by the registry: c has frames to send or must close. Frames
 * queued while on_wake runs are written by ws_server_write_ready, which
 * on_wake may call and which runs again when it returns; otherwise, and
 * for closes, this arranges a writable callback. */
void ws_server_conn_ready(struct conn *c, void *srv);
/* Service thread, within on_wake: writes the frames queued so far. */
void ws_server_write_ready(struct ws_server *srv);
/* Shutdown: closes every connection with code and reason, then serves
 * until they are gone or timeout_ms has passed, and hangs up what is left.
 * Their session rows are written by then; after it, the server needs
 * neither store, router nor inbound socket until ws_server_destroy. */
void ws_server_drain(struct ws_server *srv, int code, const char *reason,
                     int timeout_ms);
void ws_server_destroy(struct ws_server *srv);

#endif
