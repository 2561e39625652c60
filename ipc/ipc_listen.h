/*
 * ipc_listen: how the sidecar listens on an NNG URL. For ipc:// it creates
 * the socket file's directory if missing and gives the socket file mode
 * ipc_mode (0600: only this user can dial). A stale socket file from a
 * crashed run is replaced by NNG; a live one fails with "address in use".
 */
#ifndef WSGATE_IPC_LISTEN_H
#define WSGATE_IPC_LISTEN_H

#include <nng/nng.h>
#include <stddef.h>

/* 0, or -1 with a one-line reason (prefixed by what) in err. */
int ipc_listen(nng_socket sock, const char *what, const char *url, int ipc_mode,
               char *err, size_t errlen);

#endif
