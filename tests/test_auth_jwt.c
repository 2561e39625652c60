/*
 * test_auth_jwt: the verifier accepts exactly the tokens DESIGN.md allows.
 *
 * Keys are generated at run time (RSA-2048, EC P-256) and written with an
 * HS256 secret to a fresh temporary directory; tokens are minted with
 * admin/jwt_mint, including the deliberately bad ones. All times are fixed
 * (NOW), so nothing sleeps.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>

#include "auth_jwt.h"
#include "jwt_mint.h"

#define NOW 1700000000LL
#define LW  AUTH_JWT_LEEWAY_S

static const char SECRET[] = "wsgate-test-secret-0123456789abcdef"; /* 35 */

/* One for the whole run: keys, their files and a verifier per key. */
static struct {
	char dir[64];
	char secret_path[128];
	char rsa_path[128];
	char ec_path[128];
	EVP_PKEY *rsa;
	EVP_PKEY *ec;
	unsigned char *rsa_pem; /* the RSA public PEM file's bytes */
	size_t rsa_pem_len;
	unsigned char *ec_pem;
	size_t ec_pem_len;
	struct auth_jwt *hs;
	struct auth_jwt *rs;
	struct auth_jwt *es;
} fx;

/* --- helpers --- */

static char *fmt(const char *f, ...) __attribute__((format(printf, 1, 2)));

static char *fmt(const char *f, ...)
{
	char *s = NULL;
	va_list ap;
	va_start(ap, f);
	int n = vasprintf(&s, f, ap);
	va_end(ap);
	assert_true(n >= 0);
	return s;
}

static void path_in_dir(char *out, size_t cap, const char *name)
{
	int n = snprintf(out, cap, "%s/%s", fx.dir, name);
	assert_true(n > 0 && (size_t)n < cap);
}

static void write_file(const char *path, const void *data, size_t len)
{
	FILE *f = fopen(path, "wb");
	assert_non_null(f);
	assert_int_equal(fwrite(data, 1, len, f), len);
	assert_int_equal(fclose(f), 0);
}

static unsigned char *read_file(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	assert_non_null(f);
	unsigned char *buf = malloc(65536);
	assert_non_null(buf);
	*len = fread(buf, 1, 65536, f);
	fclose(f);
	return buf;
}

static void write_public_pem(const char *path, EVP_PKEY *pkey)
{
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	assert_int_equal(PEM_write_PUBKEY(f, pkey), 1);
	assert_int_equal(fclose(f), 0);
}

static struct auth_jwt *open_verifier(const char *secret_file,
                                      const char *public_key_file,
                                      const char *issuer, const char *audience)
{
	struct auth_jwt_config cfg = {secret_file, public_key_file, issuer,
	                              audience};
	struct auth_jwt *v = NULL;
	char err[256] = "";
	int rc = auth_jwt_open(&v, &cfg, err, sizeof(err));
	if (rc != 0)
		fail_msg("auth_jwt_open: %s", err);
	assert_non_null(v);
	return v;
}

/* The open must fail with a one-line reason; returns it for inspection. */
static void expect_open_refused(const struct auth_jwt_config *cfg, char *err,
                                size_t errlen)
{
	struct auth_jwt *v = (struct auth_jwt *)1;
	err[0] = '\0';
	assert_int_equal(auth_jwt_open(&v, cfg, err, errlen), -1);
	assert_null(v);
	assert_true(strlen(err) > 0);
	assert_null(strchr(err, '\n'));
}

static const char *alg_name(const struct auth_jwt *v)
{
	switch (auth_jwt_algorithm(v)) {
	case AUTH_JWT_HS256:
		return "HS256";
	case AUTH_JWT_RS256:
		return "RS256";
	case AUTH_JWT_ES256:
		return "ES256";
	}
	return "?";
}

/* A token whose header claims header_alg, signed as sign_alg with this
 * run's key for it. */
static char *mint_as(const char *header_alg, const char *sign_alg,
                     const char *claims)
{
	char hdr[128];
	snprintf(hdr, sizeof(hdr), "{\"alg\":\"%s\",\"typ\":\"JWT\"}",
	         header_alg);
	EVP_PKEY *pkey = strcmp(sign_alg, "ES256") == 0 ? fx.ec : fx.rsa;
	char *tok =
	    jwt_mint_raw(hdr, claims, sign_alg, SECRET, strlen(SECRET), pkey);
	assert_non_null(tok);
	return tok;
}

static enum auth_jwt_result verify_token(const struct auth_jwt *v,
                                         const char *tok,
                                         struct auth_jwt_claims *claims)
{
	struct auth_jwt_claims scratch;
	return auth_jwt_verify(v, tok, strlen(tok), NOW,
	                       claims ? claims : &scratch);
}

/* Mints claims correctly for v's algorithm and verifies them at NOW:
 * isolates the claim checks from the signature ones. */
static enum auth_jwt_result verify_claims(const struct auth_jwt *v,
                                          const char *claims)
{
	char *tok = mint_as(alg_name(v), alg_name(v), claims);
	enum auth_jwt_result r = verify_token(v, tok, NULL);
	free(tok);
	return r;
}

/* Frees claims after checking them against all three keys. */
static void expect_claims_result(char *claims, enum auth_jwt_result want)
{
	const struct auth_jwt *vs[] = {fx.hs, fx.rs, fx.es};
	for (size_t i = 0; i < 3; i++) {
		enum auth_jwt_result got = verify_claims(vs[i], claims);
		if (got != want)
			fail_msg("%s %s: got %s, want %s", alg_name(vs[i]),
			         claims, auth_jwt_result_reason(got),
			         auth_jwt_result_reason(want));
	}
	free(claims);
}

static char *valid_claims(void)
{
	return fmt("{\"sub\":\"alice\",\"iat\":%lld,\"exp\":%lld,"
	           "\"jti\":\"tok-1\"}",
	           NOW, NOW + 300);
}

/* Base64url of bytes, for hand-built signatures. */
static char *b64url(const unsigned char *in, size_t len)
{
	char *out = malloc(len / 3 * 4 + 5);
	assert_non_null(out);
	int n = EVP_EncodeBlock((unsigned char *)out, in, (int)len);
	while (n > 0 && out[n - 1] == '=')
		n--;
	out[n] = '\0';
	for (char *p = out; *p; p++)
		*p = *p == '+' ? '-' : *p == '/' ? '_' : *p;
	return out;
}

/* --- fixture --- */

static int group_setup(void **state)
{
	(void)state;
	snprintf(fx.dir, sizeof(fx.dir), "/tmp/wsgate-auth-jwt-XXXXXX");
	if (mkdtemp(fx.dir) == NULL)
		return -1;
	path_in_dir(fx.secret_path, sizeof(fx.secret_path), "secret");
	path_in_dir(fx.rsa_path, sizeof(fx.rsa_path), "rsa.pem");
	path_in_dir(fx.ec_path, sizeof(fx.ec_path), "ec.pem");

	/* The trailing newline is the way `openssl rand -hex` leaves it. */
	char *secret = fmt("%s\n", SECRET);
	write_file(fx.secret_path, secret, strlen(secret));
	free(secret);

	fx.rsa = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
	fx.ec = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	if (fx.rsa == NULL || fx.ec == NULL)
		return -1;
	write_public_pem(fx.rsa_path, fx.rsa);
	write_public_pem(fx.ec_path, fx.ec);
	fx.rsa_pem = read_file(fx.rsa_path, &fx.rsa_pem_len);
	fx.ec_pem = read_file(fx.ec_path, &fx.ec_pem_len);

	fx.hs = open_verifier(fx.secret_path, NULL, NULL, NULL);
	fx.rs = open_verifier(NULL, fx.rsa_path, NULL, NULL);
	fx.es = open_verifier(NULL, fx.ec_path, NULL, NULL);
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	auth_jwt_close(fx.hs);
	auth_jwt_close(fx.rs);
	auth_jwt_close(fx.es);
	EVP_PKEY_free(fx.rsa);
	EVP_PKEY_free(fx.ec);
	free(fx.rsa_pem);
	free(fx.ec_pem);
	/* Everything any test left behind, then the directory. */
	DIR *d = opendir(fx.dir);
	if (d != NULL) {
		struct dirent *e;
		char path[512];
		while ((e = readdir(d)) != NULL) {
			if (strcmp(e->d_name, ".") == 0 ||
			    strcmp(e->d_name, "..") == 0)
				continue;
			snprintf(path, sizeof(path), "%s/%s", fx.dir,
			         e->d_name);
			unlink(path);
		}
		closedir(d);
	}
	return rmdir(fx.dir);
}

/* --- valid tokens --- */

static void test_hs256_valid_token_is_accepted(void **state)
{
	(void)state;
	char *claims = valid_claims();
	char *tok = mint_as("HS256", "HS256", claims);
	struct auth_jwt_claims c;
	assert_int_equal(verify_token(fx.hs, tok, &c), AUTH_JWT_OK);
	assert_string_equal(c.sub, "alice");
	assert_string_equal(c.jti, "tok-1");
	assert_int_equal(c.exp, NOW + 300);
	free(tok);
	free(claims);
}

static void test_rs256_valid_token_is_accepted(void **state)
{
	(void)state;
	char *claims = valid_claims();
	char *tok = mint_as("RS256", "RS256", claims);
	struct auth_jwt_claims c;
	assert_int_equal(verify_token(fx.rs, tok, &c), AUTH_JWT_OK);
	assert_string_equal(c.sub, "alice");
	assert_string_equal(c.jti, "tok-1");
	assert_int_equal(c.exp, NOW + 300);
	free(tok);
	free(claims);
}

static void test_es256_valid_token_is_accepted(void **state)
{
	(void)state;
	char *claims = valid_claims();
	char *tok = mint_as("ES256", "ES256", claims);
	struct auth_jwt_claims c;
	assert_int_equal(verify_token(fx.es, tok, &c), AUTH_JWT_OK);
	assert_string_equal(c.sub, "alice");
	assert_string_equal(c.jti, "tok-1");
	assert_int_equal(c.exp, NOW + 300);
	free(tok);
	free(claims);
}

static void test_minted_hs256_token_is_accepted_until_it_expires(void **state)
{
	(void)state;
	char *a = jwt_mint_hs256(SECRET, strlen(SECRET), "bob", NOW, 60);
	char *b = jwt_mint_hs256(SECRET, strlen(SECRET), "bob", NOW, 60);
	assert_non_null(a);
	assert_non_null(b);
	struct auth_jwt_claims ca, cb;
	assert_int_equal(verify_token(fx.hs, a, &ca), AUTH_JWT_OK);
	assert_int_equal(verify_token(fx.hs, b, &cb), AUTH_JWT_OK);
	assert_string_equal(ca.sub, "bob");
	assert_int_equal(ca.exp, NOW + 60);
	assert_int_equal(strlen(ca.jti), 32);
	assert_int_equal(strspn(ca.jti, "0123456789abcdef"), 32);
	assert_string_not_equal(ca.jti, cb.jti);
	assert_int_equal(
	    auth_jwt_verify(fx.hs, a, strlen(a), NOW + 60 + LW, &ca),
	    AUTH_JWT_EXPIRED);
	free(a);
	free(b);
}

static void test_algorithm_follows_the_key_type(void **state)
{
	(void)state;
	assert_int_equal(auth_jwt_algorithm(fx.hs), AUTH_JWT_HS256);
	assert_int_equal(auth_jwt_algorithm(fx.rs), AUTH_JWT_RS256);
	assert_int_equal(auth_jwt_algorithm(fx.es), AUTH_JWT_ES256);
}

/* --- times --- */

static void test_token_expired_beyond_leeway_is_refused(void **state)
{
	(void)state;
	expect_claims_result(fmt("{\"sub\":\"a\",\"exp\":%lld}", NOW - LW - 1),
	                     AUTH_JWT_EXPIRED);
	expect_claims_result(fmt("{\"sub\":\"a\",\"exp\":%lld}", NOW - LW),
	                     AUTH_JWT_EXPIRED);
	expect_claims_result(fmt("{\"sub\":\"a\",\"exp\":%lld}", 0LL),
	                     AUTH_JWT_EXPIRED);
	expect_claims_result(fmt("{\"sub\":\"a\",\"exp\":-9.9e300}"),
	                     AUTH_JWT_EXPIRED);
}

static void test_token_expired_within_leeway_is_accepted(void **state)
{
	(void)state;
	expect_claims_result(fmt("{\"sub\":\"a\",\"exp\":%lld}", NOW - LW + 1),
	                     AUTH_JWT_OK);
	expect_claims_result(fmt("{\"sub\":\"a\",\"exp\":%lld}", NOW),
	                     AUTH_JWT_OK);
	/* A real NumericDate is allowed; huge values do not overflow. */
	expect_claims_result(fmt("{\"sub\":\"a\",\"exp\":%lld.5}", NOW + 10),
	                     AUTH_JWT_OK);
	expect_claims_result(fmt("{\"sub\":\"a\",\"exp\":9223372036854775807}"),
	                     AUTH_JWT_OK);
}

static void test_token_with_nbf_in_future_is_refused(void **state)
{
	(void)state;
	expect_claims_result(fmt("{\"sub\":\"a\",\"exp\":%lld,\"nbf\":%lld}",
	                         NOW + 600, NOW + LW + 1),
	                     AUTH_JWT_NOT_YET_VALID);
	expect_claims_result(fmt("{\"sub\":\"a\",\"exp\":%lld,\"nbf\":%lld}",
	                         NOW + 600, NOW + LW),
	                     AUTH_JWT_OK);
	expect_claims_result(fmt("{\"sub\":\"a\",\"exp\":%lld,\"nbf\":"
	                         "9223372036854775807}",
	                         NOW + 600),
	                     AUTH_JWT_NOT_YET_VALID);
}

static void test_token_issued_far_in_future_is_refused(void **state)
{
	(void)state;
	expect_claims_result(fmt("{\"sub\":\"a\",\"exp\":%lld,\"iat\":%lld}",
	                         NOW + 600, NOW + LW + 1),
	                     AUTH_JWT_ISSUED_IN_FUTURE);
	expect_claims_result(fmt("{\"sub\":\"a\",\"exp\":%lld,\"iat\":%lld}",
	                         NOW + 600, NOW + LW),
	                     AUTH_JWT_OK);
	expect_claims_result(fmt("{\"sub\":\"a\",\"exp\":%lld,\"iat\":%lld}",
	                         NOW + 600, NOW - 86400),
	                     AUTH_JWT_OK);
}

static void test_times_that_are_not_numbers_are_refused(void **state)
{
	(void)state;
	expect_claims_result(fmt("{\"sub\":\"a\",\"exp\":\"%lld\"}", NOW + 60),
	                     AUTH_JWT_MISSING_EXP);
	expect_claims_result(fmt("{\"sub\":\"a\",\"exp\":null}"),
	                     AUTH_JWT_MISSING_EXP);
	expect_claims_result(
	    fmt("{\"sub\":\"a\",\"exp\":%lld,\"nbf\":\"0\"}", NOW + 60),
	    AUTH_JWT_MALFORMED);
	expect_claims_result(
	    fmt("{\"sub\":\"a\",\"exp\":%lld,\"iat\":true}", NOW + 60),
	    AUTH_JWT_MALFORMED);
}

/* --- signatures --- */

/* Replaces the character at i with a different base64url character. */
static void flip_char(char *tok, size_t i)
{
	tok[i] = tok[i] == 'A' ? 'B' : 'A';
}

static void test_flipped_signature_char_is_refused(void **state)
{
	(void)state;
	const struct auth_jwt *vs[] = {fx.hs, fx.rs, fx.es};
	char *claims = valid_claims();
	for (size_t k = 0; k < 3; k++) {
		char *tok = mint_as(alg_name(vs[k]), alg_name(vs[k]), claims);
		assert_int_equal(verify_token(vs[k], tok, NULL), AUTH_JWT_OK);
		const char *sig = strrchr(tok, '.') + 1;
		/* The middle of the signature: every bit there is used. */
		size_t i = (size_t)(sig - tok) + strlen(sig) / 2;
		flip_char(tok, i);
		assert_int_equal(verify_token(vs[k], tok, NULL),
		                 AUTH_JWT_BAD_SIGNATURE);
		flip_char(tok, i);
		/* And a signed byte: the payload's second character. */
		i = (size_t)(strchr(tok, '.') - tok) + 2;
		flip_char(tok, i);
		assert_int_equal(verify_token(vs[k], tok, NULL),
		                 AUTH_JWT_BAD_SIGNATURE);
		free(tok);
	}
	free(claims);
}

static void test_every_single_character_change_is_refused(void **state)
{
	(void)state;
	const struct auth_jwt *vs[] = {fx.hs, fx.rs, fx.es};
	const char repl[] = {'A', 'g', '_', '.', '='};
	char *claims = valid_claims();
	for (size_t k = 0; k < 3; k++) {
		char *tok = mint_as(alg_name(vs[k]), alg_name(vs[k]), claims);
		size_t n = strlen(tok);
		for (size_t i = 0; i < n; i++) {
			char orig = tok[i];
			for (size_t r = 0; r < sizeof(repl); r++) {
				if (repl[r] == orig)
					continue;
				tok[i] = repl[r];
				if (verify_token(vs[k], tok, NULL) ==
				    AUTH_JWT_OK)
					fail_msg("%s: changing char %zu to "
					         "'%c' was accepted",
					         alg_name(vs[k]), i, repl[r]);
			}
			tok[i] = orig;
		}
		assert_int_equal(verify_token(vs[k], tok, NULL), AUTH_JWT_OK);
		free(tok);
	}
	free(claims);
}

static void test_token_signed_with_another_key_is_refused(void **state)
{
	(void)state;
	char *claims = valid_claims();
	static const char other[] = "another-secret-of-more-than-32-bytes!";
	char *tok = jwt_mint_raw("{\"alg\":\"HS256\"}", claims, "HS256", other,
	                         strlen(other), NULL);
	assert_non_null(tok);
	assert_int_equal(verify_token(fx.hs, tok, NULL),
	                 AUTH_JWT_BAD_SIGNATURE);
	free(tok);

	EVP_PKEY *ec2 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	assert_non_null(ec2);
	tok =
	    jwt_mint_raw("{\"alg\":\"ES256\"}", claims, "ES256", NULL, 0, ec2);
	assert_non_null(tok);
	assert_int_equal(verify_token(fx.es, tok, NULL),
	                 AUTH_JWT_BAD_SIGNATURE);
	free(tok);
	EVP_PKEY_free(ec2);
	free(claims);
}

/* JWS ES256 is R||S; the DER form OpenSSL produces, or any other length,
 * is refused even when it is a correct signature. */
static void test_es256_signature_not_64_bytes_is_refused(void **state)
{
	(void)state;
	char *claims = valid_claims();
	char *tok = mint_as("ES256", "ES256", claims);
	char *dot = strrchr(tok, '.');
	assert_int_equal(strlen(dot + 1), 86); /* 64 bytes */

	/* 63 bytes: the last two characters dropped. */
	char *shorter = strndup(tok, strlen(tok) - 2);
	assert_int_equal(verify_token(fx.es, shorter, NULL),
	                 AUTH_JWT_BAD_SIGNATURE);
	/* 67 bytes: three zero bytes appended. */
	char *longer = fmt("%sAAAA", tok);
	assert_int_equal(verify_token(fx.es, longer, NULL),
	                 AUTH_JWT_BAD_SIGNATURE);

	/* A valid DER signature over the same signing input. */
	size_t input_len = (size_t)(dot - tok);
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	unsigned char der[128];
	size_t der_len = sizeof(der);
	assert_int_equal(
	    EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, fx.ec), 1);
	assert_int_equal(EVP_DigestSign(ctx, der, &der_len,
	                                (const unsigned char *)tok, input_len),
	                 1);
	EVP_MD_CTX_free(ctx);
	char *der_b64 = b64url(der, der_len);
	char *der_tok = fmt("%.*s.%s", (int)input_len, tok, der_b64);
	assert_int_equal(verify_token(fx.es, der_tok, NULL),
	                 AUTH_JWT_BAD_SIGNATURE);

	free(der_tok);
	free(der_b64);
	free(longer);
	free(shorter);
	free(tok);
	free(claims);
}

/* Unused low bits of a part's last character must be zero: otherwise the
 * same signature would have several accepted spellings. */
static void test_non_canonical_base64url_is_refused(void **state)
{
	(void)state;
	static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklm"
	                               "nopqrstuvwxyz0123456789-_";
	char *claims = valid_claims();
	char *tok = mint_as("HS256", "HS256", claims);
	size_t last = strlen(tok) - 1;
	/* 32 bytes are 43 characters: the last one carries 2 unused bits. */
	assert_int_equal(strlen(strrchr(tok, '.') + 1), 43);
	size_t v = (size_t)(strchr(alphabet, tok[last]) - alphabet);
	assert_int_equal(v & 3, 0);
	tok[last] = alphabet[v | 1];
	assert_int_equal(verify_token(fx.hs, tok, NULL), AUTH_JWT_MALFORMED);
	free(tok);
	free(claims);
}

/* --- algorithm pinning --- */

static void test_alg_none_is_refused_as_wrong_alg_for_every_key(void **state)
{
	(void)state;
	const struct auth_jwt *vs[] = {fx.hs, fx.rs, fx.es};
	const char *nones[] = {"none", "None", "NONE", ""};
	char *claims = valid_claims();
	for (size_t k = 0; k < 3; k++) {
		for (size_t i = 0; i < 4; i++) {
			char *tok = mint_as(nones[i], "none", claims);
			assert_int_equal(tok[strlen(tok) - 1], '.');
			assert_int_equal(verify_token(vs[k], tok, NULL),
			                 AUTH_JWT_WRONG_ALG);
			free(tok);
		}
		/* A header with no alg at all. */
		char *tok = jwt_mint_raw("{\"typ\":\"JWT\"}", claims, "none",
		                         NULL, 0, NULL);
		assert_non_null(tok);
		assert_int_equal(verify_token(vs[k], tok, NULL),
		                 AUTH_JWT_WRONG_ALG);
		free(tok);
	}
	free(claims);
}

/* The classic confusion: the attacker knows the public PEM and uses its
 * bytes as an HMAC key. */
static void test_hs256_token_keyed_with_public_pem_is_wrong_alg(void **state)
{
	(void)state;
	char *claims = valid_claims();
	struct {
		const struct auth_jwt *v;
		const unsigned char *pem;
		size_t len;
	} cases[] = {{fx.rs, fx.rsa_pem, fx.rsa_pem_len},
	             {fx.es, fx.ec_pem, fx.ec_pem_len}};
	for (size_t k = 0; k < 2; k++) {
		/* With and without the PEM's trailing newline. */
		for (size_t strip = 0; strip < 2; strip++) {
			char *tok = jwt_mint_raw("{\"alg\":\"HS256\"}", claims,
			                         "HS256", cases[k].pem,
			                         cases[k].len - strip, NULL);
			assert_non_null(tok);
			enum auth_jwt_result r =
			    verify_token(cases[k].v, tok, NULL);
			assert_int_not_equal(r, AUTH_JWT_OK);
			assert_int_equal(r, AUTH_JWT_WRONG_ALG);
			free(tok);
		}
	}
	free(claims);
}

static void test_token_of_another_algorithm_is_wrong_alg(void **state)
{
	(void)state;
	char *claims = valid_claims();
	struct {
		const char *alg;
		const struct auth_jwt *v;
	} cases[] = {
	    {"RS256", fx.hs}, {"ES256", fx.hs}, {"HS256", fx.rs},
	    {"ES256", fx.rs}, {"HS256", fx.es}, {"RS256", fx.es},
	};
	for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
		char *tok = mint_as(cases[k].alg, cases[k].alg, claims);
		assert_int_equal(verify_token(cases[k].v, tok, NULL),
		                 AUTH_JWT_WRONG_ALG);
		free(tok);
	}
	/* The header's word must match exactly, not case-insensitively. */
	char *tok = mint_as("hs256", "HS256", claims);
	assert_int_equal(verify_token(fx.hs, tok, NULL), AUTH_JWT_WRONG_ALG);
	free(tok);
	free(claims);
}

static void test_crit_header_is_refused(void **state)
{
	(void)state;
	char *claims = valid_claims();
	char *tok = jwt_mint_raw("{\"alg\":\"HS256\",\"crit\":[\"b64\"],"
	                         "\"b64\":false}",
	                         claims, "HS256", SECRET, strlen(SECRET), NULL);
	assert_non_null(tok);
	assert_int_equal(verify_token(fx.hs, tok, NULL), AUTH_JWT_MALFORMED);
	free(tok);
	free(claims);
}

/* --- required claims --- */

static void test_missing_sub_is_refused(void **state)
{
	(void)state;
	expect_claims_result(fmt("{\"exp\":%lld}", NOW + 60),
	                     AUTH_JWT_MISSING_SUB);
	expect_claims_result(fmt("{\"sub\":null,\"exp\":%lld}", NOW + 60),
	                     AUTH_JWT_MISSING_SUB);
	expect_claims_result(fmt("{\"sub\":42,\"exp\":%lld}", NOW + 60),
	                     AUTH_JWT_MISSING_SUB);
}

static void test_empty_sub_is_refused(void **state)
{
	(void)state;
	expect_claims_result(fmt("{\"sub\":\"\",\"exp\":%lld}", NOW + 60),
	                     AUTH_JWT_MISSING_SUB);
}

static void test_sub_must_be_printable_utf8_of_1_to_256_bytes(void **state)
{
	(void)state;
	const char *bad[] = {"a\\u0001b", "tab\\there", "del\\u007f",
	                     "c1\\u0085", "nl\\n"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		expect_claims_result(
		    fmt("{\"sub\":\"%s\",\"exp\":%lld}", bad[i], NOW + 60),
		    AUTH_JWT_MISSING_SUB);

	char long_sub[258];
	memset(long_sub, 'u', 257);
	long_sub[257] = '\0';
	expect_claims_result(
	    fmt("{\"sub\":\"%s\",\"exp\":%lld}", long_sub, NOW + 60),
	    AUTH_JWT_MISSING_SUB);
	long_sub[256] = '\0';
	char *claims = fmt("{\"sub\":\"%s\",\"exp\":%lld}", long_sub, NOW + 60);
	char *tok = mint_as("HS256", "HS256", claims);
	struct auth_jwt_claims c;
	assert_int_equal(verify_token(fx.hs, tok, &c), AUTH_JWT_OK);
	assert_string_equal(c.sub, long_sub);
	free(tok);
	free(claims);

	expect_claims_result(fmt("{\"sub\":\"\\u00e9lodie \\ud83d\\ude00\","
	                         "\"exp\":%lld}",
	                         NOW + 60),
	                     AUTH_JWT_OK);
}

static void test_missing_exp_is_refused(void **state)
{
	(void)state;
	expect_claims_result(fmt("{\"sub\":\"alice\"}"), AUTH_JWT_MISSING_EXP);
	expect_claims_result(fmt("{\"sub\":\"alice\",\"nbf\":%lld}", NOW),
	                     AUTH_JWT_MISSING_EXP);
}

static void test_jti_is_optional_and_at_most_128_bytes(void **state)
{
	(void)state;
	struct auth_jwt_claims c;
	char *claims = fmt("{\"sub\":\"a\",\"exp\":%lld}", NOW + 60);
	char *tok = mint_as("HS256", "HS256", claims);
	memset(&c, 'x', sizeof(c));
	assert_int_equal(verify_token(fx.hs, tok, &c), AUTH_JWT_OK);
	assert_string_equal(c.jti, "");
	free(tok);
	free(claims);

	char jti[130];
	memset(jti, 'j', 128);
	jti[128] = '\0';
	claims =
	    fmt("{\"sub\":\"a\",\"exp\":%lld,\"jti\":\"%s\"}", NOW + 60, jti);
	tok = mint_as("HS256", "HS256", claims);
	assert_int_equal(verify_token(fx.hs, tok, &c), AUTH_JWT_OK);
	assert_string_equal(c.jti, jti);
	free(tok);
	free(claims);

	jti[128] = 'j';
	jti[129] = '\0';
	expect_claims_result(
	    fmt("{\"sub\":\"a\",\"exp\":%lld,\"jti\":\"%s\"}", NOW + 60, jti),
	    AUTH_JWT_MALFORMED);
	expect_claims_result(
	    fmt("{\"sub\":\"a\",\"exp\":%lld,\"jti\":7}", NOW + 60),
	    AUTH_JWT_MALFORMED);
}

static void test_duplicate_claim_is_malformed(void **state)
{
	(void)state;
	expect_claims_result(fmt("{\"sub\":\"alice\",\"sub\":\"mallory\","
	                         "\"exp\":%lld}",
	                         NOW + 60),
	                     AUTH_JWT_MALFORMED);
}

static void test_claims_are_cleared_when_refused(void **state)
{
	(void)state;
	char *claims = fmt("{\"sub\":\"alice\",\"exp\":%lld}", NOW - 3600);
	char *tok = mint_as("HS256", "HS256", claims);
	struct auth_jwt_claims c;
	memset(&c, 'x', sizeof(c));
	assert_int_equal(verify_token(fx.hs, tok, &c), AUTH_JWT_EXPIRED);
	assert_string_equal(c.sub, "");
	assert_string_equal(c.jti, "");
	assert_int_equal(c.exp, 0);
	free(tok);
	free(claims);
}

/* --- malformed input --- */

static void test_garbage_tokens_are_refused(void **state)
{
	(void)state;
	struct auth_jwt_claims c;
	assert_int_equal(auth_jwt_verify(fx.hs, "", 0, NOW, &c),
	                 AUTH_JWT_MISSING);
	assert_int_equal(auth_jwt_verify(fx.hs, NULL, 0, NOW, &c),
	                 AUTH_JWT_MISSING);

	const char *fixed[] = {
	    "a.b.c",
	    "..",
	    ".",
	    "a",
	    "a.b",
	    "a.b.c.d",
	    "e30.e30.",                   /* {} . {} . empty */
	    "W10.W10.",                   /* [] . [] */
	    "eyJhbGciOiJIUzI1NiJ9..",     /* empty payload */
	    "eyJhbGciOiJIUzI1NiJ9=.e30.", /* padding */
	    "bm90IGpzb24.e30.",           /* "not json" */
	    "eyJhbGciOiJIUzI1NiJ9.e30.AAAA.",
	    "eyJhbGciOiJIUzI1NiJ9 .e30.AAAA",
	};
	const struct auth_jwt *vs[] = {fx.hs, fx.rs, fx.es};
	for (size_t k = 0; k < 3; k++)
		for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++)
			assert_int_not_equal(verify_token(vs[k], fixed[i], &c),
			                     AUTH_JWT_OK);

	/* Random bytes, biased towards dots and base64url characters, from a
	 * fixed seed so that a failure reproduces. */
	const char alphabet[] = "eyJ0.AZaz09-_.";
	uint64_t x = 0x9e3779b97f4a7c15ULL;
	char buf[256];
	for (int round = 0; round < 3000; round++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		size_t len = 1 + x % sizeof(buf);
		for (size_t i = 0; i < len; i++) {
			x ^= x << 13;
			x ^= x >> 7;
			x ^= x << 17;
			buf[i] =
			    (x & 1)
			        ? alphabet[(x >> 8) % (sizeof(alphabet) - 1)]
			        : (char)(x >> 16);
		}
		for (size_t k = 0; k < 3; k++)
			assert_int_not_equal(
			    auth_jwt_verify(vs[k], buf, len, NOW, &c),
			    AUTH_JWT_OK);
	}
}

static void test_token_longer_than_limit_is_malformed(void **state)
{
	(void)state;
	/* A correctly signed token grown past the limit by padding a claim;
	 * the largest one within the limit must still pass. */
	char pad[AUTH_JWT_MAX_TOKEN];
	char *under = NULL, *over = NULL;
	for (size_t p = 6000; p < 6200 && (under == NULL || over == NULL);
	     p++) {
		memset(pad, 'p', p);
		pad[p] = '\0';
		char *claims =
		    fmt("{\"sub\":\"a\",\"exp\":%lld,\"pad\":\"%s\"}", NOW + 60,
		        pad);
		char *tok = mint_as("HS256", "HS256", claims);
		free(claims);
		size_t n = strlen(tok);
		if (n > AUTH_JWT_MAX_TOKEN - 4 && n <= AUTH_JWT_MAX_TOKEN &&
		    under == NULL)
			under = tok;
		else if (n > AUTH_JWT_MAX_TOKEN && over == NULL)
			over = tok;
		else
			free(tok);
	}
	assert_non_null(under);
	assert_non_null(over);
	assert_int_equal(verify_token(fx.hs, under, NULL), AUTH_JWT_OK);
	assert_int_equal(verify_token(fx.hs, over, NULL), AUTH_JWT_MALFORMED);
	free(under);
	free(over);
}

/* --- issuer and audience --- */

static void test_issuer_is_checked_when_configured(void **state)
{
	(void)state;
	struct auth_jwt *v =
	    open_verifier(fx.secret_path, NULL, "https://id.example", NULL);
	const char *fmt_iss = "{\"sub\":\"a\",\"exp\":%lld,\"iss\":\"%s\"}";
	char *ok = fmt(fmt_iss, NOW + 60, "https://id.example");
	char *prefix = fmt(fmt_iss, NOW + 60, "https://id.exampl");
	char *other = fmt(fmt_iss, NOW + 60, "https://evil.example");
	char *absent = fmt("{\"sub\":\"a\",\"exp\":%lld}", NOW + 60);
	char *number = fmt("{\"sub\":\"a\",\"exp\":%lld,\"iss\":1}", NOW + 60);

	assert_int_equal(verify_claims(v, ok), AUTH_JWT_OK);
	assert_int_equal(verify_claims(v, prefix), AUTH_JWT_BAD_ISSUER);
	assert_int_equal(verify_claims(v, other), AUTH_JWT_BAD_ISSUER);
	assert_int_equal(verify_claims(v, absent), AUTH_JWT_BAD_ISSUER);
	assert_int_equal(verify_claims(v, number), AUTH_JWT_BAD_ISSUER);
	/* Unconfigured: any issuer passes. */
	assert_int_equal(verify_claims(fx.hs, other), AUTH_JWT_OK);

	free(ok);
	free(prefix);
	free(other);
	free(absent);
	free(number);
	auth_jwt_close(v);
}

static void test_audience_is_checked_as_string_or_array(void **state)
{
	(void)state;
	struct auth_jwt *v = open_verifier(NULL, fx.ec_path, NULL, "wsgate");
	struct {
		const char *aud; /* JSON, or NULL for absent */
		enum auth_jwt_result want;
	} cases[] = {
	    {"\"wsgate\"", AUTH_JWT_OK},
	    {"[\"other\",\"wsgate\"]", AUTH_JWT_OK},
	    {"[\"wsgate\"]", AUTH_JWT_OK},
	    {"\"wsgatex\"", AUTH_JWT_BAD_AUDIENCE},
	    {"[\"other\"]", AUTH_JWT_BAD_AUDIENCE},
	    {"[]", AUTH_JWT_BAD_AUDIENCE},
	    {"[[\"wsgate\"]]", AUTH_JWT_BAD_AUDIENCE},
	    {"{\"wsgate\":1}", AUTH_JWT_BAD_AUDIENCE},
	    {NULL, AUTH_JWT_BAD_AUDIENCE},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *claims =
		    cases[i].aud
		        ? fmt("{\"sub\":\"a\",\"exp\":%lld,\"aud\":%s}",
		              NOW + 60, cases[i].aud)
		        : fmt("{\"sub\":\"a\",\"exp\":%lld}", NOW + 60);
		enum auth_jwt_result got = verify_claims(v, claims);
		if (got != cases[i].want)
			fail_msg("aud %s: got %s",
			         cases[i].aud ? cases[i].aud : "(absent)",
			         auth_jwt_result_reason(got));
		/* Unconfigured: any audience passes. */
		assert_int_equal(verify_claims(fx.es, claims), AUTH_JWT_OK);
		free(claims);
	}
	auth_jwt_close(v);
}

/* --- opening --- */

static void test_short_secret_file_is_refused_at_open(void **state)
{
	(void)state;
	char path[128], err[256];
	path_in_dir(path, sizeof(path), "short");
	struct auth_jwt_config cfg = {path, NULL, NULL, NULL};

	/* 31 bytes, even when newlines bring the file past 32. */
	write_file(path, "0123456789abcdef0123456789abcde\r\n\n", 34);
	expect_open_refused(&cfg, err, sizeof(err));
	assert_non_null(strstr(err, "31 bytes"));
	write_file(path, "", 0);
	expect_open_refused(&cfg, err, sizeof(err));

	write_file(path, "0123456789abcdef0123456789abcdef", 32);
	struct auth_jwt *v = open_verifier(path, NULL, NULL, NULL);
	auth_jwt_close(v);
	assert_int_equal(unlink(path), 0);
}

static void test_secret_with_trailing_newline_equals_without(void **state)
{
	(void)state;
	char plain[128], crlf[128];
	path_in_dir(plain, sizeof(plain), "plain");
	path_in_dir(crlf, sizeof(crlf), "crlf");
	write_file(plain, SECRET, strlen(SECRET));
	char *with = fmt("%s\r\n", SECRET);
	write_file(crlf, with, strlen(with));

	struct auth_jwt *vp = open_verifier(plain, NULL, NULL, NULL);
	struct auth_jwt *vc = open_verifier(crlf, NULL, NULL, NULL);
	char *claims = valid_claims();
	assert_int_equal(verify_claims(vp, claims), AUTH_JWT_OK);
	assert_int_equal(verify_claims(vc, claims), AUTH_JWT_OK);

	/* The newline really is gone from the key, not appended to it. */
	char *tok = jwt_mint_raw("{\"alg\":\"HS256\"}", claims, "HS256", with,
	                         strlen(with), NULL);
	assert_int_equal(verify_token(vc, tok, NULL), AUTH_JWT_BAD_SIGNATURE);

	/* The minting side reads the file the same way. */
	size_t len = 0;
	char rerr[256];
	unsigned char *read =
	    auth_jwt_read_secret(crlf, &len, rerr, sizeof(rerr));
	assert_non_null(read);
	assert_int_equal(len, strlen(SECRET));
	assert_memory_equal(read, SECRET, len);

	free(read);
	free(tok);
	free(claims);
	free(with);
	auth_jwt_close(vp);
	auth_jwt_close(vc);
	assert_int_equal(unlink(plain), 0);
	assert_int_equal(unlink(crlf), 0);
}

static void test_unusable_keys_are_refused_at_open(void **state)
{
	(void)state;
	char ed_path[128], p384_path[128], priv_path[128], missing[128];
	char err[256];
	path_in_dir(ed_path, sizeof(ed_path), "ed25519.pem");
	path_in_dir(p384_path, sizeof(p384_path), "p384.pem");
	path_in_dir(priv_path, sizeof(priv_path), "private.pem");
	path_in_dir(missing, sizeof(missing), "missing.pem");

	EVP_PKEY *ed = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
	EVP_PKEY *p384 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384");
	assert_non_null(ed);
	assert_non_null(p384);
	write_public_pem(ed_path, ed);
	write_public_pem(p384_path, p384);
	FILE *f = fopen(priv_path, "w");
	assert_non_null(f);
	assert_int_equal(
	    PEM_write_PrivateKey(f, fx.ec, NULL, NULL, 0, NULL, NULL), 1);
	fclose(f);

	const char *refused[] = {ed_path, p384_path, priv_path, missing,
	                         fx.secret_path};
	for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
		struct auth_jwt_config cfg = {NULL, refused[i], NULL, NULL};
		expect_open_refused(&cfg, err, sizeof(err));
	}
	struct auth_jwt_config cfg = {NULL, ed_path, NULL, NULL};
	expect_open_refused(&cfg, err, sizeof(err));
	assert_non_null(strstr(err, "ED25519"));

	struct auth_jwt_config both = {fx.secret_path, fx.rsa_path, NULL, NULL};
	struct auth_jwt_config neither = {NULL, NULL, NULL, NULL};
	struct auth_jwt_config no_secret = {missing, NULL, NULL, NULL};
	expect_open_refused(&both, err, sizeof(err));
	expect_open_refused(&neither, err, sizeof(err));
	expect_open_refused(&no_secret, err, sizeof(err));

	EVP_PKEY_free(ed);
	EVP_PKEY_free(p384);
	assert_int_equal(unlink(ed_path), 0);
	assert_int_equal(unlink(p384_path), 0);
	assert_int_equal(unlink(priv_path), 0);
}

static void test_result_reasons_are_the_logged_words(void **state)
{
	(void)state;
	assert_string_equal(auth_jwt_result_reason(AUTH_JWT_OK), "ok");
	assert_string_equal(auth_jwt_result_reason(AUTH_JWT_MISSING),
	                    "missing_token");
	assert_string_equal(auth_jwt_result_reason(AUTH_JWT_MALFORMED),
	                    "malformed");
	assert_string_equal(auth_jwt_result_reason(AUTH_JWT_WRONG_ALG),
	                    "wrong_alg");
	assert_string_equal(auth_jwt_result_reason(AUTH_JWT_BAD_SIGNATURE),
	                    "bad_signature");
	assert_string_equal(auth_jwt_result_reason(AUTH_JWT_EXPIRED),
	                    "expired");
	assert_string_equal(auth_jwt_result_reason(AUTH_JWT_NOT_YET_VALID),
	                    "not_yet_valid");
	assert_string_equal(auth_jwt_result_reason(AUTH_JWT_ISSUED_IN_FUTURE),
	                    "issued_in_future");
	assert_string_equal(auth_jwt_result_reason(AUTH_JWT_MISSING_SUB),
	                    "missing_sub");
	assert_string_equal(auth_jwt_result_reason(AUTH_JWT_MISSING_EXP),
	                    "missing_exp");
	assert_string_equal(auth_jwt_result_reason(AUTH_JWT_BAD_ISSUER),
	                    "bad_issuer");
	assert_string_equal(auth_jwt_result_reason(AUTH_JWT_BAD_AUDIENCE),
	                    "bad_audience");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_hs256_valid_token_is_accepted),
	    cmocka_unit_test(test_rs256_valid_token_is_accepted),
	    cmocka_unit_test(test_es256_valid_token_is_accepted),
	    cmocka_unit_test(
	        test_minted_hs256_token_is_accepted_until_it_expires),
	    cmocka_unit_test(test_algorithm_follows_the_key_type),
	    cmocka_unit_test(test_token_expired_beyond_leeway_is_refused),
	    cmocka_unit_test(test_token_expired_within_leeway_is_accepted),
	    cmocka_unit_test(test_token_with_nbf_in_future_is_refused),
	    cmocka_unit_test(test_token_issued_far_in_future_is_refused),
	    cmocka_unit_test(test_times_that_are_not_numbers_are_refused),
	    cmocka_unit_test(test_flipped_signature_char_is_refused),
	    cmocka_unit_test(test_every_single_character_change_is_refused),
	    cmocka_unit_test(test_token_signed_with_another_key_is_refused),
	    cmocka_unit_test(test_es256_signature_not_64_bytes_is_refused),
	    cmocka_unit_test(test_non_canonical_base64url_is_refused),
	    cmocka_unit_test(
	        test_alg_none_is_refused_as_wrong_alg_for_every_key),
	    cmocka_unit_test(
	        test_hs256_token_keyed_with_public_pem_is_wrong_alg),
	    cmocka_unit_test(test_token_of_another_algorithm_is_wrong_alg),
	    cmocka_unit_test(test_crit_header_is_refused),
	    cmocka_unit_test(test_missing_sub_is_refused),
	    cmocka_unit_test(test_empty_sub_is_refused),
	    cmocka_unit_test(test_sub_must_be_printable_utf8_of_1_to_256_bytes),
	    cmocka_unit_test(test_missing_exp_is_refused),
	    cmocka_unit_test(test_jti_is_optional_and_at_most_128_bytes),
	    cmocka_unit_test(test_duplicate_claim_is_malformed),
	    cmocka_unit_test(test_claims_are_cleared_when_refused),
	    cmocka_unit_test(test_garbage_tokens_are_refused),
	    cmocka_unit_test(test_token_longer_than_limit_is_malformed),
	    cmocka_unit_test(test_issuer_is_checked_when_configured),
	    cmocka_unit_test(test_audience_is_checked_as_string_or_array),
	    cmocka_unit_test(test_short_secret_file_is_refused_at_open),
	    cmocka_unit_test(test_secret_with_trailing_newline_equals_without),
	    cmocka_unit_test(test_unusable_keys_are_refused_at_open),
	    cmocka_unit_test(test_result_reasons_are_the_logged_words),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
