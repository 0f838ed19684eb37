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
 * This file is the committing backend's side and the shared state; the
 * worker's side (the replay, arming, the slot) is walreplay.c.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

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

#include "wal.h"
#include "catalog.h"
#include "legacy.h"
#include "shmem.h"

#define WAL_READY_WAIT_MS		10000

/* per backend number */
typedef struct WalBackend
{
	pg_atomic_uint64 applied;	/* sequence number last applied */
	pg_atomic_uint64 inflight;	/* WAL position before an unapplied message */
} WalBackend;

typedef struct WalShared
{
	LWLock	   *apply_lock;		/* shared: an apply; exclusive: a take */
	pg_atomic_uint64 next_seq;
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
	wal_shared->apply_lock = apply_lock;
	pg_atomic_init_u64(&wal_shared->next_seq, (uint64) GetCurrentTimestamp());
	for (i = 0; i <= MaxBackends; i++)
	{
		pg_atomic_init_u64(&wal_shared->backends[i].applied, 0);
		pg_atomic_init_u64(&wal_shared->backends[i].inflight, InvalidXLogRecPtr);
	}
}

/*
 * The wal state of database dboid (its shared entry, shmem.c), or NULL;
 * with create, the entry is claimed if need be (NULL only when all are
 * taken).  A new entry is neither ready nor armed.
 */
CounterWalState *
CounterWalDb(Oid dboid, bool create)
{
	CounterDb  *db;

	if (wal_shared == NULL)
		return NULL;
	db = create ? CounterDbClaim(dboid) : CounterDbLookup(dboid);
	return db != NULL ? &db->wal : NULL;
}

/* The wal state of our database, or NULL, its entry cached once found. */
static CounterWalState *
my_db(void)
{
	static CounterDb *cached = NULL;

	if (wal_shared == NULL)
		return NULL;
	if (cached == NULL || cached->dboid != MyDatabaseId)
		cached = CounterDbLookup(MyDatabaseId);
	return cached != NULL ? &cached->wal : NULL;
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
	CounterWalState *db = my_db();

	return db != NULL && db->ready && db->armed;
}

static CounterStmt armed_stmt = {
	"SELECT start_lsn IS NOT NULL FROM counter.wal_state", 0, {0}
};

/* Whether our shared memory exists (the library was preloaded). */
bool
CounterWalLoaded(void)
{
	return wal_shared != NULL;
}

/*
 * Raise the sequence counter above maxseq: the replay saw numbers up to it,
 * and numbers handed out from now on must be above every number read.
 */
void
CounterWalRaiseSeq(uint64 maxseq)
{
	while (pg_atomic_read_u64(&wal_shared->next_seq) <= maxseq)
		pg_atomic_fetch_add_u64(&wal_shared->next_seq,
								maxseq + 1 - pg_atomic_read_u64(&wal_shared->next_seq));
}

/*
 * Whether counter.wal_state says the database is armed (start_lsn set),
 * in the caller's snapshot; false in an older schema without the table.
 */
bool
CounterWalDatabaseArmed(void)
{
	bool		armed = false;
	bool		isnull;

	if (CounterLegacyLacks(LEGACY_WAL_STATE))
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
	CounterWalState *db;
	int			waited;

	if (ready || wal_shared == NULL || RecoveryInProgress())
		return;
	if (!CounterWalDatabaseArmed())
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

	CounterWalState *db = my_db();

	take_lsn = InvalidXLogRecPtr;
	if (CounterLegacyLacks(LEGACY_WAL_STATE) || db == NULL)
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
	CounterWalState *db = my_db();

	if (db != NULL)
		db->ready = true;
	LWLockRelease(wal_shared->apply_lock);
}
