/*
 * test_tls: the sidecar serving wss:// and https:// (--tls-cert/--tls-key).
 *
 * The group setup makes a self-signed P-256 certificate for 127.0.0.1 with
 * the OpenSSL API, then runs the real sidecar with it. sidecar_start only
 * knows plain HTTP readiness, so the sidecar is first started plainly (that
 * lays out its directory, secret and port), stopped, and started again here
 * with the TLS flags; readiness is GET /healthz over https, polled with a
 * deadline. The TLS WebSocket client below (OpenSSL over a blocking socket
 * with receive/send timeouts) verifies the server's certificate against
 * the generated one, authenticates with ?access_token=, and reads frames.
 * Plain text to the TLS port must not get through.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <nng/nng.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "test_clock.h"
#include "sidecar_proc.h"
#include "ws_client.h"
#include "wsgate.h"

#define IO_MS    5000 /* one TLS handshake, request or frame */
#define N_TESTS  4
#define TLS_USER "tls-user"

/* One of these for the whole file. */
struct tls_fixture {
	struct sidecar *sc;
	char cert_path[128];
	char key_path[128];
	wsgate_client *backend;
	int passed;
};

/* --- the certificate --- */

/* A self-signed P-256 certificate for 127.0.0.1 (CN and IP SAN), valid a
 * day; key written mode 0600. Returns 0 or -1. */
static int make_certificate(const char *cert_path, const char *key_path)
{
	EVP_PKEY *key = EVP_EC_gen("P-256");
	X509 *x = X509_new();
	X509_NAME *name;
	X509_EXTENSION *ext = NULL;
	X509V3_CTX v3;
	FILE *f = NULL;
	int fd, rc = -1;

	if (!key || !x)
		goto out;
	X509_set_version(x, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(x), (long)time(NULL));
	X509_gmtime_adj(X509_getm_notBefore(x), -60);
	X509_gmtime_adj(X509_getm_notAfter(x), 24 * 3600);
	X509_set_pubkey(x, key);
	name = X509_get_subject_name(x);
	X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
	                           (const unsigned char *)"127.0.0.1", -1, -1,
	                           0);
	X509_set_issuer_name(x, name);
	X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
	ext = X509V3_EXT_conf_nid(NULL, &v3, NID_subject_alt_name,
	                          "IP:127.0.0.1");
	if (!ext || !X509_add_ext(x, ext, -1))
		goto out;
	if (!X509_sign(x, key, EVP_sha256()))
		goto out;
	fd = open(key_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0 || !(f = fdopen(fd, "w")))
		goto out;
	if (!PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL))
		goto out;
	fclose(f);
	f = fopen(cert_path, "w");
	if (!f || !PEM_write_X509(f, x))
		goto out;
	rc = 0;
out:
	if (f)
		fclose(f);
	X509_EXTENSION_free(ext);
	X509_free(x);
	EVP_PKEY_free(key);
	return rc;
}

/* --- a blocking TLS connection with timeouts --- */

/* Set while readiness is polled: refused connections are expected. */
static bool tls_quiet;

struct tls_conn {
	int fd;
	SSL_CTX *ctx;
	SSL *ssl;
	unsigned char buf[65536]; /* received, not yet consumed */
	size_t len;
	char error[160];
};

static void tls_conn_free(struct tls_conn *c)
{
	if (!c)
		return;
	if (c->ssl) {
		SSL_shutdown(c->ssl);
		SSL_free(c->ssl);
	}
	SSL_CTX_free(c->ctx);
	if (c->fd >= 0)
		close(c->fd);
	free(c);
}

/* Connects to 127.0.0.1:port and completes a TLS handshake that verifies
 * the server against ca_path (and its IP). NULL on failure, with why on
 * stderr. */
static struct tls_conn *tls_connect(uint16_t port, const char *ca_path)
{
	struct tls_conn *c = calloc(1, sizeof(*c));
	struct sockaddr_in sa = {.sin_family = AF_INET,
	                         .sin_port = htons(port)};
	struct timeval tv = {.tv_sec = IO_MS / 1000};

	if (!c)
		return NULL;
	c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (c->fd < 0 ||
	    setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) ||
	    setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) ||
	    connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		if (!tls_quiet)
			fprintf(stderr, "tls: connect: %s\n", strerror(errno));
		goto fail;
	}
	c->ctx = SSL_CTX_new(TLS_client_method());
	if (!c->ctx || !SSL_CTX_load_verify_locations(c->ctx, ca_path, NULL))
		goto fail_ssl;
	SSL_CTX_set_verify(c->ctx, SSL_VERIFY_PEER, NULL);
	c->ssl = SSL_new(c->ctx);
	if (!c->ssl ||
	    !X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl),
	                                   "127.0.0.1") ||
	    !SSL_set_fd(c->ssl, c->fd))
		goto fail_ssl;
	if (SSL_connect(c->ssl) != 1)
		goto fail_ssl;
	if (SSL_get_verify_result(c->ssl) != X509_V_OK) {
		fprintf(stderr, "tls: certificate not verified\n");
		goto fail;
	}
	return c;
fail_ssl:
	fprintf(stderr, "tls: %s\n", ERR_error_string(ERR_get_error(), NULL));
fail:
	tls_conn_free(c);
	return NULL;
}

static int tls_write_all(struct tls_conn *c, const void *p, size_t n)
{
	const unsigned char *b = p;

	while (n > 0) {
		int w =
		    SSL_write(c->ssl, b, n > INT32_MAX ? INT32_MAX : (int)n);

		if (w <= 0)
			return -1;
		b += w;
		n -= (size_t)w;
	}
	return 0;
}

/* Reads more bytes into c->buf; 0 on EOF or timeout (SO_RCVTIMEO), -1 when
 * the buffer is full, else the count. */
static int tls_fill(struct tls_conn *c)
{
	int r;

	if (c->len == sizeof(c->buf))
		return -1;
	r = SSL_read(c->ssl, c->buf + c->len, (int)(sizeof(c->buf) - c->len));
	if (r <= 0)
		return 0;
	c->len += (size_t)r;
	return r;
}

static void tls_consume(struct tls_conn *c, size_t n)
{
	memmove(c->buf, c->buf + n, c->len - n);
	c->len -= n;
}

/* Reads an HTTP response head; returns the status, or -1. The head stays
 * in c->buf, NUL-terminated, up to *head_len. */
static int tls_read_head(struct tls_conn *c, size_t *head_len)
{
	int64_t deadline = test_now_ms() + IO_MS;
	int status = -1;

	for (;;) {
		char *end;

		c->buf[c->len < sizeof(c->buf) ? c->len : c->len - 1] = 0;
		end = strstr((char *)c->buf, "\r\n\r\n");
		if (end) {
			*head_len = (size_t)(end - (char *)c->buf) + 4;
			break;
		}
		if (test_now_ms() > deadline || tls_fill(c) <= 0)
			return -1;
	}
	if (sscanf((char *)c->buf, "HTTP/1.%*d %d", &status) != 1)
		return -1;
	return status;
}

/* GET path over TLS; returns the status and, if body, the body up to EOF
 * (malloc'd). */
static int tls_http_get(uint16_t port, const char *ca, const char *path,
                        char **body)
{
	struct tls_conn *c = tls_connect(port, ca);
	char req[512];
	size_t head_len;
	int status;
	int64_t deadline = test_now_ms() + IO_MS;

	if (body)
		*body = NULL;
	if (!c)
		return -1;
	snprintf(req, sizeof(req),
	         "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%u\r\n"
	         "Connection: close\r\n\r\n",
	         path, port);
	if (tls_write_all(c, req, strlen(req)) < 0) {
		tls_conn_free(c);
		return -1;
	}
	status = tls_read_head(c, &head_len);
	while (status > 0 && test_now_ms() < deadline && tls_fill(c) > 0)
		;
	if (body && status > 0) {
		*body = strndup((char *)c->buf + head_len, c->len - head_len);
	}
	tls_conn_free(c);
	return status;
}

/* --- WebSocket over the TLS connection --- */

static void base64(const unsigned char *in, size_t n, char *out, size_t cap)
{
	assert_true(cap >= 4 * ((n + 2) / 3) + 1);
	EVP_EncodeBlock((unsigned char *)out, in, (int)n);
}

/* Upgrades c to a WebSocket on path; returns the HTTP status (101 with a
 * correct Sec-WebSocket-Accept, or what the server answered). */
static int wss_handshake(struct tls_conn *c, uint16_t port, const char *path)
{
	static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
	unsigned char nonce[16], digest[SHA_DIGEST_LENGTH];
	char key[32], accept[64], want[64], cat[128], *req;
	size_t head_len, reqlen = strlen(path) + 512;
	int status;

	assert_int_equal(RAND_bytes(nonce, sizeof(nonce)), 1);
	base64(nonce, sizeof(nonce), key, sizeof(key));
	req = malloc(reqlen);
	assert_non_null(req);
	snprintf(req, reqlen,
	         "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%u\r\n"
	         "Upgrade: websocket\r\nConnection: Upgrade\r\n"
	         "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n",
	         path, port, key);
	assert_int_equal(tls_write_all(c, req, strlen(req)), 0);
	free(req);
	status = tls_read_head(c, &head_len);
	if (status != 101)
		return status;
	snprintf(cat, sizeof(cat), "%s%s", key, guid);
	SHA1((const unsigned char *)cat, strlen(cat), digest);
	base64(digest, sizeof(digest), want, sizeof(want));
	{
		const char *h = strcasestr((char *)c->buf, "\r\nSec-WebSocket-"
		                                           "Accept:");
		if (!h || sscanf(h + 24, " %63[^\r]", accept) != 1 ||
		    strcmp(accept, want) != 0)
			return -1;
	}
	tls_consume(c, head_len);
	return status;
}

/* Sends one masked frame. */
static int wss_send(struct tls_conn *c, int opcode, const void *data,
                    size_t len)
{
	unsigned char head[14], mask[4], *frame;
	size_t hl = 2;
	int rc;

	assert_true(len < 65536);
	head[0] = (unsigned char)(0x80 | opcode);
	if (len < 126) {
		head[1] = (unsigned char)(0x80 | len);
	} else {
		head[1] = 0x80 | 126;
		head[2] = (unsigned char)(len >> 8);
		head[3] = (unsigned char)len;
		hl = 4;
	}
	assert_int_equal(RAND_bytes(mask, 4), 1);
	memcpy(head + hl, mask, 4);
	hl += 4;
	frame = malloc(hl + len);
	assert_non_null(frame);
	memcpy(frame, head, hl);
	for (size_t i = 0; i < len; i++)
		frame[hl + i] = ((const unsigned char *)data)[i] ^ mask[i % 4];
	rc = tls_write_all(c, frame, hl + len);
	free(frame);
	return rc;
}

/* The next text message (pings answered, nothing else expected): a
 * malloc'd string, or NULL with c->error set. Server messages here are
 * single frames. */
static char *wss_recv_text(struct tls_conn *c)
{
	int64_t deadline = test_now_ms() + IO_MS;

	while (test_now_ms() < deadline) {
		size_t hl = 2;
		uint64_t len;
		int opcode;

		if (c->len >= 2) {
			opcode = c->buf[0] & 0x0f;
			len = c->buf[1] & 0x7f;
			if (len == 126 && c->len >= 4) {
				len = ((uint64_t)c->buf[2] << 8) | c->buf[3];
				hl = 4;
			} else if (len == 127 && c->len >= 10) {
				len = 0;
				for (int i = 2; i < 10; i++)
					len = len << 8 | c->buf[i];
				hl = 10;
			}
			if ((c->buf[1] & 0x7f) < 126 || hl > 2) {
				if (hl + len > sizeof(c->buf)) {
					snprintf(c->error, sizeof(c->error),
					         "frame of %llu bytes",
					         (unsigned long long)len);
					return NULL;
				}
				if (c->len >= hl + len) {
					char *text;

					if (!(c->buf[0] & 0x80)) {
						snprintf(c->error,
						         sizeof(c->error),
						         "fragmented frame");
						return NULL;
					}
					if (opcode == WS_OP_PING) {
						wss_send(c, WS_OP_PONG,
						         c->buf + hl, len);
						tls_consume(c, hl + len);
						continue;
					}
					if (opcode != WS_OP_TEXT) {
						snprintf(c->error,
						         sizeof(c->error),
						         "opcode %d", opcode);
						return NULL;
					}
					text =
					    strndup((char *)c->buf + hl, len);
					tls_consume(c, hl + len);
					return text;
				}
			}
		}
		if (tls_fill(c) <= 0)
			break;
	}
	snprintf(c->error, sizeof(c->error), "no frame within %d ms", IO_MS);
	return NULL;
}

/* --- the sidecar over TLS --- */

/* sidecar_proc's readiness for the TLS sidecar: https /healthz is 200. */
static int tls_ready(const struct sidecar *s, void *arg)
{
	struct tls_fixture *f = arg;
	int ok;

	tls_quiet = true; /* refusals while it starts are expected */
	ok = tls_http_get(s->port, f->cert_path, "/healthz", NULL) == 200;
	tls_quiet = false;
	return ok;
}

static int group_setup(void **state)
{
	struct tls_fixture *f = calloc(1, sizeof(*f));

	if (!f)
		return -1;
	if (sidecar_start(&f->sc, NULL) != 0)
		goto fail;
	if (sidecar_stop(f->sc, SIDECAR_STOP_TIMEOUT_MS) != 0)
		goto fail;
	snprintf(f->cert_path, sizeof(f->cert_path), "%s/tls.crt", f->sc->dir);
	snprintf(f->key_path, sizeof(f->key_path), "%s/tls.key", f->sc->dir);
	if (make_certificate(f->cert_path, f->key_path) != 0) {
		fprintf(stderr, "cannot make a certificate: %s\n",
		        ERR_error_string(ERR_get_error(), NULL));
		goto fail;
	}
	{
		const char *const args[] = {"--tls-cert", f->cert_path,
		                            "--tls-key", f->key_path, NULL};
		if (sidecar_set_args(f->sc, args) != 0)
			goto fail;
	}
	f->sc->ready = tls_ready;
	f->sc->ready_arg = f;
	if (sidecar_restart(f->sc) != 0)
		goto fail;
	if (wsgate_client_open(&f->backend, f->sc->control_url, IO_MS) !=
	    WSGATE_OK)
		goto fail;
	*state = f;
	return 0;
fail:
	if (f->sc) {
		sidecar_print_log(f->sc, 4096);
		sidecar_free(f->sc, true);
	}
	free(f);
	return -1;
}

static int group_teardown(void **state)
{
	struct tls_fixture *f = *state;
	bool failed = f->passed != N_TESTS;
	int status;

	wsgate_client_close(f->backend);
	status = sidecar_stop(f->sc, SIDECAR_STOP_TIMEOUT_MS);
	if (status != 0) {
		fprintf(stderr, "TLS sidecar exit status %d\n", status);
		failed = true;
	}
	if (failed)
		sidecar_print_log(f->sc, 4096);
	sidecar_free(f->sc, failed);
	free(f);
	return failed ? -1 : 0;
}

/* --- tests --- */

/* A wss client verifying the generated certificate authenticates, gets
 * its connected frame, an event sent through libwsgate, and a pong. */
static void test_wss_client_receives_its_event(void **state)
{
	struct tls_fixture *f = *state;
	struct tls_conn *c = tls_connect(f->sc->port, f->cert_path);
	char *token = sidecar_token(f->sc, TLS_USER, 600);
	char path[2048], *text;
	struct wsgate_event ev = {.event_id = "tls-e1",
	                          .user_id = TLS_USER,
	                          .run_id = "r1",
	                          .type = WSGATE_AGENT_STARTED,
	                          .payload_json = "{\"over\":\"tls\"}",
	                          .payload_len = 14};
	struct wsgate_event_result res;

	assert_non_null(c);
	assert_non_null(token);
	print_message("  TLS %s, cipher %s\n", SSL_get_version(c->ssl),
	              SSL_get_cipher(c->ssl));
	snprintf(path, sizeof(path), "/ws?access_token=%s", token);
	free(token);
	assert_int_equal(wss_handshake(c, f->sc->port, path), 101);
	text = wss_recv_text(c);
	if (!text)
		fail_msg("no connected frame: %s", c->error);
	assert_non_null(strstr(text, "\"type\":\"connected\""));
	assert_non_null(strstr(text, "\"user_id\":\"" TLS_USER "\""));
	free(text);

	assert_int_equal(wsgate_send_event(f->backend, &ev, &res), WSGATE_OK);
	assert_int_equal(res.connections, 1);
	text = wss_recv_text(c);
	if (!text)
		fail_msg("no event frame: %s", c->error);
	assert_non_null(strstr(text, "\"type\":\"agent_started\""));
	assert_non_null(strstr(text, "\"event_id\":\"tls-e1\""));
	assert_non_null(strstr(text, "\"payload\":{\"over\":\"tls\"}"));
	free(text);

	assert_int_equal(wss_send(c, WS_OP_TEXT, "{\"type\":\"ping\"}", 15), 0);
	text = wss_recv_text(c);
	if (!text)
		fail_msg("no pong: %s", c->error);
	assert_string_equal(text, "{\"type\":\"pong\"}");
	free(text);
	tls_conn_free(c);
	f->passed++;
}

/* A bad token over wss is refused like over ws. */
static void test_wss_refuses_a_bad_token(void **state)
{
	struct tls_fixture *f = *state;
	struct tls_conn *c = tls_connect(f->sc->port, f->cert_path);

	assert_non_null(c);
	assert_int_equal(
	    wss_handshake(c, f->sc->port, "/ws?access_token=not.a.token"), 401);
	tls_conn_free(c);
	f->passed++;
}

static void test_https_healthz(void **state)
{
	struct tls_fixture *f = *state;
	char *body = NULL;

	assert_int_equal(
	    tls_http_get(f->sc->port, f->cert_path, "/healthz", &body), 200);
	assert_non_null(body);
	free(body);
	assert_int_equal(
	    tls_http_get(f->sc->port, f->cert_path, "/metrics", &body), 200);
	assert_non_null(body);
	assert_non_null(strstr(body, "wsgate_"));
	free(body);
	f->passed++;
}

/* Plain HTTP and a plain WebSocket handshake to the TLS port get nothing
 * through, and the sidecar serves on. */
static void test_plain_text_to_the_tls_port_gets_nowhere(void **state)
{
	struct tls_fixture *f = *state;
	struct ws_client *ws = NULL;
	char *token = sidecar_token(f->sc, TLS_USER, 600);
	char path[2048];
	int status;

	assert_non_null(token);
	status = http_get(f->sc->port, "/healthz", NULL, NULL, IO_MS);
	print_message("  plain GET /healthz on the TLS port: %d\n", status);
	assert_true(status != 200);
	snprintf(path, sizeof(path), "/ws?access_token=%s", token);
	free(token);
	status = ws_client_connect(&ws, f->sc->port, path, NULL, IO_MS);
	print_message("  plain WebSocket handshake on the TLS port: %d\n",
	              status);
	assert_true(status != 101);
	assert_null(ws);
	assert_true(sidecar_running(f->sc, NULL));
	assert_int_equal(
	    tls_http_get(f->sc->port, f->cert_path, "/healthz", NULL), 200);
	f->passed++;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_wss_client_receives_its_event),
	    cmocka_unit_test(test_wss_refuses_a_bad_token),
	    cmocka_unit_test(test_https_healthz),
	    cmocka_unit_test(test_plain_text_to_the_tls_port_gets_nowhere),
	};
	int rc;

	signal(SIGPIPE, SIG_IGN);
	rc = cmocka_run_group_tests(tests, group_setup, group_teardown);
	nng_fini();
	return rc;
}
