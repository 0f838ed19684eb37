/*-------------------------------------------------------------------------
 *
 * legacy.c
 *	  Serving an installed schema older than 1.4: every difference of
 *	  versions 1.0 to 1.3 that C must know, in one file.
 *
 * Between a package upgrade and ALTER EXTENSION counter UPDATE the new
 * library runs on the objects of the older version still installed, and
 * must keep serving them: adds, reads, top, series, drop and the rest work
 * as that version's library did, and what the version lacks is refused
 * with 0A000 and the hint to update.
 *
 * From 1.4 on, C has one statement per job: a statement whose SQL would
 * differ between versions calls an internal SQL function (counter._create,
 * _alter, _drop, _revoke, _series: section "internal" of
 * counter--1.3--1.4.sql), whose body each later upgrade script replaces,
 * so that C stays the same.  Statements that are the same in every version
 * stay plain statements in their files.  Older schemas have no such
 * functions, so the statements they need are here, each taking the
 * parameters of its job's 1.4 function, and so are the decisions on what
 * an older schema lacks.  Which schema is installed is decided in one
 * place, CounterLegacy(), from the version catalog.c reads from
 * pg_extension (CounterGetRels()->version); no other file tests a version
 * or the presence of a table for it.
 *
 * This file can be deleted, with its callers' legacy branches, once
 * versions 1.0 to 1.3 are no longer supported (a release whose upgrade
 * requires ALTER EXTENSION counter UPDATE to 1.4 first).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/builtins.h"

#include "legacy.h"
#include "catalog.h"
#include "guc.h"

/* the first version with the internal functions and 1.4's tables */
#define LEGACY_BEFORE		104

/* the version that added each CounterLegacyPart */
static const int part_since[] = {
	[LEGACY_FLUSHED] = 101,
	[LEGACY_EVENTS_1] = 102,
	[LEGACY_WAL_STATE] = 103
};

/* Whether the installed schema is older than 1.4: the one version test. */
bool
CounterLegacy(void)
{
	return CounterGetRels()->version < LEGACY_BEFORE;
}

/* Whether the installed schema is older than 1.4 and lacks part. */
bool
CounterLegacyLacks(CounterLegacyPart part)
{
	return CounterLegacy() && CounterGetRels()->version < part_since[part];
}

/*
 * Refuse a mode the installed schema older than 1.4 lacks (0A000): buffered
 * needs 1.1, wal 1.3.
 */
void
CounterLegacyCheckMode(CounterMode mode, const char *name)
{
	const char *version = NULL;

	if (mode == COUNTER_MODE_BUFFERED && CounterLegacyLacks(LEGACY_FLUSHED))
		version = "1.1";
	else if (mode == COUNTER_MODE_WAL && CounterLegacyLacks(LEGACY_WAL_STATE))
		version = "1.3";
	if (version != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("%s mode needs version %s of extension \"counter\"", name, version),
				 errhint("Run ALTER EXTENSION counter UPDATE;")));
}

/* Refuse a membership counter in a schema without counter.members (0A000). */
void
CounterLegacyCheckMembers(void)
{
	if (CounterLegacyLacks(LEGACY_FLUSHED))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("membership counters need version 1.1 of extension \"counter\""),
				 errhint("Run ALTER EXTENSION counter UPDATE;")));
}

/*
 * create, as counter._create(name, owner, mode, slots, rollups, retention,
 * min, max, members, feed) of 1.4 but without the feed (a counter of an
 * older schema always feeds).
 */
static CounterStmt create_stmt = {
	"INSERT INTO counter.counters (name, owner, mode, slots, rollups, retention,"
	" min_value, max_value, members)"
	" VALUES ($1, $2, $3, $4, $5,"
	" coalesce($6, array_fill(NULL::interval, ARRAY[cardinality($5)])),"
	" $7, $8, $9)",
	10, {TEXTOID, OIDOID, TEXTOID, INT4OID, INTERVALARRAYOID, INTERVALARRAYOID,
	INT8OID, INT8OID, BOOLOID, BOOLOID}
};

/*
 * alter, as counter._alter(id, mode, slots, rollups, retention, node, feed)
 * of 1.4 but without the feed.
 */
static CounterStmt alter_stmt = {
	"WITH c AS ("
	"  UPDATE counter.counters SET mode = coalesce($2, mode), slots = coalesce($3, slots),"
	"    rollups = coalesce($4, rollups),"
	"    retention = coalesce($5, CASE WHEN $4 IS NULL THEN retention"
	"                                  ELSE array_fill(NULL::interval, ARRAY[cardinality($4)]) END)"
	"   WHERE id = $1 RETURNING id, name, rollups),"
	" gone AS (DELETE FROM counter.rollups r USING c"
	"   WHERE r.counter_id = c.id AND r.granularity <> ALL (c.rollups))"
	/* a new granularity starts from the compacted total, in one bucket */
	" INSERT INTO counter.rollups (counter_id, key, granularity, bucket, value)"
	" SELECT c.id, t.key, g.g, '-infinity', t.value"
	"   FROM c, unnest(c.rollups) g(g), counter.totals t"
	"  WHERE t.counter = c.name AND t.node = $6 AND $4 IS NOT NULL"
	"    AND NOT EXISTS (SELECT 1 FROM counter.rollups r"
	"                     WHERE r.counter_id = c.id AND r.granularity = g.g)",
	7, {INT4OID, TEXTOID, INT4OID, INTERVALARRAYOID, INTERVALARRAYOID, INT4OID, BOOLOID}
};

/* drop, as counter._drop(id, name, node): this node's rows of the counter */
#define DROP_SQL(EVENTS_1) \
	"WITH s AS (DELETE FROM counter.slots WHERE counter_id = $1)," \
	" e AS (DELETE FROM counter.events WHERE counter_id = $1)," \
	EVENTS_1 \
	" r AS (DELETE FROM counter.rollups WHERE counter_id = $1)," \
	" i AS (DELETE FROM counter.idempotency WHERE counter_id = $1)," \
	/* peers' rows stay: they are their nodes' shares, replicated here */ \
	" t AS (DELETE FROM counter.totals WHERE counter = $2 AND node = $3)" \
	" DELETE FROM counter.counters WHERE id = $1"

/* [0] 1.0 and 1.1, [1] 1.2 and 1.3 (the second events table) */
static CounterStmt drop_stmt[2] = {
	{DROP_SQL(""), 3, {INT4OID, TEXTOID, INT4OID}},
	{DROP_SQL(" e1 AS (DELETE FROM counter.events_1 WHERE counter_id = $1),"),
	3, {INT4OID, TEXTOID, INT4OID}}
};

/*
 * revoke, as counter._revoke(id, grantee, privilege) of 1.4 but without
 * the new feed channel (counters.feed_channel is 1.4's).
 */
static CounterStmt revoke_stmt = {
	"DELETE FROM counter.grants WHERE counter_id = $1 AND grantee = $2 AND privilege = $3",
	3, {INT4OID, OIDOID, TEXTOID}
};

/*
 * series, as counter._series(id, key, from, to, granularity): buckets of
 * one granularity: rollups, plus events not yet compacted in their own
 * (event time) bucket, plus slot deltas not yet collected in the current
 * bucket (slot adds are bucketed when the worker collects them).
 */
#define SERIES_SQL(EVENTS) \
	"WITH o AS (SELECT timestamptz '2000-01-01 00:00:00+00' AS origin)," \
	" lo AS (SELECT date_bin($5, $3, o.origin) AS b FROM o)" \
	" SELECT s.b, sum(s.v)::int8 FROM (" \
	"   SELECT bucket AS b, value AS v FROM counter.rollups" \
	"    WHERE counter_id = $1 AND key = $2 AND granularity = $5" \
	"      AND bucket >= (SELECT b FROM lo) AND bucket < $4" \
	"   UNION ALL" \
	"   SELECT date_bin($5, e.at, o.origin), e.delta FROM " EVENTS " e, o" \
	"    WHERE e.counter_id = $1 AND e.key = $2" \
	"   UNION ALL" \
	"   SELECT date_bin($5, now(), o.origin), s.value FROM counter.slots s, o" \
	"    WHERE s.counter_id = $1 AND s.key = $2) s" \
	" WHERE s.b >= (SELECT b FROM lo) AND s.b < $4" \
	" GROUP BY s.b HAVING sum(s.v) <> 0 ORDER BY s.b"

/* [0] 1.0 and 1.1, [1] 1.2 and 1.3 (only the live events tables count) */
static CounterStmt series_stmt[2] = {
	{SERIES_SQL("counter.events"), 5,
	{INT4OID, TEXTOID, TIMESTAMPTZOID, TIMESTAMPTZOID, INTERVALOID}},
	{SERIES_SQL("counter.pending_events"), 5,
	{INT4OID, TEXTOID, TIMESTAMPTZOID, TIMESTAMPTZOID, INTERVALOID}}
};

/*
 * An idempotency claim and its check, as apply.c's statements of 1.4
 * ($1 idem, $2 counter_id, $3 key, $4 delta, $5 the window in seconds; the
 * counter's name $6 and this node $7 are not recorded before 1.4).
 */
static CounterStmt idem_claim_stmt = {
	"INSERT INTO counter.idempotency (idem, counter_id, key, delta)"
	" VALUES ($1, $2, $3, $4) ON CONFLICT (idem) DO NOTHING RETURNING true",
	4, {TEXTOID, INT4OID, TEXTOID, INT8OID}
};

static CounterStmt idem_check_stmt = {
	"SELECT counter_id = $2 AND key = $3 AND delta = $4,"
	" created < now() - $5 * interval '1 second'"
	"  FROM counter.idempotency WHERE idem = $1",
	5, {TEXTOID, INT4OID, TEXTOID, INT8OID, INT4OID}
};

/*
 * Member rows before 1.4, by counter id (found from the name, $1, as in
 * members.c's statements of 1.4), with no liked state: a row is a member.
 */
static CounterStmt is_member_stmt = {
	"SELECT 1 FROM counter.members"
	" WHERE counter_id = (SELECT id FROM counter.counters WHERE name = $1)"
	"   AND key = $2 AND member = $3",
	3, {TEXTOID, TEXTOID, TEXTOID}
};

static CounterStmt members_stmt = {
	"SELECT member FROM counter.members"
	" WHERE counter_id = (SELECT id FROM counter.counters WHERE name = $1)"
	"   AND key = $2 AND ($4::text IS NULL OR member > $4)"
	" ORDER BY member LIMIT $3",
	4, {TEXTOID, TEXTOID, INT4OID, TEXTOID}
};

static CounterStmt like_stmt = {
	"INSERT INTO counter.members (counter_id, key, member) VALUES ($1, $2, $3)"
	" ON CONFLICT DO NOTHING",
	3, {INT4OID, TEXTOID, TEXTOID}
};

static CounterStmt unlike_stmt = {
	"DELETE FROM counter.members WHERE counter_id = $1 AND key = $2 AND member = $3",
	3, {INT4OID, TEXTOID, TEXTOID}
};

/*
 * like (liked) or unlike of member before 1.4: insert or delete its row.
 * *was_liked: the member was there before; returns the change of the count.
 */
int64
CounterLegacyMemberSet(CounterMeta *meta, text *key, text *member, bool liked,
					   bool *was_liked)
{
	Datum		values[3] = {Int32GetDatum(meta->id), PointerGetDatum(key),
	PointerGetDatum(member)};
	bool		changed;

	SPI_connect();
	CounterExec(liked ? &like_stmt : &unlike_stmt, values, NULL, false);
	changed = SPI_processed == 1;
	SPI_finish();
	*was_liked = changed != liked;
	return changed ? (liked ? 1 : -1) : 0;
}

/* verify: the buckets are those of counter.rollups (totals.sole is 1.4's) */
static CounterStmt verify_stmt = {
	COUNTER_VERIFY_SQL("SELECT key, value FROM counter.rollups"
					   " WHERE counter_id = $1 AND granularity = g.g"),
	3, {INT4OID, TEXTOID, INT4OID}
};

/*
 * The statement to run for job: stmt, its statement of 1.4; in a schema
 * older than 1.4, the job's statement for that schema (same parameters).
 */
CounterStmt *
CounterLegacyStmt(CounterLegacyJob job, CounterStmt *stmt)
{
	int			events_1;

	if (!CounterLegacy())
		return stmt;
	events_1 = CounterLegacyLacks(LEGACY_EVENTS_1) ? 0 : 1;
	switch (job)
	{
		case LEGACY_CREATE:
			return &create_stmt;
		case LEGACY_ALTER:
			return &alter_stmt;
		case LEGACY_DROP:
			return &drop_stmt[events_1];
		case LEGACY_REVOKE:
			return &revoke_stmt;
		case LEGACY_SERIES:
			return &series_stmt[events_1];
		case LEGACY_IDEM_CLAIM:
			return &idem_claim_stmt;
		case LEGACY_IDEM_CHECK:
			return &idem_check_stmt;
		case LEGACY_IS_MEMBER:
			return &is_member_stmt;
		case LEGACY_MEMBERS:
			return &members_stmt;
		case LEGACY_VERIFY:
			return &verify_stmt;
	}
	ereport(ERROR,
			(errcode(ERRCODE_INTERNAL_ERROR),
			 errmsg_internal("unknown legacy job %d", (int) job)));
	return NULL;				/* keep compiler quiet */
}

/*
 * Exact top-k before 1.4 (1.4 reads it through indexes, topk.c): keys with
 * uncompacted deltas (events, slots, buffered) are few; any other key's
 * value is its compacted total, so the top k of all keys lies among the top
 * (k + |pending|) totals and the pending keys, the totals taken in the
 * result's own order (value, then key), so that ties at the cut are
 * decided as the result decides them.  With peer nodes' rows present a
 * key's total is a sum of rows, and every key is a candidate.
 */
#define TOP_SQL(EVENTS, BUFFERED) \
	"WITH p AS (" \
	"   SELECT x.key, sum(x.d) AS d FROM (" \
	"     SELECT key, delta AS d FROM " EVENTS " WHERE counter_id = $1" \
	"     UNION ALL SELECT key, value FROM counter.slots" \
	"                WHERE counter_id = $1 AND value <> 0" \
	BUFFERED \
	"   ) x GROUP BY x.key)," \
	/* two range probes of totals_top, not a walk over this node's rows */ \
	" peers AS (SELECT EXISTS (SELECT 1 FROM counter.totals" \
	"                           WHERE counter = $2 AND node < $4)" \
	"               OR EXISTS (SELECT 1 FROM counter.totals" \
	"                           WHERE counter = $2 AND node > $4) AS any)," \
	" cand AS (" \
	"   SELECT key FROM p" \
	"   UNION (SELECT t.key FROM counter.totals t WHERE t.counter = $2 AND t.node = $4" \
	"           ORDER BY t.value DESC, t.key LIMIT $3 + (SELECT count(*) FROM p))" \
	"   UNION SELECT t.key FROM counter.totals t, peers WHERE peers.any AND t.counter = $2)" \
	" SELECT c.key, (coalesce(t.v, 0) + coalesce(p.d, 0))::int8 AS value" \
	"   FROM cand c LEFT JOIN p ON p.key = c.key" \
	"   LEFT JOIN LATERAL (SELECT sum(t.value) AS v FROM counter.totals t" \
	"                       WHERE t.counter = $2 AND t.key = c.key) t ON true" \
	"  ORDER BY value DESC, c.key LIMIT $3"

#define TOP_BUFFERED \
	"     UNION ALL SELECT b.key, b.pending - coalesce(f.flushed, 0)" \
	"       FROM counter._buffered($2) b" \
	"       LEFT JOIN counter.flushed f ON f.counter_id = $1 AND f.key = b.key"

/*
 * $1 id, $2 name, $3 k, $4 this node.  [0] 1.0; [1] 1.1 (buffered adds in
 * shared memory are pending too); [2] 1.2 and 1.3 (two events tables, only
 * the live ones pending).
 */
static CounterStmt top_stmt[3] = {
	{TOP_SQL("counter.events", ""), 4, {INT4OID, TEXTOID, INT4OID, INT4OID}},
	{TOP_SQL("counter.events", TOP_BUFFERED), 4, {INT4OID, TEXTOID, INT4OID, INT4OID}},
	{TOP_SQL("counter.pending_events", TOP_BUFFERED), 4, {INT4OID, TEXTOID, INT4OID, INT4OID}}
};

/*
 * Put the k keys of highest value of meta into out (rows of key text,
 * value int8), in a schema older than 1.4, by statement.
 */
void
CounterLegacyTop(CounterMeta *meta, int32 k, Tuplestorestate *out)
{
	Datum		values[4];
	int			v = CounterLegacyLacks(LEGACY_FLUSHED) ? 0 :
		CounterLegacyLacks(LEGACY_EVENTS_1) ? 1 : 2;
	uint64		i;

	values[0] = Int32GetDatum(meta->id);
	values[1] = CStringGetTextDatum(meta->name);
	values[2] = Int32GetDatum(k);
	values[3] = Int32GetDatum(counter_node_id);
	SPI_connect();
	CounterExec(&top_stmt[v], values, NULL, true);
	for (i = 0; i < SPI_processed; i++)
		tuplestore_puttuple(out, SPI_tuptable->vals[i]);
	SPI_finish();
}

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
