/*
 * libwsgate: the C client library a backend links to talk to the wsgate
 * sidecar. It hides the transport (NNG's req/rep and push/pull wire
 * format over ipc://) and protobuf: a backend opens a control connection,
 * sends events (one, or a batch), disconnects users, lists connections, asks
 * for stats and pings; it can also pull client messages and connection
 * notices from the inbound channel.
 *
 * Errors are values: every call returns an enum wsgate_status. Negative
 * values are local or transport failures; positive values are the sidecar's
 * reply statuses (numbered as wsgate.v1.Status). The text of the last error
 * of a handle is kept in the handle (wsgate_client_error).
 *
 * Threads: a wsgate_client may be shared by many threads; concurrent calls
 * use separate connections (kept for reuse), so they are concurrent
 * requests.
 * wsgate_send_event calls made at the same moment by several threads leave
 * together as one SendBatch request (each still gets its own result; a
 * lone caller sends a plain SendEvent at once): share one client between
 * the threads of a process to get this.
 * wsgate_client_error() then reports the last error of any thread.
 * A wsgate_inbound is for one thread at a time.
 */
#ifndef WSGATE_H
#define WSGATE_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#define WSGATE_DEFAULT_CONTROL "ipc:///tmp/wsgate/control.ipc"
#define WSGATE_DEFAULT_INBOUND "ipc:///tmp/wsgate/inbound.ipc"
#define WSGATE_MAX_BATCH       1000

enum wsgate_status {
	WSGATE_ERR_PROTOCOL = -4, /* reply undecodable or not for our request */
	WSGATE_ERR_TIMEOUT = -3,  /* no reply in time */
	WSGATE_ERR_TRANSPORT = -2, /* cannot dial / send / receive */
	WSGATE_ERR_ARGUMENT = -1,  /* caller error caught before sending */
	WSGATE_OK = 1,
	WSGATE_INVALID_ARGUMENT = 2,
	WSGATE_RESOURCE_EXHAUSTED = 3,
	WSGATE_NOT_FOUND = 4,
	WSGATE_INTERNAL = 5,
	/* cannot accept events now (e.g. its cluster is unreachable): retry
	 * later with the same event_id */
	WSGATE_UNAVAILABLE = 6,
};

/* Numbered as wsgate.v1.EventType. */
enum wsgate_event_type {
	WSGATE_EVENT_UNSPECIFIED = 0,
	WSGATE_AGENT_STARTED = 1,
	WSGATE_AGENT_THINKING = 2,
	WSGATE_TOOL_EXECUTING = 3,
	WSGATE_TOOL_COMPLETED = 4,
	WSGATE_AGENT_COMPLETED = 5,
	WSGATE_AGENT_ERROR = 6,
	WSGATE_CUSTOM = 7,
};

/* One event to one user. Strings are NUL-terminated; NULL means empty.
 * The caller keeps ownership of every pointer. */
struct wsgate_event {
	const char *event_id;
	const char *user_id;
	const char *thread_id;
	const char *run_id;
	enum wsgate_event_type type;
	const char *custom_type; /* when type == WSGATE_CUSTOM */
	const void *payload_json;
	size_t payload_len; /* 0: {} */
};

struct wsgate_event_result {
	enum wsgate_status status;
	char error[256];
	uint64_t seq;
	uint32_t connections;
	bool retained;
	bool duplicate;
};

struct wsgate_connection {
	char conn_id[64];
	char user_id[257];
	int64_t opened_at; /* microseconds since the Unix epoch */
	char peer[64];
	uint64_t queued;
	uint64_t written;
};

struct wsgate_stats {
	uint64_t uptime_s;
	uint32_t connections;
	uint32_t users;
	uint64_t events_accepted;
	uint64_t frames_written;
	uint64_t frames_dropped;
	uint64_t audit_backlog;
	uint64_t notices_dropped;
	uint64_t storage_failures; /* event-log commits that failed */
	char storage_error[256];   /* the last one; "" when none */
	char version[32];
	/* The audit chain's committed head (the last delivery row's id and
	 * chain), when the sidecar reports it. */
	int has_audit_head;
	uint64_t audit_head_id;
	unsigned char audit_head_chain[32];
	/* Cluster mode (docs/CLUSTER.md); 0 and "" on a single pod. */
	char node_id[65];
	int cluster;                          /* --cluster is on */
	int cluster_available;                /* new events can be published */
	uint64_t cluster_down_ms;             /* unavailable for so long */
	uint64_t cluster_position;            /* last stream seq applied */
	uint64_t cluster_publish_queued;      /* events in the publish lanes */
	uint64_t cluster_unavailable_answers; /* since the sidecar started */
};

typedef struct wsgate_client wsgate_client;

/* A client of the control socket at url, an ipc:// address (NULL:
 * WSGATE_DEFAULT_CONTROL; anything else is WSGATE_ERR_ARGUMENT). Nothing is
 * dialed until the first call. timeout_ms bounds each call. */
enum wsgate_status wsgate_client_open(wsgate_client **out, const char *url,
                                      int timeout_ms);
void wsgate_client_close(wsgate_client *c);
const char *wsgate_client_error(const wsgate_client *c);
const char *wsgate_status_name(enum wsgate_status s);
const char *wsgate_event_type_name(enum wsgate_event_type t);
/* Parses "agent_started" ... "agent_error"; anything else is WSGATE_CUSTOM. */
enum wsgate_event_type wsgate_event_type_parse(const char *name);

/* Sends one event (merged with other threads' concurrent sends, see
 * Threads above). Its status is returned and also set in *res. A call may
 * wait up to about twice the client's timeout when others' requests are
 * in flight before its own. */
enum wsgate_status wsgate_send_event(wsgate_client *c,
                                     const struct wsgate_event *ev,
                                     struct wsgate_event_result *res);
/* Sends n events in one request; res[i] is the result of ev[i]. Returns
 * the request's status: WSGATE_OK means every res[i] is filled in. */
enum wsgate_status wsgate_send_batch(wsgate_client *c,
                                     const struct wsgate_event *ev, size_t n,
                                     struct wsgate_event_result *res);
/* Closes a user's connections, or one connection (both given: that
 * connection only if it belongs to that user). */
enum wsgate_status wsgate_disconnect(wsgate_client *c, const char *user_id,
                                     const char *conn_id, const char *reason,
                                     uint32_t *disconnected);
/* *out is malloc'd (free with free()); user_id NULL or "" lists all. */
enum wsgate_status wsgate_list_connections(wsgate_client *c,
                                           const char *user_id,
                                           struct wsgate_connection **out,
                                           size_t *n);
enum wsgate_status wsgate_get_stats(wsgate_client *c, struct wsgate_stats *out);
enum wsgate_status wsgate_ping(wsgate_client *c);

/* --- inbound channel: client messages and connection notices --- */

enum wsgate_inbound_kind {
	WSGATE_INBOUND_CLIENT_MESSAGE = 1,
	WSGATE_INBOUND_OPENED = 2,
	WSGATE_INBOUND_CLOSED = 3,
};

struct wsgate_inbound_msg {
	enum wsgate_inbound_kind kind;
	char conn_id[64];
	char user_id[257];
	int64_t at;          /* received_at or at, microseconds */
	char peer[64];       /* OPENED */
	int32_t code;        /* CLOSED */
	char reason[128];    /* CLOSED */
	unsigned char *data; /* CLIENT_MESSAGE: malloc'd, owned by the msg */
	size_t data_len;
};

typedef struct wsgate_inbound wsgate_inbound;

/* A puller of the inbound socket at url, an ipc:// address (NULL:
 * WSGATE_DEFAULT_INBOUND; anything else is WSGATE_ERR_ARGUMENT). It
 * connects now if the sidecar is there (waiting up to a second for its
 * answer), else at the first receive that finds it, and again after a
 * sidecar restart; meanwhile the sidecar keeps messages for backends. */
enum wsgate_status wsgate_inbound_open(wsgate_inbound **out, const char *url);
void wsgate_inbound_close(wsgate_inbound *in);
/* Waits up to timeout_ms for one message (0: only what has arrived; -1:
 * forever; a receive that must connect first may take up to 100 ms more).
 * WSGATE_ERR_TIMEOUT when none. */
enum wsgate_status wsgate_inbound_recv(wsgate_inbound *in,
                                       struct wsgate_inbound_msg *msg,
                                       int timeout_ms);
void wsgate_inbound_msg_clear(struct wsgate_inbound_msg *msg);

#endif
