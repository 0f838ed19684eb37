/*-------------------------------------------------------------------------
 *
 * shmem.h
 *	  Shared state of the launcher and the per-database workers.
 *
 *-------------------------------------------------------------------------
 */
#ifndef COUNTER_SHMEM_H
#define COUNTER_SHMEM_H

#include "postgres.h"
#include "port/atomics.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/spin.h"
#include "utils/timestamp.h"

/*
 * A database's worker status (worker.c); dboid is InvalidOid while no
 * worker is meant for the database (a template, say).
 */
typedef struct CounterDbWorker
{
	Oid			dboid;
	pid_t		pid;
	TimestampTz started;
	TimestampTz last_compaction;
	int64		compactions;
	int64		events_compacted;
	int64		slots_collected;
	int64		last_batch;
	double		last_rate;		/* events per second of the last batch */
	bool		wanted;
} CounterDbWorker;

#define COUNTER_MAX_DATABASES	64

/* which events table adds write, per database (events.c) */
typedef struct CounterEventsState
{
	Oid			incarnation;	/* counter.events_1 when set up */
	pg_atomic_uint32 bits;
} CounterEventsState;

/* wal mode's state of a database (wal.c): replayed since shared memory was made, armed */
typedef struct CounterWalState
{
	bool		ready;
	bool		armed;
} CounterWalState;

/*
 * Adds refused at a bound on this node, by counter and hash of key, for the
 * worker to ask the mesh for rights (rights.c), noted only while the node
 * is in a mesh; under mutex.
 */
#define COUNTER_MAX_ASKS	64
typedef struct CounterAsk
{
	int32		counter_id;
	int32		key_hash;		/* hashtext() of the key */
	bool		max;			/* refused at the max bound, not min */
	int32		count;
} CounterAsk;

typedef struct CounterAsks
{
	slock_t		mutex;
	bool		mesh;			/* in a mesh of more than one, as the worker saw last */
	bool		single;			/* the worker's last round found no mesh */
	int			n;
	CounterAsk	ask[COUNTER_MAX_ASKS];
} CounterAsks;

/*
 * Slot rows, per bucket of counters (id % COUNTER_SLOT_BUCKETS), per
 * database (slots.c): the slot rows inserted, ever, and that count + 1 when
 * a compaction found none of the bucket's counters with a slot row any
 * snapshot can see (0: not known).  While none_at = written + 1 a read
 * skips the slot rows of the bucket's counters.
 */
#define COUNTER_SLOT_BUCKETS	256
typedef struct CounterSlotRows
{
	pg_atomic_uint64 written[COUNTER_SLOT_BUCKETS];
	pg_atomic_uint64 none_at[COUNTER_SLOT_BUCKETS];
} CounterSlotRows;

/* the shared state of one database, claimed in shmem.c only */
typedef struct CounterDb
{
	Oid			dboid;			/* InvalidOid: free */
	CounterDbWorker worker;
	CounterEventsState events;
	CounterWalState wal;
	CounterAsks asks;
	CounterSlotRows slot_rows;
} CounterDb;

/*
 * The sum of a key's slot rows as one snapshot sees them (read.c), for the
 * reads of a hot key: snapshot is the snapshot's xmin, xmax and its sorted
 * in-progress xids (xip and subxip), which together decide what it sees of
 * other transactions.  A read in a snapshot of the same form takes the sum
 * as it is; one in another snapshot adds the adds of the transactions that
 * one sees and the other does not (adds: the change each add made to the
 * key's slot rows, with its transaction id, noted before it can commit),
 * which holds while the entry has every add of a transaction from
 * complete_from on and no statement changed the rows otherwise (a
 * compaction, a delete: CounterSlotSumBarrier raises complete_from past
 * its transaction).  One entry per hash of (database, counter, key), under
 * mutex; keys longer than COUNTER_SUM_KEY bytes are not kept.
 */
#define COUNTER_SUM_ENTRIES		1024
#define COUNTER_SUM_KEY			64
#define COUNTER_SUM_XIDS		128
#define COUNTER_SUM_ADDS		256
typedef struct CounterSnapshotForm
{
	TransactionId xmin;
	TransactionId xmax;
	int			nxids;
	TransactionId xids[COUNTER_SUM_XIDS];
} CounterSnapshotForm;

/* one add's change to a key's slot rows, by transaction (or subtransaction) xid */
typedef struct CounterSumAdd
{
	TransactionId xid;
	int64		delta;
} CounterSumAdd;

/*
 * What a read takes of an entry: its sum in its snapshot's form, and the
 * adds from which another form's sum follows (from complete_from on;
 * stamp, the next full transaction id when the entry was taken, tells
 * xids of another epoch).
 */
typedef struct CounterSlotSumBase
{
	int64		sum;
	CounterSnapshotForm snapshot;
	TransactionId complete_from;
	uint64		stamp;
	int			nadds;
	CounterSumAdd adds[COUNTER_SUM_ADDS];
} CounterSlotSumBase;

typedef struct CounterSlotSum
{
	slock_t		mutex;
	Oid			dboid;			/* InvalidOid: empty */
	int32		counter_id;
	int			keylen;
	char		key[COUNTER_SUM_KEY];
	uint64		taken;			/* times the entry was taken for a key */
	bool		taking;			/* taken, complete_from not yet final */
	bool		latest_known;	/* latest is known (a scan's, not a sum of adds) */
	bool		base;			/* the sum may be a base for adds (1.4's schema) */
	TimestampTz latest;			/* latest touched of a nonzero slot row */
	int			next;			/* where the next add goes in the ring */
	CounterSlotSumBase sum;		/* adds: a ring, nadds of them up to next */
} CounterSlotSum;

typedef struct CounterShared
{
	LWLock	   *lock;
	pid_t		launcher_pid;
	Latch	   *launcher_latch;
	bool		rescan;
	CounterDb	dbs[COUNTER_MAX_DATABASES];
	CounterSlotSum sums[COUNTER_SUM_ENTRIES];
} CounterShared;

extern CounterShared *counter_shared;
extern Size CounterShmemSize(void);
extern CounterDb *CounterMyDb(void);
extern bool CounterSlotRowsNone(int32 counter_id);
extern void CounterShmemInit(void);
extern bool CounterSlotSumGet(int32 counter_id, const char *key, int keylen,
							  const CounterSnapshotForm *snapshot, bool want,
							  int64 *sum, TimestampTz *latest,
							  CounterSlotSumBase *base);
extern void CounterSlotSumPut(int32 counter_id, const char *key, int keylen,
							  const CounterSnapshotForm *snapshot, int64 sum,
							  const TimestampTz *latest, bool base);
extern void CounterSlotSumNote(int32 counter_id, const char *key, int keylen,
							   int64 delta);
extern void CounterSlotSumBarrier(void);
extern CounterDb *CounterDbLookup(Oid dboid);
extern CounterDb *CounterDbClaim(Oid dboid);
extern void CounterDbFree(CounterDb *db);
extern CounterDbWorker *CounterWorkerEntry(Oid dboid, bool create);

#endif							/* COUNTER_SHMEM_H */
