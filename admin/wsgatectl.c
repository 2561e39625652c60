/*
 * wsgatectl: the admin CLI (DESIGN.md, "Admin CLI"). This file owns the
 * command table, option parsing and the two output formats (tables for
 * people, --json one object per line for scripts). Live commands talk to
 * the sidecar's control socket through libwsgate; `token` signs with
 * jwt_mint. Forensic commands (reading the database) are not implemented
 * yet.
 *
 * Exit status: 0 success, 1 a check failed (e.g. the sidecar refused an
 * event), 2 usage or connection error; every failure says so in one line on
 * stderr starting "wsgatectl: ".
 */
#include "jwt_mint.h"
#include "wsgate.h"

#include <jansson.h>

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#ifndef WSGATE_VERSION
#define WSGATE_VERSION "dev"
#endif

#define DEFAULT_DB         "./wsgate.db"
#define DEFAULT_AUDIT_KEY  "./wsgate.audit-key"
#define DEFAULT_TIMEOUT_MS 3000
#define DEFAULT_TTL_S      3600
#define MAX_CMD_OPTS       8

enum { EXIT_OK = 0, EXIT_CHECK = 1, EXIT_USAGE = 2 };

/* Returned by the parsing helpers when the command should go on. */
#define GO_ON (-1)

/* The global options, one set per run, read by every command. */
struct ctl {
	const char *control;
	const char *db;
	const char *audit_key_file;
	bool json;
	int timeout_ms;
};

/* One row of the command table: main() only looks a name up here. */
struct command {
	const char *name;
	int (*run)(const struct ctl *ctl, const struct command *cmd, int argc,
	           char **argv);
	const char *args; /* usage, after the name */
	const char *help; /* one line */
};

static void usage(FILE *out);

static void cmd_usage_error(const struct command *cmd, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* One line: what is wrong, then how the command is used. */
static void cmd_usage_error(const struct command *cmd, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "wsgatectl: %s: ", cmd->name);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, " (usage: wsgatectl %s%s%s)\n", cmd->name,
	        cmd->args[0] != '\0' ? " " : "", cmd->args);
}

/*
 * Parses a command's options. Every option takes a value: names[i] is
 * "--names[i] VALUE", stored in vals[i] (left alone when absent). Returns
 * GO_ON, or the exit status when the run is over (--help, usage error).
 */
static int cmd_parse(const struct command *cmd, int argc, char **argv,
                     const char *const *names, const char **vals)
{
	struct option opts[MAX_CMD_OPTS + 2];
	int n = 0, ch;

	for (; names[n] != NULL && n < MAX_CMD_OPTS; n++)
		opts[n] = (struct option){names[n], required_argument, NULL, n};
	opts[n++] = (struct option){"help", no_argument, NULL, 'h'};
	opts[n] = (struct option){NULL, 0, NULL, 0};

	optind = 0; /* glibc: restart the scan on a new argv */
	opterr = 0;
	while ((ch = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
		switch (ch) {
		case 'h':
			printf("usage: wsgatectl %s%s%s\n  %s\n", cmd->name,
			       cmd->args[0] != '\0' ? " " : "", cmd->args,
			       cmd->help);
			return EXIT_OK;
		case ':':
			cmd_usage_error(cmd, "%s needs a value",
			                argv[optind - 1]);
			return EXIT_USAGE;
		case '?':
			cmd_usage_error(cmd, "unknown option %s",
			                argv[optind - 1]);
			return EXIT_USAGE;
		default:
			vals[ch] = optarg;
		}
	}
	if (optind < argc) {
		cmd_usage_error(cmd, "unexpected argument '%s'", argv[optind]);
		return EXIT_USAGE;
	}
	return GO_ON;
}

static bool given(const char *v)
{
	return v != NULL && v[0] != '\0';
}

/* Decimal integer in [min, max], nothing else. */
static bool parse_int64(const char *s, int64_t min, int64_t max, int64_t *out)
{
	char *end;
	long long v;

	if (!given(s))
		return false;
	errno = 0;
	v = strtoll(s, &end, 10);
	if (errno != 0 || *end != '\0' || v < min || v > max)
		return false;
	*out = v;
	return true;
}

/* Prints one JSON object as one line and releases it. */
static int print_json(json_t *obj)
{
	char *s = obj != NULL ? json_dumps(obj, JSON_COMPACT) : NULL;

	json_decref(obj);
	if (s == NULL) {
		fprintf(stderr, "wsgatectl: cannot encode the output as JSON "
		                "(invalid UTF-8?)\n");
		return EXIT_USAGE;
	}
	puts(s);
	free(s);
	return EXIT_OK;
}

#define JI(x) ((json_int_t)(x))

static void iso8601_utc(int64_t us, char *buf, size_t cap)
{
	time_t s = (time_t)(us / 1000000);
	struct tm tm;

	if (us <= 0 || gmtime_r(&s, &tm) == NULL ||
	    strftime(buf, cap, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		snprintf(buf, cap, "-");
}

/* ------------------------------------------------------------------ */
/* live commands: the control socket                                   */

static int ctl_connect(const struct ctl *ctl, wsgate_client **c)
{
	enum wsgate_status st;

	st = wsgate_client_open(c, ctl->control, ctl->timeout_ms);
	if (st == WSGATE_OK)
		return EXIT_OK;
	fprintf(stderr, "wsgatectl: cannot use control URL %s: %s\n",
	        ctl->control,
	        st == WSGATE_ERR_ARGUMENT ? "not a valid NNG URL"
	                                  : wsgate_status_name(st));
	return EXIT_USAGE;
}

/* Reports a failed call; returns its exit status: a sidecar's refusal is a
 * failed check (1), anything that kept us from an answer is 2. */
static int call_failed(const struct ctl *ctl, const struct command *cmd,
                       wsgate_client *c, enum wsgate_status st)
{
	if (st == WSGATE_ERR_TIMEOUT || st == WSGATE_ERR_TRANSPORT) {
		fprintf(stderr, "wsgatectl: sidecar not reachable at %s\n",
		        ctl->control);
		return EXIT_USAGE;
	}
	fprintf(stderr, "wsgatectl: %s: %s: %s\n", cmd->name,
	        wsgate_status_name(st), wsgate_client_error(c));
	return st > 0 ? EXIT_CHECK : EXIT_USAGE;
}

static int cmd_status(const struct ctl *ctl, const struct command *cmd,
                      int argc, char **argv)
{
	static const char *const names[] = {NULL};
	struct wsgate_stats s;
	enum wsgate_status st;
	wsgate_client *c;
	uint64_t up;
	int rc;

	if ((rc = cmd_parse(cmd, argc, argv, names, NULL)) != GO_ON)
		return rc;
	if ((rc = ctl_connect(ctl, &c)) != EXIT_OK)
		return rc;
	st = wsgate_get_stats(c, &s);
	if (st != WSGATE_OK) {
		rc = call_failed(ctl, cmd, c, st);
		wsgate_client_close(c);
		return rc;
	}
	wsgate_client_close(c);

	if (ctl->json)
		return print_json(json_pack(
		    "{s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}",
		    "control", ctl->control, "version", s.version, "uptime_s",
		    JI(s.uptime_s), "connections", JI(s.connections), "users",
		    JI(s.users), "events_accepted", JI(s.events_accepted),
		    "frames_written", JI(s.frames_written), "frames_dropped",
		    JI(s.frames_dropped), "audit_backlog", JI(s.audit_backlog),
		    "notices_dropped", JI(s.notices_dropped)));

	up = s.uptime_s;
	printf("%-16s %s\n", "control", ctl->control);
	printf("%-16s %s\n", "version", s.version);
	printf("%-16s %" PRIu64 "d %02" PRIu64 ":%02" PRIu64 ":%02" PRIu64
	       " (%" PRIu64 " s)\n",
	       "uptime", up / 86400, up / 3600 % 24, up / 60 % 60, up % 60, up);
	printf("%-16s %" PRIu32 "\n", "connections", s.connections);
	printf("%-16s %" PRIu32 "\n", "users", s.users);
	printf("%-16s %" PRIu64 "\n", "events_accepted", s.events_accepted);
	printf("%-16s %" PRIu64 "\n", "frames_written", s.frames_written);
	printf("%-16s %" PRIu64 "\n", "frames_dropped", s.frames_dropped);
	printf("%-16s %" PRIu64 "\n", "audit_backlog", s.audit_backlog);
	printf("%-16s %" PRIu64 "\n", "notices_dropped", s.notices_dropped);
	return EXIT_OK;
}

static void print_connection_table(const struct wsgate_connection *conns,
                                   size_t n)
{
	int wc = (int)strlen("CONN_ID"), wu = (int)strlen("USER_ID");
	int wp = (int)strlen("PEER");
	char when[32];
	size_t i;

	if (n == 0) {
		printf("no live connections\n");
		return;
	}
	for (i = 0; i < n; i++) {
		int l;

		if ((l = (int)strlen(conns[i].conn_id)) > wc)
			wc = l;
		if ((l = (int)strlen(conns[i].user_id)) > wu)
			wu = l;
		if ((l = (int)strlen(conns[i].peer)) > wp)
			wp = l;
	}
	printf("%-*s  %-*s  %-20s  %-*s  %10s  %10s\n", wc, "CONN_ID", wu,
	       "USER_ID", "OPENED_AT", wp, "PEER", "QUEUED", "WRITTEN");
	for (i = 0; i < n; i++) {
		iso8601_utc(conns[i].opened_at, when, sizeof(when));
		printf("%-*s  %-*s  %-20s  %-*s  %10" PRIu64 "  %10" PRIu64
		       "\n",
		       wc, conns[i].conn_id, wu, conns[i].user_id, when, wp,
		       conns[i].peer, conns[i].queued, conns[i].written);
	}
}

static int cmd_connections(const struct ctl *ctl, const struct command *cmd,
                           int argc, char **argv)
{
	static const char *const names[] = {"user", NULL};
	const char *vals[1] = {NULL};
	struct wsgate_connection *conns;
	enum wsgate_status st;
	wsgate_client *c;
	size_t n, i;
	int rc;

	if ((rc = cmd_parse(cmd, argc, argv, names, vals)) != GO_ON)
		return rc;
	if ((rc = ctl_connect(ctl, &c)) != EXIT_OK)
		return rc;
	st = wsgate_list_connections(c, vals[0], &conns, &n);
	if (st != WSGATE_OK) {
		rc = call_failed(ctl, cmd, c, st);
		wsgate_client_close(c);
		return rc;
	}
	wsgate_client_close(c);

	if (!ctl->json) {
		print_connection_table(conns, n);
	} else {
		for (i = 0; i < n && rc != EXIT_USAGE; i++)
			rc = print_json(json_pack(
			    "{s:s, s:s, s:I, s:s, s:I, s:I}", "conn_id",
			    conns[i].conn_id, "user_id", conns[i].user_id,
			    "opened_at", JI(conns[i].opened_at), "peer",
			    conns[i].peer, "queued", JI(conns[i].queued),
			    "written", JI(conns[i].written)));
	}
	free(conns);
	return rc == EXIT_USAGE ? rc : EXIT_OK;
}

static int cmd_kick(const struct ctl *ctl, const struct command *cmd, int argc,
                    char **argv)
{
	static const char *const names[] = {"user", "conn", "reason", NULL};
	const char *vals[3] = {NULL, NULL, NULL};
	enum wsgate_status st;
	wsgate_client *c;
	uint32_t n = 0;
	int rc;

	if ((rc = cmd_parse(cmd, argc, argv, names, vals)) != GO_ON)
		return rc;
	if (!given(vals[0]) && !given(vals[1])) {
		cmd_usage_error(cmd, "--user or --conn is required");
		return EXIT_USAGE;
	}
	if ((rc = ctl_connect(ctl, &c)) != EXIT_OK)
		return rc;
	st = wsgate_disconnect(c, vals[0], vals[1], vals[2], &n);
	if (st != WSGATE_OK) {
		rc = call_failed(ctl, cmd, c, st);
		wsgate_client_close(c);
		return rc;
	}
	wsgate_client_close(c);
	if (ctl->json)
		return print_json(json_pack("{s:I}", "disconnected", JI(n)));
	printf("disconnected %" PRIu32 " connection%s\n", n, n == 1 ? "" : "s");
	return EXIT_OK;
}

/* "e-" and 16 hex digits: unique enough for hand-sent events. */
static void random_event_id(char *buf, size_t cap)
{
	uint64_t r;

	if (getrandom(&r, sizeof(r), 0) != (ssize_t)sizeof(r)) {
		struct timespec ts;

		clock_gettime(CLOCK_REALTIME, &ts);
		r = ((uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec) ^
		    ((uint64_t)getpid() << 48);
	}
	snprintf(buf, cap, "e-%016" PRIx64, r);
}

static int cmd_send(const struct ctl *ctl, const struct command *cmd, int argc,
                    char **argv)
{
	enum { USER, TYPE, RUN, THREAD, PAYLOAD, EVENT_ID, N_OPTS };
	static const char *const names[] = {
	    "user", "type", "run", "thread", "payload", "event-id", NULL};
	const char *vals[N_OPTS] = {NULL};
	struct wsgate_event ev = {0};
	struct wsgate_event_result res;
	enum wsgate_status st;
	wsgate_client *c;
	char event_id[32];
	int rc;

	if ((rc = cmd_parse(cmd, argc, argv, names, vals)) != GO_ON)
		return rc;
	if (!given(vals[USER]) || !given(vals[TYPE])) {
		cmd_usage_error(cmd, "--user and --type are required");
		return EXIT_USAGE;
	}
	if (vals[EVENT_ID] == NULL) {
		random_event_id(event_id, sizeof(event_id));
		vals[EVENT_ID] = event_id;
	}
	ev.event_id = vals[EVENT_ID];
	ev.user_id = vals[USER];
	ev.thread_id = vals[THREAD];
	ev.run_id = vals[RUN];
	ev.type = wsgate_event_type_parse(vals[TYPE]);
	if (ev.type == WSGATE_CUSTOM)
		ev.custom_type = vals[TYPE];
	/* Sent as given, not checked here: the sidecar is the one judge of
	 * a payload, and this is also how operators test that it judges. */
	if (vals[PAYLOAD] != NULL) {
		ev.payload_json = vals[PAYLOAD];
		ev.payload_len = strlen(vals[PAYLOAD]);
	}

	if ((rc = ctl_connect(ctl, &c)) != EXIT_OK)
		return rc;
	st = wsgate_send_event(c, &ev, &res);
	if (st == WSGATE_ERR_TIMEOUT) {
		/* The request may have reached the sidecar before the reply
		 * timed out; event ids make a resend harmless. */
		fprintf(stderr,
		        "wsgatectl: sidecar not reachable at %s (event %s may "
		        "have been accepted; resending it with --event-id %s "
		        "is safe)\n",
		        ctl->control, ev.event_id, ev.event_id);
		wsgate_client_close(c);
		return EXIT_USAGE;
	}
	if (st < 0) {
		rc = call_failed(ctl, cmd, c, st);
		wsgate_client_close(c);
		return rc;
	}
	wsgate_client_close(c);

	if (st != WSGATE_OK) {
		fprintf(stderr, "wsgatectl: send: %s: %s\n",
		        wsgate_status_name(st), res.error);
		/* Scripts get the refusal on stdout too. */
		if (ctl->json)
			print_json(json_pack("{s:s, s:s, s:s, s:s}", "event_id",
			                     ev.event_id, "user_id", ev.user_id,
			                     "status", wsgate_status_name(st),
			                     "error", res.error));
		return EXIT_CHECK;
	}
	if (ctl->json)
		return print_json(json_pack(
		    "{s:s, s:s, s:s, s:I, s:I, s:b, s:b}", "event_id",
		    ev.event_id, "user_id", ev.user_id, "status", "OK", "seq",
		    JI(res.seq), "connections", JI(res.connections), "retained",
		    (int)res.retained, "duplicate", (int)res.duplicate));
	printf("%-12s %s\n", "event_id", ev.event_id);
	printf("%-12s %" PRIu64 "\n", "seq", res.seq);
	printf("%-12s %" PRIu32 "\n", "connections", res.connections);
	printf("%-12s %s\n", "retained", res.retained ? "yes" : "no");
	printf("%-12s %s\n", "duplicate", res.duplicate ? "yes" : "no");
	return EXIT_OK;
}

/* ------------------------------------------------------------------ */
/* offline commands                                                    */

static int cmd_token(const struct ctl *ctl, const struct command *cmd, int argc,
                     char **argv)
{
	enum { USER, TTL, SECRET_FILE, N_OPTS };
	static const char *const names[] = {"user", "ttl", "secret-file", NULL};
	const char *vals[N_OPTS] = {NULL};
	unsigned char *secret;
	size_t secret_len;
	int64_t ttl = DEFAULT_TTL_S;
	char *token;
	int rc;

	if ((rc = cmd_parse(cmd, argc, argv, names, vals)) != GO_ON)
		return rc;
	if (!given(vals[USER]) || !given(vals[SECRET_FILE])) {
		cmd_usage_error(cmd, "--user and --secret-file are required");
		return EXIT_USAGE;
	}
	if (vals[TTL] != NULL &&
	    !parse_int64(vals[TTL], 1, INT64_MAX / 2, &ttl)) {
		cmd_usage_error(cmd, "--ttl wants seconds > 0, not '%s'",
		                vals[TTL]);
		return EXIT_USAGE;
	}
	secret = jwt_mint_read_secret(vals[SECRET_FILE], &secret_len);
	if (secret == NULL) {
		fprintf(stderr,
		        "wsgatectl: token: cannot read secret file %s\n",
		        vals[SECRET_FILE]);
		return EXIT_USAGE;
	}
	token = jwt_mint_hs256(secret, secret_len, vals[USER],
	                       (int64_t)time(NULL), ttl);
	explicit_bzero(secret, secret_len);
	free(secret);
	if (token == NULL) {
		fprintf(stderr, "wsgatectl: token: cannot sign the token\n");
		return EXIT_USAGE;
	}
	if (ctl->json)
		rc = print_json(json_pack("{s:s}", "token", token));
	else
		printf("%s\n", token);
	free(token);
	return rc == EXIT_USAGE ? rc : EXIT_OK;
}

/* Forensic commands read the database: a later milestone. */
static int cmd_not_implemented(const struct ctl *ctl, const struct command *cmd,
                               int argc, char **argv)
{
	(void)ctl;
	(void)argc;
	(void)argv;
	fprintf(stderr, "wsgatectl: %s: not implemented yet\n", cmd->name);
	return EXIT_USAGE;
}

static int cmd_help(const struct ctl *ctl, const struct command *cmd, int argc,
                    char **argv)
{
	(void)ctl;
	(void)cmd;
	(void)argc;
	(void)argv;
	usage(stdout);
	return EXIT_OK;
}

static const struct command commands[] = {
    {"status", cmd_status, "",
     "is the sidecar up: version, uptime, connections, counters"},
    {"connections", cmd_connections, "[--user U]",
     "live connections, from the sidecar"},
    {"kick", cmd_kick, "(--user U | --conn C) [--reason TEXT]",
     "close connections (code 4003)"},
    {"send", cmd_send,
     "--user U --type T [--run R] [--thread T] [--payload JSON] "
     "[--event-id ID]",
     "send one event; a type that is not a standard name is a custom "
     "type"},
    {"token", cmd_token, "--user U [--ttl S] --secret-file F",
     "mint an HS256 token for development (default ttl 3600 s)"},
    {"sessions", cmd_not_implemented, "[--user U] [--since T] [--limit N]",
     "sessions, from the database (not implemented yet)"},
    {"audit", cmd_not_implemented,
     "[--user U] [--event ID] [--run R] [--conn C] [--since T]",
     "delivery rows, from the database (not implemented yet)"},
    {"trace", cmd_not_implemented, "EVENT_ID",
     "one event's story, from the database (not implemented yet)"},
    {"verify", cmd_not_implemented, "",
     "isolation invariant and hash chain (not implemented yet)"},
    {"help", cmd_help, "", "this text"},
};

#define N_COMMANDS (sizeof(commands) / sizeof(commands[0]))

static void usage(FILE *out)
{
	size_t i;

	fprintf(
	    out,
	    "usage: wsgatectl [GLOBAL OPTIONS] COMMAND [OPTIONS]\n"
	    "Admin CLI of the wsgate sidecar, version " WSGATE_VERSION ".\n\n"
	    "global options, before the command:\n"
	    "  --control URL        control socket "
	    "(default " WSGATE_DEFAULT_CONTROL ", env WSGATE_CONTROL)\n"
	    "  --db PATH            audit database (default " DEFAULT_DB
	    ", env WSGATE_DB)\n"
	    "  --audit-key-file F   audit chain key (default " DEFAULT_AUDIT_KEY
	    ", env WSGATE_AUDIT_KEY_FILE)\n"
	    "  --json               one JSON object per line, not tables\n"
	    "  --timeout MS         wait for the sidecar (default %d)\n\n"
	    "commands:\n",
	    DEFAULT_TIMEOUT_MS);
	for (i = 0; i < N_COMMANDS; i++)
		fprintf(out, "  %s%s%s\n      %s\n", commands[i].name,
		        commands[i].args[0] != '\0' ? " " : "",
		        commands[i].args, commands[i].help);
	fprintf(out, "\nexit status: 0 success, 1 a check failed, 2 usage or "
	             "connection error.\n");
}

static const char *env_or(const char *name, const char *dflt)
{
	const char *v = getenv(name);

	return given(v) ? v : dflt;
}

/* Parses the options before the command into *ctl; on GO_ON, optind is the
 * command's index in argv. */
static int parse_globals(struct ctl *ctl, int argc, char **argv)
{
	static const struct option opts[] = {
	    {"control", required_argument, NULL, 'c'},
	    {"db", required_argument, NULL, 'd'},
	    {"audit-key-file", required_argument, NULL, 'k'},
	    {"json", no_argument, NULL, 'j'},
	    {"timeout", required_argument, NULL, 't'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	int64_t ms;
	int ch;

	ctl->control = env_or("WSGATE_CONTROL", WSGATE_DEFAULT_CONTROL);
	ctl->db = env_or("WSGATE_DB", DEFAULT_DB);
	ctl->audit_key_file =
	    env_or("WSGATE_AUDIT_KEY_FILE", DEFAULT_AUDIT_KEY);
	ctl->json = false;
	ctl->timeout_ms = DEFAULT_TIMEOUT_MS;

	opterr = 0;
	/* "+": stop at the command; its options are its own. */
	while ((ch = getopt_long(argc, argv, "+:h", opts, NULL)) != -1) {
		switch (ch) {
		case 'c':
			ctl->control = optarg;
			break;
		case 'd':
			ctl->db = optarg;
			break;
		case 'k':
			ctl->audit_key_file = optarg;
			break;
		case 'j':
			ctl->json = true;
			break;
		case 't':
			if (!parse_int64(optarg, 1, INT_MAX, &ms)) {
				fprintf(stderr,
				        "wsgatectl: --timeout wants "
				        "milliseconds > 0, not '%s'\n",
				        optarg);
				return EXIT_USAGE;
			}
			ctl->timeout_ms = (int)ms;
			break;
		case 'h':
			usage(stdout);
			return EXIT_OK;
		case ':':
			fprintf(stderr, "wsgatectl: %s needs a value\n",
			        argv[optind - 1]);
			return EXIT_USAGE;
		default:
			fprintf(stderr,
			        "wsgatectl: unknown option %s (see "
			        "wsgatectl --help)\n",
			        argv[optind - 1]);
			return EXIT_USAGE;
		}
	}
	if (optind >= argc) {
		fprintf(stderr, "wsgatectl: no command given (see wsgatectl "
		                "--help)\n");
		return EXIT_USAGE;
	}
	return GO_ON;
}

int main(int argc, char **argv)
{
	struct ctl ctl;
	int rc;

	if ((rc = parse_globals(&ctl, argc, argv)) != GO_ON)
		return rc;
	for (size_t i = 0; i < N_COMMANDS; i++)
		if (strcmp(argv[optind], commands[i].name) == 0)
			return commands[i].run(&ctl, &commands[i],
			                       argc - optind, argv + optind);
	fprintf(stderr,
	        "wsgatectl: unknown command '%s' (see wsgatectl --help)\n",
	        argv[optind]);
	return EXIT_USAGE;
}
