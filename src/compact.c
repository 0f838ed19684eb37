/*-------------------------------------------------------------------------
 *
 * compact.c
 *	  Compaction: move events and slot deltas into totals and rollups,
 *	  exactly once.
 *
 * Exactly-once rests on MVCC alone.  One statement deletes the events
 * visible to its snapshot (DELETE ... RETURNING) and folds exactly those
 * rows into rollups and totals; or, for a whole events table no add writes
 * any more, folds all its rows and marks the table folded (events.c).  The
 * slot statement zeroes the slot rows it could lock (SKIP LOCKED: an add
 * holding a row keeps it) and folds exactly the values it zeroed.  Events
 * and slot values of transactions still in flight are invisible or locked,
 * so they stay for a later batch: no watermark, no waiting for writers
 * (but for the rotation's short wait for the old table's adds).  Each batch
 * commits in one transaction with its deletions, so a crash leaves all of
 * it or none.  One compactor runs per database at a time (an advisory
 * lock), whether it is the worker or a call of counter.compact().
 *
 * Readers add totals, slots and events in one snapshot, which sees a batch
 * either wholly before or wholly after its commit.
 *
 *-------------------------------------------------------------------------
 */
#include "counter.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "miscadmin.h"
#include "storage/lmgr.h"
#include "utils/builtins.h"
#include "utils/guc.h"

/* advisory lock (two int4 keys) taken by every compaction of a database */
#define COMPACT_LOCK_KEY1		0x636f756e	/* "coun" */
#define COMPACT_LOCK_KEY2		0x74657200	/* "ter" */

/*
 * The second half of the batch statements: fold CTE "moved" (counter_id,
 * key, delta, at) into rollups (each granularity of the counter, bucket of
 * the row's time) and into this node's shard of totals; return each key
 * moved, with the number of rows moved for it.  Rows are summed per second
 * first: granularities are whole seconds, so a bucket never splits a
 * second, and a hot key's thousands of rows a second expand into buckets
 * as one.
 */
#define FOLD_MOVED \
	", sec AS (SELECT m.counter_id, m.key," \
	"                 date_bin('1 second', m.at, timestamptz '2000-01-01 00:00:00+00') AS at," \
	"                 sum(m.delta)::int8 AS d, count(*) AS n" \
	"            FROM moved m GROUP BY 1, 2, 3)" \
	", agg AS (SELECT s.counter_id, s.key, sum(s.d)::int8 AS d, sum(s.n)::int8 AS n" \
	"            FROM sec s GROUP BY 1, 2)" \
	", gran AS (SELECT c.id, g.g FROM counter.counters c, unnest(c.rollups) AS g(g))" \
	", roll AS (INSERT INTO counter.rollups AS r (counter_id, key, granularity, bucket, value)" \
	"   SELECT s.counter_id, s.key, gran.g," \
	"          date_bin(gran.g, s.at, timestamptz '2000-01-01 00:00:00+00'), sum(s.d)::int8" \
	"     FROM sec s JOIN gran ON gran.id = s.counter_id" \
	"    GROUP BY 1, 2, 3, 4" \
	"   ON CONFLICT (counter_id, key, granularity, bucket)" \
	"   DO UPDATE SET value = r.value + excluded.value)" \
	", tot AS (INSERT INTO counter.totals AS t (counter, key, node, state)" \
	"   SELECT c.name, a.key, $2, counter.increment('{}', $2, a.d)" \
	"     FROM agg a JOIN counter.counters c ON c.id = a.counter_id" \
	"   ON CONFLICT (counter, key, node)" \
	"   DO UPDATE SET state = counter.increment(t.state, $2, counter.value(excluded.state)))" \
	" SELECT c.name, a.key, a.n FROM agg a JOIN counter.counters c ON c.id = a.counter_id"

/*
 * $1 batch size (unused: all visible events go in one batch), $2 node id,
 * $3 counter id or 0 for all.  A plain delete of everything visible is the
 * cheapest row-by-row way: no row list to build, one pass over the heap.
 */
#define EVENTS_DELETE(TABLE) \
{ \
"WITH moved AS (" \
"   DELETE FROM " TABLE " e WHERE $3 = 0 OR e.counter_id = $3" \
"   RETURNING e.counter_id, e.key, e.delta, e.at)" \
FOLD_MOVED, \
3, {INT4OID, INT4OID, INT4OID} \
}

/*
 * The same for a whole events table no add writes any more (events.c),
 * every counter's rows: fold them all and mark the table folded, with no
 * row deleted.
 */
#define EVENTS_FOLD(TABLE, TAB) \
{ \
"WITH f AS (UPDATE counter.event_tables SET folded = pg_current_xact_id() WHERE tab = " TAB ")," \
" moved AS (SELECT e.counter_id, e.key, e.delta, e.at FROM " TABLE " e)" \
FOLD_MOVED, \
3, {INT4OID, INT4OID, INT4OID} \
}

static CounterStmt events_delete_stmt[2] = {
	EVENTS_DELETE("counter.events"), EVENTS_DELETE("counter.events_1")
};

static CounterStmt events_fold_stmt[2] = {
	EVENTS_FOLD("counter.events", "0"), EVENTS_FOLD("counter.events_1", "1")
};

static CounterStmt slots_stmt = {
"WITH moved AS ("
"   UPDATE counter.slots s SET value = 0, lo = s.lo - z.value, hi = s.hi - z.value,"
"          touched = now()"
"     FROM (SELECT x.ctid, x.value FROM counter.slots x"
"            WHERE ($3 = 0 OR x.counter_id = $3) AND x.value <> 0"
"            LIMIT $1 FOR NO KEY UPDATE SKIP LOCKED) z"
"    WHERE s.ctid = z.ctid"
"   RETURNING s.counter_id, s.key, z.value AS delta, now() AS at)"
FOLD_MOVED,
3, {INT4OID, INT4OID, INT4OID}
};

/*
 * $1 ids, $2 node, $3 creation times, $4 keys, $5 amounts: the flush of
 * buffered entries (buffer.c), raising each key's flushed amount F with
 * the totals, in one transaction.
 */
static CounterStmt buffered_stmt = {
"WITH moved AS ("
"   SELECT u.counter_id, u.key, u.delta, now() AS at"
"     FROM unnest($1::int4[], $3::timestamptz[], $4::text[], $5::int8[])"
"          AS u(counter_id, created, key, delta)"
"     JOIN counter.counters c ON c.id = u.counter_id AND c.created = u.created"
"    WHERE u.delta <> 0),"
" f AS (INSERT INTO counter.flushed AS f (counter_id, key, flushed)"
"        SELECT m.counter_id, m.key, m.delta FROM moved m"
"        ON CONFLICT (counter_id, key) DO UPDATE SET flushed = f.flushed + excluded.flushed)"
FOLD_MOVED,
5, {INT4ARRAYOID, INT4OID, TIMESTAMPTZARRAYOID, TEXTARRAYOID, INT8ARRAYOID}
};

/* $1 idle seconds, $2 counter id or 0: empty slot rows idle long enough */
static CounterStmt fold_stmt = {
"DELETE FROM counter.slots s"
" WHERE s.ctid = ANY (ARRAY (SELECT x.ctid FROM counter.slots x"
"                             WHERE ($2 = 0 OR x.counter_id = $2) AND x.value = 0"
"                               AND x.lo IS NULL AND x.hi IS NULL"
"                               AND x.touched < now() - $1 * interval '1 second'"
"                             FOR UPDATE SKIP LOCKED))",
2, {INT4OID, INT4OID}
};

/* buckets past retention: their sum moves into the -infinity bucket */
static CounterStmt retention_stmt = {
"WITH c AS (SELECT id, u.g, u.r FROM counter.counters,"
"                  unnest(rollups, retention) AS u(g, r)"
"            WHERE u.r IS NOT NULL AND ($1 = 0 OR id = $1)),"
" old AS (DELETE FROM counter.rollups r USING c"
"          WHERE r.counter_id = c.id AND r.granularity = c.g"
"            AND r.bucket > '-infinity' AND r.bucket < now() - c.r"
"         RETURNING r.counter_id, r.key, r.granularity, r.value)"
" INSERT INTO counter.rollups AS r (counter_id, key, granularity, bucket, value)"
" SELECT counter_id, key, granularity, '-infinity', sum(value)::int8 FROM old"
"  GROUP BY 1, 2, 3"
" ON CONFLICT (counter_id, key, granularity, bucket)"
" DO UPDATE SET value = r.value + excluded.value",
1, {INT4OID}
};

static CounterStmt idempotency_stmt = {
"DELETE FROM counter.idempotency WHERE created < now() - $1 * interval '1 second'",
1, {INT4OID}
};

/* The tag of the database's compaction lock. */
static void
compact_lock_tag(LOCKTAG *tag)
{
	SET_LOCKTAG_ADVISORY(*tag, MyDatabaseId, COMPACT_LOCK_KEY1, COMPACT_LOCK_KEY2, 2);
}

/*
 * Transaction callback: a transaction that holds the compaction lock cannot
 * be prepared.  The prepared transaction would keep the lock, stopping every
 * compaction until it is resolved, and a flush it made could not be undone
 * by ROLLBACK PREPARED (buffer.c moves the shadows at the take).
 */
static void
compact_xact_callback(XactEvent event, void *arg)
{
	LOCKTAG		tag;

	if (event != XACT_EVENT_PRE_PREPARE)
		return;
	compact_lock_tag(&tag);
	if (LockHeldByMe(&tag, ExclusiveLock))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("cannot prepare a transaction that compacted counters"),
				 errhint("Call counter.compact() in a transaction of its own.")));
}

/* Take the database's compaction lock for this transaction. */
bool
CounterCompactLock(bool wait)
{
	static bool registered = false;
	LOCKTAG		tag;

	if (!registered)
	{
		RegisterXactCallback(compact_xact_callback, NULL);
		registered = true;
	}
	compact_lock_tag(&tag);
	return LockAcquire(&tag, ExclusiveLock, false, !wait) != LOCKACQUIRE_NOT_AVAIL;
}

/*
 * Run a compaction statement.  For a batch statement, hand its keys to the
 * change feed and return the rows it moved; else the rows it touched.
 */
static int64
run(CounterStmt *stmt, Datum *values)
{
	int64		n = 0;
	uint64		i;

	if (CounterExec(stmt, values, NULL, false) != SPI_OK_SELECT)
		return (int64) SPI_processed;
	for (i = 0; i < SPI_processed; i++)
	{
		bool		isnull;

		n += DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i],
										 SPI_tuptable->tupdesc, 3, &isnull));
	}
	CounterFeedCollect();
	return n;
}

/*
 * Every visible event: rotate the events tables when the current one is
 * due (events.c) and fold the old one whole, then delete and fold the
 * visible rows of each table still live.  Returns the events moved.
 */
static int64
compact_events(Datum *values)
{
	static bool idle = false;	/* our last call moved no event */
	int			folded = CounterEventsSync();
	int			old = CounterEventsRotate(folded, idle);
	int			ntables = OidIsValid(CounterGetRels()->events[1]) ? 2 : 1;
	int64		n = 0;
	int			t;

	if (old >= 0)
	{
		int			nest = NewGUCNestLevel();

		/*
		 * The whole table, whatever its statistics (it was empty when last
		 * analyzed, or never): a sequential scan and hash aggregation.
		 */
		set_config_option("enable_indexscan", "off", PGC_USERSET, PGC_S_SESSION,
						  GUC_ACTION_SAVE, true, 0, false);
		set_config_option("enable_bitmapscan", "off", PGC_USERSET, PGC_S_SESSION,
						  GUC_ACTION_SAVE, true, 0, false);
		set_config_option("enable_sort", "off", PGC_USERSET, PGC_S_SESSION,
						  GUC_ACTION_SAVE, true, 0, false);
		n += run(&events_fold_stmt[old], values);
		AtEOXact_GUC(true, nest);
		folded |= 1 << old;
	}
	for (t = 0; t < ntables; t++)
		if ((folded & (1 << t)) == 0)
			n += run(&events_delete_stmt[t], values);
	idle = (n == 0);
	return n;
}

/*
 * One batch, in the caller's transaction (which holds the compaction lock):
 * every visible event and up to batch_size slot rows, with flush every
 * buffered entry of the database; with maintenance, also
 * fold idle slot rows, apply retention and purge idempotency keys.  Adds
 * what it moved to *moved; returns true when the slot statement filled its
 * batch (more may be waiting).
 */
bool
CounterCompactBatch(int32 counter_id, bool maintenance, bool flush,
					CounterMoved *moved)
{
	Datum		values[5];
	int64		slots;

	values[0] = Int32GetDatum(counter_batch_size);
	values[1] = Int32GetDatum(counter_node_id);
	values[2] = Int32GetDatum(counter_id);

	SPI_connect();
	moved->events += compact_events(values);
	slots = run(&slots_stmt, values);
	moved->slot_rows += slots;
	if (flush && CounterBufferTake(values) > 0)
	{
		values[1] = Int32GetDatum(counter_node_id);
		moved->buffered_keys += run(&buffered_stmt, values);
	}
	if (maintenance)
	{
		values[0] = Int32GetDatum(counter_fold_after);
		values[1] = Int32GetDatum(counter_id);
		run(&fold_stmt, values);
		values[0] = Int32GetDatum(counter_id);
		run(&retention_stmt, values);
		values[0] = Int32GetDatum(counter_idempotency_window);
		run(&idempotency_stmt, values);
	}
	SPI_finish();

	return slots >= counter_batch_size;
}

/*
 * Compact now, in the caller's transaction, until nothing visible is left
 * (counter_id 0: every counter).  Waits for a running compaction when wait,
 * else returns 0 at once if one runs.
 */
int64
CounterCompact(int32 counter_id, bool wait)
{
	CounterMoved moved = {0, 0, 0};
	bool		full = true;
	bool		first = true;

	if (!CounterCompactLock(wait))
		return 0;
	while (full)
	{
		CHECK_FOR_INTERRUPTS();
		full = CounterCompactBatch(counter_id, first, first, &moved);
		first = false;
	}
	SPI_connect();
	CounterFeedFlush();
	SPI_finish();
	return moved.events + moved.slot_rows + moved.buffered_keys;
}
