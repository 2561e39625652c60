/*
 * test_cluster_publish: the shutdown contract of cluster_publish.h. The
 * sidecar closes the cluster (cluster_close frees it) before it answers
 * what is still waiting and flushes the store; a frame written or a wake-up
 * handled after that must not reach the freed cluster. Here the cluster is
 * a poisoned block: any use of it after cluster_publish_shutdown crashes
 * (or is reported by AddressSanitizer).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>
#include <string.h>

#include "cluster_publish.h"
#include "registry.h"

static void ignore_ready(struct conn *c, void *arg)
{
	(void)c;
	(void)arg;
}

static void ignore_done(void *owner, size_t index,
                        const struct router_result *res)
{
	(void)owner;
	(void)index;
	(void)res;
}

static void test_nothing_reaches_the_cluster_after_shutdown(void **state)
{
	/* Not a cluster: a use of it dereferences 0xa5a5... pointers. */
	static unsigned char poisoned[64 * 1024];
	struct registry *reg = registry_new(1 << 20, ignore_ready, NULL);
	struct cluster_publish_config cfg = {
	    .cluster = (struct cluster *)(void *)poisoned,
	    .registry = reg,
	    .on_event_done = ignore_done,
	    .max_queued = 16,
	};
	struct cluster_publish *p;
	struct user *u;

	(void)state;
	memset(poisoned, 0xa5, sizeof(poisoned));
	assert_non_null(reg);
	p = cluster_publish_new(&cfg);
	assert_non_null(p);
	u = registry_user(reg, "u1", 2, true);
	assert_non_null(u);

	cluster_publish_shutdown(p);
	/* A frame of seq 7 written to a connection while the sidecar
	 * stops: its mark would be published on the freed cluster. */
	cluster_publish_mark(p, u, 7);
	cluster_publish_handle(p, 7);
	assert_int_equal(cluster_publish_queued(p), 0);

	cluster_publish_free(p);
	registry_free(reg);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_nothing_reaches_the_cluster_after_shutdown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
