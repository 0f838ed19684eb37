/*-------------------------------------------------------------------------
 *
 * wal.c
 *	  Wal mode: buffered adds made durable by one WAL record per commit.
 *
 * A wal-mode add is buffered like a buffered one (buffer.c): kept in
 * backend memory, added to the key's shared-memory entry once its
 * transaction has committed, flushed into totals by the worker.  In
 * addition the transaction writes, just before it commits, one
 * transactional logical message (prefix "counter.wal") holding all its
 * surviving adds: the cost of a commit, and no heap or index write.  The
 * message carries a sequence number taken from a cluster-wide counter and
 * the backend number; each backend publishes the sequence number of the
 * last transaction it applied to shared memory (applied) and, while it is
 * between writing a message and applying it, a WAL position no later than
 * its message (inflight).
 *
 * A flush takes the entries with the apply lock held exclusively, so every
 * transaction is either wholly in the flush or wholly out of it, and
 * records in counter.wal_state, in the flush's own transaction:
 *	- start_lsn: the insert position at the take, or the smallest inflight
 *	  position if earlier; every committed message before it is in totals;
 *	- seqs[b]: per backend number, the applied sequence number at the take;
 *	  a message of backend b with a number no larger is in totals too (a
 *	  backend's transactions apply in the order of their numbers).
 * The database's physical replication slot counter_wal_<oid> is advanced
 * to start_lsn afterwards, so the WAL from start_lsn on is never removed.
 *
 * After a restart (shared memory is new) the worker replays: it reads the
 * WAL from start_lsn, keeps the messages of this database whose
 * transaction committed and which the seqs do not cover, and puts their
 * adds back into the shared entries, as if they had just committed: every
 * snapshot sees them at once, as it should see transactions committed
 * before the restart.  Nothing is written: the next flush takes them like
 * any add and moves start_lsn past their messages; a crash before it
 * replays them again.  Until the replay, wal-mode adds of the database are
 * stored as events and reads wait, so a value is exact at every moment and
 * no acknowledged add is lost or counted twice.  The sequence counter then
 * restarts above every number read.
 *
 * A database is armed (wal-mode adds go to shared memory) once the worker
 * has created its slot and set start_lsn, which it does when the first
 * wal-mode counter exists; its slot is dropped with the extension or the
 * database.
 *
 * A promoted standby has the primary's counter.wal_state but not its slot
 * (PostgreSQL 15 keeps slots on the node that made them), and its shared
 * memory has none of the primary's entries: its worker replays from
 * start_lsn as after a restart, with the WAL the standby received.  Reads
 * wait for that replay wherever start_lsn is set, never on a hot standby
 * (no worker runs there; it reads what the primary flushed).  A missing
 * slot with start_lsn before the start of this node's timeline was never
 * on this node (a promotion, or a point-in-time recovery) and is made again
 * quietly; one missing otherwise was dropped by hand, which is warned of.
 *
 *-------------------------------------------------------------------------
 */
#include "counter.h"

#include "access/timeline.h"
#include "access/transam.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "access/xlog_internal.h"
#include "access/xlogreader.h"
#include "access/xlogutils.h"
#include "catalog/pg_type.h"
#include "miscadmin.h"
#include "replication/message.h"
#include "replication/slot.h"
#include "storage/backendid.h"
#include "storage/procarray.h"
#include "storage/shmem.h"
#include "utils/builtins.h"
#include "utils/pg_lsn.h"

#define WAL_PREFIX				"counter.wal"
#define WAL_FORMAT				1
#define WAL_READY_WAIT_MS		10000

/* header of a wal-mode message; the adds follow */
typedef struct WalHeader
{
	uint32		format;			/* WAL_FORMAT */
	int32		backend;		/* MyBackendId of the writer */
	uint64		seq;
} WalHeader;

/* one add in a message, followed by keylen bytes of key */
typedef struct WalAdd
{
	int32		counter_id;
	int32		keylen;
	TimestampTz created;
	int64		delta;
} WalAdd;

/* per backend number */
typedef struct WalBackend
{
	pg_atomic_uint64 applied;	/* sequence number last applied */
	pg_atomic_uint64 inflight;	/* WAL position before an unapplied message */
} WalBackend;

/*
 * per database: replayed since shared memory was made (ready), and armed;
 * entries are claimed under counter_shared->lock and read without it, and
 * live as long as shared memory (a restarted launcher or worker keeps them)
 */
typedef struct WalDb
{
	Oid			dboid;
	bool		ready;
	bool		armed;
} WalDb;

typedef struct WalShared
{
	LWLock	   *apply_lock;		/* shared: an apply; exclusive: a take */
	pg_atomic_uint64 next_seq;
	WalDb		dbs[COUNTER_MAX_DATABASES];
	WalBackend	backends[FLEXIBLE_ARRAY_MEMBER];	/* 0 .. MaxBackends */
} WalShared;

static WalShared *wal_shared = NULL;

/* the message of this transaction, once written */
static uint64 my_seq = 0;
static bool my_logged = false;

/* what the current flush took, for counter.wal_state */
static XLogRecPtr take_lsn = InvalidXLogRecPtr;
static Datum take_seqs = (Datum) 0;

/* Shared memory: the header and one entry per backend number. */
Size
CounterWalShmemSize(void)
{
	return add_size(offsetof(WalShared, backends),
					mul_size(MaxBackends + 1, sizeof(WalBackend)));
}

/*
 * Create or attach to the shared state; called under AddinShmemInitLock.
 * Sequence numbers start from the clock in microseconds, above any number
 * an earlier life of the cluster handed out (the replay raises them above
 * every number it reads, too).
 */
void
CounterWalShmemInit(LWLock *apply_lock)
{
	bool		found;
	int			i;

	wal_shared = ShmemInitStruct("counter wal", CounterWalShmemSize(), &found);
	if (found)
		return;
	memset(wal_shared->dbs, 0, sizeof(wal_shared->dbs));
	wal_shared->apply_lock = apply_lock;
	pg_atomic_init_u64(&wal_shared->next_seq, (uint64) GetCurrentTimestamp());
	for (i = 0; i <= MaxBackends; i++)
	{
		pg_atomic_init_u64(&wal_shared->backends[i].applied, 0);
		pg_atomic_init_u64(&wal_shared->backends[i].inflight, InvalidXLogRecPtr);
	}
}

/*
 * The entry of database dboid, or NULL; with create, a free one is claimed
 * for it (NULL only when all are taken).
 */
static WalDb *
wal_db(Oid dboid, bool create)
{
	WalDb	   *db = NULL;
	int			i;

	LWLockAcquire(counter_shared->lock, create ? LW_EXCLUSIVE : LW_SHARED);
	for (i = 0; i < COUNTER_MAX_DATABASES && db == NULL; i++)
		if (wal_shared->dbs[i].dboid == dboid)
			db = &wal_shared->dbs[i];
	for (i = 0; i < COUNTER_MAX_DATABASES && db == NULL && create; i++)
		if (!OidIsValid(wal_shared->dbs[i].dboid))
		{
			db = &wal_shared->dbs[i];
			db->dboid = dboid;
			db->ready = false;
			db->armed = false;
		}
	LWLockRelease(counter_shared->lock);
	return db;
}

/* The entry of our database, or NULL, cached once found. */
static WalDb *
my_db(void)
{
	static WalDb *cached = NULL;

	if (wal_shared == NULL)
		return NULL;
	if (cached == NULL || cached->dboid != MyDatabaseId)
		cached = wal_db(MyDatabaseId, false);
	return cached;
}

/*
 * Whether this server can arm wal mode at all: the preload (our shared
 * memory), and a replication slot, which needs wal_level replica or logical.
 */
bool
CounterWalPossible(void)
{
	return wal_shared != NULL && wal_level >= WAL_LEVEL_REPLICA &&
		max_replication_slots > 0;
}

/* Whether wal-mode adds of this database may go to shared memory now. */
bool
CounterWalArmed(void)
{
	WalDb	   *db = my_db();

	return db != NULL && db->ready && db->armed;
}

/* The name of this database's replication slot. */
static char *
slot_name(Oid dboid)
{
	return psprintf("counter_wal_%u", dboid);
}

static CounterStmt armed_stmt = {
	"SELECT start_lsn IS NOT NULL FROM counter.wal_state", 0, {0}
};

/*
 * Whether counter.wal_state says the database is armed (start_lsn set),
 * in the caller's snapshot; false without the table (before 1.3).
 */
static bool
database_armed(void)
{
	bool		armed = false;
	bool		isnull;

	if (!OidIsValid(CounterGetRels()->wal_state))
		return false;
	SPI_connect();
	CounterExec(&armed_stmt, NULL, NULL, true);
	if (SPI_processed == 1)
		armed = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1,
										   &isnull));
	SPI_finish();
	return armed;
}

/*
 * Before a read: wait (up to WAL_READY_WAIT_MS) while the worker has yet to
 * replay the WAL of this database after a restart or a promotion; 55000
 * after that.  The replay puts the adds back into shared memory, which
 * every snapshot sees, so once it is done any read is exact.  Only an armed
 * database has anything to replay (and one armed later comes with no
 * replay to wait for: arming happens ready).  A hot standby waits for
 * nothing, and remembers nothing: it may be promoted under this backend.
 */
void
CounterWalWaitReady(void)
{
	static bool ready = false;	/* once seen, for the life of the backend */
	WalDb	   *db;
	int			waited;

	if (ready || wal_shared == NULL || RecoveryInProgress())
		return;
	if (!database_armed())
	{
		ready = true;
		return;
	}
	for (waited = 0;; waited += 10)
	{
		db = my_db();
		if (db != NULL && db->ready)
			break;
		if (waited >= WAL_READY_WAIT_MS)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("wal-mode adds of this database are not replayed yet"),
					 errdetail("The counter worker replays them from the WAL after a restart or a promotion; until then no value is exact."),
					 errhint("Check that the counter worker of this database runs (counter.worker_enabled, the server log).")));
		CHECK_FOR_INTERRUPTS();
		pg_usleep(10000L);
	}
	pg_memory_barrier();
	ready = true;
}

/* Start this transaction's message in buf. */
void
CounterWalBegin(StringInfo buf)
{
	WalHeader	h;

	memset(&h, 0, sizeof(h));
	initStringInfo(buf);
	appendBinaryStringInfo(buf, (char *) &h, sizeof(h));
}

/* Append one add to the message in buf. */
void
CounterWalAppend(StringInfo buf, int32 counter_id, TimestampTz created,
				 const char *key, int32 keylen, int64 delta)
{
	WalAdd		a;

	a.counter_id = counter_id;
	a.keylen = keylen;
	a.created = created;
	a.delta = delta;
	appendBinaryStringInfo(buf, (char *) &a, sizeof(a));
	appendBinaryStringInfo(buf, key, keylen);
}

/*
 * At pre-commit: number the message in buf and write it.  Its transaction
 * gets an xid, so the commit record is flushed with the message before it.
 * inflight is published before the message is inserted: a take that does
 * not see it reads an insert position no later than the message.
 */
void
CounterWalWrite(StringInfo buf)
{
	WalBackend *b = &wal_shared->backends[MyBackendId];
	WalHeader  *h = (WalHeader *) buf->data;

	my_seq = pg_atomic_fetch_add_u64(&wal_shared->next_seq, 1);
	h->format = WAL_FORMAT;
	h->backend = MyBackendId;
	h->seq = my_seq;
	pg_atomic_write_u64(&b->inflight, GetXLogInsertRecPtr());
	pg_memory_barrier();
	my_logged = true;
	LogLogicalMessage(WAL_PREFIX, buf->data, buf->len, true);
}

/*
 * At commit, before applying this transaction's adds to shared memory:
 * true when it wrote a message; the apply then runs under the apply lock
 * and must end with CounterWalApplyEnd.
 */
bool
CounterWalApplyBegin(void)
{
	if (!my_logged)
		return false;
	LWLockAcquire(wal_shared->apply_lock, LW_SHARED);
	return true;
}

/* The adds are applied: publish the sequence number, drop inflight. */
void
CounterWalApplyEnd(void)
{
	WalBackend *b = &wal_shared->backends[MyBackendId];

	pg_atomic_write_u64(&b->applied, my_seq);
	pg_atomic_write_u64(&b->inflight, InvalidXLogRecPtr);
	LWLockRelease(wal_shared->apply_lock);
	my_logged = false;
}

/* At abort: a message written, if any, belongs to an aborted transaction. */
void
CounterWalAbort(void)
{
	if (!my_logged)
		return;
	pg_atomic_write_u64(&wal_shared->backends[MyBackendId].inflight,
						InvalidXLogRecPtr);
	my_logged = false;
}

/*
 * Start a flush's take of the shared entries, once this database is ready
 * (its replay's adds are back; armed or not, the record is a no-op when
 * there is no replay position): with no apply running, note the WAL
 * position before every unapplied message and each backend's applied
 * number.  Ends with CounterWalTakeEnd.
 */
void
CounterWalTakeBegin(void)
{
	XLogRecPtr	lsn;
	Datum	   *seqs;
	int			i;

	WalDb	   *db = my_db();

	take_lsn = InvalidXLogRecPtr;
	if (!OidIsValid(CounterGetRels()->wal_state) || db == NULL)
		return;
	LWLockAcquire(wal_shared->apply_lock, LW_EXCLUSIVE);
	if (!db->ready)
	{
		/* no logged adds yet, and the replay's are not back: nothing to record */
		LWLockRelease(wal_shared->apply_lock);
		return;
	}
	lsn = GetXLogInsertRecPtr();
	pg_memory_barrier();
	seqs = palloc(sizeof(Datum) * (MaxBackends + 1));
	for (i = 0; i <= MaxBackends; i++)
	{
		XLogRecPtr	inflight = pg_atomic_read_u64(&wal_shared->backends[i].inflight);

		if (inflight != InvalidXLogRecPtr && inflight < lsn)
			lsn = inflight;
		seqs[i] = Int64GetDatum((int64) pg_atomic_read_u64(&wal_shared->backends[i].applied));
	}
	take_lsn = lsn;
	take_seqs = PointerGetDatum(construct_array(seqs, MaxBackends + 1, INT8OID, 8,
												FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	pfree(seqs);
}

static CounterStmt take_stmt = {
	"UPDATE counter.wal_state SET start_lsn = greatest(start_lsn, $1),"
	" seqs = ARRAY(SELECT greatest(coalesce(u.o, 0), coalesce(u.n, 0))"
	"                FROM unnest(seqs, $2::int8[]) WITH ORDINALITY AS u(o, n, i)"
	"               ORDER BY u.i)"
	" WHERE start_lsn IS NOT NULL",
	2, {PG_LSNOID, INT8ARRAYOID}
};

/*
 * End the take: let applies run again, and record what was taken in
 * counter.wal_state, in the flush's transaction (SPI connected).
 */
void
CounterWalTakeEnd(void)
{
	if (take_lsn == InvalidXLogRecPtr)
		return;
	LWLockRelease(wal_shared->apply_lock);
	CounterExec(&take_stmt, (Datum[]) {LSNGetDatum(take_lsn), take_seqs}, NULL, false);
	take_lsn = InvalidXLogRecPtr;
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

	if (!OidIsValid(CounterGetRels()->wal_state))
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
	while (pg_atomic_read_u64(&wal_shared->next_seq) <= maxseq)
		pg_atomic_fetch_add_u64(&wal_shared->next_seq,
								maxseq + 1 - pg_atomic_read_u64(&wal_shared->next_seq));

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
 * its replay (which may move start_lsn when the WAL is gone): the slot is
 * not on this node because it never was (see recorded_elsewhere).
 */
static bool slot_elsewhere = false;

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
	char	   *name = slot_name(MyDatabaseId);
	Datum		arg = CStringGetTextDatum(name);
	bool		isnull;

	CounterExec(&armed_stmt, NULL, NULL, true);
	if (SPI_processed == 1 &&
		DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)))
	{
		TimeLineID	tli;

		if (SearchNamedReplicationSlot(name, true) == NULL)
		{
			if (recorded_elsewhere(&tli) || slot_elsewhere)
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
		slot_elsewhere = false;
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
	WalDb	   *db;

	if (wal_shared == NULL || !OidIsValid(CounterGetRels()->wal_state))
		return false;
	db = wal_db(MyDatabaseId, true);
	if (db == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("more than %d databases use the counter extension", COUNTER_MAX_DATABASES)));
	if (!db->ready)
	{
		slot_elsewhere = recorded_elsewhere(NULL);
		replay_or_skip();
		/* when there was nothing to put back */
		CounterWalReplayBegin();
		CounterWalReplayEnd();
	}
	return arm_safely(may_arm);
}

/*
 * Around the replay's return of its adds to shared memory (buffer.c): like
 * a commit's apply, under the apply lock, so that a take sees all of them
 * or none; the database is ready when it ends, and a take may then record.
 */
void
CounterWalReplayBegin(void)
{
	LWLockAcquire(wal_shared->apply_lock, LW_SHARED);
}

/* End the replay's return of its adds: the database is ready. */
void
CounterWalReplayEnd(void)
{
	WalDb	   *db = my_db();

	if (db != NULL)
		db->ready = true;
	LWLockRelease(wal_shared->apply_lock);
}

/* After the round's commit: armed or not. */
void
CounterWalRoundDone(bool armed)
{
	WalDb	   *db = wal_shared != NULL ? wal_db(MyDatabaseId, false) : NULL;

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
	char	   *name = slot_name(dboid);
	WalDb	   *db;

	if (wal_shared == NULL)
		return;
	db = wal_db(dboid, false);
	if (db != NULL)
	{
		db->armed = false;
		if (forget)
			db->dboid = InvalidOid;
	}
	if (SearchNamedReplicationSlot(name, true) != NULL)
		ReplicationSlotDrop(name, true);
	pfree(name);
}
