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
 * One key must never stop the others.  From version 1.4 each batch
 * statement runs in a subtransaction; when it fails with a data exception
 * (a total, a rollup bucket or a bucket's start out of range), a diagnosis
 * recomputes its fold in numeric and epoch seconds, puts exactly the keys
 * that fail into counter.quarantine (one WARNING each), and the statement
 * runs again without them.  Their amounts stay where reads count them:
 * events and slot values are left in place, a whole table's fold first
 * copies their events to the current table, and a buffered flush stores
 * their amounts as events.  Each maintenance round first releases the
 * quarantined keys that fold again.  An error no key explains fails the
 * round, which the worker tries again after its naptime.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/lmgr.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"
#include "utils/typcache.h"

#include "compact.h"
#include "buffer.h"
#include "catalog.h"
#include "commit.h"
#include "events.h"
#include "feed.h"
#include "guc.h"
#include "legacy.h"
#include "slots.h"

/* the origin of every rollup bucket (date_bin's) */
#define BUCKET_ORIGIN	"timestamptz '2000-01-01 00:00:00+00'"

/* the smallest share of a counter's events in a batch that batch_time cuts to */
#define BATCH_MIN_EVENTS		1000

/* advisory lock (two int4 keys) taken by every compaction of a database */
#define COMPACT_LOCK_KEY1		0x636f756e	/* "coun" */
#define COMPACT_LOCK_KEY2		0x74657200	/* "ter" */

/*
 * The row h of CTE hi of the counter of agg row A, looked up for each row
 * (a CTE of one row per counter): a join the planner would make a hash
 * join hashing agg, or a merge join sorting it by counter, and either
 * would lose the order in which agg streams its keys to the inserts.
 */
#define HI_OF(A) \
" LATERAL (SELECT h.* FROM hi h WHERE h.id = " A ".counter_id OFFSET 0) h"

/*
 * The second half of the batch statements: fold CTE "moved" (counter_id,
 * key, delta, at, upd) into rollups (each granularity of the counter,
 * bucket of the row's time) and into this node's shard of totals, raising
 * totals.updated to the latest add time of the rows (moved's column upd:
 * events' at, slot rows' touched, buffered entries' time), which
 * counter.get() reads.  One aggregation by key makes both: a row per key
 * with its sum for totals and its buckets (counter._buckets, which sums
 * each bucket of each granularity as the rows come, so that neither the
 * rows nor the groups are multiplied by the granularities and sorted
 * again), carrying its counter's name and feed setting (grouped by the
 * counter's primary key, so they are not compared row by row), so that
 * nothing after it joins counter.counters (a join the planner made a loop
 * over the counters with a scan of every row moved in each: rows times
 * counters).  CTE hi holds a row per counter moved: the rows it moved, its
 * greatest key moved, its greatest key in totals (FOLD_INTO) and its
 * granularities.
 *
 * A key whose rows all fall in one bucket of each granularity (column
 * sole of agg: the earliest time of its rows, else NULL; its buckets, b,
 * are then NULL, not built for every key of a fold that writes none of
 * them: the buckets holding sole, each the key's sum, made where a key's
 * total needs them, CTE ab) and that has no
 * total on this node yet gets no rollups row: its total's column sole
 * says that its buckets are the ones holding that time, each its whole
 * total (since 1.4; readers add them: counter._series, counter.verify).
 * Most keys of a likes or views counter are added to within one hour or
 * day, and then a compacted key costs one row, not one per granularity
 * more.  CTE old holds the keys that have a total (FOLD_INTO): one whose
 * total has a sole time keeps it while its rows stay in the same buckets;
 * otherwise its buckets are written out, with the ones its total held
 * (counter._sole_buckets), and sole is cleared.
 *
 * Each insert goes in the order of its table's primary key,
 * so that consecutive rows land on the same index pages (into a fresh
 * table, on its rightmost page): sorted (FOLD_MOVED), or as they come from an
 * aggregate that streams its input in (counter, key) order (SHAPE_WHOLE:
 * FOLD_MOVED_STREAMED), whose rows are in the order of its groups, that of
 * rollups (each key's buckets come in order) and, within a counter, of
 * totals (two sorts of every row saved).  Returns the keys moved of the
 * counters that have the change feed (counter name, key, 0, NULL, NULL),
 * and one row per counter moved (NULL, NULL, rows moved, counter id, its
 * greatest key moved): never a row per key that nobody listens to, and no
 * pass over the keys when no counter has the feed.
 */
#define FOLD_MOVED_AS(ORDERED) \
", agg AS (SELECT c.id AS counter_id, m.key, c.name, c.feed," \
"                 sum(m.delta)::int8 AS d, max(m.upd) AS upd, count(*) AS n," \
"                 counter._buckets(m.at, m.delta, c.rollups) AS b," \
"                 CASE WHEN counter._buckets(m.at, m.delta, c.rollups) IS NULL THEN min(m.at) END AS sole" \
"            FROM moved m JOIN counter.counters c ON c.id = m.counter_id" \
"           GROUP BY 1, 2)" \
", hi AS (SELECT g.id, g.n, g.top," \
"                (SELECT max(t.key) FROM counter.totals t WHERE t.counter = g.name) AS tot," \
"                (SELECT c.rollups FROM counter.counters c WHERE c.id = g.id) AS gs" \
"           FROM (SELECT a.counter_id AS id, a.name, sum(a.n)::int8 AS n, max(a.key) AS top" \
"                   FROM agg a GROUP BY 1, 2) g)" \
", old AS (SELECT a.counter_id, a.key, a.name, a.d, a.upd," \
"                 CASE WHEN p.sole IS NULL THEN CASE WHEN p.had OR a.sole IS NULL THEN ab.b END" \
"                      WHEN a.sole IS NULL OR cardinality(p.b) > cardinality(ab.b) THEN p.b END AS b," \
"                 CASE WHEN p.sole IS NULL THEN CASE WHEN p.had IS NULL THEN a.sole END" \
"                      WHEN a.sole IS NOT NULL AND cardinality(p.b) = cardinality(ab.b) THEN p.sole END AS sole" \
"            FROM agg a," HI_OF("a") "," \
"                 LATERAL (SELECT coalesce(a.b, counter._sole_buckets(NULL, a.sole, a.d, h.gs)) AS b" \
"                           OFFSET 0) ab" \
"                 LEFT JOIN LATERAL (SELECT true AS had, t.sole," \
"                                           counter._sole_buckets(ab.b, t.sole, t.value, h.gs) AS b" \
"                                      FROM counter.totals t" \
"                                     WHERE t.counter = a.name AND t.key = a.key AND t.node = $2" \
"                                    OFFSET 0) p ON true" \
"           WHERE a.key <= h.tot AND (SELECT bool_or(x.tot IS NOT NULL) FROM hi x))" \
FOLD_INTO("roll", "counter.rollups AS r (counter_id, key, granularity, bucket, value)", \
		  "a.counter_id, a.key, (a.u).granularity, (a.u).bucket, (a.u).value", ", unnest(a.b) AS u", \
		  " AND a.sole IS NULL", ORDERED("ORDER BY 1, 2, 3, 4"), \
		  "(counter_id, key, granularity, bucket) DO UPDATE SET value = r.value + excluded.value") \
FOLD_INTO("tot", "counter.totals AS t (counter, key, node, state, updated, sole)", \
		  "a.name, a.key, $2, counter.increment('{}', $2, a.d), a.upd, a.sole", "", \
		  "", ORDERED("ORDER BY 1, 2"), \
		  "(counter, key, node)" \
		  " DO UPDATE SET state = counter.increment(t.state, $2, counter.value(excluded.state))," \
		  "               updated = greatest(t.updated, excluded.updated), sole = excluded.sole") \
" SELECT a.name, a.key, 0::int8, NULL::int4, NULL::text" \
"   FROM agg a" \
"  WHERE (SELECT bool_or(f.feed) FROM counter.counters f) AND a.feed" \
" UNION ALL" \
" SELECT NULL, NULL, h.n, h.id, h.top FROM hi h"

/*
 * The two inserts of FOLD_MOVED_AS into TABLE, named NAME and NAME_new, of
 * COLUMNS from the rows of a key (b: its buckets to write, sole: its
 * total's sole time) with SRF (more columns: a set-returning
 * call in the select list, which yields its rows as they come, where one in
 * FROM would store the rows of each call in a tuplestore of its own, a
 * million times at a million keys): the keys above the counter's greatest
 * key in totals (column tot of CTE hi; NULL: none there) are new (and
 * have no rollups either: a key's rollups come with its total), those of
 * agg that also match NEW inserted as they are; the others (CTE old) may
 * meet a row of their key, merged ON CONFLICT (not even read when no
 * counter moved has a total: a one-time filter).  A plain insert of a new
 * key does not first search the index for a conflict, nor insert
 * speculatively: a first compaction of a million keys takes about a third
 * less time.  Nothing else inserts this node's rows of the key meanwhile,
 * but should anything (a replicated echo of this node's row), the insert
 * fails with unique_violation and the batch runs again (run), its new
 * snapshot seeing the row.
 */
#define FOLD_INTO(NAME, TABLE, COLUMNS, SRF, NEW, ORDER, CONFLICT) \
", " NAME " AS (INSERT INTO " TABLE \
"   SELECT " COLUMNS " FROM (SELECT a.*" SRF " FROM old a) a " ORDER \
"   ON CONFLICT " CONFLICT ")" \
", " NAME "_new AS (INSERT INTO " TABLE \
"   SELECT " COLUMNS " FROM (SELECT a.*" SRF " FROM agg a," HI_OF("a") \
"    WHERE (a.key > h.tot OR h.tot IS NULL)" NEW ") a " ORDER ")"

/* ORDERED of FOLD_MOVED_AS: the ORDER BY, or nothing */
#define FOLD_SORT(ORDER)	ORDER
#define FOLD_AS_IS(ORDER)	""
#define FOLD_MOVED			FOLD_MOVED_AS(FOLD_SORT)
#define FOLD_MOVED_STREAMED	FOLD_MOVED_AS(FOLD_AS_IS)

/* the keys of counter.quarantine stay where they are */
#define QUARANTINED(A) \
	"EXISTS (SELECT 1 FROM counter.quarantine q" \
	"         WHERE q.counter_id = " A ".counter_id AND q.key = " A ".key)"
#define NOT_QUARANTINED(A) " AND NOT " QUARANTINED(A)

/*
 * $1 the most events of one counter to move, $2 node id, $3 counter id or
 * 0 for all, $4 and $5 the cursor: counter ids and the key of each from
 * which its events are taken (keys in index order; '' for a counter not
 * listed).  Every counter gets its share of the batch, so a big backlog of
 * one never holds the others back; the rows picked through the index are
 * deleted in heap order (a TID scan), and the cursor keeps the next batch
 * of the same transaction from walking the index entries of rows this one
 * deleted.  One plan shape whatever the statistics say (exec_batch).
 */
#define EVENTS_DELETE(TABLE) \
{ \
"WITH moved AS (" \
"   DELETE FROM " TABLE " e WHERE e.ctid = ANY (ARRAY (" \
"     SELECT x.ctid" \
"       FROM counter.counters c" \
"            LEFT JOIN unnest($4::int4[], $5::text[]) AS u(id, key) ON u.id = c.id," \
"            LATERAL (SELECT x.ctid FROM " TABLE " x" \
"                      WHERE x.counter_id = c.id AND x.key >= coalesce(u.key, '') COLLATE \"C\"" \
NOT_QUARANTINED("x") \
"                      ORDER BY x.key LIMIT $1) x" \
"      WHERE $3 = 0 OR c.id = $3))" \
"   RETURNING e.counter_id, e.key, e.delta, e.at, e.at AS upd)" \
FOLD_MOVED, \
5, {INT4OID, INT4OID, INT4OID, INT4ARRAYOID, TEXTARRAYOID} \
}

/*
 * The same for a whole events table no add writes any more (events.c),
 * every counter's rows: fold them all and mark the table folded, with no
 * row deleted.
 */
#define EVENTS_FOLD(TABLE, TAB) \
{ \
"WITH f AS (UPDATE counter.event_tables SET folded = pg_current_xact_id() WHERE tab = " TAB ")," \
" moved AS (SELECT e.counter_id, e.key, e.delta, e.at, e.at AS upd FROM " TABLE " e" \
"            WHERE true" NOT_QUARANTINED("e") ")" \
FOLD_MOVED_STREAMED, \
3, {INT4OID, INT4OID, INT4OID} \
}

static CounterStmt events_delete_stmt[2] = {
	EVENTS_DELETE("counter.events"), EVENTS_DELETE("counter.events_1")
};

static CounterStmt events_fold_stmt[2] = {
	EVENTS_FOLD("counter.events", "0"), EVENTS_FOLD("counter.events_1", "1")
};

/*
 * Before the fold of a whole table: the rows of quarantined keys, which the
 * fold leaves, go to the other table (current), in the same transaction,
 * so that no snapshot loses or counts them twice.  Driven by the
 * quarantine: nothing is scanned when it is empty, and each quarantined
 * key's rows are found through the index (OFFSET 0 keeps the planner from
 * making the lateral a join with a scan of the whole table, as it did).
 */
#define EVENTS_CARRY(FROM, TO) \
{ \
"INSERT INTO " TO " (counter_id, key, delta, at)" \
" SELECT e.counter_id, e.key, e.delta, e.at" \
"   FROM (SELECT DISTINCT q.counter_id, q.key FROM counter.quarantine q) q," \
"        LATERAL (SELECT e.* FROM " FROM " e" \
"                  WHERE e.counter_id = q.counter_id AND e.key = q.key OFFSET 0) e", \
0, {0} \
}

static CounterStmt events_carry_stmt[2] = {
	EVENTS_CARRY("counter.events", "counter.events_1"),
	EVENTS_CARRY("counter.events_1", "counter.events")
};

/*
 * In a mesh (since 1.4), a bounded key's slot row that consumed rights
 * (below zero for a min bound, above for a max bound without min) waits
 * while a row of the key holds adds that created rights: folded first, they
 * keep this node's shard, which is all its peers read of it, within the
 * node's rights (rights.c).
 */
#define MESH_FOLD_ORDER(A) \
"   AND NOT ((SELECT count(*) FROM counter.mesh) > 1" \
"            AND ((" A ".lo IS NOT NULL AND " A ".value < 0) OR" \
"                 (" A ".lo IS NULL AND " A ".hi IS NOT NULL AND " A ".value > 0))" \
"            AND EXISTS (SELECT 1 FROM counter.slots y" \
"                         WHERE y.counter_id = " A ".counter_id AND y.key = " A ".key" \
"                           AND sign(y.value) = -sign(" A ".value)))"

/* $1 batch size, $2 node, $3 counter id or 0: zero the slot rows no add holds */
static CounterStmt slots_stmt = {
"WITH moved AS ("
"   UPDATE counter.slots s SET value = 0, lo = s.lo - z.value, hi = s.hi - z.value,"
"          touched = now()"
"     FROM (SELECT x.ctid, x.value, x.touched FROM counter.slots x"
"            WHERE ($3 = 0 OR x.counter_id = $3) AND x.value <> 0" NOT_QUARANTINED("x") MESH_FOLD_ORDER("x")
"            LIMIT $1 FOR NO KEY UPDATE SKIP LOCKED) z"
"    WHERE s.ctid = z.ctid"
"   RETURNING s.counter_id, s.key, z.value AS delta, now() AS at, z.touched AS upd)"
FOLD_MOVED,
3, {INT4OID, INT4OID, INT4OID}
};

/*
 * $1 ids, $2 node, $3 creation times, $4 keys, $5 amounts, $6 last add
 * times (-infinity: none): the flush of buffered entries (buffer.c),
 * raising each key's flushed amount F with the totals, in one transaction.
 * [t]: the amount of a quarantined key goes to events table t (the current
 * one) instead of totals, F rising all the same: a read stays exact.
 */
#define BUFFERED_TAKEN \
"WITH taken AS (" \
"   SELECT u.counter_id, u.key, u.delta, now() AS at, nullif(u.upd, '-infinity') AS upd" \
"     FROM unnest($1::int4[], $3::timestamptz[], $4::text[], $5::int8[], $6::timestamptz[])" \
"          AS u(counter_id, created, key, delta, upd)" \
"     JOIN counter.counters c ON c.id = u.counter_id AND c.created = u.created" \
"    WHERE u.delta <> 0),"

#define BUFFERED(TABLE) \
{ \
BUFFERED_TAKEN \
" f AS (INSERT INTO counter.flushed AS f (counter_id, key, flushed)" \
"        SELECT m.counter_id, m.key, m.delta FROM taken m" \
"        ON CONFLICT (counter_id, key) DO UPDATE SET flushed = f.flushed + excluded.flushed)," \
" ev AS (INSERT INTO " TABLE " (counter_id, key, delta, at)" \
"         SELECT m.counter_id, m.key, m.delta, m.at FROM taken m" \
"          WHERE " QUARANTINED("m") ")," \
" moved AS (SELECT m.* FROM taken m WHERE true" NOT_QUARANTINED("m") ")" \
FOLD_MOVED, \
6, {INT4ARRAYOID, INT4OID, TIMESTAMPTZARRAYOID, TEXTARRAYOID, INT8ARRAYOID, TIMESTAMPTZARRAYOID} \
}

static CounterStmt buffered_stmt[2] = {
	BUFFERED("counter.events"), BUFFERED("counter.events_1")
};

/*
 * The diagnosis of a batch statement that failed with a data exception:
 * from CTE "moved" (counter_id, key, delta, at, src), the keys (per src)
 * whose fold would fail, with the reason, computed in numeric and epoch
 * seconds so that the diagnosis itself cannot fail: the sum of the key's
 * rows (per second, and in all) outside bigint; this node's incremented
 * or decremented count of its total, or the total, leaving bigint; a
 * rollup bucket leaving bigint (a stored one, or one its total holds:
 * totals.sole); a bucket's start (date_bin of the second,
 * origin 2000-01-01 = epoch 946684800) before the earliest timestamp.
 */
#define I8_OUT(X) " (" X " NOT BETWEEN -9223372036854775808 AND 9223372036854775807)"
#define DIAGNOSE_MOVED \
", dsec AS (SELECT m.counter_id, m.key, m.src," \
"                  date_bin('1 second', m.at, " BUCKET_ORIGIN ") AS at," \
"                  sum(m.delta) AS d" \
"             FROM moved m GROUP BY 1, 2, 3, 4)" \
", dagg AS (SELECT s.counter_id, s.key, s.src, sum(s.d) AS d, bool_or(" I8_OUT("s.d") ") AS over" \
"             FROM dsec s GROUP BY 1, 2, 3)" \
", dbin AS (SELECT s.counter_id, s.key, s.src, g.g, s.d," \
"                  CASE WHEN NOT isfinite(s.at) OR" \
"                            floor((extract(epoch FROM s.at) - 946684800) / extract(epoch FROM g.g))" \
"                            * extract(epoch FROM g.g) + 946684800" \
"                            >= extract(epoch FROM timestamptz '4714-11-24 00:00:00+00 BC')" \
"                       THEN date_bin(g.g, s.at, " BUCKET_ORIGIN ") END AS bucket" \
"             FROM dsec s JOIN counter.counters c ON c.id = s.counter_id, unnest(c.rollups) AS g(g))" \
", droll AS (SELECT b.counter_id, b.key, b.src, bool_or(b.bucket IS NULL) AS range," \
"                   bool_or(b.bucket IS NOT NULL AND" \
"                           (" I8_OUT("b.d") " OR " I8_OUT("b.d + coalesce(r.value, v.value, 0)") ")) AS over" \
"              FROM (SELECT b.counter_id, b.key, b.src, b.g, b.bucket, sum(b.d) AS d" \
"                      FROM dbin b GROUP BY 1, 2, 3, 4, 5) b" \
"              LEFT JOIN counter.rollups r ON r.counter_id = b.counter_id AND r.key = b.key" \
"                    AND r.granularity = b.g AND r.bucket = b.bucket" \
"              LEFT JOIN counter.counters n ON n.id = b.counter_id" \
"              LEFT JOIN counter.totals v ON v.counter = n.name AND v.key = b.key AND v.node = $2" \
"                    AND date_bin(b.g, v.sole, " BUCKET_ORIGIN ") = b.bucket" \
"             GROUP BY 1, 2, 3)" \
", dtot AS (SELECT a.counter_id, a.key, a.src, a.over OR " I8_OUT("a.d") " AS sum_over," \
"                  coalesce(t.inc, 0) + greatest(a.d, 0) > 9223372036854775807" \
"                  OR coalesce(t.dec, 0) - least(a.d, 0) > 9223372036854775807" \
"                  OR " I8_OUT("coalesce(t.net, 0) + a.d") " AS tot_over" \
"             FROM dagg a JOIN counter.counters c ON c.id = a.counter_id" \
"             LEFT JOIN LATERAL (" \
"                  SELECT sum(x.incremented) FILTER (WHERE x.shard = $2) AS inc," \
"                         sum(x.decremented) FILTER (WHERE x.shard = $2) AS dec," \
"                         sum(x.incremented::numeric - x.decremented) AS net" \
"                    FROM counter.totals t, counter.shards(t.state) x" \
"                   WHERE t.counter = c.name AND t.key = a.key AND t.node = $2) t ON true)" \
", bad AS (SELECT t.counter_id, t.key, t.src," \
"                 CASE WHEN t.sum_over THEN 'the sum of its deltas is out of range for type bigint'" \
"                      WHEN t.tot_over THEN 'its total on node ' || $2 || ' would be out of range for type bigint'" \
"                      WHEN r.over THEN 'a rollup bucket would be out of range for type bigint'" \
"                      ELSE 'a rollup bucket would start before the earliest timestamp' END AS reason" \
"            FROM dtot t LEFT JOIN droll r" \
"              ON r.counter_id = t.counter_id AND r.key = t.key AND r.src = t.src" \
"           WHERE t.sum_over OR t.tot_over OR r.over OR r.range)"

/* quarantine the keys of CTE "bad"; return each new one (counter name, key, reason) */
#define QUARANTINE_BAD \
", ins AS (INSERT INTO counter.quarantine (counter_id, key, source, reason)" \
"           SELECT b.counter_id, b.key, b.src, b.reason FROM bad b" \
"           ON CONFLICT DO NOTHING" \
"           RETURNING counter_id, key, reason)" \
" SELECT c.name, i.key, i.reason FROM ins i JOIN counter.counters c ON c.id = i.counter_id" \
"  ORDER BY 1, 2"

/* the diagnosis of each batch statement, with the same parameters */
#define EVENTS_DIAGNOSE(TABLE) \
{ \
"WITH moved AS (SELECT e.counter_id, e.key, e.delta, e.at, 'events' AS src FROM " TABLE " e" \
"                WHERE ($3 = 0 OR e.counter_id = $3)" NOT_QUARANTINED("e") ")" \
DIAGNOSE_MOVED QUARANTINE_BAD, \
3, {INT4OID, INT4OID, INT4OID} \
}

static CounterStmt events_diagnose_stmt[2] = {
	EVENTS_DIAGNOSE("counter.events"), EVENTS_DIAGNOSE("counter.events_1")
};

static CounterStmt slots_diagnose_stmt = {
"WITH moved AS (SELECT x.counter_id, x.key, x.value AS delta, now() AS at, 'slots' AS src"
"                 FROM counter.slots x"
"                WHERE ($3 = 0 OR x.counter_id = $3) AND x.value <> 0" NOT_QUARANTINED("x") ")"
DIAGNOSE_MOVED QUARANTINE_BAD,
3, {INT4OID, INT4OID, INT4OID}
};

static CounterStmt buffered_diagnose_stmt = {
BUFFERED_TAKEN
" moved AS (SELECT m.*, 'buffered' AS src FROM taken m WHERE true" NOT_QUARANTINED("m") ")"
DIAGNOSE_MOVED QUARANTINE_BAD,
6, {INT4ARRAYOID, INT4OID, TIMESTAMPTZARRAYOID, TEXTARRAYOID, INT8ARRAYOID, TIMESTAMPTZARRAYOID}
};

/*
 * $2 node, $3 counter id or 0: release the quarantined keys that fold
 * again, each tried with what waits for it where compaction will take it
 * (events of the live tables for 'events' and 'buffered', slot values for
 * 'slots'): after an add of the opposite amount, say, or counter.reset().
 * Each quarantined key's rows are found through the index (OFFSET 0: see
 * EVENTS_CARRY).  Returns each released key.
 */
#define RELEASE_EVENTS(TABLE, TAB) \
"   SELECT e.counter_id, e.key, e.delta, e.at, 'events' AS src" \
"     FROM (SELECT DISTINCT q.counter_id, q.key FROM counter.quarantine q) q," \
"          LATERAL (SELECT e.* FROM " TABLE " e" \
"                    WHERE e.counter_id = q.counter_id AND e.key = q.key OFFSET 0) e" \
"    WHERE counter._event_table_live(" TAB ")"

static CounterStmt release_stmt = {
"WITH moved AS (" RELEASE_EVENTS("counter.events", "0")
"   UNION ALL" RELEASE_EVENTS("counter.events_1", "1")
"   UNION ALL"
"   SELECT s.counter_id, s.key, s.value, now(), 'slots'"
"     FROM (SELECT DISTINCT q.counter_id, q.key FROM counter.quarantine q) q,"
"          LATERAL (SELECT s.* FROM counter.slots s"
"                    WHERE s.counter_id = q.counter_id AND s.key = q.key AND s.value <> 0"
"                   OFFSET 0) s)"
DIAGNOSE_MOVED
", gone AS (DELETE FROM counter.quarantine q"
"   WHERE ($3 = 0 OR q.counter_id = $3)"
"     AND NOT EXISTS (SELECT 1 FROM bad b WHERE b.counter_id = q.counter_id AND b.key = q.key"
"                        AND b.src = CASE q.source WHEN 'slots' THEN 'slots' ELSE 'events' END)"
"   RETURNING q.counter_id, q.key)"
" SELECT DISTINCT c.name, g.key FROM gone g JOIN counter.counters c ON c.id = g.counter_id",
3, {INT4OID, INT4OID, INT4OID}
};

/*
 * $1 idle seconds, $2 counter id or 0: up to FOLD_MAX_ROWS empty slot rows
 * idle long enough (a slot row has a page of its own: deleting a million
 * of them at once would make one round of minutes).
 */
#define FOLD_MAX_ROWS	"10000"
static CounterStmt fold_stmt = {
"DELETE FROM counter.slots s"
" WHERE s.ctid = ANY (ARRAY (SELECT x.ctid FROM counter.slots x"
"                             WHERE ($2 = 0 OR x.counter_id = $2) AND x.value = 0"
"                               AND x.lo IS NULL AND x.hi IS NULL"
"                               AND x.touched < now() - $1 * interval '1 second'"
"                             LIMIT " FOLD_MAX_ROWS " FOR UPDATE SKIP LOCKED))",
2, {INT4OID, INT4OID}
};

/*
 * Buckets past retention: their sum moves into the -infinity bucket; a key
 * whose -infinity bucket would leave bigint keeps its buckets (its reads
 * stay exact) until it fits.  $1 counter id or 0; $2 the time of the last
 * run that committed, or NULL: a granularity is taken only when a bucket
 * has come due since then (the due buckets are those starting before
 * now() - retention, a set that changes only when that time passes a bucket
 * start), so the worker's maintenance rounds do no work in between.  Every
 * part is driven from the counters that have a retention, each reaching
 * its rows through an index (a scalar subquery and OFFSET 0 keep the
 * planner from flattening those into joins with a scan of all rollups): no
 * counter with one, no scan of rollups, and a plan that does not depend on
 * statistics (a seq scan of all rollups and a sort of them, every ten
 * seconds, when counter.counters had none).
 */
#define RETENTION_DUE \
"WITH c AS (SELECT id, u.g, u.r FROM counter.counters," \
"                  unnest(rollups, retention) AS u(g, r)" \
"            WHERE u.r IS NOT NULL AND ($1 = 0 OR id = $1)" \
"              AND ($2::timestamptz IS NULL" \
"                   OR date_bin(u.g, now() - u.r - interval '1 microsecond', " BUCKET_ORIGIN ")" \
"                    > date_bin(u.g, $2 - u.r - interval '1 microsecond', " BUCKET_ORIGIN "))),"

static CounterStmt retention_stmt = {
RETENTION_DUE
" due AS (SELECT c.id AS counter_id, d.key, c.g AS granularity, c.r, d.v"
"           FROM c, LATERAL (SELECT r.key, sum(r.value) AS v FROM counter.rollups r"
"                             WHERE r.counter_id = c.id AND r.granularity = c.g"
"                               AND r.bucket > '-infinity' AND r.bucket < now() - c.r"
"                             GROUP BY r.key) d),"
" fits AS (SELECT d.* FROM due d"
"           WHERE d.v + coalesce((SELECT i.value FROM counter.rollups i"
"                                  WHERE i.counter_id = d.counter_id AND i.key = d.key"
"                                    AND i.granularity = d.granularity AND i.bucket = '-infinity'), 0)"
"                 BETWEEN -9223372036854775808 AND 9223372036854775807),"
" old AS (DELETE FROM counter.rollups r"
"          WHERE r.ctid = ANY (ARRAY (SELECT x.ctid FROM fits f,"
"                   LATERAL (SELECT x.ctid FROM counter.rollups x"
"                             WHERE x.counter_id = f.counter_id AND x.key = f.key"
"                               AND x.granularity = f.granularity"
"                               AND x.bucket > '-infinity' AND x.bucket < now() - f.r"
"                            OFFSET 0) x)))"
" INSERT INTO counter.rollups AS r (counter_id, key, granularity, bucket, value)"
" SELECT counter_id, key, granularity, '-infinity', v::int8 FROM fits"
" ON CONFLICT (counter_id, key, granularity, bucket)"
" DO UPDATE SET value = r.value + excluded.value",
2, {INT4OID, TIMESTAMPTZOID}
};

/*
 * Before retention (since 1.4), with the same parameters and $3 node: the
 * keys whose total holds their buckets (totals.sole) and one of them is
 * past retention get their buckets written out, so that retention_stmt
 * moves that one like any other.  Driven from the counters due, as it is.
 */
static CounterStmt retention_sole_stmt = {
RETENTION_DUE
" s AS (SELECT DISTINCT k.id, k.rollups, y.ctid, y.key, y.value, y.sole"
"        FROM c JOIN counter.counters k ON k.id = c.id,"
"             LATERAL (SELECT y.ctid, y.key, y.value, y.sole FROM counter.totals y"
"                       WHERE y.counter = k.name AND y.node = $3"
"                         AND date_bin(c.g, y.sole, " BUCKET_ORIGIN ") < now() - c.r"
"                      OFFSET 0) y),"
" u AS (UPDATE counter.totals t SET sole = NULL FROM s WHERE t.ctid = s.ctid)"
" INSERT INTO counter.rollups (counter_id, key, granularity, bucket, value)"
" SELECT s.id, s.key, g.g, date_bin(g.g, s.sole, " BUCKET_ORIGIN "), s.value"
"   FROM s, unnest(s.rollups) AS g(g)",
3, {INT4OID, TIMESTAMPTZOID, INT4OID}
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

/* how a batch statement is planned: one plan shape whatever the statistics */
typedef enum BatchShape
{
	SHAPE_PLAIN,				/* hash aggregation in memory */
	SHAPE_WHOLE,				/* a whole table in index order, aggregated as read */
	SHAPE_INDEX					/* hashed, each counter's events through the index */
} BatchShape;

/*
 * One batch statement to run: with its diagnosis (NULL: an error fails the
 * round), the carry of quarantined rows before a whole table's fold, and
 * its plan shape.
 */
typedef struct Batch
{
	CounterStmt *stmt;
	CounterStmt *diagnose;
	CounterStmt *carry;			/* run first, in the same subtransaction */
	BatchShape	shape;
	Datum	   *values;
} Batch;

/* work_mem of a batch statement: its aggregates of a batch never spill */
#define BATCH_WORK_MEM	"256MB"

/* Set planner parameter name to value until the caller's GUC nest level ends. */
static void
batch_set(const char *name, const char *value)
{
	(void) set_config_option(name, value, PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
}

/*
 * Run a batch statement (a CounterInSubxact callback, or called alone).
 * Its plan must not depend on the statistics of the events tables, which
 * were taken when they were empty or never (they fill and empty between
 * two ANALYZEs): the settings of its shape are in force while the
 * statement alone is planned and run, never for a statement run after it
 * (the change feed's, whose kept plan would scan totals once per key).
 * A batch's aggregation is hashed, with memory for a whole batch (batches
 * are bounded: counter.batch_events), a counter's events read by its index
 * in key order.  A whole table, of any size, is read through its index in
 * (counter, key) order and aggregated as it streams (sorted within each
 * key only): no hash table of every key and bucket of the table, which at
 * a million keys filled work_mem several times over and spilled.
 */
static void
exec_batch(void *arg)
{
	Batch	   *b = arg;
	int			nest;

	if (b->carry != NULL)
		CounterExec(b->carry, NULL, NULL, false);
	nest = NewGUCNestLevel();
	batch_set("work_mem", BATCH_WORK_MEM);
	batch_set("enable_bitmapscan", "off");
	batch_set(b->shape == SHAPE_WHOLE ? "enable_hashagg" : "enable_sort", "off");
	if (b->shape != SHAPE_PLAIN)
		batch_set("enable_seqscan", "off");
	CounterExec(b->stmt, b->values, NULL, false);
	AtEOXact_GUC(true, nest);
}

/*
 * After batch b failed with edata (a data exception): quarantine the keys
 * it cannot move, with one WARNING for each.  Returns how many were new.
 */
static uint64
quarantine(Batch *b, ErrorData *edata)
{
	uint64		n;
	uint64		i;

	CounterExec(b->diagnose, b->values, NULL, false);
	n = SPI_processed;
	for (i = 0; i < n; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;

		ereport(WARNING,
				(errcode(edata->sqlerrcode),
				 errmsg("counter: key \"%s\" of counter \"%s\" cannot be compacted: %s",
						SPI_getvalue(tup, desc, 2), SPI_getvalue(tup, desc, 1),
						SPI_getvalue(tup, desc, 3)),
				 errdetail("The key is quarantined; every other key keeps moving. The compaction failed with: %s",
						   edata->message),
				 errhint("Its amount stays pending and counted by every read; see counter.quarantine. It is tried again at every maintenance round, and released once it folds (after an add of the opposite amount, say).")));
	}
	return n;
}

/*
 * Where the next batch of each events table starts, per counter: the
 * counters whose last batch was full, and the greatest key it moved of
 * each.  A counter whose batch was not full starts again from its first
 * key, so that no row below the cursor (an add committed since) waits for
 * long.  Kept across the transactions of a round; only a shortcut: a stale
 * cursor (after a rollback) delays rows, never loses them.
 */
typedef struct EventsCursor
{
	int			n;
	int32	   *ids;
	char	  **keys;
} EventsCursor;

static EventsCursor cursors[2];

/* Replace events table t's cursor by the counters of the batch result that filled limit. */
static void
cursor_save(int t, int64 limit)
{
	static MemoryContext cxt[2] = {NULL, NULL};
	EventsCursor *c = &cursors[t];
	MemoryContext old;
	uint64		i;

	if (cxt[t] == NULL)
		cxt[t] = AllocSetContextCreate(TopMemoryContext, "counter events cursor",
									   ALLOCSET_SMALL_SIZES);
	MemoryContextReset(cxt[t]);
	old = MemoryContextSwitchTo(cxt[t]);
	c->n = 0;
	c->ids = palloc(sizeof(int32) * Max(SPI_processed, 1));
	c->keys = palloc(sizeof(char *) * Max(SPI_processed, 1));
	for (i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		bool		isnull;
		int64		n = DatumGetInt64(SPI_getbinval(tup, SPI_tuptable->tupdesc, 3, &isnull));
		Datum		id = SPI_getbinval(tup, SPI_tuptable->tupdesc, 4, &isnull);

		if (isnull || n < limit)
			continue;
		c->ids[c->n] = DatumGetInt32(id);
		c->keys[c->n] = SPI_getvalue(tup, SPI_tuptable->tupdesc, 5);
		c->n++;
	}
	MemoryContextSwitchTo(old);
}

/* The parameters $4 and $5 (ids, keys) of events table t's cursor. */
static void
cursor_params(int t, Datum *values)
{
	EventsCursor *c = &cursors[t];
	Datum	   *ids = palloc(sizeof(Datum) * Max(c->n, 1));
	Datum	   *keys = palloc(sizeof(Datum) * Max(c->n, 1));
	int			i;

	for (i = 0; i < c->n; i++)
	{
		ids[i] = Int32GetDatum(c->ids[i]);
		keys[i] = CStringGetTextDatum(c->keys[i]);
	}
	values[3] = PointerGetDatum(construct_array(ids, c->n, INT4OID, 4, true, TYPALIGN_INT));
	values[4] = PointerGetDatum(construct_array(keys, c->n, TEXTOID, -1, false, TYPALIGN_INT));
}

/* the most times a batch runs again after a unique_violation (FOLD_INTO) */
#define BATCH_CONFLICT_RETRIES	3

/*
 * Run a batch statement, hand its keys to the change feed and return the
 * rows it moved.  With a diagnosis, the statement runs in a subtransaction:
 * when it fails with a data exception, the keys it cannot move are
 * quarantined and it runs again without them, until it succeeds; after a
 * unique_violation (a row of a key it took for new, inserted meanwhile) it
 * runs again as it is, up to BATCH_CONFLICT_RETRIES times, but for a
 * transaction snapshot, which would not see the row either: there it fails
 * with serialization_failure, as ON CONFLICT does; an error of
 * another kind, or one no key explains, fails the round as before.
 * Leaves the statement's result in SPI_tuptable.
 */
static int64
run(Batch *b)
{
	int64		n = 0;
	int			conflicts = 0;
	uint64		i;

	for (;;)
	{
		ErrorData  *edata;

		if (b->diagnose == NULL)
		{
			exec_batch(b);
			break;
		}
		edata = CounterInSubxact(exec_batch, b);
		if (edata == NULL)
			break;
		if (edata->sqlerrcode == ERRCODE_UNIQUE_VIOLATION)
		{
			/* a row inserted meanwhile: the next snapshot sees it (FOLD_INTO) */
			if (IsolationUsesXactSnapshot())
				ereport(ERROR,
						(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
						 errmsg("could not serialize access due to a concurrent insert of a counter's row"),
						 errdetail("%s", edata->message),
						 errhint("Run the transaction again. A compaction that can see the row merges into it: the worker's, or counter.compact() in READ COMMITTED.")));
			if (++conflicts <= BATCH_CONFLICT_RETRIES)
			{
				FreeErrorData(edata);
				continue;
			}
		}
		if (ERRCODE_TO_CATEGORY(edata->sqlerrcode) != ERRCODE_DATA_EXCEPTION ||
			quarantine(b, edata) == 0)
			ReThrowError(edata);
		FreeErrorData(edata);
	}
	for (i = 0; i < SPI_processed; i++)
	{
		bool		isnull;
		Datum		d = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 3, &isnull);

		if (!isnull)
			n += DatumGetInt64(d);
	}
	CounterFeedCollect();
	return n;
}

/*
 * The statement that deletes and folds the visible events of table t
 * (whole: folds all of it, which no add writes any more), for the
 * installed version.
 */
static Batch
events_batch(int t, bool whole, Datum *values)
{
	bool		q = !CounterLegacy();
	Batch		b = {NULL, NULL, NULL, whole ? SHAPE_WHOLE : SHAPE_INDEX, values};

	if (!q)
		b.stmt = whole ? CounterLegacyCompactEventsFold(t) : CounterLegacyCompactEventsDelete(t);
	else
	{
		b.stmt = whole ? &events_fold_stmt[t] : &events_delete_stmt[t];
		b.diagnose = &events_diagnose_stmt[t];
		b.carry = whole ? &events_carry_stmt[t] : NULL;
	}
	return b;
}

/*
 * The events of a batch: rotate the events tables when the current one is
 * due (events.c) and fold the old one whole, then delete and fold up to
 * the batch's share of each counter's visible events in each table still
 * live.  Sets *full when some counter filled its share (more may wait).
 * Returns the events moved.
 *
 * The share starts at counter.batch_events and, when timed (the worker's
 * batches, each a transaction holding the compaction lock), halves while a
 * batch takes longer than counter.batch_time, growing back while batches
 * are full and quick: a batch is bounded in rows and in time.  The worker
 * folds a whole table at once only if it cannot hold more than a batch,
 * or the last batch took everything (then only the rows added since are
 * live in it); counter.compact(), one transaction whatever it moves,
 * folds it at any size (no row to delete: the cheapest way).
 */
static int64
compact_events(Datum *values, bool timed, bool *full)
{
	static bool idle = false;	/* our last call moved no event */
	static bool caught_up = false;	/* ... or left none visible */
	static int	share = 0;
	int			folded = CounterEventsSync();
	int			ntables = CounterLegacyLacks(LEGACY_EVENTS_1) ? 1 : 2;
	TimestampTz start = GetCurrentTimestamp();
	int64		n = 0;
	int			old;
	int			t;
	long		secs;
	int			usecs;

	if (share <= 0 || share > counter_batch_events)
		share = counter_batch_events;
	values[0] = Int32GetDatum(share);
	/* a row of the events tables takes at least 40 bytes */
	old = CounterEventsRotate(folded, idle,
							  !timed || caught_up ? -1 : (int64) share * 40 / 1024);
	*full = false;
	if (old >= 0)
	{
		/* every counter's rows: diagnosed for every counter */
		Datum		all[3] = {values[0], values[1], Int32GetDatum(0)};
		Batch		b = events_batch(old, true, all);

		n += run(&b);
		folded |= 1 << old;
		cursors[old].n = 0;
	}
	for (t = 0; t < ntables; t++)
		if ((folded & (1 << t)) == 0)
		{
			Batch		b = events_batch(t, false, values);

			cursor_params(t, values);
			n += run(&b);
			if (!CounterLegacy())
			{
				cursor_save(t, share);
				*full |= cursors[t].n > 0;
			}
		}
	idle = (n == 0);
	caught_up = !*full;

	TimestampDifference(start, GetCurrentTimestamp(), &secs, &usecs);
	if (!timed)
		share = counter_batch_events;
	else if (secs * 1000 + usecs / 1000 > counter_batch_time)
		share = Max(share / 2, Min(BATCH_MIN_EVENTS, counter_batch_events));
	else if (*full && secs * 1000 + usecs / 1000 < counter_batch_time / 4)
		share = Min((int64) share * 2, counter_batch_events);
	return n;
}

/*
 * One batch, in the caller's transaction (which holds the compaction lock):
 * up to counter.batch_events visible events of each counter and up to
 * counter.batch_size slot rows, with flush every buffered entry of the
 * database; with maintenance, first release the quarantined keys that fold
 * again, and after the batch fold idle slot rows, apply retention (to the
 * granularities with a bucket come due since retained, the time of the
 * last maintenance that committed; every one if 0) and purge idempotency
 * keys; timed: sized in time too (compact_events).  Adds what it moved to
 * *moved; returns true when a counter filled its share of events or the
 * slot statement its batch (more may be waiting).
 */
bool
CounterCompactBatch(int32 counter_id, bool maintenance, TimestampTz retained,
					bool flush, bool timed, CounterMoved *moved)
{
	bool		q = !CounterLegacy();
	Datum		values[5];
	CounterBufferTaken taken;
	int64		slots;
	bool		full;

	values[0] = Int32GetDatum(counter_batch_size);
	values[1] = Int32GetDatum(counter_node_id);
	values[2] = Int32GetDatum(counter_id);

	SPI_connect();
	if (maintenance && q)
		CounterExec(&release_stmt, values, NULL, false);
	moved->events += compact_events(values, timed, &full);
	values[0] = Int32GetDatum(counter_batch_size);
	{
		Batch		b = {q ? &slots_stmt : CounterLegacyCompactSlots(),
		q ? &slots_diagnose_stmt : NULL, NULL, SHAPE_PLAIN, values};

		slots = run(&b);
	}
	moved->slot_rows += slots;
	if (flush && CounterCommitTake(&taken) > 0)
	{
		/* the parameters of buffered_stmt */
		Datum		args[6] = {taken.ids, Int32GetDatum(counter_node_id), taken.created,
		taken.keys, taken.amounts, taken.times};

		/* quarantined keys' amounts go to the table adds write */
		Batch		b = {q ? &buffered_stmt[CounterEventsTableForAdd(CounterGetRels())] :
			CounterLegacyCompactBuffered(),
		q ? &buffered_diagnose_stmt : NULL, NULL, SHAPE_PLAIN, args};

		moved->buffered_keys += run(&b);
	}
	if (maintenance)
	{
		values[0] = Int32GetDatum(counter_fold_after);
		values[1] = Int32GetDatum(counter_id);
		CounterExec(&fold_stmt, values, NULL, false);
		CounterSlotsVerify();
		values[0] = Int32GetDatum(counter_id);
		values[1] = TimestampTzGetDatum(retained);
		values[2] = Int32GetDatum(counter_node_id);
		if (q)
			CounterExec(&retention_sole_stmt, values, retained == 0 ? " n " : NULL, false);
		CounterExec(&retention_stmt, values, retained == 0 ? " n" : NULL, false);
		values[0] = Int32GetDatum(counter_idempotency_window);
		CounterExec(&idempotency_stmt, values, NULL, false);
	}
	SPI_finish();

	return full || slots >= counter_batch_size;
}

/*
 * Compact now, in the caller's transaction, until nothing visible is left
 * (counter_id 0: every counter), batch after batch.  Waits for a running
 * compaction when wait, else returns 0 at once if one runs.  Outside a
 * transaction block (the caller's statement is its transaction: the lock
 * ends with it), then empties the folded events tables every snapshot is
 * done with, as the worker's rounds do: with the worker off, the calls of
 * counter.compact() are what lets the tables rotate again (from the next
 * call on).  Not inside one: the TRUNCATE's lock would stop every reader of
 * the table (counter.stats, pg_dump) until the caller commits.
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
		full = CounterCompactBatch(counter_id, first, 0, first, false, &moved);
		first = false;
	}
	SPI_connect();
	CounterFeedFlush();
	SPI_finish();
	if (!IsTransactionBlock())
		(void) CounterEventsTruncate();
	return moved.events + moved.slot_rows + moved.buffered_keys;
}

/*
 * The fold's aggregate counter._buckets(at, delta, granularities): a key's
 * rollup buckets in one pass over its rows, in whatever order they come
 * (since 1.4).  The fold groups its rows by key alone, streaming them in
 * index order, where grouping by key and bucket of each granularity made a
 * row per row and granularity, sorted within each key.  A key's rows come
 * mostly in time order (index entries of equal keys are in heap order), so
 * each granularity's last bucket is nearly always the one a row adds to.
 * Sums are kept in int128 and checked once at the end, as the sum in
 * numeric it replaces: only a bucket's final sum can be out of range
 * (22003, which the diagnosis explains).
 */

/* the sum of one bucket of one granularity */
typedef struct FoldBucket
{
	int			g;				/* index into FoldBuckets.gs */
	TimestampTz bucket;
	int128		sum;
} FoldBucket;

/*
 * The granularities of one counter._buckets argument, ascending.  Kept for
 * the whole statement (the transition function's fn_extra, a list of every
 * argument met: a counter's groups share its entry), so that a group's
 * state does not parse and sort its counter's array again.
 */
typedef struct FoldGrains
{
	struct FoldGrains *next;
	ArrayType  *arg;			/* a copy of the argument (NULL: none) */
	int			nelems;			/* its elements, NULL ones included */
	int			ngs;
	Interval	gs[FLEXIBLE_ARRAY_MEMBER];
} FoldGrains;

/* the state of counter._buckets for one key: one allocation, until it grows */
typedef struct FoldBuckets
{
	FoldGrains *grains;
	int		   *last;			/* per granularity, its last bucket (-1: none) */
	int			n;
	int			size;
	FoldBucket *b;				/* first in the same allocation */
} FoldBuckets;

/* qsort comparator of intervals */
static int
interval_order(const void *a, const void *b)
{
	return DatumGetInt32(DirectFunctionCall2(interval_cmp,
											 IntervalPGetDatum((const Interval *) a),
											 IntervalPGetDatum((const Interval *) b)));
}

/* qsort comparator of buckets: granularity, then start */
static int
bucket_order(const void *a, const void *b)
{
	const FoldBucket *x = a;
	const FoldBucket *y = b;

	if (x->g != y->g)
		return x->g < y->g ? -1 : 1;
	return x->bucket < y->bucket ? -1 : (x->bucket > y->bucket ? 1 : 0);
}

/*
 * The granularities of argument gs (NULL or NULL elements: none), from the
 * list at *cache (in cxt, which outlives every group), added if new.
 */
static FoldGrains *
grains_of(void **cache, MemoryContext cxt, ArrayType *gs)
{
	FoldGrains *f;
	Datum	   *elems;
	bool	   *nulls;
	int			n = 0;
	int			i;

	for (f = *cache; f != NULL; f = f->next)
		if (gs == NULL ? f->arg == NULL :
			(f->arg != NULL && VARSIZE(f->arg) == VARSIZE(gs) &&
			 memcmp(f->arg, gs, VARSIZE(gs)) == 0))
			return f;
	if (gs != NULL)
		deconstruct_array(gs, INTERVALOID, sizeof(Interval), false, TYPALIGN_DOUBLE,
						  &elems, &nulls, &n);
	f = MemoryContextAllocZero(cxt, offsetof(FoldGrains, gs) + sizeof(Interval) * Max(n, 1));
	f->nelems = n;
	for (i = 0; i < n; i++)
		if (!nulls[i])
			f->gs[f->ngs++] = *DatumGetIntervalP(elems[i]);
	qsort(f->gs, f->ngs, sizeof(Interval), interval_order);
	if (gs != NULL)
	{
		f->arg = MemoryContextAlloc(cxt, VARSIZE(gs));
		memcpy(f->arg, gs, VARSIZE(gs));
	}
	f->next = *cache;
	*cache = f;
	return f;
}

/* A new state in cxt for the granularities g, with room for a bucket of each. */
static FoldBuckets *
buckets_new(MemoryContext cxt, FoldGrains *g)
{
	int			size = Max(g->ngs, 1);
	Size		head = MAXALIGN(sizeof(FoldBuckets)) + MAXALIGN(sizeof(int) * size);
	char	   *mem = MemoryContextAlloc(cxt, head + sizeof(FoldBucket) * size);
	FoldBuckets *s = (FoldBuckets *) mem;
	int			i;

	s->grains = g;
	s->last = (int *) (mem + MAXALIGN(sizeof(FoldBuckets)));
	for (i = 0; i < g->ngs; i++)
		s->last[i] = -1;
	s->n = 0;
	s->size = size;
	s->b = (FoldBucket *) (mem + head);
	return s;
}

/* The bucket of granularity g starting at start in state s, added if new. */
static FoldBucket *
buckets_find(FoldBuckets *s, int g, TimestampTz start)
{
	int			i = s->last[g];

	if (i < 0 || s->b[i].bucket != start)
	{
		for (i = s->n - 1; i >= 0; i--)
			if (s->b[i].g == g && s->b[i].bucket == start)
				break;
		if (i < 0)
		{
			if (s->n == s->size)
			{
				/* the first buckets are in the state's allocation: copied out */
				FoldBucket *b = MemoryContextAlloc(GetMemoryChunkContext(s),
												   sizeof(FoldBucket) * s->size * 2);

				memcpy(b, s->b, sizeof(FoldBucket) * s->n);
				s->b = b;
				s->size *= 2;
			}
			i = s->n++;
			s->b[i].g = g;
			s->b[i].bucket = start;
			s->b[i].sum = 0;
		}
		s->last[g] = i;
	}
	return &s->b[i];
}

/*
 * The transition function of counter._buckets: add delta at time at to its
 * bucket of each granularity (date_bin, origin 2000-01-01 00:00 UTC: the
 * epoch of timestamptz).
 */
PG_FUNCTION_INFO_V1(counter_buckets_add);
Datum
counter_buckets_add(PG_FUNCTION_ARGS)
{
	MemoryContext cxt;
	FoldBuckets *s;
	int			g;

	if (!AggCheckCallContext(fcinfo, &cxt))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("counter._buckets_add called in non-aggregate context")));
	if (PG_ARGISNULL(0))
		s = buckets_new(cxt, grains_of(&fcinfo->flinfo->fn_extra, fcinfo->flinfo->fn_mcxt,
									   PG_ARGISNULL(3) ? NULL : PG_GETARG_ARRAYTYPE_P(3)));
	else
		s = (FoldBuckets *) PG_GETARG_POINTER(0);
	if (PG_ARGISNULL(1) || PG_ARGISNULL(2))
		PG_RETURN_POINTER(s);
	for (g = 0; g < s->grains->ngs; g++)
	{
		Datum		start = DirectFunctionCall3(timestamptz_bin,
												IntervalPGetDatum(&s->grains->gs[g]),
												PG_GETARG_DATUM(1),
												TimestampTzGetDatum(0));

		buckets_find(s, g, DatumGetTimestampTz(start))->sum += PG_GETARG_INT64(2);
	}
	PG_RETURN_POINTER(s);
}

/* what the final function of counter._buckets looks up once (fn_extra) */
typedef struct FoldRowType
{
	Oid			elemtype;		/* counter._bucket */
	TupleDesc	desc;			/* a copy of its descriptor, in fn_mcxt */
	void	   *grains;			/* the granularities met (grains_of) */
} FoldRowType;

/* The row type of counter._bucket, for the function of fcinfo: looked up once per statement. */
static FoldRowType *
fold_row_type(FunctionCallInfo fcinfo)
{
	FoldRowType *t = fcinfo->flinfo->fn_extra;

	if (t == NULL)
	{
		MemoryContext old = MemoryContextSwitchTo(fcinfo->flinfo->fn_mcxt);

		t = palloc(sizeof(FoldRowType));
		t->elemtype = get_element_type(get_fn_expr_rettype(fcinfo->flinfo));
		t->desc = lookup_rowtype_tupdesc_copy(t->elemtype, -1);
		t->grains = NULL;
		MemoryContextSwitchTo(old);
		fcinfo->flinfo->fn_extra = t;
	}
	return t;
}

/* One counter._bucket: granularity g, its bucket starting at start, sum (22003 beyond bigint). */
static Datum
bucket_datum(FoldRowType *t, Interval *g, TimestampTz start, int128 sum)
{
	Datum		values[3];
	bool		nulls[3] = {false, false, false};

	if (sum < PG_INT64_MIN || sum > PG_INT64_MAX)
		ereport(ERROR,
				(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
				 errmsg("bigint out of range")));
	values[0] = IntervalPGetDatum(g);
	values[1] = TimestampTzGetDatum(start);
	values[2] = Int64GetDatum((int64) sum);
	return HeapTupleGetDatum(heap_form_tuple(t->desc, values, nulls));
}

/*
 * The final function of counter._buckets: counter._bucket[] in primary key
 * order; NULL when every granularity (of an argument with no NULL one) got
 * one bucket: the key is sole (FOLD_MOVED_AS), and most keys of a fold
 * are, so their buckets are not built.
 */
PG_FUNCTION_INFO_V1(counter_buckets_result);
Datum
counter_buckets_result(PG_FUNCTION_ARGS)
{
	FoldBuckets *s = PG_ARGISNULL(0) ? NULL : (FoldBuckets *) PG_GETARG_POINTER(0);
	FoldRowType *t = fold_row_type(fcinfo);
	int			n = s == NULL ? 0 : s->n;
	Datum	   *elems;
	int			i;

	if (n > 0 && n == s->grains->ngs && n == s->grains->nelems)
		PG_RETURN_NULL();
	elems = palloc(sizeof(Datum) * Max(n, 1));
	if (n > 0)
		qsort(s->b, n, sizeof(FoldBucket), bucket_order);
	for (i = 0; i < n; i++)
		elems[i] = bucket_datum(t, &s->grains->gs[s->b[i].g], s->b[i].bucket, s->b[i].sum);
	PG_RETURN_ARRAYTYPE_P(construct_array(elems, n, t->elemtype, -1, false, TYPALIGN_DOUBLE));
}

/*
 * counter._sole_buckets(b, sole, value, gs): buckets b (counter._bucket[]
 * in primary key order, as counter._buckets makes them; NULL: none) with
 * value added to the bucket holding time sole of each granularity of gs
 * (added where b has none).  Without b, the buckets of a sole key (its
 * rows' time sole, value their sum), which counter._buckets leaves NULL;
 * with b, the buckets a fold brings to a key whose total held its whole
 * rollups (totals.sole: value in one bucket of each granularity), merged
 * with those, to be written out as one set.  NULL if sole, value or gs is.
 */
PG_FUNCTION_INFO_V1(counter_sole_buckets);
Datum
counter_sole_buckets(PG_FUNCTION_ARGS)
{
	FoldRowType *t = fold_row_type(fcinfo);
	FoldGrains *g;
	Datum		sole;
	int64		value;
	Datum	   *elems = NULL;
	bool	   *nulls;
	Interval  **gs;
	TimestampTz *starts;
	int128	   *sums;
	int			n = 0;
	int			out;
	int			i;
	int			k;

	if (PG_ARGISNULL(1) || PG_ARGISNULL(2) || PG_ARGISNULL(3))
		PG_RETURN_NULL();
	sole = PG_GETARG_DATUM(1);
	value = PG_GETARG_INT64(2);
	g = grains_of(&t->grains, fcinfo->flinfo->fn_mcxt, PG_GETARG_ARRAYTYPE_P(3));
	if (!PG_ARGISNULL(0))
		deconstruct_array(PG_GETARG_ARRAYTYPE_P(0), t->elemtype, -1, false, TYPALIGN_DOUBLE,
						  &elems, &nulls, &n);
	/* room for b and a bucket more per granularity */
	gs = palloc(sizeof(Interval *) * Max(n + g->ngs, 1));
	starts = palloc(sizeof(TimestampTz) * Max(n + g->ngs, 1));
	sums = palloc(sizeof(int128) * Max(n + g->ngs, 1));
	for (i = 0; i < n; i++)
	{
		HeapTupleHeader h = DatumGetHeapTupleHeader(elems[i]);
		bool		isnull;

		if (nulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("counter._sole_buckets: a bucket is null")));
		gs[i] = DatumGetIntervalP(GetAttributeByNum(h, 1, &isnull));
		starts[i] = DatumGetTimestampTz(GetAttributeByNum(h, 2, &isnull));
		sums[i] = DatumGetInt64(GetAttributeByNum(h, 3, &isnull));
	}
	out = n;
	for (k = 0; k < g->ngs; k++)
	{
		TimestampTz start = DatumGetTimestampTz(DirectFunctionCall3(timestamptz_bin,
																	IntervalPGetDatum(&g->gs[k]),
																	sole,
																	TimestampTzGetDatum(0)));

		for (i = 0; i < n; i++)
			if (starts[i] == start &&
				DatumGetBool(DirectFunctionCall2(interval_eq, IntervalPGetDatum(gs[i]),
												 IntervalPGetDatum(&g->gs[k]))))
				break;
		if (i == n)
		{
			i = out++;
			gs[i] = &g->gs[k];
			starts[i] = start;
			sums[i] = 0;
		}
		sums[i] += value;
	}
	elems = palloc(sizeof(Datum) * Max(out, 1));
	for (i = 0; i < out; i++)
		elems[i] = bucket_datum(t, gs[i], starts[i], sums[i]);
	PG_RETURN_ARRAYTYPE_P(construct_array(elems, out, t->elemtype, -1, false, TYPALIGN_DOUBLE));
}
