/*-------------------------------------------------------------------------
 *
 * apply.c
 *	  One add, below every SQL function that adds: its idempotency key,
 *	  its bounds, and the source the counter's mode sends it to (slot rows,
 *	  an event row, or the shared hash of buffered and wal modes); and
 *	  counter._correct(), an add that records what happened elsewhere.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/builtins.h"

#include "apply.h"
#include "catalog.h"
#include "commit.h"
#include "events.h"
#include "guc.h"
#include "legacy.h"
#include "rights.h"
#include "slots.h"
#include "wal.h"

PG_FUNCTION_INFO_V1(counter_correct);

/*
 * The parameters of the statements below: $1 idem, $2 counter_id, $3 key,
 * $4 delta, $5 the window in seconds, $6 the counter's name, $7 this node.
 * A claim records its counter's name and node (replicated to a mesh, see
 * the section idem of counter--1.3--1.4.sql); legacy.c has the claim and
 * check of older schemas.
 */
#define IDEM_ARGS	{TEXTOID, INT4OID, TEXTOID, INT8OID, INT4OID, TEXTOID, INT4OID}

static CounterStmt idem_claim_stmt = {
	"INSERT INTO counter.idempotency (idem, counter_id, key, delta, counter, node)"
	" VALUES ($1, $2, $3, $4, $6, $7) ON CONFLICT (idem) DO NOTHING RETURNING true",
	7, IDEM_ARGS
};

/* is the claim there the same add; has it expired */
static CounterStmt idem_check_stmt = {
	"SELECT counter = $6 AND key = $3 AND delta = $4,"
	" created < now() - $5 * interval '1 second'"
	"  FROM counter.idempotency WHERE idem = $1",
	6, IDEM_ARGS
};

static CounterStmt idem_expire_stmt = {
	"DELETE FROM counter.idempotency"
	" WHERE idem = $1 AND created < now() - $5 * interval '1 second'",
	5, IDEM_ARGS
};

/*
 * Claim an idempotency key for this add.  True when the add should apply;
 * false when the key was already used for the same add within the window;
 * 22023 when it was used for another add.  A transaction still holding the
 * key is waited for: if it aborts, the key is ours.  An expired claim is
 * deleted and the key claimed anew, never updated in place: a mesh's
 * peers receive every claim whole (an insert).
 */
static bool
idempotency_claim(CounterMeta *meta, text *key, int64 delta, text *idem)
{
	CounterStmt *claim = CounterLegacyStmt(LEGACY_IDEM_CLAIM, &idem_claim_stmt);
	CounterStmt *check = CounterLegacyStmt(LEGACY_IDEM_CHECK, &idem_check_stmt);
	Datum		values[7];
	bool		applied;

	values[0] = PointerGetDatum(idem);
	values[1] = Int32GetDatum(meta->id);
	values[2] = PointerGetDatum(key);
	values[3] = Int64GetDatum(delta);
	values[4] = Int32GetDatum(counter_idempotency_window);
	values[5] = CStringGetTextDatum(meta->name);
	values[6] = Int32GetDatum(counter_node_id);

	SPI_connect();
	for (;;)
	{
		bool		isnull;
		HeapTuple	tup;

		CHECK_FOR_INTERRUPTS();
		CounterExec(claim, values, NULL, false);
		applied = SPI_processed == 1;
		if (applied)
			break;
		CounterExec(check, values, NULL, false);
		if (SPI_processed == 0)
			continue;			/* the claim went away meanwhile */
		tup = SPI_tuptable->vals[0];
		if (DatumGetBool(SPI_getbinval(tup, SPI_tuptable->tupdesc, 2, &isnull)))
		{
			CounterExec(&idem_expire_stmt, values, NULL, false);
			continue;
		}
		if (!DatumGetBool(SPI_getbinval(tup, SPI_tuptable->tupdesc, 1, &isnull)))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("idempotency key \"%s\" was already used for another add",
							text_to_cstring(idem)),
					 errdetail("A key identifies one add: the same counter, key and delta.")));
		break;
	}
	SPI_finish();
	return applied;
}

/* one add to a bounded counter under an idempotency key (bounded_add) */
typedef struct BoundedAdd
{
	CounterMeta *meta;
	text	   *key;
	int64		delta;
	text	   *idem;
	ApplyResult result;
} BoundedAdd;

/*
 * Claim the key and add to the slots, in the subtransaction of
 * CounterInSubxact: at the bound, an error rolls the claim back with it.
 */
static void
bounded_add(void *arg)
{
	BoundedAdd *a = arg;

	a->result = APPLY_REPEAT;
	if (!idempotency_claim(a->meta, a->key, a->delta, a->idem))
		return;
	a->result = APPLY_DONE;
	if (a->delta != 0 && !CounterSlotsAdd(a->meta, a->key, a->delta))
	{
		CounterRightsRefused(a->meta, a->key, a->delta);
		a->result = APPLY_BOUND;
		ereport(ERROR,
				(errcode(ERRCODE_CHECK_VIOLATION),
				 errmsg("the add would cross a bound")));
	}
}

/*
 * An add to a bounded counter under an idempotency key.  A key claimed for
 * an add that a bound refuses is given back by rolling back the
 * subtransaction of the claim, not by a delete: a mesh's peers never
 * receive the claim.
 */
static ApplyResult
bounded_claimed(CounterMeta *meta, text *key, int64 delta, text *idem)
{
	BoundedAdd	a = {meta, key, delta, idem, APPLY_DONE};
	ErrorData  *edata = CounterInSubxact(bounded_add, &a);

	if (edata != NULL)
	{
		if (a.result != APPLY_BOUND)
			ReThrowError(edata);
		FreeErrorData(edata);
	}
	if (a.result == APPLY_DONE)
		CommandCounterIncrement();
	return a.result;
}

/*
 * Apply one add of delta to (counter, key): where the counter's mode puts
 * it, or as an event when back-dated, when a buffered or wal add finds no
 * room in shared memory, or when a wal add's database is not armed (wal.c);
 * a bounded counter always uses its slots, whose escrow shares keep the
 * bounds exact.
 */
ApplyResult
CounterApply(CounterMeta *meta, text *key, int64 delta, text *idem,
			  bool has_at, TimestampTz at)
{
	bool		bounded = meta->has_min || meta->has_max;

	if (has_at && bounded)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("a bounded counter takes no back-dated adds")));
	if (idem != NULL && bounded)
		return bounded_claimed(meta, key, delta, idem);
	if (idem != NULL && !idempotency_claim(meta, key, delta, idem))
		return APPLY_REPEAT;

	if (delta != 0)
	{
		if ((meta->mode == COUNTER_MODE_BUFFERED ||
			 (meta->mode == COUNTER_MODE_WAL && CounterWalArmed())) &&
			!bounded && !has_at && CounterCommitAdd(meta, key, delta))
			return APPLY_DONE;	/* nothing in the heap: no CCI needed */
		if (has_at || (meta->mode != COUNTER_MODE_SLOTS && !bounded))
			CounterEventsInsert(meta, key, delta,
								has_at ? at : GetCurrentTransactionStartTimestamp());
		else if (!CounterSlotsAdd(meta, key, delta))
		{
			CounterRightsRefused(meta, key, delta);
			return APPLY_BOUND;
		}
	}
	/* later commands of this transaction, and later calls, see this add */
	CommandCounterIncrement();
	return APPLY_DONE;
}

/* Raise 23514 for an add that would cross a bound. */
void
CounterBoundError(CounterMeta *meta, text *key, int64 delta)
{
	ereport(ERROR,
			(errcode(ERRCODE_CHECK_VIOLATION),
			 errmsg("adding " INT64_FORMAT " to counter \"%s\" key \"%s\" would cross its bound",
					delta, meta->name, text_to_cstring(key)),
			 errdetail("Bounds: %s to %s; nothing was changed.",
					   meta->has_min ? psprintf(INT64_FORMAT, meta->min) : "unbounded",
					   meta->has_max ? psprintf(INT64_FORMAT, meta->max) : "unbounded")));
}

/* CounterApply, raising 23514 at a bound. */
void
CounterApplyChecked(CounterMeta *meta, text *key, int64 delta, text *idem,
					  bool has_at, TimestampTz at)
{
	if (CounterApply(meta, key, delta, idem, has_at, at) == APPLY_BOUND)
		CounterBoundError(meta, key, delta);
}

/*
 * counter._correct(name, key, delta): add delta to this node's shard of
 * (counter, key) as a correction, not as a caller's add: no rights check
 * (internal, revoked from PUBLIC), no refusal of plain adds to membership
 * counters, and no bound check, since it records a change that already
 * happened (a peer's later member row replaced a liked row of this node,
 * or another node's claim of an idempotency key beat this node's): a bound
 * that the escrow would cross takes it as an event.  Nothing when no such
 * counter exists here (its rows went with it).
 */
Datum
counter_correct(PG_FUNCTION_ARGS)
{
	CounterMeta *meta = CounterLookup(text_to_cstring(PG_GETARG_TEXT_PP(0)), true);
	text	   *key = PG_GETARG_TEXT_PP(1);
	int64		delta = PG_GETARG_INT64(2);

	if (meta == NULL || delta == 0)
		PG_RETURN_VOID();
	if (CounterApply(meta, CounterCheckKey(key), delta, NULL, false, 0) == APPLY_BOUND)
	{
		CounterEventsInsert(meta, key, delta, GetCurrentTransactionStartTimestamp());
		CommandCounterIncrement();
	}
	PG_RETURN_VOID();
}
