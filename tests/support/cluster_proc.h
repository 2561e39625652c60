/*
 * cluster_proc: a wsgate cluster for the cluster tests and benchmark (one
 * nats-server, up to CLUSTER_MAX sidecars, each with its own directory and
 * database, started with `--cluster URL --node-id a|b|c`), its backends
 * (one libwsgate client per sidecar), the browsers ("tabs") that read a
 * user's events off any pod, and `wsgatectl verify` on a pod's database.
 *
 * Everything here checks the observable contract of docs/CLUSTER.md only:
 * flags, control replies (status UNAVAILABLE = 6), WebSocket frames
 * (`connected` with seq and epoch, events, resume_failed, pong) and
 * wsgatectl's exit status.
 */
#ifndef WSGATE_TEST_CLUSTER_PROC_H
#define WSGATE_TEST_CLUSTER_PROC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "wsgate.h"

struct nats_proc;
struct sidecar;
struct ws_client;

#define CLUSTER_MAX 3
/* wsgate.v1.Status UNAVAILABLE (docs/CLUSTER.md): NATS is not reachable,
 * the event was not stored, or the outcome is unknown; retry. */
#define CLUSTER_STATUS_UNAVAILABLE 6
#define CLUSTER_CALL_MS            5000

struct cluster {
	struct nats_proc *nats;
	size_t n;
	struct sidecar *sc[CLUSTER_MAX];
	wsgate_client *backend[CLUSTER_MAX];
	char node[CLUSTER_MAX][8]; /* "a", "b", "c" */
};

/* Whether this build can run a cluster: nats-server is installed and the
 * sidecar's --help lists --cluster. When not, why gets the reason (for the
 * skip message). */
bool cluster_supported(char *why, size_t cap);

/* Starts nats-server and n sidecars (node ids "a", "b", ...) with
 * extra_args (NULL or NULL-terminated) added to each, waits until each
 * accepts an event (cluster_wait_connected), and opens a backend per pod.
 * Returns 0, or -1 after printing why. */
int cluster_start(struct cluster **out, size_t n,
                  const char *const *extra_args);

/* Sends probe events (user "probe-<node>") through pod i until one is not
 * answered UNAVAILABLE, for up to timeout_ms: the pod is connected to
 * NATS and can publish. Returns 0, or -1 at the deadline. */
int cluster_wait_connected(struct cluster *c, size_t i, int timeout_ms);

/* One event to user with id event_id and payload {"n":n}. */
struct wsgate_event cluster_event(const char *user, const char *event_id,
                                  char *payload, size_t cap, long n);

/* Runs `wsgatectl verify` on pod i's database; 0 when it passes, else
 * its exit status (its output printed on stderr). */
int cluster_verify(const struct cluster *c, size_t i);

/* Stops everything and frees c; the directories are kept when failed (or
 * WSGATE_TEST_KEEP). Returns 0 when every sidecar still ran and exited 0
 * on SIGTERM, -1 otherwise. NULL: 0. */
int cluster_free(struct cluster *c, bool failed);

/* The fixture of a cluster test: the cluster, or why there is none. */
struct cluster_fixture {
	struct cluster *c;
	bool skip; /* cluster_supported said no: the tests skip */
	char why[256];
};

/* cluster_supported, then cluster_start of n pods unless it said no.
 * Returns 0 (a cluster, or skip set), or -1. */
int cluster_fixture_start(struct cluster_fixture *f, size_t n);

/* In a cmocka test: skips it, saying why, when f has no cluster. */
#define CLUSTER_SKIP_UNLESS(f)                                                 \
	do {                                                                   \
		if ((f)->skip) {                                               \
			print_message("[  SKIP    ] %s\n", (f)->why);          \
			skip();                                                \
		}                                                              \
	} while (0)

/* --- tabs: one browser connection of a user on one pod --- */

struct tab {
	struct ws_client *ws;
	char user[64];
	uint64_t connected_seq; /* `connected`.seq */
	char epoch[96];         /* `connected`.epoch as text, "" if absent */
	char node[72];          /* `connected`.node, "" if absent */
	bool resume_failed;     /* a resume_failed frame came */
	uint64_t oldest_seq;    /* its oldest_seq */
	uint64_t last_seq;      /* seq of the last event read */
	unsigned events;        /* events read */
};

/* Opens a tab of user on sidecar s, with ?since=since when since >= 0 and
 * &epoch=epoch when epoch is not NULL, and reads its `connected` frame.
 * Returns 0, or -1 after printing why. */
int tab_open(struct tab *t, const struct sidecar *s, const char *user,
             int64_t since, const char *epoch, int timeout_ms);

/* Reads the next event of t within timeout_ms, skipping nothing: a
 * resume_failed frame is recorded and the read goes on; a pong is
 * returned as 0 with *event_id "" (see tab_ping). 1: an event (event_id
 * (cap >= 128) and *seq set, t->last_seq and t->events updated); 0: a pong;
 * -1: timeout, close or an unexpected frame (printed). */
int tab_next(struct tab *t, char *event_id, uint64_t *seq, int timeout_ms);

/* Sends {"type":"ping"}. The matching pong comes after every frame the
 * pod had queued for t before it: a reader that meets it knows nothing
 * else was waiting. Returns 0 or -1. */
int tab_ping(struct tab *t);

void tab_close(struct tab *t);

#endif
