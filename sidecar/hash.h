/* hash: the string hash of the sidecar's id tables (registry, dedup). */
#ifndef WSGATE_HASH_H
#define WSGATE_HASH_H

#include <stddef.h>
#include <stdint.h>

/* FNV-1a: ids are short; tables chain on collision, so an adversarial id
 * costs a longer chain, never a wrong answer. */
static inline uint64_t hash_bytes(const char *s, size_t len)
{
	uint64_t h = 1469598103934665603ULL;
	for (size_t i = 0; i < len; i++) {
		h ^= (unsigned char)s[i];
		h *= 1099511628211ULL;
	}
	return h;
}

#endif
