/*-------------------------------------------------------------------------
 *
 * topk.c
 *	  The exact top k keys of a counter, in time proportional to k and to
 *	  the keys with uncompacted deltas, not to the keyspace.
 *
 * A key's value is the sum of its totals rows (one per node, a missing row
 * counting 0) plus its pending deltas (live events, slot rows, buffered
 * entries).  Pending keys are few: they are gathered first, each with its
 * exact pending amount, through the events tables' and slots' indexes on
 * the counter id and the counter's buffered entries, and each is a
 * candidate valued exactly (its totals rows read by primary key).
 *
 * Every other key's value is the sum of its totals rows alone, and is found
 * by the threshold algorithm (Fagin's TA): each node's rows are read in
 * index totals_top order (counter, node, value DESC, key), one row of each
 * node a round; a key met for the first time is valued exactly (with one
 * node the row is its value; with more, its rows are read by primary key).
 * A key not met yet has on each node either no row (0) or a row after that
 * node's position, so its value is at most the threshold T, the sum over
 * nodes of max(last value read, 0) (0 once a node is exhausted); and if it
 * equals T, its key follows the last key read on every node whose bound is
 * positive.  The scan stops once the k-th best candidate beats any such
 * key, so results equal the full sort's (value DESC, key ASC), ties at the
 * cut included.  Everything is read through indexes in the caller's
 * snapshot: no planner, no statistics.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/table.h"
#include "access/tableam.h"
#include "catalog/pg_collation.h"
#include "common/hashfn.h"
#include "executor/tuptable.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/rel.h"

#include "topk.h"
#include "buffer.h"
#include "commit.h"
#include "events.h"
#include "shmem.h"

/* attribute numbers of counter.totals used here */
#define Anum_totals_counter		1
#define Anum_totals_key			2
#define Anum_totals_node		3

/* one key met: its pending amount, and whether it is valued already */
typedef struct TopKey
{
	char	   *key;			/* hash key: a NUL-terminated copy */
	int128		pending;
	bool		valued;
} TopKey;

/* one candidate of the result */
typedef struct TopBest
{
	char	   *key;
	int128		value;
} TopBest;

/*
 * One node's cursor over its rows in totals_top order: the scan that found
 * the node, which goes on past its rows into the next nodes' (it stops at
 * the first row of another node).
 */
typedef struct TopNode
{
	int32		node;
	IndexScanDesc scan;
	TupleTableSlot *slot;
	bool		primed;			/* slot holds the next row, not read yet */
	bool		done;
	int64		last;			/* value of the last row read */
	char	   *lastkey;
} TopNode;

/* the state of one top() call */
typedef struct TopState
{
	CounterMeta *meta;
	CounterRels *r;
	Snapshot	snapshot;
	HTAB	   *keys;
	Relation	totals;
	Relation	pkey;
	TupleTableSlot *pslot;
	int			k;
	int			nbest;
	int			maxbest;
	TopBest    *best;			/* sorted: value DESC, key ASC */
} TopState;

/* Hash of a TopKey's key, which is a char *. */
static uint32
topkey_hash(const void *key, Size keysize)
{
	const char *s = *(char *const *) key;

	return hash_bytes((const unsigned char *) s, strlen(s));
}

/* Equality of two TopKey keys (0 if equal). */
static int
topkey_match(const void *a, const void *b, Size keysize)
{
	return strcmp(*(char *const *) a, *(char *const *) b);
}

/* The entry of key s, made (pending 0, not valued) if absent. */
static TopKey *
topkey_enter(TopState *st, const char *s)
{
	bool		found;
	TopKey	   *e = hash_search(st->keys, &s, HASH_ENTER, &found);

	if (!found)
	{
		e->key = pstrdup(s);
		e->pending = 0;
		e->valued = false;
	}
	return e;
}

/* Whether (v1, k1) comes before (v2, k2) in the result's order. */
static bool
before(int128 v1, const char *k1, int128 v2, const char *k2)
{
	return v1 > v2 || (v1 == v2 && strcmp(k1, k2) < 0);
}

/* Offer a valued key to the k best, kept sorted by insertion. */
static void
offer(TopState *st, char *key, int128 value)
{
	int			i;

	if (value > PG_INT64_MAX || value < PG_INT64_MIN)
		CounterValueOutOfRange(st->meta, key);
	if (st->nbest == st->k)
	{
		if (!before(value, key, st->best[st->k - 1].value, st->best[st->k - 1].key))
			return;
		st->nbest--;
	}
	else if (st->nbest == st->maxbest)
	{
		st->maxbest *= 2;
		st->best = repalloc_huge(st->best, sizeof(TopBest) * (Size) st->maxbest);
	}
	for (i = st->nbest; i > 0 && before(value, key, st->best[i - 1].value,
										st->best[i - 1].key); i--)
		st->best[i] = st->best[i - 1];
	st->best[i].key = key;
	st->best[i].value = value;
	st->nbest++;
}

/* Text datum of a C string, for a scan key. */
static Datum
text_datum(const char *s)
{
	return PointerGetDatum(cstring_to_text(s));
}

/* Sum of the totals rows of key on every node, by primary key. */
static int128
totals_of(TopState *st, const char *key)
{
	ScanKeyData sk[2];
	IndexScanDesc scan;
	int128		sum = 0;

	ScanKeyInit(&sk[0], Anum_totals_counter, BTEqualStrategyNumber, F_TEXTEQ,
				text_datum(st->meta->name));
	sk[0].sk_collation = C_COLLATION_OID;
	ScanKeyInit(&sk[1], Anum_totals_key, BTEqualStrategyNumber, F_TEXTEQ,
				text_datum(key));
	sk[1].sk_collation = C_COLLATION_OID;
	scan = index_beginscan(st->totals, st->pkey, st->snapshot, 2, 0);
	index_rescan(scan, sk, 2, NULL, 0);
	while (index_getnext_slot(scan, ForwardScanDirection, st->pslot))
	{
		bool		isnull;
		Datum		d = slot_getattr(st->pslot, Anum_totals_value, &isnull);

		if (!isnull)
			sum += DatumGetInt64(d);
	}
	index_endscan(scan);
	return sum;
}

/*
 * Add to the pending amounts the rows of relid whose first index column is
 * the counter id (events: delta; slots: value, their rows of 0 skipped as
 * keys with nothing pending).
 */
static void
gather_rows(TopState *st, Oid relid, Oid indexid, AttrNumber keyatt,
			AttrNumber amountatt, bool hold, bool skip_zero)
{
	Relation	rel = table_open(relid, AccessShareLock);
	Relation	idx = index_open(indexid, AccessShareLock);
	TupleTableSlot *tts = table_slot_create(rel, NULL);
	ScanKeyData sk;
	IndexScanDesc scan;

	ScanKeyInit(&sk, 1, BTEqualStrategyNumber, F_INT4EQ, Int32GetDatum(st->meta->id));
	scan = index_beginscan(rel, idx, st->snapshot, 1, 0);
	index_rescan(scan, &sk, 1, NULL, 0);
	while (index_getnext_slot(scan, ForwardScanDirection, tts))
	{
		bool		isnull;
		Datum		d = slot_getattr(tts, amountatt, &isnull);
		int64		amount = isnull ? 0 : DatumGetInt64(d);

		if (amount == 0 && skip_zero)
			continue;
		d = slot_getattr(tts, keyatt, &isnull);
		topkey_enter(st, TextDatumGetCString(d))->pending += amount;
	}
	index_endscan(scan);
	ExecDropSingleTupleTableSlot(tts);
	index_close(idx, hold ? NoLock : AccessShareLock);
	table_close(rel, hold ? NoLock : AccessShareLock);
}

/*
 * The pending keys and amounts: the live events tables (their locks not
 * held, as read.c), slot rows (unless the counter has none, as read.c),
 * and the counter's buffered entries beyond what the snapshot sees
 * flushed, with this transaction's own adds.
 */
static void
gather_pending(TopState *st)
{
	CounterRels *r = st->r;
	int			live = CounterEventsToRead(r, st->snapshot);
	int			t;
	CounterBufferEntry *entries;
	int			n;
	int			i;

	for (t = 0; t < 2; t++)
		if (live & (1 << t))
			gather_rows(st, r->events[t], r->events_key[t], Anum_events_key,
						Anum_events_delta, false, false);
	if (!CounterSlotRowsNone(st->meta->id))
		gather_rows(st, r->slots, r->slots_pkey, Anum_slots_key, Anum_slots_value, true, true);

	entries = CounterBufferEntries(st->meta, &n);
	for (i = 0; i < n; i++)
	{
		CounterBufferEntry *e = &entries[i];
		char	   *key = pnstrdup(e->key.key, e->key.keylen);
		TimestampTz latest = DT_NOBEGIN;

		topkey_enter(st, key)->pending +=
			CounterBufferPending(st->meta, cstring_to_text(key), st->snapshot, &latest) +
			CounterCommitPendingKey(&e->key, NULL);
	}
}

/*
 * Open a cursor on the first node after node "after" (or the first node
 * with after_any) holding rows of the counter; false when none is left.
 * The scan that finds the node's first row is its cursor (one descent of
 * the index, and one read of a leaf page, per node).
 */
static bool
open_node(TopState *st, Relation top, int32 after, bool after_any, TopNode *out)
{
	ScanKeyData sk[2];
	bool		isnull;
	int			nkeys = after_any ? 1 : 2;

	ScanKeyInit(&sk[0], 1, BTEqualStrategyNumber, F_TEXTEQ, text_datum(st->meta->name));
	sk[0].sk_collation = C_COLLATION_OID;
	ScanKeyInit(&sk[1], 2, BTGreaterStrategyNumber, F_INT4GT, Int32GetDatum(after));
	out->scan = index_beginscan(st->totals, top, st->snapshot, nkeys, 0);
	index_rescan(out->scan, sk, nkeys, NULL, 0);
	out->slot = table_slot_create(st->totals, NULL);
	if (!index_getnext_slot(out->scan, ForwardScanDirection, out->slot))
	{
		index_endscan(out->scan);
		ExecDropSingleTupleTableSlot(out->slot);
		return false;
	}
	out->node = DatumGetInt32(slot_getattr(out->slot, Anum_totals_node, &isnull));
	out->primed = true;
	out->done = false;
	out->lastkey = NULL;
	return true;
}

/*
 * Read the next row of a node's cursor: value a key met for the first time
 * and offer it.  single: the only node, whose row is the whole total.
 */
static void
step_node(TopState *st, TopNode *n, bool single)
{
	bool		isnull;
	Datum		d;
	TopKey	   *e;

	if (n->primed)
		n->primed = false;
	else if (!index_getnext_slot(n->scan, ForwardScanDirection, n->slot) ||
			 DatumGetInt32(slot_getattr(n->slot, Anum_totals_node, &isnull)) != n->node)
	{
		n->done = true;
		return;
	}
	d = slot_getattr(n->slot, Anum_totals_value, &isnull);
	n->last = isnull ? 0 : DatumGetInt64(d);
	d = slot_getattr(n->slot, Anum_totals_key, &isnull);
	n->lastkey = TextDatumGetCString(d);
	e = topkey_enter(st, n->lastkey);
	if (e->valued)
		return;
	e->valued = true;
	offer(st, e->key, (single ? (int128) n->last : totals_of(st, e->key)) + e->pending);
}

/*
 * Whether no key left unmet can enter the k best: its value is at most
 * the sum of the nodes' bounds, and at that value its key follows the
 * last key read on every node of positive bound.
 */
static bool
settled(TopState *st, TopNode *nodes, int nnodes)
{
	int128		threshold = 0;
	char	   *after = NULL;
	TopBest    *kth;
	int			i;
	bool		all_done = true;

	for (i = 0; i < nnodes; i++)
	{
		if (nodes[i].done)
			continue;
		all_done = false;
		if (nodes[i].last > 0)
		{
			threshold += nodes[i].last;
			if (after == NULL || strcmp(nodes[i].lastkey, after) > 0)
				after = nodes[i].lastkey;
		}
	}
	if (all_done)
		return true;
	if (st->nbest < st->k)
		return false;
	kth = &st->best[st->k - 1];
	return kth->value > threshold ||
		(kth->value == threshold && after != NULL && strcmp(kth->key, after) <= 0);
}

/*
 * Fill the SRF's tuplestore with the k keys of highest value of meta in
 * snapshot (value DESC, key ASC).  Needs 1.4's index totals_top
 * (counter, node, value DESC, key); legacy.c serves older schemas.
 */
void
CounterReadTop(CounterMeta *meta, int k, Snapshot snapshot, Tuplestorestate *out,
			   TupleDesc desc)
{
	MemoryContext cxt = AllocSetContextCreate(CurrentMemoryContext, "counter top",
											  ALLOCSET_DEFAULT_SIZES);
	MemoryContext old = MemoryContextSwitchTo(cxt);
	TopState	st;
	HASHCTL		ctl;
	HASH_SEQ_STATUS hs;
	TopKey	   *e;
	Relation	top;
	TopNode    *nodes;
	int			nnodes = 0;
	int			maxnodes = 4;
	int			i;
	bool		single;

	if (k == 0)
	{
		MemoryContextSwitchTo(old);
		MemoryContextDelete(cxt);
		return;
	}
	st.meta = meta;
	st.r = CounterGetRels();
	st.snapshot = snapshot;
	st.k = k;
	st.nbest = 0;
	st.maxbest = Min(k, 64);
	st.best = palloc(sizeof(TopBest) * st.maxbest);
	ctl.keysize = sizeof(char *);
	ctl.entrysize = sizeof(TopKey);
	ctl.hash = topkey_hash;
	ctl.match = topkey_match;
	ctl.hcxt = cxt;
	st.keys = hash_create("counter top keys", 256, &ctl,
						  HASH_ELEM | HASH_FUNCTION | HASH_COMPARE | HASH_CONTEXT);

	gather_pending(&st);

	st.totals = table_open(st.r->totals, AccessShareLock);
	st.pkey = index_open(st.r->totals_pkey, AccessShareLock);
	st.pslot = table_slot_create(st.totals, NULL);
	top = index_open(st.r->totals_top, AccessShareLock);

	/* every pending key is a candidate, valued exactly */
	hash_seq_init(&hs, st.keys);
	while ((e = hash_seq_search(&hs)) != NULL)
	{
		e->valued = true;
		offer(&st, e->key, totals_of(&st, e->key) + e->pending);
	}

	/* the nodes holding rows of the counter, one index probe each */
	nodes = palloc(sizeof(TopNode) * maxnodes);
	while (open_node(&st, top, nnodes > 0 ? nodes[nnodes - 1].node : 0, nnodes == 0,
					 &nodes[nnodes]))
		if (++nnodes == maxnodes)
		{
			maxnodes *= 2;
			nodes = repalloc(nodes, sizeof(TopNode) * maxnodes);
		}

	/* the threshold algorithm: one row of each node a round */
	single = nnodes == 1;
	for (i = 0; i < nnodes; i++)
		step_node(&st, &nodes[i], single);
	while (!settled(&st, nodes, nnodes))
	{
		CHECK_FOR_INTERRUPTS();
		for (i = 0; i < nnodes; i++)
			if (!nodes[i].done)
				step_node(&st, &nodes[i], single);
	}
	for (i = 0; i < nnodes; i++)
	{
		index_endscan(nodes[i].scan);
		ExecDropSingleTupleTableSlot(nodes[i].slot);
	}
	index_close(top, NoLock);
	ExecDropSingleTupleTableSlot(st.pslot);
	index_close(st.pkey, NoLock);
	table_close(st.totals, NoLock);

	MemoryContextSwitchTo(old);
	for (i = 0; i < st.nbest; i++)
	{
		Datum		values[2];
		bool		nulls[2] = {false, false};

		values[0] = text_datum(st.best[i].key);
		values[1] = Int64GetDatum((int64) st.best[i].value);
		tuplestore_putvalues(out, desc, values, nulls);
	}
	MemoryContextDelete(cxt);
}
