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
#include "utils/builtins.h"

#include "apply.h"
#include "catalog.h"
#include "commit.h"
#include "events.h"
#include "guc.h"
#include "slots.h"
#include "wal.h"

PG_FUNCTION_INFO_V1(counter_correct);

static CounterStmt idem_claim_stmt = {
	"INSERT INTO counter.idempotency AS i (idem, counter_id, key, delta)"
	" VALUES ($1, $2, $3, $4)"
	" ON CONFLICT (idem) DO UPDATE SET counter_id = excluded.counter_id,"
	"   key = excluded.key, delta = excluded.delta, created = now()"
	"  WHERE i.created < now() - $5 * interval '1 second'"
	" RETURNING true",
	5, {TEXTOID, INT4OID, TEXTOID, INT8OID, INT4OID}
};

static CounterStmt idem_check_stmt = {
	"SELECT counter_id = $2 AND key = $3 AND delta = $4"
	"  FROM counter.idempotency WHERE idem = $1",
	4, {TEXTOID, INT4OID, TEXTOID, INT8OID}
};

/*
 * Claim an idempotency key for this add.  True when the add should apply;
 * false when the key was already used for the same add within the window;
 * 22023 when it was used for another add.  A transaction still holding the
 * key is waited for: if it aborts, the key is ours.
 */
static bool
idempotency_claim(CounterMeta *meta, text *key, int64 delta, text *idem)
{
	Datum		values[5];
	bool		applied;

	values[0] = PointerGetDatum(idem);
	values[1] = Int32GetDatum(meta->id);
	values[2] = PointerGetDatum(key);
	values[3] = Int64GetDatum(delta);
	values[4] = Int32GetDatum(counter_idempotency_window);

	SPI_connect();
	CounterExec(&idem_claim_stmt, values, NULL, false);
	applied = SPI_processed == 1;
	if (!applied)
	{
		bool		isnull;

		CounterExec(&idem_check_stmt, values, NULL, false);
		if (SPI_processed != 1 ||
			!DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0],
										SPI_tuptable->tupdesc, 1, &isnull)))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("idempotency key \"%s\" was already used for another add",
							text_to_cstring(idem)),
					 errdetail("A key identifies one add: the same counter, key and delta.")));
	}
	SPI_finish();
	return applied;
}

static CounterStmt idem_release_stmt = {
	"DELETE FROM counter.idempotency WHERE idem = $1",
	1, {TEXTOID}
};

/* Give back an idempotency key claimed by this transaction. */
static void
idempotency_release(text *idem)
{
	Datum		values[1] = {PointerGetDatum(idem)};

	SPI_connect();
	CounterExec(&idem_release_stmt, values, NULL, false);
	SPI_finish();
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
			if (idem != NULL)
				idempotency_release(idem);
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
 * say): a bound that the escrow would cross takes it as an event.  Nothing
 * when no such counter exists here (its rows went with it).
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
