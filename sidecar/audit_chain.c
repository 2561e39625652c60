/* audit_chain: HMAC chain of delivery rows and its key file (see .h). */
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
	EVP_MAC *hmac = EVP_MAC_fetch(NULL, "HMAC", NULL);
	EVP_MAC_CTX *ctx = hmac ? EVP_MAC_CTX_new(hmac) : NULL;
	EVP_MAC_free(hmac);
	OSSL_PARAM params[] = {
	    OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST,
	                                     (char *)"SHA256", 0),
	    OSSL_PARAM_construct_end(),
	};
	if (!ctx || !EVP_MAC_init(ctx, key->bytes, key->len, params)) {
		EVP_MAC_CTX_free(ctx);
		snprintf(err, errlen, "%s: cannot set up HMAC-SHA256", path);
		return -1;
	}
	key->mac = ctx;
	return 0;
}

void audit_key_clear(struct audit_key *key)
{
	EVP_MAC_CTX_free(key->mac);
	key->mac = NULL;
}

static unsigned char *put_field(unsigned char *p, const char *s, size_t len)
{
	p[0] = (unsigned char)(len >> 24);
	p[1] = (unsigned char)(len >> 16);
	p[2] = (unsigned char)(len >> 8);
	p[3] = (unsigned char)len;
	memcpy(p + 4, s, len);
	return p + 4 + len;
}

static unsigned char *put_str(unsigned char *p, const char *s)
{
	return put_field(p, s, strlen(s));
}

static unsigned char *put_int(unsigned char *p, int64_t v)
{
	char num[24];
	int n = snprintf(num, sizeof(num), "%" PRId64, v);
	return put_field(p, num, (size_t)n);
}

void audit_chain_next(const struct audit_key *key,
                      const unsigned char prev[AUDIT_CHAIN_LEN],
                      const struct audit_row *row,
                      unsigned char out[AUDIT_CHAIN_LEN])
{
	/* Ids are at most 256 bytes and status a short word. A longer string
	 * (never written by the sidecar) counts as empty: the MAC still
	 * depends on the key, so such a row cannot be forged either. */
	unsigned char buf[AUDIT_CHAIN_LEN + 8 * 4 + 6 * 300 + 3 * 24];
	unsigned char *p = buf;
	const char *strs[] = {row->user_id, row->event_id, row->conn_id,
	                      row->conn_user_id, row->status};
	for (int i = 0; i < 5; i++)
		if (strlen(strs[i]) > 300)
			strs[i] = "";
	memcpy(p, prev, AUDIT_CHAIN_LEN);
	p += AUDIT_CHAIN_LEN;
	p = put_int(p, row->id);
	p = put_str(p, strs[0]);
	p = put_int(p, (int64_t)row->seq);
	p = put_str(p, strs[1]);
	p = put_str(p, strs[2]);
	p = put_str(p, strs[3]);
	p = put_str(p, strs[4]);
	p = put_int(p, row->at);
	size_t outlen = AUDIT_CHAIN_LEN;
	EVP_MAC_CTX *ctx = key->mac;
	int ok;
	if (ctx) /* init with a NULL key: a fresh MAC under the loaded key */
		ok = EVP_MAC_init(ctx, NULL, 0, NULL) &&
		     EVP_MAC_update(ctx, buf, (size_t)(p - buf)) &&
		     EVP_MAC_final(ctx, out, &outlen, AUDIT_CHAIN_LEN);
	else /* a key filled in by hand (tests) */
		ok = EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, key->bytes,
		               key->len, buf, (size_t)(p - buf), out,
		               AUDIT_CHAIN_LEN, &outlen) != NULL;
	if (!ok)
		memset(out, 0, AUDIT_CHAIN_LEN); /* never matches a real row */
}
