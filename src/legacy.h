/*-------------------------------------------------------------------------
 *
 * legacy.h
 *	  Serving an installed schema older than 1.4 (see legacy.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef COUNTER_LEGACY_H
#define COUNTER_LEGACY_H

#include "catalog.h"
#include "utils/tuplestore.h"

/* what a schema older than 1.4 may lack, and the version that added it */
typedef enum CounterLegacyPart
{
	LEGACY_FLUSHED,				/* counter.flushed and counter.members (1.1) */
	LEGACY_EVENTS_1,			/* counter.events_1 and event_tables (1.2) */
	LEGACY_WAL_STATE			/* counter.wal_state (1.3) */
} CounterLegacyPart;

/*
 * The jobs whose statement differs before 1.4.  Each pre-1.4 statement
 * takes the parameters of its job's 1.4 internal function, in its order.
 */
typedef enum CounterLegacyJob
{
	LEGACY_CREATE,				/* as counter._create; feed ignored */
	LEGACY_ALTER,				/* as counter._alter; feed ignored */
	LEGACY_DROP,				/* as counter._drop */
	LEGACY_REVOKE,				/* as counter._revoke */
	LEGACY_SERIES,				/* as counter._series */
	LEGACY_IDEM_CLAIM,			/* as apply.c's idem_claim_stmt */
	LEGACY_IDEM_CHECK,			/* as apply.c's idem_check_stmt */
	LEGACY_IS_MEMBER,			/* as members.c's is_member_stmt */
	LEGACY_MEMBERS,				/* as members.c's members_stmt */
	LEGACY_VERIFY				/* as api.c's verify_stmt */
} CounterLegacyJob;

/*
 * counter.verify() of counter $1 (named $2) on node $3: for each
 * granularity, compare every key's compacted total on this node with the
 * sum of its buckets, the rows (key, value) of BUCKETS (for granularity
 * g.g; retention keeps dropped buckets' sum in the -infinity bucket, so
 * they must agree exactly).
 */
#define COUNTER_VERIFY_SQL(BUCKETS) \
	"WITH t AS (SELECT key, value FROM counter.totals WHERE counter = $2 AND node = $3)," \
	" g AS (SELECT unnest(rollups) AS g FROM counter.counters WHERE id = $1)" \
	" SELECT g.g, count(d.key), count(d.key) FILTER (WHERE d.drift <> 0)," \
	"        coalesce(sum(abs(d.drift)), 0)" \
	"   FROM g LEFT JOIN LATERAL (" \
	"     SELECT coalesce(t.key, r.key) AS key," \
	"            coalesce(t.value, 0)::numeric - coalesce(r.v, 0) AS drift" \
	"       FROM t FULL JOIN (SELECT key, sum(value) AS v FROM (" BUCKETS ") r GROUP BY key) r" \
	"         ON r.key = t.key) d ON true" \
	"  GROUP BY g.g ORDER BY g.g"

extern bool CounterLegacy(void);
extern bool CounterLegacyLacks(CounterLegacyPart part);
extern void CounterLegacyCheckMode(CounterMode mode, const char *name);
extern void CounterLegacyCheckMembers(void);
extern CounterStmt *CounterLegacyStmt(CounterLegacyJob job, CounterStmt *stmt);
extern int64 CounterLegacyMemberSet(CounterMeta *meta, text *key, text *member,
									 bool liked, bool *was_liked);
extern void CounterLegacyTop(CounterMeta *meta, int32 k, Tuplestorestate *out);

/* compaction and feed before 1.4 */
extern CounterStmt *CounterLegacyCompactEventsDelete(int table);
extern CounterStmt *CounterLegacyCompactEventsFold(int table);
extern CounterStmt *CounterLegacyCompactSlots(void);
extern CounterStmt *CounterLegacyCompactBuffered(void);
extern CounterStmt *CounterLegacyFeedNotify(void);

#endif							/* COUNTER_LEGACY_H */
