/*
 * ipc_listen: how the sidecar listens on an NNG URL, and keeps listening.
 *
 * For ipc:// it creates the socket file's directory if missing and gives
 * the socket file mode ipc_mode (0600: only this user can dial). A stale
 * socket file from a crashed run is replaced by NNG; a live one fails with
 * "address in use".
 *
 * The watchdog. NNG 1.5.2's listener stops accepting for good when an
 * accepted connection goes away before the listener's SP header is sent
 * (EPIPE becomes NNG_ECLOSED, and listener_accept_cb does not re-arm on
 * NNG_ECLOSED; fixed in NNG 1.6.0, issue #1518). Any process that can
 * connect and close quickly can cause it. The transport below keeps
 * accepting and even completes SP handshakes, so a dialer looks connected
 * but its pipe never reaches the socket: a header exchange alone cannot
 * tell a dead listener from a live one. So every IPC_LISTEN_PROBE_MS a
 * thread dials the address itself, completes the handshake, and waits for
 * its connection to arrive as a pipe of this listener (NNG_PIPE_EV_ADD_PRE);
 * that pipe is closed there, before the protocol sees it, so a push0
 * socket never hands a message to a probe. After IPC_LISTEN_PROBE_FAILURES
 * probes in a row without their pipe, the listener is closed (which drops
 * its pipes; NNG dialers reconnect and req0 resends) and a new one is
 * started on the same URL with the same mode; on_restart gets one line.
 *
 * Probed: ipc:// (pipes identified by the peer's pid, ours) and tcp://,
 * tcp4://, tcp6:// (by the probe's local port). Other schemes are listened
 * on without a watchdog.
 *
 * ipc_listen owns the socket's NNG_PIPE_EV_ADD_PRE notification: nothing
 * else may set one on that socket.
 *
 * Shutdown: ipc_listener_stop before nng_close(sock), ipc_listener_free
 * after it (NNG may run the pipe callback until the socket is closed).
 */
#ifndef WSGATE_IPC_LISTEN_H
#define WSGATE_IPC_LISTEN_H

#include <nng/nng.h>
#include <stddef.h>

#define IPC_LISTEN_PROBE_MS       1000 /* between two probes */
#define IPC_LISTEN_PROBE_WAIT_MS  500  /* for the header, then the pipe */
#define IPC_LISTEN_PROBE_FAILURES 2    /* in a row before a restart */

struct ipc_listener;

/* Called from the watchdog thread with one line (prefixed by what) each
 * time it restarts the listener or fails to. */
typedef void (*ipc_listen_log_fn)(void *arg, const char *line);

/* Listens on url and starts the watchdog. 0 and *out, or -1 with a
 * one-line reason (prefixed by what) in err. on_restart may be NULL. */
int ipc_listen(struct ipc_listener **out, nng_socket sock, const char *what,
               const char *url, int ipc_mode, ipc_listen_log_fn on_restart,
               void *log_arg, char *err, size_t errlen);

/* Stops the watchdog (waits for it); the listener stays open. */
void ipc_listener_stop(struct ipc_listener *l);

/* Frees l; call after nng_close of its socket. NULL is ignored. */
void ipc_listener_free(struct ipc_listener *l);

/* How many times the watchdog restarted the listener. */
unsigned ipc_listener_restarts(struct ipc_listener *l);

#endif
