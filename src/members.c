/*-------------------------------------------------------------------------
 *
 * members.c
 *	  Membership counters: likes by member, on one node and across a mesh.
 *
 * A counter created with members => true counts distinct members per key.
 * Since 1.4 each (counter, key, member) has one row of counter.members, a
 * last-writer-wins register: liked or not, the node that wrote it, and its
 * stamp.  Every like() and unlike() writes the register (an unlike of a
 * member this node never saw writes an unliked row, a tombstone), stamped
 * with a hybrid logical clock kept per register: the current time, raised
 * to one microsecond past the stamp the row had, so a write that has seen
 * another is always later than it, whatever the clocks of the two nodes
 * say.  Ties between nodes go to the higher node id.
 *
 * The rows travel through the mesh (counter.members is in nodes.c's
 * mesh_tables, identified by counter name, not by the node-local id), and
 * a replica trigger (counter._members_join, counter--1.3--1.4.sql, section
 * members) keeps the later of the row it has and the one that arrives.
 * Each node counts, in its own shard, the members whose winning row is
 * liked and was written by that node: a like or unlike changes this node's
 * count in the caller's transaction (through the counter's own machinery,
 * so counting stays contention-free), and when a peer's later row replaces
 * a liked row of this node, the trigger takes 1 off this node's count
 * (counter._correct, in apply.c) in the apply worker's transaction.  So
 * every shard only ever has one writer, and once every node holds the same
 * winning rows the sum of the shards is the number of liked members.
 *
 * On one node all rows are this node's: the count is the number of liked
 * rows, changed in the transaction that changes them.  Two concurrent
 * likes by one member meet on the primary key: the second waits for the
 * first and, if it commits, finds the member liked.
 *
 * Before 1.4 (the SQL of 1.1 to 1.3 still installed) the rows are
 * node-local, by counter id: a like inserts one, an unlike deletes it
 * (legacy.c).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "funcapi.h"
#include "utils/builtins.h"

#include "apply.h"
#include "catalog.h"
#include "guc.h"
#include "legacy.h"
#include "rights.h"

PG_FUNCTION_INFO_V1(counter_like);
PG_FUNCTION_INFO_V1(counter_unlike);
PG_FUNCTION_INFO_V1(counter_is_member);
PG_FUNCTION_INFO_V1(counter_members);

/*
 * 1.4's writes of a register, $1 counter name, $2 key, $3 member, $4 this
 * node, $5 the time now, $6 liked.  The new stamp is one microsecond past
 * the row's when the clock is not.
 */
#define MEMBER_STAMP "greatest($5, m.stamp + interval '1 microsecond')"

/* insert the row, or overwrite it if it is unliked (it stays locked if not) */
static CounterStmt write_unliked_stmt = {
	"INSERT INTO counter.members AS m (counter, key, member, liked, node, stamp)"
	" VALUES ($1, $2, $3, $6, $4, $5)"
	" ON CONFLICT (counter, key, member) DO UPDATE"
	"   SET liked = $6, node = $4, stamp = " MEMBER_STAMP
	" WHERE NOT m.liked",
	6, {TEXTOID, TEXTOID, TEXTOID, INT4OID, TIMESTAMPTZOID, BOOLOID}
};

/* whether the row is liked by this node ($4) */
static CounterStmt liked_here_stmt = {
	"SELECT 1 FROM counter.members m"
	" WHERE m.counter = $1 AND m.key = $2 AND m.member = $3 AND m.liked AND m.node = $4",
	4, {TEXTOID, TEXTOID, TEXTOID, INT4OID}
};

/* overwrite the row if it is liked and, as $7 says, written by this node */
static CounterStmt write_liked_stmt = {
	"UPDATE counter.members m SET liked = $6, node = $4, stamp = " MEMBER_STAMP
	" WHERE m.counter = $1 AND m.key = $2 AND m.member = $3"
	"   AND m.liked AND (m.node = $4) = $7",
	7, {TEXTOID, TEXTOID, TEXTOID, INT4OID, TIMESTAMPTZOID, BOOLOID, BOOLOID}
};

/* $1 counter name, $2 key, $3 member: whether the member is liked */
static CounterStmt is_member_stmt = {
	"SELECT 1 FROM counter.members"
	" WHERE counter = $1 AND key = $2 AND member = $3 AND liked",
	3, {TEXTOID, TEXTOID, TEXTOID}
};

/* $1 counter name, $2 key, $3 limit, $4 after: a page of liked members */
static CounterStmt members_stmt = {
	"SELECT member FROM counter.members"
	" WHERE counter = $1 AND key = $2 AND liked AND ($4::text IS NULL OR member > $4)"
	" ORDER BY member LIMIT $3",
	4, {TEXTOID, TEXTOID, INT4OID, TEXTOID}
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

/* The member of argument 2: not null, at most 1024 bytes. */
static text *
arg_member(FunctionCallInfo fcinfo)
{
	if (PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("member must not be null")));
	return CounterCheckKey(PG_GETARG_TEXT_PP(2));
}

/* Run a write of a member row; true when it wrote the row. */
static bool
wrote(CounterStmt *stmt, Datum *values)
{
	CounterExec(stmt, values, NULL, false);
	return SPI_processed == 1;
}

/*
 * Write (liked, this node, a new stamp) into a 1.4 member register, in
 * whichever of its three states it is, each tried by its own statement;
 * the first that writes tells the state it found.  *was_liked: the member
 * was liked before; returns the change of this node's count.  A like tries
 * the insert first (a new member), an unlike the row liked by this node
 * first (the usual unlike on one node).  The insert that finds the row
 * liked leaves it locked; only an unlike can meet a row that changed
 * between its first two statements, and it finds it liked by this node at
 * the next turn.
 */
static int64
register_set(CounterMeta *meta, text *key, text *member, bool liked,
			 bool *was_liked)
{
	Datum		values[7];
	int64		delta = 0;
	int			turn;

	values[0] = CStringGetTextDatum(meta->name);
	values[1] = PointerGetDatum(key);
	values[2] = PointerGetDatum(member);
	values[3] = Int32GetDatum(counter_node_id);
	values[4] = TimestampTzGetDatum(GetCurrentTimestamp());
	values[5] = BoolGetDatum(liked);

	SPI_connect();

	/*
	 * On a node in no mesh, a like of a member this node has liked changes
	 * nothing: no peer's unlike can race it, so it needs no new stamp, and
	 * it stays one read by primary key (the single-node fast path).
	 * Anything else, and a row this read finds not liked here, takes the
	 * register's statements below.
	 */
	if (liked && CounterSingleNode())
	{
		CounterExec(&liked_here_stmt, values, NULL, false);
		if (SPI_processed == 1)
		{
			SPI_finish();
			*was_liked = true;
			return 0;
		}
	}
	for (turn = 0;; turn++)
	{
		if (turn == 2)
			ereport(ERROR,
					(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
					 errmsg("member \"%s\" of counter \"%s\" key \"%s\" changed under this call",
							text_to_cstring(member), meta->name, text_to_cstring(key)),
					 errhint("Retry the transaction.")));
		values[6] = BoolGetDatum(true);
		if (liked && wrote(&write_unliked_stmt, values))
		{
			*was_liked = false;
			delta = 1;
			break;
		}
		if (wrote(&write_liked_stmt, values))
		{
			*was_liked = true;
			delta = liked ? 0 : -1;
			break;
		}
		if (!liked && wrote(&write_unliked_stmt, values))
		{
			*was_liked = false;
			break;
		}
		values[6] = BoolGetDatum(false);
		if (wrote(&write_liked_stmt, values))
		{
			/* a like takes the member over from the node that liked it */
			*was_liked = true;
			delta = liked ? 1 : 0;
			break;
		}
	}
	SPI_finish();
	return delta;
}

/*
 * like or unlike (liked) of argument 2 in argument 1 of counter 0: write
 * the member's row, then add to this node's count what the write changed.
 * Returns whether the member was liked before.
 */
static bool
member_change(FunctionCallInfo fcinfo, bool liked)
{
	CounterMeta *meta = arg_members(fcinfo, COUNTER_PRIV_ADD);
	text	   *key = CounterArgKey(fcinfo, 1);
	text	   *member = arg_member(fcinfo);
	bool		was_liked;
	int64		delta;

	if (CounterLegacy())
		delta = CounterLegacyMemberSet(meta, key, member, liked, &was_liked);
	else
		delta = register_set(meta, key, member, liked, &was_liked);
	if (delta != 0)
		CounterApplyChecked(meta, key, delta, NULL, false, 0);
	return was_liked;
}

/* counter.like(name, key, member): true when the member was not liked (+1). */
Datum
counter_like(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(!member_change(fcinfo, true));
}

/* counter.unlike(name, key, member): true when the member was liked (-1). */
Datum
counter_unlike(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(member_change(fcinfo, false));
}

/* counter.is_member(name, key, member): "did I like this?" */
Datum
counter_is_member(PG_FUNCTION_ARGS)
{
	CounterMeta *meta = arg_members(fcinfo, COUNTER_PRIV_READ);
	Datum		values[3];
	bool		found;

	values[0] = CStringGetTextDatum(meta->name);
	values[1] = PointerGetDatum(CounterArgKey(fcinfo, 1));
	values[2] = PointerGetDatum(arg_member(fcinfo));
	SPI_connect();
	CounterExec(CounterLegacyStmt(LEGACY_IS_MEMBER, &is_member_stmt), values, NULL, true);
	found = SPI_processed == 1;
	SPI_finish();
	PG_RETURN_BOOL(found);
}

/* counter.members(name, key, limit, after): liked members in order, by pages. */
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
	values[0] = CStringGetTextDatum(meta->name);
	values[1] = PointerGetDatum(CounterArgKey(fcinfo, 1));
	values[2] = PG_GETARG_DATUM(2);
	values[3] = PG_ARGISNULL(3) ? (Datum) 0 : PG_GETARG_DATUM(3);
	nulls[3] = PG_ARGISNULL(3) ? 'n' : ' ';

	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);
	SPI_connect();
	CounterExec(CounterLegacyStmt(LEGACY_MEMBERS, &members_stmt), values, nulls, true);
	for (i = 0; i < SPI_processed; i++)
		tuplestore_puttuple(rsinfo->setResult, SPI_tuptable->vals[i]);
	SPI_finish();
	return (Datum) 0;
}
