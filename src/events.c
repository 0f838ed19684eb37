/*-------------------------------------------------------------------------
 *
 * events.c
 *	  The two events tables: which one an add writes, which ones a
 *	  snapshot reads, and their rotation (a schema older than 1.2 has one
 *	  table, counter.events, and no rotation: legacy.c).
 *
 * Adds append to the "current" table, counter.events (table 0) or
 * counter.events_1 (table 1).  Compaction either deletes the visible rows
 * of a table row by row (compact.c), or, once the current table has grown
 * past counter.rotate_size, rotates: it makes the other table current,
 * takes a ShareLock on the old one (which waits for every add still
 * writing it: adds hold their RowExclusiveLock to commit), folds the whole
 * table into totals and rollups, and records in counter.event_tables, in
 * the same transaction, that the table is folded.  No row is deleted.
 *
 * A reader whose snapshot sees the fold committed skips the folded table
 * (its rows are in totals); one that does not reads it and sees totals
 * without the fold.  Once every snapshot sees the fold (the fold's
 * transaction precedes the xmin horizon), TRUNCATE empties the table and
 * marks it live again, in one transaction; adds go to it again only after
 * that has committed.
 *
 * Shared memory holds, per database, the current table and a "folding" bit
 * per table, set before a fold starts and cleared once the table is
 * truncated again.  A table without the bit is live in every snapshot that
 * can still read it, so readers consult counter.event_tables only while a
 * bit is set.  An "empty" bit per table, set when its TRUNCATE commits or
 * when a compaction finds it without a block in a ShareLock (no add in
 * flight), is cleared by whatever writes the table next, before that
 * commits: an add, in C, or any SQL statement (a restore's COPY,
 * compaction's carry of quarantined events), through the table's trigger.
 * A reader that finds it set after taking its snapshot can see no row of
 * the table, and skips it without opening it (since 1.4; until then every
 * read opened both tables).  A schema older than 1.4 has no trigger: its
 * bits are set by TRUNCATE only, after which nothing but adds and
 * compaction (in C) writes a table.
 *
 * An add locks the current table and checks that it is still
 * current: a rotation changes the current table before its ShareLock, so an
 * add that holds its lock on the current table is always seen by the fold.
 * Shared memory is rebuilt from counter.event_tables after a restart; the
 * compactor rebuilds it at every round (it alone folds and truncates, under
 * the compaction lock).  Without shared memory there is no rotation, and an
 * add reads counter.event_tables itself.  A hot standby never uses the
 * shared state: its readers always consult counter.event_tables.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/heapam.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/transam.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/pg_type.h"
#include "executor/tuptable.h"
#include "miscadmin.h"
#include "storage/bufmgr.h"
#include "storage/lmgr.h"
#include "storage/proc.h"
#include "storage/procarray.h"
#include "utils/fmgrprotos.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/xid8.h"

#include "events.h"
#include "catalog.h"
#include "guc.h"
#include "legacy.h"
#include "shmem.h"

PG_FUNCTION_INFO_V1(counter_event_table_live);

/* bits of CounterEventsState.bits */
#define EV_VALID			0x01	/* set up for this incarnation */
#define EV_CURRENT1			0x02	/* table 1 is current (else table 0) */
#define EV_FOLDING(t)		(0x04 << (t))	/* table t folded or being folded */
#define EV_FOLDING_ANY		(EV_FOLDING(0) | EV_FOLDING(1))
#define EV_EMPTY(t)			(0x10 << (t))	/* table t not written since we emptied it */
#define EV_EMPTY_ANY		(EV_EMPTY(0) | EV_EMPTY(1))
#define EV_CURRENT(bits)	(((bits) & EV_CURRENT1) ? 1 : 0)

/* the two tables */
#define EV_ALL				0x03

/* how long a rotation waits for the adds still writing the old table */
#define ROTATE_WAIT_MS		1000

/* the local transaction that last emptied a table (CounterEventsTruncate) */
static LocalTransactionId truncated_in = InvalidLocalTransactionId;

/*
 * The tables this transaction emptied at its top level (bit t for table t),
 * and our entry then: at commit they are live, no longer folding.
 */
static int	emptied_now = 0;
static CounterEventsState *emptied_entry = NULL;

/* Our database's shared entry (shmem.c), or NULL: see CounterMyDb. */
static CounterEventsState *
my_entry(void)
{
	CounterDb  *db = CounterMyDb();

	return db == NULL ? NULL : &db->events;
}

/*
 * The bits of our entry when set up for this incarnation of the tables;
 * else 0.  Always 0 on a standby: no compactor runs there to keep them in
 * step with the primary's rotations, so readers consult the table.
 */
static uint32
state_bits(CounterRels *r)
{
	CounterEventsState *e;
	uint32		bits;

	if (RecoveryInProgress() || (e = my_entry()) == NULL)
		return 0;
	pg_memory_barrier();
	bits = pg_atomic_read_u32(&e->bits);
	pg_read_barrier();
	if ((bits & EV_VALID) == 0 || e->incarnation != r->events[1])
		return 0;
	return bits;
}

/*
 * The folded tables (bit t for table t) of counter.event_tables as seen by
 * snapshot; each folding transaction into xids[t] when xids is given.
 */
static int
folded_in(CounterRels *r, Snapshot snapshot, TransactionId *xids)
{
	Relation	rel = table_open(r->event_tables, AccessShareLock);
	TableScanDesc scan = table_beginscan(rel, snapshot, 0, NULL);
	HeapTuple	tup;
	int			folded = 0;

	while ((tup = heap_getnext(scan, ForwardScanDirection)) != NULL)
	{
		bool		isnull;
		int32		tab = DatumGetInt32(heap_getattr(tup, 1, RelationGetDescr(rel), &isnull));
		Datum		xid = heap_getattr(tup, 2, RelationGetDescr(rel), &isnull);

		if (isnull || tab < 0 || tab > 1)
			continue;
		folded |= 1 << tab;
		if (xids != NULL)
			xids[tab] = XidFromFullTransactionId(DatumGetFullTransactionId(xid));
	}
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	return folded;
}

/*
 * For sync_entry, the blocks of each events table not folded (-1: not
 * known): a table without a block is counted only while it is ours in
 * ShareLock, which no add holds (bit t of the result: the caller releases
 * it once the empty bits are set).  Only in a schema whose SQL writes say
 * so too (1.4: the trigger counter._written): else a restore's COPY
 * could fill a table marked empty.
 */
static int
lock_empty(CounterRels *r, int folded, int *blocks)
{
	int			locked = 0;
	int			t;

	for (t = 0; t < 2; t++)
	{
		Relation	rel;

		blocks[t] = -1;
		if (CounterLegacy() || (folded & (1 << t)) != 0)
			continue;
		rel = table_open(r->events[t], AccessShareLock);
		blocks[t] = RelationGetNumberOfBlocks(rel);
		if (blocks[t] == 0)
		{
			if (ConditionalLockRelationOid(r->events[t], ShareLock))
			{
				locked |= 1 << t;
				blocks[t] = RelationGetNumberOfBlocks(rel);
			}
			else
				blocks[t] = -1;
		}
		table_close(rel, AccessShareLock);
	}
	return locked;
}

/*
 * Set our entry up from folded, the committed state of
 * counter.event_tables (read before taking the lock: no table access under
 * an LWLock): folding bits as recorded, the current table kept unless it is
 * folded, the empty bits kept; with blocks (lock_empty), set for a table
 * without a block, and cleared for one that has some (written by SQL with
 * its trigger disabled, say: a data-only restore).  Caller holds
 * counter_shared->lock exclusively and either the compaction lock or an
 * entry not set up (then no fold can be running).
 */
static uint32
sync_entry(CounterEventsState *e, CounterRels *r, int folded, const int *blocks)
{
	uint32		bits = state_bits(r);
	int			cur = EV_CURRENT(bits);
	int			t;

	if (folded == EV_ALL)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("both events tables of extension \"counter\" are marked folded"),
				 errhint("Update counter.event_tables to mark the table that is not counted in totals live.")));
	if (folded & (1 << cur))
		cur = 1 - cur;
	bits = EV_VALID | (cur ? EV_CURRENT1 : 0) | (bits & EV_EMPTY_ANY) |
		((folded & 1) ? EV_FOLDING(0) : 0) | ((folded & 2) ? EV_FOLDING(1) : 0);
	for (t = 0; blocks != NULL && t < 2; t++)
		if (blocks[t] == 0)
			bits |= EV_EMPTY(t);
		else if (blocks[t] > 0)
			bits &= ~EV_EMPTY(t);
	e->incarnation = r->events[1];
	pg_write_barrier();
	pg_atomic_write_u32(&e->bits, bits);
	return bits;
}

/*
 * Before a write of events table t commits: clear its empty bit, if set
 * (once per truncation), so that readers open it again.
 */
void
CounterEventsWritten(int t)
{
	CounterEventsState *e;

	if (RecoveryInProgress() || (e = my_entry()) == NULL ||
		(pg_atomic_read_u32(&e->bits) & EV_EMPTY(t)) == 0)
		return;
	LWLockAcquire(counter_shared->lock, LW_EXCLUSIVE);
	pg_atomic_write_u32(&e->bits, pg_atomic_read_u32(&e->bits) & ~EV_EMPTY(t));
	LWLockRelease(counter_shared->lock);
}

/*
 * Lock the events table an add must write, for the rest of the
 * transaction, and return its number (its empty bit cleared).
 */
int
CounterEventsTableForAdd(CounterRels *r)
{
	CounterEventsState *e;

	if (CounterLegacyLacks(LEGACY_EVENTS_1))
		return 0;

	for (;;)
	{
		uint32		bits = state_bits(r);
		int			t;

		if (bits == 0 && !RecoveryInProgress() && (e = my_entry()) != NULL)
		{
			int			folded = folded_in(r, GetLatestSnapshot(), NULL);

			LWLockAcquire(counter_shared->lock, LW_EXCLUSIVE);
			if (state_bits(r) == 0)
				sync_entry(e, r, folded, NULL);
			LWLockRelease(counter_shared->lock);
			continue;
		}
		if (bits == 0)
		{
			/*
			 * No shared entry (or a standby): a table not folded in the
			 * latest state once we hold its lock stays unfolded until we
			 * commit, whoever rotates (a fold needs a ShareLock on it).
			 */
			t = (folded_in(r, GetLatestSnapshot(), NULL) & 1) ? 1 : 0;
			LockRelationOid(r->events[t], RowExclusiveLock);
			if ((folded_in(r, GetLatestSnapshot(), NULL) & (1 << t)) == 0)
				return t;
			UnlockRelationOid(r->events[t], RowExclusiveLock);
			continue;
		}

		t = EV_CURRENT(bits);
		if (!ConditionalLockRelationOid(r->events[t], RowExclusiveLock))
		{
			/* a rotation may have just switched tables: then take the new one */
			if (EV_CURRENT(state_bits(r)) != t)
				continue;
			LockRelationOid(r->events[t], RowExclusiveLock);
		}
		if (EV_CURRENT(state_bits(r)) == t)
		{
			CounterEventsWritten(t);
			return t;
		}
		UnlockRelationOid(r->events[t], RowExclusiveLock);
	}
}

/* The events tables live in snapshot (bit t for table t), given state_bits. */
static int
live_in(CounterRels *r, Snapshot snapshot, uint32 bits)
{
	if (CounterLegacyLacks(LEGACY_EVENTS_1))
		return 1;
	if (bits != 0 && (bits & EV_FOLDING_ANY) == 0)
		return EV_ALL;
	return EV_ALL & ~folded_in(r, snapshot, NULL);
}

/* The events tables live in snapshot: bit t for table t. */
int
CounterEventsLive(CounterRels *r, Snapshot snapshot)
{
	return live_in(r, snapshot, state_bits(r));
}

/*
 * The events tables a read in snapshot must scan: the live ones (bit t for
 * table t) not marked empty in shared memory that have a block at all.  One
 * that was rotated and emptied has none, and a row any snapshot taken
 * before this check could see would have extended it already: an lseek,
 * cheaper than an index scan, and the empty bit cheaper still.
 */
int
CounterEventsToRead(CounterRels *r, Snapshot snapshot)
{
	uint32		bits = state_bits(r);
	int			live = live_in(r, snapshot, bits);
	int			t;

	for (t = 0; t < 2; t++)
		if (bits & EV_EMPTY(t))
			live &= ~(1 << t);
		else if (live & (1 << t))
		{
			Relation	rel = table_open(r->events[t], AccessShareLock);

			if (RelationGetNumberOfBlocks(rel) == 0)
				live &= ~(1 << t);
			table_close(rel, AccessShareLock);
		}
	return live;
}

/* counter._event_table_live(tab): is events table tab live in the current snapshot? */
Datum
counter_event_table_live(PG_FUNCTION_ARGS)
{
	int32		tab = PG_GETARG_INT32(0);

	if (tab < 0 || tab > 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("events table number must be 0 or 1")));
	PG_RETURN_BOOL((CounterEventsLive(CounterGetRels(), GetActiveSnapshot()) & (1 << tab)) != 0);
}

/*
 * At the start of a compaction (the caller holds the compaction lock):
 * bring shared memory in line with counter.event_tables and return the
 * folded tables, as committed.
 */
int
CounterEventsSync(void)
{
	CounterRels *r = CounterGetRels();
	CounterEventsState *e;
	int			folded;

	if (CounterLegacyLacks(LEGACY_EVENTS_1))
		return 0;
	folded = folded_in(r, GetLatestSnapshot(), NULL);
	if (!RecoveryInProgress() && (e = my_entry()) != NULL)
	{
		int			blocks[2];
		int			locked = lock_empty(r, folded, blocks);
		int			t;

		LWLockAcquire(counter_shared->lock, LW_EXCLUSIVE);
		sync_entry(e, r, folded, blocks);
		LWLockRelease(counter_shared->lock);
		for (t = 0; t < 2; t++)
			if (locked & (1 << t))
				UnlockRelationOid(r->events[t], ShareLock);
	}
	return folded;
}

/* Set or clear the folding bit of table t, and make table cur current. */
static void
set_bits(CounterEventsState *e, int cur, int t, bool folding)
{
	uint32		bits;

	LWLockAcquire(counter_shared->lock, LW_EXCLUSIVE);
	bits = pg_atomic_read_u32(&e->bits) & ~(EV_CURRENT1 | EV_FOLDING(t));
	bits |= (cur ? EV_CURRENT1 : 0) | (folding ? EV_FOLDING(t) : 0);
	pg_atomic_write_u32(&e->bits, bits);
	LWLockRelease(counter_shared->lock);
}

/*
 * Rotate if due (caller holds the compaction lock, folded as returned by
 * CounterEventsSync): switch adds to the other table and wait until no add
 * writes the old one any more.  Due: the current table has reached
 * counter.rotate_size, or it is not empty and the last compaction found no
 * event (idle: what it holds is dead rows, which the rotation's TRUNCATE
 * frees without VACUUM).  Not due while it is larger than max_kb (unless
 * idle; -1: no bound): its fold would be more than one batch.  Never in
 * the transaction that emptied a table: that table must not become current
 * before the TRUNCATE has committed (were it rolled back, adds would write
 * a folded table).  Returns the old table, now only readable, which the
 * caller must fold whole in this transaction; or -1.
 */
int
CounterEventsRotate(int folded, bool idle, int64 max_kb)
{
	CounterRels *r = CounterGetRels();
	CounterEventsState *e = my_entry();
	uint32		bits;
	Relation	rel;
	int64		size_kb;
	int			old;
	int			waited;

	/* a fold must read every row committed before it: a fresh snapshot */
	if (CounterLegacyLacks(LEGACY_EVENTS_1) || e == NULL || counter_rotate_size < 0 ||
		IsolationUsesXactSnapshot() || folded != 0 || truncated_in == MyProc->lxid)
		return -1;
	bits = state_bits(r);
	if (bits == 0)
		return -1;
	old = EV_CURRENT(bits);
	rel = table_open(r->events[old], AccessShareLock);
	size_kb = (int64) RelationGetNumberOfBlocks(rel) * (BLCKSZ / 1024);
	table_close(rel, AccessShareLock);
	if (size_kb < Max(counter_rotate_size, 1) && !(idle && size_kb > 0))
		return -1;
	if (max_kb >= 0 && size_kb > max_kb && !idle)
		return -1;

	set_bits(e, 1 - old, old, true);
	for (waited = 0; !ConditionalLockRelationOid(r->events[old], ShareLock); waited++)
	{
		if (waited >= ROTATE_WAIT_MS)
		{
			/* an add holds on (a prepared transaction?): delete row by row */
			set_bits(e, 1 - old, old, false);
			return -1;
		}
		CHECK_FOR_INTERRUPTS();
		pg_usleep(1000L);
	}
	return old;
}

/*
 * Transaction callback: once a transaction that emptied tables at its top
 * level has committed (still holding the compaction lock, so no fold can
 * start), clear their folding bits.  Until the next compaction round's
 * CounterEventsSync would do it, which with the worker idle or off may be
 * long, every read consulted counter.event_tables (a sixth of a value()).
 */
static void
events_xact_callback(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_COMMIT && emptied_now != 0)
	{
		uint32		bits;
		int			t;

		LWLockAcquire(counter_shared->lock, LW_EXCLUSIVE);
		bits = pg_atomic_read_u32(&emptied_entry->bits);
		if (bits & EV_VALID)
		{
			for (t = 0; t < 2; t++)
				if (emptied_now & (1 << t))
					bits = (bits & ~EV_FOLDING(t)) | EV_EMPTY(t);
			pg_atomic_write_u32(&emptied_entry->bits, bits);
		}
		LWLockRelease(counter_shared->lock);
	}
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT ||
		event == XACT_EVENT_PARALLEL_COMMIT || event == XACT_EVENT_PARALLEL_ABORT ||
		event == XACT_EVENT_PREPARE)
		emptied_now = 0;
}

/*
 * Empty the folded tables whose fold every snapshot sees (caller holds the
 * compaction lock), and mark them live.  The caller must commit before it
 * compacts again: adds may go to such a table only once that is committed
 * (the next CounterEventsSync; readers stop consulting counter.event_tables
 * at the commit, events_xact_callback).  A table still read by someone is left for
 * a later round.  Returns whether a table was emptied.
 */
bool
CounterEventsTruncate(void)
{
	static CounterStmt truncate_stmt[2] = {
		{"TRUNCATE counter.events", 0},
		{"TRUNCATE counter.events_1", 0}
	};
	static CounterStmt live_stmt = {
		"UPDATE counter.event_tables SET folded = NULL WHERE tab = $1",
		1, {INT4OID}
	};
	static bool registered = false;
	CounterRels *r = CounterGetRels();
	TransactionId xids[2];
	TransactionId horizon;
	Relation	rel;
	int			folded;
	int			t;
	bool		emptied = false;

	if (CounterLegacyLacks(LEGACY_EVENTS_1))
		return false;
	folded = folded_in(r, GetLatestSnapshot(), xids);
	if (folded == 0)
		return false;
	rel = table_open(r->event_tables, AccessShareLock);
	horizon = GetOldestNonRemovableTransactionId(rel);
	table_close(rel, AccessShareLock);

	for (t = 0; t < 2; t++)
	{
		Datum		tab = Int32GetDatum(t);

		if ((folded & (1 << t)) == 0 || !TransactionIdPrecedes(xids[t], horizon) ||
			!ConditionalLockRelationOid(r->events[t], AccessExclusiveLock))
			continue;
		SPI_connect();
		CounterExec(&truncate_stmt[t], NULL, NULL, false);
		CounterExec(&live_stmt, &tab, NULL, false);
		SPI_finish();
		truncated_in = MyProc->lxid;
		emptied = true;
		/* in a subtransaction, which may yet roll back: left to the next sync */
		if (GetCurrentTransactionNestLevel() == 1 && !RecoveryInProgress() &&
			(emptied_entry = my_entry()) != NULL)
		{
			if (!registered)
			{
				RegisterXactCallback(events_xact_callback, NULL);
				registered = true;
			}
			emptied_now |= 1 << t;
		}
	}
	return emptied;
}

/*
 * Whether (counter, key) has at least max events pending in the live events
 * tables, or one that another transaction is still inserting: the signs
 * that a slots-mode key is added to often or concurrently, and should get
 * a slot row (slots.c).  Read with a dirty snapshot, so that insertions in
 * progress count; the tables' locks are not kept, as in read.c.  When not
 * busy, *sum is the sum of the key's pending events (committed, or this
 * transaction's).
 */
bool
CounterEventsBusy(CounterMeta *meta, text *key, int max, int128 *sum)
{
	CounterRels *r = CounterGetRels();
	Snapshot	latest = RegisterSnapshot(GetLatestSnapshot());
	int			live = CounterEventsToRead(r, latest);
	SnapshotData dirty;
	ScanKeyData keys[3];
	bool		busy = false;
	int			n = 0;
	int			t;

	*sum = 0;
	UnregisterSnapshot(latest);
	InitDirtySnapshot(dirty);
	CounterScanKeys(keys, meta->id, key, false, 0);
	for (t = 0; t < 2 && !busy; t++)
	{
		Relation	rel;
		Relation	idx;
		IndexScanDesc scan;
		TupleTableSlot *tts;

		if (!(live & (1 << t)))
			continue;
		rel = table_open(r->events[t], AccessShareLock);
		idx = index_open(r->events_key[t], AccessShareLock);
		tts = table_slot_create(rel, NULL);
		scan = index_beginscan(rel, idx, &dirty, 2, 0);
		index_rescan(scan, keys, 2, NULL, 0);
		while (!busy && index_getnext_slot(scan, ForwardScanDirection, tts))
		{
			bool		isnull;

			*sum += DatumGetInt64(slot_getattr(tts, Anum_events_delta, &isnull));
			busy = ++n >= max ||
				(TransactionIdIsValid(dirty.xmin) &&
				 !TransactionIdIsCurrentTransactionId(dirty.xmin));
		}
		index_endscan(scan);
		ExecDropSingleTupleTableSlot(tts);
		index_close(idx, AccessShareLock);
		table_close(rel, AccessShareLock);
	}
	return busy;
}

/*
 * Append one event row to the current events table: one heap_insert and one
 * index insertion, no lock on any row, nothing shared is updated.
 */
void
CounterEventsInsert(CounterMeta *meta, text *key, int64 delta,
					TimestampTz at)
{
	CounterRels *r = CounterGetRels();
	Relation	rel;
	Relation	idx;
	Datum		values[Natts_events];
	bool		nulls[Natts_events] = {false, false, false, false};
	HeapTuple	tup;
	int			t = CounterEventsTableForAdd(r);

	/* locked until commit: a rotation waits for this add before folding */
	rel = table_open(r->events[t], NoLock);
	idx = index_open(r->events_key[t], RowExclusiveLock);

	values[Anum_events_counter_id - 1] = Int32GetDatum(meta->id);
	values[Anum_events_key - 1] = PointerGetDatum(key);
	values[Anum_events_delta - 1] = Int64GetDatum(delta);
	values[Anum_events_at - 1] = TimestampTzGetDatum(at);
	tup = heap_form_tuple(RelationGetDescr(rel), values, nulls);
	heap_insert(rel, tup, GetCurrentCommandId(true), 0, NULL);
	index_insert(idx, values, nulls, &tup->t_self, rel,
				 UNIQUE_CHECK_NO, false, NULL);
	heap_freetuple(tup);

	index_close(idx, RowExclusiveLock);
	table_close(rel, NoLock);
}
