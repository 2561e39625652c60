/*
 * histo: log-linear latency histogram (see histo.h).
 */
#include "histo.h"

#include <string.h>

void histo_init(struct histo *h)
{
	memset(h, 0, sizeof(*h));
	h->min = UINT64_MAX;
}

static unsigned histo_index(uint64_t v)
{
	if (v < HISTO_SUB)
		return (unsigned)v;
	unsigned e = 63u - (unsigned)__builtin_clzll(v); /* >= SUB_BITS */
	unsigned shift = e - HISTO_SUB_BITS;
	return HISTO_SUB + (e - HISTO_SUB_BITS) * HISTO_SUB +
	       (unsigned)((v >> shift) - HISTO_SUB);
}

/* The middle of bucket i. */
static uint64_t histo_value(unsigned i)
{
	if (i < HISTO_SUB)
		return i;
	unsigned e = HISTO_SUB_BITS + (i - HISTO_SUB) / HISTO_SUB;
	uint64_t m = HISTO_SUB + (i - HISTO_SUB) % HISTO_SUB;
	unsigned shift = e - HISTO_SUB_BITS;
	return (m << shift) + ((1ull << shift) >> 1);
}

void histo_add(struct histo *h, uint64_t v)
{
	h->b[histo_index(v)]++;
	h->count++;
	h->sum += (double)v;
	if (v < h->min)
		h->min = v;
	if (v > h->max)
		h->max = v;
}

uint64_t histo_percentile(const struct histo *h, double p)
{
	if (h->count == 0)
		return 0;
	if (p >= 100.0)
		return h->max;
	uint64_t rank = (uint64_t)(p / 100.0 * (double)h->count + 0.999999);
	if (rank == 0)
		rank = 1;
	uint64_t seen = 0;
	for (unsigned i = 0; i < HISTO_BUCKETS; i++) {
		seen += h->b[i];
		if (seen >= rank) {
			uint64_t v = histo_value(i);
			if (v > h->max)
				v = h->max;
			if (v < h->min)
				v = h->min;
			return v;
		}
	}
	return h->max;
}

double histo_mean(const struct histo *h)
{
	return h->count ? h->sum / (double)h->count : 0.0;
}
