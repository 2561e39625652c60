/*
 * main: the wsgate sidecar process. Parses the configuration, opens the
 * pieces in dependency order (key, registry, inbound socket, WebSocket
 * server, control socket), runs the libwebsockets service loop on this
 * thread until SIGINT/SIGTERM, then shuts down in reverse: connections are
 * closed with 1001, sockets closed, everything freed.
 *
 * Threads: this thread is the service thread (it owns the registry); NNG
 * runs its own; one thread waits for signals (they are blocked everywhere
 * else, so NNG threads never take them).
 */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#include "auth_jwt.h"
#include "clock.h"
#include "config.h"
#include "control.h"
#include "dispatch.h"
#include "inbound.h"
#include "log.h"
#include "registry.h"
#include "ws_server.h"

#define CONTROL_CONTEXTS 64
#define SHUTDOWN_DRAIN_MS 2000

struct app {
	struct config cfg;
	struct auth_jwt *auth;
	struct registry *reg;
	struct inbound *inbound;
	struct ws_server *srv;
	struct control *ctl;
	struct dispatch dispatch;
	sigset_t signals;
	atomic_int stop;
};

static void *signal_thread(void *arg)
{
	struct app *app = arg;
	int sig;
	sigwait(&app->signals, &sig);
	log_info("signal %d: shutting down", sig);
	atomic_store(&app->stop, 1);
	ws_server_wake(app->srv);
	return NULL;
}

static void on_wake(void *arg)
{
	dispatch_drain(arg);
}

static void control_wake(void *arg)
{
	ws_server_wake(arg);
}

static int fail(const char *what, const char *err)
{
	fprintf(stderr, "wsgate: %s%s%s\n", what, *what ? ": " : "", err);
	return 2;
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
	if (!cfg->jwt_secret_file == !cfg->jwt_public_key) {
		snprintf(err, errlen,
			 "give exactly one of --jwt-secret-file or "
			 "--jwt-public-key");
		return -1;
	}
	if (auth_jwt_open(&app->auth, &acfg, err, errlen))
		return -1;
	app->reg = registry_new(cfg->queue_limit, ws_server_conn_ready, NULL);
	if (!app->reg) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	if (inbound_open(&app->inbound, cfg->inbound, (int)cfg->ipc_mode,
			 (int)cfg->inbound_buffer, err, errlen))
		return -1;
	struct ws_server_deps deps = {
		.registry = app->reg,
		.auth = app->auth,
		.inbound = app->inbound,
		.on_wake = on_wake,
		.wake_arg = &app->dispatch,
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
		.contexts = CONTROL_CONTEXTS,
	};
	if (control_open(&app->ctl, &ccfg, control_wake, app->srv, err,
			 errlen))
		return -1;
	app->dispatch.reg = app->reg;
	app->dispatch.ctl = app->ctl;
	app->dispatch.started_us = clock_now_us();
	return 0;
}

static void app_close(struct app *app)
{
	if (app->srv)
		ws_server_drain(app->srv, 1001, "sidecar shutting down",
				SHUTDOWN_DRAIN_MS);
	control_close(app->ctl);
	app->dispatch.ctl = NULL;
	ws_server_destroy(app->srv);
	inbound_close(app->inbound);
	registry_free(app->reg);
	auth_jwt_close(app->auth);
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
	pthread_sigmask(SIG_BLOCK, &app.signals, NULL);
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
