/*
 * jwt_mint: JWT signing (see jwt_mint.h). The mirror of sidecar/auth_jwt.c:
 * it signs whatever it is given, so that tests can build the bad tokens the
 * verifier must refuse.
 */
#include "jwt_mint.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#define ES256_HALF    32
#define JTI_RAW_BYTES 16

static const char b64url_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* Appends the unpadded base64url of in[0..len) at out; returns the number
 * of characters written (out must hold len / 3 * 4 + 4). */
static size_t b64url_encode(const unsigned char *in, size_t len, char *out)
{
	size_t o = 0, i = 0;
	for (; i + 3 <= len; i += 3) {
		uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 |
		             in[i + 2];
		out[o++] = b64url_alphabet[v >> 18];
		out[o++] = b64url_alphabet[(v >> 12) & 63];
		out[o++] = b64url_alphabet[(v >> 6) & 63];
		out[o++] = b64url_alphabet[v & 63];
	}
	if (len - i == 1) {
		uint32_t v = (uint32_t)in[i] << 16;
		out[o++] = b64url_alphabet[v >> 18];
		out[o++] = b64url_alphabet[(v >> 12) & 63];
	} else if (len - i == 2) {
		uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
		out[o++] = b64url_alphabet[v >> 18];
		out[o++] = b64url_alphabet[(v >> 12) & 63];
		out[o++] = b64url_alphabet[(v >> 6) & 63];
	}
	return o;
}

static size_t b64url_len(size_t len)
{
	return len / 3 * 4 + 4;
}

/* EVP_DigestSign with SHA-256 into a malloc'd buffer. */
static unsigned char *digest_sign(EVP_PKEY *pkey, const char *input,
                                  size_t input_len, size_t *sig_len)
{
	unsigned char *sig = NULL;
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	if (ctx == NULL ||
	    EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, pkey) != 1 ||
	    EVP_DigestSign(ctx, NULL, sig_len, (const unsigned char *)input,
	                   input_len) != 1 ||
	    (sig = malloc(*sig_len)) == NULL ||
	    EVP_DigestSign(ctx, sig, sig_len, (const unsigned char *)input,
	                   input_len) != 1) {
		free(sig);
		sig = NULL;
	}
	EVP_MD_CTX_free(ctx);
	return sig;
}

/* JWS wants ES256 as R||S, 32 bytes each; OpenSSL signs DER. */
static int es256_der_to_raw(const unsigned char *der, size_t der_len,
                            unsigned char raw[2 * ES256_HALF])
{
	const unsigned char *p = der;
	ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &p, (long)der_len);
	if (es == NULL)
		return -1;
	int ok =
	    BN_bn2binpad(ECDSA_SIG_get0_r(es), raw, ES256_HALF) == ES256_HALF &&
	    BN_bn2binpad(ECDSA_SIG_get0_s(es), raw + ES256_HALF, ES256_HALF) ==
	        ES256_HALF;
	ECDSA_SIG_free(es);
	return ok ? 0 : -1;
}

/* The signature of input under alg, into sig (at least 64 bytes) unless it
 * is an RSA one, which comes back malloc'd in *rsa_sig. */
static int sign(const char *alg, const char *input, size_t input_len,
                const void *secret, size_t secret_len, EVP_PKEY *pkey,
                unsigned char *sig, size_t *sig_len, unsigned char **rsa_sig)
{
	*rsa_sig = NULL;
	if (strcmp(alg, "none") == 0) {
		*sig_len = 0;
		return 0;
	}
	if (strcmp(alg, "HS256") == 0) {
		static const unsigned char empty[1];
		unsigned int n = 0;
		if (HMAC(EVP_sha256(), secret ? secret : empty, (int)secret_len,
		         (const unsigned char *)input, input_len, sig,
		         &n) == NULL)
			return -1;
		*sig_len = n;
		return 0;
	}
	if (pkey == NULL)
		return -1;
	if (strcmp(alg, "RS256") == 0) {
		*rsa_sig = digest_sign(pkey, input, input_len, sig_len);
		return *rsa_sig ? 0 : -1;
	}
	if (strcmp(alg, "ES256") == 0) {
		size_t der_len;
		unsigned char *der =
		    digest_sign(pkey, input, input_len, &der_len);
		int rc = der ? es256_der_to_raw(der, der_len, sig) : -1;
		free(der);
		*sig_len = 2 * ES256_HALF;
		return rc;
	}
	return -1;
}

char *jwt_mint_raw(const char *header_json, const char *claims_json,
                   const char *alg, const void *secret, size_t secret_len,
                   EVP_PKEY *pkey)
{
	if (header_json == NULL || claims_json == NULL || alg == NULL)
		return NULL;
	size_t hlen = strlen(header_json), clen = strlen(claims_json);
	/* Room for the signing input, a dot, and an RSA-16384 signature. */
	size_t cap =
	    b64url_len(hlen) + 1 + b64url_len(clen) + 1 + b64url_len(2048) + 1;
	char *tok = malloc(cap);
	if (tok == NULL)
		return NULL;
	size_t n = b64url_encode((const unsigned char *)header_json, hlen, tok);
	tok[n++] = '.';
	n += b64url_encode((const unsigned char *)claims_json, clen, tok + n);

	unsigned char sig[EVP_MAX_MD_SIZE > 64 ? EVP_MAX_MD_SIZE : 64];
	unsigned char *rsa_sig;
	size_t sig_len;
	if (sign(alg, tok, n, secret, secret_len, pkey, sig, &sig_len,
	         &rsa_sig) != 0 ||
	    sig_len > 2048) {
		free(rsa_sig);
		free(tok);
		ERR_clear_error();
		return NULL;
	}
	tok[n++] = '.';
	n += b64url_encode(rsa_sig ? rsa_sig : sig, sig_len, tok + n);
	tok[n] = '\0';
	free(rsa_sig);
	return tok;
}

char *jwt_mint_hs256(const void *secret, size_t secret_len, const char *user,
                     int64_t now_s, int64_t ttl_s)
{
	if (user == NULL)
		return NULL;
	unsigned char raw[JTI_RAW_BYTES];
	char jti[2 * JTI_RAW_BYTES + 1];
	if (RAND_bytes(raw, sizeof(raw)) != 1)
		return NULL;
	for (size_t i = 0; i < sizeof(raw); i++)
		snprintf(jti + 2 * i, 3, "%02x", raw[i]);

	/* json_pack refuses a user that is not valid UTF-8. */
	json_t *claims = json_pack("{s:s, s:I, s:I, s:s}", "sub", user, "iat",
	                           (json_int_t)now_s, "exp",
	                           (json_int_t)(now_s + ttl_s), "jti", jti);
	if (claims == NULL)
		return NULL;
	char *claims_json = json_dumps(claims, JSON_COMPACT);
	json_decref(claims);
	if (claims_json == NULL)
		return NULL;
	char *tok =
	    jwt_mint_raw("{\"alg\":\"HS256\",\"typ\":\"JWT\"}", claims_json,
	                 "HS256", secret, secret_len, NULL);
	free(claims_json);
	return tok;
}
