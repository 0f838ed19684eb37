/*-------------------------------------------------------------------------
 *
 * api.c
 *	  The SQL-callable API of schema counter: managing counters, adding,
 *	  reading, and maintenance.
 *
 * Every function checks the caller's rights on the counter itself
 * (catalog.c) and then reaches the hidden tables either directly (apply.c
 * and read.c, the hot paths) or through SPI plans run as the extension's
 * owner.  None is
 * SECURITY DEFINER and none carries a SET clause: both cost measurably per
 * call, and the checks here make them unnecessary.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/async.h"
#include "common/int.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "tcop/utility.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/lsyscache.h"
#include "utils/snapmgr.h"

#include "apply.h"
#include "buffer.h"
#include "catalog.h"
#include "commit.h"
#include "compact.h"
#include "guc.h"
#include "legacy.h"
#include "read.h"
#include "topk.h"
#include "wal.h"

PG_FUNCTION_INFO_V1(counter_create);
PG_FUNCTION_INFO_V1(counter_alter);
PG_FUNCTION_INFO_V1(counter_drop);
PG_FUNCTION_INFO_V1(counter_grant);
PG_FUNCTION_INFO_V1(counter_revoke);
PG_FUNCTION_INFO_V1(counter_add);
PG_FUNCTION_INFO_V1(counter_add_and_get);
PG_FUNCTION_INFO_V1(counter_try_add);
PG_FUNCTION_INFO_V1(counter_add_many);
PG_FUNCTION_INFO_V1(counter_increment);
PG_FUNCTION_INFO_V1(counter_decrement);
PG_FUNCTION_INFO_V1(counter_reset);
PG_FUNCTION_INFO_V1(counter_value);
PG_FUNCTION_INFO_V1(counter_values);
PG_FUNCTION_INFO_V1(counter_get);
PG_FUNCTION_INFO_V1(counter_top);
PG_FUNCTION_INFO_V1(counter_series);
PG_FUNCTION_INFO_V1(counter_compact);
PG_FUNCTION_INFO_V1(counter_verify);
PG_FUNCTION_INFO_V1(counter_can_read);
PG_FUNCTION_INFO_V1(counter_channel);
PG_FUNCTION_INFO_V1(counter_buffered);
PG_FUNCTION_INFO_V1(counter_buffered_unflushed);
PG_FUNCTION_INFO_V1(counter_buffered_fallbacks);

/* Parameters ($1 id, $2 name, $3 this node) of statements on one counter. */
static void
counter_params(CounterMeta *meta, Datum *values)
{
	values[0] = Int32GetDatum(meta->id);
	values[1] = CStringGetTextDatum(meta->name);
	values[2] = Int32GetDatum(counter_node_id);
}

/* Fetch an int8 argument that must not be NULL (22004). */
static int64
arg_int8(FunctionCallInfo fcinfo, int argno, const char *what)
{
	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not be null", what)));
	return PG_GETARG_INT64(argno);
}

/*
 * The longest granularity or retention: 100 years as days.  With it, the
 * bucket of every time an add accepts (check_at) is a timestamp, and so is
 * now() minus any retention.
 */
#define MAX_INTERVAL_DAYS		36525

/*
 * Validate a granularity or retention array: one dimension, no NULLs unless
 * allow_nulls, every interval positive and at most MAX_INTERVAL_DAYS days
 * (a month counting 30) and, for granularities, without months or years
 * (buckets are date_bin()'d), in whole seconds (compaction sums rows
 * per second first) and no two equal.  Returns the element count.
 */
static int
check_intervals(ArrayType *arr, const char *what, bool allow_nulls, bool binnable)
{
	Datum	   *elems;
	bool	   *nulls;
	int			n;
	int			i;

	if (ARR_NDIM(arr) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be a one-dimensional array", what)));
	deconstruct_array(arr, INTERVALOID, sizeof(Interval), false, TYPALIGN_DOUBLE,
					  &elems, &nulls, &n);
	for (i = 0; i < n; i++)
	{
		Interval   *iv;

		if (nulls[i])
		{
			if (!allow_nulls)
				ereport(ERROR,
						(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
						 errmsg("%s must not contain NULL", what)));
			continue;
		}
		iv = DatumGetIntervalP(elems[i]);
		if (iv->month < 0 || iv->day < 0 || iv->time < 0 ||
			(iv->month == 0 && iv->day == 0 && iv->time == 0))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s must contain positive intervals", what)));
		if ((int128) iv->month * DAYS_PER_MONTH * USECS_PER_DAY +
			(int128) iv->day * USECS_PER_DAY + iv->time >
			(int128) MAX_INTERVAL_DAYS * USECS_PER_DAY)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s must contain intervals of at most %d days", what,
							MAX_INTERVAL_DAYS)));
		if (binnable && iv->month != 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s cannot contain months or years", what),
					 errhint("Use days, e.g. '30 days'.")));
		if (binnable && iv->time % USECS_PER_SEC != 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s must be whole seconds", what)));
	}
	/* two equal granularities would fold each add twice into one rollups row */
	for (i = 0; binnable && i < n; i++)
	{
		int			j;

		for (j = 0; j < i; j++)
			if (!nulls[i] && !nulls[j] &&
				DatumGetBool(DirectFunctionCall2(interval_eq, elems[i], elems[j])))
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("%s must not contain the same granularity twice", what),
						 errdetail("%s and %s are equal.",
								   DatumGetCString(DirectFunctionCall1(interval_out, elems[j])),
								   DatumGetCString(DirectFunctionCall1(interval_out, elems[i])))));
	}
	return n;
}

/* Check a slot limit: 1 to 1024 (22023). */
static void
check_slots(int32 slots)
{
	if (slots < 1 || slots > 1024)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("slots must be between 1 and 1024, not %d", slots)));
}

/* Parse a mode; an older installed schema may lack it (legacy.c). */
static CounterMode
check_mode(const char *name)
{
	CounterMode mode = CounterParseMode(name);

	if (CounterLegacy())
		CounterLegacyCheckMode(mode, name);
	if (mode == COUNTER_MODE_WAL && !CounterWalPossible())
		ereport(WARNING,
				(errmsg("adds to a wal-mode counter are stored as events on this server"),
				 errdetail("Wal mode needs shared_preload_libraries = 'counter', wal_level replica or logical, and a free replication slot."),
				 errhint("The counter stays exact and durable either way; only faster once wal mode is on.")));
	return mode;
}

/* $1 name, $2 owner, $3 mode, $4 slots, ... $9 members, $10 feed */
static CounterStmt create_stmt = {
	"SELECT counter._create($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
	10, {TEXTOID, OIDOID, TEXTOID, INT4OID, INTERVALARRAYOID, INTERVALARRAYOID,
	INT8OID, INT8OID, BOOLOID, BOOLOID}
};

/*
 * Argument argno into values[i] and nulls[i], NULL when the call has no
 * such argument: the feed, last argument of create and alter, which the
 * SQL functions of schemas older than 1.4 do not pass.
 */
static void
opt_arg(FunctionCallInfo fcinfo, int argno, Datum *values, char *nulls, int i)
{
	bool		isnull = PG_NARGS() <= argno || PG_ARGISNULL(argno);

	values[i] = isnull ? (Datum) 0 : PG_GETARG_DATUM(argno);
	nulls[i] = isnull ? 'n' : ' ';
}

/*
 * counter.create(name, mode, slots, rollups, retention, min, max, members
 * [, feed]): a new counter owned by the calling role.
 */
Datum
counter_create(PG_FUNCTION_ARGS)
{
	char	   *name = CounterArgName(fcinfo, 0);
	Datum		values[10];
	char		nulls[10];
	int			nrollups;
	int			i;

	for (i = 1; i < 8; i++)
		if (i != 4 && i != 5 && i != 6 && PG_ARGISNULL(i))
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("argument %d of counter.create must not be null", i + 1)));
	if (strlen(name) < 1 || strlen(name) > COUNTER_NAME_MAXLEN)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("counter name must have 1 to %d bytes", COUNTER_NAME_MAXLEN)));
	check_mode(text_to_cstring(PG_GETARG_TEXT_PP(1)));
	check_slots(PG_GETARG_INT32(2));
	if (PG_ARGISNULL(3))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("rollups must not be null"),
				 errhint("Use '{}' for a counter without rollups.")));
	nrollups = check_intervals(PG_GETARG_ARRAYTYPE_P(3), "rollups", false, true);
	if (!PG_ARGISNULL(4) &&
		check_intervals(PG_GETARG_ARRAYTYPE_P(4), "retention", true, false) != nrollups)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("retention must have one element per rollup granularity")));
	if (!PG_ARGISNULL(5) || !PG_ARGISNULL(6))
	{
		if ((!PG_ARGISNULL(5) && PG_GETARG_INT64(5) > 0) ||
			(!PG_ARGISNULL(6) && PG_GETARG_INT64(6) < 0))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("bounds must include 0, the value of every new key"),
					 errhint("Use min <= 0 <= max.")));
		if (CounterParseMode(text_to_cstring(PG_GETARG_TEXT_PP(1))) != COUNTER_MODE_SLOTS)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("a bounded counter must use mode \"slots\""),
					 errdetail("Bounds are kept exact by escrow shares held in slot rows.")));
	}
	if (PG_ARGISNULL(7))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("members must not be null")));
	if (PG_NARGS() > 8 && PG_ARGISNULL(8))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("feed must not be null")));

	if (PG_GETARG_BOOL(7) && CounterLegacy())
		CounterLegacyCheckMembers();
	if (CounterLookup(name, true) != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("counter \"%s\" already exists", name)));

	memset(nulls, ' ', sizeof(nulls));
	values[0] = PG_GETARG_DATUM(0);
	values[1] = ObjectIdGetDatum(GetUserId());
	values[2] = PG_GETARG_DATUM(1);
	values[3] = PG_GETARG_DATUM(2);
	values[4] = PG_GETARG_DATUM(3);
	values[5] = PG_ARGISNULL(4) ? (Datum) 0 : PG_GETARG_DATUM(4);
	nulls[5] = PG_ARGISNULL(4) ? 'n' : ' ';
	values[6] = PG_ARGISNULL(5) ? (Datum) 0 : PG_GETARG_DATUM(5);
	nulls[6] = PG_ARGISNULL(5) ? 'n' : ' ';
	values[7] = PG_ARGISNULL(6) ? (Datum) 0 : PG_GETARG_DATUM(6);
	nulls[7] = PG_ARGISNULL(6) ? 'n' : ' ';
	values[8] = PG_GETARG_DATUM(7);
	opt_arg(fcinfo, 8, values, nulls, 9);

	SPI_connect();
	CounterExec(CounterLegacyStmt(LEGACY_CREATE, &create_stmt), values, nulls, false);
	SPI_finish();
	CounterInvalidate();
	PG_RETURN_VOID();
}

/*
 * $1 id, $2 mode, $3 slots, $4 rollups, $5 retention, $6 this node, $7
 * feed; NULL keeps a setting.
 */
static CounterStmt alter_stmt = {
	"SELECT counter._alter($1, $2, $3, $4, $5, $6, $7)",
	7, {INT4OID, TEXTOID, INT4OID, INTERVALARRAYOID, INTERVALARRAYOID, INT4OID, BOOLOID}
};

/*
 * counter.alter(name, mode, slots, rollups, retention [, feed]): NULL keeps
 * a setting.
 * Changing mode or slots is exact at once, since reads sum every source.
 */
Datum
counter_alter(PG_FUNCTION_ARGS)
{
	CounterMeta *meta = CounterArgCounter(fcinfo, COUNTER_PRIV_ADMIN);
	Datum		values[7];
	char		nulls[7];
	int			nrollups = -1;
	int			i;

	if (!PG_ARGISNULL(1) &&
		check_mode(text_to_cstring(PG_GETARG_TEXT_PP(1))) != COUNTER_MODE_SLOTS &&
		(meta->has_min || meta->has_max))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("a bounded counter must use mode \"slots\"")));
	if (!PG_ARGISNULL(2))
		check_slots(PG_GETARG_INT32(2));
	if (!PG_ARGISNULL(3))
		nrollups = check_intervals(PG_GETARG_ARRAYTYPE_P(3), "rollups", false, true);
	if (!PG_ARGISNULL(4))
	{
		int			nret = check_intervals(PG_GETARG_ARRAYTYPE_P(4), "retention", true, false);

		if (nrollups < 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("retention can only be changed together with rollups")));
		if (nret != nrollups)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("retention must have one element per rollup granularity")));
	}

	values[0] = Int32GetDatum(meta->id);
	nulls[0] = ' ';
	for (i = 1; i < 5; i++)
	{
		values[i] = PG_ARGISNULL(i) ? (Datum) 0 : PG_GETARG_DATUM(i);
		nulls[i] = PG_ARGISNULL(i) ? 'n' : ' ';
	}
	values[5] = Int32GetDatum(counter_node_id);
	nulls[5] = ' ';
	opt_arg(fcinfo, 5, values, nulls, 6);

	/* rollups must not change under a running compaction */
	if (!PG_ARGISNULL(3))
		CounterCompactLock(true);

	SPI_connect();
	CounterExec(CounterLegacyStmt(LEGACY_ALTER, &alter_stmt), values, nulls, false);
	SPI_finish();
	CounterInvalidate();
	PG_RETURN_VOID();
}

/* $1 id, $2 name, $3 this node */
static CounterStmt drop_stmt = {
	"SELECT counter._drop($1, $2, $3)", 3, {INT4OID, TEXTOID, INT4OID}
};

/*
 * counter.drop(name): the counter and all its rows of this node.  Rows that
 * peer nodes replicate here are theirs and stay (drop on every node).
 */
Datum
counter_drop(PG_FUNCTION_ARGS)
{
	CounterMeta *meta = CounterArgCounter(fcinfo, COUNTER_PRIV_ADMIN);
	Datum		values[3];

	counter_params(meta, values);
	/* a compaction in flight would re-add rows this statement cannot see */
	CounterCompactLock(true);
	SPI_connect();
	CounterExec(CounterLegacyStmt(LEGACY_DROP, &drop_stmt), values, NULL, false);
	SPI_finish();
	CounterInvalidate();
	PG_RETURN_VOID();
}

static CounterStmt grant_stmt = {
	"INSERT INTO counter.grants (counter_id, grantee, privilege) VALUES ($1, $2, $3)"
	" ON CONFLICT DO NOTHING",
	3, {INT4OID, OIDOID, TEXTOID}
};

/*
 * $1 id, $2 grantee, $3 privilege.  Taking a read right away (read, or
 * admin, which includes it) also gives the counter a new feed channel, so
 * the role that lost the right can follow the feed no longer.
 */
static CounterStmt revoke_stmt = {
	"SELECT counter._revoke($1, $2, $3)", 3, {INT4OID, OIDOID, TEXTOID}
};

/*
 * Shared body of counter.grant and counter.revoke; returns the counter, as
 * it was before the change.
 */
static CounterMeta *
grant_or_revoke(FunctionCallInfo fcinfo, CounterStmt *stmt)
{
	CounterMeta *meta = CounterArgCounter(fcinfo, COUNTER_PRIV_ADMIN);
	char	   *role;
	char	   *priv;
	Datum		values[3];

	if (PG_ARGISNULL(1) || PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("role and privilege must not be null")));
	role = text_to_cstring(PG_GETARG_TEXT_PP(1));
	priv = text_to_cstring(PG_GETARG_TEXT_PP(2));
	if (strcmp(priv, "read") != 0 && strcmp(priv, "add") != 0 &&
		strcmp(priv, "admin") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid counter privilege \"%s\"", priv),
				 errhint("Valid privileges are \"read\", \"add\" and \"admin\".")));

	values[0] = Int32GetDatum(meta->id);
	values[1] = ObjectIdGetDatum(pg_strcasecmp(role, "public") == 0 ?
								 InvalidOid : get_role_oid(role, false));
	values[2] = CStringGetTextDatum(priv);
	SPI_connect();
	CounterExec(stmt, values, NULL, false);
	SPI_finish();
	CounterInvalidate();
	return meta;
}

/* counter.grant(name, role, 'read'|'add'|'admin'); role may be 'public'. */
Datum
counter_grant(PG_FUNCTION_ARGS)
{
	grant_or_revoke(fcinfo, &grant_stmt);
	PG_RETURN_VOID();
}

/*
 * counter.revoke(name, role, privilege): undo one grant.  Revoking read or
 * admin rotates the feed channel (even when the role held no such grant:
 * that is how to cut off a role that lost the right through a membership)
 * and, at commit, sends an empty array on the old channel: the readers
 * still listening there ask counter.channel() for the new one.
 */
Datum
counter_revoke(PG_FUNCTION_ARGS)
{
	CounterMeta *meta = grant_or_revoke(fcinfo,
										CounterLegacyStmt(LEGACY_REVOKE, &revoke_stmt));

	/* grant_or_revoke checked the privilege's name; no channel before 1.4 */
	if (meta->feed_channel[0] != '\0' &&
		strcmp(text_to_cstring(PG_GETARG_TEXT_PP(2)), "add") != 0)
		Async_Notify(meta->feed_channel, "[]");
	PG_RETURN_VOID();
}

/* The counter of argument 0, for plain adds: 42501 without rights to add. */
static CounterMeta *
arg_addable(FunctionCallInfo fcinfo, int privs)
{
	CounterMeta *meta = CounterArgCounter(fcinfo, privs);

	if (meta->members)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("counter \"%s\" counts members", meta->name),
				 errhint("Use counter.like() and counter.unlike().")));
	return meta;
}

/* Read a key's value as the current transaction now sees it. */
static int64
read_own_value(CounterMeta *meta, text *key)
{
	Snapshot	snapshot = RegisterSnapshot(GetTransactionSnapshot());
	int64		value = CounterReadValue(meta, key, snapshot);

	UnregisterSnapshot(snapshot);
	return value;
}

/*
 * Check the time of a back-dated add: finite, and at least the longest
 * granularity after the earliest timestamp, so that its bucket in every
 * rollup a counter can have is a timestamp too (22008).
 */
static TimestampTz
check_at(TimestampTz at)
{
	TimestampTz earliest = MIN_TIMESTAMP + (int64) MAX_INTERVAL_DAYS * USECS_PER_DAY;
	struct pg_tm tm;
	fsec_t		fsec;
	char		buf[MAXDATELEN + 1];

	if (!TIMESTAMP_NOT_FINITE(at) && at >= earliest)
		return at;
	if (timestamp2tm(earliest, NULL, &tm, &fsec, NULL, NULL) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg_internal("earliest time of a back-dated add out of range")));
	EncodeDateTime(&tm, fsec, false, 0, NULL, USE_ISO_DATES, buf);
	ereport(ERROR,
			(errcode(ERRCODE_DATETIME_FIELD_OVERFLOW),
			 errmsg("at must be finite and not before %s UTC", buf),
			 errdetail("Its bucket in a rollup of up to %d days must be a timestamp too.",
					   MAX_INTERVAL_DAYS)));
	return 0;					/* keep compiler quiet */
}

/*
 * Shared body of add, add_and_get and try_add: parse (name, key, delta,
 * idempotency_key[, at]), check rights (read too when the value is
 * returned), apply.
 */
static ApplyResult
add_common(FunctionCallInfo fcinfo, int privs, bool with_at, CounterMeta **meta,
		   text **key)
{
	int64		delta;
	text	   *idem;
	bool		has_at = with_at && !PG_ARGISNULL(4);

	*meta = arg_addable(fcinfo, privs);
	*key = CounterArgKey(fcinfo, 1);
	delta = arg_int8(fcinfo, 2, "delta");
	idem = PG_ARGISNULL(3) ? NULL : PG_GETARG_TEXT_PP(3);
	return CounterApply(*meta, *key, delta, idem, has_at,
						 has_at ? check_at(PG_GETARG_TIMESTAMPTZ(4)) : 0);
}

/* counter.add(name, key, delta, idempotency_key, at): the hot path. */
Datum
counter_add(PG_FUNCTION_ARGS)
{
	CounterMeta *meta;
	text	   *key;

	if (add_common(fcinfo, COUNTER_PRIV_ADD, true, &meta, &key) == APPLY_BOUND)
		CounterBoundError(meta, key, PG_GETARG_INT64(2));
	PG_RETURN_VOID();
}

/* counter.add_and_get(...): add, then the new value this transaction sees. */
Datum
counter_add_and_get(PG_FUNCTION_ARGS)
{
	CounterMeta *meta;
	text	   *key;

	if (add_common(fcinfo, COUNTER_PRIV_ADD | COUNTER_PRIV_READ, false,
				   &meta, &key) == APPLY_BOUND)
		CounterBoundError(meta, key, PG_GETARG_INT64(2));
	PG_RETURN_INT64(read_own_value(meta, key));
}

/* counter.try_add(...): like add_and_get, but NULL where a bound stops it. */
Datum
counter_try_add(PG_FUNCTION_ARGS)
{
	CounterMeta *meta;
	text	   *key;

	if (add_common(fcinfo, COUNTER_PRIV_ADD | COUNTER_PRIV_READ, false,
				   &meta, &key) == APPLY_BOUND)
		PG_RETURN_NULL();
	PG_RETURN_INT64(read_own_value(meta, key));
}

/* One (key, delta) of add_many. */
typedef struct KeyDelta
{
	text	   *key;
	int64		delta;
} KeyDelta;

/* Order keys bytewise, as the "C" collation of our key columns does. */
static int
keydelta_cmp(const void *a, const void *b)
{
	text	   *ka = ((const KeyDelta *) a)->key;
	text	   *kb = ((const KeyDelta *) b)->key;
	int			la = VARSIZE_ANY_EXHDR(ka);
	int			lb = VARSIZE_ANY_EXHDR(kb);
	int			c = memcmp(VARDATA_ANY(ka), VARDATA_ANY(kb), Min(la, lb));

	return c != 0 ? c : (la > lb) - (la < lb);
}

/*
 * counter.add_many(name, keys[], deltas[]): many adds in one call.  Keys are
 * sorted, so concurrent batches lock slot rows in one order and cannot
 * deadlock, and each key's deltas are summed first, so a batch costs one
 * add per distinct key.  Returns the number of adds (array elements).
 */
Datum
counter_add_many(PG_FUNCTION_ARGS)
{
	CounterMeta *meta = arg_addable(fcinfo, COUNTER_PRIV_ADD);
	Datum	   *keys;
	bool	   *knulls;
	Datum	   *deltas = NULL;
	bool	   *dnulls = NULL;
	int			nkeys;
	int			ndeltas;
	int			i;
	int			n = 0;
	KeyDelta   *kd;

	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("keys must not be null")));
	deconstruct_array(PG_GETARG_ARRAYTYPE_P(1), TEXTOID, -1, false, TYPALIGN_INT,
					  &keys, &knulls, &nkeys);
	if (!PG_ARGISNULL(2))
	{
		deconstruct_array(PG_GETARG_ARRAYTYPE_P(2), INT8OID, 8, FLOAT8PASSBYVAL,
						  TYPALIGN_DOUBLE, &deltas, &dnulls, &ndeltas);
		if (ndeltas != nkeys)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("keys and deltas must have the same length, not %d and %d",
							nkeys, ndeltas)));
	}
	if (nkeys == 0)
		PG_RETURN_INT64(0);

	kd = palloc(sizeof(KeyDelta) * nkeys);
	for (i = 0; i < nkeys; i++)
	{
		if (knulls[i] || (dnulls != NULL && dnulls[i]))
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("keys and deltas must not contain NULL")));
		kd[i].key = CounterCheckKey(DatumGetTextPP(keys[i]));
		kd[i].delta = deltas ? DatumGetInt64(deltas[i]) : 1;
	}
	qsort(kd, nkeys, sizeof(KeyDelta), keydelta_cmp);
	for (i = 0; i < nkeys; i++)
	{
		if (n > 0 && keydelta_cmp(&kd[n - 1], &kd[i]) == 0)
		{
			if (pg_add_s64_overflow(kd[n - 1].delta, kd[i].delta, &kd[n - 1].delta))
				ereport(ERROR,
						(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
						 errmsg("sum of deltas for key \"%s\" out of range for bigint",
								text_to_cstring(kd[i].key))));
		}
		else
			kd[n++] = kd[i];
	}
	for (i = 0; i < n; i++)
		CounterApplyChecked(meta, kd[i].key, kd[i].delta, NULL, false, 0);
	PG_RETURN_INT64(nkeys);
}

/* counter.increment(name, key): add 1. */
Datum
counter_increment(PG_FUNCTION_ARGS)
{
	CounterMeta *meta = arg_addable(fcinfo, COUNTER_PRIV_ADD);

	CounterApplyChecked(meta, CounterArgKey(fcinfo, 1), 1, NULL, false, 0);
	PG_RETURN_VOID();
}

/* counter.decrement(name, key): add -1. */
Datum
counter_decrement(PG_FUNCTION_ARGS)
{
	CounterMeta *meta = arg_addable(fcinfo, COUNTER_PRIV_ADD);

	CounterApplyChecked(meta, CounterArgKey(fcinfo, 1), -1, NULL, false, 0);
	PG_RETURN_VOID();
}

/*
 * counter.reset(name, key): subtract the value this transaction sees, so
 * the key reads 0; adds still in flight elsewhere count after it.  Returns
 * the value removed.
 */
Datum
counter_reset(PG_FUNCTION_ARGS)
{
	CounterMeta *meta = arg_addable(fcinfo, COUNTER_PRIV_ADD | COUNTER_PRIV_READ);
	text	   *key = CounterArgKey(fcinfo, 1);
	int64		value = read_own_value(meta, key);

	if (value == PG_INT64_MIN)
		ereport(ERROR,
				(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
				 errmsg("counter value out of range for reset")));
	CounterApplyChecked(meta, key, -value, NULL, false, 0);
	PG_RETURN_INT64(value);
}

/* counter.value(name, key): the exact value in the statement's snapshot. */
Datum
counter_value(PG_FUNCTION_ARGS)
{
	CounterMeta *meta = CounterArgCounter(fcinfo, COUNTER_PRIV_READ);

	PG_RETURN_INT64(CounterReadValue(meta, CounterArgKey(fcinfo, 1),
									 GetActiveSnapshot()));
}

/*
 * counter.get(name, key): the exact value and the time of the latest add
 * it counts (NULL when none is known), in the statement's snapshot; one
 * read, as value()'s, for an API's {count, updated_at}.
 */
Datum
counter_get(PG_FUNCTION_ARGS)
{
	CounterMeta *meta = CounterArgCounter(fcinfo, COUNTER_PRIV_READ);
	TimestampTz updated;
	TupleDesc	tupdesc;
	Datum		values[2];
	bool		nulls[2] = {false, false};

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("function returning record called in context that cannot accept type record")));
	values[0] = Int64GetDatum(CounterReadValueAt(meta, CounterArgKey(fcinfo, 1),
												 GetActiveSnapshot(), &updated));
	values[1] = TimestampTzGetDatum(updated);
	nulls[1] = TIMESTAMP_NOT_FINITE(updated);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(tupdesc),
													  values, nulls)));
}

/* counter.values(name, keys[]): (key, value) per key, in one snapshot. */
Datum
counter_values(PG_FUNCTION_ARGS)
{
	CounterMeta *meta = CounterArgCounter(fcinfo, COUNTER_PRIV_READ);
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	ArrayType  *arr;
	Datum	   *keys;
	bool	   *knulls;
	int			n;
	int			i;

	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("keys must not be null")));
	arr = PG_GETARG_ARRAYTYPE_P(1);
	deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT, &keys, &knulls, &n);
	InitMaterializedSRF(fcinfo, 0);
	for (i = 0; i < n; i++)
	{
		Datum		values[2];
		bool		nulls[2] = {false, false};
		text	   *key;

		if (knulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("counter key must not be null")));
		key = CounterCheckKey(DatumGetTextPP(keys[i]));
		values[0] = keys[i];
		values[1] = Int64GetDatum(CounterReadValue(meta, key, GetActiveSnapshot()));
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

/* Run a read-only statement and return all its rows as the SRF's result. */
static void
return_rows(FunctionCallInfo fcinfo, CounterStmt *stmt, Datum *values,
			const char *nulls)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	uint64		i;

	InitMaterializedSRF(fcinfo, 0);
	SPI_connect();
	CounterExec(stmt, values, nulls, true);
	for (i = 0; i < SPI_processed; i++)
		tuplestore_puttuple(rsinfo->setResult, SPI_tuptable->vals[i]);
	SPI_finish();
}

/*
 * counter.top(name, k): the k keys of highest value, exactly, read through
 * indexes in C (topk.c); by statement in an older schema (legacy.c).
 */
Datum
counter_top(PG_FUNCTION_ARGS)
{
	CounterMeta *meta = CounterArgCounter(fcinfo, COUNTER_PRIV_READ);
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;

	if (PG_ARGISNULL(1) || PG_GETARG_INT32(1) < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("k must be a non-negative number")));
	InitMaterializedSRF(fcinfo, 0);
	if (CounterLegacy())
		CounterLegacyTop(meta, PG_GETARG_INT32(1), rsinfo->setResult);
	else
		CounterReadTop(meta, PG_GETARG_INT32(1), GetActiveSnapshot(),
					   rsinfo->setResult, rsinfo->setDesc);
	return (Datum) 0;
}

/*
 * $1 id, $2 key, $3 from, $4 to, $5 granularity: the non-empty buckets,
 * counting what is not compacted yet.
 */
static CounterStmt series_stmt = {
	"SELECT bucket, value FROM counter._series($1, $2, $3, $4, $5)", 5,
	{INT4OID, TEXTOID, TIMESTAMPTZOID, TIMESTAMPTZOID, INTERVALOID}
};

static CounterStmt has_granularity_stmt = {
	"SELECT $2 = ANY (rollups) FROM counter.counters WHERE id = $1",
	2, {INT4OID, INTERVALOID}
};

/* counter.series(name, key, from, to, granularity): non-empty buckets. */
Datum
counter_series(PG_FUNCTION_ARGS)
{
	CounterMeta *meta = CounterArgCounter(fcinfo, COUNTER_PRIV_READ);
	text	   *key = CounterArgKey(fcinfo, 1);
	Datum		values[5];
	bool		has;
	bool		isnull;
	int			i;

	for (i = 2; i < 5; i++)
		if (PG_ARGISNULL(i))
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("from, to and granularity must not be null")));
	values[0] = Int32GetDatum(meta->id);
	values[1] = PointerGetDatum(key);
	values[2] = PG_GETARG_DATUM(2);
	values[3] = PG_GETARG_DATUM(3);
	values[4] = PG_GETARG_DATUM(4);

	SPI_connect();
	CounterExec(&has_granularity_stmt, (Datum[]) {values[0], values[4]}, NULL, true);
	has = SPI_processed == 1 &&
		DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	SPI_finish();
	if (!has)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("counter \"%s\" keeps no rollup of granularity %s",
						meta->name,
						DatumGetCString(DirectFunctionCall1(interval_out, values[4]))),
				 errhint("Add it with counter.alter('%s', rollups => ...).", meta->name)));

	return_rows(fcinfo, CounterLegacyStmt(LEGACY_SERIES, &series_stmt), values, NULL);
	return (Datum) 0;
}

/*
 * counter.compact(name): compact now; rows moved.  A named counter needs the
 * read right; all counters at once (NULL) the rights of the extension's
 * owner, as it works on every role's counters.
 */
Datum
counter_compact(PG_FUNCTION_ARGS)
{
	int32		id = 0;

	if (!PG_ARGISNULL(0))
		id = CounterArgCounter(fcinfo, COUNTER_PRIV_READ)->id;
	else if (!has_privs_of_role(GetUserId(), CounterGetRels()->owner))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to compact every counter"),
				 errhint("Name a counter you can read: counter.compact('name').")));
	PG_RETURN_INT64(CounterCompact(id, true));
}

/*
 * For each granularity, the buckets of counter.rollups, or, for a key whose
 * total holds its buckets (totals.sole, since 1.4), its total itself
 * (COUNTER_VERIFY_SQL).
 */
static CounterStmt verify_stmt = {
	COUNTER_VERIFY_SQL("SELECT key, value FROM counter.rollups"
					   " WHERE counter_id = $1 AND granularity = g.g"
					   " UNION ALL"
					   " SELECT key, value FROM counter.totals"
					   " WHERE counter = $2 AND node = $3 AND sole IS NOT NULL"),
	3, {INT4OID, TEXTOID, INT4OID}
};

/* counter.verify(name): drift between totals and rollups; must be 0. */
Datum
counter_verify(PG_FUNCTION_ARGS)
{
	CounterMeta *meta = CounterArgCounter(fcinfo, COUNTER_PRIV_READ);
	Datum		values[3];

	counter_params(meta, values);
	return_rows(fcinfo, CounterLegacyStmt(LEGACY_VERIFY, &verify_stmt), values, NULL);
	return (Datum) 0;
}

/*
 * counter.channel(name): the channel of the counter's change
 * feed, told only to a role that may read it.
 */
Datum
counter_channel(PG_FUNCTION_ARGS)
{
	CounterMeta *meta = CounterArgCounter(fcinfo, COUNTER_PRIV_READ);

	PG_RETURN_TEXT_P(cstring_to_text(meta->feed_channel));
}

/* counter.can_read(name): filter of the counter.stats view. */
Datum
counter_can_read(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(CounterCanRead(text_to_cstring(PG_GETARG_TEXT_PP(0))));
}

/*
 * counter._buffered(name): (key, base + added) of the counter's entries,
 * with this transaction's own pending adds: what top() adds to totals,
 * less the flushed amounts its snapshot sees.
 */
Datum
counter_buffered(PG_FUNCTION_ARGS)
{
	CounterMeta *meta = CounterArgCounter(fcinfo, COUNTER_PRIV_READ);
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	CounterBufferEntry *entries;
	int			n;
	int			i;

	InitMaterializedSRF(fcinfo, 0);
	entries = CounterBufferEntries(meta, &n);
	for (i = 0; i < n; i++)
	{
		CounterBufferEntry *e = &entries[i];
		Datum		values[2];
		bool		nulls[2] = {false, false};

		values[0] = PointerGetDatum(cstring_to_text_with_len(e->key.key, e->key.keylen));
		values[1] = Int64GetDatum(e->sum + CounterCommitPendingKey(&e->key, NULL));
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

/* counter._buffered_unflushed(name): for counter.stats; NULL if unreadable. */
Datum
counter_buffered_unflushed(PG_FUNCTION_ARGS)
{
	CounterMeta *meta;

	if (!CounterCanRead(text_to_cstring(PG_GETARG_TEXT_PP(0))))
		PG_RETURN_NULL();
	meta = CounterLookup(text_to_cstring(PG_GETARG_TEXT_PP(0)), false);
	PG_RETURN_INT64(CounterBufferUnflushed(meta));
}

/*
 * counter._buffered_fallbacks(name): for counter.stats, the adds of new
 * keys stored as events since the server started because the shared hash
 * was full; NULL if unreadable.
 */
Datum
counter_buffered_fallbacks(PG_FUNCTION_ARGS)
{
	CounterMeta *meta;

	if (!CounterCanRead(text_to_cstring(PG_GETARG_TEXT_PP(0))))
		PG_RETURN_NULL();
	meta = CounterLookup(text_to_cstring(PG_GETARG_TEXT_PP(0)), false);
	PG_RETURN_INT64(CounterBufferFallbacks(meta));
}
