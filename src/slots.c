/*-------------------------------------------------------------------------
 *
 * slots.c
 *	  Slots mode's hot path: adding to slot rows by direct heap and index
 *	  access, and the escrow shares that keep a bounded counter's bounds
 *	  exact.
 *
 * Slots.  A backend owns the slot number MyBackendId: no two live backends
 * own the same number, so a backend may insert its own slot row without any
 * risk of a unique-key conflict (a row a prepared transaction holds under
 * that number is passed to MyBackendId + MaxBackends + 1, and so on: see
 * count_rows).  An add first tries its own row, then any
 * other row of the key, locking each with LockWaitSkip (the mechanism behind
 * SKIP LOCKED): a row held by another in-flight transaction is passed over,
 * never waited for.  Only when every row is held does the backend insert its
 * own row, so the number of rows of a key follows the real concurrency on
 * it, up to the counter's slot limit; past the limit it waits on one row.
 * A key of an unbounded counter that has no slot row at all takes its add
 * as an event row instead (a row among other keys' rows, where a slot row
 * takes a page), until it has counter.slot_events pending events or another
 * transaction is inserting one for it: so only a key added to often or
 * concurrently gets slot rows, and the worker folds both kinds alike.
 * A transaction writes an unbounded key's row once (1.4): the versions it
 * writes cannot be pruned before it ends, so its later adds of the key are
 * event rows; a bounded key's, which must go to its rows, lock the version
 * written last directly (own rows), not through the index and the chain
 * of versions behind it.
 * Rows are found with the latest snapshot and locked in their newest
 * version, so an add works the same under every isolation level: an add is
 * blind (it never depends on the value it reads).
 *
 * Counters without slot rows (since 1.4).  Most counters have none (events
 * mode, or slots mode with no contended key), and a read then skips the
 * slots index.  Shared memory counts, per bucket of counter ids, the slot
 * rows inserted (each once its index entry is in, before its transaction
 * can commit; a statement inserting through SQL, such as a restore's COPY,
 * counts in every bucket through the table's trigger); a maintenance round
 * reads the counts, then looks for any version of a slot row of the
 * bucket's counters that is not dead to every snapshot, an insert in
 * progress included, and where it finds none marks the bucket with the
 * count it read: a read skips the slot rows while the count has not moved
 * since (CounterSlotRowsNone, shmem.c).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/subtrans.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_collation.h"
#include "commands/trigger.h"
#include "common/hashfn.h"
#include "common/int.h"
#include "executor/tuptable.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "nodes/bitmapset.h"
#include "nodes/execnodes.h"
#include "storage/backendid.h"
#include "storage/bufmgr.h"
#include "storage/latch.h"
#include "storage/lmgr.h"
#include "storage/proc.h"
#include "storage/procarray.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "slots.h"
#include "catalog.h"
#include "events.h"
#include "guc.h"
#include "read.h"
#include "rights.h"
#include "legacy.h"
#include "shmem.h"

/*
 * Width of the pad column: with fillfactor 10, a row this wide leaves too
 * little room under the fill limit for a second row, so every slot row is
 * inserted on a page of its own.
 */
#define SLOT_PAD_LEN			400

/* Most slot rows considered by one add (the rest wait for the worker). */
#define SLOT_SCAN_MAX			1024

static text *slot_pad = NULL;

PG_FUNCTION_INFO_V1(counter_written);

/*
 * Collect the TIDs of the index entries matching keys, visible to snapshot.
 * Returns how many were stored in tids (at most max).
 */
static int
collect_tids(Relation rel, Relation idx, Snapshot snapshot, ScanKey keys,
			 int nkeys, ItemPointerData *tids, int max)
{
	IndexScanDesc scan;
	TupleTableSlot *tts = table_slot_create(rel, NULL);
	int			n = 0;

	scan = index_beginscan(rel, idx, snapshot, nkeys, 0);
	index_rescan(scan, keys, nkeys, NULL, 0);
	while (n < max && index_getnext_slot(scan, ForwardScanDirection, tts))
		tids[n++] = tts->tts_tid;
	index_endscan(scan);
	ExecDropSingleTupleTableSlot(tts);
	return n;
}

/* A slot row as this transaction locked it. */
typedef struct SlotRow
{
	ItemPointerData tid;
	int32		slot;
	int64		value;
	int64		stored;			/* value of the version read or written last */
	bool		has_lo;			/* escrow share of a bounded counter */
	bool		has_hi;
	int64		lo;
	int64		hi;
	TimestampTz touched;
	bool		ours;			/* this version written by our transaction */
} SlotRow;

/* What became of one attempt to add to a slot row. */
typedef enum SlotResult
{
	SLOT_DONE,					/* the delta is added */
	SLOT_BUSY,					/* another transaction holds the row */
	SLOT_MOVED,					/* updated or deleted since found: look again */
	SLOT_NO_SHARE				/* locked, but the delta leaves the row's share */
} SlotResult;

/* Fill the columns of a slot row (the first three are the index key). */
static void
slot_form(Datum *values, bool *nulls, int32 id, text *key, SlotRow *row)
{
	if (slot_pad == NULL)
	{
		char		buf[SLOT_PAD_LEN + 1];
		MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

		memset(buf, '.', SLOT_PAD_LEN);
		buf[SLOT_PAD_LEN] = '\0';
		slot_pad = cstring_to_text(buf);
		MemoryContextSwitchTo(old);
	}
	memset(nulls, false, sizeof(bool) * Natts_slots);
	values[Anum_slots_counter_id - 1] = Int32GetDatum(id);
	values[Anum_slots_key - 1] = PointerGetDatum(key);
	values[Anum_slots_slot - 1] = Int32GetDatum(row->slot);
	values[Anum_slots_value - 1] = Int64GetDatum(row->value);
	values[Anum_slots_lo - 1] = Int64GetDatum(row->lo);
	nulls[Anum_slots_lo - 1] = !row->has_lo;
	values[Anum_slots_hi - 1] = Int64GetDatum(row->hi);
	nulls[Anum_slots_hi - 1] = !row->has_hi;
	values[Anum_slots_touched - 1] = TimestampTzGetDatum(row->touched);
	values[Anum_slots_pad - 1] = PointerGetDatum(slot_pad);
}

/* Read a slot row's tuple (pinned by the caller) into row. */
static void
slot_read(Relation rel, HeapTuple tuple, SlotRow *row)
{
	Datum		values[Natts_slots];
	bool		nulls[Natts_slots];

	heap_deform_tuple(tuple, RelationGetDescr(rel), values, nulls);
	row->tid = tuple->t_self;
	row->slot = DatumGetInt32(values[Anum_slots_slot - 1]);
	row->value = DatumGetInt64(values[Anum_slots_value - 1]);
	row->stored = row->value;
	row->has_lo = !nulls[Anum_slots_lo - 1];
	row->lo = row->has_lo ? DatumGetInt64(values[Anum_slots_lo - 1]) : 0;
	row->has_hi = !nulls[Anum_slots_hi - 1];
	row->hi = row->has_hi ? DatumGetInt64(values[Anum_slots_hi - 1]) : 0;
	row->touched = DatumGetTimestampTz(values[Anum_slots_touched - 1]);
	row->ours = TransactionIdIsCurrentTransactionId(HeapTupleHeaderGetXmin(tuple->t_data));
}

/*
 * Read the slot row version at tid without a lock (as last written: a
 * guess about a row someone else may be changing).  False if it is gone.
 */
static bool
slot_peek(Relation rel, ItemPointer tid, SlotRow *row)
{
	HeapTupleData tuple;
	Buffer		buffer;

	tuple.t_self = *tid;
	if (!heap_fetch(rel, SnapshotAny, &tuple, &buffer, false))
		return false;
	slot_read(rel, &tuple, row);
	ReleaseBuffer(buffer);
	return true;
}

/*
 * Lock the slot row at tid in its newest version and read it.  TM_Ok, or
 * TM_WouldBlock (held, with LockWaitSkip), or TM_Updated / TM_Deleted.
 */
static TM_Result
slot_lock(Relation rel, ItemPointer tid, LockWaitPolicy policy, SlotRow *row)
{
	HeapTupleData tuple;
	Buffer		buffer;
	TM_FailureData tmfd;
	TM_Result	result;

	tuple.t_self = *tid;
	result = heap_lock_tuple(rel, &tuple, GetCurrentCommandId(true),
							 LockTupleNoKeyExclusive, policy, false,
							 &buffer, &tmfd);
	if (result == TM_Ok)
		slot_read(rel, &tuple, row);
	ReleaseBuffer(buffer);
	if (result == TM_SelfModified || result == TM_Invisible)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg_internal("slot row modified by the current command")));
	return result;
}

/*
 * Own rows (since 1.4): per bounded key, the newest version of the slot row
 * this transaction wrote last, which its next add of the key locks at once.
 * Found through the index, it was reached by a walk over every version the
 * transaction had written of the row (none can be pruned before it ends):
 * quadratic in a transaction's adds to a key.  (An unbounded key's row is
 * written once per transaction: slot_try.)  A hint only, used while the
 * version is one this transaction wrote and sees as live, of the same key:
 * after a rolled-back savepoint, or a compaction in the transaction that
 * zeroed the row, it is not, and the index is searched as before.  Kept
 * from a row's second write in a transaction on (the first leaves a chain
 * of one version), so a transaction that adds to a key once never builds
 * the table.  At most OWN_ROWS_MAX keys a transaction.
 */
#define OWN_ROWS_MAX			100000

typedef struct OwnRowKey
{
	int32		id;
	uint32		hash;			/* of the key */
} OwnRowKey;

typedef struct OwnRow
{
	OwnRowKey	k;
	ItemPointerData tid;
} OwnRow;

static HTAB *own_rows = NULL;
static LocalTransactionId own_rows_lxid = InvalidLocalTransactionId;

/* The own row entry of (id, key), entered if enter (NULL: none, or full). */
static OwnRow *
own_row(int32 id, text *key, bool enter)
{
	OwnRowKey	k;

	if (own_rows == NULL || own_rows_lxid != MyProc->lxid)
	{
		HASHCTL		ctl;

		if (!enter)
			return NULL;
		if (own_rows != NULL)
			hash_destroy(own_rows);
		memset(&ctl, 0, sizeof(ctl));
		ctl.keysize = sizeof(OwnRowKey);
		ctl.entrysize = sizeof(OwnRow);
		ctl.hcxt = TopMemoryContext;
		own_rows = hash_create("counter own slot rows", 64, &ctl,
							   HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
		own_rows_lxid = MyProc->lxid;
	}
	memset(&k, 0, sizeof(k));
	k.id = id;
	k.hash = hash_any((unsigned char *) VARDATA_ANY(key), VARSIZE_ANY_EXHDR(key));
	if (enter && hash_get_num_entries(own_rows) < OWN_ROWS_MAX)
		return hash_search(own_rows, &k, HASH_ENTER, NULL);
	return hash_search(own_rows, &k, HASH_FIND, NULL);
}

/*
 * The own row of (id, key) into *tid, if it is still a version this
 * transaction wrote and sees as live, of that key (else *tid is untouched).
 */
static bool
own_row_get(Relation rel, int32 id, text *key, ItemPointer tid)
{
	OwnRow	   *o = own_row(id, key, false);
	HeapTupleData tuple;
	Buffer		buffer;
	bool		ok;

	if (o == NULL)
		return false;
	tuple.t_self = o->tid;
	if (!heap_fetch(rel, SnapshotSelf, &tuple, &buffer, false))
		return false;
	ok = TransactionIdIsCurrentTransactionId(HeapTupleHeaderGetXmin(tuple.t_data));
	if (ok)
	{
		Datum		values[Natts_slots];
		bool		nulls[Natts_slots];
		text	   *k;

		heap_deform_tuple(&tuple, RelationGetDescr(rel), values, nulls);
		k = DatumGetTextPP(values[Anum_slots_key - 1]);
		ok = DatumGetInt32(values[Anum_slots_counter_id - 1]) == id &&
			VARSIZE_ANY_EXHDR(k) == VARSIZE_ANY_EXHDR(key) &&
			memcmp(VARDATA_ANY(k), VARDATA_ANY(key), VARSIZE_ANY_EXHDR(key)) == 0;
	}
	ReleaseBuffer(buffer);
	if (ok)
		*tid = tuple.t_self;
	return ok;
}

/* Remember tid as the own row of a bounded counter's key. */
static void
own_row_set(CounterMeta *meta, text *key, ItemPointer tid)
{
	OwnRow	   *o;

	if (!meta->has_min && !meta->has_max)
		return;
	o = own_row(meta->id, key, true);
	if (o != NULL)
		o->tid = *tid;
}

/*
 * Note the change of a slot row of (counter, key) written with value (the
 * version before held row->stored) for the reads that sum a hot key's rows
 * from the adds (read.c), before the transaction can commit; a change
 * beyond bigint keeps them from summing across this transaction instead.
 */
static void
slot_noted(CounterMeta *meta, text *key, SlotRow *row)
{
	int64		delta;

	if (pg_sub_s64_overflow(row->value, row->stored, &delta))
		CounterSlotSumBarrier();
	else
		CounterSlotSumNote(meta->id, VARDATA_ANY(key), VARSIZE_ANY_EXHDR(key), delta);
	row->stored = row->value;
}

/*
 * Write a locked row back: HOT when its page has room, as it usually has.
 * A version this transaction wrote already becomes the key's own row.
 */
static void
slot_write(Relation rel, Relation idx, CounterMeta *meta, text *key, SlotRow *row)
{
	Datum		values[Natts_slots];
	bool		nulls[Natts_slots];
	HeapTuple	tup;

	slot_form(values, nulls, meta->id, key, row);
	tup = heap_form_tuple(RelationGetDescr(rel), values, nulls);
	simple_heap_update(rel, &row->tid, tup);
	/* our indexes are btree, which needs no IndexInfo */
	if (!HeapTupleIsHeapOnly(tup))
		index_insert(idx, values, nulls, &tup->t_self, rel,
					 UNIQUE_CHECK_YES, false, NULL);
	slot_noted(meta, key, row);
	row->tid = tup->t_self;		/* the row may be written again */
	if (row->ours)
		own_row_set(meta, key, &row->tid);
	row->ours = true;
	heap_freetuple(tup);
}

/* Narrow an int128 to int64, 22003 when it does not fit. */
static int64
to_int64(int128 v)
{
	if (v > PG_INT64_MAX || v < PG_INT64_MIN)
		ereport(ERROR,
				(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
				 errmsg("counter value out of range for bigint")));
	return (int64) v;
}

/*
 * Count a slot row of counter_id just inserted, its index entry in
 * (counter_id -1: one in every bucket), before the transaction can commit.
 * Without our entry (every one taken) none is marked for this database
 * yet: a mark set later comes from a round that sees the row.
 */
static void
slot_rows_written(int32 counter_id)
{
	CounterDb  *db = CounterMyDb();
	int			b;

	if (db == NULL && counter_shared != NULL && IsTransactionState())
		db = CounterDbClaim(MyDatabaseId);
	if (db == NULL)
		return;
	if (counter_id >= 0)
		pg_atomic_fetch_add_u64(&db->slot_rows.written[(uint32) counter_id % COUNTER_SLOT_BUCKETS], 1);
	else
		for (b = 0; b < COUNTER_SLOT_BUCKETS; b++)
			pg_atomic_fetch_add_u64(&db->slot_rows.written[b], 1);
}

/*
 * counter._written(), the trigger of counter.slots after each statement
 * changing it (a compaction, a delete, a restore's COPY) and of each events
 * table after a statement inserting into it (compaction's carry): an insert
 * counts a slot row in every bucket, any change of slot rows keeps reads
 * from summing adds across it (CounterSlotSumBarrier), and an events table
 * loses its empty bit (events.c).
 */
Datum
counter_written(PG_FUNCTION_ARGS)
{
	CounterRels *r = CounterGetRels();
	Oid			relid;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("counter._written() must be called as a trigger")));
	relid = RelationGetRelid(((TriggerData *) fcinfo->context)->tg_relation);
	if (relid == r->slots)
	{
		if (TRIGGER_FIRED_BY_INSERT(((TriggerData *) fcinfo->context)->tg_event))
			slot_rows_written(-1);
		CounterSlotSumBarrier();
	}
	else
		CounterEventsWritten(relid == r->events[1] ? 1 : 0);
	return PointerGetDatum(NULL);
}

/*
 * Whether counter_id has a slot row with a version that is not dead to
 * every snapshot (horizon), an insert in progress included; also when
 * more than VERIFY_MAX_ENTRIES index entries are met (dead ones wait for
 * VACUUM).
 */
#define VERIFY_MAX_ENTRIES		1000
static bool
slot_rows_present(Relation rel, Relation idx, int32 counter_id, TransactionId horizon)
{
	ScanKeyData key;
	IndexScanDesc scan;
	TupleTableSlot *tts = table_slot_create(rel, NULL);
	bool		present = false;
	int			seen = 0;

	ScanKeyInit(&key, 1, BTEqualStrategyNumber, F_INT4EQ, Int32GetDatum(counter_id));
	scan = index_beginscan(rel, idx, SnapshotAny, 1, 0);
	index_rescan(scan, &key, 1, NULL, 0);
	while (!present && index_getnext_slot(scan, ForwardScanDirection, tts))
	{
		BufferHeapTupleTableSlot *b = (BufferHeapTupleTableSlot *) tts;
		HTSV_Result res;

		LockBuffer(b->buffer, BUFFER_LOCK_SHARE);
		res = HeapTupleSatisfiesVacuum(b->base.tuple, horizon, b->buffer);
		LockBuffer(b->buffer, BUFFER_LOCK_UNLOCK);
		present = (res != HEAPTUPLE_DEAD || ++seen > VERIFY_MAX_ENTRIES);
	}
	index_endscan(scan);
	ExecDropSingleTupleTableSlot(tts);
	return present;
}

/*
 * In a maintenance round (under the compaction lock): mark the buckets of
 * counters none of which has a slot row any snapshot can see (see the
 * header).  The counters are every id of any version of counter.counters,
 * a counter still being created included.  Only in a schema with the
 * trigger counter._written (1.4).
 */
void
CounterSlotsVerify(void)
{
	CounterRels *r = CounterGetRels();
	CounterDb  *db;
	uint64		written[COUNTER_SLOT_BUCKETS];
	bool		none[COUNTER_SLOT_BUCKETS];
	bool		any = false;
	Relation	rel;
	Relation	idx;
	Relation	counters;
	TableScanDesc scan;
	HeapTuple	tup;
	TransactionId horizon;
	int			b;

	if (CounterLegacy() || RecoveryInProgress() || (db = CounterMyDb()) == NULL)
		return;
	for (b = 0; b < COUNTER_SLOT_BUCKETS; b++)
	{
		written[b] = pg_atomic_read_u64(&db->slot_rows.written[b]);
		none[b] = pg_atomic_read_u64(&db->slot_rows.none_at[b]) != written[b] + 1;
		any |= none[b];
	}
	if (!any)
		return;
	pg_memory_barrier();

	rel = table_open(r->slots, AccessShareLock);
	idx = index_open(r->slots_pkey, AccessShareLock);
	horizon = GetOldestNonRemovableTransactionId(rel);
	counters = table_open(r->counters, AccessShareLock);
	scan = table_beginscan(counters, SnapshotAny, 0, NULL);
	while ((tup = heap_getnext(scan, ForwardScanDirection)) != NULL)
	{
		bool		isnull;
		int32		id = DatumGetInt32(heap_getattr(tup, 1, RelationGetDescr(counters), &isnull));

		b = (uint32) id % COUNTER_SLOT_BUCKETS;
		if (!isnull && none[b] && slot_rows_present(rel, idx, id, horizon))
			none[b] = false;
	}
	table_endscan(scan);
	table_close(counters, AccessShareLock);
	index_close(idx, AccessShareLock);
	table_close(rel, AccessShareLock);

	for (b = 0; b < COUNTER_SLOT_BUCKETS; b++)
		if (none[b])
			pg_atomic_write_u64(&db->slot_rows.none_at[b], written[b] + 1);
}

/*
 * Insert row as this backend's own slot row of (counter, key), numbered
 * own (see count_rows); its TID.
 */
static ItemPointerData
slot_insert_row(Relation rel, Relation idx, CounterMeta *meta, text *key,
				SlotRow *row, int32 own)
{
	Datum		values[Natts_slots];
	bool		nulls[Natts_slots];
	HeapTuple	tup;

	row->slot = own;
	row->has_lo = meta->has_min;
	row->has_hi = meta->has_max;
	row->touched = GetCurrentTransactionStartTimestamp();
	slot_form(values, nulls, meta->id, key, row);
	tup = heap_form_tuple(RelationGetDescr(rel), values, nulls);
	heap_insert(rel, tup, GetCurrentCommandId(true), 0, NULL);
	index_insert(idx, values, nulls, &tup->t_self, rel,
				 UNIQUE_CHECK_YES, false, NULL);
	/* counted once its index entry is there for a maintenance round to find */
	slot_rows_written(meta->id);
	row->stored = 0;
	slot_noted(meta, key, row);
	row->tid = tup->t_self;
	row->ours = true;
	heap_freetuple(tup);
	meta->last_slot = own;
	return row->tid;
}

/*
 * Insert this backend's own slot row for (counter, key), numbered own,
 * holding value; return its TID.  A bounded key's row inserted here is its
 * first: it holds all the headroom (the bounds less the key's compacted
 * value), or in a mesh all the rights of this node (rights.c); *in_mesh
 * says which.
 */
static ItemPointerData
slot_insert(Relation rel, Relation idx, CounterMeta *meta, text *key,
			int64 value, int32 own, bool *in_mesh)
{
	SlotRow		row;

	bool		bounded = meta->has_min || meta->has_max;

	row.value = value;
	row.lo = row.hi = 0;
	*in_mesh = bounded && CounterRightsShare(meta, key, &row.lo, &row.hi);
	if (bounded && !*in_mesh)
	{
		Snapshot	snapshot = RegisterSnapshot(GetLatestSnapshot());
		int64		base = CounterReadValue(meta, key, snapshot);

		UnregisterSnapshot(snapshot);
		row.lo = to_int64((int128) meta->min - base);
		row.hi = to_int64((int128) meta->max - base);
	}
	return slot_insert_row(rel, idx, meta, key, &row, own);
}

/*
 * Add delta to the slot row at tid, if the row can be had and has room.  On
 * SLOT_NO_SHARE the row stays locked and is returned in *row.
 *
 * A row this transaction has written already (since 1.4) is not written
 * again: the add goes to an event row, and the row stays locked.  Every
 * version a transaction writes stays until it ends (none can be pruned), so
 * a statement adding a million times to a thousand keys made chains of a
 * thousand versions, each add walking its key's chain to the newest
 * (quadratic) over pages of dead versions (gigabytes); an event row is
 * one insert among other keys' rows.  Not for bounded counters, whose
 * escrow is in the slot rows, nor with counter.slot_events = 0.
 */
static SlotResult
slot_try(Relation rel, Relation idx, ItemPointer tid, CounterMeta *meta,
		 text *key, int64 delta, LockWaitPolicy policy, SlotRow *row)
{
	int64		value;
	TM_Result	result = slot_lock(rel, tid, policy, row);

	if (result == TM_WouldBlock)
		return SLOT_BUSY;
	if (result != TM_Ok)
		return SLOT_MOVED;
	if (row->ours && !meta->has_min && !meta->has_max && counter_slot_events > 0)
	{
		CounterEventsInsert(meta, key, delta, GetCurrentTransactionStartTimestamp());
		return SLOT_DONE;
	}
	if (pg_add_s64_overflow(row->value, delta, &value))
		ereport(ERROR,
				(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
				 errmsg("counter value out of range for bigint")));
	if ((row->has_lo && value < row->lo) || (row->has_hi && value > row->hi))
		return SLOT_NO_SHARE;
	row->value = value;
	row->touched = GetCurrentTransactionStartTimestamp();	/* counter.get */
	slot_write(rel, idx, meta, key, row);
	meta->last_slot = row->slot;
	return SLOT_DONE;
}

/* The error of an add that cannot go on in its transaction's snapshot. */
static void
serialization_failure(void)
{
	ereport(ERROR,
			(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
			 errmsg("could not serialize access due to concurrent update"),
			 errdetail("Every slot row of the key changed after this transaction's snapshot."),
			 errhint("Retry the transaction, or raise the counter's slot limit.")));
}

/*
 * Escrow of bounded counters.  Each slot row holds a share of the headroom,
 * [lo, hi] around its value, and the shares add up to the bounds less the
 * compacted total (the worker moves value and share together), so a
 * committed state in which every row is within its share is within the
 * bounds.  An add within its row's share touches no other row.  Rows grow
 * with contention by splitting a held row's headroom with a new row of the
 * adder's own.  An add that leaves its share takes a group of rows it has
 * locked, checks the bound on their sums, applies the delta and splits
 * their headroom evenly again: the group's lo and hi sums do not change, so
 * neither do the counter's.
 */

/* The share of row i when slack is split evenly over n rows. */
static int128
share(int128 slack, int n, int i)
{
	return slack / n + (i < slack % n ? 1 : 0);
}

/*
 * Apply delta to rows[0] and split the headroom of rows[0..n) evenly, if
 * their sums allow delta; write them.  False (nothing written) otherwise.
 */
static bool
escrow_split(Relation rel, Relation idx, CounterMeta *meta, text *key,
			 int64 delta, SlotRow *rows, int n)
{
	int128		sum = delta;
	int128		sum_lo = 0;
	int128		sum_hi = 0;
	int			i;

	for (i = 0; i < n; i++)
	{
		sum += rows[i].value;
		sum_lo += rows[i].lo;
		sum_hi += rows[i].hi;
	}
	if ((meta->has_min && sum < sum_lo) || (meta->has_max && sum > sum_hi))
		return false;

	rows[0].value = to_int64((int128) rows[0].value + delta);
	rows[0].touched = GetCurrentTransactionStartTimestamp();	/* counter.get */
	for (i = 0; i < n; i++)
	{
		if (meta->has_min)
			rows[i].lo = to_int64(rows[i].value - share(sum - sum_lo, n, i));
		if (meta->has_max)
			rows[i].hi = to_int64(rows[i].value + share(sum_hi - sum, n, i));
		slot_write(rel, idx, meta, key, &rows[i]);
	}
	meta->last_slot = rows[0].slot;
	return true;
}

/* Rows of the key in the snapshot of this add (see CounterSlotsAdd). */
static int
escrow_tids(Relation rel, Relation idx, CounterMeta *meta, text *key,
			ItemPointerData *tids)
{
	Snapshot	snapshot = RegisterSnapshot(IsolationUsesXactSnapshot() ?
											GetTransactionSnapshot() :
											GetLatestSnapshot());
	ScanKeyData keys[3];
	int			n;

	CounterScanKeys(keys, meta->id, key, false, 0);
	n = collect_tids(rel, idx, snapshot, keys, 2, tids, SLOT_SCAN_MAX);
	UnregisterSnapshot(snapshot);
	return n;
}

/*
 * The sums of value, lo and hi over every row of the key as last committed
 * (read without locks), with the rows this transaction holds as it has them.
 */
static void
escrow_committed(Relation rel, ItemPointerData *tids, int n, SlotRow *held,
				 int nheld, int128 *sum, int128 *sum_lo, int128 *sum_hi)
{
	int			i;
	int			j;

	*sum = *sum_lo = *sum_hi = 0;
	for (i = 0; i < n; i++)
	{
		SlotRow		row;
		bool		mine = false;

		for (j = 0; j < nheld && !mine; j++)
			mine = ItemPointerEquals(&tids[i], &held[j].tid);
		if (mine || !slot_peek(rel, &tids[i], &row))
			continue;
		*sum += row.value;
		*sum_lo += row.lo;
		*sum_hi += row.hi;
	}
	for (j = 0; j < nheld; j++)
	{
		*sum += held[j].value;
		*sum_lo += held[j].lo;
		*sum_hi += held[j].hi;
	}
}

/*
 * Apply delta to a bounded key whose row mine (locked) lacks the share,
 * taking headroom from every other row nobody holds right now (skip-locked),
 * and trying again while the headroom needed sits in rows others hold: they
 * commit within milliseconds.  No lock is ever waited for here, so two
 * such adds cannot deadlock (each keeps the rows it got, which the next try
 * finds already its own).  Returns false, changing nothing, when the rows'
 * committed values show delta would cross a bound; raises 40001 when the
 * headroom stays out of reach for ESCROW_PATIENCE_MS.
 */
#define ESCROW_PATIENCE_MS	100

static bool
escrow_add(Relation rel, Relation idx, CounterMeta *meta, text *key,
		   int64 delta, SlotRow *mine, ItemPointerData *tids)
{
	SlotRow    *rows = palloc(sizeof(SlotRow) * (SLOT_SCAN_MAX + 1));
	int			waited;

	for (waited = 0;; waited++)
	{
		int			n = escrow_tids(rel, idx, meta, key, tids);
		int			nrows = 1;
		int			i;
		int128		sum;
		int128		sum_lo;
		int128		sum_hi;

		rows[0] = *mine;
		for (i = 0; i < n; i++)
		{
			if (ItemPointerEquals(&tids[i], &mine->tid))
				continue;
			if (slot_lock(rel, &tids[i], LockWaitSkip, &rows[nrows]) == TM_Ok)
				nrows++;
		}
		if (escrow_split(rel, idx, meta, key, delta, rows, nrows))
			return true;

		escrow_committed(rel, tids, n, rows, nrows, &sum, &sum_lo, &sum_hi);
		sum += delta;
		if ((meta->has_min && sum < sum_lo) || (meta->has_max && sum > sum_hi))
			return false;
		if (waited >= ESCROW_PATIENCE_MS || IsolationUsesXactSnapshot())
			ereport(ERROR,
					(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
					 errmsg("could not reserve headroom of counter \"%s\" key \"%s\" under concurrent adds",
							meta->name, text_to_cstring(key)),
					 errhint("Retry the transaction.")));
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 1, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
}

/*
 * Give this backend a row of its own, carved out of the locked row: half of
 * that row's headroom moves to the new row (value 0), so the pair's lo and
 * hi sums do not change.  This is how a bounded key's rows grow with its
 * contention, each born with a share and without waiting for anyone.
 */
static void
escrow_split_off(Relation rel, Relation idx, CounterMeta *meta, text *key,
				 SlotRow *row, int32 own)
{
	SlotRow		mine;
	int128		give_lo = meta->has_min ? ((int128) row->value - row->lo) / 2 : 0;
	int128		give_hi = meta->has_max ? ((int128) row->hi - row->value) / 2 : 0;

	mine.value = 0;
	mine.lo = to_int64(-give_lo);
	mine.hi = to_int64(give_hi);
	row->lo = to_int64(row->lo + give_lo);
	row->hi = to_int64(row->hi - give_hi);
	CommandCounterIncrement();	/* the row was just written by this command */
	slot_write(rel, idx, meta, key, row);
	slot_insert_row(rel, idx, meta, key, &mine, own);
}

/*
 * The row of the key with the most headroom in delta's direction, as last
 * committed (a guess, read without a lock); -1 when none has any.
 */
static int
escrow_richest(Relation rel, ItemPointerData *tids, int n, int64 delta)
{
	int			best = -1;
	int128		best_room = 0;
	int			i;

	for (i = 0; i < n; i++)
	{
		SlotRow		row;
		int128		room;

		if (!slot_peek(rel, &tids[i], &row))
			continue;
		room = delta < 0 ? (int128) row.value - row.lo : (int128) row.hi - row.value;
		if (room > best_room)
		{
			best = i;
			best_room = room;
		}
	}
	return best;
}

/*
 * Whether xid, in progress, belongs to a prepared transaction: one that no
 * backend runs, and that may hold its rows for as long as it stays prepared.
 */
static bool
xid_is_prepared(TransactionId xid)
{
	return BackendXidGetPid(SubTransGetTopmostTransaction(xid)) == 0;
}

/*
 * Count the slot rows of (counter, key) as they stand, insertions still in
 * progress included (a dirty snapshot): the slot limit counts them too.
 * Tells whether this backend's own row is among them, the number its own
 * row gets if it inserts one (*own), and the xid of a transaction still
 * inserting or updating one, if any.  A dirty index scan can miss a row
 * that a concurrent non-HOT update moves to a new TID (the old version dead
 * by the time it is read, the new index entry not read), so a second scan
 * with the latest MVCC snapshot, which keeps seeing the old version,
 * completes it: a row counts once by its slot number.
 *
 * A backend's own number is MyBackendId, unless a prepared transaction
 * holds the row of that number (it prepared in a backend that had our
 * number): then the row is not ours, and ours is the first free number of
 * MyBackendId + k * (MaxBackends + 1), k = 1, 2, ..., which only a backend
 * with our number ever inserts, so no insertion of it can conflict.
 */
static int
count_rows(Relation rel, Relation idx, CounterMeta *meta, text *key,
		   bool *have_own, int32 *own, TransactionId *inserting)
{
	SnapshotData dirty;
	Snapshot	latest = RegisterSnapshot(GetLatestSnapshot());
	ScanKeyData keys[3];
	TupleTableSlot *tts = table_slot_create(rel, NULL);
	Bitmapset  *slots = NULL;
	bool		lost = false;
	int			n;
	int			pass;

	*inserting = InvalidTransactionId;
	InitDirtySnapshot(dirty);
	CounterScanKeys(keys, meta->id, key, false, 0);
	for (pass = 0; pass < 2; pass++)
	{
		IndexScanDesc scan = index_beginscan(rel, idx, pass == 0 ? &dirty : latest, 2, 0);

		index_rescan(scan, keys, 2, NULL, 0);
		while (index_getnext_slot(scan, ForwardScanDirection, tts))
		{
			bool		isnull;
			int32		number = DatumGetInt32(slot_getattr(tts, Anum_slots_slot, &isnull));

			if (pass == 0 && TransactionIdIsValid(dirty.xmin) &&
				!TransactionIdIsCurrentTransactionId(dirty.xmin))
			{
				if (number == MyBackendId && xid_is_prepared(dirty.xmin))
					lost = true;
				else
					*inserting = dirty.xmin;
			}
			slots = bms_add_member(slots, number);
		}
		index_endscan(scan);
	}
	ExecDropSingleTupleTableSlot(tts);
	UnregisterSnapshot(latest);
	n = bms_num_members(slots);
	*have_own = bms_is_member(MyBackendId, slots) && !lost;
	*own = MyBackendId;
	while (bms_is_member(*own, slots))
		*own += MaxBackends + 1;
	bms_free(slots);
	return n;
}

/*
 * Add delta to one slot row of (counter, key), never waiting if it can help
 * it.  The first row tried is the one this backend last added to (its
 * previous transaction released it, and others tend to have rows of their
 * own by then); the others are tried from an offset that differs per
 * backend, so that backends do not queue up on the same rows.  Returns false
 * when a bounded counter's bound would be crossed (nothing changed).
 *
 * Rows are found with the latest snapshot under READ COMMITTED, and with
 * the transaction's snapshot under REPEATABLE READ and SERIALIZABLE: there
 * a row changed since the snapshot is passed over like a busy one, so the
 * transaction only ever replaces versions it sees and keeps reading its own
 * adds on top of its snapshot.  Only when no row can be had and none added
 * does such an add fail with a serialization failure.
 */
bool
CounterSlotsAdd(CounterMeta *meta, text *key, int64 delta)
{
	CounterRels *r = CounterGetRels();
	Relation	rel;
	Relation	idx;
	ScanKeyData keys[3];
	ItemPointerData *tids;
	SlotResult	result = SLOT_MOVED;
	SlotRow		held;
	bool		ok = true;
	bool		bounded = meta->has_min || meta->has_max;
	bool		xact_snapshot = IsolationUsesXactSnapshot();

	rel = table_open(r->slots, RowExclusiveLock);
	idx = index_open(r->slots_pkey, RowExclusiveLock);
	tids = palloc(sizeof(ItemPointerData) * SLOT_SCAN_MAX);

	while (result == SLOT_MOVED)
	{
		Snapshot	snapshot;
		ItemPointerData first;
		bool		have_first;
		bool		have_own;
		bool		locked;
		int32		own;
		TransactionId inserting;
		int			nall = 0;
		int			nrows;
		int			best;
		int			i;
		int128		pending;

		CHECK_FOR_INTERRUPTS();
		snapshot = RegisterSnapshot(xact_snapshot ? GetTransactionSnapshot() :
									GetLatestSnapshot());

		/* 1. the row of the key this transaction holds, or this backend used last time */
		have_first = bounded && own_row_get(rel, meta->id, key, &first);
		if (!have_first)
		{
			CounterScanKeys(keys, meta->id, key, true, meta->last_slot);
			have_first = collect_tids(rel, idx, snapshot, keys, 3, &first, 1) == 1;
		}
		result = have_first ?
			slot_try(rel, idx, &first, meta, key, delta, LockWaitSkip, &held) : SLOT_BUSY;
		if (result == SLOT_MOVED && xact_snapshot)
			result = SLOT_BUSY;

		/* 2. any other row of the key that nobody holds */
		if (result == SLOT_BUSY)
		{
			CounterScanKeys(keys, meta->id, key, false, 0);
			nall = collect_tids(rel, idx, snapshot, keys, 2, tids, SLOT_SCAN_MAX);
			for (i = 0; i < nall && result == SLOT_BUSY; i++)
			{
				ItemPointer tid = &tids[(i + MyBackendId) % nall];

				if (!have_first || !ItemPointerEquals(tid, &first))
				{
					result = slot_try(rel, idx, tid, meta, key, delta, LockWaitSkip, &held);
					if (result == SLOT_MOVED)
						result = SLOT_BUSY;
				}
			}
			/* a bounded key under contention: a row of our own, with a share */
			if (result == SLOT_DONE && bounded && meta->last_slot != MyBackendId)
			{
				nrows = count_rows(rel, idx, meta, key, &have_own, &own, &inserting);
				if (!have_own && nrows < meta->nslots)
					escrow_split_off(rel, idx, meta, key, &held, own);
			}
			/*
			 * A key without slot rows, neither hot nor contended: an event,
			 * its pending events taking the place of a slot row's value
			 */
			if (result == SLOT_BUSY && nall == 0 && !bounded &&
				counter_slot_events > 0 &&
				!CounterEventsBusy(meta, key, counter_slot_events, &pending))
			{
				(void) to_int64(pending + delta);
				CounterEventsInsert(meta, key, delta,
									GetCurrentTransactionStartTimestamp());
				result = SLOT_DONE;
			}
		}
		UnregisterSnapshot(snapshot);
		if (result == SLOT_MOVED)
			continue;			/* the row changed since found: look again */
		if (result != SLOT_BUSY)
			break;

		/*
		 * 3. every row is held: add our own row (a row of our own number
		 * cannot be inserted by anyone else), or wait at the limit.  Only
		 * one transaction at a time may add a bounded key's first row: it
		 * takes all the headroom.
		 */
		nrows = count_rows(rel, idx, meta, key, &have_own, &own, &inserting);
		locked = false;
		if (bounded && nrows == 0)
		{
			(void) CounterRightsLockKey(meta->id, key, true);	/* its first row */
			locked = true;
			nrows = count_rows(rel, idx, meta, key, &have_own, &own, &inserting);
		}
		if (!have_own && nrows < meta->nslots && (!bounded || nrows == 0))
		{
			/* a bounded key's first row takes all the headroom */
			bool		in_mesh;
			ItemPointerData tid = slot_insert(rel, idx, meta, key,
											  bounded ? 0 : delta, own, &in_mesh);

			/*
			 * On one node the row, in the index now, makes every other
			 * first insertion of the key wait for this transaction
			 * (count_rows): the lock has done its part and goes, so that
			 * a transaction may add to any number of new bounded keys.
			 * In a mesh it stays to the end: the rights rounds take it
			 * and would not see the row before then.
			 */
			if (locked && !in_mesh)
				CounterRightsUnlockKey(meta->id, key);
			result = SLOT_DONE;
			if (bounded)
			{
				CommandCounterIncrement();
				result = slot_try(rel, idx, &tid, meta, key, delta,
								  LockWaitBlock, &held);
			}
		}
		else if (bounded && nall > 0 && (best = escrow_richest(rel, tids, nall, delta)) >= 0)
		{
			/*
			 * A bounded key whose rows are all held: wait for the one with
			 * the most headroom (holding none of the key's rows, so no
			 * deadlock), add there and split off a row of our own.
			 */
			result = slot_try(rel, idx, &tids[best], meta, key, delta,
							  LockWaitBlock, &held);
			if (result == SLOT_DONE && !have_own && nrows < meta->nslots)
				escrow_split_off(rel, idx, meta, key, &held, own);
		}
		else if (TransactionIdIsValid(inserting))
		{
			/* a row being added counts toward the limit: wait for it */
			XactLockTableWait(inserting, rel, NULL, XLTW_None);
			result = SLOT_MOVED;
		}
		else if (nall > 0)
			result = slot_try(rel, idx, &tids[MyBackendId % nall], meta, key,
							  delta, LockWaitBlock, &held);
		else
			result = SLOT_MOVED;

		if (result == SLOT_MOVED && xact_snapshot)
			serialization_failure();
	}

	if (result == SLOT_NO_SHARE)
		ok = escrow_add(rel, idx, meta, key, delta, &held, tids);

	pfree(tids);
	index_close(idx, RowExclusiveLock);
	table_close(rel, RowExclusiveLock);
	return ok;
}
