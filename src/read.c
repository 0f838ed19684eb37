/*-------------------------------------------------------------------------
 *
 * read.c
 *	  The exact read of one key: totals + slot rows + the events tables
 *	  live in the snapshot, each scanned through its index with the one
 *	  snapshot the caller passes, + what buffered adds hold in shared
 *	  memory beyond what that snapshot sees flushed (buffer.c).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/table.h"
#include "access/tableam.h"
#include "catalog/pg_collation.h"
#include "executor/tuptable.h"
#include "storage/bufmgr.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/rel.h"

#include "read.h"
#include "buffer.h"
#include "catalog.h"
#include "commit.h"
#include "events.h"

/*
 * Sum column attnum (int8) over the rows of relid that match keys.  With
 * hold, the locks are kept to the end of the transaction, as readers
 * usually do: a later read in it finds them in the local lock table.  The
 * events tables' locks are not held: the worker's TRUNCATE of a folded one
 * needs it unlocked.
 */
static int128
sum_rows(Oid relid, Oid indexid, ScanKey keys, int nkeys, AttrNumber attnum,
		 Snapshot snapshot, bool hold)
{
	Relation	rel = table_open(relid, AccessShareLock);
	Relation	idx = index_open(indexid, AccessShareLock);
	TupleTableSlot *tts = table_slot_create(rel, NULL);
	IndexScanDesc scan;
	int128		sum = 0;

	scan = index_beginscan(rel, idx, snapshot, nkeys, 0);
	index_rescan(scan, keys, nkeys, NULL, 0);
	while (index_getnext_slot(scan, ForwardScanDirection, tts))
	{
		bool		isnull;
		Datum		d = slot_getattr(tts, attnum, &isnull);

		if (!isnull)
			sum += DatumGetInt64(d);
	}
	index_endscan(scan);
	ExecDropSingleTupleTableSlot(tts);
	index_close(idx, hold ? NoLock : AccessShareLock);
	table_close(rel, hold ? NoLock : AccessShareLock);
	return sum;
}

/*
 * Whether an events table has no block at all, as it has once rotated and
 * emptied (events.c): a row any snapshot taken before this check could see
 * would have extended it already.  An lseek, cheaper than an index scan.
 */
static bool
events_empty(Oid relid)
{
	Relation	rel = table_open(relid, AccessShareLock);
	bool		empty = RelationGetNumberOfBlocks(rel) == 0;

	table_close(rel, AccessShareLock);
	return empty;
}

/* The exact value of (counter, key) in snapshot: every source summed. */
int64
CounterReadValue(CounterMeta *meta, text *key, Snapshot snapshot)
{
	CounterRels *r = CounterGetRels();
	ScanKeyData keys[3];
	int128		sum;
	int			live;
	int			t;

	/* totals: keyed by counter name */
	ScanKeyInit(&keys[0], 1, BTEqualStrategyNumber, F_TEXTEQ,
				CStringGetTextDatum(meta->name));
	keys[0].sk_collation = C_COLLATION_OID;
	ScanKeyInit(&keys[1], 2, BTEqualStrategyNumber, F_TEXTEQ,
				PointerGetDatum(key));
	keys[1].sk_collation = C_COLLATION_OID;
	sum = sum_rows(r->totals, r->totals_pkey, keys, 2, Anum_totals_value, snapshot, true);

	CounterScanKeys(keys, meta->id, key, false, 0);
	sum += sum_rows(r->slots, r->slots_pkey, keys, 2, Anum_slots_value, snapshot, true);
	live = CounterEventsLive(r, snapshot);
	for (t = 0; t < 2; t++)
		if (live & (1 << t) && !events_empty(r->events[t]))
			sum += sum_rows(r->events[t], r->events_key[t], keys, 2,
							Anum_events_delta, snapshot, false);
	sum += CounterBufferPending(meta, key, snapshot) + CounterCommitPending(meta, key);

	if (sum > PG_INT64_MAX || sum < PG_INT64_MIN)
		ereport(ERROR,
				(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
				 errmsg("value of counter \"%s\" key \"%s\" is out of range for bigint",
						meta->name, text_to_cstring(key))));
	return (int64) sum;
}
