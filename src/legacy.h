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
	LEGACY_MEMBERS				/* as members.c's members_stmt */
} CounterLegacyJob;

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
