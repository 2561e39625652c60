/* ipc_listen: NNG listener set-up shared by the sidecar's sockets. */
#include "ipc_listen.h"

#include <nng/transport/ipc/ipc.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

/* mkdir -p of the directory of an ipc:// path. */
static void ipc_prepare_dir(const char *url)
{
	char path[512];
	snprintf(path, sizeof(path), "%s", url + strlen("ipc://"));
	for (char *p = path + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		mkdir(path, 0755);
		*p = '/';
	}
}

int ipc_listen(nng_socket sock, const char *what, const char *url, int ipc_mode,
               char *err, size_t errlen)
{
	nng_listener l;
	int rv, is_ipc = strncmp(url, "ipc://", 6) == 0;
	if (is_ipc)
		ipc_prepare_dir(url);
	if ((rv = nng_listener_create(&l, sock, url)) != 0) {
		snprintf(err, errlen, "%s: bad address %s: %s", what, url,
		         nng_strerror(rv));
		return -1;
	}
	if (is_ipc &&
	    (rv = nng_listener_set_int(l, NNG_OPT_IPC_PERMISSIONS, ipc_mode))) {
		snprintf(err, errlen, "%s: cannot set mode of %s: %s", what,
		         url, nng_strerror(rv));
		nng_listener_close(l);
		return -1;
	}
	if ((rv = nng_listener_start(l, 0)) != 0) {
		snprintf(err, errlen, "%s: cannot listen on %s: %s", what, url,
		         nng_strerror(rv));
		nng_listener_close(l);
		return -1;
	}
	return 0;
}
