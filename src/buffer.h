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

#define COUNTER_BUFFER_KEY_MAX	64	/* longer keys go to events */

/* hash key of an entry: zero-padded, compared bytewise */
typedef struct CounterBufferKey
{
	Oid			dboid;
	int32		counter_id;
	TimestampTz created;
	int32		keylen;
	char		key[COUNTER_BUFFER_KEY_MAX];
} CounterBufferKey;

/* an entry of the hash as CounterBufferEntries lists it */
typedef struct CounterBufferEntry
{
	CounterBufferKey key;
	int64		sum;			/* base + added */
} CounterBufferEntry;

extern Size CounterBufferShmemSize(void);
extern void CounterBufferShmemInit(void);
extern bool CounterBufferMakeKey(CounterBufferKey *bk, CounterMeta *meta, text *key);
extern bool CounterBufferReserve(CounterMeta *meta, text *key, CounterBufferKey *bk,
								 int64 delta);
extern void CounterBufferApply(CounterBufferKey *bk, int64 delta, bool commit);
extern void CounterBufferTakenCommit(void);
extern void CounterBufferTakenAbort(SubTransactionId subxid);
extern void CounterBufferTakenSubCommit(SubTransactionId subxid, SubTransactionId parent);
extern void CounterBufferTakenReset(void);
extern CounterBufferEntry *CounterBufferEntries(CounterMeta *meta, int *n);
extern int64 CounterBufferUnflushed(CounterMeta *meta);
extern int64 CounterBufferFallbacks(CounterMeta *meta);
extern int128 CounterBufferPending(CounterMeta *meta, text *key, Snapshot snapshot,
								   TimestampTz *latest);
/* the entries a flush took, as arrays (in TopTransactionContext) */
typedef struct CounterBufferTaken
{
	int			n;
	Datum		ids;			/* int4[]: counter ids */
	Datum		created;		/* timestamptz[]: the counters' creation times */
	Datum		keys;			/* text[] */
	Datum		amounts;		/* int8[]: taken since the last flush */
	Datum		times;			/* timestamptz[]: their last add times */
} CounterBufferTaken;
extern int	CounterBufferTake(CounterBufferTaken *out);

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
