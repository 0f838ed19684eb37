/*-------------------------------------------------------------------------
 *
 * feed.h
 *	  The change feed: NOTIFY of the keys a compaction moved.
 *
 *-------------------------------------------------------------------------
 */
#ifndef COUNTER_FEED_H
#define COUNTER_FEED_H

#include "postgres.h"

extern void CounterFeedCollect(void);
extern void CounterFeedFlush(void);

#endif							/* COUNTER_FEED_H */
