/*
 * wsgatectl: the admin CLI (DESIGN.md, "Admin CLI"). This file owns the
 * command table and option parsing, and prints the live commands' results
 * in the two formats of output.h (tables for people, --json one object per
 * line for scripts). Live commands talk to the sidecar's control socket
 * through libwsgate; `token` signs with jwt_mint; the forensic commands
 * (sessions, audit, trace, verify) read the database read-only through
 * forensics.h and verify.h. Every --since goes through time_arg_parse,
 * every printed time through time_arg_format.
 *
 * Exit status: 0 success, 1 a check failed (e.g. the sidecar refused an
 * event), 2 usage or connection error; every failure says so in one line on
 * stderr starting "wsgatectl: ".
 */
#include "ctl_exit.h"
#include "forensics.h"
#include "auth_jwt.h"
#include "jwt_mint.h"
#include "output.h"
#include "time_arg.h"
#include "verify.h"
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
#define MAX_CMD_ARGS       1
#define DEFAULT_SESSIONS   100
#define DEFAULT_AUDIT_ROWS 1000

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
	int (*run)(struct ctl *ctl, const struct command *cmd, int argc,
	           char **argv);
	const char *args;    /* usage, after the name */
	const char *help;    /* one line */
	const char *details; /* more for `COMMAND --help`, or NULL */
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

/* The global options, before the command or among its options. */
static const struct option global_opts[] = {
    {"control", required_argument, NULL, 'c'},
    {"db", required_argument, NULL, 'd'},
    {"audit-key-file", required_argument, NULL, 'k'},
    {"json", no_argument, NULL, 'j'},
    {"timeout", required_argument, NULL, 't'},
};

#define N_GLOBAL_OPTS (sizeof(global_opts) / sizeof(global_opts[0]))

/* Applies global option ch (a val of global_opts) with its argument.
 * Returns GO_ON, or EXIT_USAGE after saying why. */
static int apply_global(struct ctl *ctl, int ch, const char *arg)
{
	int64_t ms;

	switch (ch) {
	case 'c':
		ctl->control = arg;
		break;
	case 'd':
		ctl->db = arg;
		break;
	case 'k':
		ctl->audit_key_file = arg;
		break;
	case 'j':
		ctl->json = true;
		break;
	case 't':
		if (!parse_int64(arg, 1, INT_MAX, &ms)) {
			fprintf(stderr,
			        "wsgatectl: --timeout wants milliseconds > 0, "
			        "not '%s'\n",
			        arg);
			return EXIT_USAGE;
		}
		ctl->timeout_ms = (int)ms;
		break;
	}
	return GO_ON;
}

/*
 * Parses a command's options and its npos positional arguments (options and
 * arguments in any order; "--" ends the options). Every option takes a
 * value: names[i] is "--names[i] VALUE", stored in vals[i] (left alone when
 * absent); the arguments go to pos[0..npos-1]. The global options are
 * accepted here too ("wsgatectl verify --json"). Returns GO_ON, or the exit
 * status when the run is over (--help, usage error).
 */
static int cmd_parse_args(struct ctl *ctl, const struct command *cmd, int argc,
                          char **argv, const char *const *names,
                          const char **vals, int npos, const char **pos)
{
	struct option opts[MAX_CMD_OPTS + N_GLOBAL_OPTS + 2];
	int n = 0, ch;

	/* Command options are numbered 0..MAX_CMD_OPTS-1, below the letters
	 * of the global ones. */
	for (; names[n] != NULL && n < MAX_CMD_OPTS; n++)
		opts[n] = (struct option){names[n], required_argument, NULL, n};
	for (size_t i = 0; i < N_GLOBAL_OPTS; i++)
		opts[n++] = global_opts[i];
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
			if (cmd->details != NULL)
				printf("%s", cmd->details);
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
			if (ch < MAX_CMD_OPTS)
				vals[ch] = optarg;
			else if (apply_global(ctl, ch, optarg) != GO_ON)
				return EXIT_USAGE;
		}
	}
	if (argc - optind > npos) {
		cmd_usage_error(cmd, "unexpected argument '%s'",
		                argv[optind + npos]);
		return EXIT_USAGE;
	}
	if (argc - optind < npos) {
		cmd_usage_error(cmd, "missing argument");
		return EXIT_USAGE;
	}
	for (int i = 0; i < npos; i++)
		pos[i] = argv[optind + i];
	return GO_ON;
}

/* A command without positional arguments. */
static int cmd_parse(struct ctl *ctl, const struct command *cmd, int argc,
                     char **argv, const char *const *names, const char **vals)
{
	return cmd_parse_args(ctl, cmd, argc, argv, names, vals, 0, NULL);
}

#define JI(x) ((json_int_t)(x))

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

/* GetStats from the sidecar; the exit status of a failure otherwise. */
static int get_stats(const struct ctl *ctl, const struct command *cmd,
                     struct wsgate_stats *s)
{
	enum wsgate_status st;
	wsgate_client *c;
	int rc;

	if ((rc = ctl_connect(ctl, &c)) != EXIT_OK)
		return rc;
	st = wsgate_get_stats(c, s);
	rc = st == WSGATE_OK ? EXIT_OK : call_failed(ctl, cmd, c, st);
	wsgate_client_close(c);
	return rc;
}

static int cmd_status(struct ctl *ctl, const struct command *cmd, int argc,
                      char **argv)
{
	static const char *const names[] = {NULL};
	struct wsgate_stats s;
	char head[VERIFY_HEAD_TEXT_MAX] = "";
	uint64_t up;
	int rc;

	if ((rc = cmd_parse(ctl, cmd, argc, argv, names, NULL)) != GO_ON)
		return rc;
	if ((rc = get_stats(ctl, cmd, &s)) != EXIT_OK)
		return rc;
	if (s.has_audit_head)
		verify_head_format((int64_t)s.audit_head_id, s.audit_head_chain,
		                   head, sizeof(head));

	if (ctl->json)
		return out_json_line(json_pack(
		    "{s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, "
		    "s:s, s:s?, s:s, s:b, s:b, s:I, s:I, s:I, s:I}",
		    "control", ctl->control, "version", s.version, "uptime_s",
		    JI(s.uptime_s), "connections", JI(s.connections), "users",
		    JI(s.users), "events_accepted", JI(s.events_accepted),
		    "frames_written", JI(s.frames_written), "frames_dropped",
		    JI(s.frames_dropped), "audit_backlog", JI(s.audit_backlog),
		    "notices_dropped", JI(s.notices_dropped),
		    "storage_failures", JI(s.storage_failures), "storage_error",
		    s.storage_error, "audit_head",
		    s.has_audit_head ? head : NULL, "node_id", s.node_id,
		    "cluster", s.cluster, "cluster_available",
		    s.cluster_available, "cluster_down_ms",
		    JI(s.cluster_down_ms), "cluster_position",
		    JI(s.cluster_position), "cluster_publish_queued",
		    JI(s.cluster_publish_queued), "cluster_unavailable_answers",
		    JI(s.cluster_unavailable_answers)));

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
	printf("%-16s %" PRIu64 "%s%s\n", "storage_failures",
	       s.storage_failures, s.storage_error[0] ? "  last: " : "",
	       s.storage_error);
	/* What `verify --head` takes, to be kept off this machine. */
	printf("%-16s %s\n", "audit_head", s.has_audit_head ? head : "-");
	if (!s.cluster)
		return EXIT_OK;
	printf("%-16s %s\n", "node_id", s.node_id);
	if (s.cluster_available)
		printf("%-16s %s\n", "cluster", "available");
	else
		printf("%-16s unavailable for %" PRIu64 " ms\n", "cluster",
		       s.cluster_down_ms);
	printf("%-16s %" PRIu64 "\n", "cluster_position", s.cluster_position);
	printf("%-16s %" PRIu64 "\n", "cluster_publish_queued",
	       s.cluster_publish_queued);
	printf("%-16s %" PRIu64 "\n", "cluster_unavailable_answers",
	       s.cluster_unavailable_answers);
	return EXIT_OK;
}

static void print_connection_table(const struct wsgate_connection *conns,
                                   size_t n)
{
	int wc = (int)strlen("CONN_ID"), wu = (int)strlen("USER_ID");
	int wp = (int)strlen("PEER");
	char when[TIME_ARG_TEXT_MAX];
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
	printf("%-*s  %-*s  %-24s  %-*s  %10s  %10s\n", wc, "CONN_ID", wu,
	       "USER_ID", "OPENED_AT", wp, "PEER", "QUEUED", "WRITTEN");
	for (i = 0; i < n; i++) {
		time_arg_format(conns[i].opened_at, when, sizeof(when));
		printf("%-*s  %-*s  %-24s  %-*s  %10" PRIu64 "  %10" PRIu64
		       "\n",
		       wc, conns[i].conn_id, wu, conns[i].user_id, when, wp,
		       conns[i].peer, conns[i].queued, conns[i].written);
	}
}

static int cmd_connections(struct ctl *ctl, const struct command *cmd, int argc,
                           char **argv)
{
	static const char *const names[] = {"user", NULL};
	const char *vals[1] = {NULL};
	struct wsgate_connection *conns;
	enum wsgate_status st;
	wsgate_client *c;
	size_t n, i;
	int rc;

	if ((rc = cmd_parse(ctl, cmd, argc, argv, names, vals)) != GO_ON)
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
		for (i = 0; i < n && rc != EXIT_USAGE; i++) {
			json_t *o = json_pack(
			    "{s:o, s:o, s:o, s:I, s:I}", "conn_id",
			    out_json_text(conns[i].conn_id), "user_id",
			    out_json_text(conns[i].user_id), "peer",
			    out_json_text(conns[i].peer), "queued",
			    JI(conns[i].queued), "written",
			    JI(conns[i].written));

			if (o != NULL)
				out_json_time(o, "opened_at",
				              conns[i].opened_at, true);
			rc = out_json_line(o);
		}
	}
	free(conns);
	return rc == EXIT_USAGE ? rc : EXIT_OK;
}

static int cmd_kick(struct ctl *ctl, const struct command *cmd, int argc,
                    char **argv)
{
	static const char *const names[] = {"user", "conn", "reason", NULL};
	const char *vals[3] = {NULL, NULL, NULL};
	enum wsgate_status st;
	wsgate_client *c;
	uint32_t n = 0;
	int rc;

	if ((rc = cmd_parse(ctl, cmd, argc, argv, names, vals)) != GO_ON)
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
		return out_json_line(json_pack("{s:I}", "disconnected", JI(n)));
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

static int cmd_send(struct ctl *ctl, const struct command *cmd, int argc,
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

	if ((rc = cmd_parse(ctl, cmd, argc, argv, names, vals)) != GO_ON)
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
			out_json_line(json_pack(
			    "{s:s, s:s, s:s, s:s}", "event_id", ev.event_id,
			    "user_id", ev.user_id, "status",
			    wsgate_status_name(st), "error", res.error));
		return EXIT_CHECK;
	}
	if (ctl->json)
		return out_json_line(json_pack(
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

static int cmd_token(struct ctl *ctl, const struct command *cmd, int argc,
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

	if ((rc = cmd_parse(ctl, cmd, argc, argv, names, vals)) != GO_ON)
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
	char err[512];
	secret = auth_jwt_read_secret(vals[SECRET_FILE], &secret_len, err,
	                              sizeof(err));
	if (secret == NULL) {
		fprintf(stderr, "wsgatectl: token: %s\n", err);
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
		rc = out_json_line(json_pack("{s:s}", "token", token));
	else
		printf("%s\n", token);
	free(token);
	return rc == EXIT_USAGE ? rc : EXIT_OK;
}

/* ------------------------------------------------------------------ */
/* forensic commands: the database, read-only                          */

/* --since T, the same forms for every command (time_arg.h). */
static bool parse_since(const struct command *cmd, const char *v, bool *has,
                        int64_t *us)
{
	*has = false;
	if (v == NULL)
		return true;
	if (time_arg_parse(v, time_arg_now_us(), us) != 0) {
		cmd_usage_error(
		    cmd, "--since wants " TIME_ARG_FORMS ", not '%s'", v);
		return false;
	}
	*has = true;
	return true;
}

/* --limit N: 0 is no limit. */
static bool parse_limit(const struct command *cmd, const char *v, int64_t dflt,
                        int64_t *limit)
{
	*limit = dflt;
	if (v == NULL)
		return true;
	if (!parse_int64(v, 0, INT64_MAX / 2, limit)) {
		cmd_usage_error(cmd,
		                "--limit wants a number >= 0 (0: all), not "
		                "'%s'",
		                v);
		return false;
	}
	return true;
}

static int cmd_sessions(struct ctl *ctl, const struct command *cmd, int argc,
                        char **argv)
{
	enum { USER, SINCE, LIMIT, N_OPTS };
	static const char *const names[] = {"user", "since", "limit", NULL};
	const char *vals[N_OPTS] = {NULL};
	struct sessions_query q = {0};
	int rc;

	if ((rc = cmd_parse(ctl, cmd, argc, argv, names, vals)) != GO_ON)
		return rc;
	q.user = vals[USER];
	if (!parse_since(cmd, vals[SINCE], &q.has_since, &q.since_us) ||
	    !parse_limit(cmd, vals[LIMIT], DEFAULT_SESSIONS, &q.limit))
		return EXIT_USAGE;
	return forensics_sessions(ctl->db, ctl->json, &q);
}

static int cmd_audit(struct ctl *ctl, const struct command *cmd, int argc,
                     char **argv)
{
	enum { USER, EVENT, RUN, CONN, SINCE, LIMIT, N_OPTS };
	static const char *const names[] = {"user",  "event", "run", "conn",
	                                    "since", "limit", NULL};
	const char *vals[N_OPTS] = {NULL};
	struct audit_query q = {0};
	int rc;

	if ((rc = cmd_parse(ctl, cmd, argc, argv, names, vals)) != GO_ON)
		return rc;
	q.user = vals[USER];
	q.event_id = vals[EVENT];
	q.run_id = vals[RUN];
	q.conn_id = vals[CONN];
	if (!parse_since(cmd, vals[SINCE], &q.has_since, &q.since_us) ||
	    !parse_limit(cmd, vals[LIMIT], DEFAULT_AUDIT_ROWS, &q.limit))
		return EXIT_USAGE;
	return forensics_audit(ctl->db, ctl->json, &q);
}

static int cmd_trace(struct ctl *ctl, const struct command *cmd, int argc,
                     char **argv)
{
	static const char *const names[] = {"user", NULL};
	const char *vals[1] = {NULL};
	const char *event_id = NULL;
	int rc;

	if ((rc = cmd_parse_args(ctl, cmd, argc, argv, names, vals, 1,
	                         &event_id)) != GO_ON)
		return rc;
	return forensics_trace(ctl->db, ctl->json, event_id, vals[0]);
}

/* The running sidecar's audit chain head, for verify --head live. */
static int live_head(const struct ctl *ctl, const struct command *cmd,
                     struct verify_head *head)
{
	struct wsgate_stats s;
	int rc;

	/* Not reaching the sidecar is not a failed check of the log. */
	if ((rc = get_stats(ctl, cmd, &s)) != EXIT_OK)
		return EXIT_USAGE;
	if (!s.has_audit_head) {
		fprintf(stderr,
		        "wsgatectl: verify: the sidecar at %s does not report "
		        "its audit chain head (version %s)\n",
		        ctl->control, s.version);
		return EXIT_USAGE;
	}
	head->id = (int64_t)s.audit_head_id;
	memcpy(head->chain, s.audit_head_chain, sizeof(head->chain));
	head->live = true;
	return EXIT_OK;
}

static int cmd_verify(struct ctl *ctl, const struct command *cmd, int argc,
                      char **argv)
{
	static const char *const names[] = {"head", NULL};
	const char *vals[1] = {NULL};
	struct verify_head head;
	int rc;

	if ((rc = cmd_parse(ctl, cmd, argc, argv, names, vals)) != GO_ON)
		return rc;
	if (vals[0] == NULL)
		return verify_run(ctl->db, ctl->audit_key_file, ctl->json,
		                  NULL);
	if (strcmp(vals[0], "live") == 0) {
		/* Asked before the database is read: every row up to the
		 * head it names is then in the snapshot verify reads. */
		if ((rc = live_head(ctl, cmd, &head)) != EXIT_OK)
			return rc;
	} else if (!verify_head_parse(vals[0], &head)) {
		cmd_usage_error(cmd,
		                "--head wants live or ID:HEX (64 hex digits), "
		                "not '%s'",
		                vals[0]);
		return EXIT_USAGE;
	}
	return verify_run(ctl->db, ctl->audit_key_file, ctl->json, &head);
}

static int cmd_help(struct ctl *ctl, const struct command *cmd, int argc,
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
     "is the sidecar up: version, uptime, connections, counters", NULL},
    {"connections", cmd_connections, "[--user U]",
     "live connections, from the sidecar", NULL},
    {"kick", cmd_kick, "(--user U | --conn C) [--reason TEXT]",
     "close connections (code 4003)", NULL},
    {"send", cmd_send,
     "--user U --type T [--run R] [--thread T] [--payload JSON] "
     "[--event-id ID]",
     "send one event; a type that is not a standard name is a custom "
     "type",
     NULL},
    {"token", cmd_token, "--user U [--ttl S] --secret-file F",
     "mint an HS256 token for development (default ttl 3600 s)", NULL},
    {"sessions", cmd_sessions, "[--user U] [--since T] [--limit N]",
     "sessions, newest first, from the database",
     "  --user U   sessions of user U\n"
     "  --since T  sessions open at any time since T: " TIME_ARG_FORMS "\n"
     "  --limit N  at most N sessions, the newest (default 100; 0: all)\n"},
    {"audit", cmd_audit,
     "[--user U] [--event ID] [--run R] [--conn C] [--since T] [--limit N]",
     "delivery rows in id order, from the database",
     "  --user U   rows whose user_id (the event's user) OR conn_user_id\n"
     "             (the connection's user) is U: a row where they differ\n"
     "             is an isolation violation and shows for both users\n"
     "  --event ID rows of that event id\n"
     "  --run R    rows of events of run R (while the event is retained)\n"
     "  --conn C   rows of connection C\n"
     "  --since T  rows written at or after T: " TIME_ARG_FORMS "\n"
     "  --limit N  at most N rows, the newest (default 1000; 0: all)\n"
     "A queued row with no written/dropped row is noted \"in flight\" while\n"
     "its session is open, else \"" FORENSICS_NOTE_STOPPED "\".\n"},
    {"trace", cmd_trace, "EVENT_ID [--user U]",
     "one event's story: accepted, seq, each connection, each status, "
     "timings",
     "  --user U   only the event of user U (event ids are unique per "
     "user)\n"
     "Exit status 1 when there is no such event.\n"},
    {"verify", cmd_verify, "[--head live|ID:HEX]",
     "isolation invariant, dense ids, hash chains, event digests and tail "
     "of the whole log",
     "Uses --db and --audit-key-file.\n"
     "  --head ID:HEX  also check that the log reaches this chain head, as\n"
     "                 `status` or the sidecar's log printed it earlier\n"
     "  --head live    the same with the running sidecar's head (--control)\n"
     "Without --head, rows cut off the end together with their chain heads\n"
     "cannot be told from the database alone (\"tail ok (database only)\").\n"
     "Exit status 1 on any violation (each named on one line); else 2 when\n"
     "the chain could not be checked for want of the key, or the given head\n"
     "was pruned; else 0.\n"},
    {"help", cmd_help, "", "this text", NULL},
};

#define N_COMMANDS (sizeof(commands) / sizeof(commands[0]))

static void usage(FILE *out)
{
	size_t i;

	fprintf(
	    out,
	    "usage: wsgatectl [GLOBAL OPTIONS] COMMAND [OPTIONS]\n"
	    "Admin CLI of the wsgate sidecar, version " WSGATE_VERSION ".\n\n"
	    "global options, before the command or among its options:\n"
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
	struct option opts[N_GLOBAL_OPTS + 2];
	int ch;

	ctl->control = env_or("WSGATE_CONTROL", WSGATE_DEFAULT_CONTROL);
	ctl->db = env_or("WSGATE_DB", DEFAULT_DB);
	ctl->audit_key_file =
	    env_or("WSGATE_AUDIT_KEY_FILE", DEFAULT_AUDIT_KEY);
	ctl->json = false;
	ctl->timeout_ms = DEFAULT_TIMEOUT_MS;

	memcpy(opts, global_opts, sizeof(global_opts));
	opts[N_GLOBAL_OPTS] = (struct option){"help", no_argument, NULL, 'h'};
	opts[N_GLOBAL_OPTS + 1] = (struct option){NULL, 0, NULL, 0};
	opterr = 0;
	/* "+": stop at the command; its options are its own. */
	while ((ch = getopt_long(argc, argv, "+:h", opts, NULL)) != -1) {
		switch (ch) {
		case 'c':
		case 'd':
		case 'k':
		case 'j':
		case 't':
			if (apply_global(ctl, ch, optarg) != GO_ON)
				return EXIT_USAGE;
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
	for (size_t i = 0; i < N_COMMANDS; i++) {
		if (strcmp(argv[optind], commands[i].name) == 0) {
			return commands[i].run(&ctl, &commands[i],
			                       argc - optind, argv + optind);
		}
	}
	fprintf(stderr,
	        "wsgatectl: unknown command '%s' (see wsgatectl --help)\n",
	        argv[optind]);
	return EXIT_USAGE;
}
