/*
 * ctl_exit: the exit statuses of wsgatectl (DESIGN.md, "Admin CLI"), shared
 * by the dispatcher and the command modules.
 */
#ifndef WSGATE_CTL_EXIT_H
#define WSGATE_CTL_EXIT_H

enum {
	EXIT_OK = 0,    /* success */
	EXIT_CHECK = 1, /* a check failed: violation, refusal, not found */
	EXIT_USAGE = 2, /* usage, connection or database error */
};

#endif
