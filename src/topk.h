/*-------------------------------------------------------------------------
 *
 * topk.h
 *	  The exact top k keys of a counter, read through indexes.
 *
 *-------------------------------------------------------------------------
 */
#ifndef COUNTER_TOPK_H
#define COUNTER_TOPK_H

#include "catalog.h"
#include "utils/snapshot.h"
#include "utils/tuplestore.h"

extern void CounterReadTop(CounterMeta *meta, int k, Snapshot snapshot,
						   Tuplestorestate *out, TupleDesc desc);

#endif							/* COUNTER_TOPK_H */
