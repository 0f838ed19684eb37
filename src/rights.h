/*-------------------------------------------------------------------------
 *
 * rights.h
 *	  Global bounds in a mesh: the escrow rights of bounded counters.
 *
 *-------------------------------------------------------------------------
 */
#ifndef COUNTER_RIGHTS_H
#define COUNTER_RIGHTS_H

#include "catalog.h"

extern bool CounterRightsLockKey(int32 counter_id, text *key, bool wait);
extern void CounterRightsUnlockKey(int32 counter_id, text *key);
extern bool CounterRightsShare(CounterMeta *meta, text *key, int64 *lo, int64 *hi);
extern void CounterRightsRefused(CounterMeta *meta, text *key, int64 delta);
extern int64 CounterRightsRound(void);
extern bool CounterSingleNode(void);

#endif							/* COUNTER_RIGHTS_H */
