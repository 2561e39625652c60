/*
 * Unit tests of dedup: the states of an event id (new, pending until its
 * commit is done, committed), the repeats parked on a pending one, and
 * retention.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "dedup.h"

/* What the settle callback saw. */
struct answers {
	size_t n;
	size_t index[8];
	enum dedup_state state_then; /* of the id, seen from the callback */
	struct dedup *d;
};

static void record_answer(void *arg, void *owner, size_t index)
{
	struct answers *a = arg;
	uint64_t seq;
	assert_ptr_equal(owner, a);
	if (a->n < 8)
		a->index[a->n] = index;
	a->n++;
	a->state_then = dedup_find(a->d, "u", "e", &seq);
}

static void test_repeats_get_the_commit_in_arrival_order(void **state)
{
	(void)state;
	struct dedup *d = dedup_new();
	struct answers a = {.d = d};
	uint64_t seq = 0;
	assert_int_equal(dedup_find(d, "u", "e", &seq), DEDUP_NEW);
	assert_int_equal(dedup_add(d, "u", "e", 7, 100, DEDUP_PENDING), 0);
	assert_int_equal(dedup_find(d, "u", "e", &seq), DEDUP_PENDING);
	assert_int_equal(seq, 7);
	for (size_t i = 0; i < 3; i++)
		assert_int_equal(dedup_park(d, "u", "e", &a, i + 1), 0);
	assert_int_equal(dedup_parked(d), 3);
	dedup_settle(d, "u", "e", 1, record_answer, &a);
	assert_int_equal(a.n, 3);
	for (size_t i = 0; i < 3; i++)
		assert_int_equal(a.index[i], i + 1);
	assert_int_equal(a.state_then, DEDUP_COMMITTED);
	assert_int_equal(dedup_parked(d), 0);
	assert_int_equal(dedup_find(d, "u", "e", &seq), DEDUP_COMMITTED);
	assert_int_equal(seq, 7);
	/* Nothing waits on a committed id. */
	assert_int_equal(dedup_park(d, "u", "e", &a, 9), -1);
	dedup_free(d);
}

static void test_failed_commit_frees_the_id(void **state)
{
	(void)state;
	struct dedup *d = dedup_new();
	struct answers a = {.d = d};
	uint64_t seq;
	assert_int_equal(dedup_add(d, "u", "e", 3, 100, DEDUP_PENDING), 0);
	assert_int_equal(dedup_park(d, "u", "e", &a, 1), 0);
	dedup_settle(d, "u", "e", 0, record_answer, &a);
	assert_int_equal(a.n, 1);
	assert_int_equal(a.state_then, DEDUP_NEW);
	assert_int_equal(dedup_find(d, "u", "e", &seq), DEDUP_NEW);
	assert_int_equal(dedup_count(d), 0);
	assert_int_equal(dedup_add(d, "u", "e", 3, 200, DEDUP_PENDING), 0);
	assert_int_equal(dedup_find(d, "u", "e", &seq), DEDUP_PENDING);
	dedup_settle(d, "u", "e", 1, record_answer, &a);
	assert_int_equal(a.n, 1);
	dedup_free(d);
}

/* Loaded at start from the database: committed, answered at once. */
static void test_loaded_ids_are_committed(void **state)
{
	(void)state;
	struct dedup *d = dedup_new();
	uint64_t seq;
	assert_int_equal(dedup_add(d, "u", "old", 1, 100, DEDUP_COMMITTED), 0);
	assert_int_equal(dedup_find(d, "u", "old", &seq), DEDUP_COMMITTED);
	assert_int_equal(seq, 1);
	assert_int_equal(dedup_find(d, "v", "old", &seq), DEDUP_NEW);
	dedup_free(d);
}

/* Retention does not forget a pending id (its repeats wait on it); it
 * goes at a later prune once committed. */
static void test_prune_keeps_pending_ids(void **state)
{
	(void)state;
	struct dedup *d = dedup_new();
	struct answers a = {.d = d};
	uint64_t seq;
	assert_int_equal(dedup_add(d, "u", "a", 1, 100, DEDUP_COMMITTED), 0);
	assert_int_equal(dedup_add(d, "u", "e", 2, 200, DEDUP_PENDING), 0);
	assert_int_equal(dedup_add(d, "u", "c", 3, 300, DEDUP_COMMITTED), 0);
	assert_int_equal(dedup_park(d, "u", "e", &a, 1), 0);
	dedup_prune(d, 1000);
	assert_int_equal(dedup_find(d, "u", "a", &seq), DEDUP_NEW);
	assert_int_equal(dedup_find(d, "u", "e", &seq), DEDUP_PENDING);
	assert_int_equal(dedup_count(d), 2);
	dedup_settle(d, "u", "e", 1, record_answer, &a);
	assert_int_equal(a.n, 1);
	dedup_prune(d, 1000);
	assert_int_equal(dedup_count(d), 0);
	dedup_free(d);
}

/* Parked repeats left at the end are freed (ASan checks for leaks). */
static void test_free_with_parked_repeats(void **state)
{
	(void)state;
	struct dedup *d = dedup_new();
	assert_int_equal(dedup_add(d, "u", "e", 1, 100, DEDUP_PENDING), 0);
	assert_int_equal(dedup_park(d, "u", "e", NULL, 0), 0);
	dedup_free(d);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_repeats_get_the_commit_in_arrival_order),
	    cmocka_unit_test(test_failed_commit_frees_the_id),
	    cmocka_unit_test(test_loaded_ids_are_committed),
	    cmocka_unit_test(test_prune_keeps_pending_ids),
	    cmocka_unit_test(test_free_with_parked_repeats),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
