/*-------------------------------------------------------------------------
 *
 * events.h
 *	  Events mode: event rows and the rotation of the two events tables.
 *
 *-------------------------------------------------------------------------
 */
#ifndef COUNTER_EVENTS_H
#define COUNTER_EVENTS_H

#include "catalog.h"
#include "utils/snapshot.h"

extern int	CounterEventsTableForAdd(CounterRels *r);
extern void CounterEventsWritten(int t);
extern int	CounterEventsLive(CounterRels *r, Snapshot snapshot);
extern int	CounterEventsToRead(CounterRels *r, Snapshot snapshot);
extern int	CounterEventsSync(void);
extern int	CounterEventsRotate(int folded, bool idle, int64 max_kb);
extern bool CounterEventsTruncate(void);

extern bool CounterEventsBusy(CounterMeta *meta, text *key, int max,
							  int128 *sum);
extern void CounterEventsInsert(CounterMeta *meta, text *key, int64 delta,
								TimestampTz at);

#endif							/* COUNTER_EVENTS_H */
