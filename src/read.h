/*-------------------------------------------------------------------------
 *
 * read.h
 *	  The exact read of one key: every source summed in one snapshot.
 *
 *-------------------------------------------------------------------------
 */
#ifndef COUNTER_READ_H
#define COUNTER_READ_H

#include "catalog.h"
#include "utils/snapshot.h"

extern int64 CounterReadValue(CounterMeta *meta, text *key, Snapshot snapshot);
extern int64 CounterReadValueAt(CounterMeta *meta, text *key, Snapshot snapshot,
								TimestampTz *updated);

#endif							/* COUNTER_READ_H */
