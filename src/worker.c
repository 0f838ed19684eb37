/*-------------------------------------------------------------------------
 *
 * worker.c
 *	  The background launcher and the per-database compaction workers.
 *
 * One launcher, registered at preload, connects to no database.  It starts
 * one dynamic worker per connectable, non-template database; a worker whose
 * database lacks the extension says so in shared memory and exits, and is
 * started again when CREATE EXTENSION wakes the launcher (the install
 * script calls counter._wake_launcher()) or at the launcher's rescan every
 * minute.  DROP DATABASE and ALTER DATABASE RENAME stop the database's
 * worker first (a utility hook), since they need it gone.  A worker that stops for any other
 * reason (crash, pg_terminate_backend) is started again by the launcher,
 * which the postmaster notifies of every exit, after RESTART_DELAY_MS: no
 * crash loop faster than that.  A worker exits by itself once DROP EXTENSION
 * has removed the extension from its database.
 *
 * Both use the core signal handlers (SIGHUP reloads the configuration) and
 * WaitLatch with WL_EXIT_ON_PM_DEATH, so they never outlive the postmaster.
 * Neither starts during binary upgrade.  SIGTERM ends the launcher at once
 * (die).  A worker only notes it (SignalHandlerForShutdownRequest) and
 * leaves between two compaction transactions: at once when CounterWorkerStop()
 * asked (its database is being dropped or renamed; buffered entries are
 * kept by database oid, so a renamed database's worker flushes them later),
 * else (a smart or fast shutdown, or pg_terminate_backend) after a final
 * flush of buffered and wal adds, so that a clean shutdown loses none.  In a
 * fast shutdown every backend is signalled at once, and one that has
 * written its commit record applies its buffered adds at commit,
 * uninterruptibly, before it can exit; so the worker flushes, waits while
 * other backends of its database are still leaving, and flushes again once
 * they are gone.  In a smart shutdown the clients are gone already.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_database.h"
#include "catalog/pg_extension.h"
#include "commands/dbcommands.h"
#include "commands/extension.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lmgr.h"
#include "storage/proc.h"
#include "storage/procarray.h"
#include "tcop/tcopprot.h"
#include "tcop/utility.h"
#include "utils/backend_status.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "worker.h"
#include "compact.h"
#include "events.h"
#include "feed.h"
#include "guc.h"
#include "shmem.h"
#include "rights.h"
#include "walreplay.h"

PG_FUNCTION_INFO_V1(counter_worker_status);
PG_FUNCTION_INFO_V1(counter_wake_launcher);

#define LAUNCHER_NAPTIME_MS		1000
#define RESTART_DELAY_MS		1000
#define RESCAN_INTERVAL_MS		(60 * 1000)
#define MAINTENANCE_INTERVAL_MS	(10 * 1000)

/*
 * At a worker's stop, how long it waits for the other backends of its
 * database to leave before its last flush: at most SHUTDOWN_WAIT_MS in all
 * (a backend that has committed applies its adds within milliseconds; this
 * bounds a shutdown whose backends hang, well within pg_ctl's 60 s), and
 * no longer once none has left for SHUTDOWN_STALL_MS (they are not shutting
 * down: pg_terminate_backend of the worker alone).
 */
#define SHUTDOWN_WAIT_MS		5000
#define SHUTDOWN_STALL_MS		1000
#define SHUTDOWN_POLL_MS		10

/*
 * Stop the worker of a database for good (until the launcher's next
 * rescan): DROP DATABASE and ALTER DATABASE RENAME refuse to run while any
 * session, our worker included, is connected, and wait a few seconds for
 * sessions to leave.
 */
void
CounterWorkerStop(Oid dboid)
{
	CounterDbWorker *w;
	pid_t		pid = 0;

	if (!OidIsValid(dboid))
		return;
	LWLockAcquire(counter_shared->lock, LW_EXCLUSIVE);
	w = CounterWorkerEntry(dboid, false);
	if (w != NULL)
	{
		w->wanted = false;
		pid = w->pid;
	}
	LWLockRelease(counter_shared->lock);
	if (pid != 0)
		kill(pid, SIGTERM);
}

/* Register the launcher; called from _PG_init when preloaded. */
void
CounterWorkerRegister(void)
{
	BackgroundWorker bgw;

	memset(&bgw, 0, sizeof(bgw));
	bgw.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	bgw.bgw_start_time = BgWorkerStart_RecoveryFinished;
	bgw.bgw_restart_time = 5;
	strlcpy(bgw.bgw_library_name, "counter", BGW_MAXLEN);
	strlcpy(bgw.bgw_function_name, "counter_launcher_main", BGW_MAXLEN);
	strlcpy(bgw.bgw_name, "counter launcher", BGW_MAXLEN);
	strlcpy(bgw.bgw_type, "counter launcher", BGW_MAXLEN);
	RegisterBackgroundWorker(&bgw);
}

/* Claim a status entry for every connectable, non-template database. */
static void
launcher_scan_databases(bool rescan)
{
	Relation	rel;
	TableScanDesc scan;
	HeapTuple	tup;
	Oid			seen[COUNTER_MAX_DATABASES];
	int			nseen = 0;
	Oid		   *exist;
	int			nexist = 0;
	int			maxexist = 64;
	int			i;

	StartTransactionCommand();
	exist = palloc(sizeof(Oid) * maxexist);
	PushActiveSnapshot(GetTransactionSnapshot());
	rel = table_open(DatabaseRelationId, AccessShareLock);
	scan = table_beginscan_catalog(rel, 0, NULL);
	LWLockAcquire(counter_shared->lock, LW_EXCLUSIVE);
	while (HeapTupleIsValid(tup = heap_getnext(scan, ForwardScanDirection)))
	{
		Form_pg_database db = (Form_pg_database) GETSTRUCT(tup);
		CounterDbWorker *w;

		if (nexist == maxexist)
		{
			maxexist *= 2;
			exist = repalloc(exist, sizeof(Oid) * maxexist);
		}
		exist[nexist++] = db->oid;
		if (!db->datallowconn || db->datistemplate || database_is_invalid_form(db))
			continue;
		w = CounterWorkerEntry(db->oid, true);
		if (w == NULL)
		{
			ereport(LOG,
					(errmsg("counter launcher: more than %d databases, some get no worker",
							COUNTER_MAX_DATABASES)));
			continue;
		}
		if (rescan)
			w->wanted = true;
		if (nseen < COUNTER_MAX_DATABASES)
			seen[nseen++] = db->oid;
	}
	/*
	 * Forget the workers of databases that get none (dropped, or no longer
	 * connectable), and free the entries of dropped databases.
	 */
	for (i = 0; i < COUNTER_MAX_DATABASES; i++)
	{
		CounterDb  *d = &counter_shared->dbs[i];
		CounterDbWorker *w = &d->worker;
		int			j;
		bool		found = false;

		for (j = 0; j < nseen && !found; j++)
			found = (seen[j] == w->dboid);
		if (OidIsValid(w->dboid) && !found && w->pid == 0)
			memset(w, 0, sizeof(CounterDbWorker));
		found = false;
		for (j = 0; j < nexist && !found; j++)
			found = (exist[j] == d->dboid);
		if (OidIsValid(d->dboid) && !found && w->pid == 0)
			CounterDbFree(d);
	}
	counter_shared->rescan = false;
	LWLockRelease(counter_shared->lock);
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	PopActiveSnapshot();
	CommitTransactionCommand();
}

/* Start the worker of one database; its exit will set our latch. */
static BackgroundWorkerHandle *
launcher_start_worker(Oid dboid)
{
	BackgroundWorker bgw;
	BackgroundWorkerHandle *handle;

	memset(&bgw, 0, sizeof(bgw));
	bgw.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	bgw.bgw_start_time = BgWorkerStart_RecoveryFinished;
	bgw.bgw_restart_time = BGW_NEVER_RESTART;
	strlcpy(bgw.bgw_library_name, "counter", BGW_MAXLEN);
	strlcpy(bgw.bgw_function_name, "counter_worker_main", BGW_MAXLEN);
	snprintf(bgw.bgw_name, BGW_MAXLEN, "counter worker for database %u", dboid);
	strlcpy(bgw.bgw_type, "counter worker", BGW_MAXLEN);
	bgw.bgw_main_arg = ObjectIdGetDatum(dboid);
	bgw.bgw_notify_pid = MyProcPid;
	if (!RegisterDynamicBackgroundWorker(&bgw, &handle))
	{
		ereport(LOG,
				(errmsg("counter launcher: could not start a worker for database %u", dboid),
				 errhint("Raise max_worker_processes.")));
		return NULL;
	}
	return handle;
}

/*
 * Start of both kinds of process: core signal handlers (SIGHUP reloads the
 * configuration, SIGTERM runs on_term), and nothing to do during a binary
 * upgrade.
 */
static void
process_start(pqsigfunc on_term)
{
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, on_term);
	BackgroundWorkerUnblockSignals();

	if (IsBinaryUpgrade)
		proc_exit(0);
}

/* Entry point of the launcher. */
void
counter_launcher_main(Datum arg)
{
	BackgroundWorkerHandle *handles[COUNTER_MAX_DATABASES];
	TimestampTz started[COUNTER_MAX_DATABASES];
	TimestampTz last_scan = 0;
	int			d;

	process_start(die);
	BackgroundWorkerInitializeConnection(NULL, NULL, 0);
	pgstat_report_appname("counter launcher");
	memset(handles, 0, sizeof(handles));
	memset(started, 0, sizeof(started));

	LWLockAcquire(counter_shared->lock, LW_EXCLUSIVE);
	counter_shared->launcher_pid = MyProcPid;
	counter_shared->launcher_latch = MyLatch;
	/* after a crash restart nothing of the old workers survives */
	for (d = 0; d < COUNTER_MAX_DATABASES; d++)
		memset(&counter_shared->dbs[d].worker, 0, sizeof(CounterDbWorker));
	LWLockRelease(counter_shared->lock);

	for (;;)
	{
		TimestampTz now = GetCurrentTimestamp();
		int			i;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}

		/* the periodic rescan also revives workers stopped for a failed DROP */
		if (counter_shared->rescan || last_scan == 0 ||
			TimestampDifferenceExceeds(last_scan, now, RESCAN_INTERVAL_MS))
		{
			launcher_scan_databases(true);
			last_scan = now;
		}

		for (i = 0; i < COUNTER_MAX_DATABASES; i++)
		{
			CounterDbWorker *w = &counter_shared->dbs[i].worker;
			pid_t		pid;
			Oid			dboid;
			bool		wanted;

			LWLockAcquire(counter_shared->lock, LW_SHARED);
			dboid = w->dboid;
			wanted = w->wanted;
			LWLockRelease(counter_shared->lock);

			if (handles[i] != NULL &&
				GetBackgroundWorkerPid(handles[i], &pid) != BGWH_STOPPED)
				continue;
			if (handles[i] != NULL)
			{
				pfree(handles[i]);
				handles[i] = NULL;
				LWLockAcquire(counter_shared->lock, LW_EXCLUSIVE);
				w->pid = 0;
				LWLockRelease(counter_shared->lock);
			}
			if (!OidIsValid(dboid) || !wanted || !counter_worker_enabled)
				continue;
			if (!TimestampDifferenceExceeds(started[i], now, RESTART_DELAY_MS))
				continue;
			handles[i] = launcher_start_worker(dboid);
			started[i] = now;
		}

		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 LAUNCHER_NAPTIME_MS, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}

/*
 * Leave for good: this database has no extension (any more), nor needs its
 * wal-mode slot.
 */
static void
worker_not_wanted(CounterDbWorker *w)
{
	CounterWalDisarm(MyDatabaseId, false);
	LWLockAcquire(counter_shared->lock, LW_EXCLUSIVE);
	w->wanted = false;
	w->pid = 0;
	LWLockRelease(counter_shared->lock);
	proc_exit(0);
}

/*
 * Whether the extension is installed in our database; call in a
 * transaction, which then holds the extension's object lock in share mode
 * to its end.  DROP EXTENSION takes that lock first, before any of the
 * extension's tables, so it waits for the worker's transaction instead of
 * deadlocking with it on the tables the worker holds.
 */
static bool
extension_installed(void)
{
	Oid			ext = get_extension_oid("counter", true);

	if (!OidIsValid(ext))
		return false;
	LockDatabaseObject(ExtensionRelationId, ext, 0, AccessShareLock);
	/* dropped while we waited: the lock took in the invalidations */
	return get_extension_oid("counter", true) == ext;
}

/* Leave for good once the extension is not installed in our database. */
static void
leave_if_not_installed(CounterDbWorker *w)
{
	bool		installed;

	StartTransactionCommand();
	installed = extension_installed();
	CommitTransactionCommand();
	if (!installed)
		worker_not_wanted(w);
}

/*
 * One compaction transaction, after wal mode's part of the round (the
 * replay after a restart, arming, advancing the slot), flushing buffered
 * adds when flush and sending the change feed when notify.  With retained
 * (NULL: none), the round's maintenance too: *retained is the start of the
 * last maintenance transaction that committed (0 at first), which
 * retention goes on from, and becomes this one's once it commits.  Returns
 * true when a batch was full, i.e. more work is waiting.  Errors are
 * reported and the transaction rolled back; the worker carries on at its
 * next round.
 */
static bool
worker_compact_once(CounterDbWorker *w, TimestampTz *retained, bool flush, bool notify)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	bool		full = false;
	bool		armed;
	bool		installed = true;
	CounterMoved moved = {0, 0, 0};
	TimestampTz start = GetCurrentTimestamp();
	volatile TimestampTz xact_start = 0;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, "counter: compacting");

	if (!extension_installed())
	{
		PopActiveSnapshot();
		CommitTransactionCommand();
		worker_not_wanted(w);
	}

	PG_TRY();
	{
		SPI_connect();
		armed = CounterWalRound(true);
		SPI_finish();
		if (CounterCompactLock(false) && CounterEventsTruncate())
		{
			/* adds may write the emptied table once this has committed */
			PopActiveSnapshot();
			CommitTransactionCommand();
			StartTransactionCommand();
			PushActiveSnapshot(GetTransactionSnapshot());
			installed = extension_installed();
		}
		if (installed && CounterCompactLock(false))
		{
			xact_start = GetCurrentTransactionStartTimestamp();
			full = CounterCompactBatch(0, retained != NULL,
									   retained != NULL ? *retained : 0,
									   flush, true, &moved);
		}
		if (installed && notify)
		{
			SPI_connect();
			CounterFeedFlush();
			SPI_finish();
		}
		PopActiveSnapshot();
		CommitTransactionCommand();
		CounterWalRoundDone(armed);
		if (retained != NULL && xact_start != 0)
			*retained = xact_start;
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(oldcxt);
		EmitErrorReport();
		FlushErrorState();
		AbortCurrentTransaction();
		full = false;
		memset(&moved, 0, sizeof(moved));
	}
	PG_END_TRY();

	pgstat_report_stat(false);
	pgstat_report_activity(STATE_IDLE, NULL);

	if (moved.events + moved.slot_rows + moved.buffered_keys > 0)
	{
		TimestampTz end = GetCurrentTimestamp();
		double		secs = (double) (end - start) / 1000000.0;

		LWLockAcquire(counter_shared->lock, LW_EXCLUSIVE);
		w->last_compaction = end;
		w->compactions++;
		w->events_compacted += moved.events;
		w->slots_collected += moved.slot_rows;
		w->last_batch = moved.events;
		w->last_rate = secs > 0 ? moved.events / secs : 0;
		LWLockRelease(counter_shared->lock);
	}
	return full;
}

/*
 * The rights round of a bounded counter's escrow in a mesh (rights.c), in
 * its own transaction: an error is reported and the next round tries again.
 */
static void
worker_rights(void)
{
	MemoryContext oldcxt = CurrentMemoryContext;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, "counter: moving rights");
	PG_TRY();
	{
		if (extension_installed())
		{
			SPI_connect();
			(void) CounterRightsRound();
			SPI_finish();
		}
		PopActiveSnapshot();
		CommitTransactionCommand();
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(oldcxt);
		EmitErrorReport();
		FlushErrorState();
		AbortCurrentTransaction();
	}
	PG_END_TRY();
	pgstat_report_stat(false);
	pgstat_report_activity(STATE_IDLE, NULL);
}

/*
 * Compaction transactions until no batch is full; flush with the first, and
 * maintenance with it when retained is given (worker_compact_once).
 */
static void
worker_compact(CounterDbWorker *w, TimestampTz *retained, bool flush, bool notify)
{
	while (worker_compact_once(w, retained, flush, notify) && !ShutdownRequestPending)
	{
		CHECK_FOR_INTERRUPTS();
		retained = NULL;
		flush = notify = false;
	}
}

/*
 * The pids of the other backends of this database now (not this worker), in
 * *pids; returns how many.
 */
static int
database_backends(pid_t **pids)
{
	int			n = 0;
	int			i;
	int			nbe;

	pgstat_clear_backend_activity_snapshot();
	nbe = pgstat_fetch_stat_numbackends();
	*pids = palloc(sizeof(pid_t) * Max(nbe, 1));
	for (i = 1; i <= nbe; i++)
	{
		PgBackendStatus *be = &pgstat_fetch_stat_local_beentry(i)->backendStatus;

		if (be->st_databaseid == MyDatabaseId && be->st_procpid != MyProcPid &&
			be->st_procpid != 0)
			(*pids)[n++] = be->st_procpid;
	}
	pgstat_clear_backend_activity_snapshot();
	return n;
}

/*
 * SIGTERM came (see the file header): leave at once if CounterWorkerStop() asked
 * or the worker is disabled (then nothing flushes, as documented); else
 * flush, wait while the backends of the database connected at that moment
 * are leaving (the limits above; a backend connected later cannot be of a
 * fast shutdown, which admits none), flush again, and leave.  A backend
 * leaves the proc array only after its commit has applied its adds.
 */
static void
worker_stop(CounterDbWorker *w)
{
	TimestampTz start = GetCurrentTimestamp();
	TimestampTz last_left = start;
	pid_t	   *pids;
	int			others;
	bool		wanted;

	LWLockAcquire(counter_shared->lock, LW_SHARED);
	wanted = (w->wanted && w->dboid == MyDatabaseId && w->pid == MyProcPid);
	LWLockRelease(counter_shared->lock);
	if (!wanted || !counter_worker_enabled)
		proc_exit(0);

	worker_compact(w, NULL, true, false);
	others = database_backends(&pids);
	if (others == 0)
		proc_exit(0);
	for (;;)
	{
		TimestampTz now;
		int			left = 0;
		int			i;

		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 SHUTDOWN_POLL_MS, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		now = GetCurrentTimestamp();
		for (i = 0; i < others; i++)
			if (BackendPidGetProc(pids[i]) != NULL)
				pids[left++] = pids[i];
		if (left < others)
			last_left = now;
		others = left;
		if (others == 0 || TimestampDifferenceExceeds(last_left, now, SHUTDOWN_STALL_MS))
			break;
		if (TimestampDifferenceExceeds(start, now, SHUTDOWN_WAIT_MS))
		{
			ereport(LOG,
					(errmsg("counter worker: leaving while %d other backends of the database are still connected",
							others),
					 errdetail("Buffered adds they commit from now on are not flushed before the worker exits.")));
			break;
		}
	}
	worker_compact(w, NULL, true, false);
	proc_exit(0);
}

/* Entry point of a database's worker. */
void
counter_worker_main(Datum arg)
{
	Oid			dboid = DatumGetObjectId(arg);
	CounterDbWorker *w;
	TimestampTz last_maintenance = 0;
	TimestampTz retained = 0;
	TimestampTz last_notify = 0;
	TimestampTz last_flush = 0;

	process_start(SignalHandlerForShutdownRequest);
	BackgroundWorkerInitializeConnectionByOid(dboid, InvalidOid, 0);
	pgstat_report_appname("counter worker");

	LWLockAcquire(counter_shared->lock, LW_EXCLUSIVE);
	w = CounterWorkerEntry(dboid, true);
	if (w != NULL)
	{
		w->pid = MyProcPid;
		w->started = GetCurrentTimestamp();
	}
	LWLockRelease(counter_shared->lock);
	if (w == NULL)
		proc_exit(0);

	leave_if_not_installed(w);

	for (;;)
	{
		bool		mine;

		CHECK_FOR_INTERRUPTS();
		if (ShutdownRequestPending)
			worker_stop(w);
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}

		/* a restarted launcher may have handed our database to a new worker */
		LWLockAcquire(counter_shared->lock, LW_SHARED);
		mine = (w->dboid == dboid && w->pid == MyProcPid);
		LWLockRelease(counter_shared->lock);
		if (!mine)
			proc_exit(0);

		if (counter_worker_enabled)
		{
			TimestampTz now = GetCurrentTimestamp();
			bool		maintenance = TimestampDifferenceExceeds(last_maintenance, now,
																 MAINTENANCE_INTERVAL_MS);
			bool		notify = TimestampDifferenceExceeds(last_notify, now,
															counter_notify_interval);
			bool		flush = TimestampDifferenceExceeds(last_flush, now,
														   counter_flush_interval);

			if (maintenance)
				last_maintenance = now;
			if (notify)
				last_notify = now;
			if (flush)
				last_flush = now;
			worker_compact(w, maintenance ? &retained : NULL, flush, notify);
			worker_rights();
		}
		else
			leave_if_not_installed(w);	/* a dropped extension's slot must go */

		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 counter_naptime, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}

/* Wake the launcher so that this database gets its worker now. */
static void
wake_launcher(void)
{
	CounterDbWorker *w;

	if (counter_shared == NULL)
		return;
	LWLockAcquire(counter_shared->lock, LW_EXCLUSIVE);
	w = CounterWorkerEntry(MyDatabaseId, true);
	if (w != NULL)
		w->wanted = true;
	counter_shared->rescan = true;
	LWLockRelease(counter_shared->lock);
	if (counter_shared->launcher_latch != NULL)
		SetLatch(counter_shared->launcher_latch);
}

static bool wake_at_commit = false;

/* Transaction callback: wake the launcher once CREATE EXTENSION committed. */
static void
wake_xact_callback(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_COMMIT && wake_at_commit)
		wake_launcher();
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT)
		wake_at_commit = false;
}

/*
 * counter._wake_launcher(): called by CREATE EXTENSION.  The launcher is
 * woken at commit: a worker started earlier would not see the extension yet.
 * Without the preload, a WARNING (CREATE EXTENSION hides notices of its
 * script) says that nothing compacts in the background.
 */
Datum
counter_wake_launcher(PG_FUNCTION_ARGS)
{
	static bool registered = false;

	if (counter_shared == NULL)
	{
		ereport(WARNING,
				(errmsg("the counter background worker is not running"),
				 errdetail("Slots mode works fully; events are compacted only by counter.compact()."),
				 errhint("Add counter to shared_preload_libraries and restart the server.")));
		PG_RETURN_VOID();
	}
	if (!registered)
	{
		RegisterXactCallback(wake_xact_callback, NULL);
		registered = true;
	}
	wake_at_commit = true;
	PG_RETURN_VOID();
}

/* counter.worker_status(): one row per database worker. */
Datum
counter_worker_status(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	CounterDbWorker copy[COUNTER_MAX_DATABASES];
	int			i;

	InitMaterializedSRF(fcinfo, 0);
	if (counter_shared == NULL)
		return (Datum) 0;

	LWLockAcquire(counter_shared->lock, LW_SHARED);
	for (i = 0; i < COUNTER_MAX_DATABASES; i++)
		copy[i] = counter_shared->dbs[i].worker;
	LWLockRelease(counter_shared->lock);

	for (i = 0; i < COUNTER_MAX_DATABASES; i++)
	{
		Datum		values[9];
		bool		nulls[9];
		char	   *dbname;
		CounterDbWorker *w = &copy[i];

		if (!OidIsValid(w->dboid) || w->pid == 0)
			continue;
		dbname = get_database_name(w->dboid);
		if (dbname == NULL)
			continue;
		memset(nulls, false, sizeof(nulls));
		values[0] = CStringGetDatum(dbname);
		values[0] = DirectFunctionCall1(namein, values[0]);
		values[1] = Int32GetDatum(w->pid);
		values[2] = TimestampTzGetDatum(w->started);
		values[3] = TimestampTzGetDatum(w->last_compaction);
		nulls[3] = (w->last_compaction == 0);
		values[4] = Int64GetDatum(w->compactions);
		values[5] = Int64GetDatum(w->events_compacted);
		values[6] = Int64GetDatum(w->slots_collected);
		values[7] = Int64GetDatum(w->last_batch);
		values[8] = Float8GetDatum(w->last_rate);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}
