/*
 * histo: a log-linear latency histogram (HDR-style: 128 linear sub-buckets
 * per power of two, so a reported percentile is within 0.8% of the true
 * value) over nanoseconds. Fixed size, no allocation per sample: cheap
 * enough to record every delivered frame.
 */
#ifndef WSBENCH_HISTO_H
#define WSBENCH_HISTO_H

#include <stdint.h>

#define HISTO_SUB_BITS 7
#define HISTO_SUB      (1u << HISTO_SUB_BITS)
#define HISTO_BUCKETS  (HISTO_SUB + (64 - HISTO_SUB_BITS) * HISTO_SUB)

struct histo {
	uint64_t count;
	uint64_t min;
	uint64_t max;
	double sum;
	uint64_t b[HISTO_BUCKETS];
};

void histo_init(struct histo *h);
void histo_add(struct histo *h, uint64_t v);
/* p in [0, 100]; 0 when empty. */
uint64_t histo_percentile(const struct histo *h, double p);
double histo_mean(const struct histo *h);

#endif
