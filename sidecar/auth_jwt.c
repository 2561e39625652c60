/*
 * auth_jwt: JWT verification on OpenSSL and jansson (see auth_jwt.h).
 *
 * The key decides the algorithm, never the token: a verifier knows one
 * algorithm and refuses every token whose header names another. Checks run
 * cheapest-first and the claims are parsed only after the signature holds,
 * so unauthenticated JSON never reaches the claim logic.
 */
#include "auth_jwt.h"
#include "validate.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/obj_mac.h>
#include <openssl/pem.h>

#define SECRET_MIN    32
#define SECRET_MAX    (1024 * 1024) /* refuses e.g. /dev/zero by mistake */
#define SUB_MAX       256
#define JTI_MAX       128
#define ES256_SIG_LEN 64
#define HS256_MAC_LEN 32
/* The largest part of a token decodes to at most 3/4 of its length. */
#define DECODED_MAX (AUTH_JWT_MAX_TOKEN / 4 * 3 + 3)

_Static_assert(sizeof(((struct auth_jwt_claims *)0)->sub) == SUB_MAX + 1,
               "claims.sub holds SUB_MAX bytes and a NUL");
_Static_assert(sizeof(((struct auth_jwt_claims *)0)->jti) == JTI_MAX + 1,
               "claims.jti holds JTI_MAX bytes and a NUL");

/* One per configured key; immutable after auth_jwt_open. */
struct auth_jwt {
	enum auth_jwt_alg alg;
	unsigned char *secret; /* HS256 */
	size_t secret_len;
	EVP_PKEY *pkey; /* RS256, ES256 */
	char *issuer;   /* NULL: unchecked */
	char *audience; /* NULL: unchecked */
};

static const char *const alg_names[] = {"HS256", "RS256", "ES256"};

static const char *const reasons[] = {
    [AUTH_JWT_OK] = "ok",
    [AUTH_JWT_MISSING] = "missing_token",
    [AUTH_JWT_MALFORMED] = "malformed",
    [AUTH_JWT_WRONG_ALG] = "wrong_alg",
    [AUTH_JWT_BAD_SIGNATURE] = "bad_signature",
    [AUTH_JWT_EXPIRED] = "expired",
    [AUTH_JWT_NOT_YET_VALID] = "not_yet_valid",
    [AUTH_JWT_ISSUED_IN_FUTURE] = "issued_in_future",
    [AUTH_JWT_MISSING_SUB] = "missing_sub",
    [AUTH_JWT_MISSING_EXP] = "missing_exp",
    [AUTH_JWT_BAD_ISSUER] = "bad_issuer",
    [AUTH_JWT_BAD_AUDIENCE] = "bad_audience",
};

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
	if (err == NULL || errlen == 0)
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

/* --- base64url (RFC 4648 section 5, no padding) --- */

static int b64url_value(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '-')
		return 62;
	if (c == '_')
		return 63;
	return -1;
}

/* Strict: no padding, no stray characters, and unused trailing bits must be
 * zero, so that each byte string has exactly one accepted encoding. */
static int b64url_decode(const char *in, size_t len, unsigned char *out,
                         size_t cap, size_t *outlen)
{
	if (len % 4 == 1 || len / 4 * 3 + 2 > cap)
		return -1;
	size_t o = 0;
	uint32_t acc = 0;
	int bits = 0;
	for (size_t i = 0; i < len; i++) {
		int v = b64url_value((unsigned char)in[i]);
		if (v < 0)
			return -1;
		acc = (acc << 6) | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			out[o++] = (unsigned char)(acc >> bits);
			acc &= (1u << bits) - 1;
		}
	}
	if (acc != 0)
		return -1;
	*outlen = o;
	return 0;
}

/* One base64url part holding a JSON object; NULL if it is anything else.
 * Duplicate keys are refused: two "sub"s must not mean one thing to us and
 * another to whoever minted the token. */
static json_t *decode_object(const char *in, size_t len, unsigned char *buf,
                             size_t cap)
{
	size_t n;
	if (len == 0 || b64url_decode(in, len, buf, cap, &n) != 0)
		return NULL;
	json_t *j =
	    json_loadb((const char *)buf, n, JSON_REJECT_DUPLICATES, NULL);
	if (j != NULL && !json_is_object(j)) {
		json_decref(j);
		return NULL;
	}
	return j;
}

/* --- key loading --- */

/* The file's bytes with trailing \r/\n removed (DESIGN.md, "Secret file"). */
unsigned char *auth_jwt_read_secret(const char *path, size_t *len, char *err,
                                    size_t errlen)
{
	FILE *f = fopen(path, "rb");
	if (f == NULL) {
		set_err(err, errlen, "jwt secret file %s: %s", path,
		        strerror(errno));
		return NULL;
	}
	/* One spare byte tells a too-large file. */
	unsigned char *buf = malloc(SECRET_MAX + 1);
	if (buf == NULL) {
		fclose(f);
		set_err(err, errlen, "jwt secret file %s: out of memory", path);
		return NULL;
	}
	size_t n = fread(buf, 1, SECRET_MAX + 1, f);
	int rerr = ferror(f);
	fclose(f);
	if (rerr || n > SECRET_MAX) {
		OPENSSL_cleanse(buf, n);
		free(buf);
		set_err(err, errlen, "jwt secret file %s: %s", path,
		        rerr ? "read error" : "larger than 1 MiB");
		return NULL;
	}
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
		n--;
	/* Copied rather than realloc'd so that no uncleansed copy of the key
	 * is left in freed memory. */
	unsigned char *out = malloc(n + 1);
	if (out != NULL) {
		memcpy(out, buf, n);
		out[n] = '\0';
		*len = n;
	} else {
		set_err(err, errlen, "jwt secret file %s: out of memory", path);
	}
	OPENSSL_cleanse(buf, n);
	free(buf);
	return out;
}

static int load_secret(struct auth_jwt *v, const char *path, char *err,
                       size_t errlen)
{
	size_t n;
	unsigned char *secret = auth_jwt_read_secret(path, &n, err, errlen);
	if (secret == NULL)
		return -1;
	if (n < SECRET_MIN) {
		OPENSSL_cleanse(secret, n);
		free(secret);
		set_err(err, errlen,
		        "jwt secret file %s: %zu bytes, at least %d required",
		        path, n, SECRET_MIN);
		return -1;
	}
	v->secret = secret;
	v->secret_len = n;
	v->alg = AUTH_JWT_HS256;
	return 0;
}

/* The key type picks the algorithm: RSA -> RS256, EC P-256 -> ES256. */
static int load_public_key(struct auth_jwt *v, const char *path, char *err,
                           size_t errlen)
{
	FILE *f = fopen(path, "r");
	if (f == NULL) {
		set_err(err, errlen, "jwt public key %s: %s", path,
		        strerror(errno));
		return -1;
	}
	EVP_PKEY *pkey = PEM_read_PUBKEY(f, NULL, NULL, NULL);
	fclose(f);
	ERR_clear_error();
	if (pkey == NULL) {
		set_err(err, errlen,
		        "jwt public key %s: not a PEM public key "
		        "(-----BEGIN PUBLIC KEY-----)",
		        path);
		return -1;
	}
	char group[64] = "";
	if (EVP_PKEY_get_base_id(pkey) == EVP_PKEY_RSA) {
		v->alg = AUTH_JWT_RS256;
	} else if (EVP_PKEY_get_base_id(pkey) == EVP_PKEY_EC &&
	           EVP_PKEY_get_group_name(pkey, group, sizeof(group), NULL) &&
	           strcmp(group, SN_X9_62_prime256v1) == 0) {
		v->alg = AUTH_JWT_ES256;
	} else {
		ERR_clear_error();
		set_err(err, errlen,
		        "jwt public key %s: unsupported key type %s%s%s (need "
		        "RSA for RS256 or EC P-256 for ES256)",
		        path, EVP_PKEY_get0_type_name(pkey),
		        group[0] ? " " : "", group);
		EVP_PKEY_free(pkey);
		return -1;
	}
	v->pkey = pkey;
	return 0;
}

int auth_jwt_open(struct auth_jwt **out, const struct auth_jwt_config *cfg,
                  char *err, size_t errlen)
{
	*out = NULL;
	bool has_secret = cfg->secret_file != NULL;
	bool has_pub = cfg->public_key_file != NULL;
	if (has_secret == has_pub) {
		set_err(err, errlen,
		        "jwt: exactly one of a secret file or a public key "
		        "file is required");
		return -1;
	}
	struct auth_jwt *v = calloc(1, sizeof(*v));
	if (v == NULL) {
		set_err(err, errlen, "jwt: out of memory");
		return -1;
	}
	int rc = has_secret
	             ? load_secret(v, cfg->secret_file, err, errlen)
	             : load_public_key(v, cfg->public_key_file, err, errlen);
	if (rc != 0) {
		free(v);
		return -1;
	}
	if ((cfg->issuer != NULL &&
	     (v->issuer = strdup(cfg->issuer)) == NULL) ||
	    (cfg->audience != NULL &&
	     (v->audience = strdup(cfg->audience)) == NULL)) {
		auth_jwt_close(v);
		set_err(err, errlen, "jwt: out of memory");
		return -1;
	}
	*out = v;
	return 0;
}

void auth_jwt_close(struct auth_jwt *v)
{
	if (v == NULL)
		return;
	if (v->secret != NULL) {
		OPENSSL_cleanse(v->secret, v->secret_len);
		free(v->secret);
	}
	EVP_PKEY_free(v->pkey);
	free(v->issuer);
	free(v->audience);
	free(v);
}

enum auth_jwt_alg auth_jwt_algorithm(const struct auth_jwt *v)
{
	return v->alg;
}

const char *auth_jwt_result_reason(enum auth_jwt_result r)
{
	if ((size_t)r >= sizeof(reasons) / sizeof(reasons[0]) ||
	    reasons[r] == NULL)
		return "unknown";
	return reasons[r];
}

/* --- verification --- */

static bool json_string_equals(const json_t *j, const char *s)
{
	size_t n = strlen(s);
	return json_is_string(j) && json_string_length(j) == n &&
	       memcmp(json_string_value(j), s, n) == 0;
}

/* A NumericDate: an integer, or a real with its fraction dropped; clamped
 * to int64 so that absurd values compare as far past or far future. */
static bool numeric_date(const json_t *j, int64_t *out)
{
	if (json_is_integer(j)) {
		*out = (int64_t)json_integer_value(j);
		return true;
	}
	if (json_is_real(j)) {
		double d = json_real_value(j);
		if (d >= 9.2e18)
			*out = INT64_MAX;
		else if (d <= -9.2e18)
			*out = INT64_MIN;
		else
			*out = (int64_t)d;
		return true;
	}
	return false;
}

static enum auth_jwt_result check_header(const struct auth_jwt *v,
                                         const json_t *hdr)
{
	if (!json_string_equals(json_object_get(hdr, "alg"), alg_names[v->alg]))
		return AUTH_JWT_WRONG_ALG;
	/* We implement no JWS extensions, so any "crit" one is unmet. */
	if (json_object_get(hdr, "crit") != NULL)
		return AUTH_JWT_MALFORMED;
	return AUTH_JWT_OK;
}

static enum auth_jwt_result
verify_hs256(const struct auth_jwt *v, const unsigned char *input,
             size_t input_len, const unsigned char *sig, size_t sig_len)
{
	unsigned char mac[EVP_MAX_MD_SIZE];
	unsigned int mac_len = 0;
	if (HMAC(EVP_sha256(), v->secret, (int)v->secret_len, input, input_len,
	         mac, &mac_len) == NULL) {
		ERR_clear_error();
		return AUTH_JWT_BAD_SIGNATURE;
	}
	if (sig_len != HS256_MAC_LEN || mac_len != HS256_MAC_LEN ||
	    CRYPTO_memcmp(mac, sig, HS256_MAC_LEN) != 0)
		return AUTH_JWT_BAD_SIGNATURE;
	return AUTH_JWT_OK;
}

/* RS256 verifies sig as is; ES256 first turns the JWS form (R||S, 32 bytes
 * each) into the DER ECDSA-Sig-Value that OpenSSL expects. */
static enum auth_jwt_result
verify_pkey(const struct auth_jwt *v, const unsigned char *input,
            size_t input_len, const unsigned char *sig, size_t sig_len)
{
	unsigned char *der = NULL;
	ECDSA_SIG *es = NULL;
	EVP_MD_CTX *ctx = NULL;
	int ok = 0;

	if (v->alg == AUTH_JWT_ES256) {
		if (sig_len != ES256_SIG_LEN)
			return AUTH_JWT_BAD_SIGNATURE;
		BIGNUM *r = BN_bin2bn(sig, ES256_SIG_LEN / 2, NULL);
		BIGNUM *s =
		    BN_bin2bn(sig + ES256_SIG_LEN / 2, ES256_SIG_LEN / 2, NULL);
		es = ECDSA_SIG_new();
		if (r == NULL || s == NULL || es == NULL ||
		    !ECDSA_SIG_set0(es, r, s)) {
			BN_free(r);
			BN_free(s);
			goto out;
		}
		int der_len = i2d_ECDSA_SIG(es, &der);
		if (der_len <= 0)
			goto out;
		sig = der;
		sig_len = (size_t)der_len;
	}
	ctx = EVP_MD_CTX_new();
	if (ctx == NULL ||
	    EVP_DigestVerifyInit(ctx, NULL, EVP_sha256(), NULL, v->pkey) != 1)
		goto out;
	ok = EVP_DigestVerify(ctx, sig, sig_len, input, input_len) == 1;
out:
	EVP_MD_CTX_free(ctx);
	OPENSSL_free(der);
	ECDSA_SIG_free(es);
	/* A failed verify leaves errors on this thread's queue: drop them. */
	ERR_clear_error();
	return ok ? AUTH_JWT_OK : AUTH_JWT_BAD_SIGNATURE;
}

static bool audience_matches(const json_t *aud, const char *want)
{
	if (json_is_string(aud))
		return json_string_equals(aud, want);
	if (!json_is_array(aud))
		return false;
	size_t i;
	const json_t *item;
	json_array_foreach(aud, i, item)
	{
		if (json_string_equals(item, want))
			return true;
	}
	return false;
}

static enum auth_jwt_result check_claims(const struct auth_jwt *v,
                                         const json_t *body, int64_t now_s,
                                         struct auth_jwt_claims *claims)
{
	int64_t exp, nbf, iat;
	const json_t *j = json_object_get(body, "exp");
	if (j == NULL || !numeric_date(j, &exp))
		return AUTH_JWT_MISSING_EXP;

	j = json_object_get(body, "sub");
	size_t sub_len = json_string_length(j); /* 0 for a non-string */
	if (!json_is_string(j) || sub_len == 0 || sub_len > SUB_MAX ||
	    !validate_printable_utf8(json_string_value(j), sub_len))
		return AUTH_JWT_MISSING_SUB;
	const json_t *sub = j;

	/* jti ends up in logs and the database: same rules as an id. */
	const json_t *jti = json_object_get(body, "jti");
	if (jti != NULL &&
	    (!json_is_string(jti) || json_string_length(jti) > JTI_MAX ||
	     !validate_printable_utf8(json_string_value(jti),
	                              json_string_length(jti))))
		return AUTH_JWT_MALFORMED;

	if (v->issuer != NULL &&
	    !json_string_equals(json_object_get(body, "iss"), v->issuer))
		return AUTH_JWT_BAD_ISSUER;
	if (v->audience != NULL &&
	    !audience_matches(json_object_get(body, "aud"), v->audience))
		return AUTH_JWT_BAD_AUDIENCE;

	/* Ordered so that no subtraction can overflow, whatever the claims
	 * hold. */
	if (now_s > INT64_MIN + AUTH_JWT_LEEWAY_S &&
	    now_s - AUTH_JWT_LEEWAY_S >= exp)
		return AUTH_JWT_EXPIRED;
	j = json_object_get(body, "nbf");
	if (j != NULL) {
		if (!numeric_date(j, &nbf))
			return AUTH_JWT_MALFORMED;
		if (nbf > INT64_MIN + AUTH_JWT_LEEWAY_S &&
		    nbf - AUTH_JWT_LEEWAY_S > now_s)
			return AUTH_JWT_NOT_YET_VALID;
	}
	j = json_object_get(body, "iat");
	if (j != NULL) {
		if (!numeric_date(j, &iat))
			return AUTH_JWT_MALFORMED;
		if (iat > INT64_MIN + AUTH_JWT_LEEWAY_S &&
		    iat - AUTH_JWT_LEEWAY_S > now_s)
			return AUTH_JWT_ISSUED_IN_FUTURE;
	}

	if (claims != NULL) {
		memcpy(claims->sub, json_string_value(sub), sub_len);
		claims->sub[sub_len] = '\0';
		if (jti != NULL) {
			size_t n = json_string_length(jti);
			memcpy(claims->jti, json_string_value(jti), n);
			claims->jti[n] = '\0';
		}
		claims->exp = exp;
	}
	return AUTH_JWT_OK;
}

enum auth_jwt_result auth_jwt_verify(const struct auth_jwt *v,
                                     const char *token, size_t len,
                                     int64_t now_s,
                                     struct auth_jwt_claims *claims)
{
	if (claims != NULL)
		memset(claims, 0, sizeof(*claims));
	if (token == NULL || len == 0)
		return AUTH_JWT_MISSING;
	if (len > AUTH_JWT_MAX_TOKEN)
		return AUTH_JWT_MALFORMED;

	/* header.payload.signature: exactly two dots. */
	const char *end = token + len;
	const char *dot1 = memchr(token, '.', len);
	if (dot1 == NULL)
		return AUTH_JWT_MALFORMED;
	const char *dot2 = memchr(dot1 + 1, '.', (size_t)(end - dot1 - 1));
	if (dot2 == NULL || memchr(dot2 + 1, '.', (size_t)(end - dot2 - 1)))
		return AUTH_JWT_MALFORMED;

	/* One buffer, reused part by part: no allocation for the bytes. */
	unsigned char buf[DECODED_MAX];
	json_t *hdr =
	    decode_object(token, (size_t)(dot1 - token), buf, sizeof(buf));
	if (hdr == NULL)
		return AUTH_JWT_MALFORMED;
	enum auth_jwt_result r = check_header(v, hdr);
	json_decref(hdr);
	if (r != AUTH_JWT_OK)
		return r;

	size_t sig_len;
	if (b64url_decode(dot2 + 1, (size_t)(end - dot2 - 1), buf, sizeof(buf),
	                  &sig_len) != 0)
		return AUTH_JWT_MALFORMED;
	const unsigned char *input = (const unsigned char *)token;
	size_t input_len = (size_t)(dot2 - token);
	r = v->alg == AUTH_JWT_HS256
	        ? verify_hs256(v, input, input_len, buf, sig_len)
	        : verify_pkey(v, input, input_len, buf, sig_len);
	if (r != AUTH_JWT_OK)
		return r;

	json_t *body = decode_object(dot1 + 1, (size_t)(dot2 - dot1 - 1), buf,
	                             sizeof(buf));
	if (body == NULL)
		return AUTH_JWT_MALFORMED;
	r = check_claims(v, body, now_s, claims);
	json_decref(body);
	return r;
}
