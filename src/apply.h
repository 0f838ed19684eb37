/*-------------------------------------------------------------------------
 *
 * apply.h
 *	  One add: idempotency, bounds, and the source the counter's mode picks.
 *
 *-------------------------------------------------------------------------
 */
#ifndef COUNTER_APPLY_H
#define COUNTER_APPLY_H

#include "catalog.h"

typedef enum ApplyResult
{
	APPLY_DONE,
	APPLY_REPEAT,				/* its idempotency key was used already */
	APPLY_BOUND					/* it would cross a bound: nothing changed */
} ApplyResult;
extern ApplyResult CounterApply(CounterMeta *meta, text *key, int64 delta, text *idem,
								bool has_at, TimestampTz at);
extern void CounterBoundError(CounterMeta *meta, text *key, int64 delta);
extern void CounterApplyChecked(CounterMeta *meta, text *key, int64 delta, text *idem,
								bool has_at, TimestampTz at);

#endif							/* COUNTER_APPLY_H */
