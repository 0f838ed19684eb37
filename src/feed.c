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
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "commands/async.h"
#include "lib/stringinfo.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/memutils.h"

#include "feed.h"
#include "catalog.h"

/* Flush before holding more keys than this. */
#define FEED_MAX_KEYS	10000
/* NOTIFY takes payloads shorter than 8000 bytes; an entry is at most ~6 kB */
#define FEED_PAYLOAD_MAX	7900

static MemoryContext feed_context = NULL;
static Datum *feed_names = NULL;
static Datum *feed_keys = NULL;
static int	feed_count = 0;

/*
 * The channel and JSON entry of each collected key, grouped by counter:
 * [1] with counters.feed_channel (version 1.4), [0] before.
 */
#define NOTIFY_SQL(CHANNEL, UPDATED) \
	"WITH u AS (SELECT DISTINCT u.n, u.k FROM unnest($1::text[], $2::text[]) AS u(n, k))" \
	" SELECT " CHANNEL ", (SELECT json_build_object('counter', u.n, 'key', u.k, " UPDATED \
	"                                'value', sum(t.value))" \
	"                 FROM counter.totals t WHERE t.counter = u.n AND t.key = u.k)::text" \
	"   FROM u JOIN counter.counters c ON c.name = u.n ORDER BY u.n, u.k"

static CounterStmt notify_stmt[2] = {
	{NOTIFY_SQL("'counter_' || c.name", ""), 2, {TEXTARRAYOID, TEXTARRAYOID}},
	{NOTIFY_SQL("c.feed_channel", "'updated_at', max(t.updated),"), 2, {TEXTARRAYOID, TEXTARRAYOID}}
};

/*
 * Remember the keys of a compaction result: rows of (counter name, key, ...)
 * in SPI_tuptable.
 */
void
CounterFeedCollect(void)
{
	MemoryContext old;
	/* a flush below runs SPI, which replaces these: keep ours */
	SPITupleTable *tuptable = SPI_tuptable;
	uint64		processed = SPI_processed;
	uint64		i;

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
		Datum		key = SPI_getbinval(tuptable->vals[i], tuptable->tupdesc, 2, &isnull);

		if (feed_count == FEED_MAX_KEYS)
			CounterFeedFlush();
		old = MemoryContextSwitchTo(feed_context);
		feed_names[feed_count] = PointerGetDatum(DatumGetTextPCopy(name));
		feed_keys[feed_count] = PointerGetDatum(DatumGetTextPCopy(key));
		feed_count++;
		MemoryContextSwitchTo(old);
	}
}

/* Notify the values of every collected key; SPI must be connected. */
void
CounterFeedFlush(void)
{
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
	/* not read-only: it must see the totals this transaction just wrote */
	CounterExec(&notify_stmt[CounterGetRels()->feed_channel != InvalidAttrNumber],
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
