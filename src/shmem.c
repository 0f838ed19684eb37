/*-------------------------------------------------------------------------
 *
 * shmem.c
 *	  Shared state of the counter extension: the launcher's latch, and one
 *	  entry per database: its worker's status, read by
 *	  counter.worker_status() (worker.c), which events table adds write
 *	  (events.c), and whether wal mode is replayed and armed (wal.c); and
 *	  the sums of hot keys' slot rows as a snapshot saw them, with the
 *	  adds to them since (read.c, slots.c).
 *
 * A database's entry is claimed here only, by the first that needs it
 * (the launcher, a backend adding events, the worker's wal round), and
 * lives as long as shared memory: a restarted launcher or worker keeps
 * it.  The launcher's rescan frees the entries of dropped databases; when
 * every entry is taken, a claim reuses one of a dropped database.
 *
 * Everything here is protected by the "counter" LWLock tranche's single
 * lock, except launcher_latch, which is set once by the launcher, the
 * events tables' state bits (events.c) and wal mode's flags (wal.c),
 * written under the lock but read without it, and the slot sums, each
 * under a spinlock of its own.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/transam.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "common/hashfn.h"
#include "common/int.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/shmem.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "shmem.h"

CounterShared *counter_shared = NULL;

/* how often a backend without a shared entry looks for one again */
#define ENTRY_RETRY_MS		10000

/* Shared memory of the state below. */
Size
CounterShmemSize(void)
{
	return MAXALIGN(sizeof(CounterShared));
}

/*
 * Create or attach to the shared state; called from the shmem startup hook
 * under AddinShmemInitLock.
 */
void
CounterShmemInit(void)
{
	bool		found;

	counter_shared = ShmemInitStruct("counter", sizeof(CounterShared), &found);
	if (!found)
	{
		int			i;

		memset(counter_shared, 0, sizeof(CounterShared));
		counter_shared->lock = &(GetNamedLWLockTranche("counter"))->lock;
		for (i = 0; i < COUNTER_MAX_DATABASES; i++)
		{
			CounterDb  *db = &counter_shared->dbs[i];
			int			b;

			pg_atomic_init_u32(&db->events.bits, 0);
			SpinLockInit(&db->asks.mutex);
			for (b = 0; b < COUNTER_SLOT_BUCKETS; b++)
			{
				pg_atomic_init_u64(&db->slot_rows.written[b], 0);
				pg_atomic_init_u64(&db->slot_rows.none_at[b], 0);
			}
		}
		for (i = 0; i < COUNTER_SUM_ENTRIES; i++)
			SpinLockInit(&counter_shared->sums[i].mutex);
	}
}

/* Make entry db free, its parts as a new claim finds them. */
static void
db_reset(CounterDb *db, Oid dboid)
{
	int			b;

	db->dboid = dboid;
	memset(&db->worker, 0, sizeof(CounterDbWorker));
	db->events.incarnation = InvalidOid;
	pg_atomic_write_u32(&db->events.bits, 0);
	db->wal.ready = false;
	db->wal.armed = false;
	SpinLockAcquire(&db->asks.mutex);
	db->asks.mesh = false;
	db->asks.n = 0;
	SpinLockRelease(&db->asks.mutex);
	for (b = 0; b < COUNTER_SLOT_BUCKETS; b++)
		pg_atomic_write_u64(&db->slot_rows.none_at[b], 0);
}

/*
 * The entry of database dboid, or NULL; with create, claimed when missing:
 * a free entry, else one of a database in stale[] (dropped, as checked
 * before taking the lock) whose worker is not running.  Caller holds the
 * lock (exclusively when create).
 */
static CounterDb *
db_find(Oid dboid, bool create, Oid *stale, int nstale)
{
	CounterDb  *free_db = NULL;
	int			i;
	int			j;

	for (i = 0; i < COUNTER_MAX_DATABASES; i++)
	{
		CounterDb  *db = &counter_shared->dbs[i];

		if (db->dboid == dboid)
			return db;
		for (j = 0; j < nstale && free_db == NULL; j++)
			if (db->dboid == stale[j] && db->worker.pid == 0)
				free_db = db;
		if (db->dboid == InvalidOid && free_db == NULL)
			free_db = db;
	}
	if (!create || free_db == NULL)
		return NULL;
	db_reset(free_db, dboid);
	return free_db;
}

/* The entry of database dboid, or NULL; takes the lock. */
CounterDb *
CounterDbLookup(Oid dboid)
{
	CounterDb  *db;

	LWLockAcquire(counter_shared->lock, LW_SHARED);
	db = db_find(dboid, false, NULL, 0);
	LWLockRelease(counter_shared->lock);
	return db;
}

/*
 * The entry of database dboid, claimed when missing; takes the lock.  Every
 * database's entry lives as long as shared memory, until the database is
 * dropped: the launcher's rescan then frees it (CounterDbFree), and when
 * all are taken a claim in a transaction reuses one of a dropped database.
 * NULL when none is free.  The pointer may be kept: check its dboid at
 * each use.
 */
CounterDb *
CounterDbClaim(Oid dboid)
{
	Oid			stale[COUNTER_MAX_DATABASES];
	int			nstale = 0;
	CounterDb  *db;
	int			i;

	LWLockAcquire(counter_shared->lock, LW_EXCLUSIVE);
	db = db_find(dboid, true, NULL, 0);
	LWLockRelease(counter_shared->lock);
	if (db != NULL || !IsTransactionState())
		return db;

	/* all taken: entries of dropped databases may be reused */
	for (i = 0; i < COUNTER_MAX_DATABASES; i++)
	{
		Oid			other = counter_shared->dbs[i].dboid;

		if (OidIsValid(other) &&
			!SearchSysCacheExists1(DATABASEOID, ObjectIdGetDatum(other)))
			stale[nstale++] = other;
	}
	LWLockAcquire(counter_shared->lock, LW_EXCLUSIVE);
	db = db_find(dboid, true, stale, nstale);
	LWLockRelease(counter_shared->lock);
	return db;
}

/*
 * Our database's entry, or NULL (no shared memory, or every entry taken by
 * an existing database: then looked for again only every ENTRY_RETRY_MS,
 * as NULL is safe, only slower).  The pointer is kept, and checked against
 * MyDatabaseId at each use: an entry goes to another database only once
 * ours is dropped.
 */
CounterDb *
CounterMyDb(void)
{
	static CounterDb *db = NULL;
	static TimestampTz retry_at = 0;

	if (counter_shared == NULL)
		return NULL;
	if (db != NULL && db->dboid == MyDatabaseId)
		return db;
	if (retry_at != 0 && GetCurrentTimestamp() < retry_at)
		return NULL;
	db = CounterDbClaim(MyDatabaseId);
	if (db == NULL)
		retry_at = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), ENTRY_RETRY_MS);
	return db;
}

/*
 * Whether counter_id has no slot row a snapshot taken before this call can
 * see (slots.c proves it, and counts every insert before its transaction
 * commits).  Never on a standby, whose rows come from the primary's WAL.
 */
bool
CounterSlotRowsNone(int32 counter_id)
{
	CounterDb  *db;
	int			b = (uint32) counter_id % COUNTER_SLOT_BUCKETS;

	if (RecoveryInProgress() || (db = CounterMyDb()) == NULL)
		return false;
	pg_memory_barrier();
	return pg_atomic_read_u64(&db->slot_rows.none_at[b]) ==
		pg_atomic_read_u64(&db->slot_rows.written[b]) + 1;
}

/*
 * How far (in transaction ids) from when an entry was taken its adds are
 * used: far enough from a wraparound that every xid it holds compares
 * right with the current ones.
 */
#define SUM_STAMP_RANGE		(UINT64CONST(1) << 30)

/*
 * The entry of the slot sums kept for (this database, counter_id, key);
 * NULL without the shared memory (the library not preloaded).
 */
static CounterSlotSum *
slot_sum_entry(int32 counter_id, const char *key, int keylen)
{
	uint32		h;

	if (counter_shared == NULL)
		return NULL;
	h = hash_bytes((const unsigned char *) key, keylen);
	h = hash_combine(h, hash_combine(MyDatabaseId, (uint32) counter_id));
	return &counter_shared->sums[h % COUNTER_SUM_ENTRIES];
}

/* Whether entry e is taken for (this database, counter_id, key); caller holds its mutex. */
static bool
slot_sum_holds(CounterSlotSum *e, int32 counter_id, const char *key, int keylen)
{
	return e->dboid == MyDatabaseId && e->counter_id == counter_id &&
		e->keylen == keylen && memcmp(e->key, key, keylen) == 0;
}

/* Whether two snapshot forms are the same. */
static bool
slot_sum_same_form(const CounterSnapshotForm *a, const CounterSnapshotForm *b)
{
	return a->xmin == b->xmin && a->xmax == b->xmax && a->nxids == b->nxids &&
		memcmp(a->xids, b->xids, a->nxids * sizeof(TransactionId)) == 0;
}

/*
 * The sum of the slot rows of (counter_id, key) and, with want, their
 * latest touched, if a read in a snapshot of the same form kept them
 * (CounterSlotSumPut): true.  Otherwise, with base, what the entry holds
 * of the key to compute it from (base->complete_from invalid: nothing, or
 * an entry taken too long ago).
 */
bool
CounterSlotSumGet(int32 counter_id, const char *key, int keylen,
				  const CounterSnapshotForm *snapshot, bool want,
				  int64 *sum, TimestampTz *latest, CounterSlotSumBase *base)
{
	CounterSlotSum *e = slot_sum_entry(counter_id, key, keylen);
	bool		found = false;

	Assert(keylen <= COUNTER_SUM_KEY);
	if (base != NULL)
		base->complete_from = InvalidTransactionId;
	if (e == NULL)
		return false;
	SpinLockAcquire(&e->mutex);
	if (slot_sum_holds(e, counter_id, key, keylen))
	{
		if (slot_sum_same_form(&e->sum.snapshot, snapshot) && (e->latest_known || !want))
		{
			*sum = e->sum.sum;
			*latest = e->latest_known ? e->latest : DT_NOBEGIN;
			found = true;
		}
		else if (base != NULL && e->base && !e->taking)
			memcpy(base, &e->sum, offsetof(CounterSlotSumBase, adds) +
				   e->sum.nadds * sizeof(CounterSumAdd));
	}
	SpinLockRelease(&e->mutex);
	if (base != NULL && TransactionIdIsValid(base->complete_from) &&
		U64FromFullTransactionId(ReadNextFullTransactionId()) - base->stamp >= SUM_STAMP_RANGE)
		base->complete_from = InvalidTransactionId;
	return found;
}

/*
 * Keep the sum of the slot rows of (counter_id, key) as a snapshot of this
 * form sees them, with their latest touched (NULL: not known), in place of
 * what the entry held; with base, adds may be summed on it.  An entry
 * taken for another key, or too long ago, is taken for this one: without
 * adds, and complete from the next transaction id read after (any that
 * wrote the key before has a lower one), not used as a base until then.
 */
void
CounterSlotSumPut(int32 counter_id, const char *key, int keylen,
				  const CounterSnapshotForm *snapshot, int64 sum,
				  const TimestampTz *latest, bool base)
{
	CounterSlotSum *e = slot_sum_entry(counter_id, key, keylen);
	FullTransactionId now;
	uint64		taken = 0;

	Assert(keylen <= COUNTER_SUM_KEY);
	if (e == NULL)
		return;
	now = ReadNextFullTransactionId();
	SpinLockAcquire(&e->mutex);
	if (!slot_sum_holds(e, counter_id, key, keylen) ||
		U64FromFullTransactionId(now) - e->sum.stamp >= SUM_STAMP_RANGE)
	{
		e->dboid = MyDatabaseId;
		e->counter_id = counter_id;
		e->keylen = keylen;
		memcpy(e->key, key, keylen);
		taken = ++e->taken;
		e->taking = true;
		e->sum.complete_from = XidFromFullTransactionId(now);
		e->sum.stamp = U64FromFullTransactionId(now);
		e->sum.nadds = 0;
		e->next = 0;
	}
	e->sum.sum = sum;
	e->latest_known = (latest != NULL);
	e->latest = latest != NULL ? *latest : DT_NOBEGIN;
	e->base = base;
	e->sum.snapshot.xmin = snapshot->xmin;
	e->sum.snapshot.xmax = snapshot->xmax;
	e->sum.snapshot.nxids = snapshot->nxids;
	memcpy(e->sum.snapshot.xids, snapshot->xids,
		   snapshot->nxids * sizeof(TransactionId));
	SpinLockRelease(&e->mutex);
	if (taken != 0)
	{
		TransactionId next = ReadNextTransactionId();

		/* a barrier meanwhile may have raised complete_from further */
		SpinLockAcquire(&e->mutex);
		if (e->taken == taken)
		{
			if (TransactionIdPrecedes(e->sum.complete_from, next))
				e->sum.complete_from = next;
			e->taking = false;
		}
		SpinLockRelease(&e->mutex);
	}
}

/*
 * Append the add (xid, delta) to the ring of entry e (mutex held): a full
 * ring drops its oldest add, and the entry is then complete only from the
 * transaction after that add's on.
 */
static void
slot_sum_append(CounterSlotSum *e, TransactionId xid, int64 delta)
{
	CounterSlotSumBase *b = &e->sum;

	if (b->nadds == COUNTER_SUM_ADDS)
	{
		TransactionId dropped = b->adds[e->next].xid;

		if (TransactionIdFollowsOrEquals(dropped, b->complete_from))
		{
			b->complete_from = dropped;
			TransactionIdAdvance(b->complete_from);
		}
	}
	else
		b->nadds++;
	b->adds[e->next].xid = xid;
	b->adds[e->next].delta = delta;
	e->next = (e->next + 1) % COUNTER_SUM_ADDS;
}

/*
 * Note the change delta an add of this (sub)transaction made to a slot row
 * of (counter_id, key), before it can commit, in the entry taken for the
 * key if there is one; merged into the entry's newest add when that is of
 * the same transaction.
 */
void
CounterSlotSumNote(int32 counter_id, const char *key, int keylen, int64 delta)
{
	CounterSlotSum *e;
	TransactionId xid;

	if (keylen > COUNTER_SUM_KEY || delta == 0 ||
		(e = slot_sum_entry(counter_id, key, keylen)) == NULL)
		return;
	xid = GetCurrentTransactionId();
	SpinLockAcquire(&e->mutex);
	if (slot_sum_holds(e, counter_id, key, keylen))
	{
		CounterSumAdd *last = &e->sum.adds[(e->next + COUNTER_SUM_ADDS - 1) % COUNTER_SUM_ADDS];
		int64		merged;

		if (e->sum.nadds > 0 && last->xid == xid &&
			!pg_add_s64_overflow(last->delta, delta, &merged))
			last->delta = merged;
		else
			slot_sum_append(e, xid, delta);
	}
	SpinLockRelease(&e->mutex);
}

/*
 * A statement of this transaction changed slot rows other than by an add
 * (a compaction, a delete, a restore): every entry of the database is
 * complete only from the next transaction id on, so that no sum is
 * computed across this transaction's commit from adds.
 */
void
CounterSlotSumBarrier(void)
{
	TransactionId next;
	int			i;

	if (counter_shared == NULL)
		return;
	next = ReadNextTransactionId();
	for (i = 0; i < COUNTER_SUM_ENTRIES; i++)
	{
		CounterSlotSum *e = &counter_shared->sums[i];

		SpinLockAcquire(&e->mutex);
		if (e->dboid == MyDatabaseId && TransactionIdPrecedes(e->sum.complete_from, next))
			e->sum.complete_from = next;
		SpinLockRelease(&e->mutex);
	}
}

/* Free the entry of a dropped database; caller holds the lock exclusively. */
void
CounterDbFree(CounterDb *db)
{
	db_reset(db, InvalidOid);
}

/*
 * The worker status entry of a database, or NULL; with create, the
 * database's entry is claimed if need be (NULL only when all are taken)
 * and its worker status set up when it has none.  Caller holds the lock
 * exclusively when create.
 */
CounterDbWorker *
CounterWorkerEntry(Oid dboid, bool create)
{
	CounterDb  *db = db_find(dboid, create, NULL, 0);

	if (db == NULL)
		return NULL;
	if (db->worker.dboid != dboid && create)
	{
		memset(&db->worker, 0, sizeof(CounterDbWorker));
		db->worker.dboid = dboid;
		db->worker.wanted = true;
	}
	return db->worker.dboid == dboid ? &db->worker : NULL;
}
