/*
 * procstat: /proc sampling of the sidecar (see procstat.h).
 */
#include "procstat.h"
#include "bench_common.h"
#include "proc_status.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

int proc_sample(pid_t pid, struct proc_sample *s)
{
	char path[64], line[512];
	FILE *f;

	memset(s, 0, sizeof(*s));
	s->at_ns = bench_now_ns();
	if (pid <= 0)
		return -1;
	long rss = proc_status_field(pid, "VmRSS");
	if (rss < 0)
		return -1;
	long hwm = proc_status_field(pid, "VmHWM");
	long threads = proc_status_field(pid, "Threads");
	s->rss_kb = (uint64_t)rss;
	s->hwm_kb = hwm > 0 ? (uint64_t)hwm : 0;
	s->threads = threads > 0 ? (uint64_t)threads : 0;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	if ((f = fopen(path, "r")) == NULL)
		return -1;
	size_t n = fread(line, 1, sizeof(line) - 1, f);
	fclose(f);
	line[n] = '\0';
	/* comm may hold spaces and parentheses: fields resume after the
	 * last ')'. utime and stime are fields 14 and 15. */
	char *p = strrchr(line, ')');
	if (p == NULL)
		return -1;
	unsigned long long ut, st;
	if (sscanf(p + 2,
	           "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut,
	           &st) != 2)
		return -1;
	long hz = sysconf(_SC_CLK_TCK);
	s->cpu_s = (double)(ut + st) / (double)(hz > 0 ? hz : 100);
	s->ok = 1;
	return 0;
}

pid_t proc_pid_from_file(const char *path)
{
	FILE *f = fopen(path, "r");
	long v = -1;
	if (f == NULL)
		return -1;
	if (fscanf(f, "%ld", &v) != 1)
		v = -1;
	fclose(f);
	return v > 0 ? (pid_t)v : -1;
}

double proc_self_cpu_s(void)
{
	struct rusage ru;
	if (getrusage(RUSAGE_SELF, &ru) != 0)
		return 0;
	return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
	       (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}
