/*
 * wsbench: the load generator of wsgate (and, for comparison, of nchan).
 *
 * One run: mint a token per user, open users x conns WebSockets at a
 * bounded rate (handshakes/s), then either hold them idle (--idle: sidecar
 * memory per connection) or publish events from K backend threads and
 * check every delivery as it arrives (foreign, missing, out of order must
 * all be 0) while measuring throughput and publish-to-receive latency.
 * Prints a readable table and one flat JSON line (the last line of stdout,
 * every number in it), and exits 1 if any delivery was wrong or lost, 2 on
 * usage or set-up errors.
 *
 * This file owns the options, the run's phases and the report; the
 * WebSocket side is wsclient.c, the publishers publish.c, the sidecar's
 * /proc numbers procstat.c.
 */
#include "bench_common.h"
#include "histo.h"
#include "auth_jwt.h"
#include "jwt_mint.h"
#include "procstat.h"
#include "publish.h"
#include "wsclient.h"
#include "wsgate.h"

#include <getopt.h>
#include <openssl/pem.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

struct opts {
	const char *label;
	uint16_t port;
	const char *secret_file;
	const char *rs256_key;
	const char *control;
	bool nchan;
	bool idle;
	unsigned users;
	unsigned conns;
	double connect_rate;
	unsigned max_inflight;
	unsigned threads;
	unsigned batch;
	double rate;
	double duration_s;
	bool timed; /* --duration without --rate: unpaced for that long */
	uint64_t events;
	size_t payload_bytes;
	uint64_t window;
	double hold_s;
	double drain_s;
	double max_time_s;
	double connect_timeout_s;
	pid_t sidecar_pid;
	const char *pidfile;
	const char *json_out;
	bool quiet;
	int64_t token_ttl;
};

static void usage(FILE *f)
{
	fputs(
	    "usage: wsbench --port P (--secret-file F | --rs256-key PEM | "
	    "--nchan) [options]\n"
	    "\n"
	    "connections:\n"
	    "  --users N            users (default 100)\n"
	    "  --conns M            connections per user (default 1)\n"
	    "  --connect-rate R     new connections per second, 0 = as fast "
	    "as\n"
	    "                       --max-inflight allows (default 2000)\n"
	    "  --max-inflight N     handshakes in progress at once (default "
	    "256)\n"
	    "  --secret-file F      HS256 secret: tokens via jwt_mint_hs256\n"
	    "  --rs256-key PEM      RSA private key: RS256 tokens instead\n"
	    "  --token-ttl S        token lifetime (default 3600)\n"
	    "events:\n"
	    "  --control URL        sidecar control socket "
	    "(default " WSGATE_DEFAULT_CONTROL ")\n"
	    "  --threads K          backend threads (default 1)\n"
	    "  --batch B            1: wsgate_send_event; >1: "
	    "wsgate_send_batch "
	    "of B\n"
	    "                       (nchan: B pipelined POSTs) (default 1)\n"
	    "  --events E           events in total (default 10000)\n"
	    "  --rate R             steady events/s over all threads (default: "
	    "unpaced)\n"
	    "  --duration S         with --rate: events = R * S; without: "
	    "publish\n"
	    "                       unpaced for S seconds\n"
	    "  --payload-bytes N    payload size (default 120)\n"
	    "  --window F           flow control: publishers wait while more "
	    "than F "
	    "frames\n"
	    "                       are accepted but not received (default 0: "
	    "off)\n"
	    "  --drain-timeout S    wait this long without progress for the "
	    "rest (default 5)\n"
	    "  --max-time S         stop publishing after S seconds (default "
	    "120)\n"
	    "idle:\n"
	    "  --idle               open the connections, hold them, report "
	    "memory\n"
	    "  --hold S             how long to hold (default 5)\n"
	    "other:\n"
	    "  --nchan              subscribers on /sub/<user>, publishers "
	    "POST "
	    "/pub/<user>\n"
	    "  --sidecar-pid P | --pidfile F   server process for RSS and "
	    "CPU\n"
	    "  --label NAME         name of the run in the JSON line\n"
	    "  --json-out FILE      also append the JSON line to FILE\n"
	    "  --quiet              no table, only the JSON line\n",
	    f);
}

static int parse_opts(int argc, char **argv, struct opts *o)
{
	enum {
		O_PORT = 256,
		O_SECRET,
		O_RS256,
		O_CONTROL,
		O_NCHAN,
		O_IDLE,
		O_USERS,
		O_CONNS,
		O_CRATE,
		O_INFLIGHT,
		O_THREADS,
		O_BATCH,
		O_RATE,
		O_DURATION,
		O_EVENTS,
		O_PAYLOAD,
		O_HOLD,
		O_DRAIN,
		O_MAXTIME,
		O_CTIMEOUT,
		O_PID,
		O_PIDFILE,
		O_LABEL,
		O_JSON,
		O_QUIET,
		O_TTL,
		O_WINDOW,
		O_HELP,
	};
	static const struct option lo[] = {
	    {"port", 1, 0, O_PORT},
	    {"secret-file", 1, 0, O_SECRET},
	    {"rs256-key", 1, 0, O_RS256},
	    {"control", 1, 0, O_CONTROL},
	    {"nchan", 0, 0, O_NCHAN},
	    {"idle", 0, 0, O_IDLE},
	    {"users", 1, 0, O_USERS},
	    {"conns", 1, 0, O_CONNS},
	    {"connect-rate", 1, 0, O_CRATE},
	    {"max-inflight", 1, 0, O_INFLIGHT},
	    {"threads", 1, 0, O_THREADS},
	    {"batch", 1, 0, O_BATCH},
	    {"rate", 1, 0, O_RATE},
	    {"duration", 1, 0, O_DURATION},
	    {"events", 1, 0, O_EVENTS},
	    {"payload-bytes", 1, 0, O_PAYLOAD},
	    {"hold", 1, 0, O_HOLD},
	    {"drain-timeout", 1, 0, O_DRAIN},
	    {"max-time", 1, 0, O_MAXTIME},
	    {"connect-timeout", 1, 0, O_CTIMEOUT},
	    {"sidecar-pid", 1, 0, O_PID},
	    {"pidfile", 1, 0, O_PIDFILE},
	    {"label", 1, 0, O_LABEL},
	    {"json-out", 1, 0, O_JSON},
	    {"quiet", 0, 0, O_QUIET},
	    {"token-ttl", 1, 0, O_TTL},
	    {"window", 1, 0, O_WINDOW},
	    {"help", 0, 0, O_HELP},
	    {0, 0, 0, 0},
	};
	*o = (struct opts){
	    .label = "run",
	    .users = 100,
	    .conns = 1,
	    .connect_rate = 2000,
	    .max_inflight = 256,
	    .threads = 1,
	    .batch = 1,
	    .payload_bytes = 120,
	    .hold_s = 5,
	    .drain_s = 5,
	    .max_time_s = 120,
	    .connect_timeout_s = 60,
	    .token_ttl = 3600,
	};
	int c;
	while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		switch (c) {
		case O_PORT:
			o->port = (uint16_t)atoi(optarg);
			break;
		case O_SECRET:
			o->secret_file = optarg;
			break;
		case O_RS256:
			o->rs256_key = optarg;
			break;
		case O_CONTROL:
			o->control = optarg;
			break;
		case O_NCHAN:
			o->nchan = true;
			break;
		case O_IDLE:
			o->idle = true;
			break;
		case O_USERS:
			o->users = (unsigned)strtoul(optarg, NULL, 10);
			break;
		case O_CONNS:
			o->conns = (unsigned)strtoul(optarg, NULL, 10);
			break;
		case O_CRATE:
			o->connect_rate = atof(optarg);
			break;
		case O_INFLIGHT:
			o->max_inflight = (unsigned)strtoul(optarg, NULL, 10);
			break;
		case O_THREADS:
			o->threads = (unsigned)strtoul(optarg, NULL, 10);
			break;
		case O_BATCH:
			o->batch = (unsigned)strtoul(optarg, NULL, 10);
			break;
		case O_RATE:
			o->rate = atof(optarg);
			break;
		case O_DURATION:
			o->duration_s = atof(optarg);
			break;
		case O_EVENTS:
			o->events = strtoull(optarg, NULL, 10);
			break;
		case O_PAYLOAD:
			o->payload_bytes = strtoul(optarg, NULL, 10);
			break;
		case O_HOLD:
			o->hold_s = atof(optarg);
			break;
		case O_DRAIN:
			o->drain_s = atof(optarg);
			break;
		case O_MAXTIME:
			o->max_time_s = atof(optarg);
			break;
		case O_CTIMEOUT:
			o->connect_timeout_s = atof(optarg);
			break;
		case O_PID:
			o->sidecar_pid = (pid_t)atoi(optarg);
			break;
		case O_PIDFILE:
			o->pidfile = optarg;
			break;
		case O_LABEL:
			o->label = optarg;
			break;
		case O_JSON:
			o->json_out = optarg;
			break;
		case O_QUIET:
			o->quiet = true;
			break;
		case O_TTL:
			o->token_ttl = atoll(optarg);
			break;
		case O_WINDOW:
			o->window = strtoull(optarg, NULL, 10);
			break;
		case O_HELP:
			usage(stdout);
			exit(0);
		default:
			usage(stderr);
			return -1;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "wsbench: unexpected argument %s\n",
		        argv[optind]);
		return -1;
	}
	const char *why = NULL;
	if (o->port == 0)
		why = "--port is required";
	else if (!o->nchan && !o->secret_file == !o->rs256_key)
		why = "give exactly one of --secret-file and --rs256-key";
	else if (o->users == 0 || o->conns == 0)
		why = "--users and --conns must be at least 1";
	else if ((uint64_t)o->users * o->conns > 1000000)
		why = "at most 1,000,000 connections";
	else if (o->threads == 0 || o->threads > 256)
		why = "--threads: 1 to 256";
	else if (o->batch == 0 || o->batch > WSGATE_MAX_BATCH)
		why = "--batch: 1 to 1000";
	else if (o->payload_bytes < 64 || o->payload_bytes > BENCH_PAYLOAD_MAX)
		why = "--payload-bytes: 64 to 4096";
	else if (o->duration_s < 0 || o->duration_s > 3600)
		why = "--duration: 0 to 3600 seconds";
	else if (o->max_time_s <= 0 || o->max_time_s > 3600 || o->hold_s < 0 ||
	         o->hold_s > 3600 || o->drain_s <= 0 || o->drain_s > 600)
		why =
		    "times out of range (max-time 3600, hold 3600, drain 600)";
	if (why != NULL) {
		fprintf(stderr, "wsbench: %s\n", why);
		return -1;
	}
	o->timed = o->duration_s > 0 && o->rate <= 0;
	if (o->events == 0) {
		if (o->timed)
			o->events = UINT64_MAX / 4;
		else if (o->duration_s > 0)
			o->events = (uint64_t)(o->rate * o->duration_s + 0.5);
		else
			o->events = 10000;
	}
	return 0;
}

static void raise_nofile(void)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

static uint64_t nofile_limit(void)
{
	struct rlimit rl;
	return getrlimit(RLIMIT_NOFILE, &rl) == 0 ? (uint64_t)rl.rlim_cur : 0;
}

/* Every user's name and request target; tokens minted here. */
struct users {
	char prefix[16];
	char **names;
	char **paths;
	double mint_s;
};

static int users_make(const struct opts *o, struct users *u)
{
	unsigned char *secret = NULL;
	size_t secret_len = 0;
	EVP_PKEY *pkey = NULL;
	int rc = -1;

	snprintf(
	    u->prefix, sizeof(u->prefix), "b%05x",
	    (unsigned)((getpid() * 2654435761u) ^ (unsigned)bench_now_ns()) &
	        0xfffff);
	u->names = calloc(o->users, sizeof(char *));
	u->paths = calloc(o->users, sizeof(char *));
	if (u->names == NULL || u->paths == NULL)
		return -1;
	if (!o->nchan && o->secret_file) {
		char err[512];
		secret = auth_jwt_read_secret(o->secret_file, &secret_len, err,
		                              sizeof(err));
		if (secret == NULL) {
			fprintf(stderr, "wsbench: %s\n", err);
			return -1;
		}
	} else if (!o->nchan) {
		FILE *f = fopen(o->rs256_key, "r");
		if (f != NULL) {
			pkey = PEM_read_PrivateKey(f, NULL, NULL, NULL);
			fclose(f);
		}
		if (pkey == NULL) {
			fprintf(stderr, "wsbench: cannot read RSA key %s\n",
			        o->rs256_key);
			return -1;
		}
	}
	int64_t t0 = bench_now_ns();
	int64_t now_s = (int64_t)time(NULL);
	for (unsigned i = 0; i < o->users; i++) {
		char name[BENCH_USER_MAX];
		bench_user_name(name, sizeof(name), u->prefix, i);
		u->names[i] = strdup(name);
		char *tok = NULL;
		if (o->nchan) {
			tok = strdup("");
		} else if (secret != NULL) {
			tok = jwt_mint_hs256(secret, secret_len, name, now_s,
			                     o->token_ttl);
		} else {
			char claims[256];
			snprintf(claims, sizeof(claims),
			         "{\"sub\":\"%s\",\"iat\":%lld,\"exp\":%lld}",
			         name, (long long)now_s,
			         (long long)(now_s + o->token_ttl));
			tok =
			    jwt_mint_raw("{\"alg\":\"RS256\",\"typ\":\"JWT\"}",
			                 claims, "RS256", NULL, 0, pkey);
		}
		if (u->names[i] == NULL || tok == NULL) {
			fprintf(stderr, "wsbench: cannot mint a token\n");
			free(tok);
			goto out;
		}
		size_t cap = strlen(tok) + 64;
		u->paths[i] = malloc(cap);
		if (u->paths[i] == NULL) {
			free(tok);
			goto out;
		}
		if (o->nchan)
			snprintf(u->paths[i], cap, "/sub/%s", name);
		else
			snprintf(u->paths[i], cap, "/ws?access_token=%s", tok);
		free(tok);
	}
	u->mint_s = (double)(bench_now_ns() - t0) / 1e9;
	rc = 0;
out:
	free(secret);
	EVP_PKEY_free(pkey);
	return rc;
}

static void users_free(const struct opts *o, struct users *u)
{
	for (unsigned i = 0; u->names && i < o->users; i++) {
		free(u->names[i]);
		free(u->paths[i]);
	}
	free(u->names);
	free(u->paths);
}

static volatile sig_atomic_t interrupted;
static void on_signal(int sig)
{
	(void)sig;
	interrupted = 1;
}

/* Everything measured in one run. */
struct report {
	const struct opts *o;
	const char *alg;
	double mint_s;
	const struct pool_stats *ps;
	struct pool_verify v;
	struct pub_result pr;
	bool published;
	double connect_s, handshakes_per_s;
	double publish_s, publish_eps;
	double deliver_s, delivered_fps, delivered_eps;
	struct proc_sample sc_before, sc_ready, sc_start, sc_end;
	double sc_cpu_pct, sc_cpu_us_per_frame, bench_cpu_pct;
	double hs_sc_cpu_pct, hs_sc_cpu_us, hs_bench_cpu_pct;
	double kb_per_conn;
	bool ok;
	char error[640];
};

static double ms(uint64_t ns)
{
	return (double)ns / 1e6;
}

static void json_escape(FILE *f, const char *s)
{
	fputc('"', f);
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (c == '"' || c == '\\')
			fprintf(f, "\\%c", c);
		else if (c < 0x20)
			fprintf(f, "\\u%04x", c);
		else
			fputc(c, f);
	}
	fputc('"', f);
}

static void print_json(FILE *f, const struct report *r)
{
	const struct opts *o = r->o;
	const struct pool_stats *ps = r->ps;
	const struct histo *l = &ps->latency;
	fprintf(f, "{\"label\":");
	json_escape(f, o->label);
	fprintf(f, ",\"mode\":\"%s\",\"alg\":\"%s\",\"ok\":%d",
	        o->nchan ? "nchan" : "wsgate", r->alg, r->ok ? 1 : 0);
	fprintf(f,
	        ",\"users\":%u,\"conns_per_user\":%u,\"conns\":%u"
	        ",\"threads\":%u,\"batch\":%u,\"rate_target\":%.0f"
	        ",\"events_target\":%llu,\"duration_s\":%.1f"
	        ",\"payload_bytes\":%zu"
	        ",\"idle\":%d,\"connect_rate\":%.0f",
	        o->users, o->conns, ps->total, o->threads, o->batch, o->rate,
	        (unsigned long long)(o->idle || o->timed ? 0 : o->events),
	        o->duration_s, o->payload_bytes, o->idle ? 1 : 0,
	        o->connect_rate);
	fprintf(f,
	        ",\"mint_s\":%.3f,\"conns_ready\":%u,\"conns_failed\":%u"
	        ",\"connect_s\":%.3f,\"handshakes_per_s\":%.1f"
	        ",\"hs_p50_ms\":%.3f,\"hs_p99_ms\":%.3f,\"hs_max_ms\":%.3f"
	        ",\"hs_sidecar_cpu_pct\":%.1f,\"hs_sidecar_cpu_us\":%.1f"
	        ",\"hs_bench_cpu_pct\":%.1f",
	        r->mint_s, ps->ready, ps->failed, r->connect_s,
	        r->handshakes_per_s, ms(histo_percentile(&ps->handshake, 50)),
	        ms(histo_percentile(&ps->handshake, 99)),
	        ms(ps->handshake.count ? ps->handshake.max : 0),
	        r->hs_sc_cpu_pct, r->hs_sc_cpu_us, r->hs_bench_cpu_pct);
	fprintf(
	    f,
	    ",\"events_attempted\":%llu,\"events_accepted\":%llu"
	    ",\"publish_errors\":%llu,\"publish_retries\":%llu"
	    ",\"publish_duplicates\":%llu,\"requests\":%llu"
	    ",\"publish_s\":%.3f,\"publish_eps\":%.1f,\"max_lag_ms\":%.3f"
	    ",\"rtt_p50_ms\":%.3f,\"rtt_p99_ms\":%.3f,\"rtt_max_ms\":%.3f",
	    (unsigned long long)r->pr.attempted,
	    (unsigned long long)r->pr.accepted,
	    (unsigned long long)r->pr.errors, (unsigned long long)r->pr.retries,
	    (unsigned long long)r->pr.duplicates,
	    (unsigned long long)r->pr.requests, r->publish_s, r->publish_eps,
	    r->pr.max_lag_ms, ms(histo_percentile(&r->pr.rtt, 50)),
	    ms(histo_percentile(&r->pr.rtt, 99)),
	    ms(r->pr.rtt.count ? r->pr.rtt.max : 0));
	fprintf(f,
	        ",\"frames\":%llu,\"deliver_s\":%.3f,\"delivered_fps\":%.1f"
	        ",\"delivered_eps\":%.1f,\"lat_mean_ms\":%.3f"
	        ",\"lat_p50_ms\":%.3f,\"lat_p90_ms\":%.3f,\"lat_p99_ms\":%.3f"
	        ",\"lat_p999_ms\":%.3f,\"lat_max_ms\":%.3f",
	        (unsigned long long)ps->frames, r->deliver_s, r->delivered_fps,
	        r->delivered_eps, histo_mean(l) / 1e6,
	        ms(histo_percentile(l, 50)), ms(histo_percentile(l, 90)),
	        ms(histo_percentile(l, 99)), ms(histo_percentile(l, 99.9)),
	        ms(l->count ? l->max : 0));
	fprintf(
	    f,
	    ",\"expected\":%llu,\"received\":%llu,\"foreign\":%llu"
	    ",\"missing\":%llu,\"extra\":%llu,\"out_of_order\":%llu"
	    ",\"conns_short\":%u,\"closed_by_server\":%u"
	    ",\"error_frames\":%llu,\"other_frames\":%llu,\"pings\":%llu"
	    ",\"bytes\":%llu",
	    (unsigned long long)r->v.expected,
	    (unsigned long long)r->v.received, (unsigned long long)r->v.foreign,
	    (unsigned long long)r->v.missing, (unsigned long long)r->v.extra,
	    (unsigned long long)r->v.out_of_order, r->v.conns_short,
	    ps->closed_by_server, (unsigned long long)ps->error_frames,
	    (unsigned long long)ps->other_frames, (unsigned long long)ps->pings,
	    (unsigned long long)ps->bytes);
	fprintf(f,
	        ",\"sidecar_pid\":%d,\"sidecar_rss_before_kb\":%llu"
	        ",\"sidecar_rss_ready_kb\":%llu,\"sidecar_rss_end_kb\":%llu"
	        ",\"sidecar_rss_peak_kb\":%llu,\"sidecar_threads\":%llu"
	        ",\"kb_per_conn\":%.2f,\"sidecar_cpu_pct\":%.1f"
	        ",\"sidecar_cpu_us_per_frame\":%.3f,\"bench_cpu_pct\":%.1f",
	        (int)o->sidecar_pid, (unsigned long long)r->sc_before.rss_kb,
	        (unsigned long long)r->sc_ready.rss_kb,
	        (unsigned long long)r->sc_end.rss_kb,
	        (unsigned long long)r->sc_end.hwm_kb,
	        (unsigned long long)r->sc_end.threads, r->kb_per_conn,
	        r->sc_cpu_pct, r->sc_cpu_us_per_frame, r->bench_cpu_pct);
	fprintf(f, ",\"error\":");
	json_escape(f, r->error);
	fprintf(f, "}\n");
}

static void print_table(FILE *f, const struct report *r)
{
	const struct opts *o = r->o;
	const struct pool_stats *ps = r->ps;
	const struct histo *l = &ps->latency;
	fprintf(f, "== wsbench %s: %s, %u users x %u conns", o->label,
	        o->nchan ? "nchan" : "wsgate", o->users, o->conns);
	if (!o->idle)
		fprintf(f, ", %u threads, batch %u, %s", o->threads, o->batch,
		        o->rate > 0 ? "paced" : "unpaced");
	fprintf(f, "\n");
	fprintf(f,
	        "  %-26s %u ready, %u failed in %.3f s (tokens %s, %.3f s "
	        "to mint)\n",
	        "connections", ps->ready, ps->failed, r->connect_s, r->alg,
	        r->mint_s);
	fprintf(f, "  %-26s %.0f /s (p50 %.2f ms, p99 %.2f ms)\n", "handshakes",
	        r->handshakes_per_s, ms(histo_percentile(&ps->handshake, 50)),
	        ms(histo_percentile(&ps->handshake, 99)));
	if (o->idle) {
		fprintf(f,
		        "  %-26s %llu KB before, %llu KB after, %.2f KB per "
		        "connection\n",
		        "sidecar RSS", (unsigned long long)r->sc_before.rss_kb,
		        (unsigned long long)r->sc_end.rss_kb, r->kb_per_conn);
	} else {
		fprintf(f,
		        "  %-26s %llu of %llu accepted, %llu errors, %llu "
		        "retries, %.0f events/s (%.3f s)\n",
		        "published", (unsigned long long)r->pr.accepted,
		        (unsigned long long)r->pr.attempted,
		        (unsigned long long)r->pr.errors,
		        (unsigned long long)r->pr.retries, r->publish_eps,
		        r->publish_s);
		fprintf(
		    f, "  %-26s p50 %.3f ms, p99 %.3f ms, max lag %.1f ms\n",
		    "request round trip", ms(histo_percentile(&r->pr.rtt, 50)),
		    ms(histo_percentile(&r->pr.rtt, 99)), r->pr.max_lag_ms);
		fprintf(f,
		        "  %-26s %llu frames, %.0f frames/s, %.0f events/s "
		        "(%.3f s)\n",
		        "delivered", (unsigned long long)ps->frames,
		        r->delivered_fps, r->delivered_eps, r->deliver_s);
		fprintf(
		    f,
		    "  %-26s p50 %.3f  p90 %.3f  p99 %.3f  p99.9 %.3f  max "
		    "%.3f ms\n",
		    "latency", ms(histo_percentile(l, 50)),
		    ms(histo_percentile(l, 90)), ms(histo_percentile(l, 99)),
		    ms(histo_percentile(l, 99.9)), ms(l->count ? l->max : 0));
		fprintf(f,
		        "  %-26s foreign %llu, missing %llu, extra %llu, "
		        "out-of-order %llu, closed %u\n",
		        "checks", (unsigned long long)r->v.foreign,
		        (unsigned long long)r->v.missing,
		        (unsigned long long)r->v.extra,
		        (unsigned long long)r->v.out_of_order,
		        ps->closed_by_server);
		fprintf(f,
		        "  %-26s %.0f%% CPU, %.2f us CPU per frame, RSS %llu "
		        "KB (peak %llu KB)\n",
		        o->nchan ? "server (nginx worker)" : "sidecar",
		        r->sc_cpu_pct, r->sc_cpu_us_per_frame,
		        (unsigned long long)r->sc_end.rss_kb,
		        (unsigned long long)r->sc_end.hwm_kb);
		fprintf(f, "  %-26s %.0f%% CPU\n", "wsbench", r->bench_cpu_pct);
	}
	fprintf(f, "  %-26s %s%s%s\n", "result", r->ok ? "OK" : "FAILED",
	        r->error[0] ? ": " : "", r->error);
}

int main(int argc, char **argv)
{
	struct opts o;
	struct users u = {0};
	struct report r = {0};
	struct pool *pool = NULL;
	_Atomic uint64_t *accepted = NULL;
	static _Atomic uint64_t received_frames;
	uint64_t *expected = NULL;
	int rc = 2;

	if (parse_opts(argc, argv, &o) < 0)
		return 2;
	raise_nofile();
	signal(SIGPIPE, SIG_IGN);
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	uint64_t need = (uint64_t)o.users * o.conns + o.threads + 64;
	if (nofile_limit() < need) {
		fprintf(stderr,
		        "wsbench: %llu connections need %llu file descriptors; "
		        "the limit is %llu (raise ulimit -n)\n",
		        (unsigned long long)o.users * o.conns,
		        (unsigned long long)need,
		        (unsigned long long)nofile_limit());
		return 2;
	}
	if (o.pidfile != NULL && o.sidecar_pid <= 0)
		o.sidecar_pid = proc_pid_from_file(o.pidfile);

	r.o = &o;
	r.alg = o.nchan ? "none" : o.secret_file ? "HS256" : "RS256";
	if (users_make(&o, &u) < 0)
		goto out;
	r.mint_s = u.mint_s;
	accepted = calloc(o.users, sizeof(*accepted));
	expected = calloc(o.users, sizeof(*expected));
	if (accepted == NULL || expected == NULL)
		goto out;

	struct pool_cfg pc = {
	    .proto = o.nchan ? POOL_NCHAN : POOL_WSGATE,
	    .port = o.port,
	    .users = o.users,
	    .conns_per_user = o.conns,
	    .user_names = (const char *const *)u.names,
	    .paths = (const char *const *)u.paths,
	    .connect_rate = o.connect_rate,
	    .max_inflight = o.max_inflight,
	    .handshake_timeout_ms = (int)(o.connect_timeout_s * 1000),
	};
	if ((pool = pool_new(&pc)) == NULL) {
		fprintf(stderr, "wsbench: out of memory\n");
		goto out;
	}
	r.ps = pool_stats(pool);

	/* Phase 1: connect. */
	proc_sample(o.sidecar_pid, &r.sc_before);
	double hs_cpu0 = proc_self_cpu_s();
	int64_t t0 = bench_now_ns();
	int64_t connect_deadline = t0 + (int64_t)(o.connect_timeout_s * 1e9);
	pool_start_connecting(pool);
	while (!pool_connect_done(pool) && !interrupted &&
	       bench_now_ns() < connect_deadline)
		if (pool_service(pool, 10) < 0)
			break;
	const struct pool_stats *ps = r.ps;
	r.connect_s = (double)(bench_now_ns() - t0) / 1e9;
	if (ps->ready > 0 && ps->last_ready_ns > ps->first_start_ns)
		r.handshakes_per_s =
		    ps->ready /
		    ((double)(ps->last_ready_ns - ps->first_start_ns) / 1e9);
	proc_sample(o.sidecar_pid, &r.sc_ready);
	if (r.connect_s > 0)
		r.hs_bench_cpu_pct =
		    100.0 * (proc_self_cpu_s() - hs_cpu0) / r.connect_s;
	if (r.sc_before.ok && r.sc_ready.ok && r.connect_s > 0) {
		double cpu = r.sc_ready.cpu_s - r.sc_before.cpu_s;
		r.hs_sc_cpu_pct = 100.0 * cpu / r.connect_s;
		if (ps->ready > 0)
			r.hs_sc_cpu_us = cpu * 1e6 / ps->ready;
	}

	double cpu0 = proc_self_cpu_s();
	int64_t w0 = bench_now_ns();
	if (o.idle) {
		/* Phase 2a: hold the connections, answering pings. */
		int64_t until = bench_now_ns() + (int64_t)(o.hold_s * 1e9);
		while (!interrupted && bench_now_ns() < until)
			pool_service(pool, 50);
		proc_sample(o.sidecar_pid, &r.sc_end);
		if (ps->ready > 0 && r.sc_end.ok && r.sc_before.ok)
			r.kb_per_conn = ((double)r.sc_end.rss_kb -
			                 (double)r.sc_before.rss_kb) /
			                ps->ready;
	} else if (ps->ready > 0) {
		/* Phase 2b: publish and receive. */
		struct pub_cfg cfg = {
		    .nchan = o.nchan,
		    .control_url = o.control,
		    .nchan_port = o.port,
		    .threads = o.threads,
		    .batch = o.batch,
		    .rate = o.rate,
		    .events = o.events,
		    .users = o.users,
		    .user_names = (const char *const *)u.names,
		    .payload_bytes = o.payload_bytes,
		    .id_prefix = u.prefix,
		    .timeout_ms = 10000,
		    .stop_at_ns =
		        o.timed ? bench_now_ns() + (int64_t)(o.duration_s * 1e9)
		                : 0,
		    .deadline_ns =
		        bench_now_ns() + (int64_t)(o.max_time_s * 1e9),
		};
		proc_sample(o.sidecar_pid, &r.sc_start);
		struct publisher *pub = pub_start(&cfg, accepted);
		if (pub == NULL) {
			fprintf(stderr, "wsbench: cannot start publishers\n");
			goto out;
		}
		int64_t last_progress = bench_now_ns();
		uint64_t last_frames = 0;
		bool stopped = false;
		for (;;) {
			pool_service(pool, 5);
			atomic_store(&received_frames, ps->frames);
			int64_t now = bench_now_ns();
			if (interrupted && !stopped) {
				pub_stop(pub);
				stopped = true;
			}
			if (ps->frames != last_frames) {
				last_frames = ps->frames;
				last_progress = now;
			}
			if (!pub_done(pub)) {
				last_progress = now;
				continue;
			}
			uint64_t acc = 0;
			for (unsigned i = 0; i < o.users; i++)
				acc += atomic_load(&accepted[i]);
			if (ps->frames >= acc * o.conns)
				break;
			if (now - last_progress > (int64_t)(o.drain_s * 1e9))
				break;
		}
		pub_join(pub, &r.pr);
		r.published = true;
		proc_sample(o.sidecar_pid, &r.sc_end);
		for (unsigned i = 0; i < o.users; i++)
			expected[i] = atomic_load(&accepted[i]);
		pool_verify(pool, expected, &r.v);
		if (r.pr.first_send_ns > 0) {
			r.publish_s =
			    (double)(r.pr.last_reply_ns - r.pr.first_send_ns) /
			    1e9;
			if (r.publish_s > 0)
				r.publish_eps = r.pr.accepted / r.publish_s;
		}
		if (ps->frames > 0 && r.pr.first_send_ns > 0 &&
		    ps->last_recv_ns > r.pr.first_send_ns) {
			r.deliver_s =
			    (double)(ps->last_recv_ns - r.pr.first_send_ns) /
			    1e9;
			r.delivered_fps = ps->frames / r.deliver_s;
			r.delivered_eps = r.delivered_fps / o.conns;
		}
		if (r.sc_start.ok && r.sc_end.ok) {
			double wall =
			    (double)(r.sc_end.at_ns - r.sc_start.at_ns) / 1e9;
			double cpu = r.sc_end.cpu_s - r.sc_start.cpu_s;
			if (wall > 0)
				r.sc_cpu_pct = 100.0 * cpu / wall;
			if (ps->frames > 0)
				r.sc_cpu_us_per_frame = cpu * 1e6 / ps->frames;
		}
	}
	double wall = (double)(bench_now_ns() - w0) / 1e9;
	if (wall > 0)
		r.bench_cpu_pct = 100.0 * (proc_self_cpu_s() - cpu0) / wall;
	if (!r.sc_end.ok)
		proc_sample(o.sidecar_pid, &r.sc_end);

	/* Verdict. */
	r.ok = ps->failed == 0 && ps->ready == ps->total &&
	       ps->closed_by_server == 0 && r.v.foreign == 0 &&
	       r.v.missing == 0 && r.v.out_of_order == 0 && r.v.extra == 0 &&
	       r.pr.errors == 0 && ps->error_frames == 0 && !interrupted;
	if (!o.idle && (r.pr.cut_short || !r.published ||
	                (!o.timed && r.pr.accepted < o.events)))
		r.ok = false;
	if (!r.ok) {
		/* What failed, then the first detail seen. */
		const char *detail = ps->first_error[0]    ? ps->first_error
		                     : r.pr.first_error[0] ? r.pr.first_error
		                                           : "";
		snprintf(r.error, sizeof(r.error),
		         "%u/%u connections failed, %u closed by the server; "
		         "%llu foreign, %llu missing, %llu extra, %llu out of "
		         "order; %llu publish errors%s%s%.256s",
		         ps->failed + (ps->total - ps->ready - ps->failed),
		         ps->total, ps->closed_by_server,
		         (unsigned long long)r.v.foreign,
		         (unsigned long long)r.v.missing,
		         (unsigned long long)r.v.extra,
		         (unsigned long long)r.v.out_of_order,
		         (unsigned long long)r.pr.errors,
		         interrupted ? "; interrupted" : "",
		         detail[0] ? ": " : "", detail);
	} else if (r.pr.first_error[0]) {
		snprintf(r.error, sizeof(r.error), "%s", r.pr.first_error);
	}
	pool_close_all(pool, 2000);

	if (!o.quiet)
		print_table(stdout, &r);
	print_json(stdout, &r);
	fflush(stdout);
	if (o.json_out != NULL) {
		FILE *f = fopen(o.json_out, "a");
		if (f != NULL) {
			print_json(f, &r);
			fclose(f);
		}
	}
	rc = r.ok ? 0 : 1;
out:
	pool_free(pool);
	users_free(&o, &u);
	free(accepted);
	free(expected);
	return rc;
}
