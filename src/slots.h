/*-------------------------------------------------------------------------
 *
 * slots.h
 *	  Slots mode: adds to slot rows, and the escrow of bounded counters.
 *
 *-------------------------------------------------------------------------
 */
#ifndef COUNTER_SLOTS_H
#define COUNTER_SLOTS_H

#include "catalog.h"

extern bool CounterSlotsAdd(CounterMeta *meta, text *key, int64 delta);
extern void CounterSlotsVerify(void);

#endif							/* COUNTER_SLOTS_H */
