/*
 * jwt_mint: signs JWTs. Used by `wsgatectl token` (HS256 development
 * tokens), by the tests (every algorithm, and deliberately bad tokens) and by
 * the benchmark. The sidecar never mints.
 *
 * Every function returns a malloc'd NUL-terminated token the caller frees,
 * or NULL on failure.
 */
#ifndef WSGATE_JWT_MINT_H
#define WSGATE_JWT_MINT_H

#include <stddef.h>
#include <stdint.h>
#include <openssl/evp.h>

/* header_json and claims_json are taken verbatim (base64url-encoded as
 * given). alg: "HS256" signs with the secret, "RS256"/"ES256" with pkey,
 * "none" leaves the signature empty. The signing algorithm is alg; the
 * header may claim something else (for confusion tests). */
char *jwt_mint_raw(const char *header_json, const char *claims_json,
                   const char *alg, const void *secret, size_t secret_len,
                   EVP_PKEY *pkey);

/* The common case: {"alg":"HS256","typ":"JWT"} and
 * {"sub":user,"iat":now,"exp":now+ttl_s,"jti":random}. */
char *jwt_mint_hs256(const void *secret, size_t secret_len, const char *user,
                     int64_t now_s, int64_t ttl_s);

#endif
