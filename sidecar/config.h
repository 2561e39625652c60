/*
 * config: the sidecar's settings, from one table of flags (name, WSGATE_*
 * environment variable, default, parser, help). Defaults apply first, then
 * variables, then flags: a flag beats its variable. Sizes take K/M suffixes,
 * durations ms/s/m/h.
 *
 * Strings point into argv, the environment or the table's literals and are
 * not owned; only the origin list is allocated (config_free).
 */
#ifndef WSGATE_CONFIG_H
#define WSGATE_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define CONFIG_MAX_ORIGINS 32

struct config {
	const char *listen; /* HOST:PORT */
	const char *control;
	const char *inbound;
	const char *db;
	const char *jwt_secret_file;
	const char *jwt_public_key;
	const char *jwt_issuer;
	const char *jwt_audience;
	int64_t retention_us;
	const char *audit_key_file;
	const char *audit; /* "on" or "off" */
	uint64_t max_payload;
	uint64_t max_client_frame;
	uint64_t inbound_buffer;
	uint64_t queue_limit;
	uint64_t max_conns_per_user;
	uint64_t max_conns;               /* 0: no limit */
	uint64_t handshake_rate_per_peer; /* per second; 0: off */
	int64_t handshake_timeout_us;
	int64_t auth_timeout_us;      /* 0: no first-message auth */
	uint64_t max_unauthenticated; /* 0: no limit (but --max-conns) */
	const char *allowed_origins[CONFIG_MAX_ORIGINS];
	int n_allowed_origins;
	const char *tls_cert;
	const char *tls_key;
	int64_t ping_interval_us;
	int64_t idle_timeout_us;
	const char *log_level;
	uint64_t ipc_mode; /* octal, e.g. 0600 */
	/* Cluster mode (docs/CLUSTER.md): NULL = a single pod. */
	const char *cluster;        /* NATS URL[,URL...] */
	const char *node_id;        /* NULL: the host name (main) */
	const char *cluster_stream; /* JetStream stream name */
	uint64_t cluster_replicas;
};

enum config_parse_result { CONFIG_OK, CONFIG_HELP, CONFIG_ERROR };

/* Fills cfg from defaults, environment and argv. On CONFIG_ERROR writes a
 * one-line reason to err. */
enum config_parse_result config_parse(struct config *cfg, int argc, char **argv,
                                      char *err, size_t errlen);
void config_usage(FILE *out);

/* Exposed for tests and for wsgatectl-like tools. */
int config_parse_size(const char *s, uint64_t *out);
int config_parse_duration_us(const char *s, int64_t *out);

#endif
