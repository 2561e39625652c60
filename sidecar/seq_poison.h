/*
 * seq_poison: the users whose events after a failed commit must fail too,
 * so that each user's stored seqs stay dense (1, 2, 3, ... with no gap).
 *
 * When a transaction holding events of a user fails, the user is poisoned
 * from the lowest failed seq F: the service thread takes those seqs back
 * (its last_seq becomes at most F - 1) only when it sees the failure, and
 * the user's events it accepted before that -- already queued behind the
 * failed transaction, with seqs > F -- would leave a gap if they were
 * written. So an event of a poisoned user with seq > F fails without being
 * written; the first one with seq <= F is the first the service thread
 * accepted after taking the seqs back, and lifts the poison.
 *
 * Memory: one small entry per poisoned user, until its next event.
 *
 * Threads: the store's committer only (whoever holds `writing`).
 */
#ifndef WSGATE_SEQ_POISON_H
#define WSGATE_SEQ_POISON_H

#include <stdint.h>

struct seq_poison;

struct seq_poison *seq_poison_new(void);
void seq_poison_free(struct seq_poison *p);
/* Whether user_id's event seq may be written: 0, and a seq <= the user's
 * F lifts the poison; 1 when it must fail (seq > F). */
int seq_poison_check(struct seq_poison *p, const char *user_id, uint64_t seq);
/* A transaction holding user_id's event seq failed: F becomes seq if it is
 * lower (or the user was not poisoned). -1 on allocation failure. */
int seq_poison_mark(struct seq_poison *p, const char *user_id, uint64_t seq);

#endif
