/*-------------------------------------------------------------------------
 *
 * guc.c
 *	  Configuration parameters of the counter extension.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <limits.h>

#include "miscadmin.h"
#include "storage/bufmgr.h"
#include "utils/guc.h"

#include "guc.h"

int			counter_naptime = 1000;
int			counter_batch_size = 1000000;
int			counter_batch_events = 100000;
int			counter_batch_time = 1000;
bool		counter_worker_enabled = true;
int			counter_node_id = 1;
int			counter_fold_after = 60;
int			counter_slot_events = 4;
int			counter_idempotency_window = 86400;
int			counter_notify_interval = 1000;
double		counter_feed_queue_limit = 0.5;
int			counter_buffered_keys = 100000;
int			counter_flush_interval = 1000;
int			counter_rotate_size = 1024;
char	   *counter_node_conninfo = NULL;

/*
 * counter.buffered_keys = -1 (the default): as many keys as an eighth of
 * shared_buffers holds at COUNTER_BUFFER_KEY_BYTES each, at least 100,000
 * and at most 10,000,000 (as wal_buffers = -1 follows shared_buffers).
 */
static bool
check_buffered_keys(int *newval, void **extra, GucSource source)
{
	if (*newval == -1)
	{
		int64		keys = (int64) NBuffers * BLCKSZ / 8 / COUNTER_BUFFER_KEY_BYTES;

		*newval = (int) Min(Max(keys, 100000), 10000000);
	}
	else if (*newval < 16)
	{
		GUC_check_errdetail("counter.buffered_keys must be -1 or at least 16.");
		return false;
	}
	return true;
}

/* Define every counter.* parameter; called once from _PG_init. */
void
CounterGucInit(void)
{
	DefineCustomIntVariable("counter.naptime",
							"Time the background worker sleeps between compactions.",
							NULL,
							&counter_naptime,
							1000, 10, 3600 * 1000,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("counter.batch_size",
							"Largest number of slot rows collected in one compaction batch.",
							NULL,
							&counter_batch_size,
							1000000, 100, INT_MAX,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("counter.batch_events",
							"Most events of one counter moved by one compaction batch.",
							"Each batch is its own transaction in the worker; counter.compact() runs batch after batch.",
							&counter_batch_events,
							100000, 100, INT_MAX,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("counter.batch_time",
							"Time one compaction batch of events should take at most.",
							"A slower batch halves the events of the next (to 1000 at least); quick full batches double them again, up to counter.batch_events.",
							&counter_batch_time,
							1000, 10, 3600 * 1000,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomBoolVariable("counter.worker_enabled",
							 "Whether the background worker compacts counters.",
							 "When off, reads stay exact; events and slot rows accumulate until counter.compact() runs.",
							 &counter_worker_enabled,
							 true,
							 PGC_SIGHUP,
							 0,
							 NULL, NULL, NULL);

	DefineCustomIntVariable("counter.node_id",
							"Shard id of this node in every counter's totals (unique per node in a multi-node set-up).",
							NULL,
							&counter_node_id,
							1, 1, INT_MAX,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("counter.fold_after",
							"Idle time after which the worker deletes a key's empty slot rows.",
							NULL,
							&counter_fold_after,
							60, 0, 86400 * 365,
							PGC_SIGHUP,
							GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomIntVariable("counter.slot_events",
							"Pending events a slots-mode key may have before its adds take a slot row.",
							"A key without a slot row stores an add as an event row while it has fewer pending events than this and no other transaction is inserting one for it; 0 gives every key a slot row at its first add.",
							&counter_slot_events,
							4, 0, 1024,
							PGC_USERSET,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("counter.idempotency_window",
							"How long an idempotency key is remembered.",
							NULL,
							&counter_idempotency_window,
							86400, 1, INT_MAX,
							PGC_SIGHUP,
							GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomIntVariable("counter.notify_interval",
							"Shortest time between two change-feed notifications of the worker.",
							NULL,
							&counter_notify_interval,
							1000, 10, 3600 * 1000,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomRealVariable("counter.feed_queue_limit",
							 "Fraction of the NOTIFY queue above which compaction drops its change feed.",
							 "A full queue would fail the compaction at commit; the dropped entries are counted in counter.stats.",
							 &counter_feed_queue_limit,
							 0.5, 0.0, 1.0,
							 PGC_SIGHUP,
							 0,
							 NULL, NULL, NULL);

	/* sizes shared memory: exists only when the library is preloaded */
	if (process_shared_preload_libraries_in_progress)
		DefineCustomIntVariable("counter.buffered_keys",
								"Keys that buffered-mode counters can hold in shared memory.",
								"When they are all taken, buffered adds of new keys are stored as events; -1 sizes the hash from shared_buffers.",
								&counter_buffered_keys,
								-1, -1, 10000000,
								PGC_POSTMASTER,
								0,
								check_buffered_keys, NULL, NULL);

	DefineCustomIntVariable("counter.flush_interval",
							"Time between flushes of buffered adds, checked at each compaction round: the loss window on a crash is the larger of this and counter.naptime.",
							NULL,
							&counter_flush_interval,
							1000, 10, 3600 * 1000,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("counter.rotate_size",
							"Size of the current events table from which compaction switches adds to the other table and folds the full one whole, instead of deleting its rows one by one.",
							"0 rotates at every compaction that finds events; -1 never rotates.",
							&counter_rotate_size,
							1024, -1, INT_MAX,
							PGC_SIGHUP,
							GUC_UNIT_KB,
							NULL, NULL, NULL);

	DefineCustomStringVariable("counter.node_conninfo",
							   "Connection string by which the other nodes of a mesh reach this node's database (counter.add_node).",
							   NULL,
							   &counter_node_conninfo,
							   "",
							   PGC_SIGHUP,
							   GUC_SUPERUSER_ONLY,
							   NULL, NULL, NULL);

	MarkGUCPrefixReserved("counter");
}
