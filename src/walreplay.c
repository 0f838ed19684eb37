/*-------------------------------------------------------------------------
 *
 * walreplay.c
 *	  Wal mode in the worker (see wal.c for the design): at each round,
 *	  the replay after a restart or a promotion, and arming the database:
 *	  its physical replication slot counter_wal_<oid>, created, advanced to
 *	  start_lsn and dropped with the extension or the database.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/timeline.h"
#include "access/transam.h"
#include "access/xlog.h"
#include "access/xlog_internal.h"
#include "access/xlogreader.h"
#include "access/xlogutils.h"
#include "catalog/pg_type.h"
#include "miscadmin.h"
#include "replication/message.h"
#include "replication/slot.h"
#include "storage/procarray.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/pg_lsn.h"

#include "walreplay.h"
#include "buffer.h"
#include "catalog.h"
#include "legacy.h"
#include "shmem.h"
#include "wal.h"

/* The name of this database's replication slot. */
static char *
repl_slot_name(Oid dboid)
{
	return psprintf("counter_wal_%u", dboid);
}

/* a counter that exists, as the replay keeps its adds */
typedef struct LiveCounter
{
	int32		id;
	TimestampTz created;
} LiveCounter;

static CounterStmt state_stmt = {
	"SELECT start_lsn, seqs FROM counter.wal_state", 0, {0}
};

static CounterStmt live_stmt = {
	"SELECT id, created FROM counter.counters", 0, {0}
};

/* Whether (id, created) is among the n counters of live. */
static bool
counter_alive(LiveCounter *live, int n, int32 id, TimestampTz created)
{
	int			i;

	for (i = 0; i < n; i++)
		if (live[i].id == id && live[i].created == created)
			return true;
	return false;
}

/* the adds the replay collects */
typedef struct Replayed
{
	CounterWalAdd *adds;
	int			n;
	int			max;
} Replayed;

/*
 * Collect the adds of one message, unless its transaction did not commit,
 * the flush covered it (seqs), or its counter is gone.  Returns the
 * message's sequence number (0 when skipped).  Messages of other databases
 * or prefixes are skipped; one of our prefix but not of our format (written
 * by someone else) too, with a warning: WAL records are checksummed, so
 * ours are never torn.
 */
static uint64
replay_message(XLogReaderState *reader, int64 *seqs, int nseqs,
			   LiveCounter *live, int nlive, Replayed *out)
{
	xl_logical_message *m = (xl_logical_message *) XLogRecGetData(reader);
	TransactionId xid = XLogRecGetXid(reader);
	const char *p;
	const char *end;
	WalHeader	h;

	if (!m->transactional || m->dbId != MyDatabaseId ||
		m->prefix_size != sizeof(WAL_PREFIX) ||
		strcmp(m->message, WAL_PREFIX) != 0 || m->message_size < sizeof(WalHeader))
		return 0;
	p = m->message + m->prefix_size;
	end = p + m->message_size;
	memcpy(&h, p, sizeof(h));
	p += sizeof(h);
	if (h.format != WAL_FORMAT)
	{
		ereport(WARNING,
				(errmsg("counter: skipping a message with prefix \"%s\" at %X/%X of unknown format %u",
						WAL_PREFIX, LSN_FORMAT_ARGS(reader->ReadRecPtr), h.format)));
		return 0;
	}
	if (h.backend >= 0 && h.backend < nseqs && h.seq <= (uint64) seqs[h.backend])
		return 0;
	if (TransactionIdIsInProgress(xid))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("transaction %u of a wal-mode record is still in progress", xid)));
	if (!TransactionIdDidCommit(xid))
		return 0;

	while (p + sizeof(WalAdd) <= end)
	{
		WalAdd		a;

		memcpy(&a, p, sizeof(a));
		p += sizeof(a);
		if (a.keylen < 0 || a.keylen > end - p)
		{
			ereport(WARNING,
					(errmsg("counter: skipping the rest of a message with prefix \"%s\" at %X/%X: it is not of our format",
							WAL_PREFIX, LSN_FORMAT_ARGS(reader->ReadRecPtr))));
			break;
		}
		if (counter_alive(live, nlive, a.counter_id, a.created))
		{
			if (out->n == out->max)
			{
				out->max *= 2;
				out->adds = repalloc(out->adds, sizeof(CounterWalAdd) * out->max);
			}
			out->adds[out->n].counter_id = a.counter_id;
			out->adds[out->n].created = a.created;
			out->adds[out->n].key = cstring_to_text_with_len(p, a.keylen);
			out->adds[out->n].delta = a.delta;
			out->n++;
		}
		p += a.keylen;
	}
	return h.seq;
}

/*
 * The replay, in the worker's transaction (SPI connected): collect the adds
 * of committed wal-mode messages that no flush took, from start_lsn to the
 * end of the WAL, and put them back into shared memory (buffer.c), where
 * the next flush takes them and moves start_lsn past their messages; until
 * then a new crash replays them again.  Runs while the database is not
 * ready, so no add writes a message meanwhile.
 */
static void
replay(void)
{
	bool		isnull;
	Datum		d;
	XLogRecPtr	start;
	int64	   *seqs = NULL;
	int			nseqs = 0;
	LiveCounter *live;
	int			nlive;
	uint64		i;
	uint64		maxseq = 0;
	Replayed	out;
	XLogReaderState *reader;
	ReadLocalXLogPageNoWaitPrivate *priv;

	if (CounterLegacyLacks(LEGACY_WAL_STATE))
		return;
	CounterExec(&state_stmt, NULL, NULL, true);
	if (SPI_processed != 1)
		return;
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	if (isnull)
		return;
	start = DatumGetLSN(d);
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);
	if (!isnull)
	{
		Datum	   *elems;
		bool	   *nulls;

		deconstruct_array(DatumGetArrayTypeP(d), INT8OID, 8, FLOAT8PASSBYVAL,
						  TYPALIGN_DOUBLE, &elems, &nulls, &nseqs);
		seqs = palloc(sizeof(int64) * Max(nseqs, 1));
		for (i = 0; i < nseqs; i++)
			seqs[i] = nulls[i] ? 0 : DatumGetInt64(elems[i]);
	}

	CounterExec(&live_stmt, NULL, NULL, true);
	nlive = SPI_processed;
	live = palloc(sizeof(LiveCounter) * Max(nlive, 1));
	for (i = 0; i < nlive; i++)
	{
		live[i].id = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[i],
												 SPI_tuptable->tupdesc, 1, &isnull));
		live[i].created = DatumGetTimestampTz(SPI_getbinval(SPI_tuptable->vals[i],
															SPI_tuptable->tupdesc, 2, &isnull));
	}

	out.n = 0;
	out.max = 64;
	out.adds = palloc(sizeof(CounterWalAdd) * out.max);
	priv = palloc0(sizeof(ReadLocalXLogPageNoWaitPrivate));
	reader = XLogReaderAllocate(wal_segment_size, NULL,
								XL_ROUTINE(.page_read = &read_local_xlog_page_no_wait,
										   .segment_open = &wal_segment_open,
										   .segment_close = &wal_segment_close),
								priv);
	if (reader == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory"),
				 errdetail("Failed while allocating a WAL reading processor.")));
	if (XLogFindNextRecord(reader, start) != InvalidXLogRecPtr)
	{
		for (;;)
		{
			char	   *errormsg;
			uint64		seq;

			if (XLogReadRecord(reader, &errormsg) == NULL)
			{
				if (priv->end_of_wal)
					break;
				ereport(ERROR,
						(errcode_for_file_access(),
						 errmsg("could not read WAL at %X/%X: %s",
								LSN_FORMAT_ARGS(reader->EndRecPtr),
								errormsg ? errormsg : "no record")));
			}
			CHECK_FOR_INTERRUPTS();
			if (XLogRecGetRmid(reader) != RM_LOGICALMSG_ID ||
				(XLogRecGetInfo(reader) & ~XLR_INFO_MASK) != XLOG_LOGICAL_MESSAGE)
				continue;
			seq = replay_message(reader, seqs, nseqs, live, nlive, &out);
			maxseq = Max(maxseq, seq);
		}
	}
	XLogReaderFree(reader);
	pfree(priv);

	/* numbers handed out from now on are above every number read */
	for (i = 0; i < nseqs; i++)
		maxseq = Max(maxseq, (uint64) seqs[i]);
	CounterWalRaiseSeq(maxseq);

	CounterBufferReplay(out.adds, out.n);
	if (out.n > 0)
		ereport(LOG,
				(errmsg("counter: replayed %d wal-mode adds not flushed before the restart",
						out.n)));
}

static CounterStmt has_wal_stmt = {
	"SELECT 1 FROM counter.counters WHERE mode = 'wal' LIMIT 1", 0, {0}
};

static CounterStmt create_slot_stmt = {
	"SELECT pg_catalog.pg_create_physical_replication_slot($1, true)", 1, {TEXTOID}
};

static CounterStmt arm_stmt = {
	"UPDATE counter.wal_state SET start_lsn = (SELECT r.restart_lsn"
	"                                            FROM pg_catalog.pg_replication_slots r"
	"                                           WHERE r.slot_name = $1)"
	" WHERE start_lsn IS NULL",
	1, {TEXTOID}
};

static CounterStmt advance_stmt = {
	"SELECT pg_catalog.pg_replication_slot_advance($1, w.start_lsn)"
	"  FROM counter.wal_state w, pg_catalog.pg_replication_slots r"
	" WHERE r.slot_name = $1 AND r.restart_lsn < w.start_lsn",
	1, {TEXTOID}
};

/*
 * Set by the worker's first round after a restart or a promotion, before
 * its replay (which may move start_lsn when the WAL is gone): the
 * replication slot is
 * not on this node because it never was (see recorded_elsewhere).
 */
static bool repl_slot_elsewhere = false;

/*
 * Whether the replay position in counter.wal_state (SPI connected) lies
 * before the start of this node's timeline: it was recorded on the node
 * this one was a standby of until promoted (or before a point-in-time
 * recovery), and the slot that kept it stayed there.  timeline_out gets
 * this node's timeline.
 */
static bool
recorded_elsewhere(TimeLineID *timeline_out)
{
	TimeLineID	tli = GetWALInsertionTimeLine();
	List	   *history = readTimeLineHistory(tli);
	XLogRecPtr	begin = ((TimeLineHistoryEntry *) linitial(history))->begin;
	bool		isnull;
	Datum		d;

	list_free_deep(history);
	if (timeline_out != NULL)
		*timeline_out = tli;
	CounterExec(&state_stmt, NULL, NULL, true);
	if (SPI_processed != 1)
		return false;
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	return !isnull && DatumGetLSN(d) < begin;
}

/*
 * Arm the database (SPI connected) when it has a wal-mode counter and is
 * not armed yet: create its slot, start the replay position at the slot's.
 * An armed database's slot is advanced to start_lsn instead, and made again
 * if missing: quietly after a promotion, with a warning when it was dropped
 * by hand.  Returns whether the database is armed once this transaction
 * commits.
 */
static bool
arm(bool may_arm)
{
	char	   *name = repl_slot_name(MyDatabaseId);
	Datum		arg = CStringGetTextDatum(name);

	if (CounterWalDatabaseArmed())
	{
		TimeLineID	tli;

		if (SearchNamedReplicationSlot(name, true) == NULL)
		{
			if (recorded_elsewhere(&tli) || repl_slot_elsewhere)
				ereport(LOG,
						(errmsg("counter: creating replication slot \"%s\" on this promoted node", name),
						 errdetail("The slot stayed on the node where the last flush was recorded, before timeline %u of this node began.",
								   tli)));
			else
				ereport(WARNING,
						(errmsg("replication slot \"%s\" of the counter extension was dropped", name),
						 errdetail("Wal-mode adds not flushed when the WAL they are in was removed cannot be replayed after a crash."),
						 errhint("Leave the slot to the extension: it creates, advances and drops it.")));
			CounterExec(&create_slot_stmt, &arg, NULL, false);
		}
		repl_slot_elsewhere = false;
		CounterExec(&advance_stmt, &arg, NULL, false);
		return true;
	}
	if (!may_arm)
		return false;
	CounterExec(&has_wal_stmt, NULL, NULL, true);
	if (SPI_processed == 0)
		return false;
	if (SearchNamedReplicationSlot(name, true) == NULL)
		CounterExec(&create_slot_stmt, &arg, NULL, false);
	CounterExec(&arm_stmt, &arg, NULL, false);
	return true;
}

/* arm()'s arguments and result, through CounterInSubxact */
typedef struct ArmCall
{
	bool		may_arm;
	bool		armed;
} ArmCall;

/* CounterInSubxact callback: arm(). */
static void
arm_call(void *arg)
{
	ArmCall    *call = arg;

	call->armed = arm(call->may_arm);
}

/* CounterInSubxact callback: replay(). */
static void
replay_call(void *arg)
{
	replay();
}

static CounterStmt skip_stmt = {
	"UPDATE counter.wal_state SET start_lsn = pg_catalog.pg_current_wal_insert_lsn()"
	" WHERE start_lsn IS NOT NULL",
	0, {0}
};

/*
 * replay(), where the WAL it needs may be gone (the slot was dropped, or
 * this server was a standby until promoted): then nothing can be replayed;
 * say so and start from the current position.  Other errors fail the
 * round, which tries again.
 */
static void
replay_or_skip(void)
{
	ErrorData  *edata = CounterInSubxact(replay_call, NULL);

	if (edata == NULL)
		return;
	if (edata->sqlerrcode != ERRCODE_UNDEFINED_FILE)
		ReThrowError(edata);
	ereport(WARNING,
			(errmsg("counter: wal-mode adds not flushed before the restart cannot be replayed: %s",
					edata->message),
			 errdetail("Their WAL was removed; the counters of this database may miss up to one flush interval of them."),
			 errhint("Do not drop the replication slot counter_wal_%u; a promoted standby keeps only the WAL it has.",
					 MyDatabaseId)));
	FreeErrorData(edata);
	CounterExec(&skip_stmt, NULL, NULL, false);
}

/*
 * arm() in a subtransaction: a failure (no free replication slot, say) is
 * reported once per worker as a warning and leaves the database unarmed,
 * with its wal-mode adds stored as events, instead of failing the round.
 * Without wal_level replica or logical no slot can be made: nothing tried.
 */
static bool
arm_safely(bool may_arm)
{
	static bool warned = false;
	ArmCall		call = {may_arm, false};
	ErrorData  *edata;

	if (!CounterWalPossible())
		return false;
	edata = CounterInSubxact(arm_call, &call);
	if (edata == NULL)
		return call.armed;
	if (!warned)
		ereport(WARNING,
				(errmsg("counter: wal mode stays off in this database: %s", edata->message),
				 errdetail("Adds to wal-mode counters are stored as events until it is on.")));
	warned = true;
	FreeErrorData(edata);
	return false;
}

/*
 * The worker's part at each round, in its transaction (SPI connected):
 * after a restart, replay, and the database is ready at once (the adds are
 * back in shared memory, whatever becomes of this transaction); then arm or
 * advance the slot (arming only with may_arm).  Pass the result to
 * CounterWalRoundDone once committed.
 */
bool
CounterWalRound(bool may_arm)
{
	CounterWalState *db;

	if (!CounterWalLoaded() || CounterLegacyLacks(LEGACY_WAL_STATE))
		return false;
	db = CounterWalDb(MyDatabaseId, true);
	if (db == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("more than %d databases use the counter extension", COUNTER_MAX_DATABASES)));
	if (!db->ready)
	{
		repl_slot_elsewhere = recorded_elsewhere(NULL);
		replay_or_skip();
		/* when there was nothing to put back */
		CounterWalReplayBegin();
		CounterWalReplayEnd();
	}
	return arm_safely(may_arm);
}

/* After the round's commit: armed or not. */
void
CounterWalRoundDone(bool armed)
{
	CounterWalState *db = CounterWalDb(MyDatabaseId, false);

	if (db != NULL)
		db->armed = armed;
}

/*
 * The extension is gone from database dboid, or the database itself (then
 * forget it): drop its slot; its wal-mode adds go to events from now on.
 */
void
CounterWalDisarm(Oid dboid, bool forget)
{
	char	   *name = repl_slot_name(dboid);
	CounterWalState *db;

	if (!CounterWalLoaded())
		return;
	db = CounterWalDb(dboid, false);
	if (db != NULL)
	{
		db->armed = false;
		/* the database is gone: forgotten, as a new entry starts */
		if (forget)
			db->ready = false;
	}
	if (SearchNamedReplicationSlot(name, true) != NULL)
		ReplicationSlotDrop(name, true);
	pfree(name);
}

