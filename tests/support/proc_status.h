/*
 * proc_status: one field of /proc/PID/status, for the tests' and the
 * benchmark's view of the sidecar (memory, threads).
 */
#ifndef WSGATE_PROC_STATUS_H
#define WSGATE_PROC_STATUS_H

#include <sys/types.h>

/* The number after "key:" (VmRSS and VmHWM are in KiB); -1 when the
 * process or the field is not there. */
long proc_status_field(pid_t pid, const char *key);

#endif
