/*
 * cluster_proc: a nats-server plus sidecars in cluster mode, their
 * backends, tabs reading events off any pod, and wsgatectl verify (see
 * cluster_proc.h). Every wait is a polled condition or a read with a
 * deadline.
 */
#include "cluster_proc.h"
#include "child_proc.h"
#include "nats_proc.h"
#include "sidecar_proc.h"
#include "test_clock.h"
#include "ws_client.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#ifndef WSGATECTL_BIN
#error "WSGATECTL_BIN (path of the built wsgatectl) must be defined"
#endif

#define CONNECT_TIMEOUT_MS 20000
#define PROBE_PAUSE_MS     20
#define HELP_TIMEOUT_MS    5000
#define VERIFY_TIMEOUT_MS  60000

bool cluster_supported(char *why, size_t cap)
{
	const char *const argv[] = {WSGATE_BIN, "--help", NULL};
	struct child_proc help = {0};
	char line[512];
	bool found = false;
	int r;

	if (!nats_proc_binary()) {
		snprintf(why, cap, "nats-server is not installed");
		return false;
	}
	if (child_proc_start(&help, argv) < 0) {
		snprintf(why, cap, "cannot run %s --help", WSGATE_BIN);
		return false;
	}
	while (!found && (r = child_proc_read_line(&help, line, sizeof(line),
	                                           HELP_TIMEOUT_MS)) == 1)
		found = strstr(line, "--cluster ") != NULL;
	child_proc_finish(&help, HELP_TIMEOUT_MS);
	if (!found)
		snprintf(why, cap,
		         "%s --help does not list --cluster: this build has "
		         "no cluster mode",
		         WSGATE_BIN);
	return found;
}

struct wsgate_event cluster_event(const char *user, const char *event_id,
                                  char *payload, size_t cap, long n)
{
	int len = snprintf(payload, cap, "{\"n\":%ld}", n);

	return (struct wsgate_event){
	    .event_id = event_id,
	    .user_id = user,
	    .thread_id = "t1",
	    .run_id = "r1",
	    .type = WSGATE_AGENT_THINKING,
	    .payload_json = payload,
	    .payload_len = (size_t)len,
	};
}

int cluster_wait_connected(struct cluster *c, size_t i, int timeout_ms)
{
	int64_t deadline = test_now_ms() + timeout_ms;
	char user[32], id[64], payload[32];
	struct wsgate_event_result res;
	enum wsgate_status st;

	snprintf(user, sizeof(user), "probe-%s", c->node[i]);
	snprintf(id, sizeof(id), "probe-%s-%lld", c->node[i],
	         (long long)test_now_ms());
	for (;;) {
		struct wsgate_event ev =
		    cluster_event(user, id, payload, sizeof(payload), 0);

		st = wsgate_send_event(c->backend[i], &ev, &res);
		if (st == WSGATE_OK)
			return 0;
		if (test_now_ms() >= deadline)
			break;
		test_pause_ms(PROBE_PAUSE_MS);
	}
	fprintf(stderr, "pod %s: no event accepted within %d ms: %s (%s)\n",
	        c->node[i], timeout_ms, wsgate_status_name(st),
	        wsgate_client_error(c->backend[i]));
	return -1;
}

int cluster_start(struct cluster **out, size_t n, const char *const *extra_args)
{
	struct cluster *c = calloc(1, sizeof(*c));

	*out = NULL;
	if (!c || n < 1 || n > CLUSTER_MAX) {
		free(c);
		return -1;
	}
	if (nats_proc_start(&c->nats) < 0)
		goto fail;
	for (size_t i = 0; i < n; i++) {
		const char *args[SIDECAR_MAX_ARGS + 1] = {
		    "--cluster", c->nats->url, "--node-id", c->node[i]};
		size_t k = 4;

		snprintf(c->node[i], sizeof(c->node[i]), "%c", (char)('a' + i));
		for (; extra_args && *extra_args && k < SIDECAR_MAX_ARGS;
		     extra_args++)
			args[k++] = *extra_args;
		args[k] = NULL;
		if (sidecar_start(&c->sc[i], args) < 0)
			goto fail;
		c->n = i + 1;
		if (wsgate_client_open(&c->backend[i], c->sc[i]->control_url,
		                       CLUSTER_CALL_MS) != WSGATE_OK)
			goto fail;
	}
	for (size_t i = 0; i < n; i++)
		if (cluster_wait_connected(c, i, CONNECT_TIMEOUT_MS) < 0)
			goto fail;
	*out = c;
	return 0;
fail:
	cluster_free(c, true);
	return -1;
}

int cluster_fixture_start(struct cluster_fixture *f, size_t n)
{
	if (!cluster_supported(f->why, sizeof(f->why))) {
		f->skip = true;
		return 0;
	}
	return cluster_start(&f->c, n, NULL);
}

int cluster_verify(const struct cluster *c, size_t i)
{
	const struct sidecar *s = c->sc[i];
	const char *const argv[] = {
	    WSGATECTL_BIN,     "--db",   s->db_path, "--audit-key-file",
	    s->audit_key_path, "verify", NULL};
	struct child_proc ctl = {0};
	char line[1024], out[8192] = "";
	size_t len = 0;
	int status;

	if (child_proc_start(&ctl, argv) < 0)
		return -1;
	while (child_proc_read_line(&ctl, line, sizeof(line),
	                            VERIFY_TIMEOUT_MS) == 1)
		if (len < sizeof(out) - 1)
			len += (size_t)snprintf(out + len, sizeof(out) - len,
			                        "%s\n", line);
	status = child_proc_wait(&ctl, VERIFY_TIMEOUT_MS);
	if (status != 0)
		fprintf(stderr, "wsgatectl verify on pod %s (%s): exit %d\n%s",
		        c->node[i], s->db_path, status, out);
	return status;
}

int cluster_free(struct cluster *c, bool failed)
{
	int rc = 0;

	if (!c)
		return 0;
	for (size_t i = 0; i < c->n; i++) {
		wsgate_client_close(c->backend[i]);
		if (c->sc[i] && sidecar_finish(c->sc[i], !failed) < 0) {
			fprintf(stderr, "pod %s did not exit 0\n", c->node[i]);
			rc = -1;
		}
	}
	nats_proc_free(c->nats, failed || rc < 0);
	free(c);
	return rc;
}

/* --- tabs --- */

/* Appends s to buf percent-encoded (everything but [A-Za-z0-9._~-]). */
static void url_append(char *buf, size_t cap, const char *s)
{
	size_t len = strlen(buf);

	for (; *s && len + 4 < cap; s++) {
		unsigned char ch = (unsigned char)*s;

		if (isalnum(ch) || strchr("._~-", ch))
			buf[len++] = (char)ch;
		else
			len += (size_t)snprintf(buf + len, cap - len, "%%%02X",
			                        ch);
	}
	buf[len] = '\0';
}

/* A JSON scalar as text ("" when absent or not a scalar). */
static void json_text(json_t *v, char *out, size_t cap)
{
	if (json_is_string(v))
		snprintf(out, cap, "%s", json_string_value(v));
	else if (json_is_integer(v))
		snprintf(out, cap, "%lld", (long long)json_integer_value(v));
	else
		out[0] = '\0';
}

int tab_open(struct tab *t, const struct sidecar *s, const char *user,
             int64_t since, const char *epoch, int timeout_ms)
{
	char path[2048], *token, *text;
	json_t *obj;
	int status;

	memset(t, 0, sizeof(*t));
	snprintf(t->user, sizeof(t->user), "%s", user);
	token = sidecar_token(s, user, 600);
	if (!token)
		return -1;
	snprintf(path, sizeof(path), "/ws?access_token=%s", token);
	free(token);
	if (since >= 0)
		snprintf(path + strlen(path), sizeof(path) - strlen(path),
		         "&since=%lld", (long long)since);
	if (epoch) {
		snprintf(path + strlen(path), sizeof(path) - strlen(path),
		         "&epoch=");
		url_append(path, sizeof(path), epoch);
	}
	status = ws_client_connect(&t->ws, s->port, path, NULL, timeout_ms);
	if (status != 101) {
		fprintf(stderr, "tab of %s on port %u: HTTP %d (%s)\n", user,
		        s->port, status, ws_client_error());
		t->ws = NULL;
		return -1;
	}
	text = ws_client_recv_text(t->ws, timeout_ms);
	obj = text ? json_loads(text, 0, NULL) : NULL;
	if (!obj || !json_is_string(json_object_get(obj, "type")) ||
	    strcmp(json_string_value(json_object_get(obj, "type")),
	           "connected") != 0 ||
	    !json_is_integer(json_object_get(obj, "seq"))) {
		fprintf(stderr, "tab of %s: first frame %s\n", user,
		        text ? text : ws_client_error());
		json_decref(obj);
		free(text);
		tab_close(t);
		return -1;
	}
	t->connected_seq =
	    (uint64_t)json_integer_value(json_object_get(obj, "seq"));
	t->last_seq = since > 0 ? (uint64_t)since : 0;
	json_text(json_object_get(obj, "epoch"), t->epoch, sizeof(t->epoch));
	json_text(json_object_get(obj, "node"), t->node, sizeof(t->node));
	json_decref(obj);
	free(text);
	return 0;
}

int tab_next(struct tab *t, char *event_id, uint64_t *seq, int timeout_ms)
{
	int64_t deadline = test_now_ms() + timeout_ms;

	event_id[0] = '\0';
	for (;;) {
		int64_t left = deadline - test_now_ms();
		char *text =
		    ws_client_recv_text(t->ws, left > 0 ? (int)left : 0);
		json_t *obj = text ? json_loads(text, 0, NULL) : NULL;
		json_t *type = json_object_get(obj, "type");
		json_t *id = json_object_get(obj, "event_id");
		json_t *user = json_object_get(obj, "user_id");
		json_t *s = json_object_get(obj, "seq");
		int rc = -1;

		if (!text) {
			fprintf(stderr,
			        "tab of %s: no frame within %d ms (%s)\n",
			        t->user, timeout_ms, ws_client_error());
			return -1;
		}
		if (!json_is_string(type)) {
			fprintf(stderr, "tab of %s: odd frame %.300s\n",
			        t->user, text);
		} else if (!strcmp(json_string_value(type), "resume_failed")) {
			t->resume_failed = true;
			t->oldest_seq = (uint64_t)json_integer_value(
			    json_object_get(obj, "oldest_seq"));
			rc = 2;
		} else if (!strcmp(json_string_value(type), "pong")) {
			rc = 0;
		} else if (!json_is_string(id) || !json_is_integer(s) ||
		           !json_is_string(user) ||
		           strcmp(json_string_value(user), t->user) != 0) {
			fprintf(stderr,
			        "tab of %s: not one of its events: %.300s\n",
			        t->user, text);
		} else {
			snprintf(event_id, 128, "%s", json_string_value(id));
			*seq = (uint64_t)json_integer_value(s);
			t->last_seq = *seq;
			t->events++;
			rc = 1;
		}
		json_decref(obj);
		free(text);
		if (rc != 2)
			return rc;
	}
}

int tab_ping(struct tab *t)
{
	return ws_client_send_text(t->ws, "{\"type\":\"ping\"}") == WS_CLIENT_OK
	           ? 0
	           : -1;
}

void tab_close(struct tab *t)
{
	if (t->ws)
		ws_client_close(t->ws, 2000);
	t->ws = NULL;
}
