/*-------------------------------------------------------------------------
 *
 * buffer.h
 *	  Buffered and wal modes' shared hash of adds, flushed by the worker.
 *
 *-------------------------------------------------------------------------
 */
#ifndef COUNTER_BUFFER_H
#define COUNTER_BUFFER_H

#include "catalog.h"
#include "utils/snapshot.h"

extern Size CounterBufferShmemSize(void);
extern void CounterBufferShmemInit(void);
extern bool CounterBufferAdd(CounterMeta *meta, text *key, int64 delta);
extern int128 CounterBufferPending(CounterMeta *meta, text *key, Snapshot snapshot);
extern int	CounterBufferTake(Datum *values);
extern int64 CounterBufferUnflushed(CounterMeta *meta);

/* one add of a wal-mode message, put back by the replay after a restart */
typedef struct CounterWalAdd
{
	int32		counter_id;
	TimestampTz created;
	text	   *key;
	int64		delta;
} CounterWalAdd;
extern void CounterBufferReplay(CounterWalAdd *adds, int n);

#endif							/* COUNTER_BUFFER_H */
