/*-------------------------------------------------------------------------
 *
 * rights.c
 *	  Global bounds: the escrow rights of bounded counters across the
 *	  nodes of a mesh.
 *
 * On one node the slot rows of a bounded key share out its whole headroom
 * (slots.c).  In a mesh of more than one member each node holds rights, a
 * part of the global headroom, and its slot rows share out only those: the
 * first slot row of a key on a node takes the node's whole share
 * (CounterRightsShare, from counter._rights_share), and from then on the
 * rows carry it, as they carry the headroom on one node.  A node that runs
 * short refuses the add as on one node (23514, or try_add NULL) and notes
 * the refusal here, in shared memory (the refused add's transaction may
 * abort, so no table could keep it); its worker turns the notes into ask
 * rows of counter.bound_rights, and the worker of every peer with spare
 * rights moves half of them to the asker: it raises the lo (lowers the hi)
 * of slot rows it locks and writes the transfer row in one transaction;
 * the asker's worker then lowers the lo (raises the hi) of one of its rows
 * by what arrived.  Both sides take the key's lock (CounterRightsLockKey),
 * which also serializes the first slot row of the key, so a share computed
 * from the rows of counter.bound_rights never misses or doubles a change.
 * All the SQL is in counter--1.3--1.4.sql, section bounds.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "storage/lmgr.h"
#include "storage/proc.h"
#include "storage/procarray.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/snapmgr.h"

#include "rights.h"
#include "catalog.h"
#include "guc.h"
#include "legacy.h"
#include "shmem.h"

PG_FUNCTION_INFO_V1(counter_rights_lock);

static CounterStmt in_mesh_stmt = {
	"SELECT counter._in_mesh($1)", 1, {INT4OID}
};

static CounterStmt share_stmt = {
	"SELECT in_mesh, lo, hi FROM counter._rights_share($1, $2, $3, $4, $5)",
	5, {TEXTOID, TEXTOID, INT4OID, INT8OID, INT8OID}
};

static CounterStmt round_stmt = {
	"SELECT counter._rights_round($1, $2, $3, $4)",
	4, {INT4ARRAYOID, INT4ARRAYOID, BOOLARRAYOID, INT8ARRAYOID}
};

/* hashtext() of a key: the key's part of its lock and of an ask */
static int32
key_hash(text *key)
{
	return (int32) DatumGetUInt32(hash_any((unsigned char *) VARDATA_ANY(key),
										   VARSIZE_ANY_EXHDR(key)));
}

/* The tag of the lock of (counter, key): an advisory lock on (counter, hash of key). */
static void
rights_key_tag(LOCKTAG *tag, int32 counter_id, text *key)
{
	SET_LOCKTAG_ADVISORY(*tag, MyDatabaseId, (uint32) counter_id,
						 (uint32) key_hash(key), 3);
}

/*
 * Take the lock that serializes the headroom of a bounded key on this
 * node, to the end of the transaction (or CounterRightsUnlockKey): a
 * transaction lock on (counter, hash of key).  With wait false, false when
 * another transaction has it.
 */
bool
CounterRightsLockKey(int32 counter_id, text *key, bool wait)
{
	LOCKTAG		tag;

	rights_key_tag(&tag, counter_id, key);
	return LockAcquire(&tag, ExclusiveLock, false, !wait) != LOCKACQUIRE_NOT_AVAIL;
}

/*
 * Release one hold of the key's lock taken by CounterRightsLockKey before
 * the transaction ends (a hold taken earlier in it stays).
 */
void
CounterRightsUnlockKey(int32 counter_id, text *key)
{
	LOCKTAG		tag;

	rights_key_tag(&tag, counter_id, key);
	LockRelease(&tag, ExclusiveLock, false);
}

/* counter._rights_lock(counter_id, key, wait): CounterRightsLockKey */
Datum
counter_rights_lock(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(CounterRightsLockKey(PG_GETARG_INT32(0), PG_GETARG_TEXT_PP(1),
										PG_GETARG_BOOL(2)));
}

/*
 * The share of the headroom of (counter, key) that the key's first slot row
 * on this node takes when this node is in a mesh of more than one: its
 * rights less its own shard, in *lo and *hi.  False, on one node: the
 * whole headroom is the node's.  Read in the latest snapshot, whatever the
 * isolation level, once the caller holds the key's lock.
 */
bool
CounterRightsShare(CounterMeta *meta, text *key, int64 *lo, int64 *hi)
{
	Datum		values[5];
	char		nulls[5] = {' ', ' ', ' ', ' ', ' '};
	bool		in_mesh = false;
	bool		isnull;

	if (CounterLegacy())	/* no rights before 1.4 */
		return false;
	values[0] = CStringGetTextDatum(meta->name);
	values[1] = PointerGetDatum(key);
	values[2] = Int32GetDatum(counter_node_id);
	values[3] = Int64GetDatum(meta->min);
	values[4] = Int64GetDatum(meta->max);
	nulls[3] = meta->has_min ? ' ' : 'n';
	nulls[4] = meta->has_max ? ' ' : 'n';

	PushActiveSnapshot(GetLatestSnapshot());
	SPI_connect();
	/* one node reads no share (the mesh's probe is a kept plan, the share's is made at each call) */
	CounterExec(&in_mesh_stmt, &values[2], NULL, true);
	if (DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)))
	{
		CounterExec(&share_stmt, values, nulls, true);
		if (SPI_processed == 1)
		{
			TupleDesc	desc = SPI_tuptable->tupdesc;
			HeapTuple	tup = SPI_tuptable->vals[0];
			Datum		d;

			in_mesh = DatumGetBool(SPI_getbinval(tup, desc, 1, &isnull)) && !isnull;
			d = SPI_getbinval(tup, desc, 2, &isnull);
			*lo = isnull ? 0 : DatumGetInt64(d);
			d = SPI_getbinval(tup, desc, 3, &isnull);
			*hi = isnull ? 0 : DatumGetInt64(d);
		}
	}
	SPI_finish();
	PopActiveSnapshot();
	return in_mesh;
}

/*
 * Note an add of delta to (counter, key) that its bound refused, for the
 * worker to ask the mesh for rights, and wake the worker when the note is
 * new; nothing on a node that its worker last found in no mesh.  A note
 * that finds no room is dropped: the next refusal notes it again.
 */
void
CounterRightsRefused(CounterMeta *meta, text *key, int64 delta)
{
	CounterDb  *db = CounterDbLookup(MyDatabaseId);
	CounterAsks *asks;
	int32		hash = key_hash(key);
	bool		max = delta > 0;
	bool		fresh = false;
	int			i;
	pid_t		pid;

	if (db == NULL)
		return;
	asks = &db->asks;
	SpinLockAcquire(&asks->mutex);
	if (asks->mesh)
	{
		for (i = 0; i < asks->n; i++)
			if (asks->ask[i].counter_id == meta->id && asks->ask[i].key_hash == hash &&
				asks->ask[i].max == max)
				break;
		if (i < asks->n)
			asks->ask[i].count++;
		else if (asks->n < COUNTER_MAX_ASKS)
		{
			asks->ask[i].counter_id = meta->id;
			asks->ask[i].key_hash = hash;
			asks->ask[i].max = max;
			asks->ask[i].count = 1;
			asks->n++;
			fresh = true;
		}
	}
	SpinLockRelease(&asks->mutex);

	pid = db->worker.pid;
	if (fresh && pid != 0)
	{
		PGPROC	   *proc = BackendPidGetProc(pid);

		if (proc != NULL)
			SetLatch(&proc->procLatch);
	}
}

/*
 * One round of rights for the worker, in its transaction with SPI
 * connected: the refusals noted since the last round become asks, rights
 * that arrived are credited, peers' asks are answered (see
 * counter._rights_round); whether the node is in a mesh is kept for
 * CounterRightsRefused.  Returns the number of transfers made.
 */
int64
CounterRightsRound(void)
{
	CounterDb  *db = CounterDbLookup(MyDatabaseId);
	CounterAsk	asks[COUNTER_MAX_ASKS];
	Datum		ids[COUNTER_MAX_ASKS];
	Datum		hashes[COUNTER_MAX_ASKS];
	Datum		maxes[COUNTER_MAX_ASKS];
	Datum		counts[COUNTER_MAX_ASKS];
	Datum		values[4];
	int			n = 0;
	int			i;
	bool		isnull;
	Datum		d;
	int64		moves;

	if (CounterLegacy())	/* no rights before 1.4 */
		return 0;
	if (db != NULL)
	{
		SpinLockAcquire(&db->asks.mutex);
		n = db->asks.n;
		memcpy(asks, db->asks.ask, sizeof(CounterAsk) * n);
		db->asks.n = 0;
		SpinLockRelease(&db->asks.mutex);
	}
	for (i = 0; i < n; i++)
	{
		ids[i] = Int32GetDatum(asks[i].counter_id);
		hashes[i] = Int32GetDatum(asks[i].key_hash);
		maxes[i] = BoolGetDatum(asks[i].max);
		counts[i] = Int64GetDatum(asks[i].count);
	}
	values[0] = PointerGetDatum(construct_array(ids, n, INT4OID, 4, true, TYPALIGN_INT));
	values[1] = PointerGetDatum(construct_array(hashes, n, INT4OID, 4, true, TYPALIGN_INT));
	values[2] = PointerGetDatum(construct_array(maxes, n, BOOLOID, 1, true, TYPALIGN_CHAR));
	values[3] = PointerGetDatum(construct_array(counts, n, INT8OID, 8, FLOAT8PASSBYVAL,
												TYPALIGN_DOUBLE));
	CounterExec(&round_stmt, values, NULL, false);
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	moves = isnull ? 0 : DatumGetInt64(d);
	if (db != NULL)
	{
		SpinLockAcquire(&db->asks.mutex);
		db->asks.mesh = !isnull;
		db->asks.single = isnull;
		SpinLockRelease(&db->asks.mutex);
	}
	return moves;
}

/*
 * Whether this node's worker found it in no mesh at its last round (so no
 * peer writes its rows): false until a round has run, and without the
 * preload.  A node that joins a mesh is seen in it at its next round.
 */
bool
CounterSingleNode(void)
{
	CounterDb  *db = CounterDbLookup(MyDatabaseId);
	bool		single;

	if (db == NULL)
		return false;
	SpinLockAcquire(&db->asks.mutex);
	single = db->asks.single;
	SpinLockRelease(&db->asks.mutex);
	return single;
}
