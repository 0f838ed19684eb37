/*-------------------------------------------------------------------------
 *
 * commit.c
 *	  The transaction's side of buffered and wal modes: its adds, kept in
 *	  backend memory until it ends, and the transaction callbacks that end
 *	  them and its flushes' takes.
 *
 * An add of a buffered or wal-mode counter reserves its delta in the key's
 * shared entry (buffer.c) and joins this transaction's list of pending
 * adds.  At pre-commit the surviving adds of wal-mode counters are written
 * as one WAL message (wal.c); at commit every pending add is applied to
 * its entry, under wal mode's apply lock when a message was written, and
 * the entries of dropped counters the transaction's flushes found are
 * removed; at abort the reservations are given back and the flushes'
 * shadows moved back.  A subtransaction's abort does the same for its own
 * adds and takes.  A transaction with pending adds cannot be prepared.
 * This file sits above buffer.c and wal.c and is the only one that calls
 * both at commit.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "lib/stringinfo.h"
#include "nodes/pg_list.h"
#include "utils/memutils.h"

#include "commit.h"
#include "buffer.h"
#include "catalog.h"
#include "wal.h"

/* an add of this transaction, reserved in its entry, applied at commit */
typedef struct PendingAdd
{
	CounterBufferKey	key;
	int64		delta;
	SubTransactionId subxid;
	bool		logged;			/* of a wal-mode counter: goes into the WAL */
} PendingAdd;

static List *pending = NIL;		/* of PendingAdd, in TopTransactionContext */
static bool callbacks_registered = false;

/*
 * This transaction's adds to the entry bk, not yet applied (commit does);
 * if there is one, *latest (if not NULL) is raised to this transaction's
 * start, the time counter.get gives its adds.
 */
int64
CounterCommitPendingKey(CounterBufferKey *bk, TimestampTz *latest)
{
	int64		sum = 0;
	ListCell   *lc;

	foreach(lc, pending)
	{
		PendingAdd *p = lfirst(lc);

		if (memcmp(&p->key, bk, sizeof(CounterBufferKey)) != 0)
			continue;
		sum += p->delta;
		if (latest != NULL)
			*latest = Max(*latest, GetCurrentTransactionStartTimestamp());
	}
	return sum;
}

/* This transaction's adds to (counter, key), not applied yet (see above). */
int64
CounterCommitPending(CounterMeta *meta, text *key, TimestampTz *latest)
{
	CounterBufferKey bk;

	if (pending == NIL || !CounterBufferMakeKey(&bk, meta, key))
		return 0;
	return CounterCommitPendingKey(&bk, latest);
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
 * shared memory and remove the entries of dropped counters its flushes
 * found; on abort, give the reservations back and move the shadows of its
 * flushes back.
 */
static void
commit_xact_callback(XactEvent event, void *arg)
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

			CounterBufferApply(&p->key, p->delta, true);
		}
		if (logged)
			CounterWalApplyEnd();
		CounterBufferTakenCommit();
	}
	if (event == XACT_EVENT_ABORT)
	{
		CounterWalAbort();
		foreach(lc, pending)
		{
			PendingAdd *p = lfirst(lc);

			CounterBufferApply(&p->key, p->delta, false);
		}
		CounterBufferTakenAbort(InvalidSubTransactionId);
	}
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT ||
		event == XACT_EVENT_PREPARE)
	{
		/* their memory goes with TopTransactionContext */
		pending = NIL;
		CounterBufferTakenReset();
	}
}

/*
 * Forget the adds of an aborted subtransaction (giving their reservations
 * back) and move back the shadows its flushes moved; pass a committed
 * one's up.
 */
static void
commit_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
						SubTransactionId parentSubid, void *arg)
{
	ListCell   *lc;

	foreach(lc, pending)
	{
		PendingAdd *p = lfirst(lc);

		if (p->subxid != mySubid)
			continue;
		if (event == SUBXACT_EVENT_ABORT_SUB)
		{
			CounterBufferApply(&p->key, p->delta, false);
			pending = foreach_delete_current(pending, lc);
		}
		else if (event == SUBXACT_EVENT_COMMIT_SUB)
			p->subxid = parentSubid;
	}
	if (event == SUBXACT_EVENT_ABORT_SUB)
		CounterBufferTakenAbort(mySubid);
	else if (event == SUBXACT_EVENT_COMMIT_SUB)
		CounterBufferTakenSubCommit(mySubid, parentSubid);
}

/* Register our transaction callbacks once per backend. */
static void
register_callbacks(void)
{
	if (!callbacks_registered)
	{
		RegisterXactCallback(commit_xact_callback, NULL);
		RegisterSubXactCallback(commit_subxact_callback, NULL);
		callbacks_registered = true;
	}
}

/*
 * Buffer an add: make sure the key has an entry (reading F for its base),
 * reserve the delta in it, then keep it until commit.  False when the add
 * cannot be buffered (no shared memory, a long key, no room for a new
 * entry): the caller stores an event.  22003 when the entry's sum could
 * leave bigint.
 */
bool
CounterCommitAdd(CounterMeta *meta, text *key, int64 delta)
{
	CounterBufferKey bk;
	PendingAdd *p;
	MemoryContext old;

	if (!CounterBufferMakeKey(&bk, meta, key))
		return false;

	/*
	 * Allocated before the reservation, so that after it only the list
	 * append remains to be done; the add joins the list only once reserved,
	 * as an abort gives back the reservation of every add in the list.
	 */
	register_callbacks();
	old = MemoryContextSwitchTo(TopTransactionContext);
	p = palloc(sizeof(PendingAdd));
	MemoryContextSwitchTo(old);
	p->key = bk;
	p->delta = delta;
	p->subxid = GetCurrentSubTransactionId();
	p->logged = (meta->mode == COUNTER_MODE_WAL);
	if (!CounterBufferReserve(meta, key, &bk, delta))
	{
		pfree(p);
		return false;
	}
	old = MemoryContextSwitchTo(TopTransactionContext);
	pending = lappend(pending, p);
	MemoryContextSwitchTo(old);
	return true;
}

/*
 * Take this database's buffered entries for a flush (CounterBufferTake),
 * with the callbacks that end the take registered.
 */
int
CounterCommitTake(CounterBufferTaken *out)
{
	register_callbacks();
	return CounterBufferTake(out);
}
