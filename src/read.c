/*-------------------------------------------------------------------------
 *
 * read.c
 *	  The exact read of one key: totals + slot rows (unless its counter has
 *	  none: slots.c) + the events tables live in the snapshot (unless
 *	  marked empty: events.c), each scanned through its index with the one
 *	  snapshot the caller passes, + what buffered adds hold in shared
 *	  memory beyond what that snapshot sees flushed (buffer.c).  The sum of
 *	  a key's slot rows is kept in shared memory for the next reads: in a
 *	  snapshot that sees the same transactions as it is, in another one
 *	  with the adds noted since (slot_sum, sum_from_base).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/transam.h"
#include "access/xact.h"
#include "catalog/pg_collation.h"
#include "executor/tuptable.h"
#include "storage/lmgr.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/rel.h"

#include "read.h"
#include "buffer.h"
#include "catalog.h"
#include "commit.h"
#include "events.h"
#include "legacy.h"
#include "shmem.h"

/*
 * Sum column attnum (int8) over the rows of relid that match keys.  With
 * hold, the locks are kept to the end of the transaction, as readers
 * usually do: a later read in it finds them in the local lock table.  The
 * events tables' locks are not held: the worker's TRUNCATE of a folded one
 * needs it unlocked.  With a valid time_att, *latest is raised to that
 * column's largest non-null time (counter.get), of the rows whose amount is
 * not 0 when nonzero (a slot row zeroed by compaction).
 */
static int128
sum_rows(Oid relid, Oid indexid, ScanKey keys, int nkeys, AttrNumber attnum,
		 Snapshot snapshot, bool hold, AttrNumber time_att, bool nonzero,
		 TimestampTz *latest)
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
		int64		amount = isnull ? 0 : DatumGetInt64(d);

		sum += amount;
		if (time_att != InvalidAttrNumber && (amount != 0 || !nonzero))
		{
			d = slot_getattr(tts, time_att, &isnull);
			if (!isnull)
				*latest = Max(*latest, DatumGetTimestampTz(d));
		}
	}
	index_endscan(scan);
	ExecDropSingleTupleTableSlot(tts);
	index_close(idx, hold ? NoLock : AccessShareLock);
	table_close(rel, hold ? NoLock : AccessShareLock);
	return sum;
}

/*
 * Fill form with what decides what snapshot sees of other transactions;
 * false where a sum kept for that form cannot stand for a scan in
 * snapshot: not an MVCC snapshot of a primary, subtransactions overflowed
 * or too many in progress to keep, a serializable transaction (its scan
 * takes the predicate locks), or a transaction with an xid, which may see
 * rows of its own.  Any other transaction in progress, ended or not yet
 * begun for one snapshot is so for every snapshot of the same xmin, xmax
 * and in-progress xids, and what an ended one wrote never changes.
 */
static bool
snapshot_form(Snapshot snapshot, CounterSnapshotForm *form)
{
	int			n = snapshot->xcnt + snapshot->subxcnt;

	if (snapshot->snapshot_type != SNAPSHOT_MVCC || snapshot->takenDuringRecovery ||
		snapshot->suboverflowed || n > COUNTER_SUM_XIDS ||
		IsolationIsSerializable() || GetTopTransactionIdIfAny() != InvalidTransactionId)
		return false;
	form->xmin = snapshot->xmin;
	form->xmax = snapshot->xmax;
	form->nxids = n;
	if (snapshot->xcnt > 0)
		memcpy(form->xids, snapshot->xip, snapshot->xcnt * sizeof(TransactionId));
	if (snapshot->subxcnt > 0)
		memcpy(form->xids + snapshot->xcnt, snapshot->subxip,
			   snapshot->subxcnt * sizeof(TransactionId));
	qsort(form->xids, n, sizeof(TransactionId), xidComparator);
	return true;
}

/* Whether xid is in progress, or not yet begun, for a snapshot of form f. */
static bool
form_running(const CounterSnapshotForm *f, TransactionId xid)
{
	if (TransactionIdFollowsOrEquals(xid, f->xmax))
		return true;
	if (TransactionIdPrecedes(xid, f->xmin))
		return false;
	return bsearch(&xid, f->xids, f->nxids, sizeof(TransactionId), xidComparator) != NULL;
}

/*
 * Whether snapshots of forms a and b see the same transactions before
 * from: both taken after it was assigned, and the same ones of them in
 * progress (a long transaction both wait for, say).
 */
static bool
forms_agree_before(const CounterSnapshotForm *a, const CounterSnapshotForm *b,
				   TransactionId from)
{
	int			i = 0;
	int			j = 0;

	if (TransactionIdPrecedes(a->xmax, from) || TransactionIdPrecedes(b->xmax, from))
		return false;
	for (;;)
	{
		while (i < a->nxids && !TransactionIdPrecedes(a->xids[i], from))
			i++;
		while (j < b->nxids && !TransactionIdPrecedes(b->xids[j], from))
			j++;
		if (i == a->nxids || j == b->nxids)
			return i == a->nxids && j == b->nxids;
		if (a->xids[i++] != b->xids[j++])
			return false;
	}
}

/*
 * The sum of a key's slot rows in a snapshot of form g, from base (shmem.c):
 * its sum in its own form, plus the adds of the committed transactions g
 * sees and that form does not, less those of the ones it sees and g does
 * not.  Every row version is the one before plus an add (writers of a row
 * wait for each other), so the rows' sum in a snapshot is the sum of the
 * adds of the transactions it sees.  False where base cannot tell: not
 * complete for a transaction one form sees and the other does not, or an
 * add's transaction too old to look up.
 */
static bool
sum_from_base(const CounterSlotSumBase *base, const CounterSnapshotForm *g, int64 *sum)
{
	int128		s = base->sum;
	bool		locked = false;
	bool		known = true;
	int			i;

	if (!TransactionIdIsValid(base->complete_from) ||
		!forms_agree_before(&base->snapshot, g, base->complete_from))
		return false;
	for (i = 0; i < base->nadds && known; i++)
	{
		const CounterSumAdd *add = &base->adds[i];
		bool		in_base = form_running(&base->snapshot, add->xid);

		if (in_base == form_running(g, add->xid))
			continue;
		/* as pg_xact_status(): the status stays while the lock is held */
		if (!locked)
			LWLockAcquire(XactTruncationLock, LW_SHARED);
		locked = true;
		if (TransactionIdPrecedes(add->xid, ShmemVariableCache->oldestClogXid))
			known = false;
		else if (TransactionIdDidCommit(add->xid))
			s += in_base ? add->delta : -(int128) add->delta;
	}
	if (locked)
		LWLockRelease(XactTruncationLock);
	if (!known || s < PG_INT64_MIN || s > PG_INT64_MAX)
		return false;
	*sum = (int64) s;
	return true;
}

/*
 * The sum of the slot rows of (counter_id, key) (keys) in snapshot, *latest
 * raised to the latest touched of a nonzero one when want.  A hot key's 64
 * slot rows are on 64 pages, updated all the time, and read by many: a
 * read takes the sum kept in shared memory by a read in a snapshot of the
 * same form, or (not for want) computes it from the sum kept in another
 * form and the adds between the two (sum_from_base), and only else scans;
 * what it finds is kept for the reads after it.
 */
static int128
slot_sum(CounterRels *r, int32 counter_id, text *key, ScanKey keys,
		 Snapshot snapshot, bool want, TimestampTz *latest)
{
	const char *k = VARDATA_ANY(key);
	int			keylen = VARSIZE_ANY_EXHDR(key);
	CounterSnapshotForm form;
	bool		keep = keylen <= COUNTER_SUM_KEY && snapshot_form(snapshot, &form);
	bool		current = keep && !CounterLegacy();	/* 1.4's barrier trigger */
	bool		bases = current && !want;	/* not for the latest time: a scan's */
	bool		kept_here = false;
	CounterSlotSumBase base;
	TimestampTz touched = DT_NOBEGIN;
	int64		kept;
	int128		sum;

	if (keep)
	{
		if (CounterSlotSumGet(counter_id, k, keylen, &form, want, &kept, &touched,
							  bases ? &base : NULL))
			kept_here = true;
		else if (bases && sum_from_base(&base, &form, &kept))
		{
			ereport(DEBUG2,
					(errcode(ERRCODE_SUCCESSFUL_COMPLETION),
					 errmsg_internal("counter: slot rows of a hot key summed from %d adds since a read in another snapshot",
									 base.nadds)));
			CounterSlotSumPut(counter_id, k, keylen, &form, kept, NULL, true);
			kept_here = true;
		}
	}
	if (kept_here)
	{
		/* the lock a scan would hold to the end of the transaction */
		LockRelationOid(r->slots, AccessShareLock);
		sum = kept;
	}
	else
	{
		sum = sum_rows(r->slots, r->slots_pkey, keys, 2, Anum_slots_value, snapshot, true,
					   (want || keep) ? Anum_slots_touched : InvalidAttrNumber, true,
					   &touched);
		if (keep && sum >= PG_INT64_MIN && sum <= PG_INT64_MAX)
			CounterSlotSumPut(counter_id, k, keylen, &form, (int64) sum, &touched, current);
	}
	*latest = Max(*latest, touched);
	return sum;
}

/*
 * The exact value of (counter, key) in snapshot: every source summed; with
 * updated, also the time of the latest add it counts (DT_NOBEGIN if none
 * is known): totals.updated, slot rows' touched, events' at, the buffered
 * entry's time, all in the same snapshot as the value.
 */
int64
CounterReadValueAt(CounterMeta *meta, text *key, Snapshot snapshot,
				   TimestampTz *updated)
{
	CounterRels *r = CounterGetRels();
	ScanKeyData keys[3];
	int128		sum;
	int			live;
	int			t;
	TimestampTz latest = DT_NOBEGIN;
	bool		want = (updated != NULL);

	/* totals: keyed by counter name */
	ScanKeyInit(&keys[0], 1, BTEqualStrategyNumber, F_TEXTEQ,
				CStringGetTextDatum(meta->name));
	keys[0].sk_collation = C_COLLATION_OID;
	ScanKeyInit(&keys[1], 2, BTEqualStrategyNumber, F_TEXTEQ,
				PointerGetDatum(key));
	keys[1].sk_collation = C_COLLATION_OID;
	sum = sum_rows(r->totals, r->totals_pkey, keys, 2, Anum_totals_value, snapshot, true,
				   want ? r->totals_updated : InvalidAttrNumber, false, &latest);

	CounterScanKeys(keys, meta->id, key, false, 0);
	if (!CounterSlotRowsNone(meta->id))
			sum += slot_sum(r, meta->id, key, keys, snapshot, want, &latest);
	live = CounterEventsToRead(r, snapshot);
	for (t = 0; t < 2; t++)
		if (live & (1 << t))
			sum += sum_rows(r->events[t], r->events_key[t], keys, 2,
							Anum_events_delta, snapshot, false,
							want ? Anum_events_at : InvalidAttrNumber, false, &latest);
	sum += CounterBufferPending(meta, key, snapshot, &latest) +
		CounterCommitPending(meta, key, &latest);

	if (sum > PG_INT64_MAX || sum < PG_INT64_MIN)
		CounterValueOutOfRange(meta, text_to_cstring(key));
	if (updated != NULL)
		*updated = latest;
	return (int64) sum;
}

/* The exact value of (counter, key) in snapshot: every source summed. */
int64
CounterReadValue(CounterMeta *meta, text *key, Snapshot snapshot)
{
	return CounterReadValueAt(meta, key, snapshot, NULL);
}
