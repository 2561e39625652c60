/*
 * ws_server: the libwebsockets side of the sidecar (see ws_server.h).
 *
 * One protocol, "wsgate.v1", first in the list so that upgrades without a
 * Sec-WebSocket-Protocol header bind to it too; its callback also serves
 * plain HTTP. The callback is a dispatcher of short cases; policies live in
 * the functions they call.
 *
 * Handshake: LWS_CALLBACK_HTTP_CONFIRM_UPGRADE is the only point where an
 * upgrade can still be refused with an HTTP status, so authentication
 * happens there. Its verdict is kept in the server's one-slot stash, keyed
 * by wsi, and taken by LWS_CALLBACK_ESTABLISHED, which lws runs within the
 * same upgrade (no other handshake can come in between on this thread).
 * A handshake that carries no token at all may instead authenticate with
 * its first message (see "first-message auth" below): until then it is a
 * session without a connection, in no registry.
 */
#include "ws_server.h"

#include <ev.h>
#include <libwebsockets.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "clock.h"
#include "client_frame.h"
#include "handshake.h"
#include "log.h"
#include "peer_limit.h"
#include "router.h"

#define WRITE_BUDGET         64 /* frames per writable callback, for fairness */
#define WRITE_COALESCE       (64 * 1024) /* bytes handed to the kernel at once */
#define REFRESH_EVERY_US     1000000     /* at most one refresh a second */
#define REFRESH_MAX_FAILURES 3           /* refused refreshes before 4401 */
/* The longest Sec-WebSocket-Protocol lws 4.1.6 negotiates: it copies the
 * header into char buf[128] with lws_hdr_copy(.., sizeof(buf) - 1), which
 * needs room for the NUL, and drops a longer one ("protocol list too
 * long") with no answer (lib/roles/ws/server-ws.c). */
#define WS_PROTOCOL_LIST_MAX 126

struct pending_auth;

/* One of these is created by lws for each WebSocket connection. */
struct session {
	struct lws *wsi;
	struct conn *conn;       /* NULL until ESTABLISHED or authenticated */
	struct pending_auth *pa; /* waiting for its auth frame, or failed */
	int64_t heard_at;  /* last bytes from the peer (frame or pong), us */
	int64_t pinged_at; /* last ping sent, us; 0: none since heard_at */
	int ping_due;      /* write a ping at the next writable */
	unsigned char *rx; /* a message arriving in fragments */
	size_t rx_len;
	int peer_close_code; /* from the client's close frame */
	int peer_closing;    /* the client sent a close frame */
	/* On the server's ready list (see ws_server_conn_ready). */
	struct session *ready_next;
	int ready_listed;
	/* On one of the server's deadline lists (struct session_list): the
	 * connections awaiting their auth frame, or those closing. */
	struct session_list *list; /* NULL: on none */
	struct session *list_prev, *list_next;
	int64_t deadline; /* us, while on a list */
	int hung_up;      /* closing: given up on the close frame */
	/* In-band refresh (session_refresh). */
	int64_t refresh_at;   /* last refresh judged, us; 0: none yet */
	int refresh_failures; /* refused ones */
	/* Closing: an error frame to send before the close frame. */
	struct frame *close_notice;
	int close_notice_sent;
};

/* Sessions that all wait the same time for something (an auth frame, a
 * close), oldest first: appended at the tail, so also in deadline order,
 * and each sweep looks only at the expired head. */
struct session_list {
	struct session *head, *tail;
};

/*
 * First-message auth state: one per connection that opened without a
 * token, from ESTABLISHED until it authenticates (freed) or closes. Its
 * session is on the server's pending list while it waits.
 */
struct pending_auth {
	struct router_resume resume;
	char user_agent[256];
	char peer[64];
	/* Refused (or shut down): what to send, then close with. */
	int close_code;
	const char *close_reason; /* a literal, or ws_server_drain's */
	struct frame *error;      /* NULL: no error frame */
	int error_sent;
};

/* The verdict of the handshake in progress (see top of file). */
struct handshake_stash {
	struct lws *wsi;
	int first_message; /* no token: authenticates with its first frame */
	struct auth_jwt_claims claims;
	struct router_resume resume;
	char user_agent[256];
};

#define WS_RX_BUFFER 512

/* One per sidecar. */
struct ws_server {
	struct lws_context *context;
	/* libev's loop (epoll; main's), given to lws as a foreign loop:
	 * lws 4.1's own loop poll()s every socket on every wake-up, which
	 * with thousands of connections costs more than the work itself
	 * (bench/RESULTS.md). */
	struct ev_loop *loop;
	void *foreign_loops[1];
	struct lws_protocols protocols[2];
	lws_retry_bo_t retry; /* no lws validity timers: see conn_sweep_cb */
	int64_t ping_interval_us;
	int64_t idle_timeout_us;
	struct ws_server_deps deps;
	struct registry *reg;
	struct router *router;
	struct cluster_replica *replica; /* cluster mode; NULL: one pod */
	size_t max_client_frame;
	uint32_t max_conns_per_user;
	uint32_t max_conns;          /* 0: no global limit */
	int at_max_conns;            /* refusing for the global limit */
	int64_t auth_timeout_us;     /* 0: a token is required at handshake */
	uint32_t max_unauth;         /* 0: no limit of its own */
	uint32_t n_unauth;           /* sessions with a pending_auth */
	int at_max_unauth;           /* refusing for max_unauth */
	struct session_list pending; /* awaiting their auth frame */
	int draining;                /* shutting down: handshakes get 503 */
	int drained;                 /* ws_server_drain returned */
	struct peer_limit *peers;    /* NULL: no per-peer rate limit */
	int64_t rate_logged_at;      /* last per-peer rate log line, us */
	uint64_t rate_refused;       /* refusals since that line */
	const char *const *origins;
	int n_origins;
	int64_t started_us;
	struct handshake_stash stash;
	struct client_frame cf; /* the client message being looked at */
	struct frame *pong;     /* shared, prebuilt */
	unsigned char *wbuf; /* LWS_PRE + WRITE_COALESCE: frames being sent */
	lws_sorted_usec_list_t sul_sweep; /* token expiry and liveness */
	/* Connections given frames during on_wake, written when it returns;
	 * only while in_wake. */
	struct session *ready_head, *ready_tail;
	int in_wake;
	struct session_list closing; /* closed by the sidecar, not yet gone */
};

static void lws_log_emit(int level, const char *line)
{
	size_t len = strlen(line);
	while (len && (line[len - 1] == '\n' || line[len - 1] == '\r'))
		len--;
	log_write(level == LLL_ERR ? LOG_ERROR : LOG_WARN, "lws: %.*s",
	          (int)len, line);
}

/* --- HTTP --- */

/* Sends a complete small response. The caller completes the transaction
 * (or, during CONFIRM_UPGRADE, lws does). Returns -1 to hang up. */
static int http_respond(struct lws *wsi, unsigned int status, const char *ctype,
                        const char *body)
{
	size_t len = strlen(body);
	unsigned char hdr[LWS_PRE + 512];
	unsigned char *start = hdr + LWS_PRE, *p = start,
	              *end = hdr + sizeof(hdr) - 1;
	if (lws_add_http_common_headers(wsi, status, ctype, (lws_filepos_t)len,
	                                &p, end) ||
	    lws_finalize_write_http_header(wsi, start, &p, end))
		return -1;
	unsigned char *buf = malloc(LWS_PRE + len + 1);
	if (!buf)
		return -1;
	memcpy(buf + LWS_PRE, body, len);
	int n = lws_write(wsi, buf + LWS_PRE, len, LWS_WRITE_HTTP_FINAL);
	free(buf);
	return n < (int)len ? -1 : 0;
}

/* Cluster mode's lines of /metrics (docs/CLUSTER.md "Observability"). */
static void metrics_render_cluster(struct ws_server *srv, char *out, size_t cap)
{
	struct cluster_stats cs;
	cluster_replica_stats(srv->replica, &cs);
	snprintf(out, cap,
	         "# TYPE wsgate_cluster_info gauge\n"
	         "wsgate_cluster_info{node_id=\"%s\"} 1\n"
	         "# TYPE wsgate_cluster_available gauge\n"
	         "wsgate_cluster_available %d\n"
	         "# TYPE wsgate_cluster_down_seconds gauge\n"
	         "wsgate_cluster_down_seconds %.3f\n"
	         "# TYPE wsgate_cluster_position gauge\n"
	         "wsgate_cluster_position %llu\n"
	         "# TYPE wsgate_cluster_publish_queued gauge\n"
	         "wsgate_cluster_publish_queued %llu\n"
	         "# TYPE wsgate_cluster_unavailable_answers_total counter\n"
	         "wsgate_cluster_unavailable_answers_total %llu\n",
	         cs.node_id, cs.available, (double)cs.down_ms / 1000.0,
	         (unsigned long long)cs.position,
	         (unsigned long long)cs.publish_queued,
	         (unsigned long long)cs.unavailable_answers);
}

static void metrics_render(struct ws_server *srv, char *out, size_t cap)
{
	struct registry_counters *c = registry_counters(srv->reg);
	snprintf(out, cap,
	         "# TYPE wsgate_uptime_seconds gauge\n"
	         "wsgate_uptime_seconds %lld\n"
	         "# TYPE wsgate_connections gauge\n"
	         "wsgate_connections %u\n"
	         "# TYPE wsgate_users gauge\n"
	         "wsgate_users %u\n"
	         "# TYPE wsgate_events_accepted_total counter\n"
	         "wsgate_events_accepted_total %llu\n"
	         "# TYPE wsgate_frames_written_total counter\n"
	         "wsgate_frames_written_total %llu\n"
	         "# TYPE wsgate_frames_dropped_total counter\n"
	         "wsgate_frames_dropped_total %llu\n"
	         "# TYPE wsgate_notices_dropped_total counter\n"
	         "wsgate_notices_dropped_total %llu\n"
	         "# TYPE wsgate_client_messages_total counter\n"
	         "wsgate_client_messages_total %llu\n",
	         (long long)((clock_now_us() - srv->started_us) / 1000000),
	         registry_conn_count(srv->reg),
	         registry_connected_user_count(srv->reg),
	         (unsigned long long)c->events_accepted,
	         (unsigned long long)c->frames_written,
	         (unsigned long long)c->frames_dropped,
	         (unsigned long long)c->notices_dropped,
	         (unsigned long long)c->client_messages);
	size_t n = strlen(out);
	if (srv->replica)
		metrics_render_cluster(srv, out + n, cap - n);
}

static int http_serve(struct ws_server *srv, struct lws *wsi, const char *uri)
{
	int rc;
	if (strcmp(uri, "/healthz") == 0) {
		rc = http_respond(wsi, 200, "text/plain", "ok\n");
	} else if (strcmp(uri, "/metrics") == 0) {
		char body[2048];
		metrics_render(srv, body, sizeof(body));
		rc = http_respond(wsi, 200, "text/plain; version=0.0.4", body);
	} else if (strcmp(uri, "/ws") == 0) {
		rc = http_respond(wsi, 426, "text/plain",
		                  "WebSocket upgrade required\n");
	} else {
		rc = http_respond(wsi, 404, "text/plain", "not found\n");
	}
	if (rc || lws_http_transaction_completed(wsi))
		return -1;
	return 0;
}

/* --- handshake limits --- */

#define RATE_LOG_US (10 * 1000000LL)

/* Per-peer refusals are logged at most once per RATE_LOG_US, with a
 * count: a flood must not become a flood of log lines. */
static void rate_refusal_log(struct ws_server *srv, const char *peer,
                             int64_t now)
{
	srv->rate_refused++;
	if (srv->rate_logged_at && now - srv->rate_logged_at < RATE_LOG_US)
		return;
	log_warn("handshakes from %s over --handshake-rate-per-peer get 429 "
	         "(%llu refused since the last such line)",
	         peer, (unsigned long long)srv->rate_refused);
	srv->rate_logged_at = now;
	srv->rate_refused = 0;
}

/*
 * Global connection limit policy: at --max-conns open connections
 * (authenticated or awaiting their auth frame), further handshakes get
 * 429 before their token is looked at. One warning when the limit is
 * reached, one line when there is room again.
 */
static int conns_at_limit(struct ws_server *srv)
{
	if (!srv->max_conns)
		return 0;
	/* Connections still awaiting their auth frame hold a socket too. */
	int at =
	    registry_conn_count(srv->reg) + srv->n_unauth >= srv->max_conns;
	if (at && !srv->at_max_conns)
		log_warn("%u connections open: --max-conns reached, further "
		         "handshakes get 429",
		         srv->max_conns);
	else if (!at && srv->at_max_conns)
		log_info("below --max-conns again: handshakes accepted");
	srv->at_max_conns = at;
	return at;
}

/*
 * Unauthenticated connection limit policy: at --max-unauthenticated
 * connections awaiting their auth frame, further handshakes without a
 * token get 503: a client without a token can hold a socket only for
 * --auth-timeout, and only that many at once, whatever --max-conns is.
 */
static int unauth_at_limit(struct ws_server *srv)
{
	if (!srv->max_unauth)
		return 0;
	int at = srv->n_unauth >= srv->max_unauth;
	if (at && !srv->at_max_unauth)
		log_warn("%u connections await their auth frame: "
		         "--max-unauthenticated reached, handshakes without a "
		         "token get 503",
		         srv->max_unauth);
	else if (!at && srv->at_max_unauth)
		log_info("below --max-unauthenticated again");
	srv->at_max_unauth = at;
	return at;
}

/* --- handshake --- */

static int origin_allowed(struct ws_server *srv, struct lws *wsi)
{
	if (srv->n_origins == 0)
		return 1;
	char origin[256];
	if (lws_hdr_copy(wsi, origin, sizeof(origin), WSI_TOKEN_ORIGIN) <= 0)
		return 0;
	for (int i = 0; i < srv->n_origins; i++)
		if (strcmp(origin, srv->origins[i]) == 0)
			return 1;
	return 0;
}

/*
 * Finds the token in the header, the query, or the subprotocol list, in
 * that order. buf holds it; returns its length, 0 when none. *presented
 * says whether the handshake carries any of the three at all (an
 * Authorization header of any scheme, an access_token parameter even
 * empty, a bearer.* subprotocol): such a handshake is judged by its token;
 * only one without may authenticate with its first message.
 */
static size_t handshake_find_token(struct lws *wsi, char *buf, size_t cap,
                                   const char **tok, int *presented)
{
	size_t tok_len;
	*presented = 0;
	int n = lws_hdr_copy(wsi, buf, (int)cap, WSI_TOKEN_HTTP_AUTHORIZATION);
	if (n > 0) {
		*presented = 1;
		if (handshake_token_from_authorization(buf, (size_t)n, tok,
		                                       &tok_len) == 0)
			return tok_len;
	}
	const char *v =
	    lws_get_urlarg_by_name(wsi, "access_token=", buf, (int)cap);
	if (v) {
		*presented = 1;
		if (*v) {
			*tok = v;
			return strlen(v);
		}
	}
	n = lws_hdr_copy(wsi, buf, (int)cap, WSI_TOKEN_PROTOCOL);
	if (n > 0 && handshake_token_from_protocols(buf, (size_t)n, tok,
	                                            &tok_len) == 0) {
		*presented = 1;
		return tok_len;
	}
	return 0;
}

static const char *http_reason_phrase(unsigned int status)
{
	switch (status) {
	case 400:
		return "Bad Request";
	case 401:
		return "Unauthorized";
	case 403:
		return "Forbidden";
	case 404:
		return "Not Found";
	case 429:
		return "Too Many Requests";
	case 431:
		return "Request Header Fields Too Large";
	case 503:
		return "Service Unavailable";
	default:
		return "Error";
	}
}

/*
 * Refuses an upgrade with status and a text body, then hangs up. The status
 * line is written here: lws 4.1 takes the HTTP version of its response
 * from the request only once it serves it as HTTP, which an upgrade never
 * reaches, so lws_add_http_header_status would answer "HTTP/1.0" to an
 * HTTP/1.1 upgrade -- which strict WebSocket clients report as an invalid
 * response rather than as the 401 or 429 it is. Returns 1 (lws completes
 * the transaction, which closes: the request was never keep-alive to lws),
 * or -1 to hang up at once.
 */
static int http_refuse(struct lws *wsi, unsigned int status, const char *body)
{
	size_t len = strlen(body);
	char line[64];
	int n = snprintf(line, sizeof(line), "HTTP/1.1 %u %s", status,
	                 http_reason_phrase(status));
	unsigned char hdr[LWS_PRE + 256];
	unsigned char *start = hdr + LWS_PRE, *p = start,
	              *end = hdr + sizeof(hdr) - 1;
	static const char ctype[] = "text/plain", conn[] = "close";
	if (lws_add_http_header_by_name(wsi, NULL, (unsigned char *)line, n, &p,
	                                end) ||
	    lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_CONTENT_TYPE,
	                                 (const unsigned char *)ctype,
	                                 sizeof(ctype) - 1, &p, end) ||
	    lws_add_http_header_content_length(wsi, (lws_filepos_t)len, &p,
	                                       end) ||
	    lws_add_http_header_by_token(wsi, WSI_TOKEN_CONNECTION,
	                                 (const unsigned char *)conn,
	                                 sizeof(conn) - 1, &p, end) ||
	    lws_finalize_write_http_header(wsi, start, &p, end))
		return -1;
	unsigned char buf[LWS_PRE + 256];
	if (len > sizeof(buf) - LWS_PRE)
		return -1;
	memcpy(buf + LWS_PRE, body, len);
	return lws_write(wsi, buf + LWS_PRE, len, LWS_WRITE_HTTP_FINAL) <
	               (int)len
	           ? -1
	           : 1;
}

/* An auth_failures row: a refused handshake, auth frame or refresh. */
static void auth_failure_record(struct ws_server *srv, const char *peer,
                                const char *why)
{
	struct store_job *job = store_job_new(STORE_AUTH_FAILURE);
	if (job) {
		job->auth_failure.at = clock_now_us();
		job->auth_failure.peer = strdup(peer);
		job->auth_failure.reason = strdup(why);
		store_submit(srv->deps.store, job);
	}
}

/* Answers an upgrade with an HTTP error and records it in auth_failures. */
static int handshake_refuse(struct ws_server *srv, struct lws *wsi,
                            unsigned int status, const char *why,
                            const char *peer, enum log_level level)
{
	log_write(level, "handshake from %s refused (%u): %s", peer, status,
	          why);
	auth_failure_record(srv, peer, why);
	char body[128];
	snprintf(body, sizeof(body), "%s\n", why);
	return http_refuse(wsi, status, body);
}

/* Per-user limit policy: --max-conns-per-user open connections of one
 * user (closing ones do not count); checked at the handshake, or at the
 * auth frame. */
static int user_at_limit(struct ws_server *srv, const char *sub)
{
	struct user *u = registry_user(srv->reg, sub, strlen(sub), false);
	return u && u->n_conns >= srv->max_conns_per_user;
}

/*
 * Decides an upgrade: path, origin, token (or none: first-message auth),
 * since, per-user limit. Returns 0 to allow, 1 after answering with an
 * HTTP error, -1 to hang up.
 */
static int handshake_check(struct ws_server *srv, struct lws *wsi,
                           const char *upgrade)
{
	char buf[AUTH_JWT_MAX_TOKEN + 64], peer[64];
	lws_get_peer_simple(wsi, peer, sizeof(peer));
	srv->stash.wsi = NULL;
	int64_t now = clock_now_us();

	if (srv->draining)
		return handshake_refuse(srv, wsi, 503, "shutting down", peer,
		                        LOG_DEBUG);
	if (srv->peers && !peer_limit_allow(srv->peers, peer, now)) {
		rate_refusal_log(srv, peer, now);
		return handshake_refuse(srv, wsi, 429,
		                        "handshake rate of this address", peer,
		                        LOG_DEBUG);
	}
	if (conns_at_limit(srv))
		return handshake_refuse(srv, wsi, 429,
		                        "too many connections (global)", peer,
		                        LOG_DEBUG);
	/* Upgrade is a token: case-insensitive (RFC 7230 6.7). */
	if (strcasecmp(upgrade, "websocket") != 0)
		return handshake_refuse(
		    srv, wsi, 400, "not a websocket upgrade", peer, LOG_INFO);
	if (lws_hdr_copy(wsi, buf, sizeof(buf), WSI_TOKEN_GET_URI) <= 0 ||
	    strcmp(buf, "/ws") != 0)
		return handshake_refuse(srv, wsi, 404, "not found", peer,
		                        LOG_INFO);
	if (!origin_allowed(srv, wsi))
		return handshake_refuse(srv, wsi, 403, "origin not allowed",
		                        peer, LOG_INFO);
	/* lws would drop it after this callback, without an answer. */
	if (lws_hdr_total_length(wsi, WSI_TOKEN_PROTOCOL) >
	    WS_PROTOCOL_LIST_MAX)
		return handshake_refuse(
		    srv, wsi, 431,
		    "Sec-WebSocket-Protocol over 126 bytes: "
		    "send the token in an auth frame",
		    peer, LOG_INFO);

	const char *tok = NULL;
	int presented;
	size_t tok_len =
	    handshake_find_token(wsi, buf, sizeof(buf), &tok, &presented);
	struct auth_jwt_claims claims;
	int first_message = !presented && srv->auth_timeout_us > 0;
	if (first_message) {
		if (unauth_at_limit(srv))
			return handshake_refuse(
			    srv, wsi, 503,
			    "too many unauthenticated connections", peer,
			    LOG_DEBUG);
	} else {
		enum auth_jwt_result ar =
		    tok_len ? auth_jwt_verify(srv->deps.auth, tok, tok_len,
		                              now / 1000000, &claims)
		            : AUTH_JWT_MISSING;
		if (ar != AUTH_JWT_OK)
			return handshake_refuse(srv, wsi, 401,
			                        auth_jwt_result_reason(ar),
			                        peer, LOG_INFO);
	}

	const char *since =
	    lws_get_urlarg_by_name(wsi, "since=", buf, (int)sizeof(buf));
	uint64_t since_seq = 0;
	enum handshake_since hs = handshake_parse_since(since, &since_seq);
	if (hs == SINCE_INVALID)
		return handshake_refuse(srv, wsi, 400,
		                        "since: not an integer >= 0", peer,
		                        LOG_INFO);
	struct router_resume resume = {.has_since = hs == SINCE_VALID,
	                               .since = since_seq};
	const char *epoch =
	    lws_get_urlarg_by_name(wsi, "epoch=", buf, (int)sizeof(buf));
	if (handshake_parse_epoch(epoch, resume.epoch, sizeof(resume.epoch)) ==
	    EPOCH_INVALID)
		return handshake_refuse(
		    srv, wsi, 400, "epoch: not letters and digits, or too long",
		    peer, LOG_INFO);

	if (!first_message && user_at_limit(srv, claims.sub))
		return handshake_refuse(srv, wsi, 429, "too many connections",
		                        peer, LOG_INFO);

	srv->stash.wsi = wsi;
	srv->stash.first_message = first_message;
	if (!first_message)
		srv->stash.claims = claims;
	srv->stash.resume = resume;
	if (lws_hdr_copy(wsi, srv->stash.user_agent,
	                 sizeof(srv->stash.user_agent),
	                 WSI_TOKEN_HTTP_USER_AGENT) < 0)
		srv->stash.user_agent[0] = '\0';
	return 0;
}

/* --- sessions --- */

#define CONN_SWEEP_US    1000000
#define CLOSE_TIMEOUT_US 2000000

static void session_list_remove(struct session *s)
{
	struct session_list *l = s->list;
	if (!l)
		return;
	if (s->list_prev)
		s->list_prev->list_next = s->list_next;
	else
		l->head = s->list_next;
	if (s->list_next)
		s->list_next->list_prev = s->list_prev;
	else
		l->tail = s->list_prev;
	s->list_prev = s->list_next = NULL;
	s->list = NULL;
}

/* Moves s to the tail of l (from any list it is on), due after wait_us. */
static void session_list_append(struct session_list *l, struct session *s,
                                int64_t wait_us)
{
	session_list_remove(s);
	s->deadline = clock_now_us() + wait_us;
	s->list = l;
	s->list_prev = l->tail;
	s->list_next = NULL;
	if (l->tail)
		l->tail->list_next = s;
	else
		l->head = s;
	l->tail = s;
}

/*
 * Bounded close policy: a connection the sidecar closes (4001, 4003, 4008,
 * idle, shutdown) left the registry at once (registry_conn_close); its
 * socket gets the close frame at its next writable, which for a client
 * that reads nothing may never come. So every closing session goes on a
 * list, and the sweep hangs up those still there once CLOSE_TIMEOUT_US has
 * passed (up to a second later: the sweep runs once a second), without
 * the close frame; the session row still records the code. One list
 * instead of one lws timeout each: lws 4.1 keeps timeouts in a sorted
 * list, which a mass close (a drain, a kick of many) would insert into one
 * at a time.
 */
static void session_close_bound(struct ws_server *srv, struct session *s)
{
	if (s->list != &srv->closing)
		session_list_append(&srv->closing, s, CLOSE_TIMEOUT_US);
}

/* Hangs up the closing sessions past their deadline. They stay on the
 * list until lws reports them closed (LWS_CALLBACK_CLOSED). */
static void closing_sweep(struct ws_server *srv, int64_t now)
{
	for (struct session *s = srv->closing.head; s && s->deadline <= now;
	     s = s->list_next) {
		if (s->hung_up)
			continue;
		s->hung_up = 1;
		log_info("%s: close not sent in %lld ms (the client does not "
		         "read); hanging up",
		         s->conn ? s->conn->id : "unauthenticated connection",
		         (long long)(CLOSE_TIMEOUT_US / 1000));
		lws_set_timeout(s->wsi, PENDING_TIMEOUT_CLOSE_SEND,
		                LWS_TO_KILL_ASYNC);
	}
}

/* --- first-message auth --- */

static void pending_free(struct ws_server *srv, struct session *s)
{
	struct pending_auth *pa = s->pa;
	if (!pa)
		return;
	if (s->list == &srv->pending)
		session_list_remove(s);
	if (pa->error)
		frame_unref(pa->error);
	free(pa);
	s->pa = NULL;
	srv->n_unauth--;
}

/* A connection that opened without a token: it waits for its auth frame
 * (see session_auth_message), in no registry, receiving nothing. */
static int session_await_auth(struct ws_server *srv, struct lws *wsi,
                              struct session *s)
{
	struct pending_auth *pa = calloc(1, sizeof(*pa));
	if (!pa) {
		log_error("out of memory opening a connection");
		return -1;
	}
	pa->resume = srv->stash.resume;
	memcpy(pa->user_agent, srv->stash.user_agent, sizeof(pa->user_agent));
	lws_get_peer_simple(wsi, pa->peer, sizeof(pa->peer));
	s->pa = pa;
	s->heard_at = clock_now_us();
	srv->n_unauth++;
	session_list_append(&srv->pending, s, srv->auth_timeout_us);
	return 0;
}

/*
 * Ends a connection that has not authenticated: code and message go out
 * as an error frame (none when code is NULL), then the close with
 * close_code; the refusal gets an auth_failures row (none when why is
 * NULL). Its close is bounded like any other.
 */
static void session_auth_refuse(struct ws_server *srv, struct session *s,
                                int close_code, const char *close_reason,
                                const char *code, const char *message,
                                const char *why)
{
	struct pending_auth *pa = s->pa;
	if (pa->close_code)
		return; /* the first refusal stands */
	if (why) {
		log_info("connection from %s refused (%d): %s", pa->peer,
		         close_code, why);
		auth_failure_record(srv, pa->peer, why);
	}
	pa->close_code = close_code;
	pa->close_reason = close_reason;
	pa->error = code ? frame_build_error(code, message) : NULL;
	session_close_bound(srv, s);
	lws_callback_on_writable(s->wsi);
}

/* Auth timeout policy: a connection without a token that has not sent a
 * valid auth frame within --auth-timeout is refused with auth_timeout and
 * 4401 (checked by the once-a-second sweep). */
static void pending_sweep(struct ws_server *srv, int64_t now)
{
	struct session *s;
	while ((s = srv->pending.head) && s->deadline <= now)
		session_auth_refuse(srv, s, 4401, "authentication timed out",
		                    "auth_timeout", "no auth frame in time",
		                    "auth_timeout");
}

struct conn_sweep {
	struct ws_server *srv;
	int64_t now;
};

static void sweep_one(struct conn *c, void *arg)
{
	struct conn_sweep *sw = arg;
	struct ws_server *srv = sw->srv;
	struct session *s = lws_wsi_user(c->transport);
	if (c->expires_at <= sw->now) {
		registry_conn_close(srv->reg, c, 4001, "token expired");
		return;
	}
	if (!s || c->close_code)
		return;
	if (sw->now - s->heard_at >= srv->idle_timeout_us) {
		log_info("%s silent for %lld s; closing", c->id,
		         (long long)((sw->now - s->heard_at) / 1000000));
		registry_conn_close(srv->reg, c, LWS_CLOSE_STATUS_GOINGAWAY,
		                    "idle timeout");
		return;
	}
	int64_t quiet_since =
	    s->pinged_at > s->heard_at ? s->pinged_at : s->heard_at;
	if (!s->ping_due && sw->now - quiet_since >= srv->ping_interval_us) {
		s->ping_due = 1;
		s->pinged_at = sw->now;
		lws_callback_on_writable(c->transport);
	}
}

/*
 * Token expiry and liveness policy, one sweep a second over every
 * connection: a connection whose token has expired (exp plus the leeway it
 * was checked with) is closed with 4001; one the peer has sent nothing on
 * (no frame, no pong) for --ping-interval gets a WebSocket ping, and one
 * silent for --idle-timeout is closed (1001, "idle timeout"). One timer
 * for all connections: lws 4.1 keeps timers in a sorted list, so one per
 * connection (its own validity timer included, re-armed on every frame
 * received) made each handshake and each message walk the whole list
 * (20% of the sidecar's CPU in a handshake storm of 4,000 connections).
 * The same sweep ends the connections past their auth or close deadline.
 */
static void conn_sweep_cb(lws_sorted_usec_list_t *sul)
{
	struct ws_server *srv =
	    lws_container_of(sul, struct ws_server, sul_sweep);
	struct conn_sweep sw = {srv, clock_now_us()};
	registry_foreach_conn(srv->reg, sweep_one, &sw);
	pending_sweep(srv, sw.now);
	closing_sweep(srv, sw.now);
	lws_sul_schedule(srv->context, 0, &srv->sul_sweep, conn_sweep_cb,
	                 CONN_SWEEP_US);
}

/* exp (seconds) in microseconds, saturated: any int64 exp is a valid
 * claim. */
static int64_t exp_to_us(int64_t exp)
{
	return exp > INT64_MAX / 1000000   ? INT64_MAX
	       : exp < INT64_MIN / 1000000 ? INT64_MIN
	                                   : exp * 1000000;
}

/* When a token expiring at exp_us closes its connection (4001): with the
 * leeway it was checked with. */
static int64_t conn_expiry(int64_t exp_us)
{
	return exp_us > INT64_MAX - AUTH_JWT_LEEWAY_S * 1000000
	           ? INT64_MAX
	           : exp_us + AUTH_JWT_LEEWAY_S * 1000000;
}

/* An authenticated session becomes a connection of cl->sub: registry,
 * session row, `connected` and its catch-up, the backends' notice. The
 * same whether the token came with the handshake or in an auth frame.
 * Returns -1 to hang up. */
static int session_register(struct ws_server *srv, struct lws *wsi,
                            struct session *s, const struct auth_jwt_claims *cl,
                            const struct router_resume *resume,
                            const char *user_agent)
{
	char peer[64];
	lws_get_peer_simple(wsi, peer, sizeof(peer));
	int64_t now = clock_now_us();
	int64_t exp_us = exp_to_us(cl->exp);

	struct user *u =
	    registry_user(srv->reg, cl->sub, strlen(cl->sub), true);
	struct conn *c =
	    u ? registry_add_conn(srv->reg, u, wsi, peer, now) : NULL;
	if (!c) {
		log_error("out of memory opening a connection of %s", cl->sub);
		return -1;
	}
	s->conn = c;
	s->heard_at = now;
	struct store_job *job = store_job_new(STORE_SESSION_OPEN);
	if (job) {
		memcpy(job->session.conn_id, c->id, sizeof(c->id));
		job->session.user_id = strdup(u->id);
		job->session.peer = strdup(peer);
		job->session.user_agent = strdup(user_agent);
		job->session.token_jti = strdup(cl->jti);
		job->session.token_exp = exp_us; /* us */
		job->session.at = now;
		store_submit(srv->deps.store, job);
	}
	if (router_conn_opened(srv->router, c, resume))
		return -1;
	if (inbound_send_opened(srv->deps.inbound, c->id, u->id, peer, now))
		registry_counters(srv->reg)->notices_dropped++;

	c->expires_at = conn_expiry(exp_us);
	log_debug("open %s user=%s peer=%s", c->id, u->id, peer);
	return 0;
}

static int session_open(struct ws_server *srv, struct lws *wsi,
                        struct session *s)
{
	if (srv->stash.wsi != wsi)
		return -1; /* not authenticated by handshake_check */
	srv->stash.wsi = NULL;
	s->wsi = wsi;
	if (srv->stash.first_message)
		return session_await_auth(srv, wsi, s);
	return session_register(srv, wsi, s, &srv->stash.claims,
	                        &srv->stash.resume, srv->stash.user_agent);
}

/*
 * The first message of a connection without a token: it must be
 * {"type":"auth","token":JWT}, verified like a handshake's token (same
 * algorithm pinning, times, iss/aud) and then the per-user limit. Valid:
 * the connection is registered exactly as if the token had come with the
 * handshake, with the handshake's since. Anything else: auth_failed and
 * 4401; over the per-user limit: too_many_connections and 4429; both with
 * an auth_failures row. Returns -1 to hang up.
 */
static int session_auth_message(struct ws_server *srv, struct session *s,
                                const unsigned char *data, size_t len)
{
	struct pending_auth *pa = s->pa;
	if (client_frame_classify(data, len, &srv->cf) != CLIENT_FRAME_AUTH) {
		session_auth_refuse(srv, s, 4401, "authentication failed",
		                    "auth_failed", "expected an auth frame",
		                    "expected an auth frame");
		return 0;
	}
	struct auth_jwt_claims cl;
	enum auth_jwt_result ar =
	    auth_jwt_verify(srv->deps.auth, srv->cf.token, srv->cf.token_len,
	                    clock_now_us() / 1000000, &cl);
	if (ar != AUTH_JWT_OK) {
		const char *why = auth_jwt_result_reason(ar);
		session_auth_refuse(srv, s, 4401, "authentication failed",
		                    "auth_failed", why, why);
		return 0;
	}
	if (user_at_limit(srv, cl.sub)) {
		session_auth_refuse(srv, s, 4429, "too many connections",
		                    "too_many_connections", NULL,
		                    "too many connections");
		return 0;
	}
	char user_agent[sizeof(pa->user_agent)];
	struct router_resume resume = pa->resume;
	memcpy(user_agent, pa->user_agent, sizeof(user_agent));
	pending_free(srv, s);
	return session_register(srv, s->wsi, s, &cl, &resume, user_agent);
}

/* Protocol answers (pong, errors) are small and few: they do not count
 * against the queue limit, which is for events. */
static void session_send(struct ws_server *srv, struct conn *c, struct frame *f)
{
	registry_conn_send(srv->reg, c, f, 1);
}

static void session_send_error(struct ws_server *srv, struct conn *c,
                               const char *code, const char *message)
{
	struct frame *f = frame_build_error(code, message);
	if (f) {
		session_send(srv, c, f);
		frame_unref(f);
	}
}

/* The session row follows the token in force: its jti and exp. */
static void session_record_refresh(struct ws_server *srv, struct conn *c,
                                   const struct auth_jwt_claims *cl)
{
	struct store_job *job = store_job_new(STORE_SESSION_REFRESH);
	if (!job) {
		log_error("out of memory: the session row of %s keeps its old"
		          " token",
		          c->id);
		return;
	}
	memcpy(job->session.conn_id, c->id, sizeof(c->id));
	job->session.token_jti = strdup(cl->jti);
	job->session.token_exp = exp_to_us(cl->exp); /* us */
	store_submit(srv->deps.store, job);
}

/*
 * In-band token refresh: {"type":"refresh","token":JWT} on an open
 * connection. The new token is verified like any other and must name the
 * connection's own user; then the connection lives until its exp (plus
 * the leeway) instead of the old one's, its session row takes the new
 * jti and exp, and the client gets {"type":"refreshed","exp":EXP}.
 * Refused: refresh_failed with the reason and an auth_failures row
 * ("refresh: REASON"); the old expiry stands.
 *
 * Refresh policy: a verification and a row cost the sidecar more than a
 * frame costs the client, so a connection gets one refresh a second (one
 * sooner: refresh_failed "too soon", nothing verified, no row), and its
 * REFRESH_MAX_FAILURES-th refused one closes it with 4401 after its
 * refresh_failed frame: at most that many rows per connection.
 */
static void session_refresh(struct ws_server *srv, struct session *s)
{
	struct conn *c = s->conn;
	int64_t now = clock_now_us();
	if (s->refresh_at && now - s->refresh_at < REFRESH_EVERY_US) {
		session_send_error(srv, c, "refresh_failed",
		                   "too soon: one refresh a second");
		return;
	}
	s->refresh_at = now;
	struct auth_jwt_claims cl;
	enum auth_jwt_result ar =
	    auth_jwt_verify(srv->deps.auth, srv->cf.token, srv->cf.token_len,
	                    clock_now_us() / 1000000, &cl);
	const char *why = ar != AUTH_JWT_OK ? auth_jwt_result_reason(ar)
	                  : strcmp(cl.sub, c->user->id) != 0
	                      ? "sub is another user"
	                      : NULL;
	if (why) {
		char row[96];
		snprintf(row, sizeof(row), "refresh: %s", why);
		log_info("%s of %s: refresh refused: %s", c->id, c->user->id,
		         why);
		auth_failure_record(srv, c->peer, row);
		if (++s->refresh_failures < REFRESH_MAX_FAILURES) {
			session_send_error(srv, c, "refresh_failed", why);
			return;
		}
		log_info("%s of %s: %d refreshes refused; closing", c->id,
		         c->user->id, s->refresh_failures);
		s->close_notice = frame_build_error("refresh_failed", why);
		registry_conn_close(srv->reg, c, 4401,
		                    "too many failed refreshes");
		return;
	}
	c->expires_at = conn_expiry(exp_to_us(cl.exp));
	session_record_refresh(srv, c, &cl);
	char text[64];
	snprintf(text, sizeof(text), "{\"type\":\"refreshed\",\"exp\":%lld}",
	         (long long)cl.exp);
	struct frame *f = frame_build_literal(text);
	if (f) {
		session_send(srv, c, f);
		frame_unref(f);
	}
	log_debug("%s of %s: token refreshed, exp %lld", c->id, c->user->id,
	          (long long)cl.exp);
}

/* A complete text message from the client of an open connection. */
static void session_message(struct ws_server *srv, struct session *s,
                            const unsigned char *data, size_t len)
{
	struct conn *c = s->conn;
	switch (client_frame_classify(data, len, &srv->cf)) {
	case CLIENT_FRAME_INVALID_JSON:
		session_send_error(srv, c, "invalid_json", NULL);
		break;
	case CLIENT_FRAME_PING:
		session_send(srv, c, srv->pong);
		break;
	case CLIENT_FRAME_ACK:
		if (srv->cf.ack_seq > c->last_seq_written)
			session_send_error(srv, c, "invalid_ack", NULL);
		else
			router_conn_acked(srv->router, c, srv->cf.ack_seq);
		break;
	case CLIENT_FRAME_INVALID_ACK:
		session_send_error(srv, c, "invalid_ack", NULL);
		break;
	case CLIENT_FRAME_AUTH:
		session_send_error(srv, c, "already_authenticated", NULL);
		break;
	case CLIENT_FRAME_REFRESH:
		session_refresh(srv, s);
		break;
	case CLIENT_FRAME_FORWARD:
		if (inbound_send_client_message(srv->deps.inbound, c->id,
		                                c->user->id, data, len,
		                                clock_now_us()))
			session_send_error(srv, c, "backend_unavailable", NULL);
		else
			registry_counters(srv->reg)->client_messages++;
		break;
	}
}

/* A complete text message: to the open connection, or as the auth frame
 * of one without a token. Returns -1 to hang up. */
static int session_text(struct ws_server *srv, struct session *s,
                        const unsigned char *data, size_t len)
{
	if (s->conn) {
		session_message(srv, s, data, len);
		return 0;
	}
	return session_auth_message(srv, s, data, len);
}

static int session_receive(struct ws_server *srv, struct lws *wsi,
                           struct session *s, const unsigned char *in,
                           size_t len)
{
	if (!s->conn && !s->pa)
		return -1;
	if (s->pa && s->pa->close_code)
		return 0; /* refused: only the close is left to do */
	s->heard_at = clock_now_us();
	if (lws_frame_is_binary(wsi)) {
		static const char why[] = "binary frames are not accepted";
		if (s->pa) {
			session_auth_refuse(
			    srv, s, 4401, "authentication failed",
			    "auth_failed", "expected an auth frame",
			    "expected an auth frame");
			return 0;
		}
		lws_close_reason(wsi, LWS_CLOSE_STATUS_UNACCEPTABLE_OPCODE,
		                 (unsigned char *)why, sizeof(why) - 1);
		return -1;
	}
	int complete =
	    lws_is_final_fragment(wsi) && !lws_remaining_packet_payload(wsi);
	if (s->rx_len + len > srv->max_client_frame) {
		static const char why[] = "frame too large";
		lws_close_reason(wsi, LWS_CLOSE_STATUS_MESSAGE_TOO_LARGE,
		                 (unsigned char *)why, sizeof(why) - 1);
		return -1;
	}
	if (complete && s->rx_len == 0)
		return session_text(srv, s, in, len);
	/* A message arriving in pieces: gather it, bounded above. */
	unsigned char *rx = realloc(s->rx, s->rx_len + len + 1);
	if (!rx)
		return -1;
	memcpy(rx + s->rx_len, in, len);
	s->rx = rx;
	s->rx_len += len;
	if (!complete)
		return 0;
	int rc = session_text(srv, s, s->rx, s->rx_len);
	free(s->rx);
	s->rx = NULL;
	s->rx_len = 0;
	return rc;
}

/* The header of an unmasked, final text frame of len bytes (RFC 6455). */
static size_t ws_text_header(unsigned char *h, size_t len)
{
	h[0] = 0x81;
	if (len < 126) {
		h[1] = (unsigned char)len;
		return 2;
	}
	if (len <= 0xffff) {
		h[1] = 126;
		h[2] = (unsigned char)(len >> 8);
		h[3] = (unsigned char)len;
		return 4;
	}
	h[1] = 127;
	for (int i = 0; i < 8; i++)
		h[2 + i] = (unsigned char)((uint64_t)len >> (56 - 8 * i));
	return 10;
}

/* Frames as many queued frames as fit into srv->wbuf; returns how many,
 * and their bytes in *total. */
static uint32_t coalesce_frames(struct ws_server *srv, struct conn *c,
                                int budget, size_t *total)
{
	unsigned char *start = srv->wbuf + LWS_PRE, *p = start;
	uint32_t n = 0;
	for (; n < c->queue.len && (int)n < budget; n++) {
		struct frame *f = frame_queue_at(&c->queue, n);
		if ((size_t)(p - start) + f->len + 10 > WRITE_COALESCE)
			break;
		p += ws_text_header(p, f->len);
		memcpy(p, f->payload, f->len);
		p += f->len;
	}
	*total = (size_t)(p - start);
	return n;
}

/*
 * Write policy: the frames ready for a connection go to the kernel in one
 * write -- one send() and one choke check per callback instead of one per
 * frame. They are framed here and written raw, which is correct because
 * no extension (permessage-deflate) is ever negotiated. A frame larger
 * than the buffer goes alone, framed by lws. At most WRITE_BUDGET frames
 * go at once; the caller arranges a writable callback for the rest.
 * Returns -1 when the connection failed.
 */
static int write_queue(struct ws_server *srv, struct lws *wsi, struct conn *c)
{
	struct frame *f;
	int budget = WRITE_BUDGET;
	while (budget > 0 && (f = frame_queue_peek(&c->queue))) {
		uint32_t n = 1;
		if (f->len + 10 > WRITE_COALESCE) {
			if (lws_write(wsi, f->payload, f->len, LWS_WRITE_TEXT) <
			    (int)f->len)
				return -1;
		} else {
			size_t total;
			n = coalesce_frames(srv, c, budget, &total);
			if (lws_write(wsi, srv->wbuf + LWS_PRE, total,
			              LWS_WRITE_RAW) < (int)total)
				return -1;
		}
		budget -= (int)n;
		while (n--)
			router_conn_written(srv->router, c);
		/* Choked also when lws still holds bytes the kernel did not
		 * take. The check is a poll(): only worth it with more to
		 * send. */
		if (c->queue.len && lws_send_pipe_choked(wsi))
			break;
	}
	return 0;
}

/* A refused connection without a token: its error frame, then (at the
 * next writable, so that the frame is not cut by the close) its close. */
static int session_write_refusal(struct lws *wsi, struct pending_auth *pa)
{
	if (!pa->close_code)
		return 0;
	if (pa->error && !pa->error_sent) {
		pa->error_sent = 1;
		if (lws_write(wsi, pa->error->payload, pa->error->len,
		              LWS_WRITE_TEXT) < (int)pa->error->len)
			return -1;
		lws_callback_on_writable(wsi);
		return 0;
	}
	lws_close_reason(wsi, (enum lws_close_status)pa->close_code,
	                 (unsigned char *)pa->close_reason,
	                 strlen(pa->close_reason));
	return -1;
}

static int session_write(struct ws_server *srv, struct lws *wsi,
                         struct session *s)
{
	struct conn *c = s->conn;
	if (s->pa)
		return session_write_refusal(wsi, s->pa);
	if (!c)
		return 0;
	if (c->close_code) {
		if (s->close_notice && !s->close_notice_sent) {
			/* The notice first, the close at the next writable:
			 * not cut by it. */
			s->close_notice_sent = 1;
			if (lws_write(wsi, s->close_notice->payload,
			              s->close_notice->len, LWS_WRITE_TEXT) <
			    (int)s->close_notice->len)
				return -1;
			lws_callback_on_writable(wsi);
			return 0;
		}
		lws_close_reason(wsi, (enum lws_close_status)c->close_code,
		                 (unsigned char *)c->close_reason,
		                 strlen(c->close_reason));
		return -1;
	}
	if (s->ping_due) {
		/* Not empty: lws 4.1 hands no empty pong to the callback. */
		static const char body[] = "wsgate";
		s->ping_due = 0;
		memcpy(srv->wbuf + LWS_PRE, body, sizeof(body) - 1);
		if (lws_write(wsi, srv->wbuf + LWS_PRE, sizeof(body) - 1,
		              LWS_WRITE_PING) < 0)
			goto failed;
	}
	if (write_queue(srv, wsi, c))
		goto failed;
	if (c->queue.len)
		lws_callback_on_writable(wsi);
	return 0;
failed:
	log_info("write to %s failed; closing", c->id);
	return -1;
}

/*
 * Frames queued while the service thread handled a wake-up (commits done,
 * requests answered) are written right after it, without waiting for the
 * socket's writable callback: that round trip cost two epoll_ctl per frame
 * (POLLOUT on, then off) and a loop iteration, about a fifth of the
 * service thread under load (bench/RESULTS.md). lws 4.1 allows a write
 * outside the callback (lws_write keeps what the kernel refuses and
 * sends it itself); what needs the callback -- a close, a ping, a socket
 * with bytes still buffered, a peer that is closing -- still goes there.
 */
void ws_server_write_ready(struct ws_server *srv)
{
	struct session *s;
	while ((s = srv->ready_head)) {
		srv->ready_head = s->ready_next;
		if (!srv->ready_head)
			srv->ready_tail = NULL;
		s->ready_next = NULL;
		s->ready_listed = 0;
		struct conn *c = s->conn;
		struct lws *wsi = c->transport;
		if (c->close_code || s->ping_due || s->peer_closing ||
		    lws_partial_buffered(wsi)) {
			lws_callback_on_writable(wsi);
			continue;
		}
		if (write_queue(srv, wsi, c)) {
			log_info("write to %s failed; closing", c->id);
			lws_set_timeout(wsi, PENDING_TIMEOUT_KILLED_BY_PARENT,
			                LWS_TO_KILL_ASYNC);
			continue;
		}
		if (c->queue.len && !lws_partial_buffered(wsi))
			lws_callback_on_writable(wsi);
	}
}

static void session_closed(struct ws_server *srv, struct session *s)
{
	free(s->rx);
	s->rx = NULL;
	frame_unref(s->close_notice);
	s->close_notice = NULL;
	pending_free(srv, s);
	session_list_remove(s);
	struct conn *c = s->conn;
	if (!c)
		return;
	if (srv->drained) {
		/* After ws_server_drain the store and the router may be gone
		 * (main closes them before ws_server_destroy): only free. */
		registry_remove_conn(srv->reg, c);
		s->conn = NULL;
		return;
	}
	int code = c->close_code        ? c->close_code
	           : s->peer_close_code ? s->peer_close_code
	                                : LWS_CLOSE_STATUS_ABNORMAL_CLOSE;
	const char *reason = c->close_code ? c->close_reason : "client closed";
	if (inbound_send_closed(srv->deps.inbound, c->id, c->user->id, code,
	                        reason, clock_now_us()))
		registry_counters(srv->reg)->notices_dropped++;
	log_debug("close %s user=%s code=%d", c->id, c->user->id, code);
	router_conn_closing(srv->router, c);
	struct store_job *job = store_job_new(STORE_SESSION_CLOSE);
	if (job) {
		memcpy(job->session.conn_id, c->id, sizeof(c->id));
		job->session.at = clock_now_us();
		job->session.close_code = code;
		job->session.close_reason = strdup(reason);
		store_submit(srv->deps.store, job);
	}
	registry_remove_conn(srv->reg, c);
	s->conn = NULL;
}

static int ws_callback(struct lws *wsi, enum lws_callback_reasons reason,
                       void *user, void *in, size_t len)
{
	struct ws_server *srv = lws_context_user(lws_get_context(wsi));
	struct session *s = user;

	switch (reason) {
	case LWS_CALLBACK_HTTP:
		return http_serve(srv, wsi, in);
	case LWS_CALLBACK_HTTP_CONFIRM_UPGRADE:
		return handshake_check(srv, wsi, in);
	case LWS_CALLBACK_ESTABLISHED:
		return session_open(srv, wsi, s);
	case LWS_CALLBACK_RECEIVE:
		return session_receive(srv, wsi, s, in, len);
	case LWS_CALLBACK_SERVER_WRITEABLE:
		return session_write(srv, wsi, s);
	case LWS_CALLBACK_RECEIVE_PONG:
		s->heard_at = clock_now_us();
		s->pinged_at = 0;
		return 0;
	case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
		s->peer_closing = 1;
		if (len >= 2) {
			const unsigned char *p = in;
			s->peer_close_code = (p[0] << 8) | p[1];
		}
		return 0;
	case LWS_CALLBACK_CLOSED:
		session_closed(srv, s);
		return 0;
	case LWS_CALLBACK_EVENT_WAIT_CANCELLED:
		ws_server_handle_wake(srv);
		return 0;
	default:
		return lws_callback_http_dummy(wsi, reason, user, in, len);
	}
}

void ws_server_conn_ready(struct conn *c, void *arg)
{
	(void)arg;
	struct lws *wsi = c->transport;
	struct ws_server *srv = lws_context_user(lws_get_context(wsi));
	struct session *s = lws_wsi_user(wsi);
	if (c->close_code && s && s->conn == c)
		session_close_bound(srv, s);
	if (!srv->in_wake || !s || s->conn != c) {
		lws_callback_on_writable(wsi);
		return;
	}
	if (!s->ready_listed) {
		s->ready_listed = 1;
		if (srv->ready_tail)
			srv->ready_tail->ready_next = s;
		else
			srv->ready_head = s;
		srv->ready_tail = s;
	}
}

/* "HOST:PORT", "[V6]:PORT" or ":PORT". */
static int parse_listen(const char *listen, char *host, size_t hcap, int *port)
{
	const char *colon = strrchr(listen, ':');
	if (!colon || colon[1] == '\0')
		return -1;
	char *end;
	long p = strtol(colon + 1, &end, 10);
	if (*end || p <= 0 || p > 65535)
		return -1;
	size_t hlen = (size_t)(colon - listen);
	const char *h = listen;
	if (hlen >= 2 && h[0] == '[' && h[hlen - 1] == ']')
		h++, hlen -= 2;
	if (hlen >= hcap)
		return -1;
	memcpy(host, h, hlen);
	host[hlen] = '\0';
	*port = (int)p;
	return 0;
}

struct ws_server *ws_server_new(const struct config *cfg,
                                const struct ws_server_deps *deps, char *err,
                                size_t errlen)
{
	char host[128];
	int port;
	if (parse_listen(cfg->listen, host, sizeof(host), &port)) {
		snprintf(err, errlen, "--listen: '%s' is not HOST:PORT",
		         cfg->listen);
		return NULL;
	}
	struct ws_server *srv = calloc(1, sizeof(*srv));
	if (!srv) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	srv->deps = *deps;
	srv->reg = deps->registry;
	srv->router = deps->router;
	srv->max_client_frame = cfg->max_client_frame;
	srv->max_conns_per_user = (uint32_t)cfg->max_conns_per_user;
	srv->max_conns = (uint32_t)cfg->max_conns;
	srv->auth_timeout_us = cfg->auth_timeout_us;
	srv->max_unauth = (uint32_t)cfg->max_unauthenticated;
	if (cfg->handshake_rate_per_peer) {
		srv->peers = peer_limit_new(cfg->handshake_rate_per_peer);
		if (!srv->peers) {
			snprintf(err, errlen, "out of memory");
			goto fail;
		}
	}
	srv->origins = cfg->allowed_origins;
	srv->n_origins = cfg->n_allowed_origins;
	srv->started_us = clock_now_us();
	srv->pong = frame_build_literal("{\"type\":\"pong\"}");
	srv->wbuf = malloc(LWS_PRE + WRITE_COALESCE);
	if (!srv->pong || !srv->wbuf) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	srv->protocols[0] = (struct lws_protocols){
	    .name = "wsgate.v1",
	    .callback = ws_callback,
	    .per_session_data_size = sizeof(struct session),
	    /* lws gives every connection a receive buffer of this size for
	     * its whole life (0: 4 KiB). Client messages are small (ping,
	     * ack); larger ones arrive in pieces that session_receive
	     * gathers, so idle connections stay light. */
	    .rx_buffer_size = WS_RX_BUFFER,
	};
	/* Zeros: lws arms no validity timer per connection (see
	 * conn_sweep_cb, which pings and hangs up instead). */
	srv->retry.secs_since_valid_ping = 0;
	srv->retry.secs_since_valid_hangup = 0;
	srv->ping_interval_us = cfg->ping_interval_us;
	srv->idle_timeout_us = cfg->idle_timeout_us;

	lws_set_log_level(LLL_ERR | LLL_WARN, lws_log_emit);
	struct lws_context_creation_info info;
	memset(&info, 0, sizeof(info));
	info.port = port;
	info.iface = host[0] && strcmp(host, "0.0.0.0") != 0 ? host : NULL;
	info.protocols = srv->protocols;
	info.user = srv;
	info.options =
	    LWS_SERVER_OPTION_VALIDATE_UTF8 | LWS_SERVER_OPTION_LIBEV;
	srv->loop = deps->loop;
	srv->foreign_loops[0] = srv->loop;
	info.foreign_loops = srv->foreign_loops;
	info.retry_and_idle_policy = &srv->retry;
	info.max_http_header_data = AUTH_JWT_MAX_TOKEN + 1024;
	/* Slowloris policy: lws bounds the wait for a first byte (and a TLS
	 * handshake) by timeout_secs, and the request head by
	 * timeout_secs_ah_idle, counted from its first byte and not
	 * restarted by more bytes; both in whole seconds. */
	int64_t hs_timeout_s = (cfg->handshake_timeout_us + 999999) / 1000000;
	if (hs_timeout_s < 1)
		hs_timeout_s = 1;
	if (hs_timeout_s > 3600)
		hs_timeout_s = 3600;
	info.timeout_secs = (unsigned int)hs_timeout_s;
	info.timeout_secs_ah_idle = (int)hs_timeout_s;
	if (cfg->tls_cert || cfg->tls_key) {
		if (!cfg->tls_cert || !cfg->tls_key) {
			snprintf(err, errlen,
			         "--tls-cert and --tls-key go together");
			goto fail;
		}
		info.options |= LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
		info.ssl_cert_filepath = cfg->tls_cert;
		info.ssl_private_key_filepath = cfg->tls_key;
	}
	srv->context = lws_create_context(&info);
	if (!srv->context) {
		snprintf(err, errlen, "cannot serve on %s (port busy?)",
		         cfg->listen);
		goto fail;
	}
	lws_sul_schedule(srv->context, 0, &srv->sul_sweep, conn_sweep_cb,
	                 CONN_SWEEP_US);
	return srv;
fail:
	peer_limit_free(srv->peers);
	frame_unref(srv->pong);
	free(srv->wbuf);
	free(srv);
	return NULL;
}

void ws_server_set_cluster(struct ws_server *srv, struct cluster_replica *r)
{
	srv->replica = r;
}

int ws_server_service(struct ws_server *srv)
{
	ev_run(srv->loop, EVRUN_ONCE);
	return 0;
}

void ws_server_wake(struct ws_server *srv)
{
	lws_cancel_service(srv->context);
}

void ws_server_handle_wake(struct ws_server *srv)
{
	srv->in_wake = 1;
	srv->deps.on_wake(srv->deps.wake_arg);
	srv->in_wake = 0;
	ws_server_write_ready(srv); /* what on_wake left */
}

#define DRAIN_HANGUP_US 500000 /* for hung-up sockets to be reported closed */

struct close_all {
	struct registry *reg;
	int code;
	const char *reason;
};

static void close_one(struct conn *c, void *arg)
{
	struct close_all *ca = arg;
	registry_conn_close(ca->reg, c, ca->code, ca->reason);
}

void ws_server_drain(struct ws_server *srv, int code, const char *reason,
                     int timeout_ms)
{
	srv->draining = 1;
	struct close_all ca = {srv->reg, code, reason};
	registry_foreach_conn(srv->reg, close_one, &ca);
	/* Those still waiting for their auth frame: no frame, no row. */
	while (srv->pending.head)
		session_auth_refuse(srv, srv->pending.head, code, reason, NULL,
		                    NULL, NULL);
	int64_t deadline = clock_now_us() + (int64_t)timeout_ms * 1000;
	while ((registry_conn_count(srv->reg) || srv->closing.head ||
	        srv->n_unauth) &&
	       clock_now_us() < deadline)
		ev_run(srv->loop, EVRUN_ONCE);
	/* Those whose close could not be written in time are hung up now,
	 * and their closing (session rows, dropped rows, notices) is done
	 * here, while the store, router and inbound socket still exist. */
	for (struct session *s = srv->closing.head; s; s = s->list_next)
		if (!s->hung_up) {
			s->hung_up = 1;
			lws_set_timeout(s->wsi, PENDING_TIMEOUT_CLOSE_SEND,
			                LWS_TO_KILL_ASYNC);
		}
	deadline = clock_now_us() + DRAIN_HANGUP_US;
	while (srv->closing.head && clock_now_us() < deadline)
		ev_run(srv->loop, EVRUN_ONCE);
	if (srv->closing.head)
		log_warn("shutdown: connections still open after the drain; "
		         "their session rows stay open until the next start");
	srv->drained = 1;
}

void ws_server_destroy(struct ws_server *srv)
{
	if (!srv)
		return;
	lws_sul_cancel(&srv->sul_sweep);
	lws_context_destroy(srv->context);
	peer_limit_free(srv->peers);
	frame_unref(srv->pong);
	free(srv->wbuf);
	free(srv);
}
