/*
 * main: the wsgate sidecar process. Parses the configuration, opens the
 * pieces in dependency order (keys, registry, event log, router, inbound
 * socket, WebSocket server, control socket), runs the libwebsockets service
 * loop on this thread until SIGINT/SIGTERM (SIGHUP is ignored), then shuts
 * down in reverse: connections closed with 1001, every accepted event
 * committed and answered, sockets closed, everything freed.
 *
 * Threads: this thread is the service thread: it runs the event loop that
 * serves the browsers, the control socket and the inbound socket, and owns
 * the registry, router and dedup; the store runs its writer and
 * checkpointer; one thread waits for signals (they are blocked everywhere
 * else).
 */
#include <ev.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "audit_chain.h"
#include "auth_jwt.h"
#include "clock.h"
#include "cluster.h"
#include "cluster_publish.h"
#include "cluster_replica.h"
#include "config.h"
#include "control.h"
#include "dedup.h"
#include "dispatch.h"
#include "inbound.h"
#include "log.h"
#include "registry.h"
#include "router.h"
#include "store.h"
#include "ws_server.h"

/* Unanswered requests of one backend connection; past it that connection
 * waits (docs/SECURITY.md "Limits"). */
#define CONTROL_IN_SERVICE 256
#define SHUTDOWN_DRAIN_MS  2000
#define STORE_MAX_BACKLOG  200000 /* jobs; past it, RESOURCE_EXHAUSTED */
_Static_assert(STORE_EPOCH_MAX <= ROUTER_EPOCH_MAX,
               "the router takes every epoch the store can hold");
#define REPLAY_CHUNK       256
#define CLUSTER_MAX_QUEUED 200000 /* events in the lanes; then EXHAUSTED */

struct app {
	struct config cfg;
	struct ev_loop *loop;
	struct auth_jwt *auth;
	struct audit_key audit_key;
	struct registry *reg;
	struct dedup *dedup;
	struct store *store;
	struct router *router;
	struct inbound *inbound;
	struct ws_server *srv;
	struct control *ctl;
	struct dispatch dispatch;
	/* Cluster mode only (--cluster). */
	char node_id[CLUSTER_NODE_ID_MAX + 1];
	struct cluster *cluster;
	struct cluster_publish *cluster_pub;
	struct cluster_replica *replica;
	sigset_t signals;
	atomic_int stop;
};

/* SIGHUP is waited for and ignored: a closed terminal or a reload habit
 * (there is no configuration to reload) must not cut every session and
 * leave them open in the audit store; SIGINT or SIGTERM stops. */
static void *signal_thread(void *arg)
{
	struct app *app = arg;
	int sig = 0;
	while (sigwait(&app->signals, &sig) == 0 && sig == SIGHUP)
		log_info("SIGHUP ignored: nothing to reload (SIGTERM stops "
		         "wsgate)");
	log_info("signal %d: shutting down", sig);
	atomic_store(&app->stop, 1);
	ws_server_wake(app->srv);
	return NULL;
}

/* Service thread, after any wake-up: new requests, finished commits (their
 * frames to the browsers first, then the replies to the backends), and
 * event ids past retention. */
static void on_wake(void *arg)
{
	struct app *app = arg;
	dispatch_drain(&app->dispatch);
	if (app->cluster) {
		cluster_replica_apply(app->replica);
		cluster_publish_handle(app->cluster_pub,
		                       cluster_replica_position(app->replica));
	}
	router_handle_done(app->router);
	ws_server_write_ready(app->srv);
	dispatch_send_replies(&app->dispatch);
	dedup_prune(app->dedup, clock_now_us() - app->cfg.retention_us);
}

/* Service thread: control has requests (before the loop next waits). */
static void on_control_ready(void *arg)
{
	struct app *app = arg;
	ws_server_handle_wake(app->srv);
}

/* Any thread: something for the service thread. */
static void wake(void *arg)
{
	struct app *app = arg;
	if (app->srv)
		ws_server_wake(app->srv);
}

static void load_user(void *arg, const char *user_id, uint64_t last_seq)
{
	struct app *app = arg;
	struct user *u =
	    registry_user(app->reg, user_id, strlen(user_id), true);
	if (u && last_seq > u->last_seq)
		u->last_seq = last_seq;
}

static void load_event_id(void *arg, const char *user_id, const char *event_id,
                          uint64_t seq, int64_t accepted_at)
{
	struct app *app = arg;
	/* Its row is in the database: committed. */
	dedup_add(app->dedup, user_id, event_id, seq, accepted_at,
	          DEDUP_COMMITTED);
}

static int fail(const char *what, const char *err)
{
	fprintf(stderr, "wsgate: %s%s%s\n", what, *what ? ": " : "", err);
	return 2;
}

/* --node-id, or the host name. */
static int node_id_pick(struct app *app, char *err, size_t errlen)
{
	const char *id = app->cfg.node_id;
	char host[256] = "";
	if (!id) {
		gethostname(host, sizeof(host) - 1);
		id = host;
	}
	if (!cluster_node_id_valid(id)) {
		snprintf(err, errlen,
		         "--node-id '%s': expected 1-%d of [A-Za-z0-9_-]%s", id,
		         CLUSTER_NODE_ID_MAX,
		         app->cfg.node_id ? "" : " (the host name is not)");
		return -1;
	}
	memcpy(app->node_id, id, strlen(id) + 1); /* valid: <= 64 bytes */
	return 0;
}

/* Cluster mode: the NATS link, the lanes and the replica, once the store
 * knows where the replica stands. */
static int cluster_start(struct app *app, char *err, size_t errlen)
{
	struct cluster_config ccfg = {
	    .urls = app->cfg.cluster,
	    .node_id = app->node_id,
	    .stream = app->cfg.cluster_stream,
	    .replicas = (int)app->cfg.cluster_replicas,
	    .max_age_us = app->cfg.retention_us,
	    .start_seq = store_stream_seq(app->store) + 1,
	    .epoch = store_stream_epoch(app->store),
	    .wake = wake,
	    .wake_arg = app,
	};
	if (cluster_open(&app->cluster, &ccfg, err, errlen))
		return -1;
	struct cluster_publish_config pcfg = {
	    .cluster = app->cluster,
	    .router = app->router,
	    .registry = app->reg,
	    .dedup = app->dedup,
	    .on_event_done = dispatch_event_done,
	    .max_queued = CLUSTER_MAX_QUEUED,
	};
	app->cluster_pub = cluster_publish_new(&pcfg);
	struct cluster_replica_config rcfg = {
	    .cluster = app->cluster,
	    .publish = app->cluster_pub,
	    .registry = app->reg,
	    .router = app->router,
	    .store = app->store,
	    .position = store_stream_seq(app->store),
	    .epoch = store_stream_epoch(app->store),
	};
	app->replica = app->cluster_pub ? cluster_replica_new(&rcfg) : NULL;
	if (!app->replica) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	app->dispatch.cluster = app->cluster_pub;
	app->dispatch.replica = app->replica;
	ws_server_set_cluster(app->srv, app->replica);
	router_set_written(app->router, cluster_publish_mark, app->cluster_pub);
	log_info("cluster mode: node %s, NATS %s, stream %s", app->node_id,
	         app->cfg.cluster, app->cfg.cluster_stream);
	return 0;
}

static int app_open(struct app *app, char *err, size_t errlen)
{
	const struct config *cfg = &app->cfg;
	struct auth_jwt_config acfg = {
	    .secret_file = cfg->jwt_secret_file,
	    .public_key_file = cfg->jwt_public_key,
	    .issuer = cfg->jwt_issuer,
	    .audience = cfg->jwt_audience,
	};
	int audit = strcmp(cfg->audit, "on") == 0;
	if (!audit && strcmp(cfg->audit, "off") != 0) {
		snprintf(err, errlen, "--audit: expected on or off");
		return -1;
	}
	if (!audit)
		log_warn("--audit off: deliveries are not recorded");
	if (app->cfg.cluster && node_id_pick(app, err, errlen))
		return -1;
	if (!cfg->jwt_secret_file == !cfg->jwt_public_key) {
		snprintf(err, errlen,
		         "give exactly one of --jwt-secret-file or "
		         "--jwt-public-key");
		return -1;
	}
	if (auth_jwt_open(&app->auth, &acfg, err, errlen))
		return -1;
	if (audit_key_load(&app->audit_key, cfg->audit_key_file, 1, err,
	                   errlen))
		return -1;
	app->reg = registry_new(cfg->queue_limit, ws_server_conn_ready, NULL);
	app->dedup = dedup_new();
	if (!app->reg || !app->dedup) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	struct store_config scfg = {
	    .path = cfg->db,
	    .node_id = cfg->cluster ? app->node_id : NULL,
	    .retention_us = cfg->retention_us,
	    .audit_key = &app->audit_key,
	    .wake = wake,
	    .wake_arg = app,
	    .on_user = load_user,
	    .on_event_id = load_event_id,
	    .loader_arg = app,
	};
	if (store_open(&app->store, &scfg, err, errlen))
		return -1;
	struct router_config rcfg = {
	    .epoch = store_epoch(app->store),
	    .registry = app->reg,
	    .store = app->store,
	    .dedup = app->dedup,
	    .max_backlog = STORE_MAX_BACKLOG,
	    .replay_chunk = REPLAY_CHUNK,
	    .audit = audit,
	    .on_event_done = dispatch_event_done,
	};
	app->router = router_new(&rcfg);
	if (!app->router) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	app->loop = ev_loop_new(EVFLAG_AUTO);
	if (!app->loop) {
		snprintf(err, errlen, "cannot create the event loop");
		return -1;
	}
	if (inbound_open(&app->inbound, app->loop, cfg->inbound,
	                 (int)cfg->ipc_mode, (int)cfg->inbound_buffer, err,
	                 errlen))
		return -1;
	struct ws_server_deps deps = {
	    .loop = app->loop,
	    .registry = app->reg,
	    .router = app->router,
	    .store = app->store,
	    .auth = app->auth,
	    .inbound = app->inbound,
	    .on_wake = on_wake,
	    .wake_arg = app,
	};
	app->srv = ws_server_new(cfg, &deps, err, errlen);
	if (!app->srv)
		return -1;
	/* A batch of small events or one large one must fit. */
	size_t max_message = cfg->max_payload + (1u << 20);
	if (max_message < (16u << 20))
		max_message = 16u << 20;
	struct control_config ccfg = {
	    .url = cfg->control,
	    .ipc_mode = (int)cfg->ipc_mode,
	    .max_payload = cfg->max_payload,
	    .max_message = max_message,
	    .max_in_service = CONTROL_IN_SERVICE,
	};
	app->dispatch.reg = app->reg;
	app->dispatch.router = app->router;
	app->dispatch.store = app->store;
	app->dispatch.started_us = clock_now_us();
	if (control_open(&app->ctl, app->loop, &ccfg, on_control_ready, app,
	                 err, errlen))
		return -1;
	app->dispatch.ctl = app->ctl;
	if (cfg->cluster && cluster_start(app, err, errlen))
		return -1;
	return 0;
}

static void app_close(struct app *app)
{
	if (app->srv)
		ws_server_drain(app->srv, 1001, "sidecar shutting down",
		                SHUTDOWN_DRAIN_MS);
	/* Nothing more from NATS; events still waiting for the cluster are
	 * answered UNAVAILABLE. */
	cluster_close(app->cluster);
	app->cluster = NULL;
	/* Their stats read the cluster. */
	app->dispatch.replica = NULL;
	if (app->srv)
		ws_server_set_cluster(app->srv, NULL);
	if (app->cluster_pub)
		cluster_publish_shutdown(app->cluster_pub);
	/* Every accepted event is committed and answered before the control
	 * socket closes. */
	if (app->store && app->router) {
		store_flush(app->store);
		router_handle_done(app->router);
		dispatch_send_replies(&app->dispatch);
	}
	control_close(app->ctl);
	store_close(app->store);
	ws_server_destroy(app->srv);
	inbound_close(app->inbound);
	if (app->loop)
		ev_loop_destroy(app->loop);
	cluster_replica_free(app->replica);
	cluster_publish_free(app->cluster_pub);
	router_free(app->router);
	dedup_free(app->dedup);
	registry_free(app->reg);
	auth_jwt_close(app->auth);
	audit_key_clear(&app->audit_key);
}

int main(int argc, char **argv)
{
	static struct app app;
	char err[512];

	switch (config_parse(&app.cfg, argc, argv, err, sizeof(err))) {
	case CONFIG_HELP:
		config_usage(stdout);
		return 0;
	case CONFIG_ERROR:
		return fail("", err);
	case CONFIG_OK:
		break;
	}
	enum log_level level;
	if (log_level_parse(app.cfg.log_level, &level))
		return fail("--log-level", "expected debug, info, warn, error");
	log_set_level(level);

	/* Before any thread exists, so that every thread inherits the mask. */
	sigemptyset(&app.signals);
	sigaddset(&app.signals, SIGINT);
	sigaddset(&app.signals, SIGTERM);
	sigaddset(&app.signals, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &app.signals, NULL);
	/* A peer that went away is an error return (EPIPE), not a death. */
	signal(SIGPIPE, SIG_IGN);

	if (app_open(&app, err, sizeof(err))) {
		app_close(&app);
		return fail("", err);
	}
	pthread_t sig_tid;
	pthread_create(&sig_tid, NULL, signal_thread, &app);
	log_info("wsgate %s serving ws://%s/ws, control %s, inbound %s",
	         WSGATE_VERSION, app.cfg.listen, app.cfg.control,
	         app.cfg.inbound);

	while (!atomic_load(&app.stop))
		if (ws_server_service(app.srv) < 0)
			break;
	if (!atomic_load(&app.stop))
		pthread_kill(sig_tid, SIGTERM);
	pthread_join(sig_tid, NULL);
	app_close(&app);
	log_info("wsgate stopped");
	return 0;
}
