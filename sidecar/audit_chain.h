/*
 * audit_chain: the keyed MACs of the audit trail, audit format 2 (see
 * docs/DESIGN.md, "Audit chain format"), shared by the sidecar (which
 * writes them) and wsgatectl verify (which checks them), so that both
 * compute them one way. Two chains:
 *
 *   delivery rows:
 *   chain = HMAC-SHA256(key, prev || f(id) || f(user_id) || f(seq) ||
 *                       f(event_id) || f(conn_id) || f(conn_user_id) ||
 *                       f(status) || f(at) || f(payload_sha256))
 *   where prev is the previous row's chain (the anchor's before the first
 *   row: 32 zero bytes, or the chain a prune record names);
 *
 *   chain heads (the rows of table chain_heads, numbered n = 1, 2, ...):
 *   mac = HMAC-SHA256(key, prev_mac || f("head") || f(n) || f(at) ||
 *                     f(id) || f(chain) || f(reason))
 *   where prev_mac is the mac of head n - 1, or 32 zero bytes for head 1
 *   and for a prune record (reason "pruned").
 *
 * Integers are decimal text, f(x) is x's length as 4 big-endian bytes
 * followed by x's bytes (any length), payload_sha256 and chain are the
 * 32 raw bytes as stored.
 *
 * The key is the key file's bytes with trailing \r/\n removed; the sidecar
 * creates the file (64 random hex characters and a newline, mode 0600) when
 * it is absent.
 */
#ifndef WSGATE_AUDIT_CHAIN_H
#define WSGATE_AUDIT_CHAIN_H

#include <stddef.h>
#include <stdint.h>

#define AUDIT_CHAIN_LEN  32
#define AUDIT_DIGEST_LEN 32 /* SHA-256 of an event's payload */
#define AUDIT_KEY_MAX    1024
/* meta('audit_format'): the version of the formats above. */
#define AUDIT_FORMAT 2
/* chain_heads.reason of a prune record. */
#define AUDIT_HEAD_PRUNED "pruned"

/* The key, and an HMAC context keyed with it once (re-keying per row costs
 * about 7x the MAC itself in OpenSSL 3). One thread at a time. */
struct audit_key {
	unsigned char bytes[AUDIT_KEY_MAX];
	size_t len;
	void *mac; /* EVP_MAC_CTX *, made by audit_key_load */
};

/* The fields of one delivery row, as stored (NULL strings count as ""). */
struct audit_row {
	int64_t id;
	const char *user_id;
	uint64_t seq;
	const char *event_id;
	const char *conn_id;
	const char *conn_user_id;
	const char *status;
	int64_t at;
	const unsigned char *payload_sha256; /* the event's digest */
	size_t payload_sha256_len;           /* AUDIT_DIGEST_LEN */
};

/* The fields of one chain head, as stored. */
struct audit_head {
	int64_t n;
	int64_t at;
	int64_t id;                 /* the last delivery row it covers */
	const unsigned char *chain; /* that row's chain */
	size_t chain_len;           /* AUDIT_CHAIN_LEN */
	const char *reason;
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

/* prev_mac: the previous head's mac, or zeros (head 1, prune records). */
void audit_head_mac(const struct audit_key *key,
                    const unsigned char prev_mac[AUDIT_CHAIN_LEN],
                    const struct audit_head *head,
                    unsigned char out[AUDIT_CHAIN_LEN]);

#endif
