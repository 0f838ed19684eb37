/*-------------------------------------------------------------------------
 *
 * members.c
 *	  Membership counters: likes by member.
 *
 * A counter created with members => true counts distinct members per key.
 * like() inserts a (counter, key, member) row and, only if the row is new,
 * adds 1 through the counter's own machinery (slots or events, so counting
 * stays contention-free); unlike() deletes the row and, only if one was
 * deleted, adds -1.  Both happen in the caller's transaction, so the count
 * always equals the number of member rows.  Two concurrent likes by one
 * member meet on the primary key: the second waits for the first and, if
 * it commits, changes nothing.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "funcapi.h"
#include "utils/builtins.h"

#include "apply.h"
#include "catalog.h"

PG_FUNCTION_INFO_V1(counter_like);
PG_FUNCTION_INFO_V1(counter_unlike);
PG_FUNCTION_INFO_V1(counter_is_member);
PG_FUNCTION_INFO_V1(counter_members);

static CounterStmt like_stmt = {
	"INSERT INTO counter.members (counter_id, key, member) VALUES ($1, $2, $3)"
	" ON CONFLICT DO NOTHING",
	3, {INT4OID, TEXTOID, TEXTOID}
};

static CounterStmt unlike_stmt = {
	"DELETE FROM counter.members WHERE counter_id = $1 AND key = $2 AND member = $3",
	3, {INT4OID, TEXTOID, TEXTOID}
};

static CounterStmt is_member_stmt = {
	"SELECT 1 FROM counter.members WHERE counter_id = $1 AND key = $2 AND member = $3",
	3, {INT4OID, TEXTOID, TEXTOID}
};

static CounterStmt members_stmt = {
	"SELECT member FROM counter.members"
	" WHERE counter_id = $1 AND key = $2 AND ($4::text IS NULL OR member > $4)"
	" ORDER BY member LIMIT $3",
	4, {INT4OID, TEXTOID, INT4OID, TEXTOID}
};

/* The membership counter of argument 0: rights checked, 22023 if plain. */
static CounterMeta *
arg_members(FunctionCallInfo fcinfo, int privs)
{
	CounterMeta *meta = CounterArgCounter(fcinfo, privs);

	if (!meta->members)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("counter \"%s\" does not count members", meta->name),
				 errhint("Create it with counter.create('%s', members => true).",
						 meta->name)));
	return meta;
}

/*
 * Parse (name, key, member) of a membership counter, check rights, and run
 * stmt on its member row.  Returns the number of rows stmt touched.
 */
static uint64
member_exec(FunctionCallInfo fcinfo, int privs, CounterStmt *stmt,
			CounterMeta **meta, text **key)
{
	Datum		values[3];
	uint64		n;

	*meta = arg_members(fcinfo, privs);
	*key = CounterArgKey(fcinfo, 1);
	if (PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("member must not be null")));

	values[0] = Int32GetDatum((*meta)->id);
	values[1] = PointerGetDatum(*key);
	values[2] = PointerGetDatum(CounterCheckKey(PG_GETARG_TEXT_PP(2)));
	SPI_connect();
	CounterExec(stmt, values, NULL, stmt == &is_member_stmt);
	n = SPI_processed;
	SPI_finish();
	return n;
}

/* Run like or unlike; when it changed a member row, add delta to the count. */
static bool
member_change(FunctionCallInfo fcinfo, CounterStmt *stmt, int64 delta)
{
	CounterMeta *meta;
	text	   *key;
	bool		changed = member_exec(fcinfo, COUNTER_PRIV_ADD, stmt, &meta, &key) == 1;

	if (changed)
		CounterApplyChecked(meta, key, delta, NULL, false, 0);
	return changed;
}

/* counter.like(name, key, member): true when the member is new (+1). */
Datum
counter_like(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(member_change(fcinfo, &like_stmt, 1));
}

/* counter.unlike(name, key, member): true when the member was there (-1). */
Datum
counter_unlike(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(member_change(fcinfo, &unlike_stmt, -1));
}

/* counter.is_member(name, key, member): "did I like this?" */
Datum
counter_is_member(PG_FUNCTION_ARGS)
{
	CounterMeta *meta;
	text	   *key;

	PG_RETURN_BOOL(member_exec(fcinfo, COUNTER_PRIV_READ, &is_member_stmt, &meta, &key) == 1);
}

/* counter.members(name, key, limit, after): members in order, by pages. */
Datum
counter_members(PG_FUNCTION_ARGS)
{
	CounterMeta *meta = arg_members(fcinfo, COUNTER_PRIV_READ);
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	Datum		values[4];
	char		nulls[4] = {' ', ' ', ' ', ' '};
	uint64		i;

	if (PG_ARGISNULL(2) || PG_GETARG_INT32(2) < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("limit must be a non-negative number")));
	values[0] = Int32GetDatum(meta->id);
	values[1] = PointerGetDatum(CounterArgKey(fcinfo, 1));
	values[2] = PG_GETARG_DATUM(2);
	values[3] = PG_ARGISNULL(3) ? (Datum) 0 : PG_GETARG_DATUM(3);
	nulls[3] = PG_ARGISNULL(3) ? 'n' : ' ';

	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);
	SPI_connect();
	CounterExec(&members_stmt, values, nulls, true);
	for (i = 0; i < SPI_processed; i++)
		tuplestore_puttuple(rsinfo->setResult, SPI_tuptable->vals[i]);
	SPI_finish();
	return (Datum) 0;
}
