/*
 * fuzz_jwt: tokens as browsers present them, against every kind of verifier.
 *
 * Keys are made once in LLVMFuzzerInitialize: a fixed HS256 secret (so that
 * seed tokens can carry valid MACs), an RSA and a P-256 key pair. RSA-1024,
 * not 2048: signing for the fuzzer dominates the time per input, and the
 * key size changes no code path of the verifier. The key files live in a
 * mkdtemp directory only until the verifiers have loaded them. Every input is
 * verified by four verifiers: HS256, HS256 with issuer and audience, RS256 and
 * ES256.
 *
 * Random bytes never get past a signature, so the first input byte selects
 * how the rest becomes a token; the other modes sign for the fuzzer, which
 * lets it reach the header and claims checks:
 *
 *   bits 0-1  signer: 0 HS256 secret, 1 RSA key, 2 EC key, 3 HMAC keyed
 *             with the RSA public key's PEM (the HS/RS confusion attack)
 *   bits 2-3  shape: 0 the rest is the token, verbatim;
 *             1 the rest is "header.payload", the harness appends ".sig";
 *             2 the rest is header JSON, NUL, claims JSON: encoded, signed;
 *             3 the rest is claims JSON, under the signer's own header
 *   bits 4-5  clock: 0 a fixed now, 1 INT64_MIN, 2 INT64_MAX, 3 the next
 *             8 bytes (big-endian)
 *   bit 6     claims pointer NULL
 *
 * Invariants beyond the sanitizers: no token is accepted by verifiers of
 * two algorithms, the issuer/audience verifier accepts only what the plain
 * one does, a key never verifies what another key signed, and accepted
 * claims are within their limits.
 */
#include <assert.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>

#include "auth_jwt.h"
#include "validate.h"

#define FUZZ_NOW 1700000000LL

/* 40 bytes; the file adds "\r\n", which auth_jwt_open strips. */
static const char fuzz_secret[] = "wsgate-fuzz-secret-0123456789abcdefghijk";
static const char fuzz_issuer[] = "https://auth.example";
static const char fuzz_audience[] = "wsgate";

enum fuzz_signer { SIGN_HS, SIGN_RSA, SIGN_EC, SIGN_HS_PUBKEY };
enum fuzz_verifier { V_HS, V_HS_CLAIMS, V_RS, V_ES, V_COUNT };

/* Everything made once: signing keys and the verifiers under test. */
static struct {
	EVP_PKEY *rsa;
	EVP_PKEY *ec;
	unsigned char *rsa_pem; /* RSA public key PEM, trailing \n removed */
	size_t rsa_pem_len;
	struct auth_jwt *v[V_COUNT];
} fx;

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void die(const char *what)
{
	fprintf(stderr, "fuzz_jwt: %s\n", what);
	abort();
}

static void write_public_pem(const char *path, EVP_PKEY *pkey)
{
	FILE *f = fopen(path, "w");
	if (f == NULL || PEM_write_PUBKEY(f, pkey) != 1 || fclose(f) != 0)
		die("cannot write a public key file");
}

static struct auth_jwt *open_verifier(const char *secret_file,
                                      const char *public_key_file,
                                      const char *issuer, const char *audience)
{
	struct auth_jwt_config cfg = {secret_file, public_key_file, issuer,
	                              audience};
	struct auth_jwt *v = NULL;
	char err[256] = "";
	if (auth_jwt_open(&v, &cfg, err, sizeof(err)) != 0) {
		fprintf(stderr, "fuzz_jwt: auth_jwt_open: %s\n", err);
		abort();
	}
	return v;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	char dir[] = "/tmp/wsgate-fuzz-jwt-XXXXXX";
	char secret_path[64], rsa_path[64], ec_path[64];
	if (mkdtemp(dir) == NULL)
		die("mkdtemp failed");
	snprintf(secret_path, sizeof(secret_path), "%s/secret", dir);
	snprintf(rsa_path, sizeof(rsa_path), "%s/rsa.pem", dir);
	snprintf(ec_path, sizeof(ec_path), "%s/ec.pem", dir);

	FILE *f = fopen(secret_path, "wb");
	if (f == NULL || fprintf(f, "%s\r\n", fuzz_secret) < 0 ||
	    fclose(f) != 0)
		die("cannot write the secret file");

	fx.rsa = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)1024);
	fx.ec = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	if (fx.rsa == NULL || fx.ec == NULL)
		die("key generation failed");
	write_public_pem(rsa_path, fx.rsa);
	write_public_pem(ec_path, fx.ec);

	f = fopen(rsa_path, "rb");
	fx.rsa_pem = malloc(8192);
	if (f == NULL || fx.rsa_pem == NULL)
		die("cannot read the RSA public key file");
	fx.rsa_pem_len = fread(fx.rsa_pem, 1, 8192, f);
	fclose(f);
	while (fx.rsa_pem_len > 0 && fx.rsa_pem[fx.rsa_pem_len - 1] == '\n')
		fx.rsa_pem_len--;

	fx.v[V_HS] = open_verifier(secret_path, NULL, NULL, NULL);
	fx.v[V_HS_CLAIMS] =
	    open_verifier(secret_path, NULL, fuzz_issuer, fuzz_audience);
	fx.v[V_RS] = open_verifier(NULL, rsa_path, NULL, NULL);
	fx.v[V_ES] = open_verifier(NULL, ec_path, NULL, NULL);

	/* The verifiers hold the keys now; leave nothing behind. */
	unlink(secret_path);
	unlink(rsa_path);
	unlink(ec_path);
	rmdir(dir);
	return 0;
}

/* --- token building --- */

/* A growable byte string; the token is copied to an exact-size block
 * before verification so that ASan sees any read past its end. */
struct buf {
	char *p;
	size_t len, cap;
};

static void buf_add(struct buf *b, const void *data, size_t len)
{
	if (b->len + len > b->cap) {
		size_t cap = b->cap ? b->cap : 256;
		while (cap < b->len + len)
			cap *= 2;
		b->p = realloc(b->p, cap);
		if (b->p == NULL)
			die("out of memory");
		b->cap = cap;
	}
	if (len > 0)
		memcpy(b->p + b->len, data, len);
	b->len += len;
}

static void buf_add_b64url(struct buf *b, const unsigned char *in, size_t len)
{
	static const char abc[] =
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstu"
	    "vwxyz0123456789-_";
	char out[4];
	size_t i = 0;
	for (; i + 3 <= len; i += 3) {
		uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 |
		             in[i + 2];
		out[0] = abc[v >> 18];
		out[1] = abc[(v >> 12) & 63];
		out[2] = abc[(v >> 6) & 63];
		out[3] = abc[v & 63];
		buf_add(b, out, 4);
	}
	if (len - i == 1) {
		uint32_t v = (uint32_t)in[i] << 16;
		out[0] = abc[v >> 18];
		out[1] = abc[(v >> 12) & 63];
		buf_add(b, out, 2);
	} else if (len - i == 2) {
		uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
		out[0] = abc[v >> 18];
		out[1] = abc[(v >> 12) & 63];
		out[2] = abc[(v >> 6) & 63];
		buf_add(b, out, 3);
	}
}

static void sign_pkey(EVP_PKEY *pkey, const void *input, size_t len,
                      unsigned char *sig, size_t *sig_len)
{
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	size_t n = 512;
	if (ctx == NULL ||
	    EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, pkey) != 1 ||
	    EVP_DigestSign(ctx, sig, &n, input, len) != 1)
		die("signing failed");
	EVP_MD_CTX_free(ctx);
	*sig_len = n;
}

/* Appends "." and the signature of b's bytes by the signer. */
static void buf_sign(struct buf *b, enum fuzz_signer signer)
{
	unsigned char sig[512];
	size_t sig_len = 0;
	unsigned int mac_len = 0;

	switch (signer) {
	case SIGN_HS:
	case SIGN_HS_PUBKEY: {
		const void *key = signer == SIGN_HS ? (const void *)fuzz_secret
		                                    : (const void *)fx.rsa_pem;
		size_t key_len =
		    signer == SIGN_HS ? strlen(fuzz_secret) : fx.rsa_pem_len;
		if (HMAC(EVP_sha256(), key, (int)key_len,
		         (const unsigned char *)b->p, b->len, sig,
		         &mac_len) == NULL)
			die("HMAC failed");
		sig_len = mac_len;
		break;
	}
	case SIGN_RSA:
		sign_pkey(fx.rsa, b->p, b->len, sig, &sig_len);
		break;
	case SIGN_EC: {
		/* JWS wants R||S, OpenSSL gives DER. */
		unsigned char der[128];
		size_t der_len = 0;
		sign_pkey(fx.ec, b->p, b->len, der, &der_len);
		const unsigned char *p = der;
		ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &p, (long)der_len);
		if (es == NULL ||
		    BN_bn2binpad(ECDSA_SIG_get0_r(es), sig, 32) != 32 ||
		    BN_bn2binpad(ECDSA_SIG_get0_s(es), sig + 32, 32) != 32)
			die("ECDSA signature conversion failed");
		ECDSA_SIG_free(es);
		sig_len = 64;
		break;
	}
	}
	buf_add(b, ".", 1);
	buf_add_b64url(b, sig, sig_len);
}

static const char *signer_alg(enum fuzz_signer signer)
{
	switch (signer) {
	case SIGN_RSA:
		return "RS256";
	case SIGN_EC:
		return "ES256";
	default:
		return "HS256";
	}
}

/* --- the test --- */

static void check_claims(enum auth_jwt_result r,
                         const struct auth_jwt_claims *c, int64_t now)
{
	if (r != AUTH_JWT_OK || c == NULL)
		return;
	size_t sub_len = strnlen(c->sub, sizeof(c->sub));
	size_t jti_len = strnlen(c->jti, sizeof(c->jti));
	assert(sub_len >= 1 && sub_len < sizeof(c->sub));
	assert(validate_printable_utf8(c->sub, sub_len));
	assert(jti_len < sizeof(c->jti));
	assert(validate_printable_utf8(c->jti, jti_len));
	if (now > INT64_MIN + AUTH_JWT_LEEWAY_S)
		assert(c->exp > now - AUTH_JWT_LEEWAY_S);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	uint8_t mode = data[0];
	enum fuzz_signer signer = (enum fuzz_signer)(mode & 3);
	unsigned shape = (mode >> 2) & 3;
	unsigned clock = (mode >> 4) & 3;
	bool null_claims = (mode >> 6) & 1;
	data++;
	size--;

	int64_t now = FUZZ_NOW;
	if (clock == 1) {
		now = INT64_MIN;
	} else if (clock == 2) {
		now = INT64_MAX;
	} else if (clock == 3) {
		if (size < 8)
			return 0;
		uint64_t u = 0;
		for (int i = 0; i < 8; i++)
			u = u << 8 | data[i];
		now = (int64_t)u;
		data += 8;
		size -= 8;
	}

	struct buf b = {0};
	if (shape == 0) {
		buf_add(&b, data, size);
	} else if (shape == 1) {
		buf_add(&b, data, size);
		buf_sign(&b, signer);
	} else {
		const uint8_t *hdr, *body;
		size_t hdr_len, body_len;
		char own[64];
		if (shape == 2) {
			const uint8_t *nul = memchr(data, '\0', size);
			if (nul == NULL) {
				free(b.p);
				return 0;
			}
			hdr = data;
			hdr_len = (size_t)(nul - data);
			body = nul + 1;
			body_len = size - hdr_len - 1;
		} else {
			int n = snprintf(own, sizeof(own),
			                 "{\"alg\":\"%s\",\"typ\":\"JWT\"}",
			                 signer_alg(signer));
			hdr = (const uint8_t *)own;
			hdr_len = (size_t)n;
			body = data;
			body_len = size;
		}
		buf_add_b64url(&b, hdr, hdr_len);
		buf_add(&b, ".", 1);
		buf_add_b64url(&b, body, body_len);
		buf_sign(&b, signer);
	}

	/* Exact size: no slack after the token for a parser to read. */
	char *token = malloc(b.len ? b.len : 1);
	if (token == NULL)
		die("out of memory");
	if (b.len > 0)
		memcpy(token, b.p, b.len);
	size_t len = b.len;
	free(b.p);

	enum auth_jwt_result r[V_COUNT];
	for (int i = 0; i < V_COUNT; i++) {
		struct auth_jwt_claims claims;
		struct auth_jwt_claims *c = null_claims ? NULL : &claims;
		r[i] = auth_jwt_verify(fx.v[i], token, len, now, c);
		assert(strcmp(auth_jwt_result_reason(r[i]), "unknown") != 0);
		assert(len <= AUTH_JWT_MAX_TOKEN || r[i] == AUTH_JWT_MALFORMED);
		assert(len > 0 || r[i] == AUTH_JWT_MISSING);
		check_claims(r[i], c, now);
	}
	free(token);

	bool hs = r[V_HS] == AUTH_JWT_OK;
	bool rs = r[V_RS] == AUTH_JWT_OK;
	bool es = r[V_ES] == AUTH_JWT_OK;
	assert(hs + rs + es <= 1);
	assert(r[V_HS_CLAIMS] != AUTH_JWT_OK || hs);
	if (shape != 0) {
		/* The harness signed: only the signer's own key may agree. */
		assert(!hs || signer == SIGN_HS);
		assert(!rs || signer == SIGN_RSA);
		assert(!es || signer == SIGN_EC);
	}
	return 0;
}
