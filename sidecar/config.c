/*
 * config: one table drives the flags, their WSGATE_* variables, their
 * defaults and --help (see config.h).
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

enum flag_kind {
	FLAG_STRING,
	FLAG_SIZE,
	FLAG_DURATION,
	FLAG_COUNT,
	FLAG_OCTAL,
	FLAG_LIST
};

struct flag {
	const char *name; /* without the leading "--" */
	const char *env;
	const char *def; /* NULL: unset */
	enum flag_kind kind;
	size_t offset;
	const char *help;
};

#define F(field) offsetof(struct config, field)

static const struct flag flags[] = {
    {"listen", "WSGATE_LISTEN", "127.0.0.1:8080", FLAG_STRING, F(listen),
     "WebSocket and HTTP endpoint HOST:PORT"},
    {"control", "WSGATE_CONTROL", "ipc:///tmp/wsgate/control.ipc", FLAG_STRING,
     F(control), "backend and admin requests (NNG req/rep protocol)"},
    {"inbound", "WSGATE_INBOUND", "ipc:///tmp/wsgate/inbound.ipc", FLAG_STRING,
     F(inbound), "client messages and notices (NNG push/pull protocol)"},
    {"db", "WSGATE_DB", "./wsgate.db", FLAG_STRING, F(db),
     "event log and audit store (SQLite)"},
    {"jwt-secret-file", "WSGATE_JWT_SECRET_FILE", NULL, FLAG_STRING,
     F(jwt_secret_file), "HS256 secret (>= 32 bytes)"},
    {"jwt-public-key", "WSGATE_JWT_PUBLIC_KEY", NULL, FLAG_STRING,
     F(jwt_public_key), "RS256/ES256 public key (PEM)"},
    {"jwt-issuer", "WSGATE_JWT_ISSUER", NULL, FLAG_STRING, F(jwt_issuer),
     "required iss claim"},
    {"jwt-audience", "WSGATE_JWT_AUDIENCE", NULL, FLAG_STRING, F(jwt_audience),
     "required aud claim"},
    {"retention", "WSGATE_RETENTION", "24h", FLAG_DURATION, F(retention_us),
     "how long events stay replayable"},
    {"audit-key-file", "WSGATE_AUDIT_KEY_FILE", "./wsgate.audit-key",
     FLAG_STRING, F(audit_key_file), "audit hash-chain key (0600)"},
    {"audit", "WSGATE_AUDIT", "on", FLAG_STRING, F(audit),
     "delivery rows: on, or off to measure their cost"},
    {"max-payload", "WSGATE_MAX_PAYLOAD", "1M", FLAG_SIZE, F(max_payload),
     "largest event payload a backend may send"},
    {"max-client-frame", "WSGATE_MAX_CLIENT_FRAME", "64K", FLAG_SIZE,
     F(max_client_frame), "largest frame a client may send"},
    {"inbound-buffer", "WSGATE_INBOUND_BUFFER", "1024", FLAG_COUNT,
     F(inbound_buffer), "client messages waiting for backends"},
    {"queue-limit", "WSGATE_QUEUE_LIMIT", "4M", FLAG_SIZE, F(queue_limit),
     "bytes queued for one connection before close 4008"},
    {"max-conns-per-user", "WSGATE_MAX_CONNS_PER_USER", "32", FLAG_COUNT,
     F(max_conns_per_user), "further handshakes of the user get 429"},
    {"max-conns", "WSGATE_MAX_CONNS", "100000", FLAG_COUNT, F(max_conns),
     "further handshakes get 429 (0: no limit)"},
    {"handshake-rate-per-peer", "WSGATE_HANDSHAKE_RATE_PER_PEER", "1000",
     FLAG_COUNT, F(handshake_rate_per_peer),
     "handshakes/s from one address, bursts of 2x; more get 429 (0: off)"},
    {"handshake-timeout", "WSGATE_HANDSHAKE_TIMEOUT", "10s", FLAG_DURATION,
     F(handshake_timeout_us),
     "close a connection whose request headers take longer"},
    {"auth-timeout", "WSGATE_AUTH_TIMEOUT", "10s", FLAG_DURATION,
     F(auth_timeout_us),
     "a handshake without a token: the auth frame's deadline (0: refuse)"},
    {"max-unauthenticated", "WSGATE_MAX_UNAUTHENTICATED", "10000", FLAG_COUNT,
     F(max_unauthenticated),
     "connections awaiting their auth frame; more get 503 (0: no limit)"},
    {"allowed-origin", "WSGATE_ALLOWED_ORIGIN", NULL, FLAG_LIST,
     F(allowed_origins), "Origin allowlist (repeatable; default any)"},
    {"tls-cert", "WSGATE_TLS_CERT", NULL, FLAG_STRING, F(tls_cert),
     "serve wss/https with this certificate"},
    {"tls-key", "WSGATE_TLS_KEY", NULL, FLAG_STRING, F(tls_key),
     "private key of --tls-cert"},
    {"ping-interval", "WSGATE_PING_INTERVAL", "25s", FLAG_DURATION,
     F(ping_interval_us), "WebSocket ping cadence"},
    {"idle-timeout", "WSGATE_IDLE_TIMEOUT", "75s", FLAG_DURATION,
     F(idle_timeout_us), "close a connection silent for longer"},
    {"log-level", "WSGATE_LOG_LEVEL", "info", FLAG_STRING, F(log_level),
     "debug, info, warn, error"},
    {"ipc-mode", "WSGATE_IPC_MODE", "0600", FLAG_OCTAL, F(ipc_mode),
     "permissions of the IPC socket files"},
    {"cluster", "WSGATE_CLUSTER", NULL, FLAG_STRING, F(cluster),
     "NATS URL[,URL...]: cluster mode (default: a single pod)"},
    {"node-id", "WSGATE_NODE_ID", NULL, FLAG_STRING, F(node_id),
     "this sidecar's name in a cluster, [A-Za-z0-9_-] (default host name)"},
    {"cluster-stream", "WSGATE_CLUSTER_STREAM", "WSGATE", FLAG_STRING,
     F(cluster_stream), "JetStream stream of the cluster's events"},
    {"cluster-replicas", "WSGATE_CLUSTER_REPLICAS", "1", FLAG_COUNT,
     F(cluster_replicas), "copies of the stream in the NATS cluster"},
};

#define N_FLAGS (sizeof(flags) / sizeof(flags[0]))

int config_parse_size(const char *s, uint64_t *out)
{
	char *end;
	if (!isdigit((unsigned char)*s))
		return -1;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno)
		return -1;
	uint64_t mul = 1;
	if (*end == 'K' || *end == 'k')
		mul = 1024, end++;
	else if (*end == 'M' || *end == 'm')
		mul = 1024 * 1024, end++;
	else if (*end == 'G' || *end == 'g')
		mul = 1024ULL * 1024 * 1024, end++;
	if (*end || v > UINT64_MAX / mul)
		return -1;
	*out = v * mul;
	return 0;
}

int config_parse_duration_us(const char *s, int64_t *out)
{
	char *end;
	if (!isdigit((unsigned char)*s))
		return -1;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno)
		return -1;
	int64_t mul;
	if (strcmp(end, "ms") == 0)
		mul = 1000;
	else if (strcmp(end, "s") == 0 || *end == '\0')
		mul = 1000000;
	else if (strcmp(end, "m") == 0)
		mul = 60 * 1000000LL;
	else if (strcmp(end, "h") == 0)
		mul = 3600 * 1000000LL;
	else
		return -1;
	if (v > (unsigned long long)(INT64_MAX / mul))
		return -1;
	*out = (int64_t)v * mul;
	return 0;
}

static int set_flag(struct config *cfg, const struct flag *f, const char *value,
                    char *err, size_t errlen)
{
	char *field = (char *)cfg + f->offset;
	switch (f->kind) {
	case FLAG_STRING:
		*(const char **)field = value;
		return 0;
	case FLAG_LIST:
		if (cfg->n_allowed_origins >= CONFIG_MAX_ORIGINS) {
			snprintf(err, errlen, "--%s: at most %d values",
			         f->name, CONFIG_MAX_ORIGINS);
			return -1;
		}
		cfg->allowed_origins[cfg->n_allowed_origins++] = value;
		return 0;
	case FLAG_SIZE:
		if (config_parse_size(value, (uint64_t *)field) == 0)
			return 0;
		snprintf(err, errlen, "--%s: '%s' is not a size (e.g. 64K, 4M)",
		         f->name, value);
		return -1;
	case FLAG_COUNT: {
		char *end;
		errno = 0;
		unsigned long long v = strtoull(value, &end, 10);
		if (!isdigit((unsigned char)*value) || *end || errno ||
		    v > UINT32_MAX) {
			snprintf(err, errlen, "--%s: '%s' is not a count",
			         f->name, value);
			return -1;
		}
		*(uint64_t *)field = v;
		return 0;
	}
	case FLAG_OCTAL: {
		char *end;
		unsigned long v = strtoul(value, &end, 8);
		if (!isdigit((unsigned char)*value) || *end || v > 0777) {
			snprintf(err, errlen, "--%s: '%s' is not a mode",
			         f->name, value);
			return -1;
		}
		*(uint64_t *)field = v;
		return 0;
	}
	case FLAG_DURATION:
		if (config_parse_duration_us(value, (int64_t *)field) == 0)
			return 0;
		snprintf(err, errlen,
		         "--%s: '%s' is not a duration (e.g. 500ms, 25s, 24h)",
		         f->name, value);
		return -1;
	}
	return -1;
}

static const struct flag *find_flag(const char *name, size_t len)
{
	for (size_t i = 0; i < N_FLAGS; i++)
		if (strlen(flags[i].name) == len &&
		    strncmp(flags[i].name, name, len) == 0)
			return &flags[i];
	return NULL;
}

enum config_parse_result config_parse(struct config *cfg, int argc, char **argv,
                                      char *err, size_t errlen)
{
	memset(cfg, 0, sizeof(*cfg));
	for (size_t i = 0; i < N_FLAGS; i++)
		if (flags[i].def &&
		    set_flag(cfg, &flags[i], flags[i].def, err, errlen))
			return CONFIG_ERROR;
	for (size_t i = 0; i < N_FLAGS; i++) {
		const char *v = getenv(flags[i].env);
		if (v && *v) {
			if (flags[i].kind == FLAG_LIST)
				cfg->n_allowed_origins = 0;
			if (set_flag(cfg, &flags[i], v, err, errlen))
				return CONFIG_ERROR;
		}
	}
	/* A list flag given on the command line replaces its variable. */
	int list_from_argv = 0;
	for (int i = 1; i < argc; i++) {
		const char *arg = argv[i];
		if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0)
			return CONFIG_HELP;
		if (strncmp(arg, "--", 2) != 0) {
			snprintf(err, errlen, "unexpected argument '%s'", arg);
			return CONFIG_ERROR;
		}
		const char *name = arg + 2, *eq = strchr(name, '=');
		size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
		const struct flag *f = find_flag(name, nlen);
		if (!f) {
			snprintf(err, errlen, "unknown flag '%s' (see --help)",
			         arg);
			return CONFIG_ERROR;
		}
		const char *value = eq ? eq + 1 : NULL;
		if (!value) {
			if (i + 1 >= argc) {
				snprintf(err, errlen, "--%s needs a value",
				         f->name);
				return CONFIG_ERROR;
			}
			value = argv[++i];
		}
		if (f->kind == FLAG_LIST && !list_from_argv) {
			cfg->n_allowed_origins = 0;
			list_from_argv = 1;
		}
		if (set_flag(cfg, f, value, err, errlen))
			return CONFIG_ERROR;
	}
	return CONFIG_OK;
}

void config_usage(FILE *out)
{
	fprintf(out, "usage: wsgate [--flag VALUE]...\n\n");
	for (size_t i = 0; i < N_FLAGS; i++) {
		char left[64];
		snprintf(left, sizeof(left), "--%s", flags[i].name);
		fprintf(out, "  %-26s %s [%s, default %s]\n", left,
		        flags[i].help, flags[i].env,
		        flags[i].def ? flags[i].def : "none");
	}
}
