/* audit_chain: HMAC chains of delivery rows and chain heads, and the key
 * file (see .h). */
#include "audit_chain.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int key_create(const char *path, char *err, size_t errlen)
{
	static const char hex[] = "0123456789abcdef";
	unsigned char rnd[32];
	char text[65 + 1];
	if (RAND_bytes(rnd, sizeof(rnd)) != 1) {
		snprintf(err, errlen, "%s: no randomness for a new key", path);
		return -1;
	}
	for (int i = 0; i < 32; i++) {
		text[2 * i] = hex[rnd[i] >> 4];
		text[2 * i + 1] = hex[rnd[i] & 15];
	}
	text[64] = '\n';
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
	if (fd < 0) {
		snprintf(err, errlen, "%s: cannot create: %s", path,
		         strerror(errno));
		return -1;
	}
	ssize_t n = write(fd, text, 65);
	if (n != 65 || fsync(fd) != 0) {
		snprintf(err, errlen, "%s: cannot write: %s", path,
		         strerror(errno));
		close(fd);
		return -1;
	}
	close(fd);
	return 0;
}

/* An HMAC-SHA256 context keyed with (k, len); NULL on failure. */
static EVP_MAC_CTX *hmac_new(const unsigned char *k, size_t len)
{
	EVP_MAC *hmac = EVP_MAC_fetch(NULL, "HMAC", NULL);
	EVP_MAC_CTX *ctx = hmac ? EVP_MAC_CTX_new(hmac) : NULL;
	EVP_MAC_free(hmac); /* the context keeps its own reference */
	OSSL_PARAM params[] = {
	    OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST,
	                                     (char *)"SHA256", 0),
	    OSSL_PARAM_construct_end(),
	};
	if (ctx && !EVP_MAC_init(ctx, k, len, params)) {
		EVP_MAC_CTX_free(ctx);
		ctx = NULL;
	}
	return ctx;
}

int audit_key_load(struct audit_key *key, const char *path, int create,
                   char *err, size_t errlen)
{
	if (create && access(path, F_OK) != 0 && errno == ENOENT &&
	    key_create(path, err, errlen))
		return -1;
	FILE *f = fopen(path, "rb");
	if (!f) {
		snprintf(err, errlen, "%s: cannot read the audit key: %s", path,
		         strerror(errno));
		return -1;
	}
	key->mac = NULL;
	key->len = fread(key->bytes, 1, sizeof(key->bytes), f);
	int too_long = key->len == sizeof(key->bytes) && fgetc(f) != EOF;
	fclose(f);
	while (key->len && (key->bytes[key->len - 1] == '\n' ||
	                    key->bytes[key->len - 1] == '\r'))
		key->len--;
	if (too_long || key->len == 0) {
		snprintf(err, errlen, "%s: audit key must be 1-%d bytes", path,
		         AUDIT_KEY_MAX - 1);
		return -1;
	}
	key->mac = hmac_new(key->bytes, key->len);
	if (!key->mac) {
		snprintf(err, errlen, "%s: cannot set up HMAC-SHA256", path);
		return -1;
	}
	return 0;
}

void audit_key_clear(struct audit_key *key)
{
	EVP_MAC_CTX_free(key->mac);
	key->mac = NULL;
}

/* One MAC being computed. Fields are gathered in buf and handed to
 * OpenSSL in one update per row (an update per field cost more than the
 * MAC of a typical row); a field too big for buf goes straight through,
 * so no field has a length limit. */
struct mac_run {
	EVP_MAC_CTX *ctx;
	EVP_MAC_CTX *own; /* made here for a key filled in by hand (tests) */
	int ok;
	size_t len;
	unsigned char buf[1024];
};

static void mac_flush(struct mac_run *m)
{
	m->ok =
	    m->ok && (m->len == 0 || EVP_MAC_update(m->ctx, m->buf, m->len));
	m->len = 0;
}

static void mac_put(struct mac_run *m, const void *x, size_t len)
{
	if (m->len + len > sizeof(m->buf)) {
		mac_flush(m);
		if (len > sizeof(m->buf)) {
			m->ok = m->ok && EVP_MAC_update(m->ctx, x, len);
			return;
		}
	}
	if (len)
		memcpy(m->buf + m->len, x, len);
	m->len += len;
}

static void mac_begin(struct mac_run *m, const struct audit_key *key,
                      const unsigned char prev[AUDIT_CHAIN_LEN])
{
	m->own = key->mac ? NULL : hmac_new(key->bytes, key->len);
	m->ctx = key->mac ? key->mac : m->own;
	m->len = 0;
	/* init with a NULL key: a fresh MAC under the loaded key */
	m->ok = m->ctx && EVP_MAC_init(m->ctx, NULL, 0, NULL);
	mac_put(m, prev, AUDIT_CHAIN_LEN);
}

/* f(x): 4-byte big-endian length, then x. */
static void mac_field(struct mac_run *m, const void *x, size_t len)
{
	unsigned char be[4] = {(unsigned char)(len >> 24),
	                       (unsigned char)(len >> 16),
	                       (unsigned char)(len >> 8), (unsigned char)len};
	mac_put(m, be, 4);
	mac_put(m, x, len);
}

static void mac_str(struct mac_run *m, const char *s)
{
	mac_field(m, s ? s : "", s ? strlen(s) : 0);
}

static void mac_int(struct mac_run *m, int64_t v)
{
	char num[24];
	int n = snprintf(num, sizeof(num), "%" PRId64, v);
	mac_field(m, num, (size_t)n);
}

static void mac_end(struct mac_run *m, unsigned char out[AUDIT_CHAIN_LEN])
{
	size_t outlen = AUDIT_CHAIN_LEN;
	mac_flush(m);
	m->ok = m->ok && EVP_MAC_final(m->ctx, out, &outlen, AUDIT_CHAIN_LEN);
	if (!m->ok)
		memset(out, 0, AUDIT_CHAIN_LEN); /* never matches a real MAC */
	EVP_MAC_CTX_free(m->own);
}

void audit_chain_next(const struct audit_key *key,
                      const unsigned char prev[AUDIT_CHAIN_LEN],
                      const struct audit_row *row,
                      unsigned char out[AUDIT_CHAIN_LEN])
{
	struct mac_run m;
	mac_begin(&m, key, prev);
	mac_int(&m, row->id);
	mac_str(&m, row->user_id);
	mac_int(&m, (int64_t)row->seq);
	mac_str(&m, row->event_id);
	mac_str(&m, row->conn_id);
	mac_str(&m, row->conn_user_id);
	mac_str(&m, row->status);
	mac_int(&m, row->at);
	mac_field(&m, row->payload_sha256, row->payload_sha256_len);
	mac_end(&m, out);
}

void audit_head_mac(const struct audit_key *key,
                    const unsigned char prev_mac[AUDIT_CHAIN_LEN],
                    const struct audit_head *head,
                    unsigned char out[AUDIT_CHAIN_LEN])
{
	struct mac_run m;
	mac_begin(&m, key, prev_mac);
	mac_str(&m, "head");
	mac_int(&m, head->n);
	mac_int(&m, head->at);
	mac_int(&m, head->id);
	mac_field(&m, head->chain, head->chain_len);
	mac_str(&m, head->reason);
	mac_end(&m, out);
}
