/*
 * auth_jwt: verification of the JWTs that authenticate WebSocket handshakes.
 *
 * One verifier holds one key: an HS256 secret (from a file: its bytes with
 * trailing \r/\n removed, at least 32 bytes) or an RS256/ES256 public key
 * (PEM). The token's "alg" must equal the key's algorithm: no "none", no
 * HS/RS confusion. Claims: "sub" (non-empty, a valid user id) and "exp" are
 * required; "exp" and "nbf" get AUTH_JWT_LEEWAY_S of leeway; an "iat" more
 * than the leeway in the future is refused; "iss"/"aud" are checked when the
 * verifier was given them. Built on OpenSSL (cached EVP_PKEY, HMAC with
 * CRYPTO_memcmp) and jansson; libjwt is not used (see DEPENDENCIES.md).
 *
 * Threads: a verifier is immutable after auth_jwt_open and may be used from
 * any thread. The caller owns it and frees it with auth_jwt_close.
 */
#ifndef WSGATE_AUTH_JWT_H
#define WSGATE_AUTH_JWT_H

#include <stddef.h>
#include <stdint.h>

#define AUTH_JWT_LEEWAY_S  30
#define AUTH_JWT_MAX_TOKEN 8192

enum auth_jwt_alg { AUTH_JWT_HS256, AUTH_JWT_RS256, AUTH_JWT_ES256 };

/* Why a token was refused; auth_jwt_result_reason gives the word recorded
 * in logs and auth_failures (e.g. "expired", "bad_signature"). */
enum auth_jwt_result {
	AUTH_JWT_OK = 0,
	AUTH_JWT_MISSING,   /* no token presented */
	AUTH_JWT_MALFORMED, /* not three base64url parts of JSON */
	AUTH_JWT_WRONG_ALG, /* alg differs from the key's (none, HS/RS...) */
	AUTH_JWT_BAD_SIGNATURE,
	AUTH_JWT_EXPIRED,
	AUTH_JWT_NOT_YET_VALID, /* nbf in the future */
	AUTH_JWT_ISSUED_IN_FUTURE,
	AUTH_JWT_MISSING_SUB, /* absent, empty, or not a valid user id */
	AUTH_JWT_MISSING_EXP,
	AUTH_JWT_BAD_ISSUER,
	AUTH_JWT_BAD_AUDIENCE,
};

struct auth_jwt_config {
	const char *secret_file;     /* HS256; exactly one of these two */
	const char *public_key_file; /* RS256 (RSA key) or ES256 (P-256 key) */
	const char *issuer;          /* NULL: unchecked */
	const char *audience;        /* NULL: unchecked */
};

/* What a valid token says about its holder. */
struct auth_jwt_claims {
	char sub[257];
	char jti[129]; /* "" when absent */
	int64_t exp;   /* seconds since the Unix epoch */
};

struct auth_jwt;

/* Loads the key. On failure returns -1 and writes a one-line reason. */
int auth_jwt_open(struct auth_jwt **out, const struct auth_jwt_config *cfg,
                  char *err, size_t errlen);
void auth_jwt_close(struct auth_jwt *v);
enum auth_jwt_alg auth_jwt_algorithm(const struct auth_jwt *v);

/* Verifies token[0..len) at time now_s (seconds since the epoch). */
enum auth_jwt_result auth_jwt_verify(const struct auth_jwt *v,
                                     const char *token, size_t len,
                                     int64_t now_s,
                                     struct auth_jwt_claims *claims);
const char *auth_jwt_result_reason(enum auth_jwt_result r);

/* Reads an HS256 secret file: its bytes with trailing \r/\n removed (at
 * most 1 MiB; the 32-byte minimum is auth_jwt_open's check). Returns a
 * malloc'd, NUL-terminated copy and its length, or NULL with a reason.
 * Also used by wsgatectl and the tests to mint tokens the same way. */
unsigned char *auth_jwt_read_secret(const char *path, size_t *len, char *err,
                                    size_t errlen);

#endif
