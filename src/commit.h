/*-------------------------------------------------------------------------
 *
 * commit.h
 *	  The transaction's buffered and wal-mode adds, and its commit callbacks.
 *
 *-------------------------------------------------------------------------
 */
#ifndef COUNTER_COMMIT_H
#define COUNTER_COMMIT_H

#include "buffer.h"
#include "catalog.h"

extern bool CounterCommitAdd(CounterMeta *meta, text *key, int64 delta);
extern int64 CounterCommitPending(CounterMeta *meta, text *key, TimestampTz *latest);
extern int64 CounterCommitPendingKey(CounterBufferKey *bk, TimestampTz *latest);
extern int	CounterCommitTake(CounterBufferTaken *out);

#endif							/* COUNTER_COMMIT_H */
