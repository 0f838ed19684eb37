/*-------------------------------------------------------------------------
 *
 * storage.c
 *	  The hot paths: adding to slot rows, inserting events, and reading a
 *	  key's exact value, all by direct heap and index access.
 *
 * Slots.  A backend owns the slot number MyBackendId: no two live backends
 * own the same number, so a backend may insert its own slot row without any
 * risk of a unique-key conflict.  An add first tries its own row, then any
 * other row of the key, locking each with LockWaitSkip (the mechanism behind
 * SKIP LOCKED): a row held by another in-flight transaction is passed over,
 * never waited for.  Only when every row is held does the backend insert its
 * own row, so the number of rows of a key follows the real concurrency on
 * it, up to the counter's slot limit; past the limit it waits on one row.
 * Rows are found with the latest snapshot and locked in their newest
 * version, so an add works the same under every isolation level: an add is
 * blind (it never depends on the value it reads).
 *
 * Events.  One heap_insert and one index insertion, no lock on any row.
 *
 * Reads.  totals + slots + events (+ buffered memory), each scanned through
 * its index with the one snapshot the caller passes.
 *
 *-------------------------------------------------------------------------
 */
#include "counter.h"

#include "access/genam.h"
#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_collation.h"
#include "common/int.h"
#include "executor/tuptable.h"
#include "miscadmin.h"
#include "nodes/execnodes.h"
#include "storage/backendid.h"
#include "storage/bufmgr.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

/* attribute numbers of counter.slots, counter.events and counter.totals */
#define Anum_slots_counter_id	1
#define Anum_slots_key			2
#define Anum_slots_slot			3
#define Anum_slots_value		4
#define Anum_slots_lo			5
#define Anum_slots_hi			6
#define Anum_slots_touched		7
#define Anum_slots_pad			8
#define Natts_slots				8

#define Anum_events_counter_id	1
#define Anum_events_key			2
#define Anum_events_delta		3
#define Anum_events_at			4
#define Natts_events			4

#define Anum_totals_value		5

/*
 * Width of the pad column: with fillfactor 10, a row this wide leaves too
 * little room under the fill limit for a second row, so every slot row is
 * inserted on a page of its own.
 */
#define SLOT_PAD_LEN			400

/* Most slot rows considered by one add (the rest wait for the worker). */
#define SLOT_SCAN_MAX			1024

static text *slot_pad = NULL;

/* Fill scan keys (counter_id int4, key text[, third int4]) for our indexes. */
static int
init_keys(ScanKey keys, int32 id, text *key, bool with_slot, int32 slot)
{
	ScanKeyInit(&keys[0], 1, BTEqualStrategyNumber, F_INT4EQ,
				Int32GetDatum(id));
	ScanKeyInit(&keys[1], 2, BTEqualStrategyNumber, F_TEXTEQ,
				PointerGetDatum(key));
	keys[1].sk_collation = C_COLLATION_OID;
	if (!with_slot)
		return 2;
	ScanKeyInit(&keys[2], 3, BTEqualStrategyNumber, F_INT4EQ,
				Int32GetDatum(slot));
	return 3;
}

/*
 * Collect the TIDs of the index entries matching keys, visible to snapshot.
 * Returns how many were stored in tids (at most max).
 */
static int
collect_tids(Relation rel, Relation idx, Snapshot snapshot, ScanKey keys,
			 int nkeys, ItemPointerData *tids, int max)
{
	IndexScanDesc scan;
	TupleTableSlot *slot = table_slot_create(rel, NULL);
	int			n = 0;

	scan = index_beginscan(rel, idx, snapshot, nkeys, 0);
	index_rescan(scan, keys, nkeys, NULL, 0);
	while (n < max && index_getnext_slot(scan, ForwardScanDirection, slot))
		tids[n++] = slot->tts_tid;
	index_endscan(scan);
	ExecDropSingleTupleTableSlot(slot);
	return n;
}

/*
 * Lock the slot row at tid and add delta to it.  Returns TM_Ok when done;
 * TM_WouldBlock when another transaction holds the row and policy is
 * LockWaitSkip; TM_Updated or TM_Deleted when the row changed since it was
 * found (the caller looks again).
 */
static TM_Result
slot_update(Relation rel, Relation idx, ItemPointer tid, int32 id, text *key,
			int64 delta, LockWaitPolicy policy, int32 *slotno)
{
	HeapTupleData tuple;
	Buffer		buffer;
	TM_FailureData tmfd;
	TM_Result	result;
	TupleDesc	desc = RelationGetDescr(rel);
	Datum		values[Natts_slots];
	bool		nulls[Natts_slots];
	int64		newvalue;
	HeapTuple	newtup;

	tuple.t_self = *tid;
	result = heap_lock_tuple(rel, &tuple, GetCurrentCommandId(true),
							 LockTupleNoKeyExclusive, policy, false,
							 &buffer, &tmfd);
	if (result != TM_Ok)
	{
		ReleaseBuffer(buffer);
		if (result == TM_SelfModified || result == TM_Invisible)
			elog(ERROR, "slot row modified by the current command");
		return result;
	}

	heap_deform_tuple(&tuple, desc, values, nulls);
	if (pg_add_s64_overflow(DatumGetInt64(values[Anum_slots_value - 1]),
							delta, &newvalue))
	{
		ReleaseBuffer(buffer);
		ereport(ERROR,
				(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
				 errmsg("counter value out of range for bigint")));
	}
	values[Anum_slots_value - 1] = Int64GetDatum(newvalue);
	*slotno = DatumGetInt32(values[Anum_slots_slot - 1]);
	newtup = heap_form_tuple(desc, values, nulls);
	ReleaseBuffer(buffer);

	simple_heap_update(rel, tid, newtup);
	if (!HeapTupleIsHeapOnly(newtup))
	{
		Datum		ivalues[3];
		bool		inulls[3] = {false, false, false};

		ivalues[0] = Int32GetDatum(id);
		ivalues[1] = PointerGetDatum(key);
		ivalues[2] = values[Anum_slots_slot - 1];	/* by value */
		index_insert(idx, ivalues, inulls, &newtup->t_self, rel,
					 UNIQUE_CHECK_YES, false, NULL);
	}
	heap_freetuple(newtup);
	return TM_Ok;
}

/* Insert this backend's own slot row for (counter, key) holding delta. */
static void
slot_insert(Relation rel, Relation idx, int32 id, text *key, int64 delta)
{
	Datum		values[Natts_slots];
	bool		nulls[Natts_slots];
	HeapTuple	tup;

	if (slot_pad == NULL)
	{
		char		buf[SLOT_PAD_LEN + 1];
		MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

		memset(buf, '.', SLOT_PAD_LEN);
		buf[SLOT_PAD_LEN] = '\0';
		slot_pad = cstring_to_text(buf);
		MemoryContextSwitchTo(old);
	}

	memset(nulls, false, sizeof(nulls));
	values[Anum_slots_counter_id - 1] = Int32GetDatum(id);
	values[Anum_slots_key - 1] = PointerGetDatum(key);
	values[Anum_slots_slot - 1] = Int32GetDatum(MyBackendId);
	values[Anum_slots_value - 1] = Int64GetDatum(delta);
	nulls[Anum_slots_lo - 1] = true;
	nulls[Anum_slots_hi - 1] = true;
	values[Anum_slots_touched - 1] = TimestampTzGetDatum(GetCurrentTransactionStartTimestamp());
	values[Anum_slots_pad - 1] = PointerGetDatum(slot_pad);

	tup = heap_form_tuple(RelationGetDescr(rel), values, nulls);
	heap_insert(rel, tup, GetCurrentCommandId(true), 0, NULL);
	index_insert(idx, values, nulls, &tup->t_self, rel,
				 UNIQUE_CHECK_YES, false, NULL);
	heap_freetuple(tup);
}

/*
 * Add delta to one slot row of (counter, key), never waiting if it can help
 * it.  The first row tried is the one this backend last added to (its
 * previous transaction released it, and others tend to have rows of their
 * own by then); the others are tried from an offset that differs per
 * backend, so that backends do not queue up on the same rows.
 */
void
CounterSlotsAdd(CounterMeta *meta, text *key, int64 delta)
{
	CounterRels *r = CounterGetRels();
	Relation	rel;
	Relation	idx;
	ScanKeyData keys[3];
	ItemPointerData *tids;
	bool		done = false;
	int32		used = meta->last_slot;

	rel = table_open(r->slots, RowExclusiveLock);
	idx = index_open(r->slots_pkey, RowExclusiveLock);
	tids = palloc(sizeof(ItemPointerData) * SLOT_SCAN_MAX);

	while (!done)
	{
		Snapshot	snapshot = RegisterSnapshot(GetLatestSnapshot());
		ItemPointerData first;
		bool		have_first;
		bool		have_own;
		int			nall = 0;
		int			i;
		bool		retry = false;
		TM_Result	result;

		CHECK_FOR_INTERRUPTS();

		/* 1. the row this backend used last time */
		init_keys(keys, meta->id, key, true, meta->last_slot);
		have_first = collect_tids(rel, idx, snapshot, keys, 3, &first, 1) == 1;
		if (have_first)
		{
			result = slot_update(rel, idx, &first, meta->id, key, delta,
								 LockWaitSkip, &used);
			if (result == TM_Ok)
				done = true;
			else if (result != TM_WouldBlock)
				retry = true;
		}

		/* 2. any other row of the key that nobody holds */
		if (!done && !retry)
		{
			init_keys(keys, meta->id, key, false, 0);
			nall = collect_tids(rel, idx, snapshot, keys, 2, tids, SLOT_SCAN_MAX);
			for (i = 0; i < nall && !done; i++)
			{
				ItemPointer tid = &tids[(i + MyBackendId) % nall];

				if (have_first && ItemPointerEquals(tid, &first))
					continue;
				result = slot_update(rel, idx, tid, meta->id, key, delta,
									 LockWaitSkip, &used);
				done = (result == TM_Ok);
			}
		}

		/* 3. every row is held: add our own row, or wait at the limit */
		if (!done && !retry)
		{
			/* a row numbered MyBackendId cannot be inserted by anyone else */
			have_own = have_first && meta->last_slot == MyBackendId;
			if (!have_own && nall < meta->nslots)
			{
				init_keys(keys, meta->id, key, true, MyBackendId);
				have_own = collect_tids(rel, idx, snapshot, keys, 3, &first, 1) == 1;
			}
			if (!have_own && nall < meta->nslots)
			{
				slot_insert(rel, idx, meta->id, key, delta);
				used = MyBackendId;
				done = true;
			}
			else if (nall > 0)
			{
				result = slot_update(rel, idx, &tids[MyBackendId % nall], meta->id,
									 key, delta, LockWaitBlock, &used);
				done = (result == TM_Ok);
			}
		}
		UnregisterSnapshot(snapshot);
	}
	meta->last_slot = used;

	pfree(tids);
	index_close(idx, RowExclusiveLock);
	table_close(rel, RowExclusiveLock);
}

/* Append one event row: no row lock, nothing shared is updated. */
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

	rel = table_open(r->events, RowExclusiveLock);
	idx = index_open(r->events_key, RowExclusiveLock);

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
	table_close(rel, RowExclusiveLock);
}

/* Sum column attnum (int8) over the rows of relid that match keys. */
static int128
sum_rows(Oid relid, Oid indexid, ScanKey keys, int nkeys, AttrNumber attnum,
		 Snapshot snapshot)
{
	Relation	rel = table_open(relid, AccessShareLock);
	Relation	idx = index_open(indexid, AccessShareLock);
	TupleTableSlot *slot = table_slot_create(rel, NULL);
	IndexScanDesc scan;
	int128		sum = 0;

	scan = index_beginscan(rel, idx, snapshot, nkeys, 0);
	index_rescan(scan, keys, nkeys, NULL, 0);
	while (index_getnext_slot(scan, ForwardScanDirection, slot))
	{
		bool		isnull;
		Datum		d = slot_getattr(slot, attnum, &isnull);

		if (!isnull)
			sum += DatumGetInt64(d);
	}
	index_endscan(scan);
	ExecDropSingleTupleTableSlot(slot);
	index_close(idx, AccessShareLock);
	table_close(rel, AccessShareLock);
	return sum;
}

/* The exact value of (counter, key) in snapshot: every source summed. */
int64
CounterReadValue(CounterMeta *meta, text *key, Snapshot snapshot)
{
	CounterRels *r = CounterGetRels();
	ScanKeyData keys[3];
	int128		sum;

	/* totals: keyed by counter name */
	ScanKeyInit(&keys[0], 1, BTEqualStrategyNumber, F_TEXTEQ,
				CStringGetTextDatum(meta->name));
	keys[0].sk_collation = C_COLLATION_OID;
	ScanKeyInit(&keys[1], 2, BTEqualStrategyNumber, F_TEXTEQ,
				PointerGetDatum(key));
	keys[1].sk_collation = C_COLLATION_OID;
	sum = sum_rows(r->totals, r->totals_pkey, keys, 2, Anum_totals_value, snapshot);

	init_keys(keys, meta->id, key, false, 0);
	sum += sum_rows(r->slots, r->slots_pkey, keys, 2, Anum_slots_value, snapshot);
	sum += sum_rows(r->events, r->events_key, keys, 2, Anum_events_delta, snapshot);

	if (sum > PG_INT64_MAX || sum < PG_INT64_MIN)
		ereport(ERROR,
				(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
				 errmsg("value of counter \"%s\" key \"%s\" is out of range for bigint",
						meta->name, text_to_cstring(key))));
	return (int64) sum;
}
