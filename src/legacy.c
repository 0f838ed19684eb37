/*-------------------------------------------------------------------------
 *
 * legacy.c
 *	  The statements of schemas older than the library (before version
 *	  1.4), kept apart so that the rest of the code has one statement per
 *	  job.  A server runs them between the library's update and ALTER
 *	  EXTENSION counter UPDATE; their text is frozen with those schemas.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"

#include "legacy.h"

/* ---------------------------------------------------------------------
 * compaction and feed before 1.4
 *
 * No quarantine, no totals.updated, no counters.feed nor feed_channel:
 * each batch statement moves everything visible (no batch bound) and
 * returns every key it moved, as (counter name, key, rows moved), all of
 * which go to the change feed.  Parameters as in compact.c: $1 unused, $2
 * node id, $3 counter id or 0 for all; the buffered flush takes compact.c's
 * six arrays.
 * ---------------------------------------------------------------------
 */

/* fold CTE "moved" (counter_id, key, delta, at) into rollups and totals */
#define LEGACY_FOLD \
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

/* delete and fold the visible events of TABLE */
#define LEGACY_EVENTS_DELETE(TABLE) \
{ \
"WITH moved AS (" \
"   DELETE FROM " TABLE " e WHERE ($3 = 0 OR e.counter_id = $3)" \
"   RETURNING e.counter_id, e.key, e.delta, e.at)" \
LEGACY_FOLD, \
3, {INT4OID, INT4OID, INT4OID} \
}

/* fold a whole events table (version 1.2) and mark it folded */
#define LEGACY_EVENTS_FOLD(TABLE, TAB) \
{ \
"WITH f AS (UPDATE counter.event_tables SET folded = pg_current_xact_id() WHERE tab = " TAB ")," \
" moved AS (SELECT e.counter_id, e.key, e.delta, e.at FROM " TABLE " e)" \
LEGACY_FOLD, \
3, {INT4OID, INT4OID, INT4OID} \
}

static CounterStmt legacy_events_delete[2] = {
	LEGACY_EVENTS_DELETE("counter.events"), LEGACY_EVENTS_DELETE("counter.events_1")
};

static CounterStmt legacy_events_fold[2] = {
	LEGACY_EVENTS_FOLD("counter.events", "0"), LEGACY_EVENTS_FOLD("counter.events_1", "1")
};

/* zero up to $1 slot rows that no add holds and fold what they held */
static CounterStmt legacy_slots = {
"WITH moved AS ("
"   UPDATE counter.slots s SET value = 0, lo = s.lo - z.value, hi = s.hi - z.value,"
"          touched = now()"
"     FROM (SELECT x.ctid, x.value FROM counter.slots x"
"            WHERE ($3 = 0 OR x.counter_id = $3) AND x.value <> 0"
"            LIMIT $1 FOR NO KEY UPDATE SKIP LOCKED) z"
"    WHERE s.ctid = z.ctid"
"   RETURNING s.counter_id, s.key, z.value AS delta, now() AS at)"
LEGACY_FOLD,
3, {INT4OID, INT4OID, INT4OID}
};

/* the flush of buffered entries (version 1.1), raising counter.flushed */
static CounterStmt legacy_buffered = {
"WITH taken AS ("
"   SELECT u.counter_id, u.key, u.delta, now() AS at"
"     FROM unnest($1::int4[], $3::timestamptz[], $4::text[], $5::int8[])"
"          AS u(counter_id, created, key, delta)"
"     JOIN counter.counters c ON c.id = u.counter_id AND c.created = u.created"
"    WHERE u.delta <> 0),"
" f AS (INSERT INTO counter.flushed AS f (counter_id, key, flushed)"
"        SELECT m.counter_id, m.key, m.delta FROM taken m"
"        ON CONFLICT (counter_id, key) DO UPDATE SET flushed = f.flushed + excluded.flushed),"
" moved AS (SELECT m.* FROM taken m)"
LEGACY_FOLD,
6, {INT4ARRAYOID, INT4OID, TIMESTAMPTZARRAYOID, TEXTARRAYOID, INT8ARRAYOID, TIMESTAMPTZARRAYOID}
};

/*
 * $1 names, $2 keys: the channel (counter_<name>) and JSON entry of each
 * collected key, grouped by counter.
 */
static CounterStmt legacy_notify = {
"WITH u AS (SELECT DISTINCT u.n, u.k FROM unnest($1::text[], $2::text[]) AS u(n, k))"
" SELECT 'counter_' || c.name, (SELECT json_build_object('counter', u.n, 'key', u.k,"
"                                'value', sum(t.value))"
"                 FROM counter.totals t WHERE t.counter = u.n AND t.key = u.k)::text"
"   FROM u JOIN counter.counters c ON c.name = u.n ORDER BY u.n, u.k",
2, {TEXTARRAYOID, TEXTARRAYOID}
};

/* Delete and fold the visible events of events table t. */
CounterStmt *
CounterLegacyCompactEventsDelete(int table)
{
	return &legacy_events_delete[table];
}

/* Fold all of events table t, no add writing it any more. */
CounterStmt *
CounterLegacyCompactEventsFold(int table)
{
	return &legacy_events_fold[table];
}

/* Collect a batch of slot rows. */
CounterStmt *
CounterLegacyCompactSlots(void)
{
	return &legacy_slots;
}

/* Flush buffered entries. */
CounterStmt *
CounterLegacyCompactBuffered(void)
{
	return &legacy_buffered;
}

/* The change feed's channels and entries. */
CounterStmt *
CounterLegacyFeedNotify(void)
{
	return &legacy_notify;
}
