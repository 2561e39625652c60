/*
 * procstat: samples another process (the sidecar) from /proc: resident
 * memory from /proc/PID/status, CPU time from /proc/PID/stat. Used to
 * report memory per connection and CPU per delivered event.
 */
#ifndef WSBENCH_PROCSTAT_H
#define WSBENCH_PROCSTAT_H

#include <stdint.h>
#include <sys/types.h>

struct proc_sample {
	int ok;           /* 0: the process could not be read */
	int64_t at_ns;    /* CLOCK_MONOTONIC when taken */
	uint64_t rss_kb;  /* VmRSS */
	uint64_t hwm_kb;  /* VmHWM: peak RSS */
	uint64_t threads; /* Threads */
	double cpu_s;     /* utime + stime, seconds */
};

/* Fills *s; returns 0, or -1 (s->ok = 0) when pid is gone or unreadable.
 * pid <= 0 gives -1 without trying. */
int proc_sample(pid_t pid, struct proc_sample *s);
/* Reads a decimal pid from path; -1 when absent or malformed. */
pid_t proc_pid_from_file(const char *path);
/* CPU seconds of this process (all threads), from getrusage. */
double proc_self_cpu_s(void);

#endif
