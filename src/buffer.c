/*-------------------------------------------------------------------------
 *
 * buffer.c
 *	  Buffered mode: adds held in shared memory, flushed by the worker.
 *
 * An add of a buffered counter writes neither heap nor WAL: it is kept in
 * backend memory until its transaction commits, then added with one atomic
 * operation to the key's entry in a shared hash (a rolled-back or
 * subtransaction-aborted add never arrives).  The worker flushes entries
 * into totals and rollups, like a compaction, at its first round once
 * counter.flush_interval has passed.  A crash loses what was not flushed
 * yet: at most max(flush_interval, naptime) of adds, shown per counter as
 * buffered_unflushed in counter.stats.  When
 * the hash is full, an add of a new key is stored as an event instead:
 * never dropped.
 *
 * Exact reads.  An entry holds
 *		base	the key's flushed amount F when the entry was made,
 *		added	the sum of all adds committed into the entry,
 *		shadow	F as the worker last committed it (the worker's own field);
 * and the table counter.flushed holds F per key, raised in the same
 * transaction that moves the amount into totals.  A reader adds
 * base + added - F as its snapshot sees F: before the flush commit the
 * snapshot sees neither the new F nor the new totals, after it both, so the
 * sum is exact either way.  F only grows through flushes of an existing
 * entry, so the F read when an entry is made is current.
 *
 * Entries are keyed by database, counter id and creation time (one id can
 * come back after DROP EXTENSION), and key; keys longer than
 * BUFFER_KEY_MAX bytes go to events.  The worker removes entries of
 * counters that no longer exist.
 *
 *-------------------------------------------------------------------------
 */
#include "counter.h"

#include "access/genam.h"
#include "access/table.h"
#include "access/xact.h"
#include "funcapi.h"
#include "catalog/pg_collation.h"
#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "miscadmin.h"
#include "port/atomics.h"
#include "storage/shmem.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

#define BUFFER_KEY_MAX			64
#define BUFFER_PARTITIONS		16

/* hash key of an entry: zero-padded, compared bytewise */
typedef struct BufferKey
{
	Oid			dboid;
	int32		counter_id;
	TimestampTz created;
	int32		keylen;
	char		key[BUFFER_KEY_MAX];
} BufferKey;

typedef struct BufferEntry
{
	BufferKey	key;
	int64		base;
	pg_atomic_uint64 added;		/* an int64, wrapping as two's complement */
	int64		shadow;
} BufferEntry;

/* an add of this transaction, applied at commit */
typedef struct PendingAdd
{
	BufferKey	key;
	int64		delta;
	SubTransactionId subxid;
	bool		logged;			/* of a wal-mode counter: goes into the WAL */
} PendingAdd;

PG_FUNCTION_INFO_V1(counter_buffered);
PG_FUNCTION_INFO_V1(counter_buffered_unflushed);

static HTAB *buffer_hash = NULL;
static LWLockPadded *buffer_locks = NULL;
static List *pending = NIL;		/* of PendingAdd, in TopTransactionContext */
static bool callbacks_registered = false;

/* entries taken by this transaction's flush, settled at its commit */
static BufferKey *taken_keys = NULL;
static int64 *taken_amounts = NULL;
static int	taken_count = 0;

/* Shared memory of the hash and its partition locks. */
Size
CounterBufferShmemSize(void)
{
	return add_size(hash_estimate_size(counter_buffered_keys, sizeof(BufferEntry)),
					MAXALIGN(sizeof(LWLockPadded) * BUFFER_PARTITIONS));
}

/* Create or attach to the hash; called from the shmem startup hook. */
void
CounterBufferShmemInit(void)
{
	HASHCTL		info;
	bool		found;
	int			i;

	buffer_locks = ShmemInitStruct("counter buffer locks",
								   sizeof(LWLockPadded) * BUFFER_PARTITIONS, &found);
	if (!found)
	{
		int			tranche = LWLockNewTrancheId();

		for (i = 0; i < BUFFER_PARTITIONS; i++)
			LWLockInitialize(&buffer_locks[i].lock, tranche);
	}
	LWLockRegisterTranche(buffer_locks[0].lock.tranche, "counter buffer");

	info.keysize = sizeof(BufferKey);
	info.entrysize = sizeof(BufferEntry);
	info.num_partitions = BUFFER_PARTITIONS;
	buffer_hash = ShmemInitHash("counter buffer", counter_buffered_keys,
								counter_buffered_keys, &info,
								HASH_ELEM | HASH_BLOBS | HASH_PARTITION);
}

/* Fill the hash key of (counter, key); false when the key is too long. */
static bool
make_key(BufferKey *bk, CounterMeta *meta, text *key)
{
	int			len = VARSIZE_ANY_EXHDR(key);

	if (len > BUFFER_KEY_MAX)
		return false;
	memset(bk, 0, sizeof(BufferKey));
	bk->dboid = MyDatabaseId;
	bk->counter_id = meta->id;
	bk->created = meta->created;
	bk->keylen = len;
	memcpy(bk->key, VARDATA_ANY(key), len);
	return true;
}

/* The partition lock of a hash code. */
static LWLock *
partition_lock(uint32 hashcode)
{
	return &buffer_locks[hashcode % BUFFER_PARTITIONS].lock;
}

/* Take every partition lock, in order, to read the whole hash stably. */
static void
lock_all_partitions(LWLockMode mode)
{
	int			i;

	for (i = 0; i < BUFFER_PARTITIONS; i++)
		LWLockAcquire(&buffer_locks[i].lock, mode);
}

/* Undo lock_all_partitions. */
static void
unlock_all_partitions(void)
{
	int			i;

	for (i = 0; i < BUFFER_PARTITIONS; i++)
		LWLockRelease(&buffer_locks[i].lock);
}

/* This transaction's adds to the entry bk, not yet applied (commit does). */
static int64
own_pending(BufferKey *bk)
{
	int64		sum = 0;
	ListCell   *lc;

	foreach(lc, pending)
	{
		PendingAdd *p = lfirst(lc);

		if (memcmp(&p->key, bk, sizeof(BufferKey)) == 0)
			sum += p->delta;
	}
	return sum;
}

/* The key's flushed amount F in snapshot (0 without a row). */
static int64
read_flushed(CounterMeta *meta, text *key, Snapshot snapshot)
{
	CounterRels *r = CounterGetRels();
	Relation	rel = table_open(r->flushed, AccessShareLock);
	Relation	idx = index_open(r->flushed_pkey, AccessShareLock);
	TupleTableSlot *slot = table_slot_create(rel, NULL);
	IndexScanDesc scan;
	ScanKeyData keys[2];
	int64		f = 0;

	ScanKeyInit(&keys[0], 1, BTEqualStrategyNumber, F_INT4EQ, Int32GetDatum(meta->id));
	ScanKeyInit(&keys[1], 2, BTEqualStrategyNumber, F_TEXTEQ, PointerGetDatum(key));
	keys[1].sk_collation = C_COLLATION_OID;
	scan = index_beginscan(rel, idx, snapshot, 2, 0);
	index_rescan(scan, keys, 2, NULL, 0);
	if (index_getnext_slot(scan, ForwardScanDirection, slot))
	{
		bool		isnull;

		f = DatumGetInt64(slot_getattr(slot, 3, &isnull));
	}
	index_endscan(scan);
	ExecDropSingleTupleTableSlot(slot);
	/* held to the end of the transaction, as sum_rows() holds totals' */
	index_close(idx, NoLock);
	table_close(rel, NoLock);
	return f;
}

static void settle_taken(void);

/*
 * Add delta to the entry bk, which cannot fail: no entry means its counter
 * was dropped, and the add with it.
 */
static void
apply_delta(BufferKey *bk, int64 delta)
{
	uint32		hashcode = get_hash_value(buffer_hash, bk);
	LWLock	   *lock = partition_lock(hashcode);
	BufferEntry *e;

	LWLockAcquire(lock, LW_SHARED);
	e = hash_search_with_hash_value(buffer_hash, bk, hashcode, HASH_FIND, NULL);
	if (e != NULL)
		pg_atomic_fetch_add_u64(&e->added, (uint64) delta);
	LWLockRelease(lock);
}

/*
 * At pre-commit: write the surviving adds of wal-mode counters as one WAL
 * record (wal.c), which makes them as durable as the commit.
 */
static void
log_pending(void)
{
	StringInfoData buf;
	ListCell   *lc;
	bool		any = false;

	foreach(lc, pending)
	{
		PendingAdd *p = lfirst(lc);

		if (!p->logged)
			continue;
		if (!any)
			CounterWalBegin(&buf);
		any = true;
		CounterWalAppend(&buf, p->key.counter_id, p->key.created, p->key.key,
						 p->key.keylen, p->delta);
	}
	if (any)
		CounterWalWrite(&buf);
}

/*
 * Transaction callback: once committed, apply this transaction's adds to
 * shared memory, and move the shadows of the entries it flushed.
 */
static void
buffer_xact_callback(XactEvent event, void *arg)
{
	ListCell   *lc;

	if (event == XACT_EVENT_PRE_PREPARE && pending != NIL)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("cannot prepare a transaction that added to a buffered or wal-mode counter")));
	if (event == XACT_EVENT_PRE_COMMIT)
		log_pending();
	if (event == XACT_EVENT_COMMIT)
	{
		bool		logged = CounterWalApplyBegin();

		foreach(lc, pending)
		{
			PendingAdd *p = lfirst(lc);

			apply_delta(&p->key, p->delta);
		}
		if (logged)
			CounterWalApplyEnd();
		settle_taken();
	}
	if (event == XACT_EVENT_ABORT)
		CounterWalAbort();
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT ||
		event == XACT_EVENT_PREPARE)
	{
		/* their memory goes with TopTransactionContext */
		pending = NIL;
		taken_count = 0;
	}
}

/* Forget the adds of an aborted subtransaction; pass a committed one's up. */
static void
buffer_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
						SubTransactionId parentSubid, void *arg)
{
	ListCell   *lc;

	foreach(lc, pending)
	{
		PendingAdd *p = lfirst(lc);

		if (p->subxid != mySubid)
			continue;
		if (event == SUBXACT_EVENT_ABORT_SUB)
			pending = foreach_delete_current(pending, lc);
		else if (event == SUBXACT_EVENT_COMMIT_SUB)
			p->subxid = parentSubid;
	}
}

/* Register our transaction callbacks once per backend. */
static void
register_callbacks(void)
{
	if (!callbacks_registered)
	{
		RegisterXactCallback(buffer_xact_callback, NULL);
		RegisterSubXactCallback(buffer_subxact_callback, NULL);
		callbacks_registered = true;
	}
}

/*
 * Make sure the entry bk of (meta, key) exists, reading F for its base;
 * false when the hash is full.
 */
static bool
make_entry(CounterMeta *meta, text *key, BufferKey *bk)
{
	uint32		hashcode = get_hash_value(buffer_hash, bk);
	LWLock	   *lock = partition_lock(hashcode);
	BufferEntry *e;

	LWLockAcquire(lock, LW_SHARED);
	e = hash_search_with_hash_value(buffer_hash, bk, hashcode, HASH_FIND, NULL);
	LWLockRelease(lock);
	if (e == NULL)
	{
		Snapshot	snapshot = RegisterSnapshot(GetLatestSnapshot());
		int64		f = read_flushed(meta, key, snapshot);
		bool		found;

		UnregisterSnapshot(snapshot);
		LWLockAcquire(lock, LW_EXCLUSIVE);
		e = hash_search_with_hash_value(buffer_hash, bk, hashcode,
										HASH_ENTER_NULL, &found);
		if (e != NULL && !found)
		{
			e->base = f;
			e->shadow = f;
			pg_atomic_init_u64(&e->added, 0);
		}
		LWLockRelease(lock);
	}
	return e != NULL;
}

/*
 * Buffer an add: make sure the key has an entry (reading F for its base),
 * then keep the delta until commit.  False when the add cannot be buffered
 * (no shared memory, a long key, a full hash): the caller stores an event.
 */
bool
CounterBufferAdd(CounterMeta *meta, text *key, int64 delta)
{
	BufferKey	bk;
	PendingAdd *p;
	MemoryContext old;

	if (buffer_hash == NULL || !OidIsValid(CounterGetRels()->flushed) ||
		!make_key(&bk, meta, key) || !make_entry(meta, key, &bk))
		return false;

	register_callbacks();
	old = MemoryContextSwitchTo(TopTransactionContext);
	p = palloc(sizeof(PendingAdd));
	p->key = bk;
	p->delta = delta;
	p->subxid = GetCurrentSubTransactionId();
	p->logged = (meta->mode == COUNTER_MODE_WAL);
	pending = lappend(pending, p);
	MemoryContextSwitchTo(old);
	return true;
}

/*
 * Put back the n adds of wal-mode transactions that committed before a
 * restart but were not flushed (wal.c), as if they had just committed:
 * visible at once to every snapshot, as they should be.  Every entry is
 * made first, so an error (a full hash) leaves nothing added that a retry
 * would add again; adding them all then cannot fail, and makes the database
 * ready (wal.c).
 */
void
CounterBufferReplay(CounterWalAdd *adds, int n)
{
	BufferKey  *keys = palloc(sizeof(BufferKey) * Max(n, 1));
	int			i;

	for (i = 0; i < n; i++)
	{
		CounterMeta meta;

		memset(&meta, 0, sizeof(meta));
		meta.id = adds[i].counter_id;
		meta.created = adds[i].created;
		if (!make_key(&keys[i], &meta, adds[i].key) ||
			!make_entry(&meta, adds[i].key, &keys[i]))
			ereport(ERROR,
					(errcode(ERRCODE_OUT_OF_MEMORY),
					 errmsg("no room in shared memory to replay the wal-mode adds of this database"),
					 errhint("Raise counter.buffered_keys (now %d) and restart.", counter_buffered_keys)));
	}
	CounterWalReplayBegin();
	for (i = 0; i < n; i++)
		apply_delta(&keys[i], adds[i].delta);
	CounterWalReplayEnd();
	pfree(keys);
}

/*
 * The buffered part of (counter, key)'s value for a reader with snapshot:
 * base + added - F(snapshot), plus this transaction's own pending adds.
 */
int128
CounterBufferPending(CounterMeta *meta, text *key, Snapshot snapshot)
{
	BufferKey	bk;
	uint32		hashcode;
	LWLock	   *lock;
	BufferEntry *e;
	int128		sum;
	bool		have = false;

	if (buffer_hash == NULL || !OidIsValid(CounterGetRels()->flushed) ||
		!make_key(&bk, meta, key))
		return 0;

	CounterWalWaitReady();
	sum = own_pending(&bk);

	hashcode = get_hash_value(buffer_hash, &bk);
	lock = partition_lock(hashcode);
	LWLockAcquire(lock, LW_SHARED);
	e = hash_search_with_hash_value(buffer_hash, &bk, hashcode, HASH_FIND, NULL);
	if (e != NULL)
	{
		sum += e->base + (int64) pg_atomic_read_u64(&e->added);
		have = true;
	}
	LWLockRelease(lock);
	if (have)
		sum -= read_flushed(meta, key, snapshot);
	return sum;
}

static CounterStmt alive_stmt = {
	"SELECT u.i FROM unnest($1::int4[], $2::timestamptz[]) WITH ORDINALITY AS u(id, created, i)"
	" WHERE NOT EXISTS (SELECT 1 FROM counter.counters c"
	"                    WHERE c.id = u.id AND c.created = u.created)",
	2, {INT4ARRAYOID, TIMESTAMPTZARRAYOID}
};

/*
 * Take this database's entries for a flush (caller holds the compaction
 * lock, so there is one flusher at a time): fill values[0] counter ids,
 * values[2] creation times, values[3] keys, values[4] amounts (base + added
 * - shadow) as arrays for the flush statement.  Entries of dropped counters
 * are removed.  The shadows move at commit.  Returns the number of entries.
 */
int
CounterBufferTake(Datum *values)
{
	HASH_SEQ_STATUS status;
	BufferEntry *e;
	int			n = 0;
	int			max = 64;
	Datum	   *ids;
	Datum	   *created;
	Datum	   *keys;
	Datum	   *amounts;
	uint64		i;
	MemoryContext old;

	if (buffer_hash == NULL || !OidIsValid(CounterGetRels()->flushed))
		return 0;

	old = MemoryContextSwitchTo(TopTransactionContext);
	ids = palloc(sizeof(Datum) * max);
	created = palloc(sizeof(Datum) * max);
	keys = palloc(sizeof(Datum) * max);
	amounts = palloc(sizeof(Datum) * max);
	taken_keys = palloc(sizeof(BufferKey) * max);
	taken_amounts = palloc(sizeof(int64) * max);

	/* entries are added and removed only under their partition lock */
	CounterWalTakeBegin();
	lock_all_partitions(LW_SHARED);
	hash_seq_init(&status, buffer_hash);
	while ((e = hash_seq_search(&status)) != NULL)
	{
		if (e->key.dboid != MyDatabaseId)
			continue;
		if (n == max)
		{
			max *= 2;
			ids = repalloc(ids, sizeof(Datum) * max);
			created = repalloc(created, sizeof(Datum) * max);
			keys = repalloc(keys, sizeof(Datum) * max);
			amounts = repalloc(amounts, sizeof(Datum) * max);
			taken_keys = repalloc(taken_keys, sizeof(BufferKey) * max);
			taken_amounts = repalloc(taken_amounts, sizeof(int64) * max);
		}
		taken_keys[n] = e->key;
		taken_amounts[n] = e->base + (int64) pg_atomic_read_u64(&e->added) - e->shadow;
		ids[n] = Int32GetDatum(e->key.counter_id);
		created[n] = TimestampTzGetDatum(e->key.created);
		keys[n] = PointerGetDatum(cstring_to_text_with_len(e->key.key, e->key.keylen));
		amounts[n] = Int64GetDatum(taken_amounts[n]);
		n++;
	}
	unlock_all_partitions();
	CounterWalTakeEnd();
	taken_count = n;

	values[0] = PointerGetDatum(construct_array(ids, n, INT4OID, 4, true, TYPALIGN_INT));
	values[2] = PointerGetDatum(construct_array(created, n, TIMESTAMPTZOID, 8,
												FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	values[3] = PointerGetDatum(construct_array(keys, n, TEXTOID, -1, false, TYPALIGN_INT));
	values[4] = PointerGetDatum(construct_array(amounts, n, INT8OID, 8,
												FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	MemoryContextSwitchTo(old);

	/* entries of dropped counters go (their flush amounts went nowhere) */
	if (n > 0)
	{
		CounterExec(&alive_stmt, (Datum[]) {values[0], values[2]}, NULL, true);
		for (i = 0; i < SPI_processed; i++)
		{
			bool		isnull;
			int64		ord = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i],
														  SPI_tuptable->tupdesc, 1, &isnull));
			BufferKey  *bk = &taken_keys[ord - 1];
			uint32		hashcode = get_hash_value(buffer_hash, bk);
			LWLock	   *lock = partition_lock(hashcode);

			LWLockAcquire(lock, LW_EXCLUSIVE);
			hash_search_with_hash_value(buffer_hash, bk, hashcode, HASH_REMOVE, NULL);
			LWLockRelease(lock);
			taken_amounts[ord - 1] = 0;
		}
	}
	register_callbacks();
	return n;
}

/* At the flush's commit: the amounts taken are now part of F. */
static void
settle_taken(void)
{
	int			i;

	for (i = 0; i < taken_count; i++)
	{
		uint32		hashcode = get_hash_value(buffer_hash, &taken_keys[i]);
		LWLock	   *lock = partition_lock(hashcode);
		BufferEntry *e;

		LWLockAcquire(lock, LW_EXCLUSIVE);
		e = hash_search_with_hash_value(buffer_hash, &taken_keys[i], hashcode,
										HASH_FIND, NULL);
		if (e != NULL)
			e->shadow += taken_amounts[i];
		LWLockRelease(lock);
	}
}

/* The adds of counter id (this database) not flushed yet: the crash loss. */
int64
CounterBufferUnflushed(CounterMeta *meta)
{
	HASH_SEQ_STATUS status;
	BufferEntry *e;
	int64		sum = 0;

	if (buffer_hash == NULL)
		return 0;
	lock_all_partitions(LW_SHARED);
	hash_seq_init(&status, buffer_hash);
	while ((e = hash_seq_search(&status)) != NULL)
	{
		if (e->key.dboid == MyDatabaseId && e->key.counter_id == meta->id &&
			e->key.created == meta->created)
			sum += e->base + (int64) pg_atomic_read_u64(&e->added) - e->shadow;
	}
	unlock_all_partitions();
	return sum;
}

/*
 * counter._buffered(name): (key, base + added) of the counter's entries,
 * with this transaction's own pending adds: what top() adds to totals,
 * less the flushed amounts its snapshot sees.
 */
Datum
counter_buffered(PG_FUNCTION_ARGS)
{
	CounterMeta *meta = CounterArgCounter(fcinfo, COUNTER_PRIV_READ);
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	HASH_SEQ_STATUS status;
	BufferEntry *e;

	InitMaterializedSRF(fcinfo, 0);
	if (buffer_hash == NULL)
		return (Datum) 0;
	CounterWalWaitReady();
	lock_all_partitions(LW_SHARED);
	hash_seq_init(&status, buffer_hash);
	while ((e = hash_seq_search(&status)) != NULL)
	{
		Datum		values[2];
		bool		nulls[2] = {false, false};
		int64		sum;

		if (e->key.dboid != MyDatabaseId || e->key.counter_id != meta->id ||
			e->key.created != meta->created)
			continue;
		sum = e->base + (int64) pg_atomic_read_u64(&e->added) + own_pending(&e->key);
		values[0] = PointerGetDatum(cstring_to_text_with_len(e->key.key, e->key.keylen));
		values[1] = Int64GetDatum(sum);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	unlock_all_partitions();
	return (Datum) 0;
}

/* counter._buffered_unflushed(name): for counter.stats; NULL if unreadable. */
Datum
counter_buffered_unflushed(PG_FUNCTION_ARGS)
{
	CounterMeta *meta;

	if (!CounterCanRead(text_to_cstring(PG_GETARG_TEXT_PP(0))))
		PG_RETURN_NULL();
	meta = CounterLookup(text_to_cstring(PG_GETARG_TEXT_PP(0)), false);
	PG_RETURN_INT64(CounterBufferUnflushed(meta));
}
