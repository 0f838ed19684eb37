/*-------------------------------------------------------------------------
 *
 * compact.h
 *	  Compaction: slots, events and buffered adds moved into totals and rollups.
 *
 *-------------------------------------------------------------------------
 */
#ifndef COUNTER_COMPACT_H
#define COUNTER_COMPACT_H

#include "postgres.h"

#include "datatype/timestamp.h"

extern bool CounterCompactLock(bool wait);
/* what one compaction batch moved */
typedef struct CounterMoved
{
	int64		events;
	int64		slot_rows;
	int64		buffered_keys;
} CounterMoved;
extern bool CounterCompactBatch(int32 counter_id, bool maintenance,
								TimestampTz retained, bool flush, bool timed,
								CounterMoved *moved);
extern int64 CounterCompact(int32 counter_id, bool wait);

#endif							/* COUNTER_COMPACT_H */
