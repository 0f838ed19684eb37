/*-------------------------------------------------------------------------
 *
 * feed.c
 *	  The change feed: batched NOTIFY of changed keys' values.
 *
 * Compaction reports every (counter, key) it moved; those are collected
 * here, and flushed at most every counter.notify_interval by the worker (at
 * once by counter.compact()).  A flush sends, on the counter's feed channel,
 * a JSON array of {"counter", "key", ["updated_at",] "value"} objects in payloads below
 * NOTIFY's 8000 bytes; the value is the key's compacted total, read set-wise from totals
 * (cheap, where value() would walk the events just deleted).  Since
 * version 1.4 each object also has "updated_at", the latest add time among
 * those totals (totals.updated, as counter.get() reads it; null if none is
 * known).  Adds never notify: every change reaches the feed through
 * compaction, so a client sees each changed key's latest value within
 * naptime + notify_interval of the change, and the final value once adds
 * stop.
 *
 * Any role may LISTEN on any channel, so since version 1.4 the channel is
 * counters.feed_channel, 'counter_' and 32 random hex digits, which
 * counter.channel() tells only to roles that may read the counter and
 * counter.revoke() replaces when it takes a read right away.  The channel
 * is read at each flush, so the feed moves to a new channel with the
 * revoke's commit.  Before the update to 1.4 it is counter_<name>.
 *
 * Since version 1.4 the feed is a per-counter option (counters.feed, off
 * for new counters): the keys of a counter without it are not even
 * collected.  A full NOTIFY queue (a listener that does not read holds it)
 * raises an error at commit, which would fail the compaction and every
 * retry of it: so a flush first checks the queue's usage, and above
 * counter.feed_queue_limit drops its entries, counts them per counter in
 * counter.feed_drops (counter.stats' feed_dropped) and warns once per
 * transaction, while compaction goes on.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "commands/async.h"
#include "lib/stringinfo.h"
#include "storage/proc.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/memutils.h"

#include "feed.h"
#include "catalog.h"
#include "guc.h"
#include "legacy.h"

/* Flush before holding more keys than this. */
#define FEED_MAX_KEYS	10000
/* NOTIFY takes payloads shorter than 8000 bytes; an entry is at most ~6 kB */
#define FEED_PAYLOAD_MAX	7900

static MemoryContext feed_context = NULL;
static Datum *feed_names = NULL;
static Datum *feed_keys = NULL;
static int	feed_count = 0;

/*
 * $1 names, $2 keys: the channel and JSON entry of each collected key,
 * grouped by counter (before 1.4: legacy.c).
 */
static CounterStmt notify_stmt = {
	"WITH u AS (SELECT DISTINCT u.n, u.k FROM unnest($1::text[], $2::text[]) AS u(n, k))"
	" SELECT c.feed_channel, (SELECT json_build_object('counter', u.n, 'key', u.k,"
	"                                'updated_at', max(t.updated), 'value', sum(t.value))"
	"                 FROM counter.totals t WHERE t.counter = u.n AND t.key = u.k)::text"
	"   FROM u JOIN counter.counters c ON c.name = u.n ORDER BY u.n, u.k",
	2, {TEXTARRAYOID, TEXTARRAYOID}
};

/*
 * $1 names, $2 keys (version 1.4): count the entries a flush drops, per
 * counter, in counter.feed_drops.
 */
static CounterStmt drop_stmt = {
	"INSERT INTO counter.feed_drops AS d (counter_id, dropped)"
	" SELECT c.id, count(DISTINCT u.k)"
	"   FROM unnest($1::text[], $2::text[]) AS u(n, k) JOIN counter.counters c ON c.name = u.n"
	"  GROUP BY c.id"
	" ON CONFLICT (counter_id) DO UPDATE SET dropped = d.dropped + excluded.dropped",
	2, {TEXTARRAYOID, TEXTARRAYOID}
};

/*
 * Remember the keys of a compaction result: rows of (counter name, key, ...)
 * in SPI_tuptable, but those of counters without the feed option and rows
 * without a name (the result's counts).
 */
void
CounterFeedCollect(void)
{
	MemoryContext old;
	/* a flush below runs SPI, which replaces these: keep ours */
	SPITupleTable *tuptable = SPI_tuptable;
	uint64		processed = SPI_processed;
	uint64		i;
	char		last[COUNTER_NAME_MAXLEN + 1] = "";
	bool		feed = false;

	if (feed_context == NULL)
	{
		feed_context = AllocSetContextCreate(TopMemoryContext, "counter feed",
											 ALLOCSET_DEFAULT_SIZES);
		feed_names = MemoryContextAlloc(feed_context, sizeof(Datum) * FEED_MAX_KEYS);
		feed_keys = MemoryContextAlloc(feed_context, sizeof(Datum) * FEED_MAX_KEYS);
	}
	for (i = 0; i < processed; i++)
	{
		bool		isnull;
		Datum		name = SPI_getbinval(tuptable->vals[i], tuptable->tupdesc, 1, &isnull);
		Datum		key;
		char	   *cname;

		if (isnull)
			continue;
		key = SPI_getbinval(tuptable->vals[i], tuptable->tupdesc, 2, &isnull);
		cname = TextDatumGetCString(name);

		/* one look-up per run of rows of the same counter */
		if (strcmp(cname, last) != 0)
		{
			CounterMeta *meta = CounterLookup(cname, true);

			feed = meta != NULL && meta->feed;
			strlcpy(last, cname, sizeof(last));
		}
		pfree(cname);
		if (!feed)
			continue;
		if (feed_count == FEED_MAX_KEYS)
			CounterFeedFlush();
		old = MemoryContextSwitchTo(feed_context);
		feed_names[feed_count] = PointerGetDatum(DatumGetTextPCopy(name));
		feed_keys[feed_count] = PointerGetDatum(DatumGetTextPCopy(key));
		feed_count++;
		MemoryContextSwitchTo(old);
	}
}

/*
 * Whether the NOTIFY queue has room for a flush: its usage at most
 * counter.feed_queue_limit.  If not, count the entries of values (the
 * flush's names and keys) as dropped, warning once per transaction.
 */
static bool
queue_has_room(Datum *values, int count)
{
	static LocalTransactionId warned = InvalidLocalTransactionId;
	LOCAL_FCINFO(fcinfo, 0);
	double		usage;

	InitFunctionCallInfoData(*fcinfo, NULL, 0, InvalidOid, NULL, NULL);
	usage = DatumGetFloat8(pg_notification_queue_usage(fcinfo));
	if (usage <= counter_feed_queue_limit)
		return true;
	if (!CounterLegacy())
		CounterExec(&drop_stmt, values, NULL, false);
	if (warned != MyProc->lxid)
	{
		warned = MyProc->lxid;
		ereport(WARNING,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("counter: the change feed of %d keys is dropped: the NOTIFY queue is %.6f%% full",
						count, usage * 100),
				 errdetail("counter.feed_queue_limit is %g; a full queue would fail the compaction.",
						   counter_feed_queue_limit),
				 errhint("A session that listens but does not read (an open transaction) holds the queue; see pg_notification_queue_usage(). Dropped entries are counted in counter.stats.feed_dropped.")));
	}
	return false;
}

/* Notify the values of every collected key; SPI must be connected. */
void
CounterFeedFlush(void)
{
	int			count = feed_count;
	Datum		values[2];
	StringInfoData payload;
	char		channel[NAMEDATALEN];
	uint64		i;

	if (feed_count == 0)
		return;
	values[0] = PointerGetDatum(construct_array(feed_names, feed_count, TEXTOID,
												-1, false, TYPALIGN_INT));
	values[1] = PointerGetDatum(construct_array(feed_keys, feed_count, TEXTOID,
												-1, false, TYPALIGN_INT));
	feed_count = 0;
	MemoryContextReset(feed_context);
	feed_names = MemoryContextAlloc(feed_context, sizeof(Datum) * FEED_MAX_KEYS);
	feed_keys = MemoryContextAlloc(feed_context, sizeof(Datum) * FEED_MAX_KEYS);
	if (!queue_has_room(values, count))
		return;
	/* not read-only: it must see the totals this transaction just wrote */
	CounterExec(CounterLegacy() ? CounterLegacyFeedNotify() : &notify_stmt,
				values, NULL, false);

	/* pack entries greedily into payloads that NOTIFY accepts */
	initStringInfo(&payload);
	for (i = 0; i <= SPI_processed; i++)
	{
		char	   *next = NULL;
		char	   *entry = NULL;

		if (i < SPI_processed)
		{
			next = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);
			entry = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2);
		}
		if (payload.len > 0 &&
			(next == NULL || strcmp(next, channel) != 0 ||
			 payload.len + strlen(entry) + 2 > FEED_PAYLOAD_MAX))
		{
			appendStringInfoChar(&payload, ']');
			Async_Notify(channel, payload.data);
			resetStringInfo(&payload);
		}
		if (next == NULL)
			break;
		if (payload.len == 0)
		{
			strlcpy(channel, next, sizeof(channel));
			appendStringInfoChar(&payload, '[');
		}
		else
			appendStringInfoChar(&payload, ',');
		appendStringInfoString(&payload, entry);
	}
}
