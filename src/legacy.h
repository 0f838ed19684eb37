/*-------------------------------------------------------------------------
 *
 * legacy.h
 *	  Statements for the schemas of versions before 1.4, until ALTER
 *	  EXTENSION counter UPDATE.
 *
 *-------------------------------------------------------------------------
 */
#ifndef COUNTER_LEGACY_H
#define COUNTER_LEGACY_H

#include "postgres.h"

#include "catalog.h"

/* compaction and feed before 1.4 */
extern CounterStmt *CounterLegacyCompactEventsDelete(int table);
extern CounterStmt *CounterLegacyCompactEventsFold(int table);
extern CounterStmt *CounterLegacyCompactSlots(void);
extern CounterStmt *CounterLegacyCompactBuffered(void);
extern CounterStmt *CounterLegacyFeedNotify(void);

#endif							/* COUNTER_LEGACY_H */
