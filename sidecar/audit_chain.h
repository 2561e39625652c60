/*
 * audit_chain: the keyed hash chain over delivery rows, shared by the
 * sidecar (which extends it) and wsgatectl verify (which checks it), so
 * that both compute it one way:
 *
 *   chain = HMAC-SHA256(key, prev || f(id) || f(user_id) || f(seq) ||
 *                       f(event_id) || f(conn_id) || f(conn_user_id) ||
 *                       f(status) || f(at))
 *
 * where prev is the previous row's 32-byte chain (32 zero bytes before the
 * first row, or the recorded anchor after pruning), integers are decimal
 * text, and f(x) is x's length as 4 big-endian bytes followed by x.
 *
 * The key is the key file's bytes with trailing \r/\n removed; the sidecar
 * creates the file (64 random hex characters and a newline, mode 0600) when
 * it is absent.
 */
#ifndef WSGATE_AUDIT_CHAIN_H
#define WSGATE_AUDIT_CHAIN_H

#include <stddef.h>
#include <stdint.h>

#define AUDIT_CHAIN_LEN 32
#define AUDIT_KEY_MAX   1024

/* The key, and an HMAC context keyed with it once (re-keying per row costs
 * about 7x the MAC itself in OpenSSL 3). One thread at a time. */
struct audit_key {
	unsigned char bytes[AUDIT_KEY_MAX];
	size_t len;
	void *mac; /* EVP_MAC_CTX *, made by audit_key_load */
};

/* The fields of one delivery row, as stored. */
struct audit_row {
	int64_t id;
	const char *user_id;
	uint64_t seq;
	const char *event_id;
	const char *conn_id;
	const char *conn_user_id;
	const char *status;
	int64_t at;
};

/* Reads the key; with create != 0 an absent file is created first.
 * Returns 0, or -1 with a one-line reason. */
int audit_key_load(struct audit_key *key, const char *path, int create,
                   char *err, size_t errlen);
/* Frees what audit_key_load made. */
void audit_key_clear(struct audit_key *key);

void audit_chain_next(const struct audit_key *key,
                      const unsigned char prev[AUDIT_CHAIN_LEN],
                      const struct audit_row *row,
                      unsigned char out[AUDIT_CHAIN_LEN]);

#endif
